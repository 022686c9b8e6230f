"""``responder watch-compact``: one compaction of the watch stream, run on a node of several.

The steps of `responder.v1.watchsnap`, in the order that loses nothing: this node's lists
catch up with the watch stream; when it holds enough operations (`watchsnap.compaction`), the
lists as of their last operation are written to the snapshot stream, parts then a seal
published only if no other compaction sealed one meanwhile; then the watch stream's
operations through that snapshot (less the tail kept) are purged, and the snapshots before the
previous one. Run it from a timer on one node or on all (two at once: one loses its seal and
purges nothing); the serving workers go on meanwhile (the lists are read in one LMDB read
transaction, which blocks no writer). Exit 0 done (or nothing to do), 1 failed (nothing
purged unless a seal held it), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from crlbuilder.options import ConfigError
from responder.config import add_arguments, load_config, overrides_from_args

if TYPE_CHECKING:  # imported when run: the other commands start without them
    from responder.v1.watchdb import LmdbWatchSet
    from responder.v1.watchstream import WatchStream

KEEP: Final = 10_000
"""Operations left on the watch stream behind a snapshot: nodes running that far behind
apply them as usual rather than load a snapshot."""
MIN_OPERATIONS: Final = 10_000
"""Operations a compaction must remove at least: fewer is not worth a snapshot."""
CATCH_UP_SECONDS: Final = 600.0
JITTER: Final = 0.2
"""``--every``'s rounds are drawn within this share either side of the interval (`next_round`)."""


class Compacted(NamedTuple):
    snapshot: int
    """The operation the new snapshot is of (0: none made)."""
    entries: int
    parts: int
    purged: int
    """The watch stream's operations purged through this one (0: none)."""
    first: int
    last: int
    """What the watch stream held before."""


class CompactError(Exception):
    """The compaction cannot be done now (the message says why); nothing was purged."""


def compact(
    lists: LmdbWatchSet,
    stream: WatchStream,
    *,
    keep: int = KEEP,
    min_operations: int = MIN_OPERATIONS,
    catch_up_seconds: float = CATCH_UP_SECONDS,
    part_entries: int | None = None,
) -> Compacted:
    """One compaction (module docstring); ``part_entries``: a snapshot part's entries
    (default `watchsnap.PART_ENTRIES`)."""
    from responder.v1 import watchlog, watchsnap
    from responder.v1.watchstream import SealRaced, sync

    if part_entries is None:
        part_entries = watchsnap.PART_ENTRIES

    deadline = time.monotonic() + catch_up_seconds
    while True:
        try:
            sync(lists, stream, None, 30.0)
            break
        except watchlog.Behind:
            if time.monotonic() > deadline:
                raise CompactError("this node's watch lists did not catch up in time") from None
        except (watchlog.Gone, watchlog.SecretMismatch) as e:
            raise CompactError(f"this node's watch lists do not follow the stream: {e}") from None
    state = stream.state()
    keys = lists.keys
    check = watchlog.secret_check(keys.check())
    found, after = stream.latest_seal_guarded()  # after: what JetStream checks a seal against
    sealed, previous = 0, None
    if found is not None:
        try:
            seal: watchsnap.Seal | None = watchsnap.decode_seal(keys.snapshot_mac, found[1])
        except watchsnap.BadSnapshot:  # made with another secret (changed since), or altered:
            seal = None  # no snapshot of these lists; a new one is sealed over it
        if seal is not None and seal.stream == state.id and seal.check == check:
            sealed, previous = seal.seq, (after, seal.first_part)  # else of a stream made again
    plan = watchsnap.compaction(
        lists.applied(), state.first, state.last, sealed, keep=keep, min_operations=min_operations
    )
    snapshot = entries = parts = 0
    if plan.snapshot:
        with lists.frozen() as (applied, stream_id, listed, signed_from):
            if stream_id != state.id or applied < plan.snapshot:
                raise CompactError("the watch lists changed streams during the compaction")
            first_part = 0
            for part in watchsnap.parts(stream_id, applied, listed, part_entries):
                at = stream.publish_part(applied, watchsnap.encode_part(keys.snapshot_mac, part))
                first_part = first_part or at
                entries += len(part.entries)
                parts += 1
        snapshot = applied
        made = watchsnap.Seal(stream_id, check, applied, parts, entries, first_part, signed_from)
        try:
            stream.publish_seal(watchsnap.encode_seal(keys.snapshot_mac, made), after=after)
        except SealRaced as e:
            raise CompactError(f"{e}: run it again later") from None
        if previous is not None:  # keep the previous snapshot for a node loading it
            stream.purge_snapshots(parts_before=previous[1], seals_before=previous[0])
    if plan.purge:
        stream.purge_operations(plan.purge)
    return Compacted(snapshot, entries, parts, plan.purge, state.first, state.last)


def next_round(every: float, draw: Callable[[], float] = random.random) -> float:
    """Seconds from one round of ``--every`` to the next: ``every`` ± `JITTER`. The nodes of a
    service start their compactors together (every pod of the manifest at once) and would
    otherwise each write a whole snapshot every round, all but one to lose the seal (240 MB
    each at 10,000,000 entries); drawn apart, their rounds drift, and the first to compact
    leaves the others fewer than ``--min-operations``: nothing to write."""
    return every * (1.0 - JITTER + 2.0 * JITTER * draw())


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``watch-compact`` on the ``responder`` command's subparsers."""
    p = subparsers.add_parser(
        "watch-compact",
        help="snapshot the changes feed's watch lists and purge the watch stream behind it",
        description="On a node of several ([cluster] nats): catch this node's watch lists up, "
        "write them to the snapshot stream (JPKI_WATCH_SNAP) and purge the watch stream's "
        "operations they hold, so that a new node loads the snapshot instead of replaying "
        "everything. Takes the configuration flags of `responder serve`. Exit 0 done or "
        "nothing to do, 1 failed, 2 bad usage or configuration.",
    )
    p.add_argument(
        "--config", type=Path,
        help="the responder's TOML configuration (default: none, the built-in defaults)",
    )  # fmt: skip
    p.add_argument(
        "--keep", type=int, default=KEEP,
        help=f"operations left on the stream behind the snapshot (default: {KEEP})",
    )  # fmt: skip
    p.add_argument(
        "--min-operations", type=int, default=MIN_OPERATIONS,
        help=f"do nothing unless at least this many operations would go (default: {MIN_OPERATIONS})",
    )  # fmt: skip
    p.add_argument(
        "--every", type=float, metavar="SECONDS",
        help="compact again about every SECONDS (each wait drawn within 20%% of it, so that "
        "the nodes' rounds drift apart), until stopped (a sidecar or a service; a failed "
        "round is said and the next one tries again); default: once",
    )  # fmt: skip
    add_arguments(p)
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    from responder.v1 import changes
    from responder.v1.watchdb import LmdbWatchSet
    from responder.v1.watchstream import StreamUnavailable

    def err(msg: str) -> None:
        print(f"responder watch-compact: {msg}", file=sys.stderr, flush=True)

    if args.keep < 0 or args.min_operations < 1 or (args.every is not None and args.every <= 0):
        err("error: --keep must be >= 0, --min-operations >= 1 and --every > 0")
        return 2
    try:
        config = load_config(args.config, overrides_from_args(args))
    except ConfigError as e:
        err(f"error: {e}")
        return 2
    if not config.cluster.nats:
        err("error: [cluster] nats is not set: a single node has no watch stream to compact")
        return 2
    env = changes.setup(config)
    lists = env.lists()
    if not isinstance(lists, LmdbWatchSet) or env.stream is None:
        err("error: the watch lists cannot be opened (the message above says why)")
        return 2
    try:
        while True:
            try:
                done = compact(
                    lists, env.stream, keep=args.keep, min_operations=args.min_operations
                )
            except (CompactError, StreamUnavailable) as e:
                err(f"error: {e}")
                if args.every is None:
                    return 1
            else:
                print(_said(done), flush=True)
            if args.every is None:
                return 0
            time.sleep(next_round(args.every))
    finally:
        env.stream.close()
        lists.close()


def _said(done: Compacted) -> str:
    if not done.purged and not done.snapshot:
        return f"nothing to compact: the watch stream holds operations {done.first}..{done.last}"
    made = (
        f"snapshot of operation {done.snapshot} ({done.entries} entries, {done.parts} parts), "
        if done.snapshot
        else ""
    )
    if not done.purged:
        return f"{made}none purged: it replaces a lost one (last {done.last})"
    return f"{made}operations {done.first}..{done.purged} purged (last {done.last})"
