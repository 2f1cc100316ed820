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
    # HELP kpi_source_poll_seconds Durations of the polls of the source, failed ones included.
    # TYPE kpi_source_poll_seconds histogram
    kpi_source_poll_seconds_bucket{le="0.1",source="stripe"} 0.0
    ...

Sources name their samples by catalog key (`mrr`), the catalog gives the name
(`kpi_mrr`). The process and platform collectors of prometheus_client sit
beside this one in the exporter's registry (`process_*`, `python_*`).
"""

from __future__ import annotations

import logging
import platform
from typing import Iterator

from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)

from exporter import __version__, catalog
from exporter.http import ERROR_REASONS
from exporter.poller import POLL_BUCKETS, Poller, SourceState

log = logging.getLogger(__name__)

# The health series the poller's state gives, rendered on every scrape.
POLLER_HEALTH = frozenset({
    "source_up", "source_syncing", "source_last_success_timestamp_seconds",
    "source_poll_duration_seconds", "source_poll_seconds", "source_poll_interval_seconds",
    "source_polls_total", "source_poll_failures_total", "source_requests_total",
    "source_request_retries_total", "source_request_errors_total",
    "source_rate_limit_wait_seconds_total"})

_FAMILIES = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
             "histogram": HistogramMetricFamily}


class KpiCollector:
    def __init__(self, poller: Poller, kpis: tuple[catalog.Kpi, ...] = catalog.KPIS,
                 currency: str = "usd", constants: dict[str, float] | None = None):
        self.poller = poller
        self.kpis = kpis
        self.currency = currency
        self.constants = constants or {}  # `constants:` of the config, by catalog key
        self._reported_unknown: set[str] = set()

    def _families(self, *, health: bool | None = None) -> dict[str, tuple[tuple[str, ...], Metric]]:
        """Fresh, empty families of the catalog's metrics, by catalog key: every one, or
        only the poller's health series (`health=True`), or all but those (False)."""
        specs = [*(kpi for kpi in self.kpis if not kpi.recorded), *catalog.HEALTH]
        return {spec.key: (spec.labels,
                           _FAMILIES[spec.type](spec.metric, spec.help, labels=list(spec.labels)))
                for spec in specs if health is None or (spec.key in POLLER_HEALTH) == health}

    def describe(self) -> Iterator[Metric]:
        for _, family in self._families().values():
            yield family

    def collect(self) -> Iterator[Metric]:
        states = self.poller.states()
        yield from self.collect_samples(states)
        yield from self.collect_health(states)

    def collect_samples(self, states: dict[str, SourceState]) -> Iterator[Metric]:
        """The KPIs, the health series a source emits itself, and what the config and
        the build say: all of it changes only when a poll ends (exposition.py keeps
        its text until then)."""
        families = self._families(health=False)
        for state in states.values():
            for sample in state.samples:
                self._add_sample(families, sample)
        families["exporter_build_info"][1].add_metric(
            [__version__, platform.python_version()], 1)
        families["reporting_currency_info"][1].add_metric([self.currency], 1)
        for key, value in self.constants.items():
            families[key][1].add_metric(["config"], value)
        yield from (family for _, family in families.values() if family.samples)

    def collect_health(self, states: dict[str, SourceState]) -> Iterator[Metric]:
        """The health series of the poller's state, as they are at this moment."""
        families = self._families(health=True)
        stats = {source.name: source.request_stats() for source in self.poller.sources}
        intervals = {source.name: source.poll_interval for source in self.poller.sources}
        self._add_health(families, states, stats, intervals)
        yield from (family for _, family in families.values() if family.samples)

    def _add_sample(self, families, sample) -> None:
        entry = families.get(sample.kpi)
        if entry is None or set(sample.labels) != set(entry[0]):
            self._report_unknown(sample)
            return
        labels, family = entry
        family.add_metric([sample.labels[label] for label in labels], sample.value)

    def _report_unknown(self, sample) -> None:
        # A source emitting something the catalog does not describe is a bug;
        # say so once rather than failing every scrape.
        key = f"{sample.kpi}{sorted(sample.labels)}"
        if key not in self._reported_unknown:
            self._reported_unknown.add(key)
            log.error("dropping %s%s: not in the KPI catalog with these labels",
                      sample.kpi, sorted(sample.labels))

    @staticmethod
    def _add_health(families, states, stats, intervals) -> None:
        def add(key: str, labels: list[str], value: float) -> None:
            families[key][1].add_metric(labels, value)

        for name, state in states.items():
            # A first poll still running is neither up nor down: only syncing.
            add("source_syncing", [name], 1 if state.syncing else 0)
            if state.polled:
                add("source_up", [name], 1 if state.up else 0)
            add("source_poll_interval_seconds", [name], intervals[name])
            if state.last_success is not None:
                add("source_last_success_timestamp_seconds", [name], state.last_success)
            if state.polled:
                add("source_poll_duration_seconds", [name], state.last_duration)
            # Cumulative counts per upper bound, as the exposition format wants them.
            buckets = [(f"{bound:g}", count)
                       for bound, count in zip(POLL_BUCKETS, state.poll_buckets)]
            families["source_poll_seconds"][1].add_metric(
                [name], buckets + [("+Inf", state.successes + state.failures)],
                state.poll_seconds_sum)
            add("source_polls_total", [name, "success"], state.successes)
            add("source_polls_total", [name, "failure"], state.failures)
            for reason, count in state.failure_reasons.items():
                add("source_poll_failures_total", [name, reason], count)
            counts = stats.get(name)
            if counts is None:
                continue
            add("source_requests_total", [name], counts["requests"])
            add("source_request_retries_total", [name], counts["retries"])
            for reason in ERROR_REASONS:
                add("source_request_errors_total", [name, reason],
                    counts["errors"].get(reason, 0))
            add("source_rate_limit_wait_seconds_total", [name],
                counts["rate_limit_wait_seconds"])
