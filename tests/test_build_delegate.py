"""`crlbuilder build` refuses a delegated OCSP signer that is none of its issuer's (RFC 6960
§4.2.2.2), as `responder serve` does, before anything is applied or signed.

docs/operations.md, "OCSP signer renewal": step 3 restarts crlbuilder with the new signer,
step 4 the responder, which refuses a certificate its issuer's CA key did not issue or one
without id-kp-OCSPSigning. The builder took either and re-signed every stored answer with it
(each one rejected by every client), and said nothing until the responder's restart failed.
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from crlbuilder.build import Builder
from crlbuilder.demo.pki import init_pki
from crlbuilder.keys.signer import SignerError
from crlbuilder.manifest import load_manifest
from responder.cli import main as responder_main
from responder.ocsp import load_issuers
from tests.support.builder import builder_config

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki") / "pki"
    init_pki(d)
    return d


def _renewed(
    pki_dir: Path,
    tmp: Path,
    *,
    by: str,
    purpose: bool,
    usage: x509.KeyUsage | None = None,
    valid: tuple[datetime, datetime] | None = None,
) -> tuple[Path, Path]:
    """A copy of the PKI whose sign-card-g2 OCSP signer certificate (its key kept) is
    re-issued by issuer ``by``'s CA key, with or without id-kp-OCSPSigning, with key
    usage ``usage`` when given, valid from ``valid[0]`` to ``valid[1]`` when given."""
    pki = tmp / "pki"
    shutil.copytree(pki_dir, pki)
    m = load_manifest(pki)
    issuer, signer_ca = m.issuer("sign-card-g2"), m.issuer(by)
    old = x509.load_pem_x509_certificate(m.path(issuer.ocsp_cert).read_bytes())
    ca = x509.load_pem_x509_certificate(m.path(signer_ca.cert).read_bytes())
    ca_key = serialization.load_pem_private_key(m.path(signer_ca.key).read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0] if valid else old.not_valid_before_utc)
        .not_valid_after(valid[1] if valid else old.not_valid_before_utc + timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if purpose:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    cert = m.path(issuer.ocsp_cert)
    cert.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return pki, cert


@pytest.mark.parametrize(
    ("by", "purpose", "problem"),
    [
        ("sign-card-g2", False, "lacks the OCSP-signing purpose"),
        ("sign-card-g1", True, "not issued by the CA"),
    ],
    ids=["no-ocsp-signing", "another-generations-ca"],
)
def test_build_refuses_a_delegate_its_issuer_did_not_make(
    pki_dir: Path, tmp_path: Path, by: str, purpose: bool, problem: str
) -> None:
    pki, cert = _renewed(pki_dir, tmp_path, by=by, purpose=purpose)
    cfg = builder_config(tmp_path, pki)
    with pytest.raises(SignerError) as refused:
        Builder(cfg, progress=False)
    assert str(refused.value).startswith(f"{cert}: sign-card-g2's OCSP signer: {problem}")
    assert not Path(cfg.store.path).exists()


_KEY_ENCIPHERMENT_ONLY = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=True,
    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def test_build_refuses_a_delegate_whose_key_usage_forbids_signing(
    pki_dir: Path, tmp_path: Path
) -> None:
    """RFC 5280 §4.2.1.3: a key usage without digitalSignature forbids the key to sign
    anything but certificates and CRLs; a client that honours it rejects every answer."""
    pki, cert = _renewed(
        pki_dir, tmp_path, by="sign-card-g2", purpose=True, usage=_KEY_ENCIPHERMENT_ONLY
    )
    cfg = builder_config(tmp_path, pki)
    with pytest.raises(SignerError) as refused:
        Builder(cfg, progress=False)
    assert str(refused.value).startswith(
        f"{cert}: sign-card-g2's OCSP signer: its key usage lacks digitalSignature"
    )
    assert not Path(cfg.store.path).exists()


def test_serve_refuses_a_delegate_whose_key_usage_forbids_signing(
    pki_dir: Path, tmp_path: Path
) -> None:
    """The same reason at `responder serve` (its workers' `load_issuers`)."""
    pki, cert = _renewed(
        pki_dir, tmp_path, by="sign-card-g2", purpose=True, usage=_KEY_ENCIPHERMENT_ONLY
    )
    with pytest.raises(SignerError) as refused:
        load_issuers(load_manifest(pki))
    assert str(refused.value).startswith(
        f"{cert}: sign-card-g2's OCSP signer: its key usage lacks digitalSignature"
    )


@pytest.mark.parametrize(
    ("begins", "ends", "when"),
    [(-400, -1, "expired"), (1, 400, "not valid yet")],
    ids=["expired", "renewal-installed-early"],
)
def test_serve_refuses_a_delegate_not_valid_now(
    pki_dir: Path, tmp_path: Path, begins: int, ends: int, when: str
) -> None:
    """A delegate whose certificate expired, or a renewal installed before its notBefore
    (docs/operations.md, "OCSP signer renewal"): every client checks the signer's validity
    and rejects every answer it signs, whatever the status. `responder serve` refuses to
    start, naming the file, as for any other signer its clients reject; a worker started
    later (the master checked) does not, so that a certificate expiring while the
    responder runs does not make a worker fail again and again."""
    now = datetime.now(UTC)
    valid = (now + timedelta(days=begins), now + timedelta(days=ends))
    pki, cert = _renewed(pki_dir, tmp_path, by="sign-card-g2", purpose=True, valid=valid)
    with pytest.raises(SignerError) as refused:
        load_issuers(load_manifest(pki))
    assert str(refused.value).startswith(
        f"{cert}: sign-card-g2's OCSP signer: its certificate is {when}"
    )
    assert any(v.id == "sign-card-g2" for v in load_issuers(load_manifest(pki), outage_ok=True))


def test_build_takes_its_own_pki(pki_dir: Path, tmp_path: Path) -> None:
    cfg = builder_config(tmp_path, pki_dir)
    Builder(cfg, progress=False).close()


def test_a_delegate_without_ocsp_nocheck_is_warned_of_at_start_not_refused(
    pki_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A delegate lacking id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1; every delegate this
    project makes has it) was taken silently: its clients may then check its own revocation
    before believing any answer. Not refused (the answers verify where the CA's CRL is
    reached), but both services say so at start, naming the file: the builder as a
    ``warning`` event, ``responder serve`` on stderr."""
    pki, cert = _renewed(pki_dir, tmp_path, by="sign-card-g2", purpose=True)  # no nocheck
    cfg = builder_config(tmp_path, pki)
    log = io.StringIO()
    Builder(cfg, progress=False, log=log).close()
    warned = [json.loads(line) for line in log.getvalue().splitlines()]
    notes = [e["message"] for e in warned if "nocheck" in str(e.get("message"))]
    assert notes == [
        f"{cert}: sign-card-g2's OCSP signer: lacks id-pkix-ocsp-nocheck (RFC 6960 "
        "§4.2.2.2.1): clients may check this signer's own revocation before believing its "
        "answers (a CRL they must reach); renew it with the extension"
    ]
    code = responder_main(
        ["serve", "--pki", str(pki), "--store", str(tmp_path / "no-store"),
         "--registry", str(tmp_path / "none.toml"), "--port", "0", "--no-metrics"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2  # no registry: it stops after the signers were checked
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert lines == [
        "responder serve: warning: sign-card-g2's OCSP signer: lacks id-pkix-ocsp-nocheck "
        "(RFC 6960 §4.2.2.2.1): clients may check this signer's own revocation before "
        "believing its answers (a CRL they must reach); renew it with the extension"
    ], err
    quiet = io.StringIO()  # the demo PKI's delegates carry it: nothing said
    Builder(builder_config(tmp_path / "own", pki_dir), progress=False, log=quiet).close()
    assert "nocheck" not in quiet.getvalue()
