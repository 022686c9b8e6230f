"""The NATS authorization written per node (crlbuilder.natsconfig, `crlbuilder nats-config`):
the users file refused in one line when it cannot be right, and, on a real nats-server running
what it writes, one node's credential refused what belongs to another node or to a stream's
writer (its ledger subject, its durable consumer, creating a stream it only reads)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nats.errors
import pytest
from nats.js import api

from crlbuilder.cli import main as crlbuilder_main
from crlbuilder.jetstream import Cluster, ClusterError, StreamMissing, ensure_stream
from crlbuilder.manifest import Manifest
from crlbuilder.natsconfig import NatsConfigError, parse_users
from responder.ledger import SlotCount
from responder.ledgerstream import bound
from tests.support.nats import (
    NatsCluster,
    Shipped,
    free_ports,
    nats_server,
    shipped_authorization,
)

KEY = "U" + "A" * 55


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[[user]]\nrole = "root"\nkey = "$K"\n', "role 'root' is not one of"),
        ('[[user]]\nrole = "publisher"\nkey = "SUAAAA"\n', "public NKey"),
        ('[[user]]\nrole = "responder"\nkey = "$K"\n', "a responder is one node's"),
        ('[[user]]\nrole = "snapshot"\nkey = "$K"\nnode = "a"\n', "no node or durable"),
        ('[[user]]\nrole = "builder"\nkey = "$K"\nnode = "a.b"\n', "node must be 1 to 64"),
        (f'[[user]]\nrole = "publisher"\nkey = "{KEY}"\n[[user]]\nrole = "snapshot"\n'
         f'key = "{KEY}"\n', "given to two users"),
        ('[[user]]\nrole = "responder"\nkey = "$A"\nnode = "n"\n[[user]]\nrole = "responder"\n'
         'key = "$B"\nnode = "n"\n', "two responder users for node n"),
        ('[[user]]\nrole = "builder"\nkey = "$A"\nnode = "n"\n[[user]]\nrole = "signer"\n'
         'key = "$B"\nnode = "m"\ndurable = "node-n"\n', "durable consumer node-n"),
        ("[user]\n", "no [[user]]"),
        ("[[user]\n", "not TOML"),
    ],
)  # fmt: skip
def test_a_users_file_that_cannot_be_right_is_refused_in_one_line(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(NatsConfigError, match=re.escape(says)):
        parse_users(text)
    users, out = tmp_path / "users.toml", tmp_path / "auth.conf"
    users.write_text(text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert crlbuilder_main(["nats-config", "--users", str(users), "--out", str(out)]) == 2
    assert err.getvalue().count("\n") == 1 and says in err.getvalue(), err.getvalue()
    assert not out.exists()


def test_a_ledger_message_counts_for_its_subjects_node_only() -> None:
    c = SlotCount(node="a", file_id="0" * 32, slot=0, day="2026-01-01", party="p",
                  service="sign-revocation-info", method="ocsp", count=5)  # fmt: skip
    data = msgspec.json.encode(c)
    mine = f"jpki.ledger.JPKI_LEDGER.a.{'0' * 32}.0"
    assert bound(mine, data) == c
    assert bound(f"jpki.ledger.JPKI_LEDGER.b.{'0' * 32}.0", data) is None  # a's under b's name
    assert bound(mine, b"not json") is None  # left out, not raised
    assert bound(f"jpki.ledger.OTHER.a.{'0' * 32}.0", data) is None
    # one subject per counter: another counter's subject, or the unbounded stream's format
    assert bound(f"jpki.ledger.JPKI_LEDGER.a.{'1' * 32}.0", data) is None
    assert bound(f"jpki.ledger.JPKI_LEDGER.a.{'0' * 32}.1", data) is None
    assert bound("jpki.ledger.JPKI_LEDGER.a", data) is None


@pytest.fixture(scope="module")
def two_nodes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[NatsCluster, Shipped]]:
    """A nats-server under the authorization written for nodes a and b."""
    base = tmp_path_factory.mktemp("natsconfig")
    shipped = shipped_authorization(base / "seeds", nodes=("a", "b"))
    with nats_server(base, free_ports(1)[0], extra=shipped.extra, probe=shipped.probe) as server:
        yield server, shipped


def _as(server: NatsCluster, shipped: Shipped, role: str) -> Cluster:
    """A connection of ``role``'s user: its seed and its own inbox."""
    return Cluster(server.urls, auth=shipped.auth(role))


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_responder_node_may_not_write_another_nodes_ledger(
    two_nodes: tuple[NatsCluster, Shipped],
) -> None:
    server, shipped = two_nodes
    a = _as(server, shipped, "RESPONDER/a")
    try:
        ensure_stream(a, "JPKI_LEDGER", ["jpki.ledger.JPKI_LEDGER.>"], max_msgs_per_subject=1)
        a.run(a.js.publish("jpki.ledger.JPKI_LEDGER.a.f.0", b"{}", stream="JPKI_LEDGER"))
        for other in ("jpki.ledger.JPKI_LEDGER.b.f.0", "jpki.ledger.JPKI_LEDGER.a"):
            with pytest.raises((nats.errors.Error, TimeoutError)):  # b's, or not a counter's
                a.run(a.js.publish(other, b"{}", stream="JPKI_LEDGER", timeout=2))
        assert a.run(a.js.stream_info("JPKI_LEDGER")).state.messages == 1
    finally:
        a.close()


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_builder_may_not_create_the_record_stream_nor_touch_another_nodes_consumer(
    two_nodes: tuple[NatsCluster, Shipped],
) -> None:
    server, shipped = two_nodes
    a = _as(server, shipped, "BUILDER/a")
    b = _as(server, shipped, "BUILDER/b")
    publisher = _as(server, shipped, "PUBLISHER")
    try:
        # a reader finds the stream missing at once, in one line (no create, no timeout)
        with pytest.raises(StreamMissing, match=r"^stream JPKI_RECORDS does not exist yet: its"):
            ensure_stream(a, "JPKI_RECORDS", ["jpki.records"], create=False)
        with pytest.raises((nats.errors.Error, TimeoutError)):  # nor with its own settings
            a.run(a.js.add_stream(api.StreamConfig(name="JPKI_RECORDS", subjects=["jpki.records"],
                                                   max_msgs=5)))  # fmt: skip
        ensure_stream(publisher, "JPKI_RECORDS", ["jpki.records"])  # its writer makes it
        for i in range(3):
            publisher.run(publisher.js.publish("jpki.records", b"r%d" % i))
        cfg = api.ConsumerConfig(durable_name="b", ack_policy=api.AckPolicy.ALL,
                                 filter_subject="jpki.records")  # fmt: skip
        b.run(b.js.add_consumer("JPKI_RECORDS", cfg))

        async def drain() -> int:  # a pulls and acknowledges b's records away
            sub = await a.js.pull_subscribe_bind(durable="b", stream="JPKI_RECORDS")
            got = await sub.fetch(3, timeout=2)
            for m in got:
                await m.ack()
            return len(got)

        with pytest.raises((nats.errors.Error, TimeoutError)):
            a.run(drain())
        with pytest.raises((nats.errors.Error, TimeoutError)):
            a.run(a.js.delete_consumer("JPKI_RECORDS", "b"))
        with pytest.raises((nats.errors.Error, TimeoutError)):  # nor take b's name
            other = api.ConsumerConfig(durable_name="b", filter_subject="x")
            a.run(a.js.add_consumer("JPKI_RECORDS", other, timeout=2))
        info = b.run(b.js.consumer_info("JPKI_RECORDS", "b"))
        assert info.num_pending == 3 and not info.delivered.stream_seq  # b's, untouched
    finally:
        for c in (a, b, publisher):
            c.close()


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_builder_fetches_no_crl_before_the_signer_made_the_bucket(
    two_nodes: tuple[NatsCluster, Shipped],
) -> None:
    from crlbuilder.crl.shipping import _bucket

    server, shipped = two_nodes
    a = _as(server, shipped, "BUILDER/a")
    try:
        # the signer shipped nothing yet: nothing to fetch, at once (no create refused)
        assert _bucket(a, "JPKI_CRLS", 0, create=False) is None
    finally:
        a.close()


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_registry_sync_before_the_first_change_says_the_bucket_is_not_made_yet(
    two_nodes: tuple[NatsCluster, Shipped],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from responder.cli import main as responder_main

    server, shipped = two_nodes
    for name, value in shipped.env("RESPONDER/a").items():
        monkeypatch.setenv(name, value)
    registry = tmp_path / "registry.toml"
    err = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stderr(err):
        rc = responder_main(["registry", "sync", "--registry", str(registry),
                             "--nats", server.source])  # fmt: skip
    assert rc == 2 and err.getvalue().count("\n") == 1, err.getvalue()
    assert "registry bucket JPKI_REGISTRY does not exist yet: the first change" in err.getvalue()
    assert time.monotonic() - started < 4  # at once, not a refused create's timeout
    assert not registry.exists()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, timed waits
def test_a_following_builder_waits_for_the_publisher_to_make_the_record_stream(
    tmp_path: Path, demo_pki: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A builder may not create the record stream: started first, it says it waits for it
    (not a refused create's timeout), then applies what the publisher published."""
    from tests.support import procs
    from tests.support.wait import until
    from tests.test_natsauth import _records
    from tests.test_stream import flags, node_config, stream_seq, warnings_in

    shipped = shipped_authorization(tmp_path / "seeds", nodes=("follower",))
    with nats_server(
        tmp_path / "srv", free_ports(1)[0], extra=shipped.extra, probe=shipped.probe
    ) as server:
        cfg = node_config(tmp_path / "follower", demo_pki[0], server.source, "X")
        records_stream = msgspec.structs.replace(
            cfg.stream, name="JPKI_RECORDS", subject="jpki.records"
        )
        cfg = msgspec.structs.replace(cfg, stream=records_stream)
        args = [sys.executable, "-m", "crlbuilder.cli", "build", *flags(cfg), "--no-progress",
                "--follow", "--follow-interval", "0.2"]  # fmt: skip
        env = {**os.environ, **shipped.env("BUILDER/follower")}
        log = tmp_path / "follower.log"
        missing = "stream JPKI_RECORDS does not exist yet: its writer creates it"
        with procs.started(args, log=log, env=env) as p:
            until(lambda: any(missing in m for m in warnings_in(log)) or p.poll() is not None,
                  30, "the builder's warning")  # fmt: skip
            assert p.poll() is None, log.read_text()[-2000:]
            records = sorted(_records(tmp_path, demo_pki[0]).glob("*.jsonl"))
            for name, value in shipped.env("PUBLISHER").items():
                monkeypatch.setenv(name, value)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = crlbuilder_main(["publish", "--source", server.source,
                                      "--facts-key-file", cfg.keys.facts_key_file,
                                      *map(str, records)])  # fmt: skip
            assert rc == 0
            n = msgspec.json.decode(out.getvalue())["last_seq"]
            until(lambda: stream_seq(cfg) == n, 60, "the records applied")
            assert procs.stop(p, signal.SIGTERM, 15) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "Traceback" not in text and "timeout" not in text, text[-2000:]


@pytest.mark.integration
@pytest.mark.real_clock
def test_no_user_reads_another_users_replies_and_each_works_through_its_own_inbox(
    two_nodes: tuple[NatsCluster, Shipped],
) -> None:
    """Replies, pull deliveries and object reads arrive at each user's own inbox prefix: the
    publisher's credential (nor a node's) may not subscribe to the others' (``_INBOX.>`` was
    every user's: the ledger's counts, the registry, a builder's records readable by all),
    and a pull consumer, a key-value read and an object read work through the prefix."""
    from nats.js.api import KeyValueConfig, ObjectStoreConfig

    server, shipped = two_nodes
    a, b = _as(server, shipped, "RESPONDER/a"), _as(server, shipped, "RESPONDER/b")
    spy = _as(server, shipped, "PUBLISHER")
    admin, builder = _as(server, shipped, "REGISTRY_ADMIN"), _as(server, shipped, "BUILDER/a")
    snapshot = _as(server, shipped, "SNAPSHOT")
    errors: list[str] = []
    seen: list[bytes] = []

    async def listen(subject: str) -> None:
        async def got(m: nats.aio.msg.Msg) -> None:
            seen.append(m.data)

        async def error(e: Exception) -> None:
            errors.append(str(e))

        spy.nc._error_cb = error
        await spy.nc.subscribe(subject, cb=got)
        await spy.nc.flush()

    try:
        for subject in ("_INBOX.>", f"{shipped.inboxes['RESPONDER/a']}.>", ">"):
            spy.run(listen(subject))
        ensure_stream(a, "JPKI_LEDGER", ["jpki.ledger.JPKI_LEDGER.>"], max_msgs_per_subject=1)
        a.run(a.js.publish("jpki.ledger.JPKI_LEDGER.a.f.1", b'{"party":"p"}', stream="JPKI_LEDGER"))

        async def pull() -> list[bytes]:  # b reads the ledger through its own inbox
            sub = await b.js.pull_subscribe("jpki.ledger.JPKI_LEDGER.>", stream="JPKI_LEDGER")
            try:
                return [m.data for m in await sub.fetch(10, timeout=5)]
            finally:
                await sub.unsubscribe()

        assert b'{"party":"p"}' in b.run(pull())
        kv = admin.run(admin.js.create_key_value(KeyValueConfig(bucket="JPKI_REGISTRY")))
        admin.run(kv.put("registry", b"parties"))
        read = a.run(a.js.key_value("JPKI_REGISTRY"))
        assert a.run(read.get("registry")).value == b"parties"
        obs = snapshot.run(snapshot.js.create_object_store("JPKI_SNAPSHOTS",
                                                           config=ObjectStoreConfig()))  # fmt: skip
        snapshot.run(obs.put("s", b"store" * 1000))
        got = builder.run(builder.run(builder.js.object_store("JPKI_SNAPSHOTS")).get("s"))
        assert got.data == b"store" * 1000
        spy.run(asyncio.sleep(0.5))
        assert not seen, seen[:2]  # none of the others' replies
        assert sum("permissions violation for subscription" in e.lower() for e in errors) == 3
    finally:
        for c in (a, b, spy, admin, builder, snapshot):
            c.close()


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_user_without_its_own_inbox_is_told_which_to_set(
    two_nodes: tuple[NatsCluster, Shipped], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose JPKI_VA_NATS_INBOX is not its user's: its replies are refused, and it
    says, in the one line of that error, what to set (not only a timeout after it)."""
    server, shipped = two_nodes
    monkeypatch.delenv("JPKI_VA_NATS_INBOX", raising=False)
    lines: list[str] = []
    c = Cluster(server.urls, warn=lines.append, auth=shipped.auth("PUBLISHER", inbox="_INBOX_x"))
    try:
        with pytest.raises((nats.errors.Error, TimeoutError)):  # no reply reaches it
            c.run(c.js.account_info())
    finally:
        c.close()
    (line,) = [x for x in lines if "violation for subscription" in x]
    assert line.endswith("set JPKI_VA_NATS_INBOX to the one `crlbuilder nats-config` wrote "
                         "beside its user)"), line  # fmt: skip


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_responder_node_may_not_drop_another_nodes_ledger_counts_by_message_id(
    two_nodes: tuple[NatsCluster, Shipped], tmp_path: Path
) -> None:
    """A node publishes its own ledger subject only, but JetStream's duplicate window is the
    stream's: a message id another node will ship (``<node>/<file>/<slot>/<count>``, its
    earlier ones read from the stream) taken in advance on its own subject made that node's
    counter a 'duplicate', acknowledged and dropped: its counts (帳簿, Act §40) missing
    from the service's. Ledger messages carry no message id (a repeat is merged once)."""
    from responder.ledger import Ledger
    from responder.ledgerstream import gather, ship
    from tests.test_ledgerstream import count, service_total

    server, shipped = two_nodes
    a, b = _as(server, shipped, "RESPONDER/a"), _as(server, shipped, "RESPONDER/b")
    nodes, gathered = tmp_path / "b", tmp_path / "gathered"
    try:
        ensure_stream(a, "JPKI_LEDGER", ["jpki.ledger.JPKI_LEDGER.>"], max_msgs_per_subject=1)
        count(nodes, "party-1", 3)
        with Ledger.open(nodes) as ledger:
            ledger.collect()
            pending = ledger.ship_pending("b")
            assert pending and all(c.node == "b" for c in pending)
            for c in pending:  # a takes b's next message ids first, on its own subjects
                taken = {"Nats-Msg-Id": f"{c.node}/{c.file_id}/{c.slot}/{c.count}"}
                mine = f"jpki.ledger.JPKI_LEDGER.a.{c.file_id}.{c.slot}"
                a.run(a.js.publish(mine, b"{}", headers=taken))
            assert ship(b, ledger, "b") == len(pending)
        with Ledger.open(gathered) as ledger:
            gather(a, ledger)
        assert service_total(gathered) == 3  # b's counts, all of them
    finally:
        a.close()
        b.close()


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_stream_made_first_with_other_settings_is_refused_not_used(tmp_path: Path) -> None:
    """The servers let a role create its stream by name; its settings are the creator's. A
    node's responder seed that makes the ledger stream first, in memory with a minute's age
    limit (the service's 帳簿 counts dropped after a minute), or the watch stream with the
    record stream's subject as well (the record stream then refused), is refused by every
    node in one line, not used."""
    from nats.js import api

    shipped = shipped_authorization(tmp_path / "seeds", nodes=("a", "b"))
    with nats_server(
        tmp_path / "srv", free_ports(1)[0], extra=shipped.extra, probe=shipped.probe
    ) as server:
        a, b = _as(server, shipped, "RESPONDER/a"), _as(server, shipped, "RESPONDER/b")
        made = [
            ("JPKI_LEDGER", ["jpki.ledger.JPKI_LEDGER.>"], [], "storage memory, not file"),
            ("JPKI_WATCH", ["jpki.watch"], ["jpki.records"], "subjects"),
        ]
        try:
            for name, subjects, more, says in made:
                a.run(a.js.add_stream(api.StreamConfig(
                    name=name, subjects=subjects + more, max_age=60.0,
                    storage=api.StorageType.MEMORY,
                )))  # fmt: skip
                for c in (a, b):
                    with pytest.raises(ClusterError) as e:
                        ensure_stream(c, name, subjects)
                    assert str(e.value).startswith(
                        f"stream {name} is not as jpki-va makes it ({says}"
                    ), str(e.value)
                    assert "\n" not in str(e.value)
        finally:
            a.close()
            b.close()


@pytest.mark.integration
@pytest.mark.real_clock
def test_the_upgrade_to_own_inboxes_has_a_transition_where_old_and_new_clients_work(
    tmp_path: Path,
) -> None:
    """Servers that only allow a user's own inbox refuse a client of an earlier release (no
    JPKI_VA_NATS_INBOX: nats-py's _INBOX), and such servers' users file had only _INBOX.>,
    which refuses the new clients' prefix: no order of upgrade works without a step where
    both do (`nats-config --shared-inbox`), written again without it afterwards."""
    from crlbuilder.natsauth import NatsAuth, new_user_seed
    from crlbuilder.natsconfig import User, authorization

    seed = tmp_path / "publisher.seed"
    user = User("publisher", new_user_seed(seed))
    old, new = NatsAuth(nkey_seed=str(seed)), NatsAuth(nkey_seed=str(seed), inbox=user.inbox)
    probe = {"nkeys_seed_str": seed.read_text().strip(), "inbox_prefix": user.inbox}

    def works(server: NatsCluster, auth: NatsAuth) -> bool:
        c = Cluster(server.urls, auth=auth, warn=lambda _: None)
        try:
            c.run(c.js.account_info())
            return True
        except (nats.errors.Error, TimeoutError):
            return False
        finally:
            c.close()

    for shared, both in ((True, True), (False, False)):
        extra = authorization([user], "the test", shared_inbox=shared)
        d = tmp_path / f"shared-{shared}"
        with nats_server(d, free_ports(1)[0], extra=extra, probe=probe) as server:
            assert works(server, new)
            assert works(server, old) is both


@pytest.mark.integration
@pytest.mark.real_clock
def test_only_the_snapshot_role_purges_the_record_stream_and_reads_no_record_through_it(
    two_nodes: tuple[NatsCluster, Shipped],
) -> None:
    """The record stream's compaction (`crlbuilder stream compact`) runs with the snapshot
    role's credential, which may now read the stream's state and single messages and purge
    it; no other role may purge it (a builder, a responder, the feed), and the snapshot role
    still may not publish a record nor take the records through a consumer."""
    server, shipped = two_nodes
    snap = _as(server, shipped, "SNAPSHOT")
    others = [_as(server, shipped, r) for r in ("BUILDER/a", "RESPONDER/a", "PUBLISHER")]
    publisher = others[-1]
    try:
        ensure_stream(publisher, "JPKI_RECORDS", ["jpki.records"])
        for i in range(3):
            publisher.run(publisher.js.publish("jpki.records", b"p%d" % i))

        def state() -> tuple[int, int]:
            s = publisher.run(publisher.js.stream_info("JPKI_RECORDS")).state
            return int(s.first_seq), int(s.last_seq)

        first, last = state()
        for c in others:
            with pytest.raises((nats.errors.Error, TimeoutError)):
                c.run(c.nc.jetstream(timeout=1).purge_stream("JPKI_RECORDS", seq=last))
        assert state() == (first, last)
        js = snap.nc.jetstream(timeout=1)
        with pytest.raises((nats.errors.Error, TimeoutError)):
            snap.run(js.publish("jpki.records", b"forged", timeout=1))
        with pytest.raises((nats.errors.Error, TimeoutError)):
            snap.run(js.add_consumer("JPKI_RECORDS", api.ConsumerConfig(durable_name="snap")))
        assert snap.run(js.get_msg("JPKI_RECORDS", seq=last)).seq == last  # the tail's times
        assert snap.run(js.purge_stream("JPKI_RECORDS", seq=last))
        assert state() == (last, last)
    finally:
        for c in (snap, *others):
            c.close()
