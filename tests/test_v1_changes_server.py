"""The changes feed on the real server: register, revoke through the builder, read the change;
restart the responder and read again; rebuild the store from the records (the old cursor is
refused, the watch list kept); the retention horizon (410, and the way back).

One small store of its own (four certificates), built by ``crlbuilder build`` from record
files dated days in the past, so that a later build can prune the feed's older commits
(``--changes-keep-days``), without pre-signing or CRLs (the feed needs neither); the demo
PKI and registry of the session's `built` fixture.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import ROOT, Built, run_tool
from tests.support.harness import Server, start_server

SIGN, AUTH = "sign-card-g2", "auth-card-g1"
S1, S2, S3, A1 = 0x5101, 0x5102, 0x5103, 0x5201
FACTS = {"name": "試験 三郎", "sex": "1", "birth_date": "319850505", "address": "大阪府大阪市1-1"}
PARTY = "sig-verifier"
NOW = datetime.now(UTC).replace(microsecond=0)


def _at(days: float) -> str:
    return (NOW + timedelta(days=days)).isoformat()


def _issuance(n: int, issuer: str, serial: int) -> dict[str, object]:
    family = "sign-card" if issuer == SIGN else "auth-card"
    rec: dict[str, object] = {
        "type": "issuance", "id": f"i-{serial:x}", "recorded_at": _at(-20), "serial": serial,
        "family": family, "issuer": issuer, "not_before": _at(-20), "not_after": _at(300),
        "holder": f"{n:02x}" * 32,
    }  # fmt: skip
    if family == "sign-card":
        rec["facts"] = FACTS
    return rec


def _revocation(serial: int, issuer: str, days: float) -> dict[str, object]:
    return {
        "type": "revocation-request", "id": f"r-{serial:x}", "recorded_at": _at(days),
        "issuer": issuer, "serial": serial, "reason": "loss",
    }  # fmt: skip


def _records(d: Path, name: str, *records: dict[str, object]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    return p


def _build(built: Built, store: Path, inputs: list[Path], as_of: float, *extra: str) -> None:
    args = [
        "--config", str(ROOT / "config" / "builder.toml"), "--store", str(store),
        "--pki", str(built.pki), "--facts-key-file", str(built.facts_key),
        "--quarantine", str(store.parent / "q.jsonl"), "--notices", str(store.parent / "n.jsonl"),
        "--crl-dir", str(store.parent / "crl"), "--spool", str(store.parent / "spool"),
        "--no-presign", "--no-crl", "--as-of", _at(as_of), "--no-progress",
    ]  # fmt: skip
    for p in inputs:
        args += ["--input", str(p)]
    out = run_tool("crlbuilder", "build", *args, *extra)
    summary = json.loads(out.stderr.strip().splitlines()[-1])
    assert summary["quarantined"] == 0, out.stderr


def _call(server: Server, method: str, path: str, body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {server.token(PARTY)}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"{server.url}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read())


def _ref(issuer: str, serial: int) -> dict[str, str]:
    return {"issuer": issuer, "serial": f"{serial:x}"}


def _changes(server: Server, cursor: str) -> tuple[int, Any]:
    return _call(server, "GET", f"/v1/changes?cursor={cursor}")


@pytest.mark.integration
def test_changes_feed_across_a_revocation_a_restart_a_rebuild_and_the_horizon(
    built: Built, tmp_path: Path
) -> None:
    issued = _records(tmp_path / "in1", "a.jsonl", *(
        _issuance(n, SIGN, s) for n, s in ((1, S1), (2, S2), (3, S3))
    ), _issuance(4, AUTH, A1))  # fmt: skip
    store = tmp_path / "one" / "store"
    _build(built, store, [issued], -10)
    d = tmp_path / "responder"  # the responder's state (ledger, watch lists) across runs
    with start_server(built, d, store=store) as server:
        status, got = _call(
            server, "POST", "/v1/watch",
            {"add": [_ref(SIGN, S1), _ref(SIGN, S2), _ref(AUTH, A1)]},
        )  # fmt: skip
        assert status == 200, got
        # a 署名検証者 receives no auth revocation information (Act §37(1)): refused per entry
        assert got["added"] == 2 and [r["article"] for r in got["refused"]] == ["Act §37(1)"]
        status, got = _call(server, "GET", "/v1/changes")
        assert status == 200 and got["changes"] == []
        start = got["cursor"]
        # the builder revokes S1 (watched) and S3 (not watched)
        revoked = _records(tmp_path / "in2", "b.jsonl", _revocation(S1, SIGN, -5),
                           _revocation(S3, SIGN, -5))  # fmt: skip
        _build(built, store, [revoked], -5)
        status, got = _changes(server, start)
        assert status == 200, got
        assert [
            (c["serial"], c["status"], c["category"], c["article"]) for c in got["changes"]
        ] == [(f"{S1:X}", "revoked", "request", "Act §11")]
        after = got["cursor"]
        assert after != start and got["more"] is False
    with start_server(built, d, store=store) as server:  # restarted: the list and cursors hold
        status, got = _changes(server, start)
        assert status == 200 and [c["serial"] for c in got["changes"]] == [f"{S1:X}"]
        status, got = _changes(server, after)
        assert status == 200 and got["changes"] == []
    # rebuilt from the records: another store, its old cursors are refused; the list is kept
    rebuilt = tmp_path / "two" / "store"
    _build(built, rebuilt, [issued, revoked], -5)
    with start_server(built, d, store=rebuilt) as server:
        status, got = _changes(server, after)
        assert status == 410 and got["rule"] == "cursor_expired", got
        assert "POST /v1/status" in got["detail"]
        status, got = _call(server, "GET", "/v1/changes")  # the way back: a fresh cursor ...
        fresh = got["cursor"]
        status, got = _call(
            server, "POST", "/v1/status", {"entries": [_ref(SIGN, S1), _ref(SIGN, S2)]}
        )
        assert status == 200 and len(got["entries"]) == 2  # (stale here: builds dated back)
        later = _records(tmp_path / "in3", "c.jsonl", _revocation(S2, SIGN, -3))
        _build(built, rebuilt, [later], -3)
        status, got = _changes(server, fresh)  # ... then the changes from it
        assert status == 200 and [c["serial"] for c in got["changes"]] == [f"{S2:X}"]
        # the feed keeps two days: the commits before are pruned, and cursors before them
        nothing = _records(tmp_path / "in4", "d.jsonl")
        _build(built, rebuilt, [nothing], 0, "--changes-keep-days", "2")
        status, got = _changes(server, fresh)
        assert status == 410 and got["rule"] == "cursor_expired", got
        status, got = _call(server, "GET", "/v1/changes")
        assert status == 200 and got["changes"] == [] and got["cursor"] != fresh


def _pipelined(server: Server, *requests: tuple[str, str, object]) -> list[tuple[int, Any]]:
    """``requests`` written at once on one connection (HTTP/1.1 pipelining), their answers
    read in order."""
    import socket

    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    wire = b""
    for method, path, body in requests:
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
        head += f"Authorization: Bearer {server.token(PARTY)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        wire += f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(wire)
        answers = []
        f = sock.makefile("rb")  # one buffered reader: the first answer's must not eat the next
        for _request in requests:
            status = int(f.readline().split()[1])
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            answers.append((status, json.loads(f.read(length))))
        return answers


@pytest.mark.integration
def test_a_changes_read_pipelined_after_a_watch_call_sees_its_list(
    built: Built, tmp_path: Path
) -> None:
    """HTTP/1.1 lets a client send its next request before the answer to the last (RFC 9112
    §9.3.2; a server may work on pipelined requests at once only when all are safe). A watch
    call is answered from the batch thread: the read sent after it on the same connection must
    not be made before it, from the list as it was (the revocation of the certificate just
    watched missed, and the cursor past it: the party would never be given it)."""
    issued = _records(
        tmp_path / "in1", "a.jsonl", *(_issuance(n, SIGN, s) for n, s in ((1, S1), (2, S2)))
    )
    store = tmp_path / "one" / "store"
    _build(built, store, [issued], -10)
    with start_server(built, tmp_path / "responder", store=store) as server:
        status, got = _call(server, "POST", "/v1/watch", {"add": [_ref(SIGN, S1)]})
        assert status == 200, got
        status, got = _call(server, "GET", "/v1/changes")
        start = got["cursor"]
        _build(built, store, [_records(tmp_path / "in2", "b.jsonl", _revocation(S2, SIGN, -5))], -5)
        for _ in range(3):  # each time on a connection of its own, and maybe another worker
            (w_status, watched), (c_status, read) = _pipelined(
                server,
                ("POST", "/v1/watch", {"add": [_ref(SIGN, S2)]}),
                ("GET", f"/v1/changes?cursor={start}", None),
            )
            assert w_status == 200 and c_status == 200, (watched, read)
            assert [c["serial"] for c in read["changes"]] == [f"{S2:X}"], (watched, read)


@pytest.mark.integration
def test_reads_from_one_cursor_on_both_workers_at_once_count_each_change_once(
    built: Built, tmp_path: Path
) -> None:
    """The node's counted marks (`responder.v1.markdb`, one LMDB environment of both workers,
    written without fsync): many reads of one party from one old cursor, at once, on new
    connections (the two workers accept them), count each change once, not once per worker
    nor never; a restart of the responder (the same boot) keeps the marks."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.test_v1_server import ledger_totals

    issued = _records(
        tmp_path / "in1", "a.jsonl", *(_issuance(n, SIGN, s) for n, s in ((1, S1), (2, S2)))
    )
    store = tmp_path / "one" / "store"
    _build(built, store, [issued], -10)
    d = tmp_path / "responder"
    with start_server(built, d, store=store) as server:
        status, got = _call(server, "POST", "/v1/watch", {"add": [_ref(SIGN, S1), _ref(SIGN, S2)]})
        assert status == 200, got
        start = _call(server, "GET", "/v1/changes")[1]["cursor"]
        revoked = [_revocation(S1, SIGN, -5), _revocation(S2, SIGN, -5)]
        _build(built, store, [_records(tmp_path / "in2", "b.jsonl", *revoked)], -5)
        with ThreadPoolExecutor(8) as pool:
            reads = list(pool.map(lambda _i: _changes(server, start), range(40)))
        # a party's reads are made in each worker's batch thread, two at most waiting per
        # worker: the others are 429 fair_share, nothing counted (the bound on one party)
        answered = [r for s, r in reads if s == 200]
        assert all(len(r["changes"]) == 2 for r in answered), answered[:2]
        assert all((s, r.get("rule")) == (429, "fair_share") for s, r in reads if s != 200), [
            (s, r) for s, r in reads if s != 200
        ][:2]
        assert len(answered) >= 2, len(answered)
    changes = {k: n for k, n in ledger_totals(d / "ledger").items() if k[0] == PARTY}
    assert sum(changes.values()) == 2, changes
    with start_server(built, d, store=store) as server:
        assert _changes(server, start)[1]["changes"]  # delivered again: counted before
    changes = {k: n for k, n in ledger_totals(d / "ledger").items() if k[0] == PARTY}
    assert sum(changes.values()) == 2, changes


@pytest.mark.integration
def test_a_store_restored_from_a_copy_refuses_a_cursor_past_the_lost_commits_after_retention(
    built: Built, tmp_path: Path
) -> None:
    """F5 on the real server and builder: a copy of the store (``crlbuilder store copy``, the
    same store id) is put back after the party read S1 in a later commit; the builder makes
    that commit again, revoking S2. The party's cursor past the lost commit would never give
    S2: 409, and still 409 once retention (``--changes-keep-days``) has dropped the commit
    made again (its time, kept with the horizon, is not the lost one's). A cursor from before
    the lost commit is given S2."""
    issued = _records(tmp_path / "in1", "a.jsonl", *(
        _issuance(n, SIGN, s) for n, s in ((1, S1), (2, S2), (3, S3))
    ))  # fmt: skip
    store = tmp_path / "one" / "store"
    _build(built, store, [issued], -10)
    backup = tmp_path / "backup" / "store"
    run_tool("crlbuilder", "store", "copy", str(store), str(backup))
    d = tmp_path / "responder"
    with start_server(built, d, store=store) as server:
        status, got = _call(server, "POST", "/v1/watch", {"add": [_ref(SIGN, S1), _ref(SIGN, S2)]})
        assert status == 200, got
        status, got = _call(server, "GET", "/v1/changes")
        start = got["cursor"]
        _build(built, store, [_records(tmp_path / "in2", "b.jsonl", _revocation(S1, SIGN, -5))], -5)
        status, got = _changes(server, start)
        assert status == 200 and [c["serial"] for c in got["changes"]] == [f"{S1:X}"], got
        past = got["cursor"]
    store.rename(tmp_path / "one" / "lost")  # the store restored from the copy
    backup.rename(store)
    _build(built, store, [_records(tmp_path / "in3", "c.jsonl", _revocation(S2, SIGN, -4))], -4)
    with start_server(built, d, store=store) as server:
        status, got = _changes(server, past)
        assert status == 409 and got["rule"] == "cursor_ahead", got
        status, got = _changes(server, start)
        assert status == 200 and [c["serial"] for c in got["changes"]] == [f"{S2:X}"], got
        nothing = _records(tmp_path / "in4", "d.jsonl")
        _build(built, store, [nothing], 0, "--changes-keep-days", "2")  # S2's commit dropped
        status, got = _changes(server, past)
        assert status == 409 and got["rule"] == "cursor_ahead", got
