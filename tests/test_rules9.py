"""Rules 9 on the record stream, from its first message of release 1.9
(`crlbuilder.release.RULES_9`): a holder's consents (同意, Act §18(3)) decided by the latest
recordedAt, grant or withdrawal (a withdrawal kept), and erased past their rule
(`crlbuilder.consentkept`). Before that message a node, live or replaying, decides as rules 8
did and erases no consent, as the nodes of 1.8 did not; the records of rules 9 themselves are in
tests/test_consent_expiry.py."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

from crlbuilder import apply, consentkept, release, rules
from crlbuilder.apply import Applier, epoch, from_epoch
from crlbuilder.ingest import Located
from crlbuilder.manifest import Manifest
from crlbuilder.model import Consent, Family, FourFacts, Issuance, Record, Sex
from crlbuilder.periods import kept_until
from crlbuilder.store import format as sf
from crlbuilder.store.writer import Commit
from crlbuilder.stream import Delivered, rules9_from
from crlbuilder.verifiers import Verifiers
from tests.support.store import dump_store, node_state
from tests.test_apply import H1, World, two_holders, world
from tests.test_consent_expiry import LONGEST, consent, retention
from tests.test_consent_expiry import T0 as T0A
from tests.test_tokenrevocation import _feed, _quarantined
from tests.test_tokens import T0, pki  # noqa: F401  (its fixture)
from tests.test_tokens import World as Node

FACTS = FourFacts(name="試験 花子", sex=Sex.FEMALE, birth_date="319800915", address="東京都1-1")
OLD, NEW = str(release.RULES_8), str(release.RULES_9)
BANK = Verifiers(eligible=frozenset({"bank"}))
DAY = 86_400

__all__ = ["world"]


def test_rules9_from_finds_the_first_message_of_1_9() -> None:
    def d(seq: int, rel: str | None) -> Delivered:
        return Delivered(seq=seq, item=None, at=T0, end=True, pending=0, release=rel)

    assert rules9_from([d(1, "1.8"), d(2, "1.9"), d(3, "1.8")]) == release.FirstOf(0, 2)
    assert rules9_from([d(1, None), d(2, "1.8")]) == release.FirstOf(0, None)


END = rules.end_of_day_utc(date(T0.year + 2, 9, 15))  # before the 5th birthday after
"""The notAfter of every sign-card certificate `issued` here."""
BEGAN = T0 - timedelta(days=60)
"""When every certificate `issued` here was issued and began."""


def issued(n: int, holder: str) -> Issuance:
    """The holder's sign-card certificate, serial ``n``, from `BEGAN` to `END`."""
    return Issuance(id=f"i-{n}", recorded_at=BEGAN, serial=n, family=Family.SIGN_CARD,
                    issuer="sign-card-g1", not_before=BEGAN, not_after=END, holder=holder,
                    facts=FACTS)  # fmt: skip


def said(n: int, holder: str, days: int, granted: bool) -> Consent:
    """The holder's grant (``granted``) or withdrawal to the bank, ``days`` before T0."""
    return Consent(id=f"c-{n}", recorded_at=T0 - timedelta(days=days), holder=holder,
                   verifier="bank", granted=granted)  # fmt: skip


def _holders(withdrawn: str, moved: str, base: int) -> list[Record]:
    """Holder ``withdrawn``: granted 30 days before T0, withdrawn 20 days before, then a grant of
    25 days before read last; holder ``moved``: granted 10 days before T0, then a grant of 40
    days before read last. Each holds a sign-card certificate."""
    return [
        issued(base, withdrawn),
        issued(base + 1, moved),
        said(base, withdrawn, 30, True),
        said(base + 1, withdrawn, 20, False),
        said(base + 2, withdrawn, 25, True),  # recorded before the withdrawal, read after it
        said(base + 3, moved, 10, True),
        said(base + 4, moved, 40, True),  # recorded before the grant kept, read after it
    ]


def _kept(node: Node, holder: str) -> tuple[int | None, int | None]:
    with node.builder.store.read() as r:
        h = bytes.fromhex(holder)
        return r.consent(h, "bank"), r.withdrawal(h, "bank")


def test_rules9_from_the_streams_first_1_9_message(
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same records of two pairs of holders on the record stream, one before its first 1.9
    message (the upgraded signer's tick) and one after it (still under the feed's 1.8 header:
    the stream's order decides). Before it, as the nodes of 1.8 decided: the grant read after the
    withdrawal grants the consent again, and the older grant read last moves the consent's time
    back; after it, the withdrawal is kept and the older grant grants nothing, and the consent
    keeps its later time. A node that applied the stream live (restarted between batches) and
    one replaying it from its start hold the same bytes, the flag at the same message."""
    at = T0 + timedelta(hours=1)

    def d(seq: int, rec: Record | None, rel: str | None) -> Delivered:
        item = None if rec is None else Located("feed.jsonl", seq, rec)
        return Delivered(seq=seq, item=item, at=at + timedelta(seconds=seq), end=True,
                         pending=0, release=rel)  # fmt: skip

    before = _holders("a1" * 32, "b1" * 32, 700)
    stream = [d(n + 1, r, OLD) for n, r in enumerate(before)]
    flag_at = len(stream) + 1
    stream.append(d(flag_at, None, NEW))  # the upgraded signer's first tick: the flag
    stream += [
        d(flag_at + 1 + n, r, OLD) for n, r in enumerate(_holders("a2" * 32, "b2" * 32, 800))
    ]
    (tmp_path / "live").mkdir()
    (tmp_path / "replay").mkdir()
    live, replay = Node(tmp_path / "live", pki), Node(tmp_path / "replay", pki)
    replay.builder.key = live.builder.key  # the nodes of one stream share the facts key
    try:
        for n in range(1, len(stream) + 1):  # live: the stream as it grew
            _feed(live, stream[:n], restart=True, verifiers=BANK)
        _feed(replay, stream, restart=False, verifiers=BANK)  # later, from the stream's start
        ago = {n: int((T0 - timedelta(days=n)).timestamp()) for n in (10, 20, 25, 40)}
        for w in (live, replay):
            assert _kept(w, "a1" * 32) == (ago[25], None)  # rules 8: granted again
            assert _kept(w, "b1" * 32) == (ago[40], None)  # rules 8: moved back
            assert _kept(w, "a2" * 32) == (None, ago[20])  # rules 9: withdrawn, kept
            assert _kept(w, "b2" * 32) == (ago[10], None)  # rules 9: the later time
        states = [node_state(w.builder.store) for w in (live, replay)]
        assert states[0] == states[1]
        assert dump_store(live.builder.store, meta=[sf.META_RULES9_FROM])["meta"] == [
            (sf.META_RULES9_FROM, sf.pack_u64(flag_at))
        ]
    finally:
        live.builder.close()
        replay.builder.close()


def test_on_the_stream_consents_are_erased_only_from_its_first_1_9_message(
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A holder's consent long past its rule (`crlbuilder.consentkept`): ticks of the 1.8 signer
    erase nothing of it, on a live node and on a node replaying them later, as the nodes of 1.8
    erased nothing (or, by their build, something else); the 1.9 signer's first tick sets the
    flag (its erasure runs before its batch, so still none), and the tick after it erases the
    consent on every node: the agenda made before the flag listed no consents, so that erasure
    scans again."""
    (tmp_path / "live").mkdir()
    (tmp_path / "replay").mkdir()
    live, replay = Node(tmp_path / "live", pki), Node(tmp_path / "replay", pki)
    replay.builder.key = live.builder.key
    records = _holders("a1" * 32, "b1" * 32, 700)
    issued = records[1]
    assert isinstance(issued, Issuance)
    longest = consentkept.longest_sign_period(live.builder.cfg.crl.retention_period_days)
    due = kept_until(int(issued.not_after.timestamp()), longest)
    ticks_at = datetime.fromtimestamp(due, T0.tzinfo) + timedelta(days=1)

    def d(seq: int, rec: Record | None, rel: str | None, when: datetime) -> Delivered:
        item = None if rec is None else Located("feed.jsonl", seq, rec)
        return Delivered(seq=seq, item=item, at=when, end=True, pending=0, release=rel)

    stream = [d(n + 1, r, OLD, T0 + timedelta(seconds=n)) for n, r in enumerate(records)]
    n = len(stream)
    stream += [d(n + 1, None, OLD, ticks_at), d(n + 2, None, OLD, ticks_at + timedelta(hours=1))]
    flag_at = n + 3
    stream.append(d(flag_at, None, NEW, ticks_at + timedelta(hours=2)))
    stream.append(d(flag_at + 1, None, NEW, ticks_at + timedelta(hours=3)))
    try:
        for k in range(1, len(stream) + 1):
            _feed(live, stream[:k], restart=True, verifiers=BANK)
            if k == flag_at:  # every tick of 1.8, and the flag's own: nothing erased
                assert _kept(live, "b1" * 32)[0] is not None
        assert _kept(live, "b1" * 32) == (None, None)
        assert _kept(live, "a1" * 32) == (None, None)  # the consent rules 8 granted again, too
        _feed(replay, stream[:flag_at], restart=False, verifiers=BANK)
        assert node_state(replay.builder.store)["consents"] != []  # as 1.8 left it
        _feed(replay, stream, restart=False, verifiers=BANK)
        assert node_state(live.builder.store) == node_state(replay.builder.store)
    finally:
        live.builder.close()
        replay.builder.close()


def test_an_erasure_on_the_stream_before_the_flag_erases_no_consent(world: World) -> None:
    """`Applier.erase_past_retention` with ``stream``: before the store's rules 9 flag, no
    consent is erased however long past its rule, and no withdrawal; its agenda's digest is not
    the one after the flag, so the first erasure after it scans and erases them."""
    two_holders(world)
    world.apply([consent(H1, 5, "c-1")])
    due = kept_until(T0A + 300 * DAY, LONGEST)
    ap = world.apply([])
    ap.erase_past_retention(due + DAY, retention, keep_time=False, agenda=True, stream=True)
    assert ap.summary.consents_erased == 0
    # its agenda, of the listing before rules 9, is trusted: the next erasure is not "at once"
    # (the tick publisher would tick, and scan, every second)
    after = apply.next_erasure(world.store, retention)
    assert after is None or epoch(after) > due + DAY, after
    with Commit(world.store, lambda: from_epoch(due)) as c:
        c.put_rules9_from(42)
    ap = Applier(world.store, facts_key=bytes(32), quarantine=world.quarantine)
    ap.erase_past_retention(due + DAY + 1, retention, keep_time=False, agenda=True, stream=True)
    assert ap.summary.consents_erased == 1
    assert (ap.summary.erased, ap.summary.commits) == (0, 1)  # a commit: the node refreshes


def test_a_withdrawal_before_the_holders_issuance_the_erasure_and_the_grants_bound_across_1_9(
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Another crossing of the 1.9 boundary, live against replaying: a withdrawal read before
    its holder's issuance is refused before the flag (rules 8: the older grant read after the
    issuance grants) and kept after it (the older grant grants nothing); years later a tick
    erases the consent rules 8 left and the withdrawal kept, which raises the grants' bound, and
    a grant older than it read next is refused as read too late. Both nodes refuse the same
    records for the same reasons, hold the same bytes and the same bound."""
    seq = 0
    stream: list[Delivered] = []

    def put(rec: Record | None, rel: str, when: datetime) -> None:
        nonlocal seq
        seq += 1
        item = None if rec is None else Located("feed.jsonl", seq, rec)
        stream.append(Delivered(seq=seq, item=item, at=when, end=True, pending=0, release=rel))

    x, y = "c1" * 32, "c2" * 32
    now = T0 + timedelta(hours=1)
    for n, rec in enumerate([said(1, x, 20, False), issued(901, x), said(2, x, 30, True)]):
        put(rec, OLD, now + timedelta(seconds=n))
    put(None, NEW, now + timedelta(minutes=1))  # the flag
    for n, rec in enumerate([said(3, y, 20, False), issued(902, y), said(4, y, 30, True)]):
        put(rec, OLD, now + timedelta(minutes=2, seconds=n))
    (tmp_path / "live").mkdir()
    (tmp_path / "replay").mkdir()
    live, replay = Node(tmp_path / "live", pki), Node(tmp_path / "replay", pki)
    replay.builder.key = live.builder.key
    try:
        longest = consentkept.longest_sign_period(live.builder.cfg.crl.retention_period_days)
        due = kept_until(int(END.timestamp()), longest)
        tick = datetime.fromtimestamp(due, T0.tzinfo) + timedelta(hours=1)
        put(None, NEW, tick)  # erases x's consent and y's withdrawal
        put(said(5, y, 25, True), OLD, tick + timedelta(seconds=1))  # older than the bound
        late = [_feed(live, stream[:k], restart=True, verifiers=BANK)
                for k in range(1, len(stream) + 1)]  # fmt: skip
        before_tick = len(stream) - 2
        late_replay = _feed(replay, stream[:before_tick], restart=False, verifiers=BANK)
        ago = {n: int((T0 - timedelta(days=n)).timestamp()) for n in (20, 30)}
        assert _kept(replay, x) == (ago[30], None)  # rules 8: refused, then granted
        assert _kept(replay, y) == (None, ago[20])  # rules 9: kept, the grant outranked
        late_replay += _feed(replay, stream, restart=False, verifiers=BANK)
        assert (sum(late), late_replay) == (1, 1)
        assert [_quarantined(w) for w in (live, replay)] == [
            ["no certificate of this holder (issuance record missing?)", consentkept.LATE_GRANT]
        ] * 2
        for w in (live, replay):
            assert _kept(w, x) == (None, None) and _kept(w, y) == (None, None)
        assert node_state(live.builder.store) == node_state(replay.builder.store)
        meta = [sf.META_RULES9_FROM, sf.META_GRANTED_BEFORE]
        dumps = [dump_store(w.builder.store, meta=meta)["meta"] for w in (live, replay)]
        assert dumps[0] == dumps[1] and len(dumps[0]) == 2
    finally:
        live.builder.close()
        replay.builder.close()
