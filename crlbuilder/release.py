"""A builder's release on the record stream, defined once, and what a node does with another's.

Every node's builder applies the same record stream to its own store, and the nodes hold the
same bytes only while they apply it by the same rules into the same layout (`crlbuilder.stream`).
What may differ between two builds of jpki-va in that respect is one `Release`, two numbers:

- ``format``: the store's format (`STORE_FORMAT`, which `crlbuilder.store.format` names
  ``FORMAT_VERSION``), bumped on any incompatible change of the layout; a store of another
  format does not open at all;
- ``rules``: `RULES`, bumped whenever a builder writes other bytes than the release before it
  from the same stream while the format stays: a rule of `crlbuilder.apply` or
  `crlbuilder.periods` (what a record takes, when a lapse or an erasure falls due), a value
  of a builder's own table (the ``taken`` entries' sixth element), what a tick writes.

A release is written beside what a builder puts where another node reads it: the ``Jpki-Release``
header of every message published on the record stream (records by ``crlbuilder publish``,
ticks by the signer's builder) and the description of every store snapshot. A message
without the header was published by a release before this one (`BEFORE`).

What a node does (`refusal`, sans-I/O): something written by a newer release than its own is
refused, nothing applied (it cannot know the newer rules: applying the newer signer's ticks by
older rules would write other bytes, silently); something written by the same or an older
release is taken (records are records, whoever published them; a tick is applied by this
node's rules). Hence the order of a rolling upgrade (docs/operations.md, "Upgrading the nodes
of one stream"): every node that does not publish first (the non-signer nodes, one at a time),
then the signer node, whose ticks carry the new release from its restart, then the feed's
``crlbuilder publish``. Upgraded the other way round, each node still on the older release
stops at the first newer message, loudly, before that batch, and resumes there once upgraded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NamedTuple

HEADER: Final = "Jpki-Release"
"""The header of a record stream message naming the release that published it."""

STORE_FORMAT: Final = 1
"""The store's format version (`crlbuilder.store.format.FORMAT_VERSION`, whose module says what
it covers); a bump is a new release too."""

RULES: Final = 9
"""This build's rules version; bump it with any change named above (and say here what changed):
tests/test_release_rules.py keeps a digest of what the rules make of fixed records per value
and fails when it moves under the same one.
1: every release before the header existed (they differed among themselves, e.g. in the
``taken`` entries and in counting retention from the day after the record's, 初日不算入, and
cannot be told apart on the stream). 2: the first to carry the header. 3: the erasure past
retention (at a stream's ticks) also erases lapsed move-out notices (`crlbuilder.lapsed`), lists
them on the retention agenda (another digest in its state) and a lapse lowers its watermark.
4: the erasure past retention also erases the holders' kept changes, lapses (``taken``) and
move-ins (``moveins``) once no rule needs them (`crlbuilder.keptfor`), lists their holders on the
agenda (another digest), and keeping an entry lowers its watermark.
5: each applied record id keeps a digest of the record's content beside its commit (the
``applied`` values grow from 4 to 20 bytes, `crlbuilder.recorddigest`), and a record read again
under an applied id with other content is refused and quarantined, not skipped (an id applied by
an earlier release, with no digest, is still skipped); and the record stream carries the token
records the signer's builder writes (``token-issued``, ``token-revoked``, `crlbuilder.tokens`;
a ``token-issued`` carries the token certificate, which every node checks against the token
issuer's certificate before it records the token, `crlbuilder.tokencert`), which every node
applies as a token's status (a node of release 4 would quarantine them as unknown records, other
bytes: it stops before them instead).
6: a record made before what an erasure past retention may have erased is refused as read too
late (`crlbuilder.lateness`: each erasure that erases anything records its bound in the store,
meta ``erased-state``), where a node of release 5 applied it without what went; a move-out
notice whose planned date is more than 14 days before the day it was made or more than a year
on is refused (`rules.planned_date_refusal`); on the record stream both from its first message
of release 1.6 (the flag below: a node replaying the stream judges what comes before it as
release 5 did, and writes no lateness bound at the erasures before it); and
a ``token-revoked`` record is applied only with the token issuer's signature over what it
says (its ``signature``, `crlbuilder.tokenrevocation`), else quarantined, once the store holds
the stream's first message of release 1.6 or later (`SIGNS_TOKEN_REVOCATIONS`, a flag in the
store, `crlbuilder.store.format.META_TOKEN_SIGNATURES`, set in that message's batch); before it,
an unsigned one is applied as release 5 applied it (its signer wrote none), so a node replaying
the stream from its start revokes what the nodes of release 5 revoked. A node of release 5
would quarantine a signed one as bearing an unknown field: it stops before the release 6
signer's messages instead.
7: a mobile certificate's issuance is bounded by its card certificate's end alone (Act §16-4,
§35-4; the seed Ordinance sets no period for mobiles), no longer also by the 5th birthday after
its own issuance (6th on a borne-out ``renewal``), a card rule (Ord §13(1), §49(1)): a mobile
certificate issued against a renewed card certificate and ending with it is applied, where a
node of rules 6 refused it; and a certificate is in effect through its notAfter's own second
(RFC 5280 §4.1.2.5; Ord §13: to the end of its last day), so a loss of effect recorded in it (a
request, a change, a lapse, a compromise, a cascade) takes it, where rules 6 held it expired
(`rules.in_effect_at`). On the record stream from its first message of release 1.7
(`RULES_7`, a flag in the store, `crlbuilder.store.format.META_RULES7_FROM`, set in that
message's batch, as rules 6's): a node replaying the stream judges what comes before it as
rules 6 did.
8: a mobile certificate that a card certificate's loss of effect cascades to (Act §16-13,
§35-13) is never revoked before its own notBefore: one that began after the card lost effect
(its issuance record read before that loss's record) is revoked at its notBefore, and one that
outlives the card (so was issued against a later card certificate, Act §16-4, §35-4) is not
taken by it, where rules 7 revoked both at the card's instant (`Applier._revoke`); and an
auth-mobile issuance needs a sign-card certificate of the holder in effect at its notBefore
(Act §35-2(1): only a 署名利用者 applies; §35-2(3): the application is signed with a
個人番号カード用署名用電子証明書 that has not lost effect under §15(1)), else it is refused, as
the sign-mobile one's card check is (Act §16-2(3)), where rules 7 applied it
(`Applier._check_signer`). On the record stream from its first message of release 1.8
(`RULES_8`, `crlbuilder.store.format.META_RULES8_FROM`, set in that message's batch as rules
7's): a node replaying the stream judges what comes before it as rules 7 did.
9: a holder's consent (同意, Act §18(3)) to a verifier is decided by the latest recordedAt,
grant or withdrawal, whatever order the records are read in (`Applier._consent`): a withdrawal
is kept (``withdrawals``: its recordedAt per holder and verifier, a tombstone) until the instant a
consent recorded then would be erased (`crlbuilder.consentkept`), and a grant recorded no later
than the withdrawal kept grants nothing, where rules 8 granted the consent again (a withdrawal
left no trace), and a withdrawal read before any certificate of its holder is kept too, where
rules 8 refused it (a grant it outranks, read after the issuance, granted); a grant older than the consent kept leaves its time as it is, where rules 8 moved
it back; a grant whose own erasure would have fallen due by the store's latest erasure of consents
is refused as read too late (`crlbuilder.store.format.META_GRANTED_BEFORE`), the bound that keeps
a grant older than an erased withdrawal from granting; and consents and withdrawals are erased
past their rule at an erasure past retention. On the record stream all of it from its first
message of release 1.9 (`RULES_9`, `crlbuilder.store.format.META_RULES9_FROM`, set in that
message's batch as rules 8's), the erasure of consents included: a node replaying the stream
judges what comes before it as rules 8 did and erases no consent at the ticks before it (1.8
builds before the consents' erasure erased none, later ones erased them, and the stream cannot
tell the two apart; the first erasure after the message erases the backlog on every node)."""


@dataclass(frozen=True, slots=True)
class Release:
    """What a builder writes from the stream: the store format and the rules version."""

    format: int
    rules: int

    def __str__(self) -> str:
        return f"{self.format}.{self.rules}"

    def newer_than(self, other: Release) -> bool:
        """Something written by ``self`` cannot be applied by ``other``: ordered by the format,
        then the rules (a new format may count its rules from 1 again; it is still newer than
        every release of the format before, and never are both of two releases newer)."""
        return (self.format, self.rules) > (other.format, other.rules)


CURRENT: Final = Release(STORE_FORMAT, RULES)
"""This build's release (read as ``release.CURRENT`` where used: one place to change)."""

SIGNS_TOKEN_REVOCATIONS: Final = Release(1, 6)
"""The first release whose signer signs each ``token-revoked`` record it publishes: a message
of the record stream written by it or a later one tells every node that the stream's signer
signs them, and from that message on an unsigned revocation is refused
(`crlbuilder.stream.token_signatures`)."""

RULES_7: Final = Release(1, 7)
"""The first release of rules 7: a message of the record stream written by it or a later one
tells every node that the stream's publishers apply rules 7, and from that message on the
records are judged by them (`crlbuilder.stream.first_of`, `crlbuilder.apply._Batch.rules7`)."""


RULES_8: Final = Release(1, 8)
"""The first release of rules 8: from a record stream's first message written by it or a later
one, the records are judged by them (`crlbuilder.stream.first_of`,
`crlbuilder.apply._Batch.rules8`)."""


RULES_9: Final = Release(1, 9)
"""The first release of rules 9: from a record stream's first message written by it or a later
one, consents are decided by the latest recordedAt and erased past their rule
(`crlbuilder.stream.first_of`, `crlbuilder.apply._Batch.rules9`)."""


class FirstOf(NamedTuple):
    """Where, in one batch of the record stream, the first message written by a given release
    or a later one stands (`crlbuilder.stream.first_of`)."""

    before: int
    """The batch's records (ticks left out) before that message: judged as the releases before
    it judged them, unless the store's flag for it is set already."""
    first: int | None
    """That message's stream sequence, which sets the store's flag; None: the batch has none."""


BEFORE: Final = Release(1, 1)
"""The release of a message or snapshot that names none (written before the header)."""

_TEXT: Final = re.compile(r"([0-9]{1,6})\.([0-9]{1,6})")


class ReleaseError(ValueError):
    """A release that cannot be read (a header or description altered, or not ours)."""


def parse(text: str | None) -> Release:
    """The release ``text`` names (``FORMAT.RULES``); `BEFORE` when absent; `ReleaseError`
    when it is there but unreadable."""
    if text is None or text == "":
        return BEFORE
    m = _TEXT.fullmatch(text.strip())
    if m is None:
        raise ReleaseError(f"unreadable release {text[:40]!r} (expected FORMAT.RULES)")
    return Release(int(m.group(1)), int(m.group(2)))


def refusal(what: str, theirs: str | None, ours: Release | None = None) -> str | None:
    """Why this node must not apply ``what`` (a one-line reason, naming the way out), or None
    when it may: ``theirs`` is the release text it carries (None: none, an older release)."""
    ours = ours if ours is not None else CURRENT
    try:
        r = parse(theirs)
    except ReleaseError as e:
        return (
            f"{what} carries an {e}: not applied; no release wrote it: find its publisher, "
            "publish its record again, then delete the message (docs/operations.md, "
            "'JpkiVaStreamRefused')"
        )
    if r.newer_than(ours):
        return (
            f"{what} was written by release {r}, newer than this node's {ours}: not applied; "
            "upgrade this node (non-signer nodes first, then the signer, then the publisher: "
            "docs/operations.md, 'Upgrading the nodes of one stream')"
        )
    return None


def store_refusal(written_by: str | None, ours: Release | None = None) -> str | None:
    """Why a builder of release ``ours`` must not write a store that names ``written_by`` as the
    newest release that wrote it (`crlbuilder.store.format.META_WRITTEN_BY`), or None when it
    may: a newer one (a rollback of the package) would have its rules undone by older ones, a
    consent the holder withdrew granted again by rules 8 among them; a name that is no release is
    a damaged store."""
    ours = ours if ours is not None else CURRENT
    try:
        theirs = parse(written_by)
    except ReleaseError as e:
        return f"the store names an {e} as the release that wrote it: a damaged store"
    if theirs.newer_than(ours):
        return (
            f"the store was written by release {theirs}, newer than this builder's {ours}: not "
            "written (older rules would undo what the newer applied); run the newer release, "
            "or restore the store's backup from before the upgrade (docs/operations.md, "
            "'Going back to an earlier release')"
        )
    return None


def stamps(written_by: str | None, ours: Release | None = None) -> bool:
    """Whether a builder of release ``ours`` names itself as the newest that wrote a store that
    names ``written_by`` (`store_refusal` passed): when ``ours`` is newer, or none is named."""
    ours = ours if ours is not None else CURRENT
    return written_by is None or ours.newer_than(parse(written_by))
