"""The demo's scenarios: calm by default, and each other one breaks the threshold it names.

Through Prometheus, tests/test_stack.py checks that the calm demo raises no
alert at all and that a scenario's alert reaches a receiver.
"""

from __future__ import annotations

import pytest

from exporter import catalog, cli
from exporter.demo import DemoExporter
from exporter.kit.rules import alert_name
from exporter.simulator import SCENARIOS


def poll(scenario: str) -> dict[str, list]:
    """Every source's samples once, as {catalog key: [(labels without window, window, value)]}."""
    demo = DemoExporter(listen=("127.0.0.1", 0), scenario=scenario, live=False)
    try:
        results = [demo.poller.poll_once(source) for source in demo.sources]
    finally:
        demo.stop()
    assert [r.up for r in results] == [True] * len(results) and len(results) == 7
    values: dict[str, list] = {}
    for sample in (s for r in results for s in r.samples):
        labels = {k: v for k, v in sample.labels.items() if k != "window"}
        values.setdefault(sample.kpi, []).append(
            (labels, sample.labels.get("window"), sample.value))
    return values


def broken(values: dict, kpi: catalog.Kpi, threshold: catalog.Threshold) -> bool:
    """Does any series break the threshold, read the way its rule reads it?"""
    def series(key: str, window: str | None) -> dict[str, float]:
        return {str(sorted(labels.items())): value
                for labels, w, value in values.get(key, []) if w == window}

    if threshold.kind == "drop" and kpi.key == "mrr":  # the exporter's own growth
        return any(v < -threshold.value for v in series("mrr_growth_rate", threshold.window).values())
    now = series(kpi.key, threshold.window)
    if threshold.kind == "drop":  # the short window against the baseline one
        before = series(kpi.key, threshold.baseline)
        return any((before[k] - v) / before[k] > threshold.value for k, v in now.items())
    if threshold.kind == "above":
        return any(v > threshold.value for v in now.values())
    return any(v < threshold.value for v in now.values())


def test_the_cli_offers_exactly_the_simulators_scenarios():
    assert set(cli.SCENARIO_NAMES) == set(SCENARIOS)


@pytest.mark.slow  # six companies generated and polled
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_scenario_breaks_exactly_the_thresholds_of_its_alerts(name):
    values = poll(name)
    alerts = {alert_name(kpi, t) for kpi in catalog.KPIS for t in kpi.thresholds
              if broken(values, kpi, t)}
    # The platform's alerts come from the simulated application's metrics, which
    # Prometheus scrapes itself: tests/test_platform.py checks those.
    assert alerts == {a for a in SCENARIOS[name].alerts if not a.startswith("Platform")}


def test_the_scenario_help_describes_every_scenario():
    from click.testing import CliRunner

    # wide enough that no scenario's name is wrapped at its hyphen
    output = CliRunner().invoke(cli.main, ["demo", "--help"], terminal_width=1000).output
    text = " ".join(output.split())
    for name in SCENARIOS:
        assert f"{name}:" in text, name


@pytest.mark.parametrize("minutes_past_midnight", [1, 23 * 60 + 50])
def test_the_engagement_drop_is_a_drop_at_any_time_of_day(tmp_path, minutes_past_midnight):
    """The last week is quiet whatever the hour (UTC): a day only partly in it used
    to stay at full activity, and just after midnight it filled the week."""
    import sqlite3
    from datetime import datetime, timezone

    from exporter.simulator.product_company import ProductProfile, write_product

    day = 86400
    now = 1_796_083_200 + minutes_past_midnight * 60  # 1 Dec 2026, UTC
    path = str(tmp_path / "product.db")
    write_product(9, now, path, ProductProfile(engagement_drop=0.6))

    def active(start, end):
        text = [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
                for t in (start, end)]
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(DISTINCT user_id) FROM events WHERE occurred_at > ? "
                              "AND occurred_at <= ?", text).fetchone()[0]

    last, before = active(now - 7 * day, now), active(now - 14 * day, now - 7 * day)
    assert (last - before) / before < -0.3  # 60 % of the users stay: about -0.4
