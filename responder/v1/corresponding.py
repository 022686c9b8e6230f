"""POST /v1/corresponding: the serials of a holder's corresponding certificates (Act §18(4), §18(5), §37(3)), sans-I/O.

Given one certificate (issuer + serial, or the certificate) and the family of the
counterpart wanted, the 機構 provides the serial (発行の番号) of the same holder's
certificate of that family **whose validity period has not elapsed** (有効期間が経過
していない), revoked or not: the Act asks for the validity period only, not for the
certificate's effect. Six pairs, each its own item of the Act (`PAIRS`):

| asked | counterpart | provision | item | validity of the counterpart |
| --- | --- | --- | --- | --- |
| sign-card | sign-mobile | 対応署名用電子証明書の発行の番号 | Act §18(4)(1) | Act §16-4 |
| sign-mobile | sign-card | 対応署名用電子証明書の発行の番号 | Act §18(4)(2) | Act §5 |
| auth-card | sign-card | 対応証明書の発行の番号 | Act §18(5)(1) | Act §5 |
| sign-card | auth-card | 対応証明書の発行の番号 | Act §18(5)(2) | Act §24 |
| auth-card | auth-mobile | 対応利用者証明用電子証明書の発行の番号 | Act §37(3)(1) | Act §35-4 |
| auth-mobile | auth-card | 対応利用者証明用電子証明書の発行の番号 | Act §37(3)(2) | Act §24 |

Any other pair (sign-mobile <-> auth-mobile, a family with itself) is no provision of
the Act: 400 naming ``counterpart``. §18(4) is for a 署名検証者 (not a group), §18(5)
only for a 署名検証者 that is also a 利用者証明検証者 (`responder.registry.vocabulary`:
``SERVICE_REQUIRES_ALL``), §37(3) for a 利用者証明検証者; `responder.policy.decide`
checks the pair's service against the party's titles and agreement (取決め), for the
family asked about and for the counterpart's family (both must be in the agreement:
the answer names a certificate of each).

What the request must satisfy: the certificate asked about is one the 機構 issued
(404 ``unknown_certificate`` otherwise); its own state does not matter (the Act speaks
of a holder "who was issued" it, §18(4)(1) ...). The store must hold issuance
records (not a group appliance's CRL import, 503).

The answer lists every such certificate of the holder, newest first (there is
normally one valid certificate per family, 二重発行の禁止, Act §6, §16-5, §25, §35-5, but
one revoked and replaced before the end of its validity is still one whose validity has
not elapsed); an empty list when there is none. One provision is counted in the ledger (帳簿, Act §40) per answer
that names at least one serial.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, NamedTuple

import msgspec

from crlbuilder.model import Family
from crlbuilder.store import format as sf
from crlbuilder.store.reader import StoreReader
from crlbuilder.validity import valid_at
from responder.config import ResponderConfig
from responder.registry.vocabulary import Service
from responder.v1 import problem
from responder.v1.certref import (
    NO_ISSUANCE_RECORDS,
    NO_ISSUANCE_RECORDS_DOC,
    UNKNOWN_CERTIFICATE,
    UNKNOWN_CERTIFICATE_DOC,
    IssuerIndex,
    issuer_ids,
    resolve,
    store_ref,
)
from responder.v1.route import Context, Reply, Route
from responder.v1.wire import CertRef, Problem, SerialHex, StoreRef


class Pair(NamedTuple):
    """One correspondence the Act provides: which service, by which item."""

    service: Service
    item: str
    """The item of the Act that provides it (``Act §18(4)(1)``); the provision's name is the
    service's (`Service.ja`)."""


PAIRS: Final[dict[tuple[Family, Family], Pair]] = {
    (Family.SIGN_CARD, Family.SIGN_MOBILE): Pair(
        Service.CORRESPONDING_SIGN_SERIAL, "Act §18(4)(1)"
    ),
    (Family.SIGN_MOBILE, Family.SIGN_CARD): Pair(
        Service.CORRESPONDING_SIGN_SERIAL, "Act §18(4)(2)"
    ),
    (Family.AUTH_CARD, Family.SIGN_CARD): Pair(Service.CORRESPONDING_SERIAL, "Act §18(5)(1)"),
    (Family.SIGN_CARD, Family.AUTH_CARD): Pair(Service.CORRESPONDING_SERIAL, "Act §18(5)(2)"),
    (Family.AUTH_CARD, Family.AUTH_MOBILE): Pair(
        Service.CORRESPONDING_AUTH_SERIAL, "Act §37(3)(1)"
    ),
    (Family.AUTH_MOBILE, Family.AUTH_CARD): Pair(
        Service.CORRESPONDING_AUTH_SERIAL, "Act §37(3)(2)"
    ),
}
"""(asked family, counterpart family) -> the provision (module docstring's table)."""


class CorrespondingRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A request for the serial of a holder's corresponding certificate."""

    certificate: CertRef
    """A certificate the 機構 issued to the holder."""
    counterpart: Family
    """The family of the certificate whose serial is wanted (see the module's table)."""


class Counterpart(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One certificate of the holder in the counterpart family whose validity has not elapsed."""

    issuer: str
    """The issuer generation's id (``sign-mobile-g1``)."""
    serial: SerialHex
    """発行の番号, hexadecimal."""
    not_after: datetime
    """The end of its validity period."""


class CorrespondingResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The counterpart serials (newest first; empty: the holder has none)."""

    family: Family
    """The counterpart family asked for."""
    article: str
    """The item of the Act that provides it (``Act §18(4)(1)``)."""
    store: StoreRef
    serials: list[Counterpart]


def counterparts(
    reader: StoreReader, holder: bytes, family: Family, now: float
) -> list[tuple[bytes, sf.StatusRecord]]:
    """(status key, record) of the holder's ``family`` certificates whose validity period has
    not elapsed at ``now`` (revoked or not), newest first."""
    out: list[tuple[bytes, sf.StatusRecord]] = []
    for key in reader.holder_certs(holder, family):
        st = reader.status(key)
        if st is not None and valid_at(st.not_before, st.not_after, now):
            out.append((key, st))
    out.sort(key=lambda ks: (ks[1].not_before, ks[0]), reverse=True)
    return out


def counterpart_out(key: bytes, st: sf.StatusRecord, issuer_id: str) -> Counterpart:
    _, serial = sf.split_status_key(key)
    return Counterpart(
        issuer=issuer_id,
        serial=f"{serial:X}",
        not_after=datetime.fromtimestamp(st.not_after, UTC),
    )


# --- the route ----------------------------------------------------------------------------

SERVICES: Final = (
    Service.CORRESPONDING_SIGN_SERIAL,
    Service.CORRESPONDING_SERIAL,
    Service.CORRESPONDING_AUTH_SERIAL,
)
NO_SUCH_PAIR: Final = problem.bad_input(
    "$.counterpart",
    "no provision of the Act pairs these families (Act §18(4): sign-card <-> sign-mobile; "
    "§18(5): sign-card <-> auth-card; §37(3): auth-card <-> auth-mobile)",
)


def setup(config: ResponderConfig) -> IssuerIndex:
    return IssuerIndex()


def handle(request: CorrespondingRequest, ctx: Context) -> Reply[CorrespondingResponse] | Problem:
    """The answer to one request (the order is the module docstring's)."""
    index = ctx.env
    assert isinstance(index, IssuerIndex)
    reader, now = ctx.reader, ctx.now
    got = resolve(request.certificate, "$.certificate", index, reader)
    if isinstance(got, Problem):
        return got
    asked = got.issuer.family
    pair = PAIRS.get((asked, request.counterpart))
    if pair is None:
        return NO_SUCH_PAIR
    # the agreement covers the pair's service for both the family asked about and the
    # family answered with (Act §18(4),(5), §37(3); 取決め, Act §17(4), §36(2))
    for family in (asked, request.counterpart):
        refusal = ctx.permit(pair.service, family)
        if refusal is not None:
            return problem.refused(refusal)
    if reader.crl_import():
        return NO_ISSUANCE_RECORDS
    st = reader.status(got.key)
    if st is None:
        return UNKNOWN_CERTIFICATE
    ids = issuer_ids(reader)
    found = [
        counterpart_out(key, cst, ids[sf.split_status_key(key)[0]])
        for key, cst in counterparts(reader, st.holder, request.counterpart, now)
    ]
    body = CorrespondingResponse(
        family=request.counterpart, article=pair.item, store=store_ref(reader), serials=found
    )
    return Reply(body, counts=((pair.service, 1 if found else 0),), family=asked.value)


ROUTE: Final = Route(
    method="POST",
    path="/v1/corresponding",
    name="corresponding",
    summary="The corresponding serial (対応証明書の発行の番号 ...): Act §18(4), §18(5), §37(3)",
    description=__doc__ or "",
    request=CorrespondingRequest,
    response=CorrespondingResponse,
    services=SERVICES,
    handler=handle,
    setup=setup,
    problems=(UNKNOWN_CERTIFICATE_DOC, NO_ISSUANCE_RECORDS_DOC),
)
