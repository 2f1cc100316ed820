"""The whole demo exposition (all seven sources) as a Prometheus user checks it.

`promtool check metrics` over everything /metrics serves, scraped over a real
socket, and the naming conventions that promtool does not check: ratios end
in `_ratio` (never `_rate`: in PromQL a rate is per second), `quantile` and
`le` labels only where the exposition format allows them, no label that
clashes with target labels.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog
from exporter.demo import DemoExporter
from tools import require

pytestmark = pytest.mark.slow  # the whole demo, seven sources, polled once

SOURCES = {"stripe", "mailgun", "hubspot", "salesforce", "zendesk", "intercom", "sql"}
# Target labels Prometheus sets, and the ones the naming guide warns clash with them.
RESERVED_LABELS = {"job", "instance", "type", "customer", "service", "env", "region", "cluster"}


@pytest.fixture(scope="module")
def exposition() -> str:
    demo = DemoExporter(listen=("127.0.0.1", 0), live=False)
    try:
        demo.server.start()
        results = [demo.poller.poll_once(source) for source in demo.sources]
        assert all(result.up for result in results), [r.last_error for r in results]
        response = requests.get(f"{demo.url}/metrics", timeout=10)
        response.raise_for_status()
        return response.text
    finally:
        demo.stop()


@pytest.fixture(scope="module")
def families(exposition):
    return list(text_string_to_metric_families(exposition))


def test_promtool_accepts_the_whole_demo_exposition(exposition):
    promtool = require("promtool", "prometheus")
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_every_source_is_in_it(families):
    up = {s.labels["source"] for f in families if f.name == "kpi_source_up" for s in f.samples}
    assert up == SOURCES
    kpi_sources = {s.labels.get("source") for f in families if f.name.startswith("kpi_")
                   and not f.name.startswith("kpi_source_") for s in f.samples}
    assert SOURCES <= kpi_sources


def test_no_rate_named_ratio_and_no_reserved_or_misplaced_labels(families):
    for family in families:
        assert not family.name.endswith("_rate"), family.name
        for sample in family.samples:
            labels = set(sample.labels)
            assert not labels & RESERVED_LABELS, (sample.name, labels)
            if family.type != "summary":
                assert "quantile" not in labels, sample.name
            if family.type != "histogram":
                assert "le" not in labels, sample.name


def test_ratios_are_named_ratio_and_shares_lie_between_0_and_1(families):
    for kpi in catalog.KPIS:
        if kpi.unit == "ratio":  # a recording rule says so in its last part: ...:ratio_30d
            name = kpi.metric.split(":")[-1] if kpi.recorded else kpi.metric
            assert re.search(r"(^|_)ratio(_\w+)?$", name), kpi.metric
    served = {f.name for f in families}
    assert {k.metric for k in catalog.KPIS if k.unit == "ratio"} & served, "the demo serves ratios"
    # Shares of a whole cannot leave 0-1 (growth, retention and changes can).
    shares = {"kpi_email_delivery_ratio", "kpi_email_hard_bounce_ratio", "kpi_sales_win_ratio",
              "kpi_support_csat_ratio", "kpi_support_resolution_within_sla_ratio"}
    assert shares <= served
    for family in families:
        if family.name in shares:
            assert all(0 <= s.value <= 1 for s in family.samples), family.name


def test_self_observability(families):
    by_name = {f.name: f for f in families}
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "python_info"):
        assert name in by_name, name
    build = by_name["kpi_exporter_build_info"].samples[0]
    assert build.value == 1 and set(build.labels) == {"version", "python"}
    assert by_name["kpi_reporting_currency_info"].samples[0].labels == {"currency": "usd"}
    histogram = by_name["kpi_source_poll_seconds"]
    assert histogram.type == "histogram"
    counts = {s.labels["source"]: s.value for s in histogram.samples
              if s.name == "kpi_source_poll_seconds_count"}
    assert counts == dict.fromkeys(SOURCES, 1.0)  # one poll each so far
    assert "kpi_source_poll_duration_seconds" in by_name  # the last poll, for the dashboard


def test_percentiles_are_a_label_of_their_own(families):
    by_name = {f.name: f for f in families}
    for name in ("kpi_support_first_reply_seconds", "kpi_support_resolution_seconds"):
        family = by_name[name]
        assert family.type == "gauge"
        assert {s.labels["percentile"] for s in family.samples} == {"50", "90"}
