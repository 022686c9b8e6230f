"""One signature through every check, and the overall result code (Act §19(1), §21(1)).

`verify_item` runs the format's signature check (`raw`, `cms`, `xmldsig`), then on the
signer certificate: the path to a configured issuer generation (`path`), the sign
profile and key usage, the validity period at the signing instant, the status at the
signing instant and now (`status`), the four facts (`facts`); and picks the overall
`ResultCode` in the documented order (`result`). Pure: the store view and the call's
instant come in, a `ItemResult` goes out; nothing is kept.

The signing instant is the CMS signingTime when the signature has one (a claim of the
signer: ``instantSource`` says so), else the instant of the call; a signingTime ahead of the
call within `CLOCK_SKEW` is judged at the call, one beyond it is ``malformed``. The status of
an auth or off-profile certificate is never looked up: a 署名検証者 receives sign revocation
information only (Act §18(1)), and the appliance reads and counts nothing it cannot vouch
for.

Two steps, so that no RSA work is spent before it is warranted and a call can be refused
before any is (`responder.v1.verify`): `assess` reads the item (no RSA operation on the
signature: `responder.validation.signature.Signed.proof`), checks the path to a configured
issuer generation (its CA's key over the certificate), the profile, the agreement and reads
the statuses; `Assessment.provides` then says whether the item counts in the ledger, and
`Assessment.result` runs the signature's check only for a JPKI sign certificate the party
may be told about (the signature of any other is ``not-checked``: its result code, which
comes first in the order, does not depend on it) and picks the result code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509

from crlbuilder.model import Family
from crlbuilder.store.reader import StoreReader
from crlbuilder.validity import expired_at, not_yet_valid_at
from responder.validation.cms import BerBudget, read_cms
from responder.validation.facts import FactsError, decode_facts
from responder.validation.path import (
    NOT_A_SIGNATURE_ARTICLE,
    Anchor,
    PathCheck,
    PathOutcome,
    ProfileCheck,
    ProfileOutcome,
    check_path,
    check_profile,
)
from responder.validation.raw import read_pkcs1
from responder.validation.request import CmsItem, Item, Pkcs1Item, XmlItem
from responder.validation.result import (
    CertificateInfo,
    Check,
    FactsCheck,
    ItemResult,
    Outcome,
    Refusal,
    ResultCode,
    SignatureCheck,
    ValidityCheck,
)
from responder.validation.signature import SignatureOutcome, Signed, proved
from responder.validation.status import EXPIRY, Status, StatusInfo, compromise, status_at
from responder.validation.xmldsig import XmlBudget, read_xmldsig

CLOCK_SKEW: Final = timedelta(minutes=5)
"""How far a claimed signingTime may be ahead of the call's clock before the item is
``malformed``. The signingTime is read from the signer's own device (a PC, a phone), whose
clock may run ahead of the appliance's (NTP-kept) one; five minutes is the allowance
Kerberos's implementations default to (MIT ``clockskew``, Windows' "maximum tolerance for
computer clock synchronization") for clocks kept by the same means. Within it the claim is
judged at the time of the call, never later (`assess`): a signature existed by the time it
was received, so a claim ahead of the call can neither place the signing in a validity
period that has not begun nor before a revocation not yet recorded; the allowance only
decides which claims are refused as impossible."""
SIGNATURE_ARTICLE: Final = "Act §19(1), §21(1)"

_SKIPPED_PATH: Final = Check(outcome=Outcome.SKIPPED, detail="no signer certificate to check")


def check_signature(
    item: Item, xml_budget: XmlBudget | None = None, ber_budget: BerBudget | None = None
) -> Signed:
    """The format's own reading (an XML item's within ``xml_budget``, a BER CMS item's
    within ``ber_budget``, the call's), its RSA check left pending (`Signed.proof`):
    nothing of the key is used yet."""
    if isinstance(item, Pkcs1Item):
        return read_pkcs1(item)
    if isinstance(item, CmsItem):
        return read_cms(item, ber_budget)
    if isinstance(item, XmlItem):
        return read_xmldsig(item, xml_budget)
    raise TypeError(type(item).__name__)


def _signature_check(s: Signed) -> SignatureCheck:
    return SignatureCheck(
        outcome=s.outcome.value, detail=s.detail, hash=s.hash,
        signed_attributes=s.signed_attributes,
        attached=s.attached, references=list(s.references) if s.references else None,
    )  # fmt: skip


def _certificate_info(cert: x509.Certificate, path: PathCheck) -> CertificateInfo:
    anchor = path.anchor
    return CertificateInfo(
        serial=f"{cert.serial_number:x}", issuer_name=path.issuer_name,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        issuer=anchor.meta.id if anchor else None,
        family=anchor.meta.family.value if anchor else None,
    )  # fmt: skip


Permit = Callable[[Family], Refusal | None]
"""May the party receive information about a certificate of this family (its agreement)?"""


def _anyone(family: Family) -> Refusal | None:
    return None


def provided(then: StatusInfo | None, now: StatusInfo | None) -> bool:
    """Whether an item provided revocation information (帳簿, Act §40): its status was read
    and the store vouched for it at the signing instant or now. An item ``unavailable`` at
    both (the issuer's data past its promised nextUpdate, no CRL of it imported) provided
    none, as an ``unavailable`` entry of /v1/status is no provision; nor did an item whose
    status was not read (no JPKI issuer, not a sign certificate, refused)."""
    if now is None:
        return False
    return now.status is not Status.UNAVAILABLE or (
        then is not None and then.status is not Status.UNAVAILABLE
    )


_UNCHECKED_DETAIL: Final = (
    "not checked: no RSA operation is spent on a certificate that is not a JPKI sign"
    " certificate the party may be told about"
)


@dataclass(frozen=True, slots=True)
class Assessment:
    """One item read, its path, profile and statuses known, its signature's RSA check not
    yet run (`Signed.proof`): `provides` says whether it counts, `result` finishes it."""

    index: int
    format: str
    signed: Signed
    path: PathCheck | None
    instant: datetime
    source: str
    now: datetime
    profile: ProfileCheck | None = None
    refusal: Refusal | None = None
    then: StatusInfo | None = None
    current: StatusInfo | None = None
    facts: FactsCheck | None = None

    @property
    def provides(self) -> bool:
        """Counted in the ledger (`provided`); known before any RSA operation."""
        return provided(self.then, self.current)

    def result(self) -> ItemResult:
        """The item's answer: the signature's check run if the certificate warrants it (a
        JPKI issuer's sign certificate the agreement covers), the result code picked."""
        signed = self.signed
        if signed.proof is not None:
            warranted = (
                self.path is not None and self.path.anchor is not None
                and self.profile is not None and self.profile.outcome is ProfileOutcome.SIGN
                and self.refusal is None
            )  # fmt: skip
            signed = (
                proved(signed)
                if warranted
                else dataclasses.replace(signed, detail=_UNCHECKED_DETAIL, proof=None)
            )
        return _result(self, signed)


def assess(
    index: int, item: Item, known: Sequence[Anchor], reader: StoreReader, now: datetime,
    permit: Permit = _anyone, *, unlisted_good: bool = True, xml_budget: XmlBudget | None = None,
    ber_budget: BerBudget | None = None,
) -> Assessment:  # fmt: skip
    """Everything about one item but its signature's RSA check (`Assessment.result` runs
    it): read it, then the path, the profile, the agreement and the statuses. The key of a
    certificate no configured issuer generation issued is never used, nor that of an auth
    or off-profile certificate, or of a family the agreement does not cover."""
    signed = check_signature(item, xml_budget, ber_budget)
    fmt = item.__struct_config__.tag
    assert isinstance(fmt, str)
    cert = signed.certificate
    if cert is None:
        return Assessment(index, fmt, signed, None, now, "call", now)
    instant, source = now, "call"
    if signed.signing_time is not None:
        # a claim ahead of the call within the skew is judged at the call: the signature
        # existed by then, and no instant later than the call is ever judged
        instant, source = min(signed.signing_time, now), "signing-time"
    path = check_path(cert, known, instant, signed.octets)
    anchor = path.anchor
    if anchor is None:
        return Assessment(index, fmt, signed, path, instant, source, now)
    profile = check_profile(cert, anchor.meta.family)
    if profile.outcome is not ProfileOutcome.SIGN:
        # an auth or off-profile certificate: nothing vouched for, no status read or counted
        return Assessment(index, fmt, signed, path, instant, source, now, profile)
    refusal = permit(anchor.meta.family)
    if refusal is not None:
        return Assessment(index, fmt, signed, path, instant, source, now, profile, refusal)
    then, current = status_at(
        reader, anchor.meta, cert.serial_number,
        signed_at=int(instant.timestamp()), now=int(now.timestamp()),
        not_after=int(cert.not_valid_after_utc.timestamp()), unlisted_good=unlisted_good,
    )  # fmt: skip
    return Assessment(
        index, fmt, signed, path, instant, source, now, profile, None, then, current,
        _facts(cert),
    )  # fmt: skip


def verify_item(
    index: int, item: Item, known: Sequence[Anchor], reader: StoreReader, now: datetime,
    permit: Permit = _anyone, *, unlisted_good: bool = True, xml_budget: XmlBudget | None = None,
    ber_budget: BerBudget | None = None,
) -> ItemResult:  # fmt: skip
    """Every check of one item against the store view ``reader`` at the call's ``now``.

    ``permit`` is asked before the status of a sign certificate is read: a family the
    party may not receive is ``refused`` for this item (the batch goes on).
    ``unlisted_good``: a group appliance's ``[group] unlisted`` (`status_at`).
    ``xml_budget``: the call's canonicalisation work, shared by its XML items (None: the
    item's own); ``ber_budget``: likewise the call's BER re-encoding (`der_of_ber`).
    """
    return assess(
        index, item, known, reader, now, permit, unlisted_good=unlisted_good,
        xml_budget=xml_budget, ber_budget=ber_budget,
    ).result()  # fmt: skip


def _result(a: Assessment, signed: Signed) -> ItemResult:
    sig = _signature_check(signed)
    index, fmt, now, instant = a.index, a.format, a.now, a.instant
    cert = signed.certificate
    if cert is None or a.path is None:
        code = (
            ResultCode.UNSUPPORTED
            if signed.outcome is SignatureOutcome.UNSUPPORTED
            else ResultCode.MALFORMED
        )
        return ItemResult(
            index=index, format=fmt, result=code, detail=signed.detail, signature=sig,
            path=_SKIPPED_PATH, profile=_SKIPPED_PATH,
        )  # fmt: skip
    path = a.path
    anchor = path.anchor
    path_check = Check(
        outcome=Outcome.PASS if path.outcome is PathOutcome.OK else Outcome.FAIL,
        detail=path.detail,
    )
    info = _certificate_info(cert, path)
    codes: list[tuple[ResultCode, str]] = []

    def fail(code: ResultCode, detail: str) -> None:
        codes.append((code, detail))

    if signed.outcome is SignatureOutcome.MALFORMED:
        fail(ResultCode.MALFORMED, signed.detail)
    elif signed.outcome is SignatureOutcome.UNSUPPORTED:
        fail(ResultCode.UNSUPPORTED, signed.detail)
    if signed.signing_time is not None and signed.signing_time > now + CLOCK_SKEW:
        fail(ResultCode.MALFORMED, "the signingTime is later than the time of the call")
    if anchor is None:
        fail(ResultCode.UNKNOWN_ISSUER, path.detail)
        return ItemResult(
            index=index, format=fmt, result=codes[0][0], detail=codes[0][1], signature=sig,
            path=path_check, profile=Check(outcome=Outcome.SKIPPED, detail="no JPKI issuer"),
            certificate=info,
        )  # fmt: skip
    profile = a.profile
    assert profile is not None
    profile_check = Check(
        outcome=Outcome.PASS if profile.outcome is ProfileOutcome.SIGN else Outcome.FAIL,
        detail=profile.detail,
        article=NOT_A_SIGNATURE_ARTICLE if profile.outcome is ProfileOutcome.AUTH else None,
    )
    if profile.outcome is not ProfileOutcome.SIGN:
        fail(ResultCode.NOT_A_SIGN_CERTIFICATE, profile.detail)
    if signed.outcome is SignatureOutcome.MISMATCH:
        fail(ResultCode.SIGNATURE_MISMATCH, signed.detail)
    if path.outcome is PathOutcome.CA_NOT_YET_VALID:
        fail(ResultCode.NOT_YET_VALID, path.detail)
    elif path.outcome is PathOutcome.CA_EXPIRED:
        fail(ResultCode.EXPIRED, path.detail)
    validity = _validity(cert, instant, a.source, now, signed.signing_time)
    if validity.outcome is Outcome.FAIL:
        fail(
            ResultCode.NOT_YET_VALID
            if not_yet_valid_at(cert.not_valid_before_utc, instant)
            else ResultCode.EXPIRED,
            validity.detail,
        )
    elif expired_at(cert.not_valid_after_utc, now):  # valid at a claimed signingTime, expired now
        fail(
            ResultCode.EXPIRED_AFTER_SIGNING,
            "signed, by the signingTime claimed, within the validity period, which has ended"
            f" since: it has lost effect ({EXPIRY[anchor.meta.family]})",
        )
    if a.refusal is not None:
        fail(ResultCode.REFUSED, "the agreement (取決め) does not cover this certificate's family")
    elif a.then is not None and a.current is not None:
        codes.extend(_status_codes(a.then, a.current))
    code, detail = min(codes, key=lambda c: _ORDER[c[0]]) if codes else (
        ResultCode.OK, "the signature verifies and the certificate had and has not lost effect"
    )  # fmt: skip
    return ItemResult(
        index=index, format=fmt, result=code, detail=detail, signature=sig, path=path_check,
        profile=profile_check, validity=validity, status_at_signing=a.then,
        status_now=a.current, facts=a.facts, certificate=info, refusal=a.refusal,
    )  # fmt: skip


_ORDER: Final = {
    c: n
    for n, c in enumerate(
        (
            ResultCode.MALFORMED,
            ResultCode.UNSUPPORTED,
            ResultCode.UNKNOWN_ISSUER,
            ResultCode.NOT_A_SIGN_CERTIFICATE,
            ResultCode.REFUSED,
            ResultCode.SIGNATURE_MISMATCH,
            ResultCode.NOT_YET_VALID,
            ResultCode.EXPIRED,
            ResultCode.REVOKED,
            ResultCode.UNKNOWN_CERTIFICATE,
            ResultCode.STATUS_UNAVAILABLE,
            ResultCode.REVOKED_AFTER_SIGNING,
            ResultCode.EXPIRED_AFTER_SIGNING,
            ResultCode.OK,
        )
    )
}
"""The documented order (`responder.validation.result`): the first failing code wins."""


def _validity(
    cert: x509.Certificate, instant: datetime, source: str, now: datetime,
    claimed: datetime | None = None,
) -> ValidityCheck:  # fmt: skip
    if not_yet_valid_at(cert.not_valid_before_utc, instant):
        outcome, detail = Outcome.FAIL, "the certificate was not yet valid at the signing instant"
    elif expired_at(cert.not_valid_after_utc, instant):
        outcome, detail = Outcome.FAIL, "the certificate had expired at the signing instant"
    elif expired_at(cert.not_valid_after_utc, now):
        outcome, detail = Outcome.PASS, "valid at the signing instant (it has expired since)"
    else:
        outcome, detail = Outcome.PASS, "valid at the signing instant"
    if claimed is not None and claimed > instant:
        detail += (
            "; the signingTime claimed is ahead of the call's clock (within the allowed skew):"
            " judged at the time of the call"
        )
    return ValidityCheck(
        outcome=outcome, detail=detail, signing_instant=instant, instant_source=source
    )


def _status_codes(then: StatusInfo, current: StatusInfo) -> list[tuple[ResultCode, str]]:
    """What the two statuses say against the signature."""
    out: list[tuple[ResultCode, str]] = []

    def fail(code: ResultCode, detail: str) -> None:
        out.append((code, detail))

    if then.status is Status.REVOKED:
        fail(ResultCode.REVOKED, "the certificate had lost effect at the signing instant")
    elif current.status is Status.REVOKED:
        if compromise(current):
            fail(
                ResultCode.REVOKED,
                "the certificate has lost effect for a compromise: a claimed signing time cannot place the signature before it",
            )
        elif then.status is Status.GOOD:
            fail(
                ResultCode.REVOKED_AFTER_SIGNING,
                "signed, by the signingTime claimed, before the certificate lost effect",
            )
        else:
            fail(ResultCode.REVOKED, current.detail)
    if Status.UNKNOWN in (then.status, current.status) and current.status is not Status.REVOKED:
        fail(
            ResultCode.UNKNOWN_CERTIFICATE,
            current.detail if current.status is Status.UNKNOWN else then.detail,
        )
    if Status.UNAVAILABLE in (then.status, current.status):
        fail(
            ResultCode.STATUS_UNAVAILABLE,
            current.detail if current.status is Status.UNAVAILABLE else then.detail,
        )
    return out


def _facts(cert: x509.Certificate) -> FactsCheck:
    try:
        facts = decode_facts(cert)
    except FactsError as e:
        return FactsCheck(outcome=Outcome.FAIL, detail=str(e))
    if facts is None:
        return FactsCheck(outcome=Outcome.FAIL, detail="the sign certificate carries no four facts")
    return FactsCheck(
        outcome=Outcome.PASS, detail="the four facts (基本4情報, Act §7(1)(3))", facts=facts
    )
