"""GET /v1/changes counts a change once per party (`responder.v1.provision`): a redelivery is
not a new provision (件数, 帳簿 Act §40, Ord §71(4)); and the cursor that says what was counted
is bound to its party (`responder.v1.cursor.seal`). In process, as tests/test_v1_changes.py."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from crlbuilder.store.reader import changes_start
from responder.registry.vocabulary import Method, Service
from responder.v1 import changes, cursor, provision, watchlog, watchsnap
from responder.v1.watchdb import LmdbWatchSet
from responder.v1.watchset import MemoryWatchSet, WatchKeys
from responder.v1.watchsnap import Loading, Seal
from tests.support.pki import Ca, make_ca, rsa_key
from tests.test_policy import NOW
from tests.test_v1_changes import (
    AC,
    COMMITTED,
    SC,
    STORE_ID,
    A,
    Api,
    B,
    C,
    after,
    at,
    ref,
    store,
)
from tests.test_v1_feedpos import FEED, G2, TOKEN, node_a, node_b, nodes, pos, sp

SIGN = ("sig", Service.SIGN_REVOCATION_INFO, Method.JSON)


@pytest.fixture(scope="module")
def cas() -> dict[int, Ca]:
    key = rsa_key()
    return {SC: make_ca("sign-card-g1 CA", key), AC: make_ca("auth-card-g1 CA", key)}


def total(api: Api, party: str = "sig") -> int:
    return sum(n for p, _s, _m, n in api.ledger.counted if p == party)


def serials(got: dict[str, object]) -> list[int]:
    listed = got["changes"]
    assert isinstance(listed, list)
    return [int(c["serial"], 16) for c in listed]


# --- one provision per change delivered the first time ------------------------------------


def test_the_same_change_read_twice_with_the_first_reads_cursor_counts_once(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A party that lost the answer (a crash, a timeout) asks again with the same cursor: it
    gets B again (it needs it), and the ledger counts B once."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, B), ref(SC, C)])
    first = api.sealed(changes_start(3))
    _, got = api.changes(f"cursor={first}&limit=1")
    assert serials(got) == [B] and api.ledger.counted == [(*SIGN, 1)]
    _, again = api.changes(f"cursor={first}&limit=1")
    assert serials(again) == [B] and total(api) == 1  # delivered again, not counted again
    assert api.read(again["cursor"]) == api.read(got["cursor"])
    _, got = api.changes(f"cursor={again['cursor']}")
    assert serials(got) == [C] and total(api) == 2  # what follows is counted, once
    _, got = api.changes(f"cursor={at(3)}")  # even from a cursor issued before binding
    assert serials(got) == [B, C] and total(api) == 2


def test_a_cursor_carries_its_counted_mark_to_another_node(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A fresh cursor's mark is its position (what follows is counted when first delivered).
    A party that retries an older cursor on node a is answered a cursor whose mark is a's
    (all three counted there): read at node b, which has never seen the party, B and C come
    again and are not counted."""
    a, b = nodes(cas, tmp_path, node_a(cas), node_b(cas))
    env = next(e for e in changes._ENVS.values() if e.watchset is a.watchset)
    env.fresh_lag = 15
    a.reader.stream_applied = 10  # node a's position when the party takes the cursor
    _, fresh = a.changes("")
    assert a.read(fresh["cursor"]) == cursor.Bound(sp(0), sp(0))
    a.reader.stream_applied = 20
    _, got = a.changes(f"cursor={fresh['cursor']}")
    assert serials(got) == [A, B, C] and total(a) == 3  # the first delivery of each: counted
    _, again = a.changes(f"cursor={fresh['cursor']}&limit=1")  # the answer lost: a retry
    assert serials(again) == [A] and total(a) == 3
    assert a.read(again["cursor"]) == cursor.Bound(sp(0, 10, 0, A), sp(10, 20, 1, C))
    _, got = b.changes(f"cursor={again['cursor']}")
    assert serials(got) == [B, C] and total(b) == 0  # counted at a: the cursor says so
    _, got = a.changes(f"cursor={got['cursor']}")
    assert got["changes"] == [] and total(a) == 3


def test_a_read_paged_across_nodes_and_read_again_counts_each_change_once(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    a, b = nodes(cas, tmp_path, node_a(cas), node_b(cas))
    cur, cursors = pos(0), []
    for api in (a, b, a):
        cursors.append(cur)
        _, got = api.changes(f"cursor={cur}&limit=1")
        cur = got["cursor"]
    assert total(a) + total(b) == 3
    for api, old in ((a, cursors[0]), (b, cursors[1]), (a, cursors[2])):  # the same reads again
        api.changes(f"cursor={old}&limit=1")
    assert total(a) + total(b) == 3


def test_the_counted_mark_of_this_node_is_kept_across_a_restart_and_hidden_at_rest(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    def open_api() -> Api:
        changes._ENVS.clear()  # a new process
        api = Api(store(cas), tmp_path)
        changes.setup(api.config).watchset = None  # the lists on disk (LMDB)
        return api

    api = open_api()
    api.watch(add=[ref(SC, B), ref(SC, C)])
    _, got = api.changes(f"cursor={at(3)}")
    assert serials(got) == [B, C] and total(api) == 2
    lists = changes.setup(api.config).watchset
    assert isinstance(lists, LmdbWatchSet)
    lists.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "ledger" / "watch").rglob("*.mdb"))
    assert sf.status_key(SC, C) not in raw  # the mark names C: not in clear
    api = open_api()
    _, got = api.changes(f"cursor={at(3)}")
    assert serials(got) == [B, C] and total(api) == 0
    lists = changes.setup(api.config).watchset
    assert isinstance(lists, LmdbWatchSet)
    lists.close()
    changes._ENVS.clear()


def test_a_fresh_cursor_after_a_store_restored_from_an_older_copy_counts_anew(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A store restored from an older copy (the same store id) numbers its next commits as
    the lost ones: this node's mark of the party, ahead of it, must not cover them. The party
    is told to resynchronise (409) and takes a fresh cursor, which resets the mark."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, B), ref(SC, C)])
    _, got = api.changes(f"cursor={at(3)}")
    assert serials(got) == [B, C] and total(api) == 2
    kept, marks, gens = api.watchset.lists, api.watchset.marks, api.watchset.gens

    def restored(**kw: object) -> Api:
        again = Api(store(cas, **kw), tmp_path)
        watchset = again.watchset  # the same watch lists
        watchset.lists, watchset.marks, watchset.gens = kept, marks, gens
        return again

    back = restored(commit=4, lost=[(3, sf.status_key(SC, A))])  # back at commit 4
    resp, _ = back.changes(f"cursor={got['cursor']}")
    assert resp.status == 409
    _, fresh = back.changes("")
    assert back.read(fresh["cursor"]) == cursor.Bound(after(4), after(4))
    remade = restored()  # commits 5 to 7 made again: B and C lose effect at 5 anew
    _, got = remade.changes(f"cursor={fresh['cursor']}")
    assert serials(got) == [B, C] and total(remade) == 2


def test_a_store_restored_from_an_older_copy_leaves_no_change_of_its_new_commits_uncounted(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """F5 (report-aufeedexact.md). A store restored from an older copy keeps its store id and
    numbers its next commits as the lost ones, written later. The party read B and C (commit
    5); the store goes back to commit 4 and makes commit 5 again, in which A loses effect.
    A cursor not ahead of the store meets no 409: neither this node's mark nor the cursor's,
    made in the lost commit 5, may cover A, new in the one made again; and a cursor whose
    position is past the lost commits (it would never deliver A) is told to resynchronise."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, A), ref(SC, B), ref(SC, C)])
    older = api.sealed(changes_start(4))  # kept by the party: its retry after the restore
    carried = api.sealed(changes_start(4), sf.change_key(5, sf.status_key(SC, C)) + b"\x00")
    _, got = api.changes(f"cursor={older}")
    assert serials(got) == [B, C] and total(api) == 2
    past = got["cursor"]  # after commit 7
    lists, marks, gens = api.watchset.lists, api.watchset.marks, api.watchset.gens
    remade_at = int(NOW) - 30  # commit 5 made again after the restore: later than any before

    def restored(node_marks: dict[str, bytes]) -> Api:
        again = Api(
            store(cas, lost=[(3, sf.status_key(SC, A)), (5, sf.status_key(SC, A))],
                  commit_times={**COMMITTED, 5: remade_at}),
            tmp_path,
        )  # fmt: skip
        watchset = again.watchset  # the same watch lists, this node's marks as given
        watchset.lists, watchset.marks, watchset.gens = lists, node_marks, gens
        return again

    node = restored(marks)  # this node's mark, from before the restore
    _, got = node.changes(f"cursor={older}")
    assert serials(got) == [A] and total(node) == 1  # new in the commit made again: counted
    _, again = node.changes(f"cursor={older}")
    assert serials(again) == [A] and total(node) == 1  # and then once only
    other = restored({})  # the cursor's own mark, from before the restore (another node)
    _, got = other.changes(f"cursor={carried}")
    assert serials(got) == [A] and total(other) == 1
    resp, got = other.changes(f"cursor={past}")  # would read on from commit 7: A never given
    assert (resp.status, got["rule"]) == (409, "cursor_ahead"), got


def test_a_cursor_anchored_in_a_lost_commit_that_retention_dropped_since_is_still_refused(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """F5 once retention (``changes_keep_days``) has dropped the anchor's commit. The party
    read B and C; its cursor (after commit 7) is anchored in commit 6. The store is restored
    from an older copy and makes commit 6 again, now revoking A; the party reads nothing for
    a while, and retention drops commit 6 (the horizon: `StoreReader.changes_from`). The
    feed keeps no change at or before the cursor: only the horizon commit's time
    (`sf.META_CHANGES_FROM_AT`) tells the commit 6 the party passed from the one made again.
    Read on, the cursor would never give A (a revocation never given): 409. The same store
    without a restore, its commit 6 dropped alike, reads on (no refusal for retention)."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, A), ref(SC, B), ref(SC, C)])
    _, got = api.changes(f"cursor={api.sealed(changes_start(4))}")
    assert serials(got) == [B, C]
    past = got["cursor"]  # after commit 7, anchored in commit 6
    lists, marks, gens = api.watchset.lists, api.watchset.marks, api.watchset.gens

    def pruned(horizon_at: int) -> Api:
        """The store with every commit up to 6 past retention (its horizon 6, written at
        ``horizon_at``), read with the same watch lists and marks."""
        again = Api(store(cas, lost=[], horizon=6, horizon_at=horizon_at), tmp_path)
        again.watchset.lists, again.watchset.marks, again.watchset.gens = lists, marks, gens
        return again

    resp, got = pruned(COMMITTED[6]).changes(f"cursor={past}")
    assert resp.status == 200 and serials(got) == [], got
    resp, got = pruned(int(NOW) - 30).changes(f"cursor={past}")  # commit 6 made again
    assert (resp.status, got["rule"]) == (409, "cursor_ahead"), got


def test_a_store_cursor_carries_the_anchors_of_its_position_and_mark_under_the_tag() -> None:
    """`cursor.Anchor`: 12 bytes each after the mark, under the HMAC; the longest cursor still
    within `MAX_CURSOR_CHARS`; one issued before anchors is read without them."""
    key = WatchKeys(bytes(range(32))).cursor_key()
    inside = cursor.Position(STORE_ID, sf.change_key(5, sf.status_key(SC, C)) + b"\x00")
    anchors = (cursor.Anchor(5, 1_900_000_000), cursor.Anchor(2**32 - 1, -1))
    for position, mark in ((inside, inside), (after(4), after(3)), (after(4), inside)):
        bound = cursor.Bound(position, mark, gen=b"g" * cursor.GEN_BYTES, anchors=anchors)
        text = cursor.seal(key, "sig", bound)
        assert len(text) <= cursor.MAX_CURSOR_CHARS
        assert cursor.unseal(key, "sig", text) == bound
        before = cursor.seal(key, "sig", bound._replace(anchors=None))
        assert cursor.unseal(key, "sig", before) == bound._replace(anchors=None)
        raw_len = len(text) * 3 // 4
        for at_byte in (raw_len - cursor.TAG_BYTES - 1, raw_len - cursor.TAG_BYTES - 24):
            altered = cursor.unseal(key, "sig", _flip(text, at_byte))  # an anchor altered
            assert altered is cursor.Verdict.NOT_GENUINE
    with pytest.raises(ValueError, match="anchors"):
        cursor.seal(key, "sig", cursor.Bound(sp(10, 20, 0, B), sp(10, 20, 0, B), anchors=anchors))


# --- a cursor bound to its party ---------------------------------------------------------


def _flip(text: str, at_byte: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[at_byte] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def _refused(api: Api, query: str, party: str = "sig") -> None:
    resp, got = api.changes(query, party=party)
    assert resp.status == 400 and got["rule"] == "bad_input" and got["field"] == "$.cursor", got
    assert "not issued to this party" in got["detail"]


def test_an_altered_cursor_or_another_partys_is_refused_and_counts_nothing(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, B), ref(SC, C)])
    api.watch("both", add=[ref(SC, B), ref(SC, C)])
    mine = api.sealed(changes_start(3))
    raised = api.sealed(changes_start(3), mark=changes_start(7))  # as the party would forge it
    forged = cursor.seal(b"k" * 32, "sig", cursor.Bound(after(3), after(7)))  # another key
    assert api.read(raised).mark == after(7)
    # the mark raised in a genuine cursor's bytes; the position lowered within the kept
    # range (a 200 before cursors were bound); a cursor sealed with another key
    n = len(base64.urlsafe_b64decode(mine + "=" * (-len(mine) % 4)))
    for bad in (_flip(mine, n - cursor.TAG_BYTES - 1), _flip(mine, 2 + 17), forged):
        _refused(api, f"cursor={bad}")
    _refused(api, f"cursor={mine}", party="both")  # B's request with A's cursor
    assert api.ledger.counted == []
    _, got = api.changes(f"cursor={mine}")  # the genuine one, by its party
    assert serials(got) == [B, C] and total(api) == 2
    _refused(api, f"cursor={got['cursor']}", party="both")


def test_a_cursor_issued_before_binding_is_read_and_answered_with_a_bound_one(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """Such a cursor has no mark: it cannot spare a change from being counted, so it is read
    (no party needs to resynchronise on an upgrade), and the answer carries a bound cursor."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, B)])
    resp, got = api.changes(f"cursor={at(3)}")
    assert resp.status == 200 and serials(got) == [B] and total(api) == 1
    assert api.read(got["cursor"]).bound
    old = cursor.unseal(api.key(), "sig", at(3))
    assert old == cursor.Bound(after(3), after(3), bound=False)


def test_once_the_transition_is_over_a_cursor_issued_before_binding_is_410(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path, unbound_cursors=False)
    api.watch(add=[ref(SC, B)])
    for old in (at(3), pos(10)):
        resp, got = api.changes(f"cursor={old}")
        assert (resp.status, got["rule"], got["field"]) == (410, "cursor_expired", "$.cursor")
        assert "before cursors were bound" in got["detail"] and "POST /v1/status" in got["detail"]
    resp, got = api.changes(f"cursor={api.sealed(changes_start(3))}")
    assert resp.status == 200 and serials(got) == [B] and total(api) == 1


@pytest.mark.parametrize("transition", [True, False])
def test_each_unbound_cursor_is_told_to_the_metrics_by_party_accepted_or_refused(
    cas: dict[int, Ca], tmp_path: Path, transition: bool
) -> None:
    """The operator ends the transition (``[watch] unbound_cursors`` off) once no party uses
    an unbound cursor any more: each one read (or refused after it) is told to the metrics
    (`WatchEnv.on_unbound`, ``jpkiva_changes_unbound_cursors_total``) with the party's
    registry id; a bound cursor, a fresh one and a malformed one are not."""
    api = Api(store(cas), tmp_path, unbound_cursors=transition)
    told: list[tuple[str, bool]] = []
    changes.setup(api.config).on_unbound = lambda party, accepted: told.append((party, accepted))
    api.watch(add=[ref(SC, B)])
    api.watch(party="both", add=[ref(SC, B)])
    api.changes("")
    api.changes(f"cursor={api.sealed(changes_start(3))}")
    api.changes("cursor=not-a-cursor")
    assert told == []
    resp, _ = api.changes(f"cursor={at(3)}")
    assert resp.status == (200 if transition else 410)
    api.changes(f"cursor={pos(10)}", party="both")
    assert told == [("sig", transition), ("both", transition)]


def test_the_cursor_key_is_derived_from_the_watch_secret_and_not_the_secret() -> None:
    keys = WatchKeys(bytes(range(32)))
    key = keys.cursor_key()
    assert len(key) == 32 and key != bytes(range(32)) and key == keys.cursor_key()
    assert WatchKeys(bytes(range(1, 33))).cursor_key() != key
    bound = cursor.Bound(sp(10, 20, 0, B), sp(10, 20, 1, C))
    text = cursor.seal(key, "sig", bound)
    assert len(text) <= cursor.MAX_CURSOR_CHARS and "=" not in text
    assert cursor.unseal(key, "sig", text) == bound
    assert cursor.unseal(key, "sig2", text) is cursor.Verdict.NOT_GENUINE
    assert cursor.unseal(key, "sig", text[:-1]) is cursor.Verdict.MALFORMED  # not base64
    generation = bound._replace(gen=b"g" * cursor.GEN_BYTES)
    assert cursor.unseal(key, "sig", cursor.seal(key, "sig", generation)) == generation
    with pytest.raises(ValueError, match="generation"):
        cursor.seal(key, "sig", bound._replace(gen=b"g"))
    with pytest.raises(ValueError, match="store or feed"):
        cursor.seal(key, "sig", cursor.Bound(sp(10), cursor.StreamPosition(b"O" * 16, 10)))
    longest = cursor.Bound(
        cursor.StreamPosition(FEED, 2**64 - 2, cursor.Inside(2**64 - 1, 255, bytes(22))),
        cursor.StreamPosition(FEED, 2**64 - 2, cursor.Inside(2**64 - 1, 255, bytes(22))),
    )
    assert len(cursor.seal(key, "p" * 200, longest)) <= cursor.MAX_CURSOR_CHARS


# --- the pure rule -----------------------------------------------------------------------


def test_what_a_stream_mark_covers() -> None:
    mark = sp(10, 20, 1, B)
    assert provision.covers(mark, sp(0, 10, 3, C))  # a batch ending before it
    assert provision.covers(mark, sp(10, 20, 0, C))  # its batch, an earlier commit
    assert provision.covers(mark, sp(10, 20, 1, B))  # the change it names
    assert not provision.covers(mark, sp(10, 20, 1, C))  # after it in its commit
    assert not provision.covers(mark, sp(20, 30, 0, A))  # a later batch
    assert not provision.covers(mark, sp(0, 15, 0, A))  # a batch cut otherwise: counted
    assert provision.covers(sp(20), sp(10, 20, 5, C)) and not provision.covers(sp(20), sp(20, 30))
    fresh, upto = provision.count([sp(10, 20, 1, A), sp(10, 20, 1, C), sp(20, 30, 0, A)], mark)
    assert fresh == [False, True, True] and upto == sp(20, 30, 0, A)
    assert provision.count([sp(0, 10, 0, A)], mark) == ([False], mark)  # a mark never goes back
    assert provision.later(sp(20), mark) == sp(20) and provision.later(mark, sp(10)) == mark
    assert provision.later(sp(10, 20, 0, C), sp(10, 20, 1, A)) == sp(10, 20, 1, A)
    assert sf.StreamGroup(10, 20) == G2 and TOKEN not in (A, B, C)


def test_what_a_store_mark_covers() -> None:
    change = cursor.Position(STORE_ID, sf.change_key(5, sf.status_key(SC, B)) + b"\x00")
    assert provision.covers(after(5), change) and not provision.covers(after(4), change)
    assert provision.covers(change, change)
    later = cursor.Position(STORE_ID, sf.change_key(5, sf.status_key(SC, C)) + b"\x00")
    assert not provision.covers(change, later) and provision.later(change, later) == later


def test_a_snapshot_load_empties_the_lists_and_keeps_the_counted_marks(tmp_path: Path) -> None:
    """The marks are this node's own (not on the watch stream, not in its snapshots): a load
    of the lists from a snapshot, which empties them first, leaves them, under a new
    generation of every list (the lists loaded may hold entries the marks never saw)."""
    lists = LmdbWatchSet(tmp_path / "watch", WatchKeys(bytes(range(32))), map_size=1 << 24)
    mark = cursor.pack(sp(10, 20, 1, C))
    lists.update("sig", [sf.status_key(SC, A)], [], limit=10)
    gens = [lists.generation("sig")]
    lists.count_once("sig", lambda kept, _gen: mark if kept is None else kept + b"?")
    lists.begin_load(Loading(b"seal", 0, 1, 0))
    assert lists.count("sig") == 0
    seen: list[bytes | None] = []
    lists.count_once("sig", lambda kept, gen: seen.append(kept) or gens.append(gen) or mark)
    assert seen == [mark] and gens[1] != gens[0]
    lists.count_once("other", lambda kept, _gen: seen.append(kept) or mark)
    assert seen == [mark, None]  # one mark per party
    lists.close()


def test_fresh_cursors_taken_again_and_again_do_not_read_the_feed_uncounted(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A party that never reads ``POST /v1/status`` and takes a fresh cursor before every read
    is given the changes of the ``max_lag`` records before the node's position each time: the
    first delivery of each must be counted, else polling fresh cursors reads the feed free."""
    (a,) = nodes(cas, tmp_path, node_a(cas))
    env = next(e for e in changes._ENVS.values() if e.watchset is a.watchset)
    env.fresh_lag = 20
    delivered: list[int] = []
    for _ in range(3):
        _, fresh = a.changes("")
        _, got = a.changes(f"cursor={fresh['cursor']}")
        delivered += serials(got)
    assert set(delivered) == {A, B, C}
    assert total(a) == 3  # each change counted once, the first time it was delivered


@pytest.mark.parametrize("kept", ["bound", "unbound"])
def test_a_certificate_watched_after_a_read_is_counted_when_an_older_cursor_delivers_it(
    cas: dict[int, Ca], tmp_path: Path, kept: str
) -> None:
    """A party reads while it watches C only (this node's mark of it passes A and B), then
    watches A and B and reads again from a cursor it kept from before (or a hand-made one of
    before cursors were bound): A and B are delivered to it the first time and are counted
    (and C again: the counted marks are of the list before).
    Else a party would watch one late change, read, watch everything and rewind its cursor
    to be given the kept feed uncounted."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, C)])
    k0 = api.sealed(changes_start(2)) if kept == "bound" else at(2)
    _, got = api.changes(f"cursor={k0}")
    assert serials(got) == [C] and total(api) == 1
    api.watch(add=[ref(SC, A), ref(SC, B)])
    _, got = api.changes(f"cursor={k0}")
    # A and B new; C too, once more: a mark made before an entry was added is not read
    # (it cannot tell which changes it saw watched), an over-count only on such a rewind
    assert serials(got) == [A, B, C] and total(api) == 4
    _, again = api.changes(f"cursor={k0}")
    assert serials(again) == [A, B, C] and total(api) == 4  # now all three were counted


def test_a_mark_carried_in_a_cursor_does_not_cover_a_certificate_watched_since(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A cursor whose mark is past its position (a retry answered on a node whose mark was
    ahead) is kept; the party then watches B: read from that cursor, B is counted."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, A), ref(SC, C)])
    k0 = api.sealed(changes_start(2))
    _, got = api.changes(f"cursor={k0}")
    assert serials(got) == [A, C] and total(api) == 2
    _, first = api.changes(f"cursor={k0}&limit=1")  # the answer lost, asked again: A
    assert api.read(first["cursor"]).mark > api.read(first["cursor"]).position
    api.watch(add=[ref(SC, B)])
    _, got = api.changes(f"cursor={first['cursor']}")
    assert serials(got) == [B, C] and total(api) == 4  # B new (C again: the list changed)


def test_the_generation_of_a_list_changes_when_an_entry_is_added_alike_on_every_node(
    tmp_path: Path,
) -> None:
    keys = WatchKeys(bytes(range(32)))
    one = LmdbWatchSet(tmp_path / "one", keys, map_size=1 << 24)
    gen = one.generation("sig")
    one.update("sig", [], [sf.status_key(SC, A)], limit=10)  # nothing added
    assert one.generation("sig") == gen
    one.count_once("sig", lambda _kept, _gen: b"mark")
    one.update("sig", [sf.status_key(SC, A)], [], limit=10)
    assert one.generation("sig") != gen and one.generation("other") == gen
    seen: list[bytes | None] = []
    one.count_once("sig", lambda kept, _gen: seen.append(kept) or kept)
    assert seen == [None]  # this node's mark forgotten with the addition
    one.close()
    tag = keys.tag("sig")
    op = watchlog.make_op(keys.check(), 10, [], keys.entries(tag, [sf.status_key(SC, A)]), tag)
    replicas = []
    for name in ("a", "b"):
        lists = LmdbWatchSet(tmp_path / name, keys, map_size=1 << 24)
        lists.apply(1, op)
        replicas.append(lists.generation("sig"))
        lists.close()
    assert replicas[0] == replicas[1] != gen  # the operation's sequence: the same everywhere


def test_an_entry_added_while_a_read_ran_has_every_change_it_delivers_counted() -> None:
    """The read checked the list as it was (generation ``before``); an entry added meanwhile
    may be among the changes delivered: no mark covers any of them, and none is stored."""
    lists = MemoryWatchSet()
    before = lists.generation("sig")
    mark = cursor.Position(STORE_ID, changes_start(7))
    lists.count_once("sig", lambda _kept, gen: gen + cursor.pack(mark))
    lists.update("sig", [sf.status_key(SC, A)], [], limit=10)  # a new generation
    lineage = changes._Lineage(MemoryReader())  # a feed of no change: every anchor is none
    lineage.note(mark)
    lists.marks["sig"] = changes._stored(before, mark, lineage)  # as a read of before would
    afters = [cursor.Position(STORE_ID, changes_start(c)) for c in (3, 5)]
    got: changes._Read[cursor.Position] = changes._Read(
        services=[Service.SIGN_REVOCATION_INFO] * 2, afters=afters
    )
    provided = changes._provided(lists, "sig", got, mark, before, lineage=lineage)
    counted: list[object] = []
    assert provided.provide is not None
    delivery = provided.provide()  # the answer made: both taken from the day's provisions
    assert delivery is not None and delivery.counts == ((Service.SIGN_REVOCATION_INFO, 2),)
    delivery.record(counted.append)  # and written: both counted
    assert counted == [((Service.SIGN_REVOCATION_INFO, 2),)]
    kept = changes._stored_mark(lists.marks["sig"], before, lineage)
    assert kept == (mark, cursor.NO_ANCHOR)  # left as it was


def test_a_fresh_cursor_does_not_make_an_older_cursors_changes_uncounted(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A party read up to commit 4 (its cursor ``kept``); B and C lost effect at commit 5.
    It takes a fresh cursor (at commit 7), then reads from ``kept``: B and C are delivered
    to it the first time and are counted (a fresh cursor says nothing was counted: else a
    party would take one before reading its kept cursor, given the changes since uncounted)."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, B), ref(SC, C)])
    kept = api.sealed(changes_start(4))
    _, fresh = api.changes("")
    assert api.read(fresh["cursor"]) == cursor.Bound(after(7), after(7))
    _, got = api.changes(f"cursor={kept}")
    assert serials(got) == [B, C] and total(api) == 2
    _, again = api.changes(f"cursor={kept}")  # a retry: not counted again
    assert serials(again) == [B, C] and total(api) == 2


def test_lists_loaded_from_snapshots_share_a_generation_only_where_they_agree(
    tmp_path: Path,
) -> None:
    """Node y joins from the snapshot of operation 1 (the party watches A) and issues the party
    a cursor; the party then watches B (operation 2); node w joins from the snapshot of
    operation 2. y's generation of before B must not be w's: w's list holds B, which no mark
    made on y saw watched (that cursor read at w would pass B's changes uncounted). Lists that
    loaded the same snapshot, or applied the same addition, do agree (a cursor's mark then
    carries across them)."""
    keys = WatchKeys(bytes(range(32)))
    tag = keys.tag("sig")
    a, b = (keys.entries(tag, [sf.status_key(SC, s)]) for s in (A, B))
    add_a, add_b = (watchlog.make_op(keys.check(), 10, [], e, tag) for e in (a, b))
    stream = b"stream identity!"

    def lists(name: str) -> LmdbWatchSet:
        return LmdbWatchSet(tmp_path / name, keys, map_size=1 << 24)

    def joined(name: str, seq: int, listed: list[bytes]) -> LmdbWatchSet:
        got = lists(name)
        seal = Seal(stream, watchlog.secret_check(keys.check()), seq, 1, len(listed), 0)
        got.begin_load(Loading(watchsnap.encode_seal(keys.snapshot_mac, seal), 0, 0, 0))
        (part,) = watchsnap.parts(stream, seq, sorted(listed))
        assert got.load_part(seal, part, 0)
        return got

    y = joined("y", 1, a)
    before_b = y.generation("sig")
    y.apply(2, add_b)
    w, v = joined("w", 2, a + b), joined("v", 2, a + b)
    assert w.generation("sig") != before_b
    assert w.generation("sig") == v.generation("sig")  # the same snapshot
    x = lists("x")  # a node that applied every operation
    x.apply(1, add_a)
    x.apply(2, add_b)
    assert x.generation("sig") == y.generation("sig")  # the same last addition
    for one in (x, y, w, v):
        one.close()


@pytest.mark.parametrize("fails", ["made", "before", "at-commit"])
def test_a_mark_that_cannot_be_written_never_leaves_a_delivered_change_uncounted(
    cas: dict[int, Ca], tmp_path: Path, fails: str
) -> None:
    """The node's lists fail when the dispatcher reads the mark as the answer is made: 503,
    nothing counted. They fail as the answer is written and the mark recorded: before the
    count (the write transaction cannot begin) or at its commit, after the count, the answer
    is given and counted as decided (the mark not kept: a retry counts again, never not at
    all)."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, B), ref(SC, C)])
    lists = api.watchset

    def count_once(party: str, decide: Callable[[bytes | None, bytes], bytes | None]) -> None:
        if fails == "at-commit":
            decide(lists.marks.get(party), lists.generation(party))
        raise changes.WatchUnavailable("MDB_MAP_FULL")

    lists.count_once = count_once  # type: ignore[method-assign]
    if fails == "made":
        handled = lists.mark
        calls: list[str] = []

        def mark(party: str) -> bytes | None:  # the handler's read, then the dispatcher's
            calls.append(party)
            if len(calls) > 1:
                raise changes.WatchUnavailable("MDB_PANIC")
            return handled(party)

        lists.mark = mark  # type: ignore[method-assign]
    resp, got = api.changes(f"cursor={at(3)}")
    if fails == "made":
        assert resp.status == 503 and total(api) == 0
    else:
        assert resp.status == 200 and serials(got) == [B, C] and total(api) == 2
        assert lists.marks == {}
