"""`crlbuilder stream adopt`: nodes keep their stores across a record stream made again.

On a real three-server JetStream cluster (`tests.support.nats`), two nodes apply a move-out
notice (転出届) and, within 30 days, a move-in notice (転入届) that stops its lapse (Act
§31(2)); the stream is deleted and made again and the whole history republished at once,
40 days past the move-out's planned date. A store rebuilt from it writes the lapse before
the move-in notice (the stream's clock): a valid auth certificate revoked for good (Act
§34(1)(2)). Adopted, the stores skip every record they applied, apply the new ones, and end
as a store that never saw the stream made again: the auth certificate still good.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import nats.js.errors
import pytest
from nats.js.api import ObjectMeta

from crlbuilder import rules, snapshot
from crlbuilder.build import Builder, StreamReplaced
from crlbuilder.cli import EXIT_NO_SNAPSHOT, EXIT_SNAPSHOT_REFUSED, EXIT_STREAM_REFUSED
from crlbuilder.config import BuilderConfig, StoreSection
from crlbuilder.jetstream import Cluster, ClusterError, resolve
from crlbuilder.manifest import Manifest
from crlbuilder.model import Family
from crlbuilder.natsauth import NatsAuth
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from crlbuilder.stream import (
    H_ID,
    StreamCipher,
    StreamNames,
    current_feed_id,
    ensure_stream,
    tick_message,
)
from crlbuilder.streamadopt import AlreadyFollowed, StoreSide, refusal, stream_record_ids
from responder.v1 import feedpos
from responder.v1.cursor import StreamPosition
from tests.support.nats import (
    NatsCluster,
    free_ports,
    nats_server,
    shipped_authorization,
    tls_files,
    wait_jetstream,
)
from tests.test_apply import FACTS
from tests.test_stream import (
    Shifted,
    dump,
    flags,
    names,
    node_config,
    publish_files,
    refused,
    same_key,
    stream_seq,
)

HOLDER = hashlib.sha256(b"stream-adopt").hexdigest()
OTHER = hashlib.sha256(b"stream-adopt-new").hexdigest()
AUTH, SIGN, NEW, OLD = 4711, 4712, 4713, 4714


def _issuer(manifest: Manifest, family: Family) -> str:
    return next(i.id for i in manifest.issuers if i.family is family)


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    return path


def _files(tmp: Path, manifest: Manifest, planned: date, now: datetime) -> list[Path]:
    """The history (issuances, a move-out notice and a loss of another holder's auth
    certificate; the move-in notice 3 days after its planned date) and, third, records the
    old stream never carried (another loss)."""
    start = datetime.combine(planned, datetime.min.time(), rules.JST)
    issued = start - timedelta(days=100)
    auth, sign = _issuer(manifest, Family.AUTH_CARD), _issuer(manifest, Family.SIGN_CARD)

    def issuance(rid: str, serial: int, issuer: str, family: Family, holder: str,
                 at: datetime, **kw: object) -> dict[str, object]:  # fmt: skip
        return {"type": "issuance", "id": rid, "recorded_at": at.isoformat(), "serial": serial,
                "family": family.value, "issuer": issuer, "not_before": at.isoformat(),
                "not_after": (at + timedelta(days=1500)).isoformat(), "holder": holder, **kw}  # fmt: skip

    history = _write(tmp / "0001-history.jsonl", [
        issuance("a-i1", AUTH, auth, Family.AUTH_CARD, HOLDER, issued),
        issuance("a-i2", SIGN, sign, Family.SIGN_CARD, HOLDER, issued, facts=FACTS),
        {"type": "resident-change", "id": "a-m1", "recorded_at": (start - timedelta(days=2)).isoformat(),
         "notified_at": (start - timedelta(days=3)).isoformat(), "holder": HOLDER,
         "change": "move-out-notice", "planned_date": planned.isoformat()},
        issuance("a-i4", OLD, auth, Family.AUTH_CARD, OTHER, issued),
        {"type": "revocation-request", "id": "a-r0", "recorded_at": (start - timedelta(days=9)).isoformat(),
         "serial": OLD, "issuer": auth, "reason": "loss"},
    ])  # fmt: skip
    move_in = _write(tmp / "0002-move-in.jsonl", [
        {"type": "resident-change", "id": "a-m2", "recorded_at": (start + timedelta(days=3)).isoformat(),
         "holder": HOLDER, "change": "move-in-notice"},
    ])  # fmt: skip
    later = now - timedelta(hours=1)
    new = _write(tmp / "0003-new.jsonl", [
        issuance("a-i3", NEW, auth, Family.AUTH_CARD, OTHER, later - timedelta(days=10)),
        {"type": "revocation-request", "id": "a-r1", "recorded_at": later.isoformat(),
         "serial": NEW, "issuer": auth, "reason": "loss"},
    ])  # fmt: skip
    return [history, move_in, new]


def test_what_adopting_checks_of_the_store_each_refused_in_one_line() -> None:
    """`refusal`, sans-I/O: which store may adopt which stream instance."""
    old, new = b"o" * 16, b"n" * 16
    replaced = "the record stream S is not the one this store was filled from"

    def why(side: StoreSide, current: bytes | None = new, **kw: bool) -> str | None:
        return refusal(side, "S", current, made_again=kw.get("made_again", False),
                       accept_behind=kw.get("accept_behind", False))  # fmt: skip

    assert why(StoreSide(old, 6, replaced, 6)) is None  # refused by its builder
    assert why(StoreSide(old, 6, "", 6), made_again=True) is None  # said by the operator
    assert why(StoreSide(old, 6, "", 0), made_again=True) is None  # never saw a head
    says = {
        "does not exist": why(StoreSide(old, 6, replaced, 6), None),
        "names no record stream": why(StoreSide(b"", 0, "", 0), made_again=True),
        "group appliance": why(StoreSide(b"", 0, "", 0, group=True), made_again=True),
        "pass --made-again": why(StoreSide(old, 6, "", 6)),
        "which held at least 9": why(StoreSide(old, 6, replaced, 9)),
        "another reason": why(StoreSide(new, 6, "release 1.9, newer", 6), made_again=True),
    }
    for expected, line in says.items():
        assert line is not None and expected in line and "\n" not in line, (expected, line)
    assert why(StoreSide(old, 6, replaced, 9), accept_behind=True) is None
    with pytest.raises(AlreadyFollowed):  # adopted already: nothing to do, not an error
        why(StoreSide(new, 2, "", 8), made_again=True)


@pytest.mark.integration  # the command's own --help, in a process
def test_the_help_of_adopt_says_what_it_prints_and_what_it_deletes() -> None:
    """`stream adopt --help` claims only what adopt does: the "already follows" answer is a
    plain line, not JSON (`test_adopt_refuses_a_missing_store_or_stream_and_a_store_of_this_stream`);
    a refusal leaves the store as it was, but reading the stream deletes the node's durable
    consumer (`stream_record_ids`), refused or not: not "nothing written"."""
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "stream", "adopt", "--help"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    text = " ".join(out.stdout.split())
    assert "Prints one JSON line" not in text and "nothing written" not in text, text
    assert 'one plain line "... already follows ..."' in text, text
    assert "one JSON line says what was done" in text, text
    assert "deletes this node's durable consumer (refused or not)" in text, text
    assert "the store left as it was" in text, text


def _keeping_changes(cfg: BuilderConfig) -> BuilderConfig:
    """``cfg`` keeping its changes feed for ten years (`StoreConfig.changes_keep_days`)."""
    return msgspec.structs.replace(
        cfg, store=msgspec.structs.replace(cfg.store, changes_keep_days=3650)
    )


def _consume(cfg: BuilderConfig, cluster: NatsCluster, shift: timedelta) -> int:
    """One catch-up of ``cfg``'s node, the stream's clock read ``shift`` from the real one."""
    b = Builder(cfg, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(cluster.urls)
    try:
        key = bytes.fromhex(Path(cfg.keys.facts_key_file).read_text().strip())
        consumer = Shifted(c, names(cfg), cfg.stream.durable, StreamCipher(key))
        consumer.shift = shift
        return b.consume(consumer, tail_wait=0.5)
    finally:
        c.close()
        b.close()
        b.log.close()


def _status(cfg: BuilderConfig, manifest: Manifest, serial: int) -> sf.StatusRecord:
    index = next(i.index for i in manifest.issuers if i.family is Family.AUTH_CARD)
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.read() as r:
            st = r.status(sf.status_key(index, serial))
    finally:
        s.close()
    assert st is not None
    return st


def _meta(cfg: BuilderConfig) -> dict[str, bytes]:
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.env.begin() as txn:
            return {bytes(k).decode(): bytes(v) for k, v in txn.cursor(db=s.dbs[sf.DB_META])}
    finally:
        s.close()


def _adopt(cfg: BuilderConfig, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "stream", "adopt", *flags(cfg), *extra],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _one_error(out: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused adopt (exit 2; a loopback test's anonymous-connection
    warning aside)."""
    errors = [ln for ln in out.stderr.splitlines() if "error" in ln.lower()]
    assert out.returncode == 2 and len(errors) == 1, (out.returncode, out.stderr)
    assert errors[0].startswith("crlbuilder stream adopt: error: "), errors
    assert "Traceback" not in out.stderr
    return errors[0]


def _delete_stream(cluster: NatsCluster, name: str) -> None:
    c = Cluster(cluster.urls)
    try:
        c.run(c.js.delete_stream(name))
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_adopted_nodes_keep_their_stores_across_a_stream_made_again_no_lapse_re_dated(
    tmp_path: Path, nats: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    pki, manifest = demo_pki
    now = datetime.now(UTC)
    planned = now.astimezone(rules.JST).date() - timedelta(days=40)
    history, move_in, new = _files(tmp_path, manifest, planned, now)
    # the old stream's clock: 5 days after the planned date (both notices in, no lapse due)
    then = datetime.combine(planned, datetime.min.time(), rules.JST) + timedelta(days=5)
    early = then - now
    # the changes feed kept past the old stream's clock: its entries are still there
    a, b, ref = (
        _keeping_changes(node_config(tmp_path / n, pki, nats.source, stream))
        for n, stream in (("a", "adopt"), ("b", "adopt"), ("ref", "adoptref"))
    )  # ref: a node whose stream is never made again (another name): what a and b must equal
    rebuilt = node_config(tmp_path / "rebuilt", pki, nats.source, "adopt")
    for cfg in (b, ref, rebuilt):
        same_key(Path(a.keys.facts_key_file), Path(cfg.keys.facts_key_file))
    for f in (history, move_in):
        publish_files(a, nats, [f])
        publish_files(ref, nats, [f])
        for cfg in (a, b, ref):
            _consume(cfg, nats, early)
    assert stream_seq(a) == stream_seq(b) == 6
    assert not _status(a, manifest, AUTH).revoked  # the move-in notice stopped the lapse
    before, old_feed = dump(a), _meta(a)["feed-id"]
    assert dump(b) == before
    publish_files(ref, nats, [new])
    _consume(ref, nats, timedelta(0))

    # the stream deleted and made again; its history republished, at first not all of it
    _delete_stream(nats, "adopt")
    assert publish_files(a, nats, [history]) == 5
    with pytest.raises(StreamReplaced):
        _consume(a, nats, timedelta(0))
    assert "made again" in refused(a) and stream_seq(a) == 6 and dump(a) == before
    meta_refused = _meta(a)
    line = _one_error(_adopt(a))  # the move-in notice a applied is not on the new stream
    assert "1 record" in line and "not on the record stream" in line, line
    assert _meta(a) == meta_refused and dump(a) == before  # nothing changed
    publish_files(a, nats, [move_in, new])
    new_feed = _current_feed(nats, "adopt")
    assert new_feed is not None and new_feed != old_feed

    # b never ran on the new stream (no refusal kept): the operator must say it was made again
    line = _one_error(_adopt(b))
    assert "--made-again" in line, line
    assert _meta(b)["feed-id"] == old_feed and dump(b) == before
    # a writer on the store (its builder not stopped): refused
    held = Store.open(Path(a.store.path), readonly=False)
    try:
        line = _one_error(_adopt(a))
        assert "another process is writing" in line, line
    finally:
        held.close()
    assert _meta(a) == meta_refused

    for cfg, extra in ((a, ()), (b, ("--made-again",))):
        out = _adopt(cfg, *extra)
        assert out.returncode == 0, out.stderr
        told = msgspec.json.decode(out.stdout.strip().splitlines()[-1])
        assert told["event"] == "stream-adopt" and told["records_checked"] == 6, told
        assert told["was_seq"] == 6 and told["records_to_apply"] == 2, told
        meta = _meta(cfg)
        assert meta["feed-id"] == new_feed and "stream-refused" not in meta
        assert sf.unpack_u64(meta.get("stream-seq", bytes(8))) == 0
        assert dump(cfg) == before  # only the node's place in the stream moved
    again = _adopt(a)  # twice: nothing more to do
    assert again.returncode == 0 and "already" in again.stdout, (again.stdout, again.stderr)

    # the nodes follow the new stream: the history skipped, the new records applied
    assert _consume(a, nats, timedelta(0)) == 8
    built = subprocess.run(  # b by the command its unit runs (one pass, not --follow)
        [sys.executable, "-m", "crlbuilder.cli", "build", *flags(b), "--no-progress"],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    lines = (built.stdout + built.stderr).splitlines()
    events = [msgspec.json.decode(ln) for ln in lines if ln.startswith("{")]
    told = next(e for e in events if e.get("event") == "stream")
    assert (told["skipped_duplicates"], told["applied"], told["commits"]) == (6, 2, 1), told
    assert told["lapses_applied"] == told["move_in_after_lapse"] == 0, told
    assert stream_seq(b) == 8
    for cfg in (a, b):
        assert refused(cfg) == ""
        assert not _status(cfg, manifest, AUTH).revoked  # no lapse written after the move-in
        assert _status(cfg, manifest, NEW).revoked
    assert dump(a) == dump(b) == dump(ref)  # as if the stream had never been made again
    assert not Path(a.input.quarantine).exists() or not Path(a.input.quarantine).read_bytes()
    # the adopted store's snapshot names the new stream: a new node's bootstrap takes it
    bucket = snapshot.Bucket("SNAP_ADOPT")
    fresh = _keeping_changes(node_config(tmp_path / "fresh", pki, nats.source, "adopt"))
    same_key(Path(a.keys.facts_key_file), Path(fresh.keys.facts_key_file))
    c = Cluster(nats.urls)
    try:
        s = Store.open(Path(a.store.path), readonly=True)
        try:
            snapshot.put(c, bucket, s)
        finally:
            s.close()
        got = snapshot.get(c, bucket, Path(fresh.store.path), feed=current_feed_id(c, "adopt"))
    finally:
        c.close()
    assert got.stream_seq == 8 and _consume(fresh, nats, timedelta(0)) == 8
    assert dump(fresh) == dump(a)
    # a store rebuilt from the republished stream writes the lapse first: what adopt avoids
    _consume(rebuilt, nats, timedelta(0))
    assert _status(rebuilt, manifest, AUTH).revoked

    # the changes feed: a party's cursor of the old stream resynchronises; one of the new
    # reads the new records' changes only, from the new stream's positions (the old
    # stream's loss, in a batch of the same sequences, is not read again as the new's)
    s = Store.open(Path(a.store.path), readonly=True)
    try:
        with s.read() as r:
            assert feedpos.locate(StreamPosition(old_feed, 6), r) is feedpos.Verdict.OTHER_FEED
            where = feedpos.locate(StreamPosition(new_feed, 0), r)
            assert isinstance(where, feedpos.Start)
            read = list(r.changes(where.start))
            assert r.changes_from_seq() == 0
            assert read and all(e.group == sf.StreamGroup(6, 8) for e in read), read
    finally:
        s.close()


def _current_feed(cluster: NatsCluster, name: str) -> bytes | None:
    c = Cluster(cluster.urls)
    try:
        return current_feed_id(c, name)
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_adopt_refuses_a_missing_store_or_stream_and_a_store_of_this_stream(
    tmp_path: Path, nats: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """Each refusal one line, exit 2, nothing made or changed; a store that already follows
    the stream as it stands is left as it is (adopt run twice), unless its builder refused
    that very stream (a newer release: adopting would not cure it)."""
    pki, manifest = demo_pki
    a = node_config(tmp_path / "a", pki, nats.source, "adopt-cases")
    line = _one_error(_adopt(a))  # no store yet
    assert "no status store" in line, line
    assert not (Path(a.store.path) / "data.mdb").exists()
    now = datetime.now(UTC)
    history = _files(tmp_path, manifest, now.astimezone(rules.JST).date(), now)[0]
    publish_files(a, nats, [history])
    _consume(a, nats, timedelta(0))
    kept = _meta(a)
    out = _adopt(a, "--made-again")  # the store follows this very stream: nothing to do
    assert out.returncode == 0 and "already follows" in out.stdout, (out.stdout, out.stderr)
    assert not out.stdout.lstrip().startswith("{")  # a plain line, as --help says: no JSON
    assert _meta(a) == kept
    s = Store.open(Path(a.store.path), readonly=False)
    try:
        with Commit(s) as c:
            c.put_stream_refused("a record message (sequence 9) of release 1.99, newer")
    finally:
        s.close()
    kept = _meta(a)
    line = _one_error(_adopt(a, "--made-again"))
    assert "already follows" in line and "release 1.99" in line, line
    assert _meta(a) == kept
    _delete_stream(nats, "adopt-cases")
    line = _one_error(_adopt(a, "--made-again"))  # no stream: nothing to adopt yet
    assert "does not exist" in line, line
    assert _meta(a) == kept
    # made again; the store's builder had seen the old stream longer than it applied
    publish_files(a, nats, [history])
    seq = stream_seq(a)
    s = Store.open(Path(a.store.path), readonly=False)
    try:
        with Commit(s) as c:
            c.put_stream_head(seq + 3, 1)
    finally:
        s.close()
    kept = _meta(a)
    line = _one_error(_adopt(a, "--made-again"))
    assert f"stood at sequence {seq} of the old stream, which held at least {seq + 3}" in line
    assert _meta(a) == kept
    out = _adopt(a, "--made-again", "--accept-behind")  # no node stood further: taken
    assert out.returncode == 0, out.stderr
    assert _meta(a)["feed-id"] == _current_feed(nats, "adopt-cases")


@pytest.mark.integration
@pytest.mark.real_clock  # a real nats-server, asyncio timeouts
def test_a_builders_credential_reads_the_record_ids_through_its_own_consumer_only(
    tmp_path: Path,
) -> None:
    """Under the shipped authorization (`crlbuilder nats-config`), the node's builder user
    (what the operator runs adopt with) reads every record id on the stream, headers only,
    through its own durable consumer, ticks aside; the consumer is gone after (its builder
    makes it again); another node's consumer name is refused."""
    shipped = shipped_authorization(tmp_path / "seeds", nodes=("a", "b"))
    with nats_server(tmp_path, free_ports(1)[0], extra=shipped.extra, probe=shipped.probe) as srv:
        publisher = Cluster(srv.urls, auth=shipped.auth("PUBLISHER"))
        a = Cluster(srv.urls, auth=shipped.auth("BUILDER/a"))
        try:
            records = StreamNames("JPKI_RECORDS", "jpki.records")
            ensure_stream(publisher, records)
            for i in range(5):
                m = {H_ID: f"r{i}"} if i != 3 else tick_message(datetime.now(UTC)).headers
                publisher.run(publisher.js.publish("jpki.records", b"sealed", headers=m))
            feed, ids = stream_record_ids(a, records, "a")
            assert ids == {"r0", "r1", "r2", "r4"} and feed == current_feed_id(a, "JPKI_RECORDS")
            with pytest.raises(nats.js.errors.NotFoundError):
                a.run(a.js.consumer_info("JPKI_RECORDS", "a"))
            with pytest.raises(ClusterError):
                stream_record_ids(a, records, "b")
        finally:
            publisher.close()
            a.close()


OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
CLUSTER_ENV = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "cluster.env"


def _adopt_step() -> str:
    """docs/operations.md's shell block of 'A record stream made again', step 1: the adopt
    command a root operator runs on a node."""
    text = OPERATIONS.read_text(encoding="utf-8")
    step = text.split("1. On each node, the signer's first", 1)[1]
    block = step.split("```sh\n", 1)[1].split("```", 1)[0]
    return "\n".join(line.strip() for line in block.splitlines())


def _pod_adopt_script() -> str:
    """docs/operations.md's Kubernetes adopt, step 1: the script its ``kubectl exec POD -c
    builder -- sh -c '...'`` runs in the pod's shell."""
    import shlex

    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("### A record stream made again", 1)[1].split("\n### ", 1)[0]
    [line] = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("kubectl exec ")]
    words = shlex.split(line)
    assert words[words.index("-c") + 1] == "builder", line
    sh = words[words.index("--") + 1 :]
    assert sh[:2] == ["sh", "-c"], line
    return sh[2]


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_the_adopt_step_of_operations_md_runs_as_written_on_a_node_laid_out_as_shipped(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The step's command, run by ``sh`` as written (only the roots of /etc/jpki-va,
    /var/lib/jpki-va and /opt/jpki-va moved under the test's directory, the host's name the
    node's), adopts a node's store against a server as shipped: TLS only (cluster.env's
    ``JPKI_VA_NATS_TLS_CA``) and the authorization `crlbuilder nats-config` writes (the
    node's builder seed and inbox)."""
    pki, manifest = demo_pki
    now = datetime.now(UTC)
    files = _files(tmp_path, manifest, now.astimezone(rules.JST).date() - timedelta(days=40), now)
    shipped = shipped_authorization(tmp_path / "seeds", nodes=("node1",))
    tls = tls_files(tmp_path / "tls")
    tls_block = (
        f'tls {{ cert_file: "{tls["tls.crt"]}", key_file: "{tls["tls.key"]}", timeout: 2 }}\n'
    )
    probe = resolve(NatsAuth(tls_ca=tls["ca.crt"]), []).kwargs | shipped.probe
    root = tmp_path / "node1"
    etc, var = root / "etc/jpki-va", root / "var/lib/jpki-va"
    (etc / "nats").mkdir(parents=True, mode=0o700)
    (var / "build").mkdir(parents=True, mode=0o700)
    shutil.copy(shipped.seeds["BUILDER/node1"], etc / "nats/builder.seed")
    shutil.copy(tls["ca.crt"], etc / "nats-ca.pem")
    key = etc / "facts.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    (etc / "builder.toml").write_text(
        f'[input]\nquarantine = "{var}/build/quarantine.jsonl"\n'
        f'notices = "{var}/build/notices.jsonl"\n[stream]\ndurable = "node1"\n'
        f'[crl]\nenabled = false\ndirectory = "{var}/crl"\n[ocsp]\npresign = false\n'
    )
    store = var / "store"
    unit_env = {  # what the builder's unit sets (jpki-va-node-builder.service)
        **os.environ, "JPKI_VA_STORE": str(store), "JPKI_VA_PKI": str(pki),
        "JPKI_VA_NATS_TLS_CA": str(etc / "nats-ca.pem"), **shipped.env("BUILDER/node1"),
    }  # fmt: skip
    publisher = {**os.environ, **shipped.env("PUBLISHER"), "JPKI_VA_NATS_TLS_CA": tls["ca.crt"]}
    with nats_server(
        tmp_path / "nats", free_ports(1)[0], extra=shipped.extra + tls_block, probe=probe
    ) as server:

        def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "crlbuilder.cli", *argv, "--source", server.source],
                env=env, check=False, capture_output=True, text=True, timeout=300,
            )  # fmt: skip

        def publish(paths: list[Path]) -> None:
            out = run(publisher, "publish", "--facts-key-file", str(key), *map(str, paths))
            assert out.returncode == 0, out.stderr

        def build() -> subprocess.CompletedProcess[str]:
            return run(unit_env, "build", "--config", str(etc / "builder.toml"),
                       "--facts-key-file", str(key), "--no-crl")  # fmt: skip

        publish(files[:2])
        assert build().returncode == 0
        # the stream lost with the servers' JetStream storage, made again, all republished
        server.stop_all()
        shutil.rmtree(server.servers[0].dir / "js")
        server.restart(0)
        wait_jetstream(server.urls, **probe)
        publish(files[:1])
        assert build().returncode == EXIT_STREAM_REFUSED
        (etc / "cluster.env").write_text(
            CLUSTER_ENV.read_text()
            .replace(next(x for x in CLUSTER_ENV.read_text().splitlines()
                          if x.startswith("NATS=")), f"NATS={server.source}")
            .replace("/etc/jpki-va", str(etc))
        )  # fmt: skip
        script = (
            _adopt_step()
            .replace("/etc/jpki-va", str(etc))
            .replace("/var/lib/jpki-va", str(var))
            .replace("/opt/jpki-va/venv/bin/", f"{Path(sys.executable).parent}/")
            .replace("$(hostname)", "node1")
        )
        bare = {k: v for k, v in os.environ.items() if not k.startswith("JPKI_VA_")}

        def step() -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", "-c", script], env=bare, check=False,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip

        data = store / "data.mdb"
        before = data.read_bytes()
        out = step()  # the history not all republished: refused in one line, over TLS too
        assert out.returncode == 2 and "1 record of the 6" in out.stderr, (script, out.stderr)
        assert len(out.stderr.splitlines()) == 1, out.stderr
        assert data.read_bytes() == before
        publish(files[1:])
        refused_store = tmp_path / "refused-store"  # for the pod's step, below
        shutil.copytree(store, refused_store)
        out = step()
        assert out.returncode == 0, (script, out.stderr)
        assert out.stderr == "", out.stderr
        done = msgspec.json.decode(out.stdout.splitlines()[-1])
        assert done["event"] == "stream-adopt" and done["was_seq"] == 6, done
        assert done["records_to_apply"] == 2, done
        assert build().returncode == 0  # the builder follows the new stream
        adopted = BuilderConfig(store=StoreSection(path=str(store)))
        assert stream_seq(adopted) == 8  # the new stream's last
        on_hosts = dump(adopted)

        # the Kubernetes step: the same store, refused, in a pod whose builder is held; the
        # script by the pod's shell in its builder container's environment (the pod's name,
        # its seed and inbox, the ConfigMap's NATS and TLS CA; the volume under the test)
        shutil.rmtree(store)
        shutil.copytree(refused_store, store)
        assert build().returncode == EXIT_STREAM_REFUSED
        pod_env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "POD_NAME": "node1", "NATS": server.source, "JPKI_VA_NATS_TLS_CA": tls["ca.crt"],
            **shipped.env("BUILDER/node1"),
        }  # fmt: skip
        pod_script = (
            _pod_adopt_script()
            .replace("/etc/jpki-va/builder.toml", str(etc / "builder.toml"))
            .replace("/var/lib/jpki-va", str(var))
        )
        out = subprocess.run(["sh", "-c", pod_script], env=pod_env, check=False,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, (pod_script, out.stderr)
        done = msgspec.json.decode(out.stdout.splitlines()[-1])
        assert done["event"] == "stream-adopt" and done["was_seq"] == 6, done
        assert build().returncode == 0
        assert stream_seq(adopted) == 8 and dump(adopted) == on_hosts


@pytest.mark.integration
def test_a_store_that_follows_no_stream_is_refused_before_any_nats_server_is_asked(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A group appliance's store (団体署名検証者: filled from the 機構's CRLs, `crlbuilder group
    pull`) and a store that names no record stream have nothing to adopt, whatever the
    stream: refused in one line (exit 2), its bytes unchanged, though no NATS server answers
    (a group appliance has none), and for what it is; not 'cannot connect to NATS'."""
    pki, _ = demo_pki
    nowhere = f"nats://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    for group in (True, False):
        cfg = node_config(tmp_path / ("group" if group else "plain"), pki, nowhere, "none")
        s = Store.open(Path(cfg.store.path), readonly=False)
        try:
            with Commit(s, lambda: datetime(2026, 1, 5, tzinfo=UTC)) as c:
                if group:
                    c.mark_crl_import()
                else:
                    c.put_stream_refused("")  # one commit: a store, no stream named
        finally:
            s.close()
        data = Path(cfg.store.path) / "data.mdb"
        before = data.read_bytes()
        line = _one_error(_adopt(cfg, "--made-again"))
        said = "group appliance" if group else "names no record stream"
        assert said in line, line
        assert data.read_bytes() == before


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_an_adopted_store_refuses_the_stream_made_again_once_more_before_its_first_batch(
    tmp_path: Path, nats: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """Adopted, a store stands at sequence 0 of the new stream with its whole history
    applied. Should the stream be made again once more before its builder applied a batch
    of it (the builder not started yet), the builder refuses that one too, nothing written,
    rather than take it as a store that applied nothing would: the checks of adopt (every
    record on it, the store at the end) are made again by adopting it."""
    pki, manifest = demo_pki
    a = node_config(tmp_path / "a", pki, nats.source, "adopt-twice")
    now = datetime.now(UTC)
    history, move_in, _ = _files(tmp_path, manifest, now.astimezone(rules.JST).date(), now)
    publish_files(a, nats, [history, move_in])
    _consume(a, nats, timedelta(0))
    _delete_stream(nats, "adopt-twice")
    publish_files(a, nats, [history, move_in])
    out = _adopt(a, "--made-again")
    assert out.returncode == 0, out.stderr
    _delete_stream(nats, "adopt-twice")  # made again once more, its history not yet all in
    publish_files(a, nats, [move_in])
    kept = dump(a), _meta(a)
    with pytest.raises(StreamReplaced):
        _consume(a, nats, timedelta(0))
    assert dump(a) == kept[0]
    assert {k: v for k, v in _meta(a).items() if k != "stream-refused"} == kept[1]
    line = _one_error(_adopt(a))  # the missing history named, as for the first remake
    missing = re.search(r"(\d+) records? of the (\d+) this store applied not on", line)
    assert missing is not None and 0 < int(missing[1]) < int(missing[2]), line


K8S_NODES = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "jpki-va.yaml"


def _init_script(statefulset: str = "jpki-va") -> str:
    """The shell script of the `bootstrap` init container of ``statefulset``'s pods (the
    nodes', or the signer's: deploy/kubernetes)."""
    import yaml

    for doc in yaml.safe_load_all(K8S_NODES.read_text(encoding="utf-8")):
        if doc and doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == statefulset:
            [boot] = doc["spec"]["template"]["spec"]["initContainers"]
            assert boot["name"] == "bootstrap" and boot["command"] == ["/bin/sh", "-c"]
            return str(boot["args"][0])
    raise AssertionError(f"no {statefulset} StatefulSet with a bootstrap init container")


def _success_statuses(unit: Path) -> set[int]:
    """The exit statuses systemd counts as ``unit``'s success: 0, SuccessExitStatus=, or
    any when its ExecStart= starts with "-" (a failure ignored)."""
    from tests.test_deploy import unit_settings

    s = unit_settings(unit)
    if s["ExecStart"][0].startswith("-"):
        return set(range(256))
    return {0} | {int(v) for line in s.get("SuccessExitStatus", []) for v in line.split()}


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_new_node_does_not_start_empty_from_a_stream_made_again_until_an_adopted_snapshot(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A new node's bootstrap, as systemd runs jpki-va-node-bootstrap (its command, its
    environment and credentials: `tests.test_deploy._as_systemd_runs`) and as the nodes' pods
    run their init container (its script, by ``sh``), against a server as shipped (TLS, the
    authorization nats-config writes): with no snapshot at all (a first node) it lets the
    builder start on an empty store; with the daily snapshot of a record stream since deleted
    and made again, the unit fails (its status not one systemd counts as success, and the
    node's builder units `Requires=` it) and the init container fails, nothing made, one line
    saying what to do; once a node adopted the new stream and its snapshot unit put its
    store, both start the new node from it, and its builder follows the stream to the
    adopted node's state."""
    from tests.test_deploy import (
        NODE_BOOTSTRAP_UNIT,
        NODE_BUILDER_UNIT,
        NODE_SIGNER_UNIT,
        NODE_SNAPSHOT_UNIT,
        _as_systemd_runs,
        unit_settings,
    )

    # the unit's rules: it succeeds on a snapshot got and on none in the bucket only; every
    # other status fails it, and it is tried again; its builders require it
    success = _success_statuses(NODE_BOOTSTRAP_UNIT)
    assert success == {0, EXIT_NO_SNAPSHOT}, success
    assert unit_settings(NODE_BOOTSTRAP_UNIT)["Restart"] == ["on-failure"]
    for unit in (NODE_BUILDER_UNIT, NODE_SIGNER_UNIT):
        u = unit_settings(unit, "Unit")
        assert NODE_BOOTSTRAP_UNIT.name in u["Requires"][0].split(), unit.name
        assert NODE_BOOTSTRAP_UNIT.name in u["After"][0].split(), unit.name
        assert NODE_BOOTSTRAP_UNIT.name not in u.get("Wants", [""])[0].split(), unit.name

    pki, manifest = demo_pki
    now = datetime.now(UTC)
    files = _files(tmp_path, manifest, now.astimezone(rules.JST).date() - timedelta(days=40), now)
    shipped = shipped_authorization(tmp_path / "seeds", nodes=("node1", "node2", "node3"))
    tls = tls_files(tmp_path / "tls")
    tls_block = (
        f'tls {{ cert_file: "{tls["tls.crt"]}", key_file: "{tls["tls.key"]}", timeout: 2 }}\n'
    )
    probe = resolve(NatsAuth(tls_ca=tls["ca.crt"]), []).kwargs | shipped.probe
    key = tmp_path / "facts.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    publisher = {**os.environ, **shipped.env("PUBLISHER"), "JPKI_VA_NATS_TLS_CA": tls["ca.crt"]}

    def lay_out(name: str, source: str) -> tuple[Path, Path]:
        """A node's hosts' layout under tmp_path/name: /etc/jpki-va, /var/lib/jpki-va."""
        root = tmp_path / name
        etc, var = root / "etc/jpki-va", root / "var/lib/jpki-va"
        (etc / "nats").mkdir(parents=True, mode=0o700)
        for d in ("build", "snapshot"):
            (var / d).mkdir(parents=True, mode=0o700)
        shutil.copy(shipped.seeds[f"BUILDER/{name}"], etc / "nats/builder.seed")
        shutil.copy(shipped.seeds["SNAPSHOT"], etc / "nats/snapshot.seed")
        shutil.copy(tls["ca.crt"], etc / "nats-ca.pem")
        shutil.copytree(pki, etc / "pki")
        same_key(key, etc / "facts.key")
        (etc / "builder.toml").write_text(
            f'[input]\nquarantine = "{var}/build/quarantine.jsonl"\n'
            f'notices = "{var}/build/notices.jsonl"\n[stream]\ndurable = "{name}"\n'
            f'[crl]\nenabled = false\ndirectory = "{var}/crl"\n[ocsp]\npresign = false\n'
        )
        (etc / "cluster.env").write_text(
            CLUSTER_ENV.read_text()
            .replace(next(x for x in CLUSTER_ENV.read_text().splitlines()
                          if x.startswith("NATS=")), f"NATS={source}")
        )  # fmt: skip
        return root, var / "store"

    with nats_server(
        tmp_path / "nats", free_ports(1)[0], extra=shipped.extra + tls_block, probe=probe
    ) as server:
        (node1, store1), (node2, store2), (node3, store3) = (
            lay_out(n, server.source) for n in ("node1", "node2", "node3")
        )

        def publish(paths: list[Path]) -> None:
            out = subprocess.run(
                [sys.executable, "-m", "crlbuilder.cli", "publish", "--source", server.source,
                 "--facts-key-file", str(key), *map(str, paths)],
                env=publisher, check=False, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr

        def as_unit(unit: Path, root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
            """``unit``'s command as systemd runs it, or ``argv`` in its environment."""
            command, env, cwd = _as_systemd_runs(unit, root)
            if argv:
                command = [command[0], *argv]
            return subprocess.run(command, env=env, cwd=cwd, check=False,
                                  capture_output=True, text=True, timeout=300)  # fmt: skip

        def node1_cli(*argv: str) -> subprocess.CompletedProcess[str]:
            etc = node1 / "etc/jpki-va"
            return as_unit(NODE_BUILDER_UNIT, node1, *argv, "--config", str(etc / "builder.toml"),
                           "--source", server.source)  # fmt: skip

        def pod_init(
            store: Path, role: str = "", source: str = server.source, wait: str = "300"
        ) -> subprocess.CompletedProcess[str]:
            """The init container's script in the node's pod environment (its seed, inbox,
            the ConfigMap's NATS and TLS CA); ``role`` SIGNER: the signer pod's, its seed."""
            name = store.parent.parent.parent.parent.name
            script = _init_script("jpki-va-signer" if role == "SIGNER" else "jpki-va")
            assert "--wait 300" in script
            script = script.replace("/var/lib/jpki-va", str(store.parent))
            # the ConfigMap's builder.toml, the same file in every pod
            script = script.replace(
                "/etc/jpki-va/builder.toml", str(node1 / "etc/jpki-va/builder.toml")
            )
            script = script.replace("--wait 300", f"--wait {wait}")
            env = {
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                "NATS": source, "JPKI_VA_NATS_TLS_CA": tls["ca.crt"],
                **shipped.env(role or f"BUILDER/{name}"),
            }  # fmt: skip
            return subprocess.run(["sh", "-c", script], env=env, check=False,
                                  capture_output=True, text=True, timeout=300)  # fmt: skip

        def not_started(
            out: subprocess.CompletedProcess[str], store: Path, code: int, *said: str
        ) -> None:
            """A bootstrap that failed (``code``), nothing made, one line saying what to do."""
            assert out.returncode == code, (out.returncode, out.stderr)
            line = out.stderr.splitlines()[-1]
            assert line.startswith("crlbuilder snapshot get: error: "), line
            assert "does not start from an empty store" in line, line
            assert all(s in line for s in said), line
            assert "no snapshot" not in out.stdout and not store.exists()
            assert not any(p.name.startswith(".store") for p in store.parent.iterdir())

        def refused_in_one_line(out: subprocess.CompletedProcess[str], store: Path) -> None:
            assert out.returncode == EXIT_SNAPSHOT_REFUSED, (out.returncode, out.stderr)
            [line] = out.stderr.splitlines()
            assert line.startswith("crlbuilder snapshot get: error: "), line
            assert "another record stream" in line and "crlbuilder snapshot put" in line, line
            assert "crlbuilder stream adopt" in line, line
            assert not store.exists() and not any(p.name.startswith(".store") for p in
                                                  store.parent.iterdir())  # fmt: skip

        publish(files[:2])
        built = node1_cli("build", "--facts-key-file", str(key), "--no-crl")
        assert built.returncode == 0, built.stderr
        assert stream_seq(BuilderConfig(store=StoreSection(path=str(store1)))) == 6

        # a first node (no snapshot at all): the unit succeeds, the builder starts empty
        first = as_unit(NODE_BOOTSTRAP_UNIT, node2)
        assert first.returncode == EXIT_NO_SNAPSHOT, first.stderr
        assert "no snapshot in JPKI_SNAPSHOTS" in first.stderr and not store2.exists()
        first = pod_init(store3)
        assert first.returncode == 0 and "applies the whole stream" in first.stdout, first
        assert not store3.exists()

        # no NATS server answering (the unit's --wait cut to 1 s): it fails, the builder
        # does not start, nor the pod's containers; each is tried again
        (gone,) = free_ports(1)
        away = f"nats://127.0.0.1:{gone}"
        command, env, cwd = _as_systemd_runs(NODE_BOOTSTRAP_UNIT, node2)
        command = [away if w == server.source else w for w in command]
        command[command.index("--wait") + 1] = "1"
        down = subprocess.run(command, env=env, cwd=cwd, check=False, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert down.returncode not in success
        not_started(down, store2, 1, "cannot connect to NATS", "get again once NATS answers")
        down = pod_init(store3, source=away, wait="1")  # its --wait cut to 1 s likewise
        not_started(down, store3, 1, "cannot connect to NATS")

        # a snapshot whose bytes are not a store (of the stream as it stands): the same
        async def put_damaged() -> None:
            info = snapshot.SnapshotInfo(stream_seq=6, commit=1, size=11, feed=feed.hex())
            meta = ObjectMeta(name=snapshot.OBJECT, description=msgspec.json.encode(info).decode())
            obs = await putter.js.create_object_store("JPKI_SNAPSHOTS")
            await obs.put(snapshot.OBJECT, b"not a store", meta=meta)

        reader = Cluster(server.urls, auth=shipped.auth("BUILDER/node1", tls_ca=tls["ca.crt"]))
        try:
            feed = current_feed_id(reader, "JPKI_RECORDS")
            assert feed is not None
        finally:
            reader.close()
        putter = Cluster(server.urls, auth=shipped.auth("SNAPSHOT", tls_ca=tls["ca.crt"]))
        try:
            putter.run(put_damaged())
        finally:
            putter.close()
        damaged = as_unit(NODE_BOOTSTRAP_UNIT, node2)
        assert damaged.returncode not in success
        not_started(damaged, store2, 2, "cannot open the store",
                    "put a new snapshot from a caught-up node")  # fmt: skip
        not_started(pod_init(store3), store3, 2, "put a new snapshot from a caught-up node")

        # the daily snapshot (node1's, of the stream as it stood); then the stream lost (its
        # storage gone; the snapshot bucket kept), made again and its history republished
        put = as_unit(NODE_SNAPSHOT_UNIT, node1)
        assert put.returncode == 0, put.stderr
        server.stop_all()
        [lost] = server.servers[0].dir.glob("js/jetstream/*/streams/JPKI_RECORDS")
        shutil.rmtree(lost)
        server.restart(0)
        wait_jetstream(server.urls, **probe)
        publish(files)

        # a new node now: refused, nothing made; its builder does not start (Requires=)
        refused_in_one_line(as_unit(NODE_BOOTSTRAP_UNIT, node2), store2)
        refused_in_one_line(pod_init(store3), store3)
        signer_store = tmp_path / "signer-pod/var/lib/jpki-va/store"  # a signer pod's, lost
        signer_store.parent.mkdir(parents=True)
        refused_in_one_line(pod_init(signer_store, "SIGNER"), signer_store)

        # the way out: node1 adopts the new stream, catches up, its snapshot unit puts it
        assert node1_cli("build", "--facts-key-file", str(key),
                         "--no-crl").returncode == EXIT_STREAM_REFUSED  # fmt: skip
        adopted = node1_cli("stream", "adopt")
        assert adopted.returncode == 0, adopted.stderr
        assert node1_cli("build", "--facts-key-file", str(key), "--no-crl").returncode == 0
        cfg1 = BuilderConfig(store=StoreSection(path=str(store1)))
        assert stream_seq(cfg1) == 8
        put = as_unit(NODE_SNAPSHOT_UNIT, node1)
        assert put.returncode == 0, put.stderr

        # the new nodes start from it, and follow the stream to node1's state
        boot = as_unit(NODE_BOOTSTRAP_UNIT, node2)
        assert boot.returncode == 0, boot.stderr
        boot = pod_init(store3)
        assert boot.returncode == 0 and "no snapshot" not in boot.stdout, boot
        boot = pod_init(signer_store, "SIGNER")  # the signer pod's, with its own seed
        assert boot.returncode == 0 and "no snapshot" not in boot.stdout, boot
        assert stream_seq(BuilderConfig(store=StoreSection(path=str(signer_store)))) == 8
        for root, store in ((node2, store2), (node3, store3)):
            cfg = BuilderConfig(store=StoreSection(path=str(store)))
            assert stream_seq(cfg) == 8
            etc = root / "etc/jpki-va"
            caught = as_unit(NODE_BUILDER_UNIT, root, "build", "--config",
                             str(etc / "builder.toml"), "--source", server.source,
                             "--facts-key-file", str(key), "--no-crl")  # fmt: skip
            assert caught.returncode == 0, caught.stderr
            assert dump(cfg) == dump(cfg1)
