"""`crlbuilder build` end to end: answers.jsonl against the store and the CRLs, kills, follow."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import msgspec
import pytest
from cryptography import x509

from crlbuilder.build import prune_done
from crlbuilder.keys.signer import PemSigner
from crlbuilder.manifest import ocsp_signer_files
from crlbuilder.model import Answer, CertStatus
from crlbuilder.ocsp.response import ResponseSigner
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from tests.conftest import BIN, Built, run_tool
from tests.expected import erased as is_erased
from tests.support.builder import as_of_the_clock
from tests.support.presigned import served
from tests.support.store import Dump, dump_store
from tests.support.wait import until


def compared(store: Path) -> Dump:
    """What two builds of the same input must write alike: all but the CRL index and the
    metadata's times and CRL numbers."""
    return dump_store(store, skip=(sf.DB_CRLS,), meta=(sf.META_COMMIT,))


def issuers(store: Store) -> list[sf.IssuerMeta]:
    with store.read() as r:
        return r.issuers()


def status_of(store: Store, index: int, serial: int) -> sf.StatusRecord | None:
    with store.read() as r:
        return r.status(sf.status_key(index, serial))


def counts(store: Store) -> dict[str, int]:
    with store.read() as r:
        return r.counts()


def openssl_crl_serials(crl: Path, ca: Path) -> set[int]:
    """The serials `openssl crl` lists, after it verified the signature against ``ca``."""
    out = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(crl), "-CAfile", str(ca), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "verify OK" in out.stderr + out.stdout, out.stderr
    return {
        int(line.split(":", 1)[1], 16)
        for line in out.stdout.splitlines()
        if "Serial Number:" in line
    }


def test_build_summary_and_nothing_lost(built: Built) -> None:
    s = built.summary
    assert s["records_read"] == s["applied"] + s["quarantined"] + s["skipped_duplicates"]
    assert s["quarantined"] == 0, built.quarantine.read_text()[:2000]
    cats = s["revocations_by_category"]
    assert isinstance(cats, dict)
    assert set(cats) == {
        "request",
        "resident-change",
        "recording-error",
        "ca-compromise",
        "card-cascade",
    }


def test_every_answer_matches_the_store(built: Built) -> None:
    store = Store.open(built.store, readonly=True)
    raw = [
        msgspec.json.decode(line, type=Answer)
        for line in (built.population / "answers.jsonl").read_bytes().splitlines()
    ]
    try:
        index = {i.id: i.index for i in issuers(store)}
        checked = erased = 0
        for a in raw:
            st = status_of(store, index[a.issuer], a.serial)
            cert = x509.load_pem_x509_certificate((built.population / a.cert).read_bytes())
            assert cert.serial_number == a.serial
            if is_erased(a, built.population, built.as_of):
                # Ord §70(1)(iii): past its retention, the record is erased; lost effect stays
                assert st is not None and st.erased and st.revoked, a.case
                assert (st.category, st.reason, st.revoked_at) == (0, 0, 0), a.case
                erased += 1
            elif a.status is CertStatus.UNKNOWN:
                assert st is None, a.case
            elif a.status is CertStatus.GOOD:
                assert st is not None and not st.revoked, a.case
            else:
                assert st is not None and st.revoked, a.case
                assert st.category_enum is a.category, a.case
                assert st.reason == a.reason, a.case
                assert a.revoked_at is not None and st.revoked_at == int(
                    a.revoked_at.timestamp()
                ), a.case
            checked += 1
        assert checked == len(built.answers) > 100
        assert erased > 0  # the demo population reaches back past ten years
    finally:
        store.close()


def test_every_crl_verifies_and_lists_exactly_the_revoked(built: Built) -> None:
    store = Store.open(built.store, readonly=True)
    try:
        compromised = {i.id for i in issuers(store) if i.compromised_at}
        assert compromised == {"sign-card-g1"}
        for issuer in built.manifest.issuers:
            # after a compromise the successor key signs, under the generation's name (Act §14)
            ca = built.pki / (issuer.successor_cert if issuer.id in compromised else issuer.cert)
            listed = openssl_crl_serials(built.crl_dir / f"{issuer.id}.crl", ca)
            with store.read() as r:
                entries = {int.from_bytes(k[2:], "big") for k, _ in r.revocations(issuer.index)}
            # the build erased what passed its retention (and expired) before signing the CRL
            assert listed == set(entries), issuer.id
            if issuer.id == "sign-card-g1":  # retention erased some (Ord §70(1)(iii))
                assert any(
                    st.erased
                    for st in (status_of(store, issuer.index, a.serial) for a in built.answers)
                    if st is not None
                )
            delta = openssl_crl_serials(built.crl_dir / f"{issuer.id}-delta.crl", ca)
            assert delta == set()  # nothing new since the full CRL of the same build
            for a in built.answers:  # as served: erased samples answer unknown
                if a.issuer == issuer.id:
                    assert (a.serial in listed) == (a.status is CertStatus.REVOKED), a.case
    finally:
        store.close()


def test_presigned_answers_verify_with_openssl(built: Built) -> None:
    store = Store.open(built.store, readonly=True)
    revoked_all = [a for a in built.answers if a.status is CertStatus.REVOKED]
    revoked = revoked_all[:6]
    try:
        compromised = {i.id for i in issuers(store) if i.compromised_at}
        # after a compromise the successor's delegate signs: a Trusted Responder (-VAfile)
        ocsp_files = {
            i.id: ocsp_signer_files(built.manifest, i, i.id in compromised)
            for i in built.manifest.issuers
        }
        index = {i.id: i.index for i in issuers(store)}
        revoked += [a for a in built.answers if a.issuer in compromised and a in revoked_all][:3]
        for a in revoked:
            files = ocsp_files[a.issuer]
            assert files is not None
            with store.env.begin() as txn:
                raw = txn.get(
                    sf.status_key(index[a.issuer], a.serial), db=store.dbs[sf.DB_RESPONSES]
                )
            assert raw is not None, a.case
            signer = ResponseSigner(
                PemSigner.from_files(built.pki / files[0], built.pki / files[1])
            )
            assert sf.unpack_response_head(raw)[3] == signer.signer_id
            issuer_cert = x509.load_pem_x509_certificate(
                (built.population / a.issuer_cert).read_bytes()
            )
            with store.read() as r:
                der = served(r, sf.status_key(index[a.issuer], a.serial), signer, issuer_cert)
            resp = Path(built.store.parent / "resp.der")
            resp.write_bytes(der)
            out = subprocess.run(
                ["openssl", "ocsp", "-respin", str(resp), "-issuer", str(built.population / a.issuer_cert),
                 "-cert", str(built.population / a.cert), "-CAfile", str(built.population / a.issuer_cert),
                 *(["-VAfile", str(built.pki / files[1])] if a.issuer in compromised else [])],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            assert "Response verify OK" in out.stderr, out.stderr
            assert ": revoked" in out.stdout
    finally:
        store.close()


def test_rebuild_is_idempotent(built: Built, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    out = run_tool("crlbuilder", "build", *built.builder_args(store, tmp_path / "crl"))
    s = msgspec.json.decode(out.stderr.strip().splitlines()[-1])
    assert s["applied"] == 0 and s["skipped_duplicates"] == s["records_read"] and s["commits"] == 0
    assert compared(store) == compared(built.store)


def no_process_mentions(text: str) -> bool:
    """No process's command line contains ``text``."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                if text in cmdline.decode(errors="replace"):
                    return False
    return True


@pytest.mark.slow
def test_sigkill_at_any_moment_converges(built: Built, tmp_path: Path) -> None:
    """Kill the builder at several moments; the last committed state stays readable, a rerun converges."""
    args = [*built.builder_args(tmp_path / "store", tmp_path / "crl"), "--batch-size", "700"]
    reference = tmp_path / "ref"
    run_tool(
        "crlbuilder",
        "build",
        *built.builder_args(reference, tmp_path / "refcrl"),
        "--batch-size",
        "700",
    )
    for delay in (0.4, 0.9, 1.4, 2.2, 3.0):
        p = subprocess.Popen([str(BIN / "crlbuilder"), "build", *args], stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        until(
            functools.partial(no_process_mentions, str(tmp_path / "store")), 5,
            "no signing process outliving the killed builder",
        )  # fmt: skip
        try:  # the last committed state is readable; killed before the first: no store yet
            s = Store.open(tmp_path / "store", readonly=True)
        except sf.StoreFormatError as e:
            assert "no status store here" in str(e), e
        else:
            counts(s)
            s.close()
    run_tool("crlbuilder", "build", *args)
    assert compared(tmp_path / "store") == compared(reference)


def _follow(args: list[str], spool: Path, name: str, rec: dict[str, object]) -> str:
    """Run `build --follow` until idle, dropping one record file in the spool meanwhile."""
    p = subprocess.Popen(
        [str(BIN / "crlbuilder"), "build", *args], stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.0)
        tmp = spool / "in.tmp"
        tmp.write_bytes(msgspec.json.encode(rec) + b"\n")
        tmp.rename(spool / name)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert '"event":"spool-file"' in err
    return err


def test_follow_applies_spool_files_and_keeps_none_by_default(built: Built, tmp_path: Path) -> None:
    """A spool file holds records in clear: once committed it is removed (default), or kept in a
    0700 done/ for spool_keep_seconds; an older, world-readable done/ is narrowed and emptied."""
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    spool = tmp_path / "store-spool"
    (spool / "done").mkdir(parents=True)
    (spool / "done").chmod(0o755)
    (spool / "done" / "0000.jsonl").write_bytes(b"{}\n")  # kept by an older version
    good = [
        a for a in built.answers if a.status is CertStatus.GOOD and a.family.value == "auth-card"
    ][:2]
    recs = [
        {"type": "revocation-request", "id": f"follow-{i}", "recorded_at": built.as_of.isoformat(),
         "serial": a.serial, "issuer": a.issuer, "reason": "application"}
        for i, a in enumerate(good)
    ]  # fmt: skip
    args = as_of_the_clock(built.builder_args(store, tmp_path / "crl"))
    args = [
        *args,
        "--follow",
        "--max-idle",
        "3",
        "--follow-interval",
        "0.1",
    ]
    _follow(args, spool, "0001.jsonl", recs[0])
    assert not (spool / "0001.jsonl").exists()
    assert list((spool / "done").iterdir()) == []
    assert stat.S_IMODE((spool / "done").stat().st_mode) == 0o700

    _follow([*args, "--spool-keep-seconds", "3600"], spool, "0002.jsonl", recs[1])
    assert not (spool / "0002.jsonl").exists()
    assert (spool / "done" / "0002.jsonl").exists()
    assert stat.S_IMODE((spool / "done" / "0002.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((spool / "done").stat().st_mode) == 0o700
    moved_in = (spool / "done" / "0002.jsonl").stat().st_mtime  # stamped from the builder's clock
    assert prune_done(spool / "done", 3600, moved_in) == 0
    assert prune_done(spool / "done", 3600, moved_in + 3600) == 1
    (spool / "done" / "0003.jsonl").write_bytes(b"{}\n")
    # nothing kept by default, even when the clock reads earlier than the file's stamp
    assert prune_done(spool / "done", 0, time.time() - 86400) == 1
    for a in good:
        out = run_tool(
            "crlbuilder", "status", "--store", str(store), "--issuer", a.issuer,
            "--serial", str(a.serial),
        )  # fmt: skip
        assert '"status":"revoked"' in out.stdout


@pytest.mark.integration  # runs crlbuilder --help
def test_help_says_what_happens_to_spool_files_and_unchecked_consents() -> None:
    out = run_tool("crlbuilder", "build", "--help")
    text = " ".join(out.stdout.split())
    assert "--spool-keep-seconds" in text and "removed as soon as" in text
    assert "--registry" in text and "without a registry every consent grant is quarantined" in text


def test_build_without_registry_quarantines_consents_and_says_so(
    built: Built, tmp_path: Path
) -> None:
    """Act §18(3): with no registry to check them against, consent grants are not stored."""
    args = built.builder_args(tmp_path / "store", tmp_path / "crl")
    i = args.index("--registry")
    del args[i : i + 2]
    out = run_tool("crlbuilder", "build", *args, "--no-presign", "--no-crl")
    assert "no input.registry" in out.stderr
    q = [
        msgspec.json.decode(line)
        for line in (tmp_path / "store-quarantine.jsonl").read_bytes().splitlines()
    ]
    assert q and all("no registry of parties configured" in e["reason"] for e in q)
    for path, has_consents in ((tmp_path / "store", False), (built.store, True)):
        s = Store.open(path, readonly=True)
        try:
            assert (counts(s)["consents"] > 0) is has_consents
        finally:
            s.close()


def test_build_refuses_bad_configuration(built: Built, tmp_path: Path) -> None:
    out = run_tool(
        "crlbuilder",
        "build",
        *built.builder_args(tmp_path / "s"),
        "--pki",
        str(tmp_path / "nope"),
        check=False,
    )
    assert out.returncode == 2 and "cannot read the PKI manifest" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nbogus = 1\n")
    out = run_tool("crlbuilder", "build", "--config", str(bad), check=False)
    assert out.returncode == 2 and "bogus" in out.stderr
    key = tmp_path / "open.key"
    key.write_text("00" * 32)
    key.chmod(0o644)
    out = run_tool(
        "crlbuilder",
        "build",
        *built.builder_args(tmp_path / "s"),
        "--facts-key-file",
        str(key),
        check=False,
    )
    assert out.returncode == 2 and "chmod 600" in out.stderr


def test_build_refuses_a_crl_imported_store(built: Built, tmp_path: Path) -> None:
    store = tmp_path / "store"
    s = Store.open(store, readonly=False, map_size=1 << 24)
    with s.env.begin(write=True) as txn:
        txn.put(sf.META_MODE, sf.MODE_CRL_IMPORT, db=s.dbs[sf.DB_META])
    s.close()
    out = run_tool("crlbuilder", "build", *built.builder_args(store), check=False)
    assert out.returncode == 2 and "import-crl" in out.stderr
