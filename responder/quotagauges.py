"""The agreed daily quotas as a gauge when /metrics is scraped (`QuotaCollector`).

``jpkiva_quota_remaining{party}``: for each registered party whose agreement (取決め)
sets ``requests_per_day``, what is left of it today (a Japan calendar day) on this node:
its share of the quota (`responder.limits.node_share`, the whole quota on a single node)
less the requests every worker admitted today, read from the shared quota table
(`responder.limits.LimitsTable`) by the worker answering the scrape. A party with only a
per-second quota has no series (what is left of one second says nothing a scrape could
use; its refusals are ``jpkiva_refusals_total{rule="quota"}``).

``jpkiva_provisions_remaining{party}``: for each party whose agreement sets
``provisions_per_day`` (件数, what the ledger counts: one per OCSP CertID, batch entry,
change delivered, CRL file downloaded), what is left of it today on this node, its share
less what every worker took (`responder.limits.LimitsTable.provisions_left`). No series
for a party without the bound.

A party served under its contractor's agreement (deemed its own, Ord §29(4), §60(2)) shows
what is left of that agreement's quotas, shared with the contractor (`Party.quota_id`).

Labels: registry party ids only, bounded by the registry: no personal data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from responder.limits import LimitsTable, node_share
from responder.registry.lookup import Registry

__all__ = ["QuotaCollector"]


class QuotaCollector(Collector):
    """What each party with a daily quota, or a daily bound of provisions, has left of it
    today on this node."""

    def __init__(
        self,
        registry: Callable[[], Registry],
        limits: LimitsTable,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        """The worker's registry as it is now (reloads replace it)."""
        self._limits = limits
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "jpkiva_quota_remaining",
            "Requests a party may still make today (JST) on this node under its daily quota.",
            labels=["party"],
        )
        now = self._clock()
        for party in self._registry().parties.values():
            share = node_share(party.requests_per_day, self._limits.nodes)
            if share is None:
                continue
            left = share - self._limits.admitted_today(party.quota_id, now)
            gauge.add_metric([party.id], max(0, left))
        yield gauge
        provisions = GaugeMetricFamily(
            "jpkiva_provisions_remaining",
            "Provisions (entries, CertIDs, changes, CRL files) a party may still be given "
            "today (JST) on this node under its agreed provisions_per_day.",
            labels=["party"],
        )
        for party in self._registry().parties.values():
            remains = self._limits.provisions_left(party, now)
            if remains is not None:
                provisions.add_metric([party.id], remains)
        yield provisions
