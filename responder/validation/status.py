"""The certificate's status from the local store, at the signing instant and now (Act §19(1)).

A sign certificate loses effect by a revocation record (Act §15(1), §16-14(1)), from the
instant the 機構 records it; a signature made before that instant stays attributable to
the holder, so the status is read twice from one store view: at the signing instant and
now. Each answer carries, when the certificate lost effect, the revocation time, the
RFC 5280 reason, the legal category (失効事由) and its article for the certificate's
family (`crlbuilder.model.CATEGORY_ARTICLES`).

What the store may say (the same rules as the OCSP lookup, `responder.flow`):

- a status record, good or revoked;
- erased: the revocation record passed its retention (Ord §70(1)(iii)); lost effect,
  at the kept time if the builder kept one, else at a time no longer known;
- no record: ``unknown`` in a store built from issuance records (the 機構 never issued
  that serial); in a group appliance's store imported from CRLs, what the group set for a
  serial on no CRL (``[group] unlisted``, as its OCSP and status answers): ``good`` by
  default (a serial absent from the 機構's CRL has not lost effect), or ``unknown``;
  but ``unknown`` whatever the setting when the certificate had expired by the thisUpdate
  of the issuer's latest imported CRL (`crl_silent`): a CRL says nothing of a certificate
  past its validity period, whose entry it may have dropped (RFC 5280 §3.3; the 機構's
  CRLs drop it once the record's retention has passed, Ord §70(1)(iii));
- ``unavailable`` when the issuer's data is past the nextUpdate the builder promised, or
  a 30-day lapse is due but not yet written, or, in a store imported from CRLs, no CRL of
  the issuer has been imported (its generation is known from ``group.json``, but nothing
  says which of its serials are revoked): never a good the store cannot vouch for.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import msgspec

from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.reader import StoreReader, never_fed

_SERIAL_END = 1 << (8 * sf.SERIAL_BYTES)
LOSS_OF_EFFECT: dict[Family, str] = {
    Family.SIGN_CARD: "Act §15(1)",
    Family.SIGN_MOBILE: "Act §16-14(1)",
    Family.AUTH_CARD: "Act §34(1)",
    Family.AUTH_MOBILE: "Act §35-14(1)",
}
"""The article by which a certificate of each family loses effect (効力を失う)."""
EXPIRY: dict[Family, str] = {
    Family.SIGN_CARD: "Act §15(1)(5)",
    Family.SIGN_MOBILE: "Act §16-14(1)(5)",
    Family.AUTH_CARD: "Act §34(1)(5)",
    Family.AUTH_MOBILE: "Act §35-14(1)(5)",
}
"""The item of that article by which it loses effect at the end of its validity period
(有効期間が満了したとき): no revocation record says so, and none can be recorded after it."""


class Status(enum.StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"
    UNAVAILABLE = "unavailable"


class StatusInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """The certificate's status at one instant, as the store knows it."""

    status: Status
    at: datetime
    """The instant asked about."""
    detail: str
    revoked_at: datetime | None = None
    """When the certificate lost effect (the record's time)."""
    reason: str | None = None
    """The RFC 5280 CRLReason (``keyCompromise`` ...)."""
    category: str | None = None
    """The legal category (失効事由): ``request``, ``resident-change``, ``recording-error``,
    ``ca-compromise``, ``card-cascade``."""
    category_ja: str | None = None
    article: str | None = None
    """The article of that category for the certificate's family (``Act §12``)."""


_REASON_NAMES = {
    Reason.UNSPECIFIED: "unspecified",
    Reason.KEY_COMPROMISE: "keyCompromise",
    Reason.CA_COMPROMISE: "cACompromise",
    Reason.AFFILIATION_CHANGED: "affiliationChanged",
    Reason.SUPERSEDED: "superseded",
    Reason.CESSATION_OF_OPERATION: "cessationOfOperation",
    Reason.CERTIFICATE_HOLD: "certificateHold",
    Reason.REMOVE_FROM_CRL: "removeFromCRL",
    Reason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
    Reason.AA_COMPROMISE: "aACompromise",
}


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _revoked(st: sf.StatusRecord, family: Family, instant: int) -> StatusInfo:
    category = st.category_enum
    if st.erased:
        return StatusInfo(
            status=Status.REVOKED, at=_at(instant),
            detail="lost effect; its revocation record passed its retention and was erased (Ord §70(1)(iii))",
            revoked_at=_at(st.revoked_at) if st.revoked_at else None,
        )  # fmt: skip
    return StatusInfo(
        status=Status.REVOKED, at=_at(instant),
        detail=f"lost effect by a revocation record ({LOSS_OF_EFFECT[family]})",
        revoked_at=_at(st.revoked_at),
        reason=_REASON_NAMES.get(Reason(st.reason)) if st.reason in Reason._value2member_map_ else None,
        category=category.value if category else None,
        category_ja=category.japanese if category else None,
        article=category.articles.get(family) if category else None,
    )  # fmt: skip


def crl_silent(crl_this_update: int, not_after: int) -> bool:
    """Whether the latest CRL (its thisUpdate) can no longer be read as
    "not revoked" for a certificate valid until ``not_after`` that it does not list.

    A CA may remove an entry once it has appeared on one CRL issued after the certificate's
    validity period (RFC 5280 §3.3, §5.3.1 removeFromCRL); the 機構 removes it when the
    record's retention has passed, never before the notAfter (`crlbuilder.apply.due_instant`),
    and the X.509 ExpiredCertsOnCRL extension, which would promise otherwise, is on none of
    its CRLs (`crlbuilder.crl.encode`). So a CRL issued within the validity period lists the
    certificate if it was revoked, and one issued at or after its end may not (the 機構
    drops it at the notAfter itself: `crlbuilder.apply.past_retention`)."""
    return not_after <= crl_this_update


def status_at(
    reader: StoreReader, issuer: sf.IssuerMeta, serial: int, *, signed_at: int, now: int,
    not_after: int, unlisted_good: bool = True,
) -> tuple[StatusInfo, StatusInfo]:  # fmt: skip
    """(status at ``signed_at``, status at ``now``) of ``serial`` of ``issuer``, epoch seconds.

    ``not_after``: the certificate's (epoch seconds). ``unlisted_good``: in a store imported
    from CRLs, a serial on no CRL is ``good`` (else ``unknown``: a group's ``[group]
    unlisted = "unknown"``), unless the CRL is silent on it (`crl_silent`)."""
    if not 0 < serial < _SERIAL_END:
        unknown = "the serial number is outside what JPKI issues (1 to 20 octets)"
        return (
            StatusInfo(status=Status.UNKNOWN, at=_at(signed_at), detail=unknown),
            StatusInfo(status=Status.UNKNOWN, at=_at(now), detail=unknown),
        )
    promised = reader.promised_next_update(issuer.index)
    if promised and promised <= now:
        stale = "the issuer's revocation data is past the nextUpdate the builder promised"
        return (
            StatusInfo(status=Status.UNAVAILABLE, at=_at(signed_at), detail=stale),
            StatusInfo(status=Status.UNAVAILABLE, at=_at(now), detail=stale),
        )
    if never_fed(reader, issuer.index):
        unfed = "no CRL of the issuer has been imported into this group's store"
        return (
            StatusInfo(status=Status.UNAVAILABLE, at=_at(signed_at), detail=unfed),
            StatusInfo(status=Status.UNAVAILABLE, at=_at(now), detail=unfed),
        )
    st = reader.status(sf.status_key(issuer.index, serial))
    if st is None:
        if reader.crl_import() and crl_silent(
            reader.crl_state(issuer.index).this_update, not_after
        ):
            silent = (
                "not on the 機構's revocation list, which no longer vouches for a certificate"
                " past its validity period (RFC 5280 §3.3)"
            )
            return (
                StatusInfo(status=Status.UNKNOWN, at=_at(signed_at), detail=silent),
                StatusInfo(status=Status.UNKNOWN, at=_at(now), detail=silent),
            )
        if reader.crl_import() and not unlisted_good:
            unlisted = (
                "not on the 機構's revocation list; this group answers unknown for such serials"
            )
            return (
                StatusInfo(status=Status.UNKNOWN, at=_at(signed_at), detail=unlisted),
                StatusInfo(status=Status.UNKNOWN, at=_at(now), detail=unlisted),
            )
        if reader.crl_import():
            good = "not on the 機構's revocation list"
            return (
                StatusInfo(status=Status.GOOD, at=_at(signed_at), detail=good),
                StatusInfo(status=Status.GOOD, at=_at(now), detail=good),
            )
        unknown = "the store has no issuance record of this serial"
        return (
            StatusInfo(status=Status.UNKNOWN, at=_at(signed_at), detail=unknown),
            StatusInfo(status=Status.UNKNOWN, at=_at(now), detail=unknown),
        )
    family = issuer.family
    if st.revoked:
        now_info = _revoked(st, family, now)
        if not st.revoked_at:
            then = StatusInfo(
                status=Status.UNKNOWN, at=_at(signed_at),
                detail="lost effect at a time the store no longer keeps",
            )  # fmt: skip
        elif signed_at < st.revoked_at:
            then = StatusInfo(
                status=Status.GOOD, at=_at(signed_at),
                detail="had not lost effect at the signing instant",
            )  # fmt: skip
        else:
            then = _revoked(st, family, signed_at)
        return then, now_info
    lapse = reader.lapse_due(st)
    if lapse and lapse <= now:
        due = "a 30-day lapse (Act §31(2)) is due and not yet written by the builder"
        then_status = (
            StatusInfo(status=Status.GOOD, at=_at(signed_at), detail="had not lost effect")
            if signed_at < lapse
            else StatusInfo(status=Status.UNAVAILABLE, at=_at(signed_at), detail=due)
        )
        return then_status, StatusInfo(status=Status.UNAVAILABLE, at=_at(now), detail=due)
    good = f"has not lost effect ({LOSS_OF_EFFECT[family]})"
    good_now = (
        good
        if now <= not_after
        else f"no revocation record; its validity period has ended, by which it lost effect ({EXPIRY[family]})"
    )
    return (
        StatusInfo(status=Status.GOOD, at=_at(signed_at), detail=good),
        StatusInfo(status=Status.GOOD, at=_at(now), detail=good_now),
    )


def compromise(info: StatusInfo) -> bool:
    """The revocation says, or cannot exclude, that the key may have been used by someone
    else before it was recorded (the holder's key leaked or was lost, or the issuing key
    leaked): a signing time the signer claims cannot place a signature before it. A record
    erased past its retention (Ord §70(1)(iii)) keeps no reason, at most its time: it
    cannot exclude a compromise, nor can a reason code this version does not know."""
    return info.status is Status.REVOKED and (
        info.reason in ("keyCompromise", "cACompromise", None)
        or info.category == Category.CA_COMPROMISE.value
        or info.revoked_at is None
    )
