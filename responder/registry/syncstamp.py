"""When this node's registry sync last confirmed its file holds the shared registry's newest
revision: a stamp beside the file, and its gauge.

`responder registry sync --follow` (`responder.registry.shared`) writes every change of the
shared registry to the node's file; while it runs and reaches the bucket, a party suspended
on one node is suspended on every other within seconds. When it does not (stopped, failing
at every start, cut off from NATS, or holding a revision that does not load here), the node
goes on serving the registry it has, a suspension made since not held there, and nothing else
on the node says so: its builder and responder may be healthy. So the sync touches a stamp
(``<registry file>.synced``, its modification time; no content) each time it has read the
bucket and found nothing newer than what the file holds, and the responder exports that
instant (`RegistrySyncCollector`: ``jpkiva_registry_synced_timestamp_seconds``, 0 while
never), on which JpkiVaRegistrySyncStale pages (deploy/prometheus/alerts.yml).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

SUFFIX: Final = ".synced"
METRIC: Final = "jpkiva_registry_synced_timestamp_seconds"


def stamp_path(registry: Path) -> Path:
    """The stamp of the registry file ``registry``."""
    return registry.with_name(registry.name + SUFFIX)


def touch(registry: Path, at: float | None = None) -> None:
    """Say that ``registry`` holds the shared registry's newest revision as of ``at`` (now)."""
    path = stamp_path(registry)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    os.utime(path, None if at is None else (at, at))


def synced_at(registry: Path) -> float:
    """When the sync last confirmed ``registry`` (epoch seconds; 0: never, or no stamp)."""
    with contextlib.suppress(OSError):
        return os.stat(stamp_path(registry)).st_mtime
    return 0.0


class RegistrySyncCollector(Collector):
    """``jpkiva_registry_synced_timestamp_seconds`` of one node (a node of several only: a
    single node has no shared registry, and 0 there would read as a sync lost)."""

    def __init__(self, registry: Path) -> None:
        self.registry = registry

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily(
            METRIC,
            "When this node's registry sync last found its registry file at the shared "
            "registry's newest revision (0: never).",
        )
        g.add_metric((), synced_at(self.registry))
        return [g]
