"""Signatures made by the real tools against the demo PKI agree with the validation (Act §19(1)).

The demo population's sample certificates (``crlbuilder synth``: every family, good,
expired and revoked in each category, one shared subject key) are signed by ``openssl
dgst -sign`` (raw PKCS#1 v1.5), ``openssl cms -sign`` (attached, detached, with and
without signed attributes, so with and without signingTime) and ``xmlsec1 --sign``
(XMLDSig, enveloped and detached), and checked by `responder.validation.verdict`
against the built store. On every good and tampered case the result agrees with ``openssl
cms -verify`` and ``xmlsec1 --verify``. A signingTime before a revocation cannot be made
by these tools (they stamp the present): that case is assembled with asn1crypto here and
by hand in tests/test_validation.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crlbuilder.model import Answer, Category, CertStatus, Family, Reason
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader
from responder.validation.path import anchors
from responder.validation.request import CmsItem, Item, Pkcs1Item, XmlItem
from responder.validation.result import ItemResult, ResultCode
from responder.validation.verdict import verify_item
from tests.conftest import Built
from tests.support.pki import make_ca
from tests.support.signing import cms_signed

pytestmark = pytest.mark.interop

DOC = "電子申請の本文\n".encode()
TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<Application xmlns="urn:jpki-va:test">
  <Body Id="body">申請の内容</Body>
  <Signature xmlns="http://www.w3.org/2000/09/xmldsig#">
    <SignedInfo>
      <CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
      <SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
      <Reference URI="{uri}">{transforms}
        <DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
        <DigestValue/>
      </Reference>
    </SignedInfo>
    <SignatureValue/>
    <KeyInfo><X509Data><X509Certificate/></X509Data></KeyInfo>
  </Signature>
</Application>
"""
ENVELOPED = '\n        <Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/></Transforms>'


def tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=60, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def reader(built: Built) -> Iterator[LmdbReader]:
    store = Store.open(built.store, readonly=True)
    with store.read() as r:
        yield r
    store.close()


def sample(built: Built, family: Family, case: str) -> Answer:
    for a in built.answers:
        if a.family is family and a.case == case and a.issuer.endswith(("g2", "-g1")):
            if family is Family.SIGN_CARD and a.issuer != "sign-card-g2" and case == "good":
                continue
            return a
    raise AssertionError(f"no {family.value} {case} sample")


class Signer:
    """The real tools, in one directory, with a sample certificate and the subject key."""

    def __init__(self, built: Built, a: Answer, d: Path) -> None:
        self.d = d
        d.mkdir(parents=True, exist_ok=True)
        self.key = built.population / "samples" / "subject-key.pem"
        self.cert_path = built.population / a.cert
        self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        (d / "doc.txt").write_bytes(DOC)

    def raw(self, tamper: bool = False) -> Item:
        out = self.d / "doc.sig"
        p = tool(
            "openssl",
            "dgst",
            "-sha256",
            "-sign",
            str(self.key),
            "-out",
            str(out),
            str(self.d / "doc.txt"),
        )
        assert p.returncode == 0, p.stderr
        return Pkcs1Item(
            certificate=self.cert_der,
            signature=out.read_bytes(),
            data=DOC + (b"x" if tamper else b""),
        )

    def cms(
        self, *, detached: bool, attributes: bool = True, tamper: bool = False
    ) -> tuple[Item, bool]:
        """(item, what ``openssl cms -verify`` says of it)."""
        out = self.d / f"doc-{detached}-{attributes}.p7s"
        args = ["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-in", str(self.d / "doc.txt"),
                "-signer", str(self.cert_path), "-inkey", str(self.key), "-outform", "DER",
                "-out", str(out)]  # fmt: skip
        if not detached:
            args.append("-nodetach")
        if not attributes:
            args.append("-noattr")
        p = tool(*args)
        assert p.returncode == 0, p.stderr
        blob = out.read_bytes()
        content = DOC + b"x" if tamper else DOC
        if tamper and not detached:
            blob = blob.replace(DOC, DOC[:-2] + b"?\n")
            content = DOC[:-2] + b"?\n"
        (self.d / "content.txt").write_bytes(content)
        (self.d / "check.p7s").write_bytes(blob)
        verify = ["openssl", "cms", "-verify", "-noverify", "-binary", "-inform", "DER",
                  "-in", str(self.d / "check.p7s"), "-out", "/dev/null"]  # fmt: skip
        if detached:
            verify += ["-content", str(self.d / "content.txt")]
        ok = tool(*verify).returncode == 0
        return CmsItem(cms=blob, content=content if detached else None), ok

    def xml(self, *, detached: bool, tamper: bool = False) -> tuple[Item, bool]:
        """(item, what ``xmlsec1 --verify`` says of it)."""
        tmpl = self.d / "tmpl.xml"
        uri, transforms = ("doc.txt", "") if detached else ("", ENVELOPED)
        tmpl.write_text(TEMPLATE.format(uri=uri, transforms=transforms))
        out = self.d / "signed.xml"
        p = tool("xmlsec1", "--sign", "--privkey-pem", f"{self.key},{self.cert_path}",
                 "--output", str(out), str(tmpl), cwd=self.d)  # fmt: skip
        assert p.returncode == 0, p.stderr
        xml = out.read_bytes()
        doc = DOC
        if tamper:
            if detached:
                doc = DOC + b"x"
            else:
                xml = xml.replace("申請の内容".encode(), "改竄の内容".encode())
        check = self.d / "check"
        check.mkdir(exist_ok=True)
        (check / "doc.txt").write_bytes(doc)
        (check / "signed.xml").write_bytes(xml)
        ok = tool("xmlsec1", "--verify", "--pubkey-cert-pem", str(self.cert_path),
                  "signed.xml", cwd=check).returncode == 0  # fmt: skip
        return XmlItem(xml=xml, documents={"doc.txt": doc} if detached else {}), ok


def _valid(built: Built, a: Answer, now: datetime) -> bool:
    cert = x509.load_pem_x509_certificate((built.population / a.cert).read_bytes())
    return cert.not_valid_before_utc < now < cert.not_valid_after_utc


def check(built: Built, reader: LmdbReader, item: Item) -> ItemResult:
    now = datetime.now(UTC)
    return verify_item(0, item, anchors(reader.issuers()), reader, now)


KINDS = ("raw", "cms-attached", "cms-detached", "cms-noattr", "xml-enveloped", "xml-detached")


def make(s: Signer, kind: str, tamper: bool = False) -> tuple[Item, bool | None]:
    if kind == "raw":
        return s.raw(tamper), None
    if kind.startswith("cms"):
        return s.cms(
            detached=kind == "cms-detached", attributes=kind != "cms-noattr", tamper=tamper
        )
    return s.xml(detached=kind == "xml-detached", tamper=tamper)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", [Family.SIGN_CARD, Family.SIGN_MOBILE])
def test_real_tools_good_and_tampered_agree(
    built: Built, reader: LmdbReader, tmp_path: Path, kind: str, family: Family
) -> None:
    a = sample(built, family, "good")
    s = Signer(built, a, tmp_path)
    item, tool_ok = make(s, kind)
    r = check(built, reader, item)
    assert r.result is ResultCode.OK, r
    assert tool_ok in (None, True)
    assert r.certificate is not None and r.certificate.issuer == a.issuer
    assert r.facts is not None and r.facts.facts is not None
    if kind in ("cms-attached", "cms-detached"):  # openssl stamps signingTime
        assert r.validity is not None and r.validity.instant_source == "signing-time"
    item, tool_ok = make(s, kind, tamper=True)
    r = check(built, reader, item)
    assert r.result is ResultCode.SIGNATURE_MISMATCH, r
    assert tool_ok in (None, False)


@pytest.mark.parametrize("kind", KINDS)
def test_real_tools_on_refused_certificates(
    built: Built, reader: LmdbReader, tmp_path: Path, kind: str
) -> None:
    """An auth certificate, an expired one, one revoked before signing, a foreign CA's."""
    auth = Signer(built, sample(built, Family.AUTH_CARD, "good"), tmp_path / "auth")
    assert check(built, reader, make(auth, kind)[0]).result is ResultCode.NOT_A_SIGN_CERTIFICATE
    expired = Signer(built, sample(built, Family.SIGN_CARD, "expired"), tmp_path / "expired")
    assert check(built, reader, make(expired, kind)[0]).result is ResultCode.EXPIRED
    now = datetime.now(UTC)
    revoked = next(
        x for x in built.answers
        if x.family is Family.SIGN_MOBILE and x.status is CertStatus.REVOKED
        and x.category is Category.REQUEST and x.reason is not Reason.KEY_COMPROMISE
        and x.revoked_at is not None and _valid(built, x, now)
    )  # fmt: skip
    r = check(built, reader, make(Signer(built, revoked, tmp_path / "revoked"), kind)[0])
    assert r.result is ResultCode.REVOKED, r  # signed now, after the revocation
    assert r.status_now is not None and r.status_now.article == "Act §16-10"
    assert r.status_now.revoked_at == revoked.revoked_at


def test_foreign_ca_certificate_is_unknown_issuer(
    built: Built, reader: LmdbReader, tmp_path: Path
) -> None:
    ca = make_ca(
        "JPKI sign-card CA G2", organization="jpki-va demo"
    )  # the demo's name, another key
    a = sample(built, Family.SIGN_CARD, "good")
    s = Signer(built, a, tmp_path)
    key = serialization.load_pem_private_key(s.key.read_bytes(), None)
    cert = ca.issue(s.cert.subject, key)  # type: ignore[arg-type]
    (tmp_path / "foreign.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    s.cert_path = tmp_path / "foreign.pem"
    s.cert_der = cert.public_bytes(serialization.Encoding.DER)
    for kind in KINDS:
        assert check(built, reader, make(s, kind)[0]).result is ResultCode.UNKNOWN_ISSUER, kind


def test_signed_before_a_revocation_by_the_store(
    built: Built, reader: LmdbReader, tmp_path: Path
) -> None:
    """A renewal revoked the certificate (superseded): a CMS signed the day before stays
    attributable; the store's revocation time, reason and category are reported."""
    a = next(
        x for x in built.answers
        if x.family is Family.SIGN_CARD and x.status is CertStatus.REVOKED
        and x.category is Category.REQUEST and x.reason is Reason.SUPERSEDED
        and x.revoked_at is not None
    )  # fmt: skip
    assert a.revoked_at is not None
    s = Signer(built, a, tmp_path)
    key = serialization.load_pem_private_key(s.key.read_bytes(), None)
    signed_at = max(
        a.revoked_at - timedelta(days=1), s.cert.not_valid_before_utc + timedelta(hours=1)
    )
    blob = cms_signed(DOC, s.cert, key, signing_time=signed_at)  # type: ignore[arg-type]
    r = check(built, reader, CmsItem(cms=blob))
    assert r.result is ResultCode.REVOKED_AFTER_SIGNING, r
    assert r.status_at_signing is not None and r.status_at_signing.status == "good"
    assert r.status_now is not None and r.status_now.reason == "superseded"
    assert r.status_now.category == "request" and r.status_now.article == "Act §11"
