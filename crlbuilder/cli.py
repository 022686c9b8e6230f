"""The `crlbuilder` command: subcommands and their flags, nothing else.

    crlbuilder pki init --out DIR          the demo/test PKI
    crlbuilder synth --pki DIR --holders N --out DIR
    crlbuilder facts-key --out FILE        a new key sealing the four facts
    crlbuilder build --config FILE [...]   records -> store, OCSP answers, CRLs
    crlbuilder publish --source nats://... FILE...  record files -> the record stream
    crlbuilder snapshot put|get --source nats://... --store DIR   store snapshots
    crlbuilder stream adopt --source nats://... --store DIR   keep a store across a stream made again
    crlbuilder stream compact --source nats://...  purge the record stream behind the latest snapshot
    crlbuilder import-crl ...              a group appliance's store from the 機構's CRLs
    crlbuilder group init|pull ...         a group appliance (団体署名検証者): set up, CRL feed
    crlbuilder status --store DIR ...      what the store says of one serial
    crlbuilder disclose --store DIR --holder HEX ...   a holder's records (開示, Act §58)
    crlbuilder store copy SOURCE TARGET    rewrite a store with live data only
    crlbuilder keys ...                    key ceremonies (two operators) and the operation log

Exit codes: 0 done, 1 the work failed (summary says why), 2 bad usage or
configuration; and a command's own: `build` 3 the record stream refused
(`EXIT_STREAM_REFUSED`), 5 a token refused the PIN (`EXIT_PIN_REFUSED`); `snapshot get` 3 the snapshot refused (`EXIT_SNAPSHOT_REFUSED`),
4 no snapshot in the bucket (`EXIT_NO_SNAPSHOT`); `stream compact` 3 refused, nothing purged
(`EXIT_COMPACTION_REFUSED`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from crlbuilder import ceremonycli
from crlbuilder.config import BuilderConfig, add_arguments, load_config, write_facts_key
from crlbuilder.crl import importcli
from crlbuilder.group import initcli, pullcli
from crlbuilder.lifecycle import no_core_dumps
from crlbuilder.manifest import ManifestError
from crlbuilder.options import ConfigError, describe_commands, instant, run_command
from crlbuilder.seal import take_facts_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from crlbuilder.build import Builder, BuildReport
    from crlbuilder.jetstream import Cluster
    from crlbuilder.store.lmdbstore import Store
    from crlbuilder.stream import StreamCipher, StreamNames
    from crlbuilder.streamadopt import TokenSide


EPILOG: Final = (
    "Exit codes: 0 done, 1 the work failed (the message says why), 2 bad usage or "
    "configuration; build 3 the record stream refused, 5 a signing token refused the PIN "
    "(the units restart neither); snapshot get and stream compact have their own (see their --help). Every "
    "COMMAND has its own --help. The configuration: config/builder.toml (every field, "
    "commented); operating it: README.md and docs/operations.md."
)
"""What every ``crlbuilder`` --help ends with."""

SNAPSHOT_RETRY_SECONDS: Final = 2.0
"""Between two connection attempts of ``snapshot --wait``."""

EXIT_STREAM_REFUSED: Final = 3
"""``build``'s exit status when its builder refused the record stream (`StreamRefused`: a
newer release's message, the stream made again): starting again would say it again, so the
node units do not restart it for this status (``RestartPreventExitStatus=3``). It is its own
status, not 2 (a refused command line or configuration, but also a signing token not there
yet at start, which a restart does cure)."""

EXIT_SNAPSHOT_REFUSED: Final = 3
"""``snapshot get``'s exit status when the latest snapshot cannot start this node
(`snapshot.SnapshotRefused`: filled from another instance of the record stream, deleted and
made again since, or put by a newer release): a new node's bootstrap fails, so that its
builder does not fill an empty store from a stream made again (a rebuild, whose lapses are
dated by the republishing: docs/operations.md, "A record stream made again"); getting it
again says it again until a snapshot of the new stream is put. The number is
`EXIT_STREAM_REFUSED`'s: refused, and trying again will not help until the operator acts."""

EXIT_NO_SNAPSHOT: Final = 4
"""``snapshot get``'s exit status when the bucket holds no snapshot, as JetStream answered
(`snapshot.NoSnapshot`: the bucket is not there, or holds no snapshot object): a first node,
whose builder rightly applies the record stream from its start. The only status besides 0 on
which a new node's bootstrap lets its builder start; every other (1: no NATS server
answering, JetStream failing, a read failed; 2: a refused command line, configuration or
credential, or bytes that are not a store; 3: refused; a crash) fails it, and it is tried
again: nothing then tells whether the stream was made again since, and an empty store
filled from a stream made again is a rebuild. Its own number, not 1: 1 is every command's
"the work failed", and a Python crash's status; a unit or script that took 1 for "no
snapshot, go on" still starts empty when NATS does not answer, so it must be replaced (a
stale one fails a first node's bootstrap instead, which is safe and says so)."""


def _seconds(text: str) -> float:
    """A non-negative, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds are a finite number >= 0")
    return value


def _serial(text: str) -> int:
    """A certificate serial number (argparse type): decimal or 0x-hex, positive, at most
    20 octets (RFC 5280 §4.1.2.2), as the store keys it."""
    from crlbuilder.store.format import SERIAL_BYTES

    try:
        value = int(text, 0)
    except ValueError:
        hint = ""
        if all(c in "0123456789abcdefABCDEF" for c in text):  # as /v1 and the demo write it
            hint = f": for hex, as the /v1 services write serials, give 0x{text}"
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number (decimal or 0x-hex){hint}"
        ) from None
    if value <= 0 or value.bit_length() > 8 * SERIAL_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a serial number is positive and at most {SERIAL_BYTES} octets"
        )
    return value


def _build(args: argparse.Namespace) -> int:
    from crlbuilder.build import AsOfError, Builder, SpoolBusy, sources
    from crlbuilder.keys.signer import EXIT_PIN_REFUSED, PinRefused, SignerError
    from crlbuilder.store.format import StoreFormatError, StoreWriteError

    if args.max_idle is not None and not args.follow:
        print("crlbuilder build: error: --max-idle applies to --follow only", file=sys.stderr)
        return 2
    paths: list[Path] = []
    stream: tuple[list[str], StreamNames, StreamCipher] | None = None
    try:
        cfg = load_config(args.config, args)
        # what refuses the build is checked before the store is opened (or created)
        if not cfg.input.source:
            paths = sources(cfg)
            if args.follow and (why := _no_spool(cfg.input.spool)):
                print(f"crlbuilder build: error: --follow {why}", file=sys.stderr)
                return 2
        else:
            if args.as_of is not None:
                print("crlbuilder build: error: --as-of applies to record files, not to "
                      "--source (a stream is applied as of the clock)", file=sys.stderr)  # fmt: skip
                return 2
            stream = _stream(cfg)
        builder = Builder(
            cfg, progress=(not args.no_progress and sys.stderr.isatty()) or args.progress
        )
        builder.presign_full = args.presign_full
        if args.follow:  # the start-up build's pre-signing is cut into runs like the loop's
            builder.presign_seconds = cfg.ocsp.presign_slice_seconds or None
            builder.hold_undelivered = True  # a full quarantine disk stops no revocation
    except (ConfigError, ManifestError, StoreFormatError, SignerError, OSError) as e:
        print(f"crlbuilder build: error: {e}", file=sys.stderr)
        return EXIT_PIN_REFUSED if isinstance(e, PinRefused) else 2
    if stream is not None:
        try:
            return _build_from_stream(args, cfg, builder, stream)
        except StoreWriteError as e:  # as the spool path: one line naming the store, exit 1
            print(f"crlbuilder build: error: {e}", file=sys.stderr)
            return 1
        finally:
            builder.close()
    try:
        try:
            report = builder.build(paths, args.as_of)
        except (FileNotFoundError, AsOfError, SignerError) as e:
            print(f"crlbuilder build: error: {e}", file=sys.stderr)
            return EXIT_PIN_REFUSED if isinstance(e, PinRefused) else 2
        builder.emit({"event": "build", **report.as_dict()})
        if args.follow:
            try:
                builder.follow(
                    Path(cfg.input.spool), cfg.input.follow_interval, max_idle=args.max_idle
                )
            except SpoolBusy as e:
                print(f"crlbuilder build: error: {e}", file=sys.stderr)
                return 2
    except StoreWriteError as e:  # a full disk: what was committed stays, the rest at a restart
        print(f"crlbuilder build: error: {e}", file=sys.stderr)
        return 1
    finally:
        builder.close()
    return 0


def _no_spool(spool: str) -> str:
    """Why ``build --follow`` cannot watch ``spool`` ("" when it can): checked before the
    start-up build, not after it."""
    if not spool:
        return "needs input.spool (--spool DIR)"
    if not Path(spool).is_dir():
        return (
            f"needs the spool directory {spool}, which is not a directory here (create it, "
            "writable by whoever drops record files)"
        )
    return ""


def _stream(cfg: BuilderConfig) -> tuple[list[str], StreamNames, StreamCipher]:
    """The servers named by ``input.source``, the stream's names, the cipher of its payloads."""
    from crlbuilder.config import facts_key
    from crlbuilder.natsservers import parse_servers
    from crlbuilder.stream import StreamCipher, StreamNames

    try:
        servers = parse_servers(cfg.input.source)
    except ValueError as e:
        raise ConfigError("<configuration>", "input.source", str(e)) from None
    cipher = StreamCipher(facts_key(cfg))
    names = StreamNames(
        name=cfg.stream.name,
        subject=cfg.stream.subject,
        replicas=cfg.stream.replicas,
        duplicate_window_seconds=cfg.stream.duplicate_window_seconds,
    )
    return servers, names, cipher


def _build_from_stream(
    args: argparse.Namespace,
    cfg: BuilderConfig,
    builder: Builder,
    stream: tuple[list[str], StreamNames, StreamCipher],
) -> int:
    from crlbuilder.build import StreamRefused
    from crlbuilder.jetstream import Cluster, ClusterError, wait_for_cluster
    from crlbuilder.stream import Consumer, default_durable

    servers, names, cipher = stream
    try:

        def warn(message: str) -> None:
            builder.emit({"event": "warning", "message": message})

        if args.follow:  # it runs until stopped: a cluster not up yet is waited for
            waited = wait_for_cluster(
                lambda: Cluster(servers, warn=warn, auth=cfg.stream.nats_auth()),
                interval=cfg.input.follow_interval,
                warn=warn,
            )
            if waited is None:
                return 0  # stopped while waiting: nothing read
            cluster = waited
        else:
            cluster = Cluster(servers, warn=warn, auth=cfg.stream.nats_auth())
    except (ConfigError, ClusterError) as e:
        if builder.store.created:  # nothing read: a store this run made is not left behind
            builder.store.discard()
        print(f"crlbuilder build: error: {e}", file=sys.stderr)
        return 2
    try:
        consumer = Consumer(
            cluster, names, cfg.stream.durable or default_durable(), cipher,
            ack_wait_seconds=cfg.stream.ack_wait_seconds,
            create=cfg.crl.enabled,  # the signer; a builder only reads it, and waits for it
        )  # fmt: skip
        ship, fetch = _crl_exchange(cfg, builder, cluster)
        builder.consume(
            consumer, follow=args.follow, max_idle=args.max_idle,
            tail_wait=cfg.stream.tail_wait_seconds, interval=cfg.input.follow_interval,
            tick_every=cfg.stream.tick_seconds, ship=ship, fetch_crls=fetch,
        )  # fmt: skip
        if fetch is not None:
            fetch()
    except ClusterError as e:
        print(f"crlbuilder build: error: {e}", file=sys.stderr)
        return 1
    except StreamRefused as e:  # nothing of the stream written: the store stays as it was
        print(f"crlbuilder build: error: {e}", file=sys.stderr)
        return EXIT_STREAM_REFUSED
    finally:
        cluster.close()
    return 0


def _crl_exchange(
    cfg: BuilderConfig, builder: Builder, cluster: Cluster
) -> tuple[Callable[[BuildReport], object] | None, Callable[[], object] | None]:
    """The CRL signer ships what it produces; a node without CA keys fetches it
    (`crlbuilder.crl.shipping`). Empty ``stream.crl_bucket``: neither."""
    from crlbuilder.crl.shipping import Fetcher, ShippingError, continue_numbering, ship
    from crlbuilder.jetstream import ClusterError

    bucket = cfg.stream.crl_bucket
    if not bucket:
        return None, None
    directory = Path(cfg.crl.directory)
    fetcher = Fetcher(cluster, bucket, builder.store, builder.manifest, directory,
                      cfg.stream.replicas, keep_days=cfg.crl.keep_days)  # fmt: skip
    if cfg.crl.enabled:
        # before it signs: go on after the CRL numbers already shipped (a signer whose store
        # and directory know less: rebuilt, restored, another machine), never repeat one
        try:
            taken = continue_numbering(builder.store, fetcher.shipped_numbers())
        except ShippingError as e:
            raise ClusterError(f"the CRLs shipped to {bucket} do not check out: {e}") from None
        if taken:
            builder.emit({"event": "crl-numbering", "issuers": taken, "bucket": bucket})

        def _ship(report: BuildReport) -> object:
            n = ship(cluster, bucket, builder.store, directory, report.crl_files,
                     replicas=cfg.stream.replicas)  # fmt: skip
            if n:
                builder.emit({"event": "crl-shipped", "files": n, "bucket": bucket})
            return n

        return _ship, None

    def _fetch() -> object:
        try:
            placed = fetcher.fetch(int(time.time()))
        except ShippingError as e:
            builder.emit({"event": "crl-refused", "message": str(e)})
            return 0
        except ClusterError as e:  # the cluster is unreachable for now: the next turn retries
            builder.emit({"event": "warning", "message": str(e)})
            return 0
        if placed:
            builder.emit({"event": "crl-fetched", "files": len(placed), "bucket": bucket})
        return len(placed)

    return None, _fetch


def _publish(args: argparse.Namespace) -> int:
    from crlbuilder.ingest import first_line_end, list_sources
    from crlbuilder.jetstream import Cluster, ClusterError
    from crlbuilder.stream import publish

    try:
        cfg = load_config(args.config, args)
        if not cfg.input.source:
            raise ConfigError(
                "<configuration>", "input.source", "publish needs --source nats://..."
            )
        paths = list_sources(args.files)
        for path in paths:  # on the stream it would be applied: refused before anything goes
            found = first_line_end(path)
            if found is not None:
                print(f"crlbuilder publish: error: {path} line {found[0]}: `{found[1]}` ends in "
                      "a line feed, which the field's format does not hold: nothing published "
                      "(correct the record, then publish again)", file=sys.stderr)  # fmt: skip
                return 2
        servers, names, cipher = _stream(cfg)
        cluster = Cluster(servers, auth=cfg.stream.nats_auth())
    except (ConfigError, ClusterError, OSError) as e:
        print(f"crlbuilder publish: error: {e}", file=sys.stderr)
        return 2
    try:
        report = publish(cluster, names, paths, cipher, batch_size=cfg.input.batch_size)
    except ClusterError as e:
        print(f"crlbuilder publish: error: {e}; publishing the same files again is safe "
              "(records are deduplicated by id)", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        cluster.close()
    out = {"event": "publish", "stream": names.name, "files": len(paths),
           "published": report.published, "duplicates": report.duplicates,
           "last_seq": report.last_seq}  # fmt: skip
    print(msgspec.json.encode(out).decode())
    return 0


def _config_with_servers(
    args: argparse.Namespace, what: str
) -> tuple[BuilderConfig, list[str]] | None:
    """The configuration and the NATS servers its ``input.source`` names, for a command that
    needs them; None once the refusal is said (``what: error: ...``, exit 2)."""
    from crlbuilder.natsservers import parse_servers

    try:
        cfg = load_config(args.config, args)
        return cfg, parse_servers(cfg.input.source)
    except (ConfigError, ValueError) as e:
        print(f"{what}: error: {e} (--source nats://HOST:PORT,...)", file=sys.stderr)
        return None


def _connected(
    cfg: BuilderConfig, servers: list[str], what: str, *, failed: str = ""
) -> Cluster | int:
    """A connection to ``servers`` with the configuration's NATS credential, for a one-shot
    command; else the exit status once the refusal is said (``what: error: ...``): 2 a
    credential that will not do, 1 no NATS server answering (``failed`` added: what the
    failure left undone)."""
    from crlbuilder.jetstream import Cluster, ClusterError, CredentialError

    try:
        return Cluster(servers, auth=cfg.stream.nats_auth())
    except CredentialError as e:
        print(f"{what}: error: {e}", file=sys.stderr)
        return 2
    except ClusterError as e:
        print(f"{what}: error: {e}{failed}", file=sys.stderr)
        return 1


_GET_FAILED: Final = (
    "; nothing made, and no snapshot looked for or got: this node does not start from an empty "
    "store (the record stream may have been made again since), get again once NATS answers "
    "(a snapshot that cannot be read time after time: put a new one from a caught-up node)"
)
"""What ``snapshot get``'s exit 1 adds to its error: what the operator does."""


_GET_STATUSES: Final = (
    "get's exit status: 0 got; "
    f"{EXIT_NO_SNAPSHOT} no snapshot in the bucket, as JetStream answered (the bucket is "
    "not there, or holds no snapshot): a first node, its builder fills an empty store from "
    "the stream; 1 no NATS server answering (after --wait), JetStream failing, or a read "
    "failed; 2 a refused command line, configuration or credential, or snapshot bytes "
    "that are not a store (put a new one from a caught-up node); "
    f"{EXIT_SNAPSHOT_REFUSED} the latest snapshot refused (of another instance of the "
    "record stream, made again since, or a newer release's): put a snapshot from a node "
    "that adopted the new stream (crlbuilder stream adopt, then crlbuilder snapshot put "
    f"there). A new node's bootstrap lets its builder start on 0 and {EXIT_NO_SNAPSHOT} "
    "only, and fails and is tried again on every other status: its builder does not start "
    "on an empty store."
)
"""``snapshot get``'s exit statuses, in its ``--help`` and ``snapshot --help``."""


def _snapshot(args: argparse.Namespace) -> int:
    from crlbuilder import snapshot
    from crlbuilder.jetstream import Cluster, ClusterError, CredentialError
    from crlbuilder.store.format import StoreFormatError
    from crlbuilder.store.lmdbstore import Store
    from crlbuilder.stream import current_feed_id, feed_and_first

    what = f"crlbuilder snapshot {args.snapshot_command}"
    loaded = _config_with_servers(args, what)
    if loaded is None:
        return 2
    cfg, servers = loaded
    bucket = snapshot.Bucket(cfg.stream.snapshot_bucket, cfg.stream.replicas)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            cluster = Cluster(servers, auth=cfg.stream.nats_auth())
            break
        except CredentialError as e:  # a seed file that will not do: waiting will not help
            print(f"{what}: error: {e}", file=sys.stderr)
            return 2
        except ClusterError as e:
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"{what}: error: {e}{_GET_FAILED if args.snapshot_command == 'get' else ''}",
                      file=sys.stderr)  # fmt: skip
                return 1
            # a node's bootstrap may run before its NATS server answers (--wait)
            pause = min(SNAPSHOT_RETRY_SECONDS, left)
            print(f"{what}: {e}; trying again in {pause:.0f} s", file=sys.stderr, flush=True)
            time.sleep(pause)
    try:
        if args.snapshot_command == "put":
            store = Store.open(cfg.store.path, readonly=True)
            try:
                stream = feed_and_first(cluster, cfg.stream.name)  # None: no stream yet
                info = snapshot.put(cluster, bucket, store, stream=stream)
            finally:
                store.close()
        else:
            feed = current_feed_id(cluster, cfg.stream.name)  # None: no stream yet
            info = snapshot.get(cluster, bucket, Path(cfg.store.path), feed=feed)
    except snapshot.NoSnapshot as e:  # get only: a first node
        print(f"{what}: {e}; its builder applies the record stream from its start",
              file=sys.stderr)  # fmt: skip
        return EXIT_NO_SNAPSHOT
    except snapshot.SnapshotRefused as e:
        print(f"{what}: error: {e}", file=sys.stderr)
        return EXIT_SNAPSHOT_REFUSED if args.snapshot_command == "get" else 2
    except snapshot.SnapshotDamaged as e:
        print(f"{what}: error: {e}; nothing made: put a new snapshot from a caught-up node "
              "(crlbuilder snapshot put there), then get again; this node does not start "
              "from an empty store", file=sys.stderr)  # fmt: skip
        return 2
    except StoreFormatError as e:
        print(f"{what}: error: {e}", file=sys.stderr)
        return 2
    except (ClusterError, snapshot.SnapshotCopyError) as e:
        print(f"{what}: error: {e}{_GET_FAILED if args.snapshot_command == 'get' else ''}",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        cluster.close()
    out = {"event": f"snapshot-{args.snapshot_command}", "bucket": bucket.name,
           "store": cfg.store.path, **msgspec.structs.asdict(info)}  # fmt: skip
    print(msgspec.json.encode(out).decode())
    return 0


def _facts_key(args: argparse.Namespace) -> int:
    try:
        write_facts_key(args.out)
    except FileExistsError as e:
        why = (
            f"{args.out} exists; refusing to replace a key"
            if e.filename is None or Path(e.filename) == args.out
            else f"{e.filename} is not a directory"  # a file where a parent directory goes
        )
        print(f"crlbuilder facts-key: error: {why}", file=sys.stderr)
        return 2
    print(f"{args.out}: new facts key (mode 0600)")
    return 0


def _nats_key(args: argparse.Namespace) -> int:
    from crlbuilder.natsauth import new_user_seed

    try:
        public = new_user_seed(args.out)
    except FileExistsError:
        print(f"crlbuilder nats-key: error: {args.out} exists; refusing to replace a seed",
              file=sys.stderr)  # fmt: skip
        return 2
    except OSError as e:
        print(f"crlbuilder nats-key: error: {args.out}: {e.strerror}", file=sys.stderr)
        return 2
    print(public)  # the seed stays in the file: the server's configuration names this key
    return 0


def _nats_config(args: argparse.Namespace) -> int:
    from crlbuilder.natsconfig import NatsConfigError, authorization, parse_users

    try:
        text = args.users.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8"
        print(f"crlbuilder nats-config: error: {args.users}: {why}", file=sys.stderr)
        return 2
    try:
        users = parse_users(text, str(args.users))
        out = authorization(users, str(args.users), shared_inbox=args.shared_inbox)
    except NatsConfigError as e:
        print(f"crlbuilder nats-config: error: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(out)
        return 0
    from crlbuilder.atomicfile import write_whole

    try:  # no secret in it: the servers' account reads it
        write_whole(args.out, out.encode(), 0o644)
    except OSError as e:
        print(f"crlbuilder nats-config: error: {args.out}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def _status(args: argparse.Namespace) -> int:
    from crlbuilder.store.format import StoreFormatError, status_key
    from crlbuilder.store.lmdbstore import Store

    try:
        store = Store.open(args.store, readonly=True)
    except StoreFormatError as e:
        print(f"crlbuilder status: error: {e}", file=sys.stderr)
        return 2
    try:
        with store.read() as r:
            issuers = {i.id: i for i in r.issuers()}
            crl_import = r.crl_import()
            meta = issuers.get(args.issuer)
            st = r.status(status_key(meta.index, args.serial)) if meta is not None else None
        if meta is None:
            print(
                f"crlbuilder status: error: unknown issuer {args.issuer!r}; known: {sorted(issuers)}",
                file=sys.stderr,
            )
            return 2
        if st is None:
            absent = "good" if crl_import else "unknown"
            out: dict[str, object] = {
                "issuer": args.issuer,
                "serial": args.serial,
                "status": absent,
            }
        else:
            out = {
                "issuer": args.issuer,
                "serial": args.serial,
                "status": "erased" if st.erased else "revoked" if st.revoked else "good",
                "version": st.version,
            }
            if st.not_after:  # a CRL-imported store does not know the validity
                out.update(
                    not_before=datetime.fromtimestamp(st.not_before, UTC),
                    not_after=datetime.fromtimestamp(st.not_after, UTC),
                )
            if st.revoked and not st.erased:
                cat = st.category_enum
                out.update(
                    category=cat.value if cat else None,
                    reason=st.reason_enum.name,
                    revoked_at=datetime.fromtimestamp(st.revoked_at, UTC),
                )
        print(msgspec.json.encode(out).decode())
        return 0
    finally:
        store.close()


def _disclose(args: argparse.Namespace) -> int:
    """`crlbuilder disclose`: the holder's records (Act §58) as one JSON document
    (`crlbuilder.disclosure`), the disclosure recorded in the operation log."""
    import os

    from crlbuilder import disclosure
    from crlbuilder.atomicfile import place, staged
    from crlbuilder.auditlog import ChainError
    from crlbuilder.keys import enrolments, logname, oplog
    from crlbuilder.keys.approval import (
        ApprovalError,
        check_operator,
        fingerprint,
        load_log_name,
        load_operators,
        parse_approval,
    )
    from crlbuilder.seal import FACTS_KEY_ENV, FactsCipher, read_facts_key
    from crlbuilder.store.format import HOLDER_BYTES, StoreCorrupt, StoreFormatError
    from crlbuilder.store.lmdbstore import Store

    what = "crlbuilder disclose"

    def refused(why: str) -> int:
        print(f"{what}: error: {why}", file=sys.stderr)
        return 2

    # the holder first: its text is never echoed (it names a person); "-" reads it from
    # standard input, so that it is not in the command line others may list (ps)
    text = sys.stdin.readline(4 * HOLDER_BYTES) if args.holder == "-" else args.holder
    try:
        holder = disclosure.holder_of(text)
    except ValueError as e:
        return refused(str(e))
    if args.out is not None and not args.force and os.path.lexists(args.out):
        return refused(f"{args.out} exists; give --force to replace it")
    if args.out is not None and args.out.is_dir():  # --force replaces a file, never a directory
        return refused(f"{args.out} is a directory; --out names the document's file")
    try:  # the operator, on the operation log the operators file names, before any lookup
        wrong = logname.refusal(
            load_log_name(args.operators), str(args.log.resolve()), oplog.genesis(args.log),
            new_log=False, renames=False,
        )  # fmt: skip
        if wrong is not None:
            return refused(wrong)
        records = oplog.read_oplog(args.log)
        operators = load_operators(args.operators)
        name = check_operator(operators, parse_approval(args.operator))
        credential = {name: fingerprint(operators[name])}
        why = enrolments.approval_refusal(enrolments.ledger(records), credential)
        if why is not None:
            return refused(why)
    except (ApprovalError, ChainError) as e:
        return refused(str(e))
    opener = None
    if args.facts_key_file is not None or os.environ.get(FACTS_KEY_ENV):
        try:
            opener = FactsCipher(read_facts_key(args.facts_key_file, field="--facts-key-file"))
        except ConfigError as e:
            return refused(str(e))
    try:
        store = Store.open(args.store, readonly=True)
    except StoreFormatError as e:
        return refused(str(e))
    try:
        with store.read() as r:
            doc = disclosure.disclose(r, holder, at=int(time.time()), opener=opener)
    except (disclosure.FactsUnopened, StoreCorrupt) as e:
        return refused(str(e))
    finally:
        store.close()
    body = disclosure.encode(doc)
    damaged = sum(c.facts_state == "damaged" for c in doc.certificates)
    if damaged:  # the key opens the holder's other facts: these values are damaged
        print(f"{what}: warning: {damaged} sealed facts value(s) do not open under the key "
              "that opens the others (damaged in the store): disclosed as damaged; restore "
              "the store from a copy", file=sys.stderr)  # fmt: skip

    def failed(why: str) -> int:
        print(f"{what}: error: {why}", file=sys.stderr)
        return 1

    # --out: the document written whole beside it first, so that a file that cannot be
    # written (no such directory, disk full) is said before the log records anything
    tmp = None
    if args.out is not None:
        try:
            tmp = staged(args.out, body, 0o600)
        except OSError as e:
            return failed(f"{args.out}: {e.strerror or e}; nothing disclosed")
    # recorded before it is handed over: the log never lacks a disclosure made (nothing of
    # the holder in it: when, who, from which store, to stdout or a file)
    try:
        oplog.record(
            args.log, "holder-disclosed", operators=[name], credentials=credential,
            detail={"store": str(args.store.resolve()), "to": "file" if args.out else "stdout"},
        )  # fmt: skip
    except (ChainError, OSError) as e:  # a disclosure the log cannot account for is not made
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return failed(f"operation log {args.log}: {why}; nothing disclosed")
    over = "the operation log records this disclosure, which was not handed over"
    if tmp is None:
        try:
            sys.stdout.buffer.write(body)
            sys.stdout.flush()
        except OSError as e:  # a closed pipe, a full disk: the log over-reports, said so
            return failed(f"standard output: {e.strerror or e}; {over}")
        return 0
    try:
        place(tmp, args.out, replace=args.force)
    except FileExistsError:  # made since the check above
        return refused(f"{args.out} exists; give --force to replace it ({over})")
    except OSError as e:
        return failed(f"{args.out}: {e.strerror or e}; {over}")
    print(f"{args.out}: disclosure written (mode 0600)", file=sys.stderr)
    return 0


def _adopt_tokens(cfg: BuilderConfig, store: Store) -> TokenSide | None:
    """What adopting needs of the token records ``store`` applied (`crlbuilder.tokenadopt`):
    None when it applied none; the signer's (``crl.enabled``, a token issuer, ``tokens.issued``)
    with its token certificates and the token issuer's key, opened when first used."""
    from crlbuilder import tokenadopt, tokenrevocation
    from crlbuilder.config import facts_key
    from crlbuilder.keys.signer import Signer, load_signer
    from crlbuilder.manifest import load_manifest
    from crlbuilder.recorddigest import RecordDigest
    from crlbuilder.stream import StreamCipher
    from crlbuilder.streamadopt import TokenSide
    from crlbuilder.tokens import issued_certificates

    with store.read() as r:
        if not any(True for p in (tokenadopt.ISSUED, tokenadopt.REVOKED)
                   for _ in r.applied_entries(p)):  # fmt: skip
            return None
    key = facts_key(cfg)
    side = TokenSide(RecordDigest(key), StreamCipher(key))
    if not cfg.crl.enabled or not cfg.tokens.issued:  # not the signer: it publishes nothing
        return side
    manifest = load_manifest(cfg.pki.manifest)
    issuer = manifest.token_issuer
    if issuer is None:
        return side
    opened: list[Signer] = []

    def sign(issuer_id: str, serial: int, at: datetime, holder: bytes) -> str:
        if not opened:
            opened.append(load_signer(manifest.key_ref(issuer.key), manifest.path(issuer.cert)))
        return tokenrevocation.sign(opened[0], issuer=issuer_id, serial=serial, at=at,
                                    holder=holder)  # fmt: skip

    certs = issued_certificates(Path(cfg.tokens.issued))
    return dataclasses.replace(side, certificates=certs, sign=sign)


EXIT_COMPACTION_REFUSED: Final = 3
"""``stream compact``'s exit status when the latest snapshot cannot be relied on
(`recordcompact.CompactionRefused`: none, not complete or verified, replaced while verified,
of another instance of the record stream, of a newer release, or behind the stream's first
message): nothing purged; running it again says it again until a good snapshot is put."""

DEFAULT_KEEP_DAYS: Final = 7.0
"""``stream compact --keep-days``'s default: a week of messages stays behind the snapshot,
so a node stopped that long resumes from its own store."""

_COMPACT_STATUSES: Final = (
    "Exit status: 0 purged, or nothing to purge; 1 no NATS server answering, JetStream "
    "failing, or the snapshot's read failed (nothing purged); 2 a refused command line, "
    f"configuration or credential; {EXIT_COMPACTION_REFUSED} refused, nothing purged: no "
    "snapshot in the bucket, one that is not complete and verified or was replaced while "
    "verified, one of another instance of the record stream or of a newer release, or the "
    "stream already purged past it (put a snapshot from a caught-up node, then compact again)."
)


def _days(text: str) -> float:
    """A non-negative, finite number of days (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not math.isfinite(value) or not 0 <= value <= 36_500:
        raise argparse.ArgumentTypeError(f"{text!r}: days are a number from 0 to 36500")
    return value


def _stream_compact(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from crlbuilder import recordcompact, snapshot
    from crlbuilder.jetstream import ClusterError
    from crlbuilder.stream import StreamNames

    what = "crlbuilder stream compact"
    loaded = _config_with_servers(args, what)
    if loaded is None:
        return 2
    cfg, servers = loaded
    cluster = _connected(cfg, servers, what, failed="; nothing purged")
    if isinstance(cluster, int):
        return cluster
    names = StreamNames(cfg.stream.name, cfg.stream.subject)
    bucket = snapshot.Bucket(cfg.stream.snapshot_bucket, cfg.stream.replicas)
    try:
        done = recordcompact.compact(cluster, names, bucket, keep=timedelta(days=args.keep_days))
    except recordcompact.CompactionRefused as e:
        print(f"{what}: error: {e}; nothing purged", file=sys.stderr)
        return EXIT_COMPACTION_REFUSED
    except ClusterError as e:
        print(f"{what}: error: {e}; nothing purged", file=sys.stderr)
        return 1
    finally:
        cluster.close()
    out = {"event": "stream-compact", "stream": names.name, "bucket": bucket.name,
           "keep_days": args.keep_days, **dataclasses.asdict(done)}  # fmt: skip
    print(msgspec.json.encode(out).decode())
    return 0


def _stream_adopt(args: argparse.Namespace) -> int:
    from crlbuilder import streamadopt
    from crlbuilder.jetstream import ClusterError
    from crlbuilder.keys.signer import SignerError
    from crlbuilder.store.format import StoreFormatError
    from crlbuilder.store.lmdbstore import Store
    from crlbuilder.stream import StreamNames, current_feed_id, default_durable

    what = "crlbuilder stream adopt"
    loaded = _config_with_servers(args, what)
    if loaded is None:
        return 2
    cfg, servers = loaded
    path = Path(cfg.store.path)
    if not (path / "data.mdb").is_file():  # opened for writing, it would be made
        print(f"{what}: error: {path}: no status store here: nothing to adopt (a lost "
              "store is made again from the stream: docs/operations.md)", file=sys.stderr)  # fmt: skip
        return 2
    try:  # held for writing until the end: no builder starts meanwhile
        store = Store.open(path, readonly=False, map_size=cfg.store.map_size_gib << 30)
    except StoreFormatError as e:
        print(f"{what}: error: {e}", file=sys.stderr)
        return 2
    try:
        why = streamadopt.store_refusal(streamadopt.store_side(store))
        if why is not None:  # before any NATS server is asked
            print(f"{what}: error: {why}", file=sys.stderr)
            return 2
        cluster = _connected(cfg, servers, what)
        if isinstance(cluster, int):
            return cluster
        names = StreamNames(cfg.stream.name, cfg.stream.subject)
        try:
            tokens = _adopt_tokens(cfg, store)
        except (ConfigError, ManifestError, SignerError, OSError, ValueError) as e:
            cluster.close()
            print(f"{what}: error: {e}", file=sys.stderr)
            return 2
        try:
            current = current_feed_id(cluster, names.name)
            done = streamadopt.adopt(
                store, cluster, names, cfg.stream.durable or default_durable(), current,
                made_again=args.made_again, accept_behind=args.accept_behind, tokens=tokens,
            )  # fmt: skip
        except SignerError as e:
            print(f"{what}: error: the token issuer's key cannot sign: {e}", file=sys.stderr)
            return 2
        except streamadopt.AlreadyFollowed:
            print(f"{path}: already follows the record stream {names.name} as it stands: "
                  "nothing to do")  # fmt: skip
            return 0
        except streamadopt.AdoptRefused as e:
            print(f"{what}: error: {e}", file=sys.stderr)
            return 2
        except ClusterError as e:
            print(f"{what}: error: {e}", file=sys.stderr)
            return 1
        finally:
            cluster.close()
    finally:
        store.close()
    out = {"event": "stream-adopt", "store": str(path), **dataclasses.asdict(done)}
    print(msgspec.json.encode(out).decode())
    return 0


def _store_copy(args: argparse.Namespace) -> int:
    from crlbuilder.store.format import StoreFormatError
    from crlbuilder.store.lmdbstore import copy_store

    try:
        n = copy_store(args.source, args.target)
    except (StoreFormatError, OSError) as e:
        print(f"crlbuilder store copy: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.target}: {n} entries copied from {args.source}")
    return 0


def _outbox(args: argparse.Namespace) -> int:
    """``crlbuilder outbox mark|read|prune``: the notices and quarantine files' end
    (`crlbuilder.outboxprune`)."""
    from crlbuilder import outboxprune

    name = f"crlbuilder outbox {args.outbox_command}"
    try:
        if args.outbox_command == "mark":
            print(outboxprune.take_mark(args.file))
            return 0
        mark = outboxprune.parse_mark(args.mark)
        if args.outbox_command == "read":
            sys.stdout.buffer.write(outboxprune.read_marked(args.file, mark))
            sys.stdout.buffer.flush()
            return 0
        n = outboxprune.prune(args.file, mark)
    except outboxprune.PruneRefused as e:
        print(f"{name}: refused: {args.file}: {e}; nothing pruned", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"{name}: error: --mark: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{name}: error: {args.file}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{args.file}: {n} lines pruned")
    return 0


def _import_crl(args: argparse.Namespace) -> int:
    from crlbuilder.crl.importer import run_import  # the store, the build's issuer table

    return run_import(args)


def _pki_init(args: argparse.Namespace) -> int:
    from crlbuilder.demo.pki import run_init  # cryptography's x509, the signers

    return run_init(args)


def _synth(args: argparse.Namespace) -> int:
    from crlbuilder.demo.synth import run_synth

    return run_synth(args)


def _keys(args: argparse.Namespace) -> int:
    from crlbuilder import ceremony  # the token, the signer, cryptography's x509

    return ceremony.run(args)


def _group_init(args: argparse.Namespace) -> int:
    from crlbuilder.group.init import run_init

    return run_init(args)


def _group_keys(args: argparse.Namespace) -> int:
    from crlbuilder.group.init import run_keys

    return run_keys(args)


def _group_pull(args: argparse.Namespace) -> int:
    from crlbuilder.group.pull import run_pull  # the CRL import, the store

    return run_pull(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crlbuilder",
        description="Compile JPKI revocation records (失効情報) into the status store, "
        "pre-signed OCSP answers and signed CRLs (失効情報ファイル).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The demo commands (`pki init`, `synth`) come from crlbuilder.demo, which only
    # this entry point may import (import-linter contract in pyproject.toml).
    from crlbuilder.demo import democli

    democli.add_pki_cli(sub, _pki_init)
    democli.add_synth_cli(sub, _synth)
    importcli.add_cli(sub, _import_crl)
    ceremonycli.add_cli(sub, _keys)
    gp = sub.add_parser(
        "group", help="a group appliance (団体署名検証者, Act §17(5)): set-up and CRL feed"
    )
    gps = gp.add_subparsers(dest="group_command", required=True, metavar="ACTION")
    initcli.add_cli(gps, _group_init)
    initcli.add_keys_cli(gps, _group_keys)
    pullcli.add_cli(gps, _group_pull)

    fk = sub.add_parser(
        "facts-key", help="create a new AES-256 key that seals the four facts (mode 0600)"
    )
    fk.add_argument(
        "--out", type=Path, required=True, help="key file to create (refuses to replace one)"
    )
    fk.set_defaults(func=_facts_key)

    nk = sub.add_parser(
        "nats-key",
        help="create a new NKey user seed for NATS (mode 0600) and print its public key",
        description='Create one NATS user\'s credential (docs/operations.md "NATS credentials"): '
        "an NKey user seed written to --out, mode 0600, never replacing a file, and its public "
        "key (U...) printed on stdout, the key of that user (a role, for a node) in the users "
        "file `crlbuilder nats-config` writes the servers' authorization from. Give the seed to "
        "that user's processes only (nats_nkey_seed, JPKI_VA_NATS_NKEY_SEED, or a systemd "
        "credential). "
        "Exit 0 made, 2 the file exists or cannot be written.",
    )
    nk.add_argument(
        "--out", type=Path, required=True, metavar="FILE",
        help="seed file to create (refuses to replace one)",
    )  # fmt: skip
    nk.set_defaults(func=_nats_key)

    nc = sub.add_parser(
        "nats-config",
        help="write the NATS servers' authorization from the list of jpki-va's NATS users",
        description="The NATS servers' authorization block (docs/operations.md \"NATS "
        'credentials"; deploy/nats/jpki-va-auth.conf is this for deploy/nats/users.toml) from '
        "a users file: [[user]] tables with role, key (the public key `crlbuilder nats-key` "
        "printed, or a $VARIABLE of the servers' environment) and, for a signer, builder or "
        "responder, node (its ledger node name) and durable (its record stream consumer; "
        "default node-<node>). Each user may do what its role does for its own node only. "
        "Exit 0 written, 2 the users file refused (one line, nothing written).",
    )
    nc.add_argument("--users", type=Path, required=True, metavar="FILE", help="users file (TOML)")
    nc.add_argument(
        "--shared-inbox",
        action="store_true",
        help="also let every user read _INBOX.>, the inbox of processes that set no "
        "JPKI_VA_NATS_INBOX: an upgrade's transition only, written again without it once "
        "every process sets its own",
    )
    nc.add_argument(
        "--out", type=Path, metavar="FILE", help="file to write (replaced whole); default stdout"
    )
    nc.set_defaults(func=_nats_config)

    b = sub.add_parser(
        "build",
        help="apply records to the store, pre-sign OCSP answers, produce CRLs",
        description="Read issuance and revocation records (JSON Lines), apply the Act's rules, "
        "commit them to the store in batches, then pre-sign revoked answers and produce CRLs. "
        "Idempotent by record id. Prints one JSON summary line per build on stderr.",
    )
    add_arguments(b)
    b.add_argument(
        "--as-of",
        type=instant,
        metavar="TIME",
        help="build as if the clock read TIME (ISO 8601 with a timezone; default now): commits, "
        "30-day lapses (Act §31(2)) and CRL/OCSP thisUpdate are dated TIME. Refused (exit 2, "
        "nothing written) when TIME is earlier than the store's last commit: a store never "
        "goes back in time. A following --follow loop runs on the real clock.",
    )
    b.add_argument(
        "--follow",
        action="store_true",
        help="then go on until SIGTERM: watch the spool directory (input.spool), or follow the "
        "record stream (--source; NATS servers that do not answer yet are waited for, a warning "
        "every --follow-interval)",
    )
    b.add_argument(
        "--max-idle",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="with --follow: stop after this many seconds with nothing to do (default: run "
        "until SIGTERM)",
    )
    b.add_argument(
        "--presign-full",
        action="store_true",
        help="pre-sign by reading every CRL entry with its status and stored answer (at "
        "10,000,000 holders, minutes). By default a build signs the revocations of the changes "
        "feed since its last pre-signing, and reads an issuer's every entry only when its stored "
        "answers fall due, its OCSP delegate changed, the feed no longer reaches that run, or "
        "the store was pre-signed by an earlier version",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument(
        "--progress", action="store_true", help="a progress bar even when stderr is no terminal"
    )
    b.set_defaults(func=_build)

    pb = sub.add_parser(
        "publish",
        help="put record files onto the record stream (NATS JetStream)",
        description="Publish every line of the record files, in order, to the record stream "
        "(input.source, [stream]); each record once (JetStream drops a record id published "
        "again within its duplicate window, and every node applies a record id once). Lines are "
        "sealed with a key derived from the facts key. A file holding a record whose id, issuer, "
        "holder or birth date ends in a line feed is refused, nothing published (exit 2). "
        "Prints one JSON summary line.",
    )
    add_arguments(pb)
    pb.add_argument("files", nargs="+", type=Path, help="record files or directories (*.jsonl)")
    pb.set_defaults(func=_publish)

    sn = sub.add_parser(
        "snapshot",
        help="store snapshots in the object store: a new node starts from the latest",
        description="put: a consistent copy of this node's store (its builder may run) into "
        "the snapshot bucket; get: the latest snapshot as the store (a new directory), after "
        "which `build --source ... --follow` applies the record stream from the snapshot's "
        f"sequence on. Prints one JSON line. {_GET_STATUSES}",
    )
    sns = sn.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    for action in ("put", "get"):
        a = sns.add_parser(
            action,
            help="put this store" if action == "put" else "get the latest",
            description=None if action == "put" else _GET_STATUSES,
        )
        add_arguments(a)
        a.add_argument(
            "--wait",
            type=_seconds,
            default=0.0,
            metavar="SECONDS",
            help="while no NATS server answers, try again every "
            f"{SNAPSHOT_RETRY_SECONDS:.0f} s for up to this long (a node's bootstrap started "
            "before its server); default 0: fail at once",
        )
        a.set_defaults(func=_snapshot)

    sm = sub.add_parser(
        "stream",
        help="the record stream's maintenance: adopt a stream made again, keeping the store; compact it behind the latest snapshot",
    )
    sms = sm.add_subparsers(dest="stream_command", required=True, metavar="ACTION")
    ad = sms.add_parser(
        "adopt",
        help="keep this node's store across a record stream deleted and made again",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
After the record stream was deleted and made again under its name and every record file
republished into it (crlbuilder publish), make this node's store follow the new stream
instead of rebuilding it. Run it on each node, its builder stopped (jpki-va-node-builder,
or -signer), then start the builder: it applies the new stream from its first message,
skipping every record the store applied before, and applies the rest. No lapse is dated
again: a rebuilt store would write, at the republishing instant, the 30-day lapses (Act
§31(2)) that a later move-in notice had stopped (docs/operations.md, 'A record stream
made again').

Checked first, each refused in one line (exit 2), the store left as it was:
  - the store exists, no other process writes it (its builder is stopped);
  - the stream exists and is another instance than the one the store follows;
  - this store's builder refused the new stream (exit 3, /readyz says so), or
    --made-again says it was made again (a builder that has not run since);
  - every record the store applied is on the new stream (their ids, read headers
    only through this node's durable consumer): the history is all republished; the
    token records, which no record file holds, are published by the signer's adopt
    (its store's, as applied; run it first): another node's adopt before it is refused;
  - the store stood at the old stream's end as its builder last saw it: a node
    behind would apply the rest dated by the republishing instant, as a rebuild
    does (start it from an adopted node's snapshot, or --accept-behind).
Reading the ids deletes this node's durable consumer (refused or not): its builder
makes it again at its start, from the store's sequence.
Then, in one commit: the store follows the new stream at its sequence 0, the refusal
is cleared, and the changes feed starts again (cursors of the old stream are answered
410: parties resynchronise); a token revocation release 1.5 published unsigned keeps
the digest of its signed form read from the new stream; one JSON line says what was
done. A store already on the
stream as it stands: nothing done, one plain line "... already follows ...", exit 0.
NATS unreachable: exit 1.""",
    )
    add_arguments(ad)
    ad.add_argument(
        "--made-again",
        action="store_true",
        help="the stream was deleted and made again: needed when this store's builder has not "
        "refused it (it did not run since)",
    )
    ad.add_argument(
        "--accept-behind",
        action="store_true",
        help="adopt a store that stood behind the old stream's end as its builder last saw it "
        "(when no node stood further): the records it missed are applied, and their lapses "
        "dated, at the republishing instant",
    )
    ad.set_defaults(func=_stream_adopt)
    cc = sms.add_parser(
        "compact",
        help="purge the record stream through the latest store snapshot, less a tail",
        description="Purge the record stream's messages (records with their sealed four "
        "facts, ticks) through the sequence the latest store snapshot's store had applied, "
        "less the messages of the last --keep-days days, so a record past its retention "
        "(保存期間) is gone from the stream too (docs/operations.md, 'Record stream "
        "compaction'). The latest snapshot is read whole and checked first, as a new node "
        "takes it; nothing is purged without one. Run it after crlbuilder snapshot put. "
        f"Prints one JSON line. {_COMPACT_STATUSES}",
    )
    add_arguments(cc)
    cc.add_argument(
        "--keep-days",
        type=_days,
        default=DEFAULT_KEEP_DAYS,
        metavar="DAYS",
        help="keep the messages stored in the last DAYS days before the stream's last one: a "
        "node stopped for less resumes from its own store, one stopped longer starts again "
        f"from a snapshot (default {DEFAULT_KEEP_DAYS:g}; 0: purge through the snapshot)",
    )
    cc.set_defaults(func=_stream_compact)

    st = sub.add_parser(
        "status", help="print what the store says of one certificate (no personal data)"
    )
    st.add_argument("--store", type=Path, required=True, help="the status store directory")
    st.add_argument("--issuer", required=True, help="issuer generation id, e.g. sign-card-g2")
    st.add_argument(
        "--serial",
        type=_serial,
        required=True,
        help="the certificate's serial number: decimal or 0x-hex, positive, at most 20 octets",
    )
    st.set_defaults(func=_status)

    ds = sub.add_parser(
        "disclose",
        help="disclose one holder's records as one JSON document (開示, Act §58)",
        description="Everything this appliance's status store holds about one holder (自己に"
        "係る認証業務情報, Act §58): the certificates (links, status, CRL entry), the four facts "
        "still kept (opened with the facts key when given), consents, the move-out notice and "
        "the changes, lapses and move-ins kept for the holder; or that it holds nothing "
        "(exists false, Act §58(1)). The store is opened read-only: the builder may run. The "
        "operator is checked first (an enrolled operator's secret, as a ceremony's approval) "
        "and the disclosure is recorded in the operation log (when, by whom; nothing of the "
        "holder). The document holds personal data: to stdout, or to --out, created mode 0600. "
        "Exit 0 disclosed (or none exists), 1 the work failed, 2 refused (an ill-formed holder, "
        "the operator, the facts key, the store; nothing written). See docs/operations.md, "
        "'Disclosure of a holder's records'.",
    )
    ds.add_argument("--store", type=Path, required=True, help="the status store directory")
    ds.add_argument(
        "--holder", required=True, metavar="HEX",
        help="the holder key: 64 hex digits, as the records name the holder (docs/records.md); "
        "'-' reads it from standard input (one line), kept out of the command line",
    )  # fmt: skip
    ds.add_argument(
        "--facts-key-file", type=Path, metavar="FILE",
        help="the facts key (64 hex digits, mode 0600; or JPKI_VA_FACTS_KEY): the four facts "
        "are disclosed opened; without it they are reported sealed",
    )  # fmt: skip
    ds.add_argument(
        "--log", type=Path, required=True, metavar="FILE",
        help="the operation log (the one the operators file names) the disclosure is recorded in",
    )  # fmt: skip
    ds.add_argument("--operators", type=Path, required=True, metavar="FILE",
                    help="the operators file (keys add-operator)")  # fmt: skip
    ds.add_argument(
        "--operator", required=True, metavar="NAME:file:/path|NAME:env:VAR",
        help="the operator making the disclosure and their secret's source",
    )  # fmt: skip
    ds.add_argument(
        "--out", type=Path, metavar="FILE",
        help="write the document here (created mode 0600, whole; refused if it exists); "
        "default stdout",
    )  # fmt: skip
    ds.add_argument("--force", action="store_true", help="with --out: replace an existing file")
    ds.set_defaults(func=_disclose)

    ob = sub.add_parser(
        "outbox",
        help="the notices and quarantine files: mark, read and prune what was read",
        description="The end of the two files the builder appends to beside the store (the "
        "notices file, input.notices: holder notifications naming a certificate's serial, Act "
        "§15(2), and public announcements; the quarantine file, input.quarantine: refused "
        "records). The builder never drops a line; an operator, or the 機構's system reading "
        "the file, takes a mark (the number of whole lines and their digest), reads the lines "
        "it covers, then prunes through it: exactly those lines are taken off the front, the "
        "rest kept (the file written again 0600, under the lock the builder's delivery takes; "
        "the builder may run). A mark that no longer describes the file's start is refused, "
        "nothing pruned. Exit 0 done, 1 the file could not be read or written, 2 refused (a "
        "bad or stale mark). See docs/operations.md, 'The notices and quarantine files'.",
    )
    obs = ob.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    for action, helptext in (
        ("mark", "print the file's mark: the number of its whole lines and their digest"),
        ("read", "print the lines a mark covers, as they are in the file"),
        ("prune", "take the lines a mark covers off the front of the file, keep the rest"),
    ):
        oa = obs.add_parser(
            action, help=helptext, description=helptext[0].upper() + helptext[1:] + "."
        )
        oa.add_argument(
            "--file", type=Path, required=True, metavar="FILE",
            help="the notices or quarantine file (input.notices, input.quarantine)",
        )  # fmt: skip
        if action != "mark":
            oa.add_argument("--mark", required=True, metavar="N:HEX",
                            help="a mark 'crlbuilder outbox mark' printed")  # fmt: skip
        oa.set_defaults(func=_outbox)

    sc = sub.add_parser("store", help="store maintenance")
    scs = sc.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    cp = scs.add_parser(
        "copy",
        help="rewrite a store entry by entry into a new directory (live data only)",
        description="Copy every entry of SOURCE into a new store at TARGET, written into fresh "
        "zeroed pages: a store written before LMDB zeroed its pages (meminit) may hold leftover "
        "heap bytes; the copy holds only live data. Stop the builder and the responder first; see docs/operations.md.",
    )
    cp.add_argument("source", type=Path, help="the store to copy (read only)")
    cp.add_argument("target", type=Path, help="a new directory (refused if it holds a store)")
    cp.set_defaults(func=_store_copy)
    describe_commands(p, EPILOG)
    return p


def main(argv: list[str] | None = None) -> int:
    no_core_dumps()  # no dump of a key, PIN or secret: before any is read (`crlbuilder.lifecycle`)
    take_facts_key()  # out of the environment: no child inherits it (`crlbuilder.seal`)
    return run_command(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
