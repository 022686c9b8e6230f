"""Is this node caught up with the record stream? The lag rule of ``/readyz`` on a node of several.

A node of several (`[cluster] nats`) answers from its own store, which its builder fills
from the record stream (`crlbuilder.stream`). It must not take parties' requests while
that store is behind what the other nodes answer: a node that bootstraps (from a snapshot,
or empty) is not ready until its store is within ``max_lag`` records of the stream, and a
node that falls further behind than that (its builder slow, stopped, or cut off from the
stream) is not ready again until it catches up. The load balancer, which routes on
``/readyz``, then sends its parties elsewhere.

The builder writes what it saw of the stream into the store (the stream's last sequence and
when it saw it, `META_STREAM_HEAD`) beside the last sequence it applied (`META_STREAM_SEQ`);
`verdict` compares them (sans-I/O). A head older than ``stale_after`` seconds means the
builder no longer sees the stream: the lag is then unknown, and the node says so. A builder
that refused the stream (a message of a newer release, another stream under its name:
`META_STREAM_REFUSED`) applies nothing more whatever the lag: the node says why.
`lag` is the same difference for the gauges of `responder.streamgauges`, which leave the
staleness to the alert rules (JpkiVaStreamLost).
"""

from __future__ import annotations

from typing import Final

STALE_AFTER: Final = 10
"""Seconds after which the builder's view of the stream is too old to vouch for the lag."""


def verdict(
    applied: int,
    head: int,
    seen_at: int,
    now: int,
    *,
    max_lag: int,
    stale_after: int = STALE_AFTER,
    refused: str = "",
) -> str | None:
    """Why this node is not ready (a short reason for the 503 body), or None when it is;
    ``refused``: why the builder stopped applying the stream (`StoreReader.stream_refused`)."""
    if refused:
        return f"the builder stopped applying the record stream: {refused}"
    if seen_at == 0:
        return "the builder has not seen the record stream yet"
    if now - seen_at > stale_after:
        return f"the builder has not seen the record stream for {now - seen_at} s"
    behind = head - applied
    if behind > max_lag:
        return f"{behind} records behind the record stream (at most {max_lag})"
    return None


def lag(applied: int, head: int, seen_at: int) -> int | None:
    """Records of the stream, as the builder last saw it, not yet applied to the store; None
    when the builder never saw the stream (a new node, or one just bootstrapped from a
    snapshot, whose head is reset: `crlbuilder.snapshot`). Never below 0 (a head seen before
    the batch that passed it was committed)."""
    if seen_at == 0:
        return None
    return max(0, head - applied)
