"""No good OCSP answer outlives a pending 30-day lapse (Act §31(2), §34(1)(2)) or its notAfter.

An auth certificate loses effect when the builder writes its holder's 30-day
lapse (異動等失効情報, Act §31(2), §34(1)(2)). A good answer signed before then
must not stay good in a client's cache (RFC 5019: max-age and Expires come from
nextUpdate) after the lapse falls due: its nextUpdate stops at the due instant,
and between the due instant and the builder's write the responder says tryLater.
The same holds for a certificate's notAfter (Act §34(1)(5) and its kin).
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from crlbuilder import rules
from crlbuilder.build import Builder
from crlbuilder.config import BuilderConfig
from crlbuilder.manifest import Manifest
from crlbuilder.model import Family
from crlbuilder.ocsp.request import parse_request
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader
from responder.config import OcspConfig
from responder.flow import OcspFlow, Unavailable
from responder.ocsp import Ready, SignJob, good_next_update, load_issuers
from tests.conftest import Built
from tests.support.builder import builder_config
from tests.support.harness import start_server
from tests.test_apply import FACTS, H1, World, holder_set, rid, ts
from tests.test_ocsp_flow import Quotas

VALIDITY = 3600
"""The responder's good_validity_seconds in the in-process tests."""

# ---------------------------------------------------------------------------
# The reader: StoreReader.lapse_due mirrors what the applier will write
# ---------------------------------------------------------------------------

PLANNED = date(2024, 2, 19)  # T0 + 40 days in tests.test_apply
DUE = int(rules.move_out_lapse(PLANNED).timestamp())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def move_out(holder: str, *, abroad: bool = False, day: float = 35) -> dict[str, object]:
    return {"type": "resident-change", "id": rid(), "recorded_at": ts(day), "holder": holder,
            "change": "move-out-notice", "planned_date": PLANNED.isoformat(), "abroad": abroad}  # fmt: skip


def lapse_of(world: World, issuer: str, serial: int) -> int:
    with world.store.read() as r:
        return r.lapse_due(world.status(issuer, serial))


def test_act_31_2_lapse_due_of_auth_certificates_only(world: World) -> None:
    """Auth-card (Act §31(2)) and the auth-mobile that follows it (§35-13); never sign."""
    world.apply(holder_set(H1))
    assert lapse_of(world, "auth-card-g1", 102) == 0  # no notice, no lapse
    world.apply([move_out(H1)])
    assert lapse_of(world, "auth-card-g1", 102) == DUE
    assert lapse_of(world, "auth-mobile-g1", 104) == DUE
    assert lapse_of(world, "sign-card-g1", 101) == 0
    assert lapse_of(world, "sign-mobile-g1", 103) == 0
    move_in: dict[str, object] = {"type": "resident-change", "id": rid(), "recorded_at": ts(45),
                                  "holder": H1, "change": "move-in-notice"}  # fmt: skip
    world.apply([move_in])
    with world.store.read() as r:
        assert r.pending_move_out(bytes.fromhex(H1)) is None
    assert lapse_of(world, "auth-card-g1", 102) == 0


def test_act_31_2_lapse_written_leaves_nothing_pending(world: World) -> None:
    world.apply([*holder_set(H1), move_out(H1)])
    world.apply([]).sweep_lapses(rules.move_out_lapse(PLANNED) + timedelta(days=1))
    assert world.status("auth-card-g1", 102).revoked
    with world.store.read() as r:
        assert r.pending_move_out(bytes.fromhex(H1)) is None
    assert lapse_of(world, "auth-card-g1", 102) == 0


def test_act_31_2_abroad_window_certificate_has_no_lapse(world: World) -> None:
    """A certificate issued between a 国外転出届 and its planned date is exempt (Act §31(2)),
    and so is the auth-mobile issued against it."""
    world.apply([move_out(H1, abroad=True, day=31), *holder_set(H1, day=33)])
    assert lapse_of(world, "auth-card-g1", 102) == 0
    assert lapse_of(world, "auth-mobile-g1", 104) == 0
    # what the applier does when the lapse falls due agrees
    world.apply([]).sweep_lapses(rules.move_out_lapse(PLANNED) + timedelta(days=1))
    assert not world.status("auth-card-g1", 102).revoked
    assert not world.status("auth-mobile-g1", 104).revoked


def test_act_31_2_move_out_notice_gives_auth_certificates_a_new_status_version(
    world: World,
) -> None:
    """A cached good answer is keyed by the status version: the notice must change it."""
    world.apply(holder_set(H1))
    before = {(i, s): world.status(i, s).version for i, s in
              [("auth-card-g1", 102), ("auth-mobile-g1", 104), ("sign-card-g1", 101)]}  # fmt: skip
    world.apply([move_out(H1)])
    assert world.status("auth-card-g1", 102).version > before[("auth-card-g1", 102)]
    assert world.status("auth-mobile-g1", 104).version > before[("auth-mobile-g1", 104)]
    assert world.status("sign-card-g1", 101).version == before[("sign-card-g1", 101)]


def test_next_update_bounded_by_not_after_and_lapse_while_ahead() -> None:
    now = 1_000_000
    assert good_next_update(now + 3600, now, now + 99_999, 0) == now + 3600
    assert good_next_update(now + 3600, now, now + 60, 0) == now + 60  # Act §34(1)(5)
    assert good_next_update(now + 3600, now, now + 99_999, now + 120) == now + 120
    assert good_next_update(now + 3600, now, now + 60, now + 120) == now + 60
    # expired: nothing can revoke it any more, and a bound before thisUpdate is no answer
    assert good_next_update(now + 3600, now, now - 5, 0) == now + 3600


# ---------------------------------------------------------------------------
# The responder in process: real PKI, store built by the builder, a fake clock
# ---------------------------------------------------------------------------


def cycle_config(tmp: Path, pki: Path, *, cycle: int = 86_400) -> BuilderConfig:
    """`builder_config` with a CRL cycle of ``cycle`` seconds (deltas within a day)."""
    return builder_config(
        tmp, pki, cycle_seconds=cycle, delta=cycle <= 86_400, full_every_seconds=cycle
    )


def issuer(manifest: Manifest, family: Family) -> Any:
    return next(i for i in manifest.issuers if i.family is family)


SERIALS = {Family.SIGN_CARD: 4241, Family.AUTH_CARD: 4242, Family.AUTH_MOBILE: 4244}
HOLDER = hashlib.sha256(b"lapse-next-update").hexdigest()


def history(manifest: Manifest, issued: datetime) -> list[dict[str, object]]:
    """One holder with a sign-card, an auth-card and an auth-mobile certificate."""
    end = issued + timedelta(days=1000)

    def issue(family: Family, **kw: object) -> dict[str, object]:
        rec: dict[str, object] = {
            "type": "issuance", "id": f"i{SERIALS[family]}", "recorded_at": issued.isoformat(),
            "serial": SERIALS[family], "family": family.value, "issuer": issuer(manifest, family).id,
            "not_before": issued.isoformat(), "not_after": end.isoformat(), "holder": HOLDER,
        }  # fmt: skip
        rec.update(kw)
        return rec

    return [
        issue(Family.AUTH_CARD),
        issue(Family.SIGN_CARD, facts=FACTS),
        issue(Family.AUTH_MOBILE, card_serial=SERIALS[Family.AUTH_CARD],
              not_after=(end - timedelta(days=10)).isoformat()),
    ]  # fmt: skip


def notice(planned: date, recorded: datetime) -> dict[str, object]:
    """A 転出届 made three days before its planned date; its record arrives at ``recorded``."""
    notified = datetime.combine(planned - timedelta(days=3), datetime.min.time(), rules.JST)
    return {"type": "resident-change", "id": f"m{planned}", "recorded_at": recorded.isoformat(),
            "notified_at": notified.isoformat(), "holder": HOLDER, "change": "move-out-notice",
            "planned_date": planned.isoformat()}  # fmt: skip


def write(path: Path, records: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    return path


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()


def certid_request(manifest: Manifest, family: Family) -> bytes:
    """One SHA-1 CertID (RFC 6960 §4.1.1, hashes made here), no nonce: RFC 5019's request."""
    cert = x509.load_pem_x509_certificate(manifest.path(issuer(manifest, family).cert).read_bytes())
    key = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            hashlib.sha1(cert.subject.public_bytes()).digest(),
            hashlib.sha1(key).digest(),
            SERIALS[family],
            hashes.SHA1(),
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def flow_for(manifest: Manifest) -> OcspFlow:
    return OcspFlow(
        load_issuers(manifest),
        Quotas(),
        OcspConfig(good_validity_seconds=VALIDITY, good_cache_entries=100),
    )


def ask(
    flow: OcspFlow, store: Store, manifest: Manifest, family: Family, clock: Clock
) -> Ready | Unavailable:
    """The flow's lookup of one RFC 5019 request (the party and its agreement are
    `tests.test_ocsp_flow`'s business), signing a fresh answer as the shell would."""
    req = parse_request(certid_request(manifest, family), max_certids=4)
    view = flow.issuer_of(req)
    assert view is not None
    with store.read() as reader:
        out = flow.lookup(req, view, int(clock()), reader)
    if isinstance(out, SignJob):
        ready = out.run()
        flow.remember(out, ready)
        return ready
    return out


def next_update(ready: Ready | Unavailable) -> datetime:
    assert isinstance(ready, Ready), ready
    resp = ocsp.load_der_ocsp_response(ready.der)
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.next_update_utc is not None
    assert int(resp.next_update_utc.timestamp()) == ready.next_update
    return resp.next_update_utc


def status(ready: Ready | Unavailable) -> ocsp.OCSPCertStatus:
    assert isinstance(ready, Ready), ready
    return ocsp.load_der_ocsp_response(ready.der).certificate_status


def test_act_31_2_act_34_1_2_good_answer_never_outlives_the_pending_lapse(
    tmp_path: Path, demo_pki: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten minutes before the due instant: the auth answers' nextUpdate is the due instant,
    the sign answer's is not; a cache hit reads no lapse; past the due instant, tryLater
    until the builder writes the lapse, then revoked."""
    pki, manifest = demo_pki
    planned = (datetime.now(rules.JST) - timedelta(days=40)).date()
    due = rules.move_out_lapse(planned)
    t = due - timedelta(minutes=10)
    b = Builder(cycle_config(tmp_path, pki), progress=False, log=(tmp_path / "log").open("w"))
    try:
        recs = [*history(manifest, t - timedelta(days=60)), notice(planned, t - timedelta(days=33))]
        b.build([write(tmp_path / "records" / "a.jsonl", recs)], t)
        clock = Clock(t)
        store = b.store  # LMDB opens an environment once per process
        svc = flow_for(manifest)
        for family in (Family.AUTH_CARD, Family.AUTH_MOBILE):
            ready = ask(svc, store, manifest, family, clock)
            assert status(ready) is ocsp.OCSPCertStatus.GOOD
            assert next_update(ready) == due, family
        sign = ask(svc, store, manifest, Family.SIGN_CARD, clock)
        assert status(sign) is ocsp.OCSPCertStatus.GOOD
        assert next_update(sign) == t + timedelta(seconds=VALIDITY)  # no 30-day rule for sign

        # a cache hit is served as signed, bound included, without reading the lapse again
        calls: list[int] = []
        real = LmdbReader.lapse_due

        def counting(self: LmdbReader, st: sf.StatusRecord) -> int:
            calls.append(st.family)
            return real(self, st)

        monkeypatch.setattr(LmdbReader, "lapse_due", counting)
        clock.at = t + timedelta(minutes=5)
        again = ask(svc, store, manifest, Family.AUTH_CARD, clock)
        assert isinstance(again, Ready) and next_update(again) == due
        assert ask(svc, store, manifest, Family.AUTH_CARD, clock) is again
        assert calls == []

        # due, not yet written: never good (the cached answer has expired too)
        clock.at = due + timedelta(seconds=1)
        for family in (Family.AUTH_CARD, Family.AUTH_MOBILE):
            late = ask(svc, store, manifest, family, clock)
            assert late is Unavailable.LAPSE_DUE, family
        assert svc.lapse_refusals == 2
        assert (
            status(ask(svc, store, manifest, Family.SIGN_CARD, clock)) is ocsp.OCSPCertStatus.GOOD
        )

        # the builder writes the lapse: revoked from then on
        written = due + timedelta(seconds=3)
        assert (
            b.build([tmp_path / "records" / "a.jsonl"], written).lapses == 2
        )  # card and mobile (Act §35-13)
        clock.at = written + timedelta(seconds=1)
        for family in (Family.AUTH_CARD, Family.AUTH_MOBILE):
            assert (
                status(ask(svc, store, manifest, family, clock)) is ocsp.OCSPCertStatus.REVOKED
            ), family
    finally:
        b.close()


def test_act_31_2_answer_cached_before_the_move_out_notice_is_not_served_after_it(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    pki, manifest = demo_pki
    planned = (datetime.now(rules.JST) - timedelta(days=40)).date()
    due = rules.move_out_lapse(planned)
    t = due - timedelta(minutes=20)
    b = Builder(cycle_config(tmp_path, pki), progress=False, log=(tmp_path / "log").open("w"))
    try:
        b.build(
            [write(tmp_path / "records" / "a.jsonl", history(manifest, t - timedelta(days=60)))], t
        )
        clock = Clock(t)
        store = b.store  # LMDB opens an environment once per process
        svc = flow_for(manifest)
        first = ask(svc, store, manifest, Family.AUTH_CARD, clock)
        assert isinstance(first, Ready)
        assert next_update(first) == t + timedelta(seconds=VALIDITY)  # no notice yet: not bound
        assert ask(svc, store, manifest, Family.AUTH_CARD, clock) is first  # and cached
        # the notice (made in time, its record arriving late) is recorded a minute later
        b.build([write(tmp_path / "records" / "b.jsonl", [notice(planned, t)])],
                t + timedelta(minutes=1))  # fmt: skip
        clock.at = t + timedelta(minutes=2)
        after = ask(svc, store, manifest, Family.AUTH_CARD, clock)
        assert isinstance(after, Ready) and after.der != first.der and next_update(after) == due
    finally:
        b.close()


def test_act_34_1_5_good_answer_never_outlives_its_not_after(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """Expiry ends a certificate's effect too (Act §34(1)(5)): nextUpdate stops at notAfter."""
    pki, manifest = demo_pki
    t = datetime.now(UTC).replace(microsecond=0)
    end = t + timedelta(minutes=20)
    rec = {"type": "issuance", "id": "short", "recorded_at": (t - timedelta(days=1)).isoformat(),
           "serial": SERIALS[Family.AUTH_CARD], "family": "auth-card",
           "issuer": issuer(manifest, Family.AUTH_CARD).id,
           "not_before": (t - timedelta(days=1)).isoformat(), "not_after": end.isoformat(),
           "holder": HOLDER}  # fmt: skip
    b = Builder(cycle_config(tmp_path, pki), progress=False, log=(tmp_path / "log").open("w"))
    try:
        b.build([write(tmp_path / "records" / "a.jsonl", [rec])], t)
        clock = Clock(t)
        svc, store = flow_for(manifest), b.store
        assert next_update(ask(svc, store, manifest, Family.AUTH_CARD, clock)) == end
        # once expired the answer stays good (nothing revokes it any more), with a full validity
        clock.at = end + timedelta(seconds=1)
        after = ask(svc, store, manifest, Family.AUTH_CARD, clock)
        assert status(after) is ocsp.OCSPCertStatus.GOOD
        fresh = svc.fresh_until(issuer(manifest, Family.AUTH_CARD).index)  # the CRL's nextUpdate
        unbound = min(clock.at + timedelta(seconds=VALIDITY), datetime.fromtimestamp(fresh, UTC))
        assert next_update(after) == unbound > end
    finally:
        b.close()


# ---------------------------------------------------------------------------
# Through the real server: GET, Cache-Control max-age and Expires (RFC 5019 §6.2)
# ---------------------------------------------------------------------------


def test_act_31_2_real_server_max_age_and_expires_stop_at_the_lapse(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """Real clock: a lapse falling due at the next 00:00 JST (at least a minute away), a
    responder signing good answers for two days and CRLs of three days' cycle, so that
    only the lapse can bound the answer."""
    pki, manifest = demo_pki
    now = datetime.now(UTC)
    planned = (now.astimezone(rules.JST) - timedelta(days=30)).date()
    if rules.move_out_lapse(planned) - now < timedelta(minutes=1):
        planned += timedelta(days=1)
    due = rules.move_out_lapse(planned)
    cfg = cycle_config(tmp_path, pki, cycle=3 * 86_400)
    b = Builder(cfg, progress=False, log=(tmp_path / "log").open("w"))
    try:
        recs = [
            *history(manifest, now - timedelta(days=60)),
            notice(planned, now - timedelta(days=28)),
        ]
        b.build([write(tmp_path / "records" / "a.jsonl", recs)])
    finally:
        b.close()
    built = Built(pki=pki, manifest=manifest, population=tmp_path, store=tmp_path / "store",
                  crl_dir=tmp_path / "crl", facts_key=tmp_path / "facts.key",
                  quarantine=tmp_path / "quarantine.jsonl", registry=tmp_path / "registry.toml",
                  as_of=now, answers=[], summary={})  # fmt: skip
    d = tmp_path / "responder"
    d.mkdir()
    with start_server(built, d, extra=("--good-validity-seconds", str(2 * 86_400))) as server:
        for family in (Family.AUTH_CARD, Family.SIGN_CARD):
            req = certid_request(manifest, family)
            path = urllib.parse.quote(base64.b64encode(req).decode(), safe="")
            r = urllib.request.Request(
                f"{server.url}/ocsp/{path}",
                headers={"Authorization": f"Bearer {server.token('both-verifier')}"},
            )
            with urllib.request.urlopen(r, timeout=10) as resp:
                got = ocsp.load_der_ocsp_response(resp.read())
                asked = datetime.now(UTC)
                assert got.certificate_status is ocsp.OCSPCertStatus.GOOD
                assert got.next_update_utc is not None
                expires = parsedate_to_datetime(resp.headers["Expires"])
                max_age = int(resp.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
            if family is Family.AUTH_CARD:
                assert got.next_update_utc == due and expires == due
                assert max_age <= (due - asked).total_seconds() + 2
            else:  # the sign certificate has no 30-day rule: two days of validity
                assert got.next_update_utc > due and expires > due
