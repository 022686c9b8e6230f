"""Disclosure of a holder's own records (自己に係る認証業務情報の開示, Act §58-61): the document.

Anyone may ask the 機構 to disclose the certification-business information (認証業務情報)
about themselves, including being told that none exists (Act §58(1)); the 機構 discloses it
(§58(2)) within 30 days of the request (§59(1)); a correction, addition or deletion asked
for after it is investigated and the result notified (§61). This module owns what this
appliance's status store holds about one holder, as one typed document (`Disclosure`): a
pure function (`disclose`) of a store view (`crlbuilder.store.reader.StoreReader`: the LMDB
reader, or the in-memory `crlbuilder.store.memory.MemoryReader`), the holder key, the instant and
the facts cipher. `crlbuilder disclose` (`crlbuilder.cli`) is the thin command around it.

The holder is named as the records name them: the holder key (`holder` of docs/records.md,
HMAC-SHA256 of the 住民票コード under the 機構's holder-key secret, `crlbuilder.rules.holder_key`).
The appliance holds no holder-key secret (the records arrive hashed), so it cannot turn a
住民票コード into a holder key; whoever holds the secret does that (`holder_of`).

What each database of the store (docs/store.md) holds of a holder, and what is read here:

- ``links``: the holder's certificates per family, read for every family (the four of a
  resident, and the verifier-token family, whose holder key is a party's digest, never a
  resident's);
- ``status``: each certificate's family, validity, state, category and reason, time of loss
  of effect (失効); ``revoked``: its CRL entry's recording instant (when the causing record was
  recorded, from which its retention counts);
- ``holders``: the sealed four facts (基本4情報) of a sign certificate still kept (Act
  §18(3)), opened with the facts key when given;
- ``consents``: the holder's consents (同意) to parties, for 特定署名用電子証明書記録情報;
- ``withdrawals``: the withdrawals of those consents the builder keeps (rules 9: the party and
  when recorded, so that a grant made before it and read after it grants nothing,
  `crlbuilder.consentkept`);
- ``pending``: the holder's last move-out notice (転出届, Act §31(2)) and its lapse;
- ``taken`` and ``moveins``: the resident changes, lapses and move-in notices kept for the
  holder's records read later (instants and flags only);
- nothing personal, or nothing keyed to a holder, in the others: ``responses`` (pre-signed
  OCSP answers of revoked serials: the same status and time as ``status``), ``changes`` (which
  commit a loss of effect was written by: the same fact by commit), ``erased`` (a serial and
  two numbers, until the next full CRL), ``retention`` and ``lapses`` (the builder's agenda and
  index: the due instants of what ``revoked``, ``pending``, ``taken`` and ``moveins`` hold),
  ``applied`` and ``quarantine`` (record ids and digests, keyed by no holder: which ids are
  this holder's cannot be told from the store), ``crls``, ``announcements``, ``outbox`` (a
  notice staged there names a serial, delivered at once to the notices file, not kept) and
  ``meta`` (the builder's own state).

A facts key that opens none of the holder's sealed facts is the wrong key: nothing is
disclosed (`FactsUnopened`). One that opens some and not others opens the store's facts: the
others are damaged values, disclosed as ``damaged`` beside everything else (refusing would
leave the requester without any disclosure until the store is restored; the command says so on
stderr, naming no holder). A link naming another holder's certificate (a damaged store) is
refused whole (`StoreCorrupt`), never disclosed. The consents name the party each was given to:
the consent is the holder's own act and the party's id is no one's personal data.

Provisions of the holder's information to parties (Act §18, §37) are counted in the ledger
(帳簿, `responder.ledger`) per party, day, service and method only: no holder, no serial, so
no per-holder account of them exists to disclose (`NOTES`). The responder's watch lists
(`responder.v1.watchdb`: which certificates each party's changes feed watches, under keyed
hashes) live in the responder's own environment, not in the store: not read here (`NOTES`).
Nor are the builder's notices and quarantine files beside the store (`NOTES`): they are not
the 認証業務情報 of Act §44 (issuance records, revocation information and their files,
verifier tokens), and a holder notification naming the certificate's serial is the 機構's to
tell the holder (decided in the audit after the command was added).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Final, Literal, Protocol

import msgspec
from cryptography.exceptions import InvalidTag

from crlbuilder import rules
from crlbuilder.model import Family, FourFacts
from crlbuilder.store import format as sf
from crlbuilder.store.reader import StoreReader
from crlbuilder.validity import expired_at

__all__ = [
    "DOCUMENT",
    "NOTES",
    "Certificate",
    "Consent",
    "Disclosure",
    "FactsUnopened",
    "Kept",
    "MoveInNotice",
    "MoveOutNotice",
    "Withdrawal",
    "disclose",
    "encode",
    "holder_of",
]

DOCUMENT: Final = "jpki-va disclosure 1"
"""The document's kind and version (`Disclosure.document`)."""

NOTES: Final = (
    "Act §58(1): this document is everything this appliance's status store holds about the "
    "holder named; an empty one says that it holds nothing (exists false).",
    "Provisions of the holder's information to parties (Act §18, §37) are kept in the ledger "
    "(帳簿, Ord §71) as counts per party, day, service and method only: no provision is kept "
    "per holder, so none can be listed here.",
    "Record ids the store applied and refusals it quarantined are keyed by no holder; the "
    "records themselves are the 機構's (the record feed), not this store's.",
    "The responder's watch lists (the certificates each party's changes feed watches, under "
    "keyed hashes) are kept in the responder's own environment, not in this store, and are "
    "not read here.",
    "The builder's notices file (holder notifications of a recording error, Act §15(2), "
    "§16-14(2), §34(2), §35-14(2): record id, issuer and serial of the certificate) and its "
    "quarantine file (refused records' ids and reasons, keyed by no holder) lie beside the "
    "store, are not the certification-business information of Act §44, and are not read here: "
    "a notification is told to the holder by the 機構's desk that takes it from that file.",
    "A correction, addition or deletion (Act §61) is made in the 機構's records and reaches "
    "this store as a record (docs/operations.md, 'Disclosure of a holder's records').",
)


class FactsOpener(Protocol):
    """`crlbuilder.seal.FactsCipher`'s opening (a test may give its own)."""

    def open(self, status_key: bytes, sealed: bytes) -> FourFacts: ...


class FactsUnopened(Exception):
    """The facts key given does not open a holder's sealed facts (another store's key, or
    the value damaged). Names no holder and no certificate."""


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


FactsState = Literal["opened", "sealed", "not-kept", "damaged", "none"]


class Certificate(msgspec.Struct, frozen=True, kw_only=True):
    """One certificate of the holder, as the store holds it."""

    family: str
    """`crlbuilder.model.Family` value (sign-card, sign-mobile, auth-card, auth-mobile,
    verifier-token)."""
    issuer: str
    """The issuer generation's id (``sign-card-g2``); ``index:N`` for one the table lacks."""
    serial: str
    """Hex, as the /v1 services write serials."""
    not_before: str
    not_after: str
    state: Literal["good", "expired", "revoked", "erased"]
    """``revoked``: lost effect by a record (失効); ``erased``: lost effect, and the record
    of it passed its retention and was erased (Ord §70(1)(iii)); ``expired``: past its
    notAfter without losing effect otherwise."""
    category: str | None = None
    """The revocation record's category (失効事由, `crlbuilder.model.Category`)."""
    article: str | None = None
    """The article that category cites for this family."""
    reason: str | None = None
    """RFC 5280 CRLReason name."""
    lost_effect_at: str | None = None
    """When it lost effect (revocationTime); absent once erased without its time."""
    recorded_at: str | None = None
    """When the record that took it was recorded (its CRL entry's; the retention counts
    from it)."""
    lapse_due: str | None = None
    """A pending 30-day lapse (Act §31(2)) takes it then unless a move-in notice comes first."""
    facts: FourFacts | None = None
    """The four facts (基本4情報) kept for a sign certificate still in effect (Act §18(3))."""
    facts_state: FactsState = "none"
    """``opened`` (in ``facts``), ``sealed`` (kept, no facts key given), ``not-kept`` (a sign
    certificate whose facts were deleted: it lost effect), ``damaged`` (kept, and the key
    that opens the holder's other facts does not open these: the value is damaged),
    ``none`` (no facts: an auth or token certificate)."""


class Consent(msgspec.Struct, frozen=True, kw_only=True):
    """A consent (同意) the holder gave a party to receive 特定署名用電子証明書記録情報 (Act §18(3))."""

    verifier: str
    recorded_at: str


class Withdrawal(msgspec.Struct, frozen=True, kw_only=True):
    """A withdrawal of the holder's consent to a party, kept so that a grant made before it and
    read after it grants nothing (rules 9, `crlbuilder.consentkept`)."""

    verifier: str
    recorded_at: str


class MoveOutNotice(msgspec.Struct, frozen=True, kw_only=True):
    """The holder's last move-out notice (転出届) kept (Act §31(2))."""

    record_id: str
    notified_at: str
    planned_date: str
    abroad: bool
    """A 国外転出届 (Act §12(2))."""
    lapse_due: str
    """When its 30-day lapse falls due, or fell due."""
    lapsed_at: str | None = None
    """When the lapse was written; absent while it is pending."""


class MoveInNotice(msgspec.Struct, frozen=True, kw_only=True):
    """A move-in notice (転入届) the builder keeps for the holder's records read later."""

    notified_at: str
    ended_move_out_made_at: str | None = None


class Kept(msgspec.Struct, frozen=True, kw_only=True):
    """A resident change (異動) or 30-day lapse that took the holder's card certificates,
    kept for the holder's records read later (instants and flags only)."""

    at: str
    """When the change was recorded, or the lapse written."""
    took_sign_card: bool
    took_auth_card: bool
    lapse_due: str | None = None
    """For a lapse (Act §31(2)): when it fell due."""
    spared_from: str | None = None
    spared_to: str | None = None
    """A 国外転出届's window (Act §12(2), §31(2)): certificates issued in it were spared."""


class Disclosure(msgspec.Struct, frozen=True, kw_only=True):
    """What the store holds about one holder (Act §58), as of one store view."""

    document: str
    holder: str
    """The holder key (hex) disclosed."""
    made_at: str
    """When the document was made."""
    store_commit: int
    store_committed_at: str | None
    """The store's state read: its last commit and when it was written."""
    exists: bool
    """False: the store holds nothing about the holder (Act §58(1): その旨)."""
    certificates: list[Certificate]
    consents: list[Consent]
    withdrawals: list[Withdrawal]
    move_out_notice: MoveOutNotice | None
    move_ins: list[MoveInNotice]
    changes_kept: list[Kept]
    notes: list[str]


def holder_of(text: str) -> bytes:
    """The 32-byte holder key of its 64 hex digits (as records write it, any case);
    ValueError saying what is expected (never the text itself: it names a person)."""
    t = text.strip()
    if len(t) == 2 * sf.HOLDER_BYTES and all(c in "0123456789abcdefABCDEF" for c in t):
        return bytes.fromhex(t)
    raise ValueError(f"a holder is {2 * sf.HOLDER_BYTES} hex digits (docs/records.md)")


def _issuer_names(view: StoreReader) -> Callable[[int], str]:
    table = {i.index: i.id for i in view.issuers()}
    return lambda index: table.get(index, f"index:{index}")


def _certificate(
    view: StoreReader, key: bytes, st: sf.StatusRecord, issuer: str, at: int,
    opener: FactsOpener | None,
) -> Certificate:  # fmt: skip
    family = st.family_enum
    _, serial = sf.split_status_key(key)
    if st.erased:
        state: Literal["good", "expired", "revoked", "erased"] = "erased"
    elif st.revoked:
        state = "revoked"
    else:
        state = "expired" if expired_at(st.not_after, at) else "good"
    cat = st.category_enum
    entry = view.revoked_entry(key) if st.revoked else None
    due = view.lapse_due(st) if state == "good" else 0
    facts: FourFacts | None = None
    facts_state: FactsState = "none"
    if family in (Family.SIGN_CARD, Family.SIGN_MOBILE):
        sealed = view.sealed_facts(key)
        if sealed is None:
            facts_state = "not-kept"
        elif opener is None:
            facts_state = "sealed"
        else:
            try:
                facts = opener.open(key, sealed)
                facts_state = "opened"
            except (InvalidTag, msgspec.DecodeError):  # `disclose` tells a key from damage
                facts_state = "damaged"
    return Certificate(
        family=family.value,
        issuer=issuer,
        serial=format(serial, "x"),
        not_before=_iso(st.not_before),
        not_after=_iso(st.not_after),
        state=state,
        category=cat.value if cat is not None else None,
        article=cat.articles.get(family) if cat is not None else None,
        reason=st.reason_enum.name if st.revoked and not st.erased else None,
        lost_effect_at=_iso(st.revoked_at) if st.revoked and st.revoked_at else None,
        recorded_at=_iso(entry.recorded_at) if entry is not None else None,
        lapse_due=_iso(due) if due else None,
        facts=facts,
        facts_state=facts_state,
    )


def _move_out(p: sf.PendingMoveOut) -> MoveOutNotice:
    due = rules.move_out_lapse(date.fromisoformat(p.planned_date))
    return MoveOutNotice(
        record_id=p.record_id,
        notified_at=_iso(p.notified_at),
        planned_date=p.planned_date,
        abroad=p.abroad,
        lapse_due=_iso(int(due.timestamp())),
        lapsed_at=_iso(p.lapsed_at) if p.lapsed_at else None,
    )


def _kept(t: sf.Taken) -> Kept:
    return Kept(
        at=_iso(t.at),
        took_sign_card=t.sign,
        took_auth_card=t.auth,
        lapse_due=_iso(t.lapse_due) if t.lapse_due else None,
        spared_from=_iso(t.spared_from) if t.spared_from else None,
        spared_to=_iso(t.spared_to) if t.spared_to else None,
    )


def disclose(
    view: StoreReader, holder: bytes, *, at: int, opener: FactsOpener | None = None
) -> Disclosure:
    """Everything ``view`` holds about ``holder`` (32 bytes), as of ``at`` (epoch seconds:
    whether a certificate not revoked has expired). ``opener`` opens the sealed four facts
    (None: they are reported ``sealed``); `FactsUnopened` when it opens none of them (the
    wrong key), while one that opens some reports the others ``damaged``; `StoreCorrupt` for
    a link to another holder's certificate."""
    if len(holder) != sf.HOLDER_BYTES:
        raise ValueError(f"a holder key is {sf.HOLDER_BYTES} bytes")
    issuer = _issuer_names(view)
    certificates: list[Certificate] = []
    for family in Family:
        for key in view.holder_certs(holder, family):
            st = view.status(key)
            if st is None:  # a link no status record backs: nothing to say of it
                continue
            if st.holder != holder:  # never another holder's certificate, whatever the link
                raise sf.StoreCorrupt(
                    "the store is damaged: a link names a certificate of another holder; "
                    "restore it from a copy or rebuild it; nothing disclosed"
                )
            index, _ = sf.split_status_key(key)
            certificates.append(_certificate(view, key, st, issuer(index), at, opener))
    states = {c.facts_state for c in certificates}
    if "damaged" in states and "opened" not in states:
        raise FactsUnopened(
            "the facts key given does not open the holder's sealed four facts (another "
            "store's key?); nothing disclosed"
        )
    consents = [Consent(verifier=v, recorded_at=_iso(t)) for v, t in view.consents_of(holder)]
    withdrawals = [
        Withdrawal(verifier=v, recorded_at=_iso(t)) for v, t in view.withdrawals_of(holder)
    ]
    pending = view.pending(holder)
    move_ins = [
        MoveInNotice(
            notified_at=_iso(m.notified_at),
            ended_move_out_made_at=_iso(m.ended) if m.ended else None,
        )
        for m in view.move_ins(holder)
    ]
    kept = [_kept(t) for t in view.taken(holder)]
    commit, _ = view.generation()
    committed = view.committed_at()
    return Disclosure(
        document=DOCUMENT,
        holder=holder.hex(),
        made_at=_iso(at),
        store_commit=commit,
        store_committed_at=_iso(committed) if committed else None,
        exists=bool(certificates or consents or withdrawals or pending or move_ins or kept),
        certificates=certificates,
        consents=consents,
        withdrawals=withdrawals,
        move_out_notice=_move_out(pending) if pending is not None else None,
        move_ins=move_ins,
        changes_kept=kept,
        notes=list(NOTES),
    )


def encode(doc: Disclosure) -> bytes:
    """The document as one JSON object and a newline (UTF-8, the Japanese left as it is)."""
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
