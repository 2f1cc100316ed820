"""Render the poller's last snapshots as Prometheus metrics on each scrape.

A custom collector: fresh metric families on every collect, built only from
state the poller already holds, so a scrape costs no upstream call. HELP and
TYPE come from the catalog. `describe()` is implemented so that registering
the collector does not run a collect.

Example exposition:

    # HELP kpi_mrr Monthly recurring revenue in the reporting currency: ...
    # TYPE kpi_mrr gauge
    kpi_mrr{source="stripe"} 104512.5
    # HELP kpi_source_up 1 if the last poll of the source succeeded, 0 if it failed. ...
    # TYPE kpi_source_up gauge
    kpi_source_up{source="stripe"} 1.0
"""

from __future__ import annotations

import logging
from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import catalog
from exporter.http import ERROR_REASONS
from exporter.poller import Poller

log = logging.getLogger(__name__)


def _family(metric: str, help_text: str, labels: tuple[str, ...], kind: str) -> Metric:
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(metric, help_text, labels=list(labels))


class KpiCollector:
    def __init__(self, poller: Poller, kpis: tuple[catalog.Kpi, ...] = catalog.KPIS):
        self.poller = poller
        self.kpis = kpis
        self._reported_unknown: set[str] = set()

    def describe(self) -> Iterator[Metric]:
        for kpi in self.kpis:
            yield _family(kpi.metric, kpi.help, kpi.labels, kpi.type)
        for health in catalog.HEALTH:
            yield _family(health.metric, health.help, health.labels, health.type)

    def collect(self) -> Iterator[Metric]:
        states = self.poller.states()
        stats = {source.name: source.request_stats() for source in self.poller.sources}
        yield from self._kpi_families(states)
        yield from self._health_families(states, stats)

    def _kpi_families(self, states) -> Iterator[Metric]:
        families = {kpi.metric: (kpi, _family(kpi.metric, kpi.help, kpi.labels, kpi.type))
                    for kpi in self.kpis}
        for state in states.values():
            for sample in state.samples:
                entry = families.get(sample.metric)
                if entry is None or set(sample.labels) != set(entry[0].labels):
                    self._report_unknown(sample)
                    continue
                kpi, family = entry
                family.add_metric([sample.labels[label] for label in kpi.labels], sample.value)
        for _, family in families.values():
            if family.samples:
                yield family

    def _report_unknown(self, sample) -> None:
        # A source emitting something the catalog does not describe is a bug;
        # say so once rather than failing every scrape.
        key = f"{sample.metric}{sorted(sample.labels)}"
        if key not in self._reported_unknown:
            self._reported_unknown.add(key)
            log.error("dropping %s%s: not in the KPI catalog with these labels",
                      sample.metric, sorted(sample.labels))

    def _health_families(self, states, stats) -> Iterator[Metric]:
        health = {h.metric: _family(h.metric, h.help, h.labels, h.type) for h in catalog.HEALTH}
        for name, state in states.items():
            health["kpi_source_up"].add_metric([name], 1 if state.up else 0)
            if state.last_success is not None:
                health["kpi_source_last_success_timestamp_seconds"].add_metric([name], state.last_success)
            if state.polled:
                health["kpi_source_poll_duration_seconds"].add_metric([name], state.last_duration)
            health["kpi_source_polls_total"].add_metric([name, "success"], state.successes)
            health["kpi_source_polls_total"].add_metric([name, "failure"], state.failures)
            counts = stats.get(name)
            if counts is None:
                continue
            health["kpi_source_requests_total"].add_metric([name], counts["requests"])
            health["kpi_source_request_retries_total"].add_metric([name], counts["retries"])
            for reason in ERROR_REASONS:
                health["kpi_source_request_errors_total"].add_metric(
                    [name, reason], counts["errors"].get(reason, 0))
            health["kpi_source_rate_limit_wait_seconds_total"].add_metric(
                [name], counts["rate_limit_wait_seconds"])
        for family in health.values():
            if family.samples:
                yield family
