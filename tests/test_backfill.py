"""`kpi-exporter backfill`: whole steps, OpenMetrics promtool takes, the sources'
past equal to the simulator's own, and Prometheus answering for it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests
import responses
import yaml
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

def billed_truth(store, at: int, fx: dict) -> tuple[dict, set]:
    """Each customer's MRR billed at `at` (reporting currency), and the customers a
    paid line billed above zero for a period starting before `at`, from the
    simulator's own invoice records (not its API): per item of a subscription that
    had not ended, the paid licensed line of the latest period covering `at`, after
    discounts, as a month."""
    from collections import defaultdict
    from decimal import Decimal

    from exporter.simulator import invoices

    per_year = {"month": 12, "year": 1, "week": 52, "day": 365}
    customers: dict = defaultdict(Decimal)
    paid_before = set()
    for tl in store.timelines.values():
        latest: dict = {}
        for record in invoices.records(store, tl):
            if record.outcome != "paid" or record.attempt > store.now:
                continue
            for line in invoices.compute_lines(store, tl, record.point)[0]:
                start, end = line.period
                if line.price["recurring"]["usage_type"] != "licensed":
                    continue
                if start < at and line.amount > sum(d["amount"] for d in line.discount_amounts):
                    paid_before.add(tl.customer)
                if start <= at < end and (line.item_id not in latest
                                          or start > latest[line.item_id][0]):
                    latest[line.item_id] = (start, line)
        if tl.last.ended_at is not None and tl.last.ended_at <= at:
            continue
        for _, line in latest.values():
            recurring = line.price["recurring"]
            net = line.amount - sum(d["amount"] for d in line.discount_amounts)
            month = Decimal(net) * per_year[recurring["interval"]] / (12 * recurring["interval_count"])
            month /= 1 if tl.currency == "jpy" else 100
            if month:
                customers[tl.customer] += month * fx[tl.currency]
    return dict(customers), paid_before


def movements(start: dict, end: dict, paid_before: set) -> dict:
    """The bridge's movements, classified here on their own."""
    moved = {"new": 0.0, "expansion": 0.0, "contraction": 0.0, "churn": 0.0, "reactivation": 0.0}
    for customer in set(start) | set(end):
        before, after = float(start.get(customer, 0)), float(end.get(customer, 0))
        if before == after:
            continue
        kind = (("reactivation" if customer in paid_before else "new") if before == 0 else
                "churn" if after == 0 else "expansion" if after > before else "contraction")
        moved[kind] += abs(after - before)
    return moved


@pytest.mark.slow
def test_a_backfilled_year_of_mrr_is_what_prometheus_answers_and_live_scrapes_continue_it(tmp_path):
    """The real CLI backfills a fake Stripe company, the real promtool turns it into
    blocks, the real Prometheus serves them and then scrapes the real exporter:

    - whole days within the last 30: kpi_mrr and kpi_paying_customers equal the
      company's own subscriptions then, valued by the exporter's rules;
    - 30, 90 and 300 days ago (before the events): they equal the MRR billed, from
      the simulator's own invoice records, within 5 % of the subscriptions' MRR;
    - the live series is the same series and continues the backfilled one: one
      series, strictly increasing timestamps, the first scrape within seconds of the
      backfill's last sample and the same value."""
    from native_stack import free_port

    from exporter.demo import DEMO_FX_RATES
    from exporter.simulator import FakeStripe, generate_company
    from exporter.sources.stripe import held, parse
    from exporter.sources.stripe.mrr import MrrRules, revenue_kpis
    from exporter.sources.stripe.source import make_client, StripeConfig
    from exporter.secrets import Secret

    require("promtool", "prometheus")
    prometheus = require("prometheus", "prometheus")
    now = int(time.time())
    store = generate_company(seed=9, customers=300, now=now)
    fx = "{" + ", ".join(f"{c}: {r}" for c, r in DEMO_FX_RATES.items() if c != "usd") + "}"
    exporter_port, prometheus_port = free_port(), free_port()
    with FakeStripe(store, live=False) as fake:
        config = tmp_path / "kpi.yml"
        config.write_text(f"listen: 127.0.0.1:{exporter_port}\nfx_rates: {fx}\nsources:\n"
                          f"  stripe:\n    api_key: {fake.api_key}\n    base_url: {fake.url}\n"
                          "    rate_limit: 1000\nkit: {job: biz-kpis}\n")
        out, blocks = tmp_path / "backfill.om", tmp_path / "tsdb"
        done = CliRunner().invoke(main, ["backfill", "--config", str(config), "--days", "310",
                                         "--out", str(out), "--blocks", str(blocks)])
        assert done.exit_code == 0, done.output
        assert "stripe 311" in done.output
        client = make_client(StripeConfig(api_key=Secret(fake.api_key), base_url=fake.url,
                                          rate_limit=1000))
        kept = held.HeldSubscriptions()
        kept.update(client, [], now)  # a full sync: every price, coupon, subscription
        data = kept.data([])
        client.close()

        moments = steps(now, 310, DAY)
        text = out.read_text()
        mrr_times = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("kpi_mrr{")]
        assert mrr_times[:-1] == moments[:-1]  # every whole day, then the moment the CLI ran
        assert now <= mrr_times[-1] <= now + 60
        status_times = {int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith("kpi_subscriptions{")}
        assert min(status_times) >= now - 30 * DAY  # statuses only from the events

        live = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--config",
                                 str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: biz-kpis\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n")
        server = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={blocks}",
                                   "--storage.tsdb.retention.time=400d",
                                   f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{prometheus_port}"

            def answer(query: str, at: float) -> dict:
                reply = requests.get(url + "/api/v1/query", params={"query": query, "time": at},
                                     timeout=10).json()["data"]["result"]
                return {r["metric"].get("source"): float(r["value"][1]) for r in reply}

            selector = f'{{job="biz-kpis",instance="127.0.0.1:{exporter_port}"}}'
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until the live exporter's first scrapes
                try:
                    if answer(f"count_over_time(kpi_mrr{selector}[30s])", time.time()).get(
                            "stripe", 0) >= 3:
                        break
                except (requests.RequestException, KeyError, ValueError):
                    pass
                time.sleep(0.5)
            for days_ago in (1, 10, 20, 29):  # 29: the oldest midnight within 30 days
                at = now // DAY * DAY - days_ago * DAY
                subscriptions = [parse.parse_subscription(raw, data.prices, data.coupons,
                                                          known_discounts=store.discount_table())
                                 for raw in (store.subscription_at(s.id, at)
                                             for s in data.subscriptions) if raw is not None]
                truth = revenue_kpis(subscriptions, [], now=at, fx_rates=DEMO_FX_RATES,
                                     rules=MrrRules())
                assert answer("kpi_mrr" + selector, at) == \
                    {"stripe": pytest.approx(float(truth.mrr), rel=1e-12)}, days_ago
                assert answer("kpi_paying_customers" + selector, at) == \
                    {"stripe": truth.paying_customers}
            for days_ago in (30, 90, 300):
                at = now // DAY * DAY - days_ago * DAY
                customers, _ = billed_truth(store, at, DEMO_FX_RATES)
                billed = float(sum(customers.values()))
                assert answer("kpi_mrr" + selector, at) == \
                    {"stripe": pytest.approx(billed, rel=1e-12)}, days_ago
                assert answer("kpi_paying_customers" + selector, at) == \
                    {"stripe": sum(1 for v in customers.values() if v > 0)}
                # the bridge over the 30 days ending then, of MRR billed at both ends
                window_start, paid_before = billed_truth(store, at - 30 * DAY, DEMO_FX_RATES)
                moved = movements(window_start, customers, paid_before)
                found = {r["metric"]["movement"]: float(r["value"][1]) for r in requests.get(
                    url + "/api/v1/query", params={"query": "kpi_mrr_movement" + selector,
                                                   "time": at}, timeout=10).json()["data"]["result"]}
                assert found == pytest.approx(moved, rel=1e-9, abs=1e-9), days_ago
                assert answer("kpi_mrr_window_start" + selector[:-1] + ',window="30d"}', at) == \
                    {"stripe": pytest.approx(float(sum(window_start.values())), rel=1e-12)}
                subscriptions = [parse.parse_subscription(raw, data.prices, data.coupons,
                                                          known_discounts=store.discount_table())
                                 for raw in (store.subscription_at(s.id, at)
                                             for s in data.subscriptions) if raw is not None]
                by_rules = float(revenue_kpis(subscriptions, [], now=at,
                                              fx_rates=DEMO_FX_RATES).mrr)
                assert billed == pytest.approx(by_rules, rel=0.05), days_ago

            # The live scrapes continue the backfilled series.
            reply = requests.get(url + "/api/v1/query", params={
                "query": f"kpi_mrr{selector}[3d]", "time": time.time()}, timeout=10).json()
            [series] = reply["data"]["result"]  # one series: backfilled and live alike
            times = [float(t) for t, _ in series["values"]]
            assert times == sorted(set(times))  # no duplicate, no step back
            backfilled = [t for t in times if t <= mrr_times[-1]]
            assert backfilled[-1] == mrr_times[-1]
            first_live = times[len(backfilled)]
            assert 0 < first_live - mrr_times[-1] < 120  # no gap a 5-minute lookback shows
            values = {float(t): float(v) for t, v in series["values"]}
            assert values[first_live] == pytest.approx(values[mrr_times[-1]], rel=1e-12)

            # Recording rules get the same past, evaluated by Prometheus at the same steps.
            rules = tmp_path / "rules.yml"
            rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
                {"record": "source:kpi_arr:mrr_x12", "expr": 'kpi_mrr{job="biz-kpis"} * 12'},
                {"record": "source:kpi_mrr:change_ratio_1w", "labels": {"team": "finance"},
                 "expr": '(kpi_mrr{job="biz-kpis"} - kpi_mrr{job="biz-kpis"} offset 1w) '
                         '/ kpi_mrr{job="biz-kpis"} offset 1w'},
                {"alert": "NotRecorded", "expr": "vector(1)"},
                {"record": "nothing:backfilled", "expr": "kpi_no_such_series"}]}]}))
            ran = CliRunner().invoke(main, ["backfill-rules", "--blocks", str(blocks),
                                            "--url", url, "--rules", str(rules)])
            assert ran.exit_code == 0, ran.output
            assert "2 of 3 recording rules backfilled (2 series)" in ran.output
            again = CliRunner().invoke(main, ["backfill-rules", "--blocks", str(blocks),
                                              "--url", url, "--rules", str(rules)])
            assert again.exit_code == 0 and "nothing to do" in again.output
            at = now // DAY * DAY - 300 * DAY
            mrr_then = answer("kpi_mrr" + selector, at)["stripe"]
            week_before = answer("kpi_mrr" + selector, at - 7 * DAY)["stripe"]
            deadline = time.monotonic() + 150  # Prometheus loads new blocks once a minute
            while time.monotonic() < deadline and not answer("source:kpi_arr:mrr_x12", at):
                time.sleep(2)
            assert answer("source:kpi_arr:mrr_x12" + selector, at) == \
                {"stripe": pytest.approx(12 * mrr_then, rel=1e-12)}
            assert answer('source:kpi_mrr:change_ratio_1w{team="finance"}', at) == \
                {"stripe": pytest.approx((mrr_then - week_before) / week_before, rel=1e-9)}
        finally:
            server.terminate()
            live.terminate()
            server.wait(10)
            live.wait(10)


def test_progress_off_a_terminal_is_a_log_line_every_tenth_of_the_steps(caplog):
    from exporter.backfill import progress

    with caplog.at_level("INFO", logger="exporter.backfill"), progress(1, 20) as report:
        for at in range(20):
            report("stripe", at)
    assert [r.getMessage() for r in caplog.records] == \
        [f"stripe: {n} of 20 steps" for n in range(2, 21, 2)]


# --------------------------------------------------------------------------- recording rules

def test_the_marker_holds_the_whole_steps_and_now(tmp_path):
    import json

    from exporter.backfill import MARKER, marker_text
    from exporter.backfill_rules import steps_of

    moments = [172_800, 259_200, 345_600, 400_000]  # three midnights, then now
    (tmp_path / MARKER).write_text(marker_text("/p/backfill.om", moments))
    assert json.loads((tmp_path / MARKER).read_text())["out"] == "/p/backfill.om"
    assert steps_of(tmp_path) == {"first": 172_800, "last": 345_600, "step": DAY,
                                  "now": 400_000}
    (tmp_path / MARKER).write_text("/p/backfill.om\n")  # what an older version left
    with pytest.raises(LookupError, match="not a marker this version"):
        steps_of(tmp_path)
    (tmp_path / MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="nothing was backfilled"):
        steps_of(tmp_path)


def test_recording_rules_of_a_directory_in_order(tmp_path):
    from exporter.backfill_rules import recording_rules

    (tmp_path / "a.yml").write_text(
        "groups:\n- name: g\n  rules:\n  - record: a:one\n    expr: '1'\n"
        "  - alert: Skipped\n    expr: '1'\n- name: h\n  rules:\n  - record: a:two\n    expr: '2'\n")
    (tmp_path / "b.yaml").write_text("groups:\n- name: g\n  rules:\n  - record: b:one\n"
                                     "    expr: '3'\n    labels: {team: finance}\n")
    (tmp_path / "notes.txt").write_text("not rules")
    assert [r["record"] for r in recording_rules([tmp_path])] == ["a:one", "a:two", "b:one"]
    assert [r["record"] for r in recording_rules([tmp_path / "b.yaml"])] == ["b:one"]


@responses.activate
def test_a_rule_is_evaluated_at_the_steps_and_at_now_with_its_labels():
    from exporter.backfill_rules import evaluate, openmetrics

    url = "http://prometheus.test:9090"
    responses.get(url + "/api/v1/query_range", json={"status": "success", "data": {
        "resultType": "matrix", "result": [{"metric": {"job": "j", "source": "stripe"},
                                            "values": [[172800, "12"], [259200, "24"]]}]}})
    responses.get(url + "/api/v1/query", json={"status": "success", "data": {
        "resultType": "vector", "result": [{"metric": {"job": "j", "source": "stripe"},
                                            "value": [400000, "36"]}]}})
    rule = {"record": "source:kpi_arr:mrr_x12", "expr": "12 * kpi_mrr",
            "labels": {"team": "finance", "source": "overridden"}}
    found = evaluate(url, rule, {"first": 172800, "last": 259200, "step": DAY, "now": 400000})
    assert found == {'job="j",source="overridden",team="finance"':
                     [(172800, 12.0), (259200, 24.0), (400000, 36.0)]}
    ranged, instant = (call.request for call in responses.calls)
    assert "start=172800" in ranged.url and "end=259200" in ranged.url and "step=86400" in ranged.url
    assert "time=400000" in instant.url
    assert "".join(openmetrics({"source:kpi_arr:mrr_x12": found})) == (
        "# TYPE source:kpi_arr:mrr_x12 gauge\n"
        'source:kpi_arr:mrr_x12{job="j",source="overridden",team="finance"} 12.0 172800\n'
        'source:kpi_arr:mrr_x12{job="j",source="overridden",team="finance"} 24.0 259200\n'
        'source:kpi_arr:mrr_x12{job="j",source="overridden",team="finance"} 36.0 400000\n'
        "# EOF\n")


@responses.activate
def test_a_query_prometheus_refuses_fails_with_its_error():
    from exporter.backfill_rules import evaluate

    url = "http://prometheus.test:9090"
    responses.get(url + "/api/v1/query_range", status=400, json={
        "status": "error", "errorType": "bad_data", "error": "parse error at char 3"})
    with pytest.raises(RuntimeError, match="HTTP 400 parse error at char 3"):
        evaluate(url, {"record": "x:y", "expr": "1 +"},
                 {"first": 0, "last": DAY, "step": DAY, "now": DAY + 5})
