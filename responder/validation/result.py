"""What POST /v1/verify answers for one signature: the result codes and one field per check.

The overall ``result`` is one of `ResultCode`, chosen by `responder.validation.verdict`
in this order (the first that applies wins):

======================== =============================================================
``malformed``            the input does not parse or is inconsistent (garbage DER, a
                         digest of the wrong length, a CMS without SignerInfo, a
                         signingTime more than `CLOCK_SKEW` later than the call)
``unsupported``          well-formed but not verifiable here (SHA-1, RSASSA-PSS, several
                         signers, an XML reference to a document not supplied)
``unknown-issuer``       not issued by a configured JPKI issuer generation
``not-a-sign-certificate`` an auth certificate (it proves a login, Act §2(2), (5)), or a
                         sign-family certificate off the sign profile (key usage, a CA,
                         a key not RSA of 2048 bits or more, Ord §2)
``refused``              the party may not receive this family's information (its
                         agreement, 取決め; ``refusal`` names the rule and article): no
                         status was looked up
``signature-mismatch``   the signature does not verify (document changed, other key)
``not-yet-valid``        the certificate (or its CA) was not yet valid at the signing instant
``expired``              the certificate (or its CA) had expired at the signing instant
``revoked``              the certificate had lost effect at the signing instant, or has
                         since for a reason that makes a claimed signing time worthless
                         (key or CA compromise, a reason or a time no longer known)
``unknown-certificate``  the store has no issuance record of the serial; on a store
                         imported from CRLs, the serial is on no CRL and either the group
                         answers unknown for such serials or the certificate had expired
                         by the latest CRL, which no longer vouches for it
``status-unavailable``   the store cannot vouch for the status now (data past its
                         promised nextUpdate, a lapse due and not yet written, no CRL
                         of the issuer imported into a group's store)
``revoked-after-signing`` signed (by the CMS signingTime the signer claims) while the
                         certificate was in effect, which it has lost since for a reason
                         that is no compromise (a move, a renewal...): the signature stays
                         attributable; the verifier decides whether the claim suffices
``expired-after-signing`` signed (by the CMS signingTime the signer claims) within the
                         certificate's validity period, which has ended since: it has lost
                         effect by its expiry (Act §15(1)(5), §16-14(1)(5)), which no record
                         says and no one can revoke after it; the verifier decides whether
                         the claim suffices
``ok``                   every check passed, at the signing instant and now
======================== =============================================================

Each check has its own field (``signature``, ``path``, ``profile``, ``validity``,
``statusAtSigning``, ``statusNow``, ``facts``), so a verifier sees every reason, not
only the first. A check that could not run says ``skipped`` and why. Details are fixed
phrases: never a stack trace, never a value of the input.
"""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from responder.validation.facts import FourFacts
from responder.validation.status import StatusInfo


class ResultCode(enum.StrEnum):
    """The overall result of one signature (see the module docstring for the order)."""

    OK = "ok"
    REVOKED_AFTER_SIGNING = "revoked-after-signing"
    EXPIRED_AFTER_SIGNING = "expired-after-signing"
    SIGNATURE_MISMATCH = "signature-mismatch"
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNKNOWN_ISSUER = "unknown-issuer"
    NOT_A_SIGN_CERTIFICATE = "not-a-sign-certificate"
    UNKNOWN_CERTIFICATE = "unknown-certificate"
    STATUS_UNAVAILABLE = "status-unavailable"
    MALFORMED = "malformed"
    UNSUPPORTED = "unsupported"
    REFUSED = "refused"


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"


class _Wire(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    pass


class Check(_Wire, frozen=True):
    """One check's outcome and why."""

    outcome: Outcome
    detail: str
    article: str | None = None


class SignatureCheck(_Wire, frozen=True):
    """The signature itself (Act §19(1): made with the key the certificate certifies)."""

    outcome: str
    """``valid``, ``mismatch``, ``malformed``, ``unsupported``, or ``not-checked`` (no RSA
    operation: the certificate is not a JPKI sign certificate the party may be told about)."""
    detail: str
    hash: str | None = None
    signed_attributes: bool | None = None
    attached: bool | None = None
    references: list[str] | None = None


class CertificateInfo(_Wire, frozen=True):
    """The signer certificate as identified (no personal data: the subject is the serial)."""

    serial: str
    """Hexadecimal."""
    issuer_name: str
    """RFC 4514."""
    not_before: datetime
    not_after: datetime
    issuer: str | None = None
    """The JPKI issuer generation's id (``sign-card-g2``), once the path is known."""
    family: str | None = None


class ValidityCheck(_Wire, frozen=True):
    """The certificate's validity period at the signing instant."""

    outcome: Outcome
    detail: str
    signing_instant: datetime
    instant_source: str
    """``signing-time`` (the CMS signingTime the signer claims) or ``call`` (no claim:
    the time of this call)."""


class FactsCheck(_Wire, frozen=True):
    outcome: Outcome
    detail: str
    facts: FourFacts | None = None


class Refusal(_Wire, frozen=True):
    """Why the status of this item's certificate was not given: the policy rule, its article."""

    rule: str
    article: str


class ItemResult(_Wire, frozen=True):
    """The answer for one item of the batch."""

    index: int
    format: str
    result: ResultCode
    detail: str
    """Why ``result``: the deciding check's detail."""
    signature: SignatureCheck
    path: Check
    profile: Check
    validity: ValidityCheck | None = None
    status_at_signing: StatusInfo | None = None
    status_now: StatusInfo | None = None
    facts: FactsCheck | None = None
    certificate: CertificateInfo | None = None
    refusal: Refusal | None = None
    received: dict[str, str] | None = None
    """The SHA-256 (hexadecimal) of each octet string the item sent, by its field
    (``certificate``, ``signature``, ``data``, ``digest``, ``cms``, ``content``, ``xml``;
    ``documents/<URI>`` for each supplied document): what the signed answer says was checked
    (`responder.v1.verify`), never the octets themselves."""
