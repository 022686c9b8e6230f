"""POST /v1/record-info: 特定署名用電子証明書記録情報 (Act §18(3), §19(5), §20(4),(5), §21(4)), sans-I/O.

A 署名検証者 that saw a holder's sign certificate lose effect (Act §19(5)), or a
団体署名検証者 asking on behalf of its 署名確認者 (§20(4), §21(4)), may ask the 機構 for
the holder's 特定署名用電子証明書記録情報: the serial (発行の番号) and the §7(1)(3)
items (the four facts, 基本4情報, with their substitute-character forms) recorded in
the holder's sign certificate that has not lost effect (§15(1), §16-14(1)), **of the
same kind** as the one asked about (a lost card certificate gives card information, a
lost mobile certificate mobile information: the parentheses of §19(5), §21(4)). The
機構 provides it only when it exists and the holder consented to its provision (§18(3)).

What the request must satisfy (decided here, each with its article), in this order:

1. it names one certificate (issuer + serial, or the certificate; 400 naming the field)
   of a sign family (§18(3) provides sign records only): the agreement must name
   ``sign-record-info``, this family and the ``json`` method (`responder.policy`, 403);
2. the store holds issuance records (not a group appliance's CRL import: 503);
3. the 機構 issued that certificate: else 404 ``unknown_certificate``, no holder to
   speak of;
4. that certificate has lost effect now, by a record (revoked, §15(1)(1)-(4),
   §16-14(1)(1)-(4)) or by the end of its validity (§15(1)(5), §16-14(1)(5)): §19(5)
   and §21(4) let the party ask only "after it confirmed that the certificate lost
   effect". A certificate still in effect is refused, 409 ``in_effect``, and nothing
   about its holder is looked at. None of these says more about the holder than the
   status of the certificate asked about (§18(1)).

Then, in this order, so that a party without consent learns nothing:

- no consent of the holder for this party (同意, §18(3); the builder stores consents
  naming registered 署名検証者等 only, and none the holder withdrew later, whatever order the
  records came in: rules 9, `crlbuilder.consentkept`): ``not-provided``, whether or not a
  current certificate exists;
- no certificate of the same family in effect now: ``none-exists``;
- the facts of that certificate erased by the builder because it expired by the builder's
  clock, which runs ahead of this responder's (no facts under its key and its notAfter
  within `EXPIRY_SKEW`, five minutes, of now): ``none-exists`` too, as it is a moment later
  by this clock (a 503 then would call a whole store damaged; decided in the audit of the
  facts' erasure at expiry, `crlbuilder.factskept`);
- else ``provided``, with its issuer, serial, validity and the four facts (503 when
  this responder holds no facts key, ``store.facts_key_file``: only a record needs it; 503
  when the facts are absent or do not open).

The facts are opened (AES-GCM, `crlbuilder.seal.FactsCipher`) only here, only for
this answer; they are never logged, never cached, never part of a problem. One
provision is counted in the ledger (帳簿, Act §40) per ``provided`` answer only:
``not-provided`` and ``none-exists`` provide nothing (§18(3) provides "when it exists
and the holder consented").

The §7(2) reading for a sign-card issued between a 国外転出届 and its planned date
(the fact of moving abroad and the planned date) is not in the issuance records the
store keeps, so it is not part of the answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final, NamedTuple

import msgspec
from cryptography.exceptions import InvalidTag

from crlbuilder.model import Family, FourFacts, Sex
from crlbuilder.seal import FactsCipher, facts_key_given, read_facts_key
from crlbuilder.store import format as sf
from crlbuilder.store.reader import StoreReader
from crlbuilder.validity import expired_at, not_yet_valid_at
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

ARTICLE: Final = "Act §18(3)"
"""The article that provides 特定署名用電子証明書記録情報."""
ASK_ARTICLE: Final = "Act §19(5), §21(4)"
"""The articles that let a party ask for it: after it saw the certificate lose effect."""


class Result(enum.StrEnum):
    """What the 機構 answers to a request for 特定署名用電子証明書記録情報 (Act §18(3))."""

    PROVIDED = "provided"
    """The record exists and the holder consented: it is in the answer."""
    NOT_PROVIDED = "not-provided"
    """The holder has not consented to this party (同意, §18(3)); nothing else is said."""
    NONE_EXISTS = "none-exists"
    """The holder consented, but holds no certificate of the same kind in effect now."""


class RecordInfoRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A request for 特定署名用電子証明書記録情報 (Act §19(5), §21(4))."""

    certificate: CertRef
    """The sign certificate the party saw lose effect (revoked, or past its validity)."""


class Facts(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """The Act §7(1)(3) items (基本4情報) as the certificate records them."""

    name: Annotated[str, msgspec.Meta(description="氏名")]
    name_alt: Annotated[
        str | None, msgspec.Meta(description="氏名の代替文字 (substitute characters)")
    ] = None
    sex: Annotated[Sex, msgspec.Meta(description="性別: 1 male, 2 female, 3 unknown")]
    birth_date: Annotated[
        str,
        msgspec.Meta(
            min_length=9,
            max_length=9,  # `$` also matches before a final line feed in Python: 9 exactly
            pattern=r"^[1-5][0-9]{8}$",  # ECMA-262 in the OpenAPI document: no `\Z` there
            description="生年月日: one era digit (1 明治 .. 5 令和) then the Gregorian YYYYMMDD",
        ),
    ]
    address: Annotated[str, msgspec.Meta(description="住所")]
    address_alt: Annotated[
        str | None, msgspec.Meta(description="住所の代替文字 (substitute characters)")
    ] = None


class Record(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The holder's sign certificate of the same kind that is in effect now, and its facts."""

    family: Family
    issuer: str
    """The issuer generation's id (``sign-card-g2``)."""
    serial: SerialHex
    """発行の番号, hexadecimal."""
    not_before: datetime
    not_after: datetime
    facts: Facts


class RecordInfoResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The answer: ``provided`` with the record, or why none is given."""

    result: Result
    article: str
    """``Act §18(3)``."""
    store: StoreRef
    record: Record | None = None
    """Present when ``result`` is ``provided``, null otherwise."""


class Current(NamedTuple):
    """The holder's certificate that is in effect now (its status key and record)."""

    key: bytes
    status: sf.StatusRecord


def lost_effect(st: sf.StatusRecord, now: float) -> bool:
    """Has this certificate lost effect (効力を失っている) at ``now``: by a record (revoked,
    §15(1)(1)-(4), §16-14(1)(1)-(4)) or by the end of its validity (§15(1)(5), §16-14(1)(5))?"""
    return st.revoked or expired_at(st.not_after, now)


def in_effect(st: sf.StatusRecord, now: float) -> bool:
    """Not lost effect and already issued at ``now``."""
    return not lost_effect(st, now) and not not_yet_valid_at(st.not_before, now)


def current_certificate(
    reader: StoreReader, holder: bytes, family: Family, now: float
) -> Current | None:
    """The holder's certificate of ``family`` in effect now (one per holder and family,
    二重発行の禁止, Act §6, §16-5: should the store ever hold two, the latest issued)."""
    best: Current | None = None
    for key in reader.holder_certs(holder, family):
        st = reader.status(key)
        if st is None or not in_effect(st, now):
            continue
        if best is None or st.not_before > best.status.not_before:
            best = Current(key, st)
    return best


def decide(
    reader: StoreReader, asked: sf.StatusRecord, party_id: str, now: float
) -> Result | Current:
    """What to answer about the holder of ``asked`` (a sign certificate that lost effect)
    to ``party_id``: consent first (a party without it learns nothing), then existence."""
    if reader.consent(asked.holder, party_id) is None:
        return Result.NOT_PROVIDED
    current = current_certificate(reader, asked.holder, asked.family_enum, now)
    return Result.NONE_EXISTS if current is None else current


def facts_out(f: FourFacts) -> Facts:
    return Facts(
        name=f.name,
        name_alt=f.name_alt,
        sex=f.sex,
        birth_date=f.birth_date,
        address=f.address,
        address_alt=f.address_alt,
    )


def record_of(current: Current, issuer_id: str, facts: FourFacts) -> Record:
    _, serial = sf.split_status_key(current.key)
    st = current.status
    return Record(
        family=st.family_enum,
        issuer=issuer_id,
        serial=f"{serial:X}",
        not_before=datetime.fromtimestamp(st.not_before, UTC),
        not_after=datetime.fromtimestamp(st.not_after, UTC),
        facts=facts_out(facts),
    )


EXPIRY_SKEW: Final = 300
"""Seconds by which the builder's clock may be ahead of this responder's when it erases the
facts of a certificate that expired by its clock (`crlbuilder.factskept`: the second after
notAfter): the allowance the product gives clocks elsewhere (`CLOCK_SKEW` of the CRL import
and of signature validation, five minutes)."""


def erased_at_its_end(reader: StoreReader, current: Current, now: float) -> bool:
    """Whether the facts of ``current`` (in effect by this responder's clock) are absent
    because the builder, its clock ahead, erased them at the certificate's end: no facts
    sealed under its key and its notAfter within `EXPIRY_SKEW` of ``now``. The builder judged
    the certificate expired (§15(1)(5), §16-14(1)(5)); the answer is then "none exists", as it
    is a second or so later here, and not a 503 for a store that is whole. Facts absent from a
    certificate ending later are a damaged store (503); facts present are given, whatever
    the skew."""
    return (
        current.status.not_after - now <= EXPIRY_SKEW and reader.sealed_facts(current.key) is None
    )


def open_facts(cipher: FactsCipher, reader: StoreReader, key: bytes) -> FourFacts | None:
    """The facts sealed for the certificate under ``key``; None when absent or unopenable
    (another key, altered bytes): the caller answers 503 and says nothing more."""
    sealed = reader.sealed_facts(key)
    if sealed is None:
        return None
    try:
        return cipher.open(key, sealed)
    except (InvalidTag, msgspec.DecodeError):  # never echo what did not open
        return None


# --- the route ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Env:
    """What one worker prepares once (`setup`): the issuer index and the facts cipher."""

    issuers: IssuerIndex
    cipher: FactsCipher | None
    """None when no facts key is configured: the route answers 503 when it has a record to give."""


def setup(config: ResponderConfig) -> Env:
    """The facts key from ``JPKI_VA_FACTS_KEY`` (which `responder serve` took out of its
    environment before it forked this worker: `crlbuilder.seal.take_facts_key`) or
    ``store.facts_key_file`` (a bad key or file is a `ConfigError` at start); neither
    configured: no cipher."""
    path = config.store.facts_key_file
    if path is None and not facts_key_given():
        return Env(IssuerIndex(), None)
    return Env(IssuerIndex(), FactsCipher(read_facts_key(path, field="store.facts_key_file")))


NO_FACTS_KEY: Final = problem.make(
    503,
    problem.UNAVAILABLE,
    "this responder holds no key to open the recorded facts (store.facts_key_file)",
    article=ARTICLE,
)
UNREADABLE: Final = problem.make(
    503,
    problem.UNAVAILABLE,
    "the recorded facts could not be opened (is the facts key the builder's?)",
    article=ARTICLE,
)
IN_EFFECT: Final = problem.make(
    409,
    "in_effect",
    "the certificate has not lost effect: a party may ask for 特定署名用電子証明書記録情報 "
    "only after it saw the certificate lose effect",
    article=ASK_ARTICLE,
    field="$.certificate",
)


def handle(request: RecordInfoRequest, ctx: Context) -> Reply[RecordInfoResponse] | Problem:
    """The answer to one request (the order is the module docstring's)."""
    env = ctx.env
    assert isinstance(env, Env)
    reader, now = ctx.reader, ctx.now
    got = resolve(request.certificate, "$.certificate", env.issuers, reader)
    if isinstance(got, Problem):
        return got
    family = got.issuer.family
    refusal = ctx.permit(Service.SIGN_RECORD_INFO, family)
    if refusal is not None:
        return problem.refused(refusal)
    if reader.crl_import():
        return NO_ISSUANCE_RECORDS
    st = reader.status(got.key)
    if st is None:
        return UNKNOWN_CERTIFICATE
    if not lost_effect(st, now):
        return IN_EFFECT
    verdict = decide(reader, st, ctx.party.id, now)
    if isinstance(verdict, Result):
        body = RecordInfoResponse(result=verdict, article=ARTICLE, store=store_ref(reader))
        return Reply(body, family=family.value)
    if erased_at_its_end(reader, verdict, now):  # the builder's clock ahead of ours
        body = RecordInfoResponse(
            result=Result.NONE_EXISTS, article=ARTICLE, store=store_ref(reader)
        )
        return Reply(body, family=family.value)
    if env.cipher is None:  # only a record to give needs the key
        return NO_FACTS_KEY
    facts = open_facts(env.cipher, reader, verdict.key)
    issuer_id = issuer_ids(reader).get(sf.split_status_key(verdict.key)[0])
    if facts is None or issuer_id is None:
        return UNREADABLE
    body = RecordInfoResponse(
        result=Result.PROVIDED,
        article=ARTICLE,
        store=store_ref(reader),
        record=record_of(verdict, issuer_id, facts),
    )
    return Reply(body, counts=((Service.SIGN_RECORD_INFO, 1),), family=family.value)


ROUTE: Final = Route(
    method="POST",
    path="/v1/record-info",
    name="record-info",
    summary="特定署名用電子証明書記録情報: a holder's current sign serial and four facts, Act §18(3)",
    description=__doc__ or "",
    request=RecordInfoRequest,
    response=RecordInfoResponse,
    services=(Service.SIGN_RECORD_INFO,),
    handler=handle,
    setup=setup,
    problems=(
        UNKNOWN_CERTIFICATE_DOC,
        (409, "`in_effect`: the certificate has not lost effect (Act §19(5), §21(4))."),
        (
            503,
            f"{NO_ISSUANCE_RECORDS_DOC[1]} Or no facts key to open the record to give "
            "(`store.facts_key_file`).",
        ),
    ),
)
