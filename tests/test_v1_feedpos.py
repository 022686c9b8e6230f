"""GET /v1/changes on stores filled from the record stream: version 2 cursors name stream
positions (`responder.v1.feedpos`), read on any node, never skipping a change. In process,
over `MemoryReader`s that stand for the stores of several nodes of one stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from responder.config import ClusterConfig, LedgerConfig, ResponderConfig
from responder.v1 import changes, cursor, feedpos
from tests.support.pki import Ca, make_ca, rsa_key
from tests.test_v1_changes import AC, SC, A, Api, B, C, at, store

FEED = b"F" * 16
G1, G2, G3 = sf.StreamGroup(0, 10), sf.StreamGroup(10, 20), sf.StreamGroup(20, 30)
TOKEN = 0x77
"""A serial revoked by a node's own commit (the token issuer's stands for it: no group)."""


@pytest.fixture(scope="module")
def cas() -> dict[int, Ca]:
    key = rsa_key()
    return {SC: make_ca("sign-card-g1 CA", key), AC: make_ca("auth-card-g1 CA", key)}


def node(cas: dict[int, Ca], commits: list[tuple[int, sf.StreamGroup | None, list[int]]],
         *, stream_seq: int, **kw: Any) -> MemoryReader:  # fmt: skip
    """A node's store: (commit, group, serials of SC that lost effect in it)."""
    lost = [(c, sf.status_key(SC, s)) for c, _, serials in commits for s in serials]
    groups = {c: g for c, g, _ in commits if g is not None}
    fields: dict[str, Any] = {
        "lost": lost, "groups": groups, "commit_times": {c: 1_700_000_000 for c, _, _ in commits},
        "commit": max(c for c, _, _ in commits) + 1, "feed": FEED, "stream_applied": stream_seq,
        "horizon": 2,
    }  # fmt: skip
    fields.update(kw)
    r = store(cas, **fields)
    r.status_records[sf.status_key(SC, TOKEN)] = r.status_records[sf.status_key(SC, A)]
    return r


def node_a(cas: dict[int, Ca], **kw: Any) -> MemoryReader:
    """Batch G1 revoked A; a commit of the node's own; G2's lapses revoked B, its records C."""
    return node(cas, [(3, G1, [A]), (4, None, [TOKEN]), (5, G2, [B]), (6, G2, [C])],
                stream_seq=20, **kw)  # fmt: skip


def node_b(cas: dict[int, Ca], **kw: Any) -> MemoryReader:
    """The same batches as A, numbered otherwise (no commit of its own)."""
    return node(cas, [(3, G1, [A]), (4, G2, [B]), (5, G2, [C])], stream_seq=20, **kw)


def node_c(cas: dict[int, Ca]) -> MemoryReader:
    """The same stream cut otherwise (a batch cut by tail_wait): 0-15 revoked A and B, 15-20 C."""
    return node(cas, [(3, sf.StreamGroup(0, 15), [A, B]), (4, sf.StreamGroup(15, 20), [C])],
                stream_seq=20)  # fmt: skip


def sp(base: int, end: int = 0, ordinal: int = 0, serial: int = 0) -> cursor.StreamPosition:
    inside = cursor.Inside(end, ordinal, sf.status_key(SC, serial)) if end else None
    return cursor.StreamPosition(FEED, base, inside)


def pos(base: int, end: int = 0, ordinal: int = 0, serial: int = 0) -> str:
    """A stream cursor as issued before cursors were bound (version 2: still read)."""
    return cursor.encode_stream(sp(base, end, ordinal, serial))


def nodes(cas: dict[int, Ca], tmp_path: Path, *readers: MemoryReader) -> list[Api]:
    """One `Api` per node; every node holds the party's list (replicated) of A, B, C, TOKEN."""
    out = []
    for i, r in enumerate(readers):
        api = Api(r, tmp_path / f"n{i}", secret_file=tmp_path / "watch.secret")  # the service's
        api.watchset.lists["sig"] = {sf.status_key(SC, s) for s in (A, B, C, TOKEN)}
        out.append(api)
    return out


def serials(got: dict[str, Any]) -> list[int]:
    return [int(c["serial"], 16) for c in got["changes"]]


def test_a_read_paged_one_change_at_a_time_across_nodes_delivers_each_once(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A load balancer sends each page to another node, whose commits are numbered otherwise:
    the stream position inside a batch is honoured where the batch is the same."""
    a, b = nodes(cas, tmp_path, node_a(cas), node_b(cas))
    delivered: list[int] = []
    cur = pos(0)
    for api in (a, b, a, b):
        resp, got = api.changes(f"cursor={cur}&limit=1")
        assert resp.status == 200, got
        delivered += serials(got)
        cur = got["cursor"]
    assert delivered == [A, B, C]  # the node's own commit (TOKEN) is never a change
    assert a.read(cur).position == sp(20)
    _, got = b.changes(f"cursor={cur}")
    assert (
        got["changes"] == [] and b.read(got["cursor"]).position == sp(20) and got["more"] is False
    )


def test_batches_cut_otherwise_repeat_changes_never_skip_one(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    a, c = nodes(cas, tmp_path, node_a(cas), node_c(cas))
    # A read on a stopped inside G2 after B; node c has no batch 10-20: it reads from its
    # first batch ending after 10 (0-15), so A and B come again, C is not lost
    _, got = a.changes(f"cursor={pos(10)}&limit=1")
    assert serials(got) == [B] and a.read(got["cursor"]).position == sp(10, 20, 0, B)
    _, got = c.changes(f"cursor={got['cursor']}")
    assert serials(got) == [A, B, C] and c.read(got["cursor"]).position == sp(20)
    # and the other way: c's cursor after its batch 0-15 read on a: G2 whole (B again, C)
    _, got = c.changes(f"cursor={pos(0)}&limit=2")
    assert serials(got) == [A, B] and c.read(got["cursor"]).position == sp(0, 15, 0, B)
    _, got = a.changes(f"cursor={got['cursor']}")
    assert serials(got) == [A, B, C]
    _, got = a.changes(f"cursor={pos(15)}")
    assert serials(got) == [B, C]


def test_a_batch_whose_lapses_are_committed_and_records_not_yet_goes_on_after_them(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """The lapses of a batch are committed before its records (crlbuilder `_stream_batch`): a
    read between the two names the lapse it read (not the batch's end, which would pass the
    records; nor the stream position before it, which would deliver the lapse again)."""
    during = node(cas, [(3, G1, [A]), (4, G2, [B])], stream_seq=10)
    after = node(cas, [(3, G1, [A]), (4, G2, [B]), (5, G2, [C])], stream_seq=20)
    d, f = nodes(cas, tmp_path, during, after)
    _, got = d.changes(f"cursor={pos(0)}")
    assert serials(got) == [A, B] and d.read(got["cursor"]).position == sp(10, 20, 0, B)
    _, got = f.changes(f"cursor={got['cursor']}")
    assert serials(got) == [C] and f.read(got["cursor"]).position == sp(20)


def test_a_node_behind_the_cursor_answers_no_change_and_the_same_cursor(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    (behind,) = nodes(cas, tmp_path, node(cas, [(3, G1, [A])], stream_seq=10))
    resp, got = behind.changes(f"cursor={pos(20)}")
    same = cursor.unseal(behind.key(), "sig", got["cursor"])
    assert resp.status == 200 and got["changes"] == []
    # the same position and mark, of the generation the cursor was of (an unbound one's)
    assert isinstance(same, cursor.Bound) and (same.position, same.mark) == (sp(20), sp(20))
    assert same.gen == bytes(cursor.GEN_BYTES)
    assert behind.ledger.counted == []


def test_cursors_it_cannot_serve_are_refused_as_today(cas: dict[int, Ca], tmp_path: Path) -> None:
    (a,) = nodes(cas, tmp_path, node_a(cas, horizon_seq=10))
    resp, got = a.changes(f"cursor={pos(5)}")  # batch 0-10 was pruned: G1's A would be lost
    assert (resp.status, got["rule"]) == (410, "cursor_expired"), got
    other = cursor.encode_stream(cursor.StreamPosition(b"O" * 16, 10))
    resp, got = a.changes(f"cursor={other}")  # another stream
    assert (resp.status, got["rule"]) == (410, "cursor_expired"), got
    resp, got = a.changes(f"cursor={at(3)}")  # one node's own cursor (version 1)
    assert (resp.status, got["rule"]) == (410, "cursor_expired"), got
    resp, got = a.changes(f"cursor={pos(10)[:-1]}")
    assert resp.status == 400 and got["field"] == "$.cursor", got
    assert a.ledger.counted == []


def test_a_fresh_cursor_stands_max_lag_before_the_nodes_position(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """So that a POST /v1/status after it, on another ready node (within max_lag of the
    stream), is not older than the cursor: the changes in between come again, none is lost."""
    (a,) = nodes(cas, tmp_path, node_a(cas, horizon_seq=2))
    _, got = a.changes("")
    assert a.read(got["cursor"]).position == sp(20) and got["changes"] == []  # one node: no lag
    env = next(e for e in changes._ENVS.values() if e.watchset is a.watchset)
    env.fresh_lag = 15
    _, got = a.changes("")
    assert a.read(got["cursor"]).position == sp(5)
    _, got = a.changes(f"cursor={got['cursor']}")
    assert serials(got) == [A, B, C]  # G1 (0-10) ends after 5: read whole
    env.fresh_lag = 50
    assert a.read(a.changes("")[1]["cursor"]).position == sp(2)  # never before the horizon
    config = ResponderConfig(
        ledger=LedgerConfig(dir=tmp_path / "several" / "ledger"),
        cluster=ClusterConfig(nats="nats://127.0.0.1:1", max_lag=300),
    )  # fmt: skip
    assert changes.setup(config).fresh_lag == 300


def test_a_store_not_fed_by_the_stream_keeps_version_1_cursors(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path)
    _, got = api.changes("")
    assert isinstance(api.read(got["cursor"]).position, cursor.Position)


def test_a_stream_cursor_on_a_store_not_fed_by_the_stream_is_410_not_400(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A cursor we issued on a stream-fed store (a service moved back to one node built from
    the spool, or a party pointed at another deployment): resynchronise (410), as a version 1
    cursor on a stream-fed store is, not "not issued by this service" (400)."""
    api = Api(store(cas), tmp_path)
    for p in (pos(10), pos(10, 20, 1, A)):
        resp, got = api.changes(f"cursor={p}")
        assert (resp.status, got["rule"]) == (410, "cursor_expired"), got
    resp, got = api.changes(f"cursor={pos(10)[:-1]}")  # not one of ours: still 400
    assert resp.status == 400 and got["field"] == "$.cursor", got
    assert api.ledger.counted == []


# --- the pure parts ---------------------------------------------------------------------


def test_stream_cursors_have_one_spelling_and_refuse_what_none_of_ours_holds() -> None:
    for p in (
        cursor.StreamPosition(FEED, 0),
        cursor.StreamPosition(FEED, 2**64 - 1),
        cursor.StreamPosition(FEED, 7, cursor.Inside(9, 3, sf.status_key(AC, 2**160 - 1))),
    ):
        text = cursor.encode_stream(p)
        assert len(text) <= cursor.MAX_CURSOR_CHARS and "=" not in text
        assert cursor.decode_any(text) == p
        assert cursor.decode_any(text + "=") is None
        assert cursor.decode_any(text[:-2]) is None
    backwards = cursor.StreamPosition(FEED, 9, cursor.Inside(9, 0, sf.status_key(SC, A)))
    assert cursor.decode_any(cursor.encode_stream(backwards)) is None  # a batch ends after base
    assert cursor.decode_any(at(3)) == cursor.decode(at(3))  # version 1 still read


def test_first_after_finds_the_first_batch_ending_after_a_position(cas: dict[int, Ca]) -> None:
    r = node(cas, [(3, G1, [A]), (4, None, [TOKEN]), (5, None, [TOKEN]), (9, G2, [B]),
                   (12, G3, [C])], stream_seq=30)  # fmt: skip
    for base, commit in ((0, 3), (9, 3), (10, 9), (19, 9), (20, 12), (29, 12)):
        e = feedpos.first_after(r, base)
        assert e is not None and e.commit == commit, (base, e)
    assert feedpos.first_after(r, 30) is None


@pytest.mark.parametrize("ordinal", [0, 1])
def test_a_position_inside_a_batch_is_taken_only_where_its_commit_is_there(
    cas: dict[int, Ca], ordinal: int
) -> None:
    a = node_a(cas)
    p = cursor.StreamPosition(FEED, 10, cursor.Inside(20, ordinal, sf.status_key(SC, B)))
    where = feedpos.locate(p, a)
    assert isinstance(where, feedpos.Start)
    if ordinal == 0:  # a's first commit of G2 is 5
        assert where.start == sf.change_key(5, sf.status_key(SC, B)) + b"\x00"
    else:
        assert where.start == sf.change_key(6, sf.status_key(SC, B)) + b"\x00"
    p3 = cursor.StreamPosition(FEED, 10, cursor.Inside(20, 2, sf.status_key(SC, B)))
    where = feedpos.locate(p3, a)  # no third commit of G2 here: the batch from its start
    assert isinstance(where, feedpos.Start) and where.start == sf.commit_marker_key(5)
