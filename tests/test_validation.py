"""Signature validation (電子署名の検証, Act §19(1), §21(1)): each format, each check, each verdict.

In process, against `MemoryReader`: signatures made by kept libraries (cryptography for
raw PKCS#1, asn1crypto-assembled CMS, xmlsec1 through python-xmlsec for XMLDSig) with
certificates of the product's own JPKI profile (`tests.support.signing`). For each
format: a good signature, a tampered document, a wrong key, an auth certificate, an
expired one, a foreign CA, revoked before and after signing. The real tools (openssl,
xmlsec1) make the same cases in tests/test_validation_interop.py.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from responder.validation.cms import check_cms
from responder.validation.facts import FactsError, decode_facts
from responder.validation.path import anchors
from responder.validation.request import (
    MAX_ITEMS,
    CmsItem,
    Item,
    Pkcs1Item,
    VerifyRequest,
    XmlItem,
)
from responder.validation.result import ItemResult, Outcome, ResultCode
from responder.validation.signature import SignatureOutcome
from responder.validation.verdict import CLOCK_SKEW, verify_item
from responder.validation.xmldsig import check_xmldsig
from tests.support.pki import certificate, make_ca
from tests.support.signing import (
    FACTS,
    OTHER_KEY,
    SUBJECT_KEY,
    Jpki,
    cms_signed,
    der,
    pkcs1,
    xml_reference,
    xml_signed,
    xml_template,
)

DOC = "申請書の本文: 転居届".encode()
NOW = datetime.now(UTC).replace(microsecond=0)
SERIAL = 0x5A17


@pytest.fixture(scope="module")
def jpki() -> Jpki:
    return Jpki.make()


@pytest.fixture
def pki() -> Jpki:
    """A fresh store view per test (status records differ), the module's CAs."""
    return Jpki.make()


def run(j: Jpki, item: Item, now: datetime = NOW) -> ItemResult:
    return verify_item(0, item, anchors(j.reader.issuers()), j.reader, now)


# --- one item per format ------------------------------------------------------------


def raw_item(cert: x509.Certificate, data: bytes = DOC, signed: bytes = DOC) -> Pkcs1Item:
    return Pkcs1Item(certificate=der(cert), signature=pkcs1(signed), data=data)


FORMATS = ("pkcs1", "cms", "cms-detached", "xmldsig", "xmldsig-detached")


def item_of(
    fmt: str, cert: x509.Certificate, *, tamper: bool = False, key: object = SUBJECT_KEY,
    signing_time: datetime | None = None,
) -> Item:  # fmt: skip
    """A good signature of ``fmt`` by ``key`` (a changed document when ``tamper``)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert isinstance(key, rsa.RSAPrivateKey)
    doc = DOC + b"!" if tamper else DOC
    if fmt == "pkcs1":
        return Pkcs1Item(certificate=der(cert), signature=pkcs1(DOC, key), data=doc)
    if fmt == "cms":
        signed = cms_signed(DOC, cert, key, signing_time=signing_time)
        if tamper:  # one octet of the encapsulated content
            signed = signed.replace(DOC, DOC[:-1] + b"?")
        return CmsItem(cms=signed)
    if fmt == "cms-detached":
        return CmsItem(
            cms=cms_signed(DOC, cert, key, signing_time=signing_time, detached=True), content=doc
        )
    if fmt == "xmldsig":
        xml = xml_signed(cert, key)
        return XmlItem(xml=xml.replace("内容".encode(), "改竄".encode()) if tamper else xml)
    assert fmt == "xmldsig-detached"
    return XmlItem(
        xml=xml_signed(cert, key, detached=("honbun.txt", DOC)), documents={"honbun.txt": doc}
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_good_signature_of_a_sign_certificate_is_ok_act_19_1(jpki: Jpki, fmt: str) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    r = run(jpki, item_of(fmt, cert))
    assert r.result is ResultCode.OK, r
    assert r.signature.outcome == "valid"
    assert r.path.outcome is Outcome.PASS and r.profile.outcome is Outcome.PASS
    assert r.status_now is not None and r.status_now.status == "good"
    assert r.certificate is not None and r.certificate.issuer == "sign-card-g1"
    assert r.certificate.serial == f"{SERIAL:x}"
    assert r.facts is not None and r.facts.facts is not None
    assert r.facts.facts.name == FACTS.name


@pytest.mark.parametrize("fmt", FORMATS)
def test_tampered_document_is_signature_mismatch(jpki: Jpki, fmt: str) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    r = run(jpki, item_of(fmt, cert, tamper=True))
    assert r.result is ResultCode.SIGNATURE_MISMATCH, r
    assert r.signature.outcome == "mismatch"


@pytest.mark.parametrize("fmt", FORMATS)
def test_signature_by_another_key_is_signature_mismatch(jpki: Jpki, fmt: str) -> None:
    cert = jpki.issue(Family.SIGN_MOBILE, SERIAL)
    r = run(jpki, item_of(fmt, cert, key=OTHER_KEY))
    assert r.result is ResultCode.SIGNATURE_MISMATCH, r


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", [Family.AUTH_CARD, Family.AUTH_MOBILE])
def test_auth_certificate_is_not_a_sign_certificate_act_2(
    jpki: Jpki, fmt: str, family: Family
) -> None:
    """An auth certificate proves a login (電子利用者証明, Act §2(2)), not a signature; its
    status is never looked up (a 署名検証者 receives sign information only, Act §18(1))."""
    cert = jpki.issue(family, SERIAL)
    r = run(jpki, item_of(fmt, cert))
    assert r.result is ResultCode.NOT_A_SIGN_CERTIFICATE, r
    assert r.profile.outcome is Outcome.FAIL and r.profile.article and "§2" in r.profile.article
    assert r.status_now is None and r.status_at_signing is None and r.facts is None


@pytest.mark.parametrize("fmt", ("pkcs1", "cms", "xmldsig"))
def test_an_off_profile_sign_certificate_reads_no_status(pki: Jpki, fmt: str) -> None:
    """A sign-family certificate off the profile (here the sign-card CA's own certificate,
    which its key signed: the path holds) is ``not-a-sign-certificate``; its status was
    read all the same (the CA's serial: ``unknown-certificate``) and counted a provision of
    something the appliance cannot vouch for. Read nothing now, as for an auth one; its
    signature is not checked either."""
    ca = pki.cas[Family.SIGN_CARD]
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    item = (
        Pkcs1Item(certificate=der(ca.cert), signature=pkcs1(DOC, ca.key), data=DOC)
        if fmt == "pkcs1"
        else item_of(fmt, ca.cert, key=ca.key)
    )
    r = run(pki, item)
    assert r.result is ResultCode.NOT_A_SIGN_CERTIFICATE and "CA certificate" in r.detail, r
    assert r.status_now is None and r.status_at_signing is None and r.facts is None
    assert r.signature.outcome == "not-checked"


@pytest.mark.parametrize("fmt", FORMATS)
def test_expired_certificate_is_expired(jpki: Jpki, fmt: str) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL, not_before=NOW - timedelta(days=400), days=30)
    r = run(jpki, item_of(fmt, cert))
    assert r.result is ResultCode.EXPIRED, r
    assert r.validity is not None and r.validity.instant_source == "call"


@pytest.mark.parametrize("fmt", FORMATS)
def test_certificate_of_a_foreign_ca_is_unknown_issuer(jpki: Jpki, fmt: str) -> None:
    foreign = Jpki.make()  # same names, other keys: not the configured generation
    cert = foreign.issue(Family.SIGN_CARD, SERIAL)
    r = run(jpki, item_of(fmt, cert))
    assert r.result is ResultCode.UNKNOWN_ISSUER, r
    assert "did not sign" in r.path.detail
    assert r.status_now is None


def test_certificate_naming_no_jpki_issuer_is_unknown_issuer(jpki: Jpki) -> None:
    ca = make_ca("Some Other CA")
    cert = ca.issue("someone", SUBJECT_KEY)
    r = run(jpki, raw_item(cert))
    assert r.result is ResultCode.UNKNOWN_ISSUER and "not issued by" in r.path.detail


# --- status at the signing instant and now --------------------------------------------

SIGNED_FORMATS = ("cms", "cms-detached")  # the formats that carry a signingTime


@pytest.mark.parametrize("fmt", SIGNED_FORMATS)
def test_signed_before_a_revocation_stays_attributable(pki: Jpki, fmt: str) -> None:
    """A move (異動, Act §12) revoked the certificate after the signature: both statuses are
    reported, the signature stays attributable (revoked-after-signing)."""
    cert = pki.issue(Family.SIGN_CARD, SERIAL)
    revoked_at = NOW - timedelta(days=2)
    pki.put_status(cert, Family.SIGN_CARD, revoked_at=revoked_at,
                   category=Category.RESIDENT_CHANGE, reason=Reason.AFFILIATION_CHANGED)  # fmt: skip
    r = run(pki, item_of(fmt, cert, signing_time=revoked_at - timedelta(days=1)))
    assert r.result is ResultCode.REVOKED_AFTER_SIGNING, r
    assert r.validity is not None and r.validity.instant_source == "signing-time"
    assert r.status_at_signing is not None and r.status_at_signing.status == "good"
    now = r.status_now
    assert now is not None and now.status == "revoked"
    assert now.revoked_at == revoked_at
    assert (now.category, now.reason, now.article) == (
        "resident-change",
        "affiliationChanged",
        "Act §12",
    )


@pytest.mark.parametrize("fmt", SIGNED_FORMATS)
def test_signed_after_the_revocation_is_revoked(pki: Jpki, fmt: str) -> None:
    cert = pki.issue(Family.SIGN_MOBILE, SERIAL)
    revoked_at = NOW - timedelta(days=2)
    pki.put_status(cert, Family.SIGN_MOBILE, revoked_at=revoked_at,
                   category=Category.CARD_CASCADE, reason=Reason.CESSATION_OF_OPERATION)  # fmt: skip
    r = run(pki, item_of(fmt, cert, signing_time=revoked_at + timedelta(hours=1)))
    assert r.result is ResultCode.REVOKED, r
    then = r.status_at_signing
    assert then is not None and then.status == "revoked" and then.article == "Act §16-13"


@pytest.mark.parametrize("reason", [Reason.KEY_COMPROMISE, Reason.CA_COMPROMISE])
def test_a_compromise_after_the_claimed_signing_time_is_still_revoked(
    pki: Jpki, reason: Reason
) -> None:
    """A leaked key may have signed before the leak was reported: a signingTime the signer
    claims cannot place the signature before the revocation."""
    cert = pki.issue(Family.SIGN_CARD, SERIAL)
    revoked_at = NOW - timedelta(days=2)
    category = Category.CA_COMPROMISE if reason is Reason.CA_COMPROMISE else Category.REQUEST
    pki.put_status(cert, Family.SIGN_CARD, revoked_at=revoked_at, category=category, reason=reason)
    r = run(pki, item_of("cms", cert, signing_time=revoked_at - timedelta(days=1)))
    assert r.result is ResultCode.REVOKED, r
    assert r.status_at_signing is not None and r.status_at_signing.status == "good"


@pytest.mark.parametrize("fmt", ["pkcs1", "xmldsig"])
def test_without_a_signing_time_the_call_is_the_instant_and_a_revocation_counts(
    pki: Jpki, fmt: str
) -> None:
    cert = pki.issue(Family.SIGN_CARD, SERIAL)
    pki.put_status(cert, Family.SIGN_CARD, revoked_at=NOW - timedelta(days=1),
                   category=Category.REQUEST, reason=Reason.CESSATION_OF_OPERATION)  # fmt: skip
    r = run(pki, item_of(fmt, cert))
    assert r.result is ResultCode.REVOKED, r
    assert r.validity is not None and r.validity.instant_source == "call"
    assert r.status_at_signing is not None and r.status_at_signing.article == "Act §11"


def test_erased_revocation_without_a_time_is_revoked(pki: Jpki) -> None:
    cert = pki.issue(Family.SIGN_CARD, SERIAL)
    pki.put_status(cert, Family.SIGN_CARD, erased=True)
    r = run(pki, item_of("cms", cert, signing_time=NOW - timedelta(days=3)))
    assert r.result is ResultCode.REVOKED, r
    assert r.status_now is not None and "Ord §70(1)(iii)" in r.status_now.detail


def test_erased_revocation_with_its_time_kept_is_revoked_whatever_the_claimed_time(
    pki: Jpki,
) -> None:
    """An erased record keeps its time (``crl.erased_answer = "revoked"``) but no reason nor
    category (Ord §70(1)(iii)): nothing says the loss of effect was no key compromise, so a
    signingTime the signer claims before it cannot make the signature attributable
    (``revoked-after-signing`` is for a reason known to be no compromise)."""
    cert = pki.issue(Family.SIGN_CARD, SERIAL)
    revoked_at = NOW - timedelta(days=2)
    pki.put_status(cert, Family.SIGN_CARD, erased=True, revoked_at=revoked_at)
    r = run(pki, item_of("cms", cert, signing_time=revoked_at - timedelta(days=1)))
    assert r.status_now is not None and r.status_now.revoked_at == revoked_at
    assert r.status_now.reason is None and "Ord §70(1)(iii)" in r.status_now.detail
    assert r.status_at_signing is not None and r.status_at_signing.status == "good"
    assert r.result is ResultCode.REVOKED, r


def test_serial_the_store_never_issued_is_unknown_certificate(pki: Jpki) -> None:
    cert = pki.issue(Family.SIGN_CARD, SERIAL, record=False)
    r = run(pki, raw_item(cert))
    assert r.result is ResultCode.UNKNOWN_CERTIFICATE, r


def crl_imported(pki: Jpki) -> None:
    """Make ``pki``'s store a group appliance's, with a CRL of the sign-card issuer imported an
    hour ago (an issuer with none is unavailable there, `test_validation_group`)."""
    pki.reader.imported = True
    pki.reader.crl_states[pki.metas[Family.SIGN_CARD].index] = sf.CrlState(
        number=1, base_number=1, this_update=int((NOW - timedelta(hours=1)).timestamp()),
        next_update=int((NOW + timedelta(days=1)).timestamp()),
    )  # fmt: skip


def test_group_appliance_store_absent_serial_is_good(pki: Jpki) -> None:
    """A group appliance's store is the 機構's CRLs: a serial not on them has not lost effect."""
    crl_imported(pki)
    cert = pki.issue(Family.SIGN_CARD, SERIAL, record=False)
    assert run(pki, raw_item(cert)).result is ResultCode.OK


def test_stale_issuer_data_is_status_unavailable(pki: Jpki) -> None:
    cert = pki.issue(Family.SIGN_CARD, SERIAL)
    index = pki.metas[Family.SIGN_CARD].index
    pki.reader.crl_states[index] = sf.CrlState(
        next_update=int((NOW - timedelta(minutes=1)).timestamp())
    )
    r = run(pki, raw_item(cert))
    assert r.result is ResultCode.STATUS_UNAVAILABLE, r


# --- validity at the signing instant -----------------------------------------------


def test_signing_time_in_the_future_is_malformed(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    r = run(jpki, item_of("cms", cert, signing_time=NOW + timedelta(hours=1)))
    assert r.result is ResultCode.MALFORMED and "later than" in r.detail
    late = run(jpki, item_of("cms", cert, signing_time=NOW + CLOCK_SKEW + timedelta(seconds=1)))
    assert late.result is ResultCode.MALFORMED


def test_a_signing_time_ahead_within_the_skew_is_judged_at_the_call(pki: Jpki) -> None:
    """A signer's clock a little ahead (within `CLOCK_SKEW`) is accepted, but the claim is
    judged at the time of the call, never later: a certificate that begins within the skew
    was judged valid at a signingTime that had not come yet (``ok``), though no signature
    made before the call could have been made while it was valid."""
    ahead = NOW + CLOCK_SKEW - timedelta(seconds=30)
    cert = pki.issue(Family.SIGN_CARD, SERIAL, not_before=NOW + timedelta(minutes=2))
    r = run(pki, item_of("cms", cert, signing_time=ahead))
    assert r.result is ResultCode.NOT_YET_VALID, r
    assert r.validity is not None and r.validity.signing_instant == NOW
    assert r.validity.instant_source == "signing-time" and "ahead" in r.validity.detail
    # a certificate valid at the call: accepted, judged at the call
    good = pki.issue(Family.SIGN_CARD, SERIAL + 1)
    ok = run(pki, item_of("cms", good, signing_time=ahead))
    assert ok.result is ResultCode.OK, ok
    assert ok.status_at_signing is not None and ok.status_at_signing.at == NOW


@pytest.mark.parametrize("reason", [Reason.AFFILIATION_CHANGED, Reason.KEY_COMPROMISE])
def test_revoked_in_the_second_of_the_signing_time_is_revoked_not_after_signing(
    pki: Jpki, reason: Reason
) -> None:
    """A revocation recorded in the very second the signer claims to have signed: the
    record keeps seconds, so nothing says the signature came first; it is ``revoked``,
    never ``revoked-after-signing`` (the same second counts as after, as OCSP's revocation
    time does). The second before it is still before."""
    cert = pki.issue(Family.SIGN_CARD, SERIAL, not_before=NOW - timedelta(days=30))
    at = NOW - timedelta(days=1)
    pki.put_status(cert, Family.SIGN_CARD, revoked_at=at, reason=reason,
                   category=Category.RESIDENT_CHANGE)  # fmt: skip
    r = run(pki, item_of("cms", cert, signing_time=at))
    assert r.result is ResultCode.REVOKED, r
    assert r.status_at_signing is not None and r.status_at_signing.status.value == "revoked"
    before = run(pki, item_of("cms", cert, signing_time=at - timedelta(seconds=1)))
    expected = (
        ResultCode.REVOKED if reason is Reason.KEY_COMPROMISE else ResultCode.REVOKED_AFTER_SIGNING
    )
    assert before.result is expected, before


def test_signed_before_the_certificate_was_valid_is_not_yet_valid(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL, not_before=NOW - timedelta(days=1))
    r = run(jpki, item_of("cms", cert, signing_time=NOW - timedelta(days=3)))
    assert r.result is ResultCode.NOT_YET_VALID, r


@pytest.mark.parametrize(
    ("family", "article"),
    [(Family.SIGN_CARD, "Act §15(1)(5)"), (Family.SIGN_MOBILE, "Act §16-14(1)(5)")],
)
def test_signed_while_valid_then_expired_is_expired_after_signing_not_ok(
    jpki: Jpki, family: Family, article: str
) -> None:
    """The end of the validity period is a loss of effect like a revocation record (Act
    §15(1)(5), §16-14(1)(5)), and one nobody can record: an expired certificate is never
    revoked. A signature made today with the key of an expired certificate (a card thrown
    away, a phone sold) and a signingTime backdated into its validity period was ``ok``,
    today and for ever. What the signer claims is answered as a revocation since signing
    is (``revoked-after-signing``): ``expired-after-signing``, the verifier decides whether
    the claim suffices; ``statusNow`` no longer says it has not lost effect."""
    cert = jpki.issue(family, SERIAL, not_before=NOW - timedelta(days=60), days=30)
    r = run(jpki, item_of("cms", cert, signing_time=NOW - timedelta(days=45)))
    assert r.result is ResultCode.EXPIRED_AFTER_SIGNING, r
    assert article in r.detail
    assert r.validity is not None and r.validity.outcome is Outcome.PASS
    assert "expired since" in r.validity.detail
    assert r.status_now is not None and r.status_now.status == "good"
    assert "not lost effect" not in r.status_now.detail and article in r.status_now.detail
    assert r.status_at_signing is not None and "not lost effect" in r.status_at_signing.detail


def test_within_the_not_after_second_the_certificate_has_not_expired_since(jpki: Jpki) -> None:
    """notAfter is inclusive (`crlbuilder.validity`): a call made within its very second finds
    the certificate still in its validity period, ``ok`` (the result compared the instant with
    notAfter itself and answered ``expired-after-signing`` while ``validity`` said it had not
    expired); one second past it, ``expired-after-signing``."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL, not_before=NOW - timedelta(days=60), days=30)
    end = cert.not_valid_after_utc
    item = item_of("cms", cert, signing_time=NOW - timedelta(days=45))
    r = run(jpki, item, now=end + timedelta(milliseconds=500))
    assert r.result is ResultCode.OK, r
    assert r.validity is not None and "expired since" not in r.validity.detail
    later = run(jpki, item, now=end + timedelta(seconds=1))
    assert later.result is ResultCode.EXPIRED_AFTER_SIGNING, later


def test_ca_not_valid_at_the_signing_instant(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    ca_start = jpki.cas[Family.SIGN_CARD].cert.not_valid_before_utc
    later = ca_start.replace(year=ca_start.year + 11)  # make_ca: 3650 days
    r = run(jpki, raw_item(cert), now=later)
    assert r.result is ResultCode.EXPIRED and "CA" in r.detail


# --- the four facts -----------------------------------------------------------------


def test_four_facts_are_decoded_with_the_era(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    facts = decode_facts(cert)
    assert facts is not None
    assert (facts.name, facts.sex, facts.address) == (FACTS.name, "male", FACTS.address)
    assert facts.name_substitute == FACTS.name_alt and facts.address_substitute is None
    assert facts.birth_date.date == date(1980, 1, 2) and facts.birth_date.era == "昭和"
    assert facts.birth_date.encoded == "319800102"
    wire = msgspec.json.decode(msgspec.json.encode(facts))
    assert wire["birthDate"]["era"] == "昭和" and wire["nameSubstitute"] == FACTS.name_alt


def test_auth_certificate_has_no_facts(jpki: Jpki) -> None:
    assert decode_facts(jpki.issue(Family.AUTH_CARD, SERIAL)) is None


def _san_cert(*values: tuple[str, bytes]) -> x509.Certificate:
    names = [x509.OtherName(x509.ObjectIdentifier(oid), v) for oid, v in values]
    return certificate("x", SUBJECT_KEY, extensions=[(x509.SubjectAlternativeName(names), False)])


def _utf8(s: str) -> bytes:
    raw = s.encode()
    return b"\x0c" + bytes((len(raw),)) + raw


ARC = "1.2.392.200149.8.5.5."


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([(ARC + "1", _utf8("名前"))], "lacks sex, birth_date, address"),
        ([(ARC + "1", b"\x04\x01x"), (ARC + "3", _utf8("1"))], "name is not a DER UTF8String"),
        (
            [
                (ARC + "1", _utf8("a")),
                (ARC + "3", _utf8("9")),
                (ARC + "4", _utf8("319800102")),
                (ARC + "5", _utf8("b")),
            ],
            "sex is not",
        ),
        (
            [
                (ARC + "1", _utf8("a")),
                (ARC + "3", _utf8("1")),
                (ARC + "4", _utf8("419800102")),
                (ARC + "5", _utf8("b")),
            ],
            "era digit",
        ),
        ([(ARC + "1", _utf8("a")), (ARC + "1", _utf8("b"))], "appears twice"),
    ],
)
def test_facts_off_profile_are_refused_naming_the_field(
    values: list[tuple[str, bytes]], message: str
) -> None:
    with pytest.raises(FactsError, match=message) as e:
        decode_facts(_san_cert(*values))
    assert "名前" not in str(e.value)


# --- bad input: per item, never an exception ------------------------------------------


def test_pkcs1_with_a_digest_and_its_hash(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    digest = hashlib.sha384(DOC).digest()
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    sig = SUBJECT_KEY.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA384()))
    item = Pkcs1Item(certificate=der(cert), signature=sig, digest=digest, hash="sha384")
    assert run(jpki, item).result is ResultCode.OK


@pytest.mark.parametrize(
    ("change", "code", "phrase"),
    [
        (
            {"digest": hashlib.sha256(DOC).digest()[:20], "hash": "sha256", "data": None},
            ResultCode.MALFORMED,
            "not 32 octets",
        ),
        (
            {"digest": hashlib.sha1(DOC).digest(), "hash": "sha1", "data": None},
            ResultCode.UNSUPPORTED,
            "sha1",
        ),
        ({"digest": hashlib.sha256(DOC).digest()}, ResultCode.MALFORMED, "exactly one"),
        (
            {"digest": hashlib.sha256(DOC).digest(), "data": None},
            ResultCode.MALFORMED,
            "hash algorithm",
        ),
        ({"hash": "md4"}, ResultCode.UNSUPPORTED, "unknown hash"),
        ({"signature": b"\x01" * 10}, ResultCode.MALFORMED, "modulus"),
        ({"certificate": b"\x30\x03\x02\x01\x01"}, ResultCode.MALFORMED, "not a DER X.509"),
    ],
)
def test_pkcs1_bad_input_is_a_per_item_result(
    jpki: Jpki, change: dict[str, object], code: ResultCode, phrase: str
) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    item = msgspec.structs.replace(raw_item(cert), **change)
    r = run(jpki, item)
    assert r.result is code and phrase in r.detail, r


def test_cms_bad_input_is_a_per_item_result(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    good = cms_signed(DOC, cert)
    cases = {
        "garbage": (CmsItem(cms=b"\x30\x80garbage"), SignatureOutcome.MALFORMED),
        "truncated": (CmsItem(cms=good[: len(good) // 2]), SignatureOutcome.MALFORMED),
        "two signers": (
            CmsItem(cms=cms_signed(DOC, cert, signers=2)),
            SignatureOutcome.UNSUPPORTED,
        ),
        "no signer": (CmsItem(cms=cms_signed(DOC, cert, signers=0)), SignatureOutcome.MALFORMED),
        "content twice": (CmsItem(cms=good, content=DOC), SignatureOutcome.MALFORMED),
        "detached without content": (
            CmsItem(cms=cms_signed(DOC, cert, detached=True)),
            SignatureOutcome.MALFORMED,
        ),
    }
    for name, (item, outcome) in cases.items():
        assert check_cms(item).outcome is outcome, name
        assert run(jpki, item).result.value == outcome.value, name


def costly(bits: int, exponent: int = (1 << 32) - 1) -> rsa.RSAPublicKey:
    """An RSA public key nobody holds the private half of, of that size and exponent."""
    import os

    n = int.from_bytes(os.urandom(bits // 8), "big") | (1 << (bits - 1)) | 1
    return rsa.RSAPublicNumbers(exponent, n).public_key()


def costly_item(fmt: str, cert: x509.Certificate) -> Item:
    """``fmt``'s signature by another key over DOC; raw: garbage of the modulus's length
    (within the request's bound), what costs the verification a full RSA operation."""
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    if fmt == "pkcs1":
        size = min((key.key_size + 7) // 8, 1024)
        return Pkcs1Item(certificate=der(cert), signature=b"\x01" * size, data=DOC)
    return item_of(fmt, cert, key=OTHER_KEY)


def self_signed(public: rsa.RSAPublicKey, name: str = "costly") -> x509.Certificate:
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(public).serial_number(SERIAL)
        .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
        .sign(OTHER_KEY, hashes.SHA256())
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ("pkcs1", "cms", "xmldsig"))
@pytest.mark.parametrize(
    "maker", ("self-signed", "jpki-name"), ids=("foreign", "naming-a-jpki-issuer")
)
def test_a_key_in_a_certificate_no_jpki_issuer_issued_costs_no_rsa_operation(
    jpki: Jpki, fmt: str, maker: str
) -> None:
    """The key of a certificate an attacker makes (any size, any exponent) was used before
    its path was known: an 8192-bit key with a 32-bit exponent cost 0.9 ms an item (a
    JPKI key 0.03), a thousand items a call (`bench/bench_verify_worst.py`). The path is
    checked first: a certificate no configured issuer generation issued is
    ``unknown-issuer`` and its signature ``not-checked``, whatever its key; no RSA work is
    done with that key."""
    public = costly(8192)
    if maker == "self-signed":
        cert = self_signed(public)
    else:  # a CA copying a JPKI issuer's name, with a key of its own
        start = NOW - timedelta(days=30)
        cert = Jpki.make().issue(Family.SIGN_CARD, SERIAL, not_before=start, public=public)
    r = run(jpki, costly_item(fmt, cert))
    assert r.result is ResultCode.UNKNOWN_ISSUER, r
    assert r.signature.outcome == "not-checked" and "no RSA operation" in r.signature.detail, r
    assert r.status_now is None


@pytest.mark.parametrize("fmt", ("pkcs1", "cms", "xmldsig"))
@pytest.mark.parametrize(
    ("bits", "exponent", "phrase"),
    ((2048, (1 << 40) + 1, "exponent"), (4104, 65537, "4096 bits")),
    ids=("long-exponent", "long-modulus"),
)
def test_a_jpki_certificate_with_a_key_past_the_bound_is_unsupported(
    pki: Jpki, fmt: str, bits: int, exponent: int, phrase: str
) -> None:
    """What is left after the path: a key the 機構 certified. Its keys are 2048-bit; the
    check verifies up to `MAX_RSA_BITS` (4096) with an exponent of up to 32 bits (a
    verification's cost grows as the square of the one and as the other): a longer key is
    ``unsupported`` before any RSA operation, its status read and answered as any
    unsupported signature's."""
    cert = pki.issue(Family.SIGN_CARD, SERIAL, public=costly(bits, exponent))
    r = run(pki, costly_item(fmt, cert))
    assert r.result is ResultCode.UNSUPPORTED and phrase in r.detail, r
    assert r.status_now is not None and r.status_now.status.value == "good"


@pytest.mark.parametrize("fmt", ("pkcs1", "cms", "xmldsig"))
def test_a_jpki_key_of_4096_bits_with_a_32_bit_exponent_is_still_verified(
    pki: Jpki, fmt: str
) -> None:
    cert = pki.issue(Family.SIGN_CARD, SERIAL, public=costly(4096))
    r = run(pki, costly_item(fmt, cert))
    assert r.result is ResultCode.SIGNATURE_MISMATCH and r.signature.outcome == "mismatch", r


@pytest.mark.parametrize("fmt", ("pkcs1", "cms", "xmldsig"))
def test_a_sign_certificate_with_a_key_under_2048_bits_is_off_profile_ord_2(
    pki: Jpki, fmt: str
) -> None:
    """An electronic signature rests on factoring an integer of 2048 bits or more (Ord §2):
    a sign certificate with a shorter key is off the profile, its signature not checked
    and its status neither read nor counted."""
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = pki.issue(Family.SIGN_CARD, SERIAL, key=short)
    item = (
        Pkcs1Item(certificate=der(cert), signature=pkcs1(DOC, short), data=DOC)
        if fmt == "pkcs1"
        else item_of(fmt, cert, key=short)
    )
    r = run(pki, item)
    assert r.result is ResultCode.NOT_A_SIGN_CERTIFICATE and "Ord §2" in r.detail, r
    assert r.signature.outcome == "not-checked"
    assert r.status_now is None and r.status_at_signing is None and r.facts is None


def test_certificates_carried_with_a_signature_are_bounded(jpki: Jpki) -> None:
    """Each certificate a CMS or an XML signature carries is parsed (240 us for a JPKI
    one) until the signer's is found: a call of 18 MB of certificates held a worker 4 s.
    A signer's chain is a few; more than `MAX_CERTIFICATES` is unsupported."""
    from asn1crypto import cms
    from asn1crypto import x509 as ax509

    from responder.validation.signature import MAX_CERTIFICATES

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    other = ax509.Certificate.load(der(jpki.issue(Family.SIGN_CARD, SERIAL + 1)))

    def carrying(n: int) -> bytes:
        info = cms.ContentInfo.load(cms_signed(DOC, cert))
        info["content"]["certificates"] = [other] * (n - 1) + [info["content"]["certificates"][0]]
        return bytes(info.dump(force=True))

    assert check_cms(CmsItem(cms=carrying(MAX_CERTIFICATES))).outcome is SignatureOutcome.VALID
    s = check_cms(CmsItem(cms=carrying(MAX_CERTIFICATES + 1)))
    assert s.outcome is SignatureOutcome.UNSUPPORTED and "certificates" in s.detail, s
    xml = xml_signed(cert)
    extra = f"<X509Certificate>{base64.b64encode(other.dump()).decode()}</X509Certificate>"
    many = xml.replace(b"<X509Data>", b"<X509Data>" + extra.encode() * MAX_CERTIFICATES)
    x = check_xmldsig(XmlItem(xml=many))
    assert x.outcome is SignatureOutcome.UNSUPPORTED and "certificates" in x.detail, x


def test_cms_in_ber_with_indefinite_lengths_is_read(jpki: Jpki) -> None:
    """RFC 5652 allows BER outside the signed attributes: the DER walk hands such input to
    `der_of_ber` to re-encode, and the signature still verifies (a change still does not)."""
    from crlbuilder.der import der_header

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    good = cms_signed(DOC, cert)
    _, start, end = der_header(good, 0, len(good))
    ber = b"\x30\x80" + good[start:end] + b"\x00\x00"  # the ContentInfo, indefinite length
    s = check_cms(CmsItem(cms=ber))
    assert s.outcome is SignatureOutcome.VALID and s.attached, s
    changed = ber.replace(DOC, DOC[:-1] + b"?")
    assert check_cms(CmsItem(cms=changed)).outcome is SignatureOutcome.MISMATCH


def streamed(content: bytes, cert: x509.Certificate, segment: int) -> bytes:
    """A CMS SignedData over ``content`` as a streaming encoder writes it: every wrapper of
    indefinite length, the eContent a constructed OCTET STRING of ``segment``-octet parts."""
    from asn1crypto import cms

    from crlbuilder.der import der_length

    sd = cms.ContentInfo.load(cms_signed(content, cert))["content"]
    eoc = b"\x00\x00"
    parts = b"".join(
        b"\x04" + der_length(len(content[i : i + segment])) + content[i : i + segment]
        for i in range(0, len(content), segment)
    )
    encap = b"\x30\x80" + cms.ContentType("data").dump() + b"\xa0\x80\x24\x80" + parts + eoc * 3
    body = (
        sd["version"].dump() + sd["digest_algorithms"].dump() + encap
        + sd["certificates"].dump(force=True) + sd["signer_infos"].dump()
    )  # fmt: skip
    return (
        b"\x30\x80" + cms.ContentType("signed_data").dump() + b"\xa0\x80\x30\x80" + body + eoc * 3
    )


def test_cms_in_ber_is_re_encoded_in_linear_time_and_bounded_per_call(jpki: Jpki) -> None:
    """asn1crypto re-encoded BER in time growing faster than the input: one 8 MiB document
    in 1,000-octet segments took 12 s of a core, 300 KB in one-octet segments 3.5 s, 8 MiB
    of them 490 s, on the event loop for a call of up to 4 CMS items. `der_of_ber` is
    linear (2 MiB in 1,000-octet segments: milliseconds, a time not asserted here) and
    a call's BER inputs hold at most `BER_TLVS_PER_CALL` TLVs together: past that an item
    is ``unsupported``."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    big = DOC * (2 * 1024 * 1024 // len(DOC))
    blob = streamed(big, cert, 1000)
    s = check_cms(CmsItem(cms=blob))
    assert s.outcome is SignatureOutcome.VALID and s.attached, s
    tiny = streamed(DOC * 4000, cert, 1)  # about 100,000 one-octet segments
    spent = check_cms(CmsItem(cms=tiny))
    assert spent.outcome is SignatureOutcome.UNSUPPORTED and "BER" in spent.detail, spent
    # the budget is the call's: what one item used is gone for the next
    from responder.validation.cms import BER_TLVS_PER_CALL, BerBudget

    call = BerBudget()
    assert check_cms(CmsItem(cms=blob), call).outcome is SignatureOutcome.VALID
    assert 0 < call.left < BER_TLVS_PER_CALL
    call.left = 10
    assert check_cms(CmsItem(cms=blob), call).outcome is SignatureOutcome.UNSUPPORTED


def test_xml_attributes_per_element_are_bounded_and_charged(jpki: Jpki) -> None:
    """libxml2's canonicalisation sorts an element's attributes at a cost growing as the
    square of their number, and nothing bounded or charged them: one element of 50,000
    attributes (530 KB, within every other bound) took 11 s of a core, verified by any
    genuine JPKI certificate's key. More than `MAX_ATTRIBUTES` on one element is
    ``unsupported``; those within are charged to the call's work."""
    from lxml import etree

    from responder.validation.xmldsig import work

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    bound = 256  # responder.validation.xmldsig.MAX_ATTRIBUTES

    def many(n: int, elements: int = 1) -> bytes:
        attrs = " ".join(f'a{i}="v"' for i in range(n))
        return xml_signed(cert, head=f"<Many {attrs}/>" * elements)

    at = check_xmldsig(XmlItem(xml=many(bound)))
    assert at.outcome is SignatureOutcome.VALID, at
    past = check_xmldsig(XmlItem(xml=many(5000)))
    assert past.outcome is SignatureOutcome.UNSUPPORTED and "attributes" in past.detail, past
    plain = work(etree.fromstring(many(0, 100)))
    assert work(etree.fromstring(many(bound, 100))) > plain + 100 * 3 * bound**2


def test_certificate_octets_are_the_certificates_own_tbs_and_issuer(jpki: Jpki) -> None:
    """The path matches the issuer Name's octets read from the certificate and verifies the
    CA's signature over its tbsCertificate as received (with the generation's key loaded
    once), not cryptography's re-encodings: the same octets; a foreign certificate names
    no generation; a certificate naming a generation that did not sign it is refused."""
    from responder.validation.path import PathOutcome, check_path
    from responder.validation.signature import certificate_octets

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    foreign = make_ca("Foreign CA", organization="elsewhere").cert
    for c in (cert, foreign):
        got = certificate_octets(der(c))
        assert got is not None
        assert got.issuer == c.issuer.public_bytes() and got.tbs == c.tbs_certificate_bytes
    assert certificate_octets(b"\x30\x80\x00\x00") is None  # not strict DER: cryptography's
    known = anchors(jpki.reader.issuers())
    for octets in (certificate_octets(der(cert)), None):
        path = check_path(cert, known, NOW, octets)
        assert path.outcome is PathOutcome.OK and path.issuer_name == cert.issuer.rfc4514_string()
    assert check_path(foreign, known, NOW, certificate_octets(der(foreign))).anchor is None
    other = Jpki.make().issue(Family.SIGN_CARD, SERIAL)  # same names, another CA key
    assert check_path(other, known, NOW, certificate_octets(der(other))).outcome is (
        PathOutcome.UNKNOWN_ISSUER
    )


def test_cms_without_signed_attributes_signs_the_content(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    s = check_cms(CmsItem(cms=cms_signed(DOC, cert, attributes=False)))
    assert s.outcome is SignatureOutcome.VALID and not s.signed_attributes
    bad = check_cms(
        CmsItem(cms=cms_signed(DOC, cert, attributes=False, detached=True), content=DOC + b"x")
    )
    assert bad.outcome is SignatureOutcome.MISMATCH


def test_cms_without_signed_attributes_must_carry_id_data(jpki: Jpki) -> None:
    """RFC 5652 §5.3: signedAttrs MUST be present when the eContentType is not id-data.
    Without them the signature covers the content octets only, so the type a verifier
    reads (and may parse the content by) was not signed: it could be set to anything
    and the answer still said ``ok``."""
    from asn1crypto import cms

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    info = cms.ContentInfo.load(cms_signed(DOC, cert, attributes=False))
    info["content"]["encap_content_info"]["content_type"] = "1.2.840.113549.1.9.16.1.4"  # TSTInfo
    retyped = bytes(info.dump(force=True))
    s = check_cms(CmsItem(cms=retyped))
    assert s.outcome is SignatureOutcome.MALFORMED and "id-data" in s.detail, s
    assert check_cms(CmsItem(cms=cms_signed(DOC, cert, attributes=False))).outcome is (
        SignatureOutcome.VALID
    )


def test_cms_with_empty_signed_attributes_is_malformed(jpki: Jpki) -> None:
    """SignedAttributes ::= SET SIZE (1..MAX) (RFC 5652 §5.3): present and empty is not a
    SignedData; it was read as "no signed attributes" and verified over the content."""
    from asn1crypto import cms

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    info = cms.ContentInfo.load(cms_signed(DOC, cert, attributes=False))
    info["content"]["signer_infos"][0]["signed_attrs"] = cms.CMSAttributes([])
    blob = bytes(info.dump(force=True))
    assert b"\xa0\x00" in blob
    s = check_cms(CmsItem(cms=blob))
    assert s.outcome is SignatureOutcome.MALFORMED and "signedAttrs" in s.detail, s


def test_xml_reference_to_an_unsupplied_uri_is_never_fetched(
    jpki: Jpki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The document exists beside the process (xmlsec1 would read it by default): it is not
    read; only what the request supplies is."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    xml = xml_signed(cert, detached=("honbun.txt", DOC))
    (tmp_path / "honbun.txt").write_bytes(DOC)
    monkeypatch.chdir(tmp_path)
    r = run(jpki, XmlItem(xml=xml))
    assert r.result is ResultCode.UNSUPPORTED and "never fetched" in r.detail
    # a supplied document under another name does not open the file either
    r = run(jpki, XmlItem(xml=xml, documents={"other.txt": DOC}))
    assert r.result is ResultCode.UNSUPPORTED


def test_xml_reference_to_http_is_refused(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    xml = xml_signed(cert, detached=("http://127.0.0.1:9/doc", DOC))
    assert run(jpki, XmlItem(xml=xml)).result is ResultCode.UNSUPPORTED


def test_xml_bad_input_is_a_per_item_result(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    good = xml_signed(cert)
    sig_start = good.index(b"<Signature")
    sig_end = good.index(b"</Signature>") + len(b"</Signature>")
    two = good[:sig_end] + good[sig_start:sig_end] + good[sig_end:]
    cases = {
        "not xml": (b"<a", ResultCode.MALFORMED),
        "no signature": (b"<a/>", ResultCode.MALFORMED),
        "doctype": (
            b'<!DOCTYPE a [<!ENTITY e "x">]>' + good[good.index(b"<Application") :],
            ResultCode.MALFORMED,
        ),
        "two signatures": (two, ResultCode.UNSUPPORTED),
        "duplicate id": (good.replace(b"<Name>", b'<Name Id="body">'), ResultCode.MALFORMED),
        "sha1": (
            good.replace(b"xmldsig-more#rsa-sha256", b"xmldsig#rsa-sha1"),
            ResultCode.UNSUPPORTED,
        ),
        "no certificate": (
            good.replace(b"<X509Certificate>", b"<X509CRL>").replace(
                b"</X509Certificate>", b"</X509CRL>"
            ),
            ResultCode.MALFORMED,
        ),
        "template": (xml_template(), ResultCode.MALFORMED),
    }
    for name, (xml, code) in cases.items():
        assert run(jpki, XmlItem(xml=xml)).result is code, name


def test_xml_signing_part_of_the_document_says_so(jpki: Jpki) -> None:
    """A signature whose references name one element signs that element, wherever it is
    moved: content beside it is not signed (signature wrapping). The answer says so, and
    ``references`` names what to read; each Id occurs once (a duplicate is malformed)."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    whole = run(jpki, XmlItem(xml=xml_signed(cert)))
    assert whole.result is ResultCode.OK and "not the whole document" not in whole.detail
    part = xml_signed(cert, references=xml_reference("#body"))
    body = '<Body Id="body">内容</Body>'.encode()
    moved = part.replace(body, "<Body>改竄</Body>".encode() + b"<Old>" + body + b"</Old>")
    assert moved != part
    for xml in (part, moved):
        r = run(jpki, XmlItem(xml=xml))
        assert r.result is ResultCode.OK and r.signature.references == ["#body"], r
        assert "not the whole document" in r.signature.detail, r


ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"


def test_xml_id_that_repeats_an_id_attribute_is_malformed(jpki: Jpki) -> None:
    """libxml2 makes xml:id an ID while parsing: a second element of the same value under
    Id is a duplicate Id like any other (it raised xmlsec's "duplicated id." out of the
    check, failing the whole batch), whichever of the two comes first."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    good = xml_signed(cert, references=xml_reference("#body"))
    assert run(jpki, XmlItem(xml=good)).result is ResultCode.OK
    before = good.replace(b"<Name>", b'<Name xml:id="body">')
    body = '<Body Id="body">内容</Body>'.encode()
    after = good.replace(body, body + b'<Extra xml:id="body">x</Extra>')
    for xml in (before, after):
        r = run(jpki, XmlItem(xml=xml))
        assert r.result is ResultCode.MALFORMED and "twice" in r.detail, r


@pytest.mark.parametrize(
    "uri",
    [
        "#xpointer(//*[@Id='body'])",  # any XPath: its cost grows as a power of the size
        "#body')|id('body",  # xmlsec1 wraps a bare name in xpointer(id('...'))
    ],
)
def test_xml_reference_xpointer_other_than_root_or_id_is_unsupported(jpki: Jpki, uri: str) -> None:
    """Only the same-document references of XMLDSig §4.3.3.3 are followed: a bare name,
    xpointer(/) and xpointer(id('...')); any other XPointer is XPath, refused as the XPath
    transform is (these verified as ``ok`` before)."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    xml = xml_signed(cert, references=xml_reference(uri.replace("'", "&apos;")))
    r = run(jpki, XmlItem(xml=xml))
    assert r.result is ResultCode.UNSUPPORTED and "XPointer" in r.detail, r
    for allowed in ("#xpointer(id('body'))", "#body"):
        ok = xml_signed(cert, references=xml_reference(allowed.replace("'", "&apos;")))
        assert run(jpki, XmlItem(xml=ok)).result is ResultCode.OK, allowed


def test_xml_reference_to_a_part_of_a_supplied_document_is_unsupported(jpki: Jpki) -> None:
    """A fragment of an external document makes xmlsec1 parse it as XML and evaluate an
    XPointer in it: the supplied documents are digested as octets, whole."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    part = b"<r><s>x</s></r>"
    uri = "part.xml#xpointer(/)"
    xml = xml_signed(cert, references=xml_reference(uri), documents={"part.xml": part})
    r = run(jpki, XmlItem(xml=xml, documents={uri: part, "part.xml": part}))
    assert r.result is ResultCode.UNSUPPORTED and "fragment" in r.detail, r


def test_xml_reference_transform_other_than_enveloped_or_c14n_is_unsupported(
    jpki: Jpki,
) -> None:
    """Well-formed but not verified here (the documented ``unsupported``), named as such;
    it was ``malformed``, "cannot be processed", from xmlsec1's refusal."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    xml = xml_signed(cert, references=xml_reference("", ENVELOPED))
    xpath = xml.replace(
        f'<Transform Algorithm="{ENVELOPED}"/>'.encode(),
        f'<Transform Algorithm="{ENVELOPED}"/><Transform Algorithm="{XPATH}"><XPath>1</XPath></Transform>'.encode(),
    )
    assert xpath != xml
    r = run(jpki, XmlItem(xml=xpath))
    assert r.result is ResultCode.UNSUPPORTED and "Transform" in r.detail, r


def test_xml_references_and_transforms_are_bounded(jpki: Jpki) -> None:
    """Each Reference digests, and may canonicalise, a whole document: a signature of
    thousands of References over one large document held a worker for minutes."""
    from responder.validation.xmldsig import MAX_REFERENCES, MAX_TRANSFORMS

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    c14n = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
    at_most = xml_signed(cert, references=xml_reference("", ENVELOPED) * MAX_REFERENCES)
    assert run(jpki, XmlItem(xml=at_most)).result is ResultCode.OK
    many = xml_signed(cert, references=xml_reference("", ENVELOPED) * (MAX_REFERENCES + 1))
    r = run(jpki, XmlItem(xml=many))
    assert r.result is ResultCode.UNSUPPORTED and "References" in r.detail, r
    chain = xml_signed(cert, references=xml_reference("", ENVELOPED, *[c14n] * MAX_TRANSFORMS))
    r = run(jpki, XmlItem(xml=chain))
    assert r.result is ResultCode.UNSUPPORTED and "Transforms" in r.detail, r


def test_xml_namespaces_in_scope_are_bounded(jpki: Jpki) -> None:
    """Inclusive canonicalisation visits every namespace in scope at every element, and
    libxml2 compares each with those already rendered: the cost grows as the square of
    the namespaces in scope. 100 declarations over 5 levels and 500 empty elements (8 KB)
    took 0.8 s; a few hundred KB would hold a worker for hours. Up to the bound verifies."""
    from responder.validation.xmldsig import MAX_NAMESPACES

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)

    def declaring(n: int) -> str:  # the root already has two in scope (default and x)
        decl = " ".join(f'xmlns:p{k}="urn:p:{k}"' for k in range(n - 2))
        return f"<Many {decl}>" + "<e/>" * 50 + "</Many>"

    at_most = xml_signed(cert, head=declaring(MAX_NAMESPACES))
    assert run(jpki, XmlItem(xml=at_most)).result is ResultCode.OK
    many = xml_signed(cert, head=declaring(MAX_NAMESPACES + 1))
    r = run(jpki, XmlItem(xml=many))
    assert r.result is ResultCode.UNSUPPORTED and "namespaces" in r.detail, r


def test_xml_depth_is_bounded(jpki: Jpki) -> None:
    """Each element's canonicalisation checks its ancestors (is it in the signed node set,
    is it inside the enveloped signature?): 50,000 empty elements under 250 levels (200 KB)
    took 3 s, twenty times as long as under one level."""
    from responder.validation.xmldsig import MAX_DEPTH

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)

    def nested(depth: int) -> str:  # the root is at depth 1
        return "<d>" * (depth - 1) + "</d>" * (depth - 1)

    at_most = xml_signed(cert, head=nested(MAX_DEPTH))
    assert run(jpki, XmlItem(xml=at_most)).result is ResultCode.OK
    deep = xml_signed(cert, head=nested(MAX_DEPTH + 1))
    r = run(jpki, XmlItem(xml=deep))
    assert r.result is ResultCode.UNSUPPORTED and "deeper" in r.detail, r


def test_xml_canonicalisation_work_is_budgeted(jpki: Jpki) -> None:
    """Within the namespace and depth bounds a document still costs up to 180 us per empty
    element (depth 60, 30 namespaces: 45 us per octet, six minutes for an 8 MiB item). The
    work is estimated in one pass before xmlsec1 runs and spent from a budget: 25,000 such
    elements (a 130 KB document) are refused at once; a budget one unit short of a
    document's work refuses it, its exact work verifies it."""
    from lxml import etree

    from responder.validation.xmldsig import MAX_DEPTH, MAX_NAMESPACES, XmlBudget, work

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    decl = " ".join(f'xmlns:p{k}="urn:p:{k}"' for k in range(MAX_NAMESPACES - 2))
    levels = MAX_DEPTH - 3  # the root, h and e are three more
    heavy = f"<h {decl}>" + "<d>" * levels + "<e/>" * 25_000 + "</d>" * levels + "</h>"
    r = run(jpki, XmlItem(xml=xml_template(head=heavy)))
    assert r.result is ResultCode.UNSUPPORTED and "canonicalisation work" in r.detail, r
    xml = xml_signed(cert)
    cost = work(etree.fromstring(xml))
    short = check_xmldsig(XmlItem(xml=xml), XmlBudget(cost - 1))
    assert short.outcome is SignatureOutcome.UNSUPPORTED and "work" in short.detail, short
    exact = XmlBudget(cost)
    assert check_xmldsig(XmlItem(xml=xml), exact).outcome is SignatureOutcome.VALID
    assert exact.left == 0


def test_xml_work_is_charged_per_reference(jpki: Jpki) -> None:
    """Each same-document Reference canonicalises the document again (50,000 elements: 131
    ms with one, 2 s with 64) and each Reference to a supplied document digests it again
    (64 over 8 MiB: 0.5 s): the budget is charged the tree's work per same-document
    Reference and half a unit per octet of each referenced document."""
    from lxml import etree

    from responder.validation.xmldsig import XmlBudget, work

    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    xml = xml_signed(cert, references=xml_reference("", ENVELOPED) * 3)
    tree = work(etree.fromstring(xml))
    short = check_xmldsig(XmlItem(xml=xml), XmlBudget(3 * tree - 1))
    assert short.outcome is SignatureOutcome.UNSUPPORTED and "work" in short.detail, short
    assert check_xmldsig(XmlItem(xml=xml), XmlBudget(3 * tree)).outcome is SignatureOutcome.VALID
    doc = b"x" * 100_000
    refs = xml_reference("a.bin") * 2 + xml_reference("", ENVELOPED)
    detached = xml_signed(cert, references=refs, documents={"a.bin": doc})
    item = XmlItem(xml=detached, documents={"a.bin": doc})
    cost = work(etree.fromstring(detached)) + 2 * (len(doc) // 2)
    short = check_xmldsig(item, XmlBudget(cost - 1))
    assert short.outcome is SignatureOutcome.UNSUPPORTED and "work" in short.detail, short
    assert check_xmldsig(item, XmlBudget(cost)).outcome is SignatureOutcome.VALID


def test_xml_work_estimate_stops_at_what_is_left(jpki: Jpki) -> None:
    """The estimate is itself a pass over the tree (1.6 us per element: 3 s for an 8 MiB
    item of empty elements): it stops once past what is left of the budget, before the
    rest of the tree (here an element too deep, further on, is never reached)."""
    from lxml import etree

    from responder.validation.signature import FormatError
    from responder.validation.xmldsig import MAX_DEPTH, work

    tree = etree.fromstring(
        ("<r>" + "<e/>" * 1000 + "<d>" * MAX_DEPTH + "</d>" * MAX_DEPTH + "</r>").encode()
    )
    with pytest.raises(FormatError, match="deeper"):
        work(tree)
    with pytest.raises(FormatError, match="work is spent"):
        work(tree, 10_000)


def test_xml_with_a_legit_empty_default_namespace_verifies(jpki: Jpki) -> None:
    """The template holds ``<Plain xmlns="">`` and uses the default ds namespace: the
    canonicalisation must be exact (lxml's sub-tree c14n is not; xmlsec1's is)."""
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    xml = xml_signed(cert)
    assert b'xmlns=""' in xml
    assert check_xmldsig(XmlItem(xml=xml)).outcome is SignatureOutcome.VALID


# --- the request --------------------------------------------------------------------


def test_request_decoding_is_strict_and_bounded(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    one = {"format": "pkcs1", "certificate": base64.b64encode(der(cert)).decode(),
           "signature": base64.b64encode(pkcs1(DOC)).decode(), "data": base64.b64encode(DOC).decode()}  # fmt: skip
    req = msgspec.json.decode(msgspec.json.encode({"items": [one]}), type=VerifyRequest)
    assert isinstance(req.items[0], Pkcs1Item)
    for bad in (
        {"items": [one | {"extra": 1}]},
        {"items": [one | {"format": "pgp"}]},
        {"items": [one] * (MAX_ITEMS + 1)},
        {"items": []},
        {"items": [one | {"signature": "not base64!"}]},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(bad), type=VerifyRequest)


def test_result_wire_names_every_check(jpki: Jpki) -> None:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    wire = msgspec.json.decode(
        msgspec.json.encode(run(jpki, item_of("cms", cert, signing_time=NOW)))
    )
    assert {"signature", "path", "profile", "validity", "statusAtSigning", "statusNow", "facts",
            "certificate", "result", "detail", "index", "format"} <= set(wire)  # fmt: skip
    assert wire["validity"]["instantSource"] == "signing-time"


# --- fuzz: the parsers never raise --------------------------------------------------


class Samples(dict[str, bytes]):
    def __repr__(self) -> str:  # hypothesis prints the fixtures of a failing example
        return "Samples(cms, xml, cert)"


@pytest.fixture(scope="module")
def samples(jpki: Jpki) -> Samples:
    cert = jpki.issue(Family.SIGN_CARD, SERIAL)
    return Samples(
        cms=cms_signed(DOC, cert, signing_time=NOW), xml=xml_signed(cert), cert=der(cert)
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_cms_mutations_never_raise(samples: Samples, data: st.DataObject) -> None:
    good = samples["cms"]
    at = data.draw(st.integers(0, len(good) - 1))
    blob = data.draw(st.one_of(
        st.binary(max_size=400),
        st.just(good[:at]),
        st.builds(lambda b: good[:at] + bytes([b]) + good[at + 1:], st.integers(0, 255)),
    ))  # fmt: skip
    s = check_cms(CmsItem(cms=blob or b"\x00"))
    assert s.outcome in SignatureOutcome


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_xml_mutations_never_raise(samples: Samples, data: st.DataObject) -> None:
    good = samples["xml"]
    at = data.draw(st.integers(0, len(good) - 1))
    blob = data.draw(st.one_of(
        st.binary(max_size=400),
        st.just(good[:at]),
        st.builds(lambda b: good[:at] + bytes([b]) + good[at + 1:], st.integers(0, 255)),
    ))  # fmt: skip
    s = check_xmldsig(XmlItem(xml=blob or b"\x00"))
    assert s.outcome in SignatureOutcome


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_certificates_never_raise(jpki: Jpki, samples: Samples, data: st.DataObject) -> None:
    good = samples["cert"]
    at = data.draw(st.integers(0, len(good) - 1))
    blob = good[:at] + bytes([data.draw(st.integers(0, 255))]) + good[at + 1 :]
    r = run(jpki, Pkcs1Item(certificate=blob, signature=pkcs1(DOC), data=DOC))
    assert r.result in ResultCode


@pytest.mark.parametrize("unlisted_good", [True, False])
def test_a_group_store_answers_a_serial_on_no_crl_as_the_group_set_it(
    pki: Jpki, unlisted_good: bool
) -> None:
    """A group appliance's store, imported from the 機構's CRLs, has no issuance records: a
    serial on no CRL is ``good`` by default, ``unknown`` where the group set ``[group]
    unlisted = "unknown"``, as its OCSP and /v1/status answers say."""
    crl_imported(pki)
    cert = pki.issue(Family.SIGN_CARD, SERIAL, record=False)
    r = verify_item(
        0, item_of("pkcs1", cert), anchors(pki.reader.issuers()), pki.reader, NOW,
        unlisted_good=unlisted_good,
    )  # fmt: skip
    assert r.status_now is not None and r.status_at_signing is not None
    if unlisted_good:
        assert (r.result, r.status_now.status) == (ResultCode.OK, "good"), r
    else:
        assert (r.result, r.status_now.status) == (ResultCode.UNKNOWN_CERTIFICATE, "unknown"), r
        assert "this group answers unknown" in r.status_now.detail


def test_the_verify_route_takes_the_groups_unlisted_setting() -> None:
    from responder.config import GroupConfig, ResponderConfig
    from responder.v1.verify import setup

    assert setup(ResponderConfig()).unlisted_good
    assert not setup(ResponderConfig(group=GroupConfig(unlisted="unknown"))).unlisted_good
