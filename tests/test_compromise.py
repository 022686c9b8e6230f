"""After an issuing-key compromise (発行者署名符号の漏えい等, Act §14, §16-12, §33, §35-12)
the compromised key signs nothing: not the generation's CRLs, not its OCSP answers (whose
delegate it certified). The successor generation's keys publish them; with no successor,
nothing is signed for the generation.

One store, two builds: before the compromise record everything of ``sign-card-g1`` is
signed by its own keys; after it, every CRL and every answer produced verifies with the
successor's keys (``openssl crl -verify``, ``openssl ocsp -VAfile``) and not with the
compromised ones.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from crlbuilder.crl.encode import encode_crl
from crlbuilder.keys.signer import PemSigner, load_signer
from crlbuilder.manifest import Manifest, ManifestError, load_manifest
from crlbuilder.ocsp.response import ResponseSigner
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from tests.conftest import ROOT, Built, run_tool
from tests.support.harness import Server, start_server
from tests.support.presigned import served

G1, G2, AUTH = "sign-card-g1", "sign-card-g2", "auth-card-g1"
SERIALS = (0x1001, 0x1002, 0x1003)
AUTH_SERIAL = 0x2001
FACTS = {"name": "試験 花子", "sex": "2", "birth_date": "419900101", "address": "東京都港区1-1"}


def _record(kind: str, n: int, at: datetime, **kw: object) -> bytes:
    return msgspec.json.encode({"type": kind, "id": f"kc-{n}", "recorded_at": at.isoformat(), **kw})


@dataclass(frozen=True)
class Scenario:
    store: Path
    crl_dir: Path
    first: datetime
    second: datetime
    crls_before: dict[str, bytes]
    """Every CRL file after the first build, by path, with its bytes."""
    summary: dict[str, object]


def _args(built: Built, d: Path, inputs: Path, as_of: datetime) -> list[str]:
    return [
        "--config", str(ROOT / "config" / "builder.toml"), "--store", str(d / "store"),
        "--pki", str(built.pki), "--input", str(inputs), "--facts-key-file", str(built.facts_key),
        "--quarantine", str(d / "quarantine.jsonl"), "--notices", str(d / "notices.jsonl"),
        "--crl-dir", str(d / "crl"), "--spool", str(d / "spool"), "--sign-workers", "1",
        "--as-of", as_of.isoformat(), "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def scenario(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    d = tmp_path_factory.mktemp("compromise")
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - timedelta(hours=2)
    issued = datetime(2025, 1, 6, tzinfo=UTC)
    until = issued + timedelta(days=1500)
    inputs = d / "records"
    inputs.mkdir()
    lines = [
        _record(
            "issuance",
            i,
            issued,
            serial=s,
            family="sign-card",
            issuer=G1,
            not_before=issued.isoformat(),
            not_after=until.isoformat(),
            holder=f"{i:02x}" * 32,
            facts=FACTS,
        )
        for i, s in enumerate(SERIALS, 1)
    ]
    lines.append(
        _record("issuance", 9, issued, serial=AUTH_SERIAL, family="auth-card", issuer=AUTH,
                not_before=issued.isoformat(), not_after=until.isoformat(), holder="09" * 32)
    )  # fmt: skip
    lines.append(
        _record("revocation-request", 10, issued + timedelta(days=30), issuer=G1,
                serial=SERIALS[0], reason="loss")
    )  # fmt: skip
    (inputs / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    run_tool("crlbuilder", "build", *_args(built, d, inputs, first))
    crls_before = {str(p): p.read_bytes() for p in (d / "crl").rglob("*.crl")}
    at = now - timedelta(hours=1)
    (inputs / "b.jsonl").write_bytes(
        _record("ca-compromise", 11, at, issuer=G1)
        + b"\n"
        + _record("ca-compromise", 12, at, issuer=AUTH)
        + b"\n"
    )
    second = datetime.now(UTC)  # after the first build's commit, whenever that was
    out = run_tool("crlbuilder", "build", *_args(built, d, inputs, second))
    summary = msgspec.json.decode(out.stderr.strip().splitlines()[-1])
    return Scenario(d / "store", d / "crl", first, second, crls_before, summary)


def _crl_verifies(crl: Path, ca: Path) -> bool:
    out = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(crl), "-CAfile", str(ca), "-noout"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.returncode == 0 and "verify OK" in out.stdout + out.stderr


def _public_key(m: Manifest, rel: str) -> rsa.RSAPublicKey:
    key = x509.load_pem_x509_certificate(m.path(rel).read_bytes()).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _signed_by(key: rsa.RSAPublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def test_before_the_compromise_the_generation_signs_its_own(
    built: Built, scenario: Scenario
) -> None:
    g1 = built.manifest.issuer(G1)
    before = {p: der for p, der in scenario.crls_before.items() if G1 in p}
    assert len(before) == 4  # current full and delta, and their archived copies
    for p, der in before.items():
        crl = scenario.store.parent / "before.crl"
        crl.write_bytes(der)
        assert _crl_verifies(crl, built.pki / g1.cert), p


def test_act_14_compromised_key_signs_no_crl_after_the_record(
    built: Built, scenario: Scenario
) -> None:
    m = built.manifest
    g1 = m.issuer(G1)
    assert g1.successor == G2
    after = [
        p
        for p in scenario.crl_dir.rglob("*.crl")
        if G1 in str(p) and scenario.crls_before.get(str(p)) != p.read_bytes()
    ]
    assert {p.name for p in after} >= {f"{G1}.crl", f"{G1}-delta.crl"}
    compromised = _public_key(m, g1.cert)
    for crl in after:
        assert _crl_verifies(crl, built.pki / g1.successor_cert), crl  # the successor key signs
        assert not _crl_verifies(crl, built.pki / g1.cert), crl
        parsed = x509.load_der_x509_crl(crl.read_bytes())
        assert not _signed_by(compromised, parsed.signature, parsed.tbs_certlist_bytes)
        # the issuer name the certificates and their distribution points lead clients to
        assert parsed.issuer == x509.load_pem_x509_certificate(m.path(g1.cert).read_bytes()).subject
    full = x509.load_der_x509_crl((scenario.crl_dir / f"{G1}.crl").read_bytes())
    assert full.extensions.get_extension_for_class(x509.CRLNumber)  # a full CRL, new key's base
    with pytest.raises(x509.ExtensionNotFound):
        full.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    reasons = {
        e.serial_number: e.extensions.get_extension_for_class(x509.CRLReason).value.reason
        for e in full
    }
    assert set(reasons) == set(SERIALS)
    assert reasons[SERIALS[1]] == reasons[SERIALS[2]] == x509.ReasonFlags.ca_compromise
    assert reasons[SERIALS[0]] == x509.ReasonFlags.key_compromise  # revoked earlier, kept


def test_no_successor_nothing_signed(built: Built, scenario: Scenario) -> None:
    assert scenario.summary["crls_withheld"] == [AUTH]
    produced = scenario.summary["crls"]
    assert isinstance(produced, list) and AUTH not in {c["issuer"] for c in produced}
    assert G1 in {c["issuer"] for c in produced}


def test_act_14_compromised_delegate_signs_no_stored_answer(
    built: Built, scenario: Scenario
) -> None:
    m = built.manifest
    g1, g2 = m.issuer(G1), m.issuer(G2)
    successor = ResponseSigner(PemSigner.from_files(m.path(g2.ocsp_key), m.path(g2.ocsp_cert)))
    compromised_delegate = _public_key(m, g1.ocsp_cert)
    store = Store.open(scenario.store, readonly=True)
    try:
        with store.read() as r:
            index = {i.id: i.index for i in r.issuers()}
        seen = 0
        g1_cert = x509.load_pem_x509_certificate(m.path(g1.cert).read_bytes())
        with store.env.begin() as txn, store.read() as r:
            for serial in SERIALS:
                raw = txn.get(sf.status_key(index[G1], serial), db=store.dbs[sf.DB_RESPONSES])
                assert raw is not None
                assert sf.unpack_response_head(raw)[3] == successor.signer_id
                resp = ocsp.load_der_ocsp_response(
                    served(r, sf.status_key(index[G1], serial), successor, g1_cert)
                )
                assert not _signed_by(compromised_delegate, resp.signature, resp.tbs_response_bytes)
                assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
                seen += 1
        assert seen == len(SERIALS)
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(
    built: Built, scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with start_server(built, tmp_path_factory.mktemp("resp"), store=scenario.store) as s:
        yield s


def _openssl_ocsp(server: Server, issuer: str, serial: int, *extra: str) -> tuple[str, str]:
    m = server.built.manifest
    args = [
        "openssl", "ocsp", "-url", f"{server.url}/ocsp", "-issuer", str(m.path(m.issuer(issuer).cert)),
        "-serial", str(serial), "-resp_text", *extra,
        "-header", f"Authorization=Bearer {server.token('both-verifier')}",
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return out.stdout, out.stderr


@pytest.mark.parametrize("nonce", ["-no_nonce", "-nonce"])
def test_ocsp_answers_for_the_compromised_generation(server: Server, nonce: str) -> None:
    """Revoked, cACompromise, signed by the successor's delegate: a Trusted Responder
    (RFC 6960 §4.2.2.2) the client configures with -VAfile; not the compromised CA's delegate."""
    m = server.built.manifest
    g1, g2 = m.issuer(G1), m.issuer(G2)
    for serial in SERIALS[1:]:
        out, err = _openssl_ocsp(server, G1, serial, nonce, "-VAfile", str(m.path(g2.ocsp_cert)))
        assert "Response verify OK" in err, err
        assert ": revoked" in out and "Reason: cACompromise" in out, out
        assert "CA G2 OCSP signer" in out and "CA G1 OCSP signer" not in out, out
        # a client still trusting only the compromised CA's delegation gets no verified answer
        out, err = _openssl_ocsp(server, G1, serial, nonce, "-CAfile", str(m.path(g1.cert)))
        assert "Response verify OK" not in err, err


def test_ocsp_no_successor_is_try_later(server: Server) -> None:
    out, err = _openssl_ocsp(
        server,
        AUTH,
        AUTH_SERIAL,
        "-no_nonce",
        "-CAfile",
        str(server.built.manifest.path(server.built.manifest.issuer(AUTH).cert)),
    )
    assert "trylater" in (out + err).lower(), out + err


def test_successor_must_be_another_issuer_of_the_family(built: Built, tmp_path: Path) -> None:
    raw = msgspec.json.decode((built.pki / "pki.json").read_bytes())
    for bad in (
        {"successor": "auth-card-g1"},
        {"successor": "sign-card-g1"},
        {"successor_cert": ""},
    ):
        doc = msgspec.json.decode(msgspec.json.encode(raw))
        doc["issuers"][0].update(bad)
        (tmp_path / "pki.json").write_bytes(msgspec.json.encode(doc))
        with pytest.raises(ManifestError, match="successor"):
            load_manifest(tmp_path)


def test_group_appliance_imports_the_successor_signed_crl(
    built: Built, scenario: Scenario, tmp_path: Path
) -> None:
    """A 団体署名検証者 (Act §17(5)) importing the 機構's CRLs recognises the compromised
    generation's final CRLs by the successor certificate of its PKI manifest."""
    out = run_tool(
        "crlbuilder", "import-crl", "--store", str(tmp_path / "group"), "--pki", str(built.pki),
        str(scenario.crl_dir / f"{G1}.crl"), check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    store = Store.open(tmp_path / "group", readonly=True)
    try:
        with store.read() as r:
            index = next(i.index for i in r.issuers() if i.id == G1)
            assert {int.from_bytes(k[2:], "big") for k, _ in r.revocations(index)} == set(SERIALS)
    finally:
        store.close()


def test_group_appliance_refuses_a_crl_the_compromised_key_signed_afterwards(
    built: Built, scenario: Scenario, tmp_path: Path
) -> None:
    """Whoever holds the compromised key can sign a CRL under the generation's name; the
    group, having imported the successor-signed CRL, refuses one it signed afterwards (an
    emptied CRL, numbered above the last): every serial stays revoked."""
    m = built.manifest
    g1 = m.issuer(G1)
    store = tmp_path / "group"

    def import_crl(path: Path) -> subprocess.CompletedProcess[str]:
        return run_tool(
            "crlbuilder", "import-crl", "--store", str(store), "--pki", str(built.pki), str(path),
            check=False,
        )  # fmt: skip

    before = tmp_path / "before.crl"
    before.write_bytes(scenario.crls_before[str(scenario.crl_dir / f"{G1}.crl")])
    assert import_crl(before).returncode == 0  # signed by the generation's own key
    after = scenario.crl_dir / f"{G1}.crl"
    out = import_crl(after)
    assert out.returncode == 0, out.stderr
    number = (
        x509.load_der_x509_crl(after.read_bytes())
        .extensions.get_extension_for_class(x509.CRLNumber)
        .value.crl_number
    )
    forged = tmp_path / "forged.crl"
    emptied = encode_crl(
        issuer=x509.load_pem_x509_certificate(m.path(g1.cert).read_bytes()),
        signer=load_signer(m.key_ref(g1.key), m.path(g1.cert)), number=number + 10,
        this_update=datetime.now(UTC) - timedelta(minutes=1),
        next_update=datetime.now(UTC) + timedelta(days=1), entries=(),
    )  # fmt: skip
    forged.write_bytes(emptied)
    out = import_crl(forged)
    assert out.returncode != 0
    assert "compromised" in out.stderr, out.stderr
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            index = next(i.index for i in r.issuers() if i.id == G1)
            assert {int.from_bytes(k[2:], "big") for k, _ in r.revocations(index)} == set(SERIALS)
    finally:
        s.close()
