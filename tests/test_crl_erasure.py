"""Erased revocation records leave the CRL at once (Ord §70(1)(iii); RFC 5280 §5.2.4, §5.3.1).

A revocation record past its retention (政令で定める期間, Act §11-§14, §30-§33) is erased from
the store and no longer provided. The CRL its issuer serves must follow at the next run, not
at the next full CRL's cycle (a day with the shipped settings): without delta CRLs a new full
CRL is issued at once; with them the delta on the same base lists the entry with reasonCode
removeFromCRL (8), so a group appliance importing deltas drops it too. The builds here are
pinned to instants around a JST midnight (``--as-of``), so they pass at any hour, date or
time zone.
"""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from crlbuilder.apply import CrlBase, listed_since_base
from crlbuilder.build import Builder, BuildReport
from crlbuilder.config import BuilderConfig, write_facts_key
from crlbuilder.crl.importer import CrlImporter
from crlbuilder.crl.shipping import Shipment, keep_shipment
from crlbuilder.manifest import IssuerFiles, Manifest
from crlbuilder.periods import kept_until
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from tests.conftest import ROOT, run_tool
from tests.support.builder import builder_config

JST = timezone(timedelta(hours=9))
ONE_DAY = dict.fromkeys(("sign-card", "sign-mobile", "auth-card", "auth-mobile"), 1)
ERASED, KEPT = 4343, 4345
LOSS = x509.ReasonFlags.key_compromise
"""A lost card (``reason = "loss"``) is listed keyCompromise."""


def _end() -> datetime:
    """A JST midnight a few days back: the end of a one-day period (a fixed instant per run)."""
    midnight = datetime.now(JST).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=3)


def _records(tmp: Path, issuer: IssuerFiles, end: datetime) -> Path:
    """ERASED, revoked at 01:00 JST two days before ``end`` (kept one day, the first not
    counted: erased at ``end``), and KEPT, revoked a day later (erased a day after ``end``);
    both certificates expired before."""
    recorded = {ERASED: end - timedelta(days=2, hours=-1), KEPT: end - timedelta(days=1, hours=-1)}
    assert kept_until(int(recorded[ERASED].timestamp()), 1) == int(end.timestamp())
    recs: list[dict[str, object]] = []
    for serial, at in recorded.items():
        issued = at - timedelta(days=10)
        recs += [
            {"type": "issuance", "id": f"i{serial}", "recorded_at": issued.isoformat(),
             "serial": serial, "family": "auth-card", "issuer": issuer.id,
             "not_before": issued.isoformat(), "not_after": (at + timedelta(minutes=30)).isoformat(),
             "holder": hashlib.sha256(b"crl-erasure %d" % serial).hexdigest()},
            {"type": "revocation-request", "id": f"r{serial}", "recorded_at": at.isoformat(),
             "serial": serial, "issuer": issuer.id, "reason": "loss"},
        ]  # fmt: skip
    path = tmp / "records" / "a.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\n".join(map(msgspec.json.encode, recs)) + b"\n")
    return path


def _entries(der: bytes) -> dict[int, x509.ReasonFlags | None]:
    crl = x509.load_der_x509_crl(der)
    out: dict[int, x509.ReasonFlags | None] = {}
    for e in crl:
        try:
            out[e.serial_number] = e.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            out[e.serial_number] = None
    return out


def _number(der: bytes) -> int:
    crl = x509.load_der_x509_crl(der)
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _made(report: BuildReport, issuer: IssuerFiles) -> list[tuple[int, bool]]:
    """(number, delta) of the CRLs ``report``'s run made for ``issuer``."""
    return [(e.number, e.delta) for e in report.crl_files if e.issuer == issuer.id]


def _auth_card(manifest: Manifest) -> IssuerFiles:
    return next(i for i in manifest.issuers if i.id.startswith("auth-card"))


def _openssl_text(der: bytes, ca: Path, tmp: Path) -> str:
    (tmp / "x.crl").write_bytes(der)
    out = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(tmp / "x.crl"), "-CAfile", str(ca),
         "-noout", "-text"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "verify OK" in out.stdout + out.stderr
    return out.stdout


def test_without_deltas_an_erasure_issues_a_full_crl_at_once(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The full CRL made a minute before the end lists both; the build after the erasure,
    seconds past the end, issues the next full CRL without ERASED, though a full CRL is
    otherwise due only a day later; the build after that issues none (nothing to take off)."""
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki, delta=False, cycle_seconds=86_400,
                         full_every_seconds=86_400, retention_days=ONE_DAY)  # fmt: skip
    issuer, end = _auth_card(manifest), _end()
    records = _records(tmp_path, issuer, end)
    current = tmp_path / "crl" / f"{issuer.id}.crl"
    b = Builder(cfg, progress=False, log=(tmp_path / "log").open("w"))
    try:
        first = b.build([records], as_of=end - timedelta(seconds=60))
        assert first.summary.erased == 0 and _made(first, issuer) == [(1, False)]
        assert _entries(current.read_bytes()) == {ERASED: LOSS, KEPT: LOSS}
        erasing = b.build([], as_of=end + timedelta(seconds=5))
        assert erasing.summary.erased == 1
        assert _made(erasing, issuer) == [(2, False)], "the CRL still lists the erased entry"
        der = current.read_bytes()
        assert _number(der) == 2 and _entries(der) == {KEPT: LOSS}
        crl = x509.load_der_x509_crl(der)
        assert crl.last_update_utc == end + timedelta(seconds=5)
        with b.store.read() as r:
            assert r.erased_listed(issuer.index) == []
        again = b.build([], as_of=end + timedelta(seconds=10))
        assert again.summary.erased == 0 and _made(again, issuer) == []
        ca = pki / issuer.cert
        assert f"{ERASED:X}" not in _openssl_text(der, ca, tmp_path)
    finally:
        b.close()


def test_with_deltas_the_delta_takes_the_erased_entry_off_and_a_group_follows(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """With delta CRLs the full CRL stays; the delta on its base lists ERASED with
    removeFromCRL (8) dated at the erasure, and KEPT (on the base) not at all. A group
    appliance importing the full CRL and then that delta no longer holds ERASED. The next
    full CRL lists neither ERASED nor a removeFromCRL, and its delta has none either."""
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki, delta=True, cycle_seconds=86_400, delta_cycle_seconds=3600,
                         full_every_seconds=7200, retention_days=ONE_DAY)  # fmt: skip
    issuer, end = _auth_card(manifest), _end()
    records = _records(tmp_path, issuer, end)
    current = tmp_path / "crl" / f"{issuer.id}.crl"
    delta = tmp_path / "crl" / f"{issuer.id}-delta.crl"
    group = Store.open(tmp_path / "group", readonly=False)
    b = Builder(cfg, progress=False, log=(tmp_path / "log").open("w"))
    try:
        first = b.build([records], as_of=end - timedelta(seconds=60))
        assert _made(first, issuer) == [(1, False), (2, True)]
        full = current.read_bytes()
        importer = CrlImporter(group, manifest)
        importer.import_der(full, as_of=end - timedelta(seconds=50))
        erasing = b.build([], as_of=end + timedelta(seconds=5))
        assert erasing.summary.erased == 1 and _made(erasing, issuer) == [(3, True)]
        assert current.read_bytes() == full  # the base stays; its delta takes the entry off
        d = delta.read_bytes()
        parsed = x509.load_der_x509_crl(d)
        assert (
            parsed.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number == 1
        )
        assert _entries(d) == {ERASED: x509.ReasonFlags.remove_from_crl}
        removal = parsed.get_revoked_certificate_by_serial_number(ERASED)
        assert removal is not None and removal.revocation_date_utc == end + timedelta(seconds=5)
        assert "Remove From CRL" in _openssl_text(d, pki / issuer.cert, tmp_path)
        result = importer.import_der(d, as_of=end + timedelta(seconds=20))
        assert (result.removed, result.added) == (1, 0)
        with group.read() as r:
            held = {int.from_bytes(k[2:], "big") for k, _ in r.revocations(issuer.index)}
        assert held == {KEPT}
        # each later delta on that base takes it off again (deltas are cumulative) ...
        later = b.build([], as_of=end + timedelta(minutes=40))
        assert _made(later, issuer) == [(4, True)]
        assert _entries(delta.read_bytes()) == {ERASED: x509.ReasonFlags.remove_from_crl}
        # ... until the next full CRL, which lists it nowhere
        full_again = b.build([], as_of=end + timedelta(hours=2))
        assert _made(full_again, issuer) == [(5, False), (6, True)]
        assert _entries(current.read_bytes()) == {KEPT: LOSS}
        assert _entries(delta.read_bytes()) == {}
        with b.store.read() as r:
            assert r.erased_listed(issuer.index) == []
    finally:
        b.close()
        group.close()


def test_an_entry_is_taken_off_only_when_a_crl_since_the_base_may_list_it() -> None:
    """`listed_since_base`: not past its retention at the last full CRL's thisUpdate, and
    written by the commit that CRL reflects or, with deltas, after it (a delta on it may have
    listed it); no full CRL yet, an entry gone, or a base past its nextUpdate (the next CRL
    is a full one): nothing to take off."""
    base = sf.CrlState(number=3, base_number=2, base_commit=10, base_this_update=1000)
    now = 1500

    def entry(commit: int) -> sf.RevokedEntry:
        return sf.RevokedEntry(revoked_at=500, reason=1, category=1, commit=commit, recorded_at=400)

    for deltas in (False, True):
        crls = CrlBase(deltas=deltas, cycle_seconds=600)
        assert listed_since_base(entry(10), 1001, base, now, crls)
        # already past retention when the base was made: on no CRL since
        assert not listed_since_base(entry(10), 1000, base, now, crls)
        assert not listed_since_base(entry(11), 1000, base, now, crls)
        assert not listed_since_base(entry(10), 1001, sf.CrlState(), now, crls)
        assert not listed_since_base(None, 1001, base, now, crls)
        assert not listed_since_base(entry(10), None, base, now, crls)
        # the base has lapsed (thisUpdate + cycle): the next CRL is a full one
        assert listed_since_base(entry(10), 1001, base, 1599, crls)
        assert not listed_since_base(entry(10), 1001, base, 1600, crls)
    # written after the base: on a delta since, if there are deltas
    assert not listed_since_base(entry(11), 1001, base, now, CrlBase(False, 600))
    assert listed_since_base(entry(11), 1001, base, now, CrlBase(True, 600))


@pytest.mark.parametrize("delta", [False, True])
def test_an_entry_erased_before_any_crl_was_made_is_taken_off_nothing(
    tmp_path: Path, demo_pki: tuple[Path, Manifest], delta: bool
) -> None:
    """Records whose period ended before the first build: erased by it, never on a CRL, so
    no removeFromCRL and no extra full CRL."""
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki, delta=delta, cycle_seconds=86_400,
                         full_every_seconds=86_400, retention_days=ONE_DAY)  # fmt: skip
    issuer, end = _auth_card(manifest), _end()
    records = _records(tmp_path, issuer, end)
    b = Builder(cfg, progress=False, log=(tmp_path / "log").open("w"))
    try:
        first = b.build([records], as_of=end + timedelta(seconds=5))
        assert first.summary.erased == 1
        assert _made(first, issuer) == ([(1, False), (2, True)] if delta else [(1, False)])
        with b.store.read() as r:
            assert r.erased_listed(issuer.index) == []
        made = {p.name: p.read_bytes() for p in (tmp_path / "crl").glob(f"{issuer.id}*.crl")}
        assert all(ERASED not in _entries(der) for der in made.values())
        assert _made(b.build([], as_of=end + timedelta(seconds=10)), issuer) == (
            [(3, True)] if delta else []
        )
    finally:
        b.close()


def test_end_to_end_shipped_settings_build_then_a_group_imports_full_and_delta(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """`crlbuilder build` with the shipped configuration (hourly deltas, a full CRL a day) but
    a one-day period: the build a minute before the end lists ERASED, the build seconds after
    erases it and its delta takes it off (openssl reads removeFromCRL); `crlbuilder
    import-crl` of the served full CRL and that delta leaves a group's store without it."""
    pki, manifest = demo_pki
    issuer, end = _auth_card(manifest), _end()
    _records(tmp_path, issuer, end)
    config = tmp_path / "builder.toml"
    shipped = (ROOT / "config" / "builder.toml").read_text(encoding="utf-8")
    section = "[crl.retention_days_by_category.auth-card]\nrequest = 3650"
    assert section in shipped
    config.write_text(shipped.replace(section, section[:-4] + "1"), encoding="utf-8")
    write_facts_key(tmp_path / "facts.key")
    crl = tmp_path / "crl"

    def build(as_of: datetime) -> dict[str, object]:
        out = run_tool(
            "crlbuilder", "build", "--config", str(config), "--store", str(tmp_path / "store"),
            "--pki", str(pki), "--input", str(tmp_path / "records"),
            "--facts-key-file", str(tmp_path / "facts.key"),
            "--quarantine", str(tmp_path / "q.jsonl"), "--notices", str(tmp_path / "n.jsonl"),
            "--crl-dir", str(crl), "--spool", str(tmp_path / "spool"), "--sign-workers", "1",
            "--as-of", as_of.isoformat(), "--no-progress",
        )  # fmt: skip
        summary: dict[str, object] = msgspec.json.decode(out.stderr.strip().splitlines()[-1])
        return summary

    def made(summary: dict[str, object]) -> list[tuple[object, object, object]]:
        crls = summary["crls"]
        assert isinstance(crls, list)
        return [(c["number"], c["delta"], c["entries"]) for c in crls if c["issuer"] == issuer.id]

    assert made(build(end - timedelta(seconds=60))) == [(1, False, 2), (2, True, 0)]
    full = (crl / f"{issuer.id}.crl").read_bytes()
    erasing = build(end + timedelta(seconds=5))
    assert erasing["erased_past_retention"] == 1
    assert made(erasing) == [(3, True, 1)]
    assert (crl / f"{issuer.id}.crl").read_bytes() == full
    delta = crl / f"{issuer.id}-delta.crl"
    text = _openssl_text(delta.read_bytes(), pki / issuer.cert, tmp_path)
    assert "Delta CRL Indicator" in text and "Remove From CRL" in text and f"{ERASED:X}" in text
    group = tmp_path / "group"
    out = run_tool(
        "crlbuilder", "import-crl", "--store", str(group), "--pki", str(pki),
        "--as-of", (end + timedelta(seconds=20)).isoformat(), str(crl / f"{issuer.id}.crl"),
        str(delta),
    )  # fmt: skip
    lines = [msgspec.json.decode(x) for x in out.stderr.splitlines() if x.startswith("{")]
    assert [(x["number"], x["removed"]) for x in lines] == [(1, 0), (3, 1)], out.stderr
    store = Store.open(group, readonly=True)
    try:
        with store.read() as r:
            held = {int.from_bytes(k[2:], "big") for k, _ in r.revocations(issuer.index)}
    finally:
        store.close()
    assert held == {KEPT}


def test_an_entry_a_delta_listed_then_erased_is_taken_off_by_the_next_delta(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """An entry written after the base (a record that arrived late) is listed by a delta on
    that base, then falls due before the next full CRL: the next delta lists it removeFromCRL
    (RFC 5280 §5.2.4: a delta is also combined with a locally constructed complete CRL, the
    base with earlier deltas applied), so a group appliance, which applies each delta to what
    it holds, drops it."""
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki, delta=True, cycle_seconds=86_400, delta_cycle_seconds=3600,
                         full_every_seconds=86_400, retention_days=ONE_DAY)  # fmt: skip
    issuer, end = _auth_card(manifest), _end()
    records = _records(tmp_path, issuer, end)
    lines = records.read_bytes().splitlines(keepends=True)
    late = tmp_path / "late" / "b.jsonl"
    late.parent.mkdir()
    records.write_bytes(b"".join(x for x in lines if b"%d" % ERASED not in x))
    late.write_bytes(b"".join(x for x in lines if b"%d" % ERASED in x))
    delta = tmp_path / "crl" / f"{issuer.id}-delta.crl"
    group = Store.open(tmp_path / "group", readonly=False)
    b = Builder(cfg, progress=False, log=(tmp_path / "log").open("w"))
    try:
        first = b.build([records], as_of=end - timedelta(hours=2))
        assert _made(first, issuer) == [(1, False), (2, True)]
        importer = CrlImporter(group, manifest)
        importer.import_der((tmp_path / "crl" / f"{issuer.id}.crl").read_bytes(),
                            as_of=end - timedelta(hours=2) + timedelta(seconds=10))  # fmt: skip
        second = b.build([late], as_of=end - timedelta(seconds=60))
        assert _made(second, issuer) == [(3, True)]
        assert _entries(delta.read_bytes()) == {ERASED: LOSS}
        importer.import_der(delta.read_bytes(), as_of=end - timedelta(seconds=50))
        erasing = b.build([], as_of=end + timedelta(seconds=5))
        assert erasing.summary.erased == 1 and _made(erasing, issuer) == [(4, True)]
        assert _entries(delta.read_bytes()) == {ERASED: x509.ReasonFlags.remove_from_crl}, (
            "the delta that listed the entry is followed by one that does not take it off"
        )
        result = importer.import_der(delta.read_bytes(), as_of=end + timedelta(seconds=20))
        assert result.removed == 1
        with group.read() as r:
            held = {int.from_bytes(k[2:], "big") for k, _ in r.revocations(issuer.index)}
        assert held == {KEPT}
    finally:
        b.close()
        group.close()


def test_a_node_without_ca_keys_keeps_what_it_erased_so_that_promoted_it_takes_it_off(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A node of the record stream without CA keys (``crl.enabled = false``) holds the signer's
    CRL state (`crlbuilder.crl.shipping`); promoted to signer it "continues the CRL numbering
    it fetched" (docs/operations.md), and its deltas go on the same base. What it erased
    before the promotion, listed by that base, is taken off by its first delta, not a day
    later at the next full CRL. Here one store plays both: made by a builder with CRLs,
    erased by one without (the node before its promotion), then a builder with CRLs again."""
    pki, manifest = demo_pki
    signer = builder_config(tmp_path, pki, delta=True, cycle_seconds=86_400,
                            delta_cycle_seconds=3600, full_every_seconds=86_400,
                            retention_days=ONE_DAY)  # fmt: skip
    no_keys = msgspec.structs.replace(
        signer, crl=msgspec.structs.replace(signer.crl, enabled=False)
    )
    issuer, end = _auth_card(manifest), _end()
    records = _records(tmp_path, issuer, end)
    delta = tmp_path / "crl" / f"{issuer.id}-delta.crl"

    def build(cfg: BuilderConfig, sources: list[Path], at: datetime) -> BuildReport:
        b = Builder(cfg, progress=False, log=(tmp_path / "log").open("a"))
        try:
            return b.build(sources, as_of=at)
        finally:
            b.close()

    assert _made(build(signer, [records], end - timedelta(seconds=60)), issuer) == [
        (1, False), (2, True),
    ]  # fmt: skip
    erasing = build(no_keys, [], end + timedelta(seconds=5))
    assert erasing.summary.erased == 1 and _made(erasing, issuer) == []
    promoted = build(signer, [], end + timedelta(seconds=10))
    assert _made(promoted, issuer) == [(3, True)]
    assert _entries(delta.read_bytes()) == {ERASED: x509.ReasonFlags.remove_from_crl}, (
        "the promoted node's delta still leaves the erased entry on its base"
    )


def test_a_shipped_full_crl_drops_what_it_no_longer_lists(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A node without CA keys that takes the signer's CRL state (`keep_shipment`) forgets the
    erased entries the shipped full CRL no longer lists (erased by the commit it reflects or
    before), as the signer does when it makes one, and keeps them while the base lists them."""
    pki, manifest = demo_pki
    signer = builder_config(tmp_path, pki, delta=True, cycle_seconds=86_400,
                            delta_cycle_seconds=3600, full_every_seconds=86_400,
                            retention_days=ONE_DAY)  # fmt: skip
    no_keys = msgspec.structs.replace(
        signer, crl=msgspec.structs.replace(signer.crl, enabled=False)
    )
    issuer, end = _auth_card(manifest), _end()
    records = _records(tmp_path, issuer, end)
    for cfg, sources, at in ((signer, [records], end - timedelta(seconds=60)),
                             (no_keys, [], end + timedelta(seconds=5))):  # fmt: skip
        b = Builder(cfg, progress=False, log=(tmp_path / "log").open("a"))
        try:
            b.build(sources, as_of=at)
        finally:
            b.close()
    store = Store.open(tmp_path / "store", readonly=False)
    try:
        with store.read() as r:
            [(key, erased_by, _)] = r.erased_listed(issuer.index)
            state = r.crl_state(issuer.index)
        assert key == sf.status_key(issuer.index, ERASED)

        def ship(base_commit: int) -> list[tuple[bytes, int, int]]:
            state.number += 1
            state.base_number, state.base_commit = state.number, base_commit
            keep_shipment(store, issuer.index, Shipment(issuer=issuer.id, state=state, files=[]))
            with store.read() as r:
                assert r.crl_state(issuer.index).number == state.number
                return r.erased_listed(issuer.index)

        assert ship(erased_by - 1) != [], "a base made before the erasure still lists it"
        assert ship(erased_by) == [], "the shipped full CRL made after the erasure lists none"
    finally:
        store.close()


def _leaf(pki: Path, issuer: IssuerFiles, serial: int, out: Path) -> Path:
    """A certificate numbered ``serial`` from the demo CA, valid over the CA's own span (only
    the CRLs decide), for ``openssl verify``."""
    ca = x509.load_pem_x509_certificate((pki / issuer.cert).read_bytes())
    key = serialization.load_pem_private_key((pki / issuer.key).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.OID_COMMON_NAME, "leaf")]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(serial)
        .not_valid_before(ca.not_valid_before_utc)
        .not_valid_after(ca.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    out.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return out


@pytest.mark.parametrize("on", ["base", "delta"])
def test_openssl_with_deltas_reads_the_serial_revoked_then_taken_off(
    tmp_path: Path, demo_pki: tuple[Path, Manifest], on: str
) -> None:
    """Interop: ``openssl verify -crl_check -use_deltas`` with the served full CRL and delta
    says revoked before the erasure and OK after it, whether the entry was on the base or only
    on an earlier delta; the full CRL alone still lists it (not reissued early, decision 1 of
    the crlerase report)."""
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki, delta=True, cycle_seconds=86_400, delta_cycle_seconds=3600,
                         full_every_seconds=86_400, retention_days=ONE_DAY)  # fmt: skip
    issuer, end = _auth_card(manifest), _end()
    records = _records(tmp_path, issuer, end)
    sources = [records]
    if on == "delta":  # ERASED's records arrive after the full CRL: only a delta lists it
        lines = records.read_bytes().splitlines(keepends=True)
        late = tmp_path / "late" / "b.jsonl"
        late.parent.mkdir()
        records.write_bytes(b"".join(x for x in lines if b"%d" % ERASED not in x))
        late.write_bytes(b"".join(x for x in lines if b"%d" % ERASED in x))
        sources = [late]
    leaf = _leaf(pki, issuer, ERASED, tmp_path / "leaf.pem")
    crl = tmp_path / "crl"

    def pem(name: str, to: str) -> Path:
        subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(crl / name),
                        "-out", str(tmp_path / to)], check=True)  # fmt: skip
        return tmp_path / to

    def verify(at: datetime, *crls: Path) -> str:
        args = ["openssl", "verify", "-CAfile", str(pki / issuer.cert), "-crl_check",
                "-use_deltas", "-attime", str(int(at.timestamp()))]  # fmt: skip
        for c in crls:
            args += ["-CRLfile", str(c)]
        out = subprocess.run([*args, str(leaf)], check=False, capture_output=True, text=True)
        return out.stdout + out.stderr

    b = Builder(cfg, progress=False, log=(tmp_path / "log").open("w"))
    try:
        if on == "delta":
            b.build([records], as_of=end - timedelta(hours=2))
        b.build(sources, as_of=end - timedelta(seconds=60))
        full_der = (crl / f"{issuer.id}.crl").read_bytes()
        full = pem(f"{issuer.id}.crl", "full.pem")
        before = pem(f"{issuer.id}-delta.crl", "before.pem")
        assert "certificate revoked" in verify(end - timedelta(seconds=30), full, before)
        b.build([], as_of=end + timedelta(seconds=5))
        assert (crl / f"{issuer.id}.crl").read_bytes() == full_der  # the same base
        after = pem(f"{issuer.id}-delta.crl", "after.pem")
        assert "leaf.pem: OK" in verify(end + timedelta(seconds=30), full, after)
        # the full CRL alone still lists it when it was on the base
        assert ("certificate revoked" in verify(end + timedelta(seconds=30), full)) == (
            on == "base"
        )
    finally:
        b.close()


def test_a_store_whose_crls_stopped_keeps_nothing_once_its_base_has_lapsed(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """`erased` does not grow on a store whose CRLs stopped (here CRLs turned off; the same for
    a signer whose publishing fails, or a node no longer fetching): an erasure after the last
    full CRL's nextUpdate keeps nothing, since the next CRL made is a full one (lapsed), which
    lists none of them."""
    pki, manifest = demo_pki
    signer = builder_config(tmp_path, pki, delta=True, cycle_seconds=3600,
                            delta_cycle_seconds=1800, full_every_seconds=3600,
                            retention_days=ONE_DAY)  # fmt: skip
    off = msgspec.structs.replace(signer, crl=msgspec.structs.replace(signer.crl, enabled=False))
    issuer, end = _auth_card(manifest), _end()
    records = _records(tmp_path, issuer, end)
    current = tmp_path / "crl" / f"{issuer.id}.crl"
    runs: list[BuildReport] = []
    for cfg, sources, at in ((signer, [records], end - timedelta(hours=2)),  # valid an hour
                             (off, [], end + timedelta(seconds=5)),
                             (signer, [], end + timedelta(seconds=10))):  # fmt: skip
        b = Builder(cfg, progress=False, log=(tmp_path / "log").open("a"))
        try:
            runs.append(b.build(sources, as_of=at))
            if len(runs) == 2:
                with b.store.read() as r:
                    assert r.erased_listed(issuer.index) == [], "kept for a base that has lapsed"
        finally:
            b.close()
    assert runs[1].summary.erased == 1
    assert _made(runs[2], issuer) == [(3, False), (4, True)]  # the lapsed base made anew
    assert _entries(current.read_bytes()) == {KEPT: LOSS}
