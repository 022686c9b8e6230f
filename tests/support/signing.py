"""JPKI-profile issuers, certificates and signatures in three formats, for the validation tests.

`Jpki` is a small set of issuer generations (one per family, RSA, self-signed, the store's
`IssuerMeta` beside each) and `Jpki.issue` end-entity certificates by the product's own
profile (`crlbuilder.demo.certprofile.build_ee_cert`: facts in subjectAltName for sign
certificates). The signatures are made in process by kept libraries: RSASSA-PKCS1-v1_5 by
cryptography, CMS SignedData assembled with asn1crypto (so a test chooses signingTime,
detached or attached, signed attributes or none), XMLDSig by python-xmlsec (xmlsec1) from
a template. The interop tests make the same signatures with the real tools (openssl,
xmlsec1) instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import xmlsec
from asn1crypto import algos, cms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from crlbuilder.demo.certprofile import build_ee_cert
from crlbuilder.manifest import IssuerFiles
from crlbuilder.model import Category, Family, FourFacts, Reason, Sex
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from tests.support.pki import Ca, make_ca, rsa_key

FACTS = FourFacts(
    name="試験 太郎",
    sex=Sex.MALE,
    birth_date="319800102",
    address="東京都千代田区霞が関二丁目1番2号",
    name_alt="試験 太郎",
)
"""Synthetic facts: nobody real."""
SUBJECT_KEY = rsa_key()
"""The one subject key of the tests' certificates (what signs); generated once."""
OTHER_KEY = rsa_key()
"""Another key: a signature with it does not match the certificate."""


@dataclass(repr=False)
class Jpki:
    """One issuer generation per family and the store view that knows them."""

    cas: dict[Family, Ca] = field(default_factory=dict)
    metas: dict[Family, sf.IssuerMeta] = field(default_factory=dict)
    reader: MemoryReader = field(default_factory=MemoryReader)

    @classmethod
    def make(cls) -> Jpki:
        j = cls()
        for n, family in enumerate(Family, start=1):
            ca = make_ca(f"JPKI {family.value} CA G1", organization="jpki-va test")
            j.cas[family] = ca
            j.metas[family] = sf.IssuerMeta(
                index=10 * n + 1, id=f"{family.value}-g1", family=family, generation=1,
                cert_der=ca.cert.public_bytes(serialization.Encoding.DER),
            )  # fmt: skip
        j.reader.issuer_table = list(j.metas.values())
        j.reader.commit = 7
        j.reader.last_committed_at = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
        return j

    def issue(
        self, family: Family, serial: int, *, not_before: datetime | None = None,
        days: float = 365, key: rsa.RSAPrivateKey = SUBJECT_KEY, record: bool = True,
        public: rsa.RSAPublicKey | None = None,
    ) -> x509.Certificate:  # fmt: skip
        """A certificate of ``family``; ``record`` puts its good status record in the store;
        ``public``: its subject key when not ``key``'s (one nobody holds the private half of)."""
        ca = self.cas[family]
        start = not_before or datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
        files = IssuerFiles(
            id=self.metas[family].id, family=family, generation=1,
            index=self.metas[family].index, cert="", key="", ocsp_cert="", ocsp_key="",
            crl_url="http://127.0.0.1/crl", delta_crl_url="http://127.0.0.1/delta",
            ocsp_url="http://127.0.0.1/ocsp",
        )  # fmt: skip
        assert isinstance(ca.key, rsa.RSAPrivateKey)
        cert = build_ee_cert(
            issuer_cert=ca.cert, issuer_key=ca.key, family=family, serial=serial,
            not_before=start, not_after=start + timedelta(days=days),
            public_key=public or key.public_key(), facts=FACTS if family.is_sign else None,
            issuer_files=files,
        )  # fmt: skip
        if record:
            self.put_status(cert, family)
        return cert

    def put_status(
        self, cert: x509.Certificate, family: Family, *, revoked_at: datetime | None = None,
        category: Category | None = None, reason: Reason = Reason.UNSPECIFIED,
        erased: bool = False,
    ) -> None:  # fmt: skip
        state = sf.STATE_ERASED if erased else sf.STATE_REVOKED if revoked_at else sf.STATE_GOOD
        key = sf.status_key(self.metas[family].index, cert.serial_number)
        self.reader.status_records[key] = sf.StatusRecord(
            version=1, state=state, category=category.code if category else 0,
            reason=int(reason) if revoked_at else 0, family=family.code,
            not_before=int(cert.not_valid_before_utc.timestamp()),
            not_after=int(cert.not_valid_after_utc.timestamp()),
            revoked_at=int(revoked_at.timestamp()) if revoked_at else 0,
            holder=bytes(32),
        )  # fmt: skip
        self.reader.changed()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pkcs1(data: bytes, key: rsa.RSAPrivateKey = SUBJECT_KEY) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def cms_signed(
    content: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey = SUBJECT_KEY, *,
    signing_time: datetime | None = None, detached: bool = False, attributes: bool = True,
    signers: int = 1,
) -> bytes:  # fmt: skip
    """A CMS SignedData (RFC 5652) over ``content`` by ``key``, assembled with asn1crypto."""
    acert = ax509.Certificate.load(der(cert))
    digest = hashlib.sha256(content).digest()
    signed_attrs = None
    to_sign = content
    if attributes:
        attrs = [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
        ]
        if signing_time is not None:
            attrs.append(
                cms.CMSAttribute(
                    {"type": "signing_time", "values": [cms.Time({"utc_time": signing_time})]}
                )
            )
        signed_attrs = cms.CMSAttributes(attrs)
        to_sign = signed_attrs.dump()
    signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    info = {
        "version": "v1",
        "sid": cms.SignerIdentifier(
            {"issuer_and_serial_number": cms.IssuerAndSerialNumber(
                {"issuer": acert.issuer, "serial_number": acert.serial_number}
            )}
        ),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
        "signature": signature,
    }  # fmt: skip
    if signed_attrs is not None:
        info["signed_attrs"] = signed_attrs
    signer = cms.SignerInfo(info)
    sd = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": {
                "content_type": "data",
                **({} if detached else {"content": content}),
            },
            "certificates": [acert],
            "signer_infos": [signer] * signers,
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump())


_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<Application xmlns="urn:jpki-va:test" xmlns:x="urn:jpki-va:unused">{head}
  <Name>申請書</Name>
  <Body Id="body">内容</Body>
  <Plain xmlns="">既定の名前空間なし</Plain>
  <Signature xmlns="http://www.w3.org/2000/09/xmldsig#">
    <SignedInfo>
      <CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
      <SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
      {references}
    </SignedInfo>
    <SignatureValue/>
    <KeyInfo><X509Data><X509Certificate/></X509Data></KeyInfo>
  </Signature>
</Application>
"""
_ENVELOPED = """<Reference URI="">
        <Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/></Transforms>
        <DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/>
      </Reference>"""
_DETACHED = """<Reference URI="{uri}">
        <DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/>
      </Reference>"""


def xml_template(
    *, detached_uri: str | None = None, references: str | None = None, head: str = ""
) -> bytes:
    """An application document with a signature template (the default ds namespace, as
    xmlsec1 and .NET write it), enveloped or over a detached document; ``references``:
    the SignedInfo's Reference elements as given; ``head``: markup put first in the root."""
    refs = references or (_DETACHED.format(uri=detached_uri) if detached_uri else _ENVELOPED)
    return _TEMPLATE.format(references=refs, head=head).encode()


def xml_reference(uri: str, *transforms: str) -> str:
    """One Reference element of a template: ``uri``, the transforms' Algorithm URIs, SHA-256."""
    steps = "".join(f'<Transform Algorithm="{t}"/>' for t in transforms)
    return (
        f'<Reference URI="{uri}">'
        + (f"<Transforms>{steps}</Transforms>" if steps else "")
        + '<DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/>'
        + "</Reference>"
    )


def xml_signed(
    cert: x509.Certificate, key: rsa.RSAPrivateKey = SUBJECT_KEY, *,
    detached: tuple[str, bytes] | None = None, references: str | None = None,
    documents: dict[str, bytes] | None = None, head: str = "",
) -> bytes:  # fmt: skip
    """The template signed by xmlsec1 (python-xmlsec), the certificate in KeyInfo.

    ``references`` replaces the template's Reference elements; ``documents`` are what
    xmlsec may read for an external reference (``detached`` is one such document);
    ``head`` is markup put first in the root element."""
    template = xml_template(
        detached_uri=detached[0] if detached else None, references=references, head=head
    )
    root = etree.fromstring(template)
    node = xmlsec.tree.find_node(root, xmlsec.constants.NodeSignature)
    ctx = xmlsec.SignatureContext()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    k = xmlsec.Key.from_memory(pem, xmlsec.constants.KeyDataFormatPem)
    k.load_cert_from_memory(
        cert.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatCertPem
    )
    ctx.key = k
    for element in root.iter():
        if isinstance(element.tag, str) and element.get("Id") is not None:
            ctx.register_id(element, "Id")
    supplied = dict(documents or {})
    if detached:
        supplied[detached[0]] = detached[1]
    # xmlsec reads a detached document through its I/O callbacks: the validation module
    # installs its own (the supplied documents) process-wide, so use them
    from responder.validation import xmldsig

    xmldsig._install_io()
    token = xmldsig._documents.set(supplied)
    try:
        ctx.sign(node)
    finally:
        xmldsig._documents.reset(token)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
