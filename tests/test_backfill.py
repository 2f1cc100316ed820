"""`kpi-exporter backfill`: whole steps, OpenMetrics promtool takes, the sources'
past equal to the simulator's own, and Prometheus answering for it."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
from click.testing import CliRunner

from exporter import catalog
from exporter.backfill import label_text, openmetrics, steps
from exporter.cli import main
from exporter.sources.base import Sample
from tools import require

DAY = 86400


def test_steps_fall_on_whole_steps_with_now_last():
    now = 1_800_000_123  # 2027-01-15 08:02:03 UTC
    days = steps(now, 3, DAY)
    assert days == [1_799_798_400, 1_799_884_800, 1_799_971_200, now]  # midnights, then now
    assert all(t % DAY == 0 for t in days[:-1])
    assert steps(now, 1, 6 * 3600)[:-1] == [1_799_928_000 + 21_600 * i for i in range(4)]  # 6-hourly
    assert steps(1_800_000_000, 1, 3600)[-2:] == [1_799_996_400, 1_800_000_000]  # now is a step


def test_openmetrics_groups_each_family_and_orders_each_series_in_time():
    mrr = catalog.by_key()["mrr"]
    by_status = catalog.by_key()["subscriptions"]
    samples = [(200, Sample("mrr", {"source": "stripe"}, 2.5)),
               (100, Sample("subscriptions", {"source": "stripe", "status": "active"}, 3)),
               (100, Sample("mrr", {"source": "stripe"}, 1.0)),
               (100, Sample("mrr", {"source": "stripe_eu"}, float("nan")))]
    text = "".join(openmetrics(samples, catalog.KPIS, {"job": "j", "instance": "h:1"}))
    assert text == (
        f"# HELP {mrr.metric} {mrr.help}\n# TYPE {mrr.metric} gauge\n"
        'kpi_mrr{instance="h:1",job="j",source="stripe"} 1.0 100\n'
        'kpi_mrr{instance="h:1",job="j",source="stripe"} 2.5 200\n'
        'kpi_mrr{instance="h:1",job="j",source="stripe_eu"} NaN 100\n'
        f"# HELP {by_status.metric} {by_status.help}\n# TYPE {by_status.metric} gauge\n"
        'kpi_subscriptions{instance="h:1",job="j",source="stripe",status="active"} 3.0 100\n'
        "# EOF\n")
    assert label_text({"plan": 'a "b"\\c\n'}) == 'plan="a \\"b\\"\\\\c\\n"'
    with pytest.raises(ValueError, match="not a KPI"):
        list(openmetrics([(1, Sample("mrr", {"source": "s", "x": "y"}, 1))], catalog.KPIS, {}))


def test_the_command_needs_one_of_config_and_demo_and_a_good_step(tmp_path):
    out = tmp_path / "b.om"
    neither = CliRunner().invoke(main, ["backfill", "--out", str(out)])
    assert neither.exit_code == 2 and "give --config PATH or --demo" in neither.output
    bad = CliRunner().invoke(main, ["backfill", "--demo", "--step", "daily", "--out", str(out)])
    assert bad.exit_code == 2 and "--step" in bad.output
    missing = CliRunner().invoke(main, ["backfill", "--config", str(tmp_path / "nope.yml"),
                                        "--out", str(out)])
    assert missing.exit_code == 2 and "config error" in missing.output
    assert not out.exists()


# --------------------------------------------------------------------------- Stripe, for real

@pytest.mark.slow
def test_a_backfilled_month_of_mrr_is_what_prometheus_answers_and_the_simulator_says(tmp_path):
    """The real CLI backfills a fake Stripe company, the real promtool turns it into
    blocks, the real Prometheus serves them: kpi_mrr and kpi_paying_customers at
    whole days in the last 30 equal the company's own subscriptions then, valued by
    the exporter's rules; before the events Stripe keeps, nothing is written."""
    from native_stack import free_port

    from exporter.demo import DEMO_FX_RATES
    from exporter.simulator import FakeStripe, generate_company
    from exporter.sources.stripe import held, parse
    from exporter.sources.stripe.mrr import MrrRules, revenue_kpis
    from exporter.sources.stripe.source import make_client, StripeConfig
    from exporter.secrets import Secret

    promtool, prometheus = require("promtool", "prometheus"), require("prometheus", "prometheus")
    now = int(time.time())
    store = generate_company(seed=9, customers=300, now=now)
    fx = "{" + ", ".join(f"{c}: {r}" for c, r in DEMO_FX_RATES.items() if c != "usd") + "}"
    with FakeStripe(store, live=False) as fake:
        config = tmp_path / "kpi.yml"
        config.write_text(f"fx_rates: {fx}\nsources:\n  stripe:\n"
                          f"    api_key: {fake.api_key}\n    base_url: {fake.url}\n"
                          "    rate_limit: 1000\nkit: {job: biz-kpis}\n")
        out = tmp_path / "backfill.om"
        done = CliRunner().invoke(main, ["backfill", "--config", str(config), "--days", "45",
                                         "--out", str(out), "--instance", "exporter:19877"])
        assert done.exit_code == 0, done.output
        assert "stripe 31" in done.output  # 30 whole days and now, of 46 steps
        client = make_client(StripeConfig(api_key=Secret(fake.api_key), base_url=fake.url,
                                          rate_limit=1000))
        kept = held.HeldSubscriptions()
        kept.update(client, [], now)  # a full sync: every price, coupon, subscription
        data = kept.data([])
        client.close()
    moments = steps(now, 45, DAY)
    written = sorted({int(line.rsplit(" ", 1)[1]) for line in out.read_text().splitlines()
                      if line.startswith("kpi_mrr{")})
    # whole days within the events' 30, then the moment the CLI ran (a moment after `now`)
    assert written[:-1] == [t for t in moments[:-1] if t >= now - 30 * DAY]
    assert now <= written[-1] <= now + 60

    blocks = tmp_path / "tsdb"
    made = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(out),
                           str(blocks)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    port = free_port()
    (tmp_path / "prometheus.yml").write_text("global: {}\n")
    server = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={blocks}",
                               "--storage.tsdb.retention.time=400d",
                               f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)

        def answer(query: str, at: int) -> dict:
            reply = requests.get(url + "/api/v1/query", params={"query": query, "time": at},
                                 timeout=10).json()["data"]["result"]
            return {r["metric"].get("source"): float(r["value"][1]) for r in reply}

        selector = '{job="biz-kpis",instance="exporter:19877"}'
        for days_ago in (1, 10, 20, 29):  # 29: the oldest midnight within 30 days
            at = now // DAY * DAY - days_ago * DAY
            subscriptions = [parse.parse_subscription(raw, data.prices, data.coupons,
                                                      known_discounts=store.discount_table())
                             for raw in (store.subscription_at(s["id"], at)
                                         for s in data.raw_subscriptions) if raw is not None]
            truth = revenue_kpis(subscriptions, [], now=at, fx_rates=DEMO_FX_RATES,
                                 rules=MrrRules())
            assert answer("kpi_mrr" + selector, at) == \
                {"stripe": pytest.approx(float(truth.mrr), rel=1e-12)}, days_ago
            assert answer("kpi_paying_customers" + selector, at) == \
                {"stripe": truth.paying_customers}
        # before the events: nothing (a query 5 minutes after a step sees that step)
        assert answer("kpi_mrr" + selector, now // DAY * DAY - 31 * DAY + 60) == {}
    finally:
        server.terminate()
        server.wait(10)


def test_progress_off_a_terminal_is_a_log_line_every_tenth_of_the_steps(caplog):
    from exporter.backfill import progress

    with caplog.at_level("INFO", logger="exporter.backfill"), progress(1, 20) as report:
        for at in range(20):
            report("stripe", at)
    assert [r.getMessage() for r in caplog.records] == \
        [f"stripe: {n} of 20 steps" for n in range(2, 21, 2)]
