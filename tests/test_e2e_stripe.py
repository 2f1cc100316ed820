"""End to end over real sockets: the exporter polling the fake Stripe.

No mocks: the real HTTP client talks to the simulator's HTTP server, the real
poller and collector produce /metrics, and promtool checks the exposition.
"""

import threading
import time
from decimal import Decimal
from functools import partial

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from exporter.config import Config
from exporter.demo import DEMO_FX_RATES, DemoExporter
from exporter.secrets import Secret
from exporter.simulator import FakeStripe, StripeStore, generate_company
from exporter.simulator.ticker import BUSY_RATES, DEFAULT_RATES, CompanyTicker
from exporter.sources.stripe import StripeConfig
from exporter.sources.stripe import fetch, held, history, parse
from exporter.sources.stripe.mrr import MrrRules, customer_mrr
from exporter.sources.stripe.source import make_client

NOW = 1_800_000_000
KEY = "sk_test_e2e_0123456789"


def values(text: str) -> dict:
    """{(name, frozenset(labels)): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(scraped: dict, name: str, **labels) -> float | None:
    return scraped.get((name, frozenset({"source": "stripe", **labels}.items())))


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def small_company() -> StripeStore:
    """Six customers whose MRR is worked out by hand below."""
    store = StripeStore(seed=1, now=NOW)
    monthly = store.add_price(4900, "usd", "month", id="price_monthly")
    yearly_eur = store.add_price(120000, "eur", "year", id="price_yearly_eur")
    seats = store.add_price(tiers=[(5, 1000), (None, 800, 2000)], tiers_mode="graduated",
                            id="price_seats")
    yen = store.add_price(9800, "jpy", "month", id="price_yen")
    half = store.add_coupon(percent_off=50, id="HALF")
    expired = store.add_coupon(amount_off=1000, currency="usd", duration="repeating",
                               duration_in_months=1, id="MONTHONE")
    a, b, c, d, e, f = (store.add_customer(f"Customer {x}") for x in "abcdef")
    store.add_subscription(a, [(monthly, 2)], coupons=[half])          # 2 x 49 x 50 % = $49
    store.add_subscription(b, [yearly_eur])                             # 1200 / 12 = 100 EUR = $110
    store.add_subscription(c, [(seats, 7)])                             # 5x10 + 2x8 + 20 = $86
    store.add_subscription(d, [yen])                                    # 9800 JPY = $65.66
    store.add_subscription(e, [monthly], coupons=[expired],             # discount ended: $49
                           created=NOW - 90 * 86400)
    store.add_subscription(f, [monthly], status="trialing")            # not counted
    store.add_subscription(f, [monthly], status="canceled", created=NOW - 200 * 86400)
    store.add_charge(a, 4900, status="failed", created=NOW - 3600)
    store.add_charge(b, 10000, "eur", status="failed", created=NOW - 7200)
    store.add_charge(c, 8600, status="succeeded", created=NOW - 3600)
    store.add_charge(d, 9800, "jpy", status="failed", created=NOW - 90000)  # older than 24 h
    return store


def exporter_for(fake: FakeStripe, api_key: str = KEY, poll_interval: float = 3600) -> Exporter:
    config = Config(
        file="<test>", listen=("127.0.0.1", 0), reporting_currency="usd",
        fx_rates=dict(DEMO_FX_RATES),
        sources={"stripe": StripeConfig(api_key=Secret(api_key), base_url=fake.url,
                                        poll_interval=poll_interval, rate_limit=1000)},
    )
    exporter = Exporter(config)
    source = exporter.sources[0]
    source.clock = lambda: NOW
    # The real client as the source builds it, but retrying without the backoff waits.
    source.client.close()
    source.client = make_client(source.config, sleep=lambda seconds: None)
    return exporter


@pytest.fixture
def fake():
    with FakeStripe(small_company(), api_key=KEY) as server:
        yield server


@pytest.fixture
def running(fake):
    exporter = exporter_for(fake).start()
    assert wait_for(exporter.poller.ready)
    yield exporter, fake
    exporter.stop()


def scrape(exporter) -> tuple[str, dict]:
    response = requests.get(exporter.url + "/metrics", timeout=10)
    response.raise_for_status()
    return response.text, values(response.text)


def test_hand_computed_company_over_http(running):
    exporter, _ = running
    _, scraped = scrape(exporter)
    # 49 + 110 + 86 + 9800 x 0.0067 + 49
    assert value(scraped, "kpi_mrr") == pytest.approx(49 + 110 + 86 + 65.66 + 49)
    assert value(scraped, "kpi_mrr_by_currency", currency="usd") == pytest.approx(184)
    assert value(scraped, "kpi_mrr_by_currency", currency="eur") == pytest.approx(100)
    assert value(scraped, "kpi_mrr_by_currency", currency="jpy") == pytest.approx(9800)
    assert value(scraped, "kpi_paying_customers") == 5
    assert value(scraped, "kpi_arpa") == pytest.approx(359.66 / 5)
    assert value(scraped, "kpi_subscriptions", status="active") == 5
    assert value(scraped, "kpi_subscriptions", status="trialing") == 1
    assert value(scraped, "kpi_subscriptions", status="canceled") == 1
    assert value(scraped, "kpi_failed_payments", window="24h") == 2
    assert value(scraped, "kpi_failed_payments_amount", window="24h") == pytest.approx(49 + 110)
    assert value(scraped, "kpi_source_up") == 1


def test_upstream_failure_keeps_last_values_then_recovers(running):
    exporter, fake = running
    source = exporter.sources[0]
    before = value(scrape(exporter)[1], "kpi_mrr")

    fake.fail_next(5, status=500)  # the first request and its four retries
    exporter.poller.poll_once(source)
    _, scraped = scrape(exporter)
    assert value(scraped, "kpi_source_up") == 0
    assert value(scraped, "kpi_mrr") == before
    assert value(scraped, "kpi_source_request_errors_total", reason="http_5xx") == 5  # 1 + 4 retries

    exporter.poller.poll_once(source)
    _, scraped = scrape(exporter)
    assert value(scraped, "kpi_source_up") == 1 and value(scraped, "kpi_mrr") == before


def test_malformed_upstream_marks_down_and_keeps_values(running):
    exporter, fake = running
    before = value(scrape(exporter)[1], "kpi_mrr")
    fake.serve_malformed_next(1)
    exporter.poller.poll_once(exporter.sources[0])
    _, scraped = scrape(exporter)
    assert value(scraped, "kpi_source_up") == 0
    assert value(scraped, "kpi_source_request_errors_total", reason="malformed") == 1
    assert value(scraped, "kpi_mrr") == before


def test_rate_limited_request_is_retried(running):
    exporter, fake = running
    fake.fail_next(2, status=429, headers={"Stripe-Should-Retry": "true"})
    state = exporter.poller.poll_once(exporter.sources[0])
    _, scraped = scrape(exporter)
    assert state.up
    assert value(scraped, "kpi_source_request_errors_total", reason="rate_limited") == 2
    assert value(scraped, "kpi_source_request_retries_total") == 2


def test_wrong_key_is_an_auth_error_and_never_leaks(fake, caplog):
    # Its last four characters are letters: digits turn up in the process metrics
    # by chance (a resident size of 2.0076544e+08 held "7654").
    wrong = "sk_test_wrongkey_98wxyz"
    exporter = exporter_for(fake, api_key=wrong)
    with caplog.at_level("DEBUG"):
        state = exporter.poller.poll_once(exporter.sources[0])
    exporter.server.start()
    try:
        text, scraped = scrape(exporter)
        landing = requests.get(exporter.url + "/", timeout=10).text
    finally:
        exporter.stop()
    assert not state.up and "401" in state.last_error
    assert value(scraped, "kpi_source_request_errors_total", reason="auth") == 1
    everything = text + landing + state.last_error + caplog.text
    assert wrong not in everything and wrong[-4:] not in everything


def test_scrape_stays_fast_while_upstream_is_slow(running):
    exporter, fake = running
    fake.set_latency(1.0)  # every Stripe request now takes a second
    polling = threading.Thread(target=exporter.poller.poll_once, args=(exporter.sources[0],))
    polling.start()
    try:
        time.sleep(0.2)
        started = time.monotonic()
        text, scraped = scrape(exporter)
        elapsed = time.monotonic() - started
        assert polling.is_alive(), "the poll should still be waiting on the slow upstream"
        # The scrape answered from the last snapshot instead of waiting on a
        # one-second upstream call (let alone the several a poll makes).
        assert elapsed < 0.5, f"scrape took {elapsed:.2f}s"
        assert value(scraped, "kpi_mrr") > 0
    finally:
        fake.set_latency(0)
        polling.join(30)


@pytest.mark.slow  # a whole demo company, polled live
def test_demo_shows_nonzero_kpis_within_seconds():
    demo = DemoExporter(listen=("127.0.0.1", 0), customers=400, poll_interval=3600)
    started = time.monotonic()
    demo.start()
    try:
        assert wait_for(demo.poller.ready, timeout=20)
        ready_after = time.monotonic() - started
        _, scraped = scrape(demo)
    finally:
        demo.stop()
    assert ready_after < 10
    for metric, labels in [("kpi_mrr", {}), ("kpi_paying_customers", {}), ("kpi_arpa", {}),
                           ("kpi_subscriptions", {"status": "active"}),
                           ("kpi_failed_payments", {"window": "24h"}),
                           ("kpi_failed_payments_amount", {"window": "24h"})]:
        assert value(scraped, metric, **labels) > 0, metric
    # The totals agree with their parts: MRR is the converted sum of the currencies.
    by_currency = {labels: v for (name, labels), v in scraped.items()
                   if name == "kpi_mrr_by_currency"}
    converted = sum(Decimal(str(v)) * DEMO_FX_RATES[dict(labels)["currency"]]
                    for labels, v in by_currency.items())
    assert value(scraped, "kpi_mrr") == pytest.approx(float(converted))
    assert value(scraped, "kpi_arpa") == pytest.approx(
        value(scraped, "kpi_mrr") / value(scraped, "kpi_paying_customers"))
    # Revenue dynamics from the simulated history: every movement shows, and the
    # bridge from the window start to now holds.
    month = {"window": "30d"}
    moved = {m: value(scraped, "kpi_mrr_movement", movement=m, **month)
             for m in ("new", "expansion", "contraction", "churn", "reactivation")}
    assert all(amount > 0 for amount in moved.values()), moved
    bridged = (value(scraped, "kpi_mrr_window_start", **month) + moved["new"]
               + moved["expansion"] + moved["reactivation"] - moved["contraction"]
               - moved["churn"])
    assert bridged == pytest.approx(value(scraped, "kpi_mrr"), abs=0.01)
    for metric, labels in [("kpi_mrr_growth_ratio", month), ("kpi_customer_churn_ratio", month),
                           ("kpi_net_revenue_retention_ratio", month),
                           ("kpi_net_revenue_retention_ratio", {"window": "1y"}),
                           ("kpi_trials_active", {}), ("kpi_trial_conversion_ratio", month),
                           ("kpi_customer_lifetime_value", {}), ("kpi_refunds_amount", month),
                           ("kpi_disputes_open", {})]:
        assert value(scraped, metric, **labels) > 0, (metric, labels)


def test_live_company_later_polls_fetch_only_new_events():
    """The ticker moves the company on; the next poll asks only for new events
    and its numbers follow, with the bridge still exact."""
    start = 1_800_000_000
    clock = {"now": start}
    store = generate_company(seed=3, customers=150, now=start)
    ticker = CompanyTicker(store, rng_seed=5, clock=lambda: clock["now"], rates=BUSY_RATES)
    with FakeStripe(store, api_key=KEY) as fake:
        exporter = exporter_for(fake)
        source = exporter.sources[0]
        source.clock = lambda: clock["now"]
        first = exporter.poller.poll_once(source)
        fake.reset_log()
        clock["now"] = start + 12 * 3600
        changes = ticker.tick()
        second = exporter.poller.poll_once(source)
        exporter.stop()
    assert first.up and second.up and changes
    event_queries = [query for method, path, query in fake.requests if path == "/v1/events"
                     and "customer.subscription.created" in query["types[]"]]
    held_times = [c.created for c in source.events.changes()] + [
        e["created"] for e in source.events.discount_events()]
    newest_first_poll = max(t for t in held_times if t <= start)
    # from the newest event of the first poll, less the 5-minute overlap for late arrivals
    assert event_queries and all(q["created[gte]"] == [str(newest_first_poll - 300)]
                                 for q in event_queries)
    # and the charges, refunds and disputes that changed since the first poll (less 5 minutes)
    assert [q["created[gte]"] for _, path, q in fake.requests if path == "/v1/events"
            and "refund.updated" in q["types[]"]] == [[str(start - 300)]]
    assert not any(path == "/v1/invoices" for _, path, _ in fake.requests)  # cached for the day
    by_metric = {(s.kpi, s.labels.get("movement")): s.value for s in second.samples}
    assert by_metric != {(s.kpi, s.labels.get("movement")): s.value for s in first.samples}
    bridged = (by_metric[("mrr_window_start", None)] + by_metric[("mrr_movement", "new")]
               + by_metric[("mrr_movement", "expansion")]
               + by_metric[("mrr_movement", "reactivation")]
               - by_metric[("mrr_movement", "contraction")]
               - by_metric[("mrr_movement", "churn")])
    assert bridged == pytest.approx(by_metric[("mrr", None)], abs=0.01)


def test_rebuilt_past_matches_the_simulators_own_timelines():
    """Undoing events over HTTP gives the same customer MRR as the simulator's
    own record of each subscription at that moment, valued by the same rules."""
    store = generate_company(seed=11, customers=500, now=NOW)
    with FakeStripe(store, api_key=KEY) as fake:
        exporter = exporter_for(fake)
        source = exporter.sources[0]
        kept = source.held = held.HeldSubscriptions()
        kept.update(source.client, [], NOW)  # a full sync: every price, coupon, subscription
        data = kept.data([])
        source.events.refresh(partial(fetch.list_all, source.client), NOW)
        source._remember_discounts()
        source.events.settle(partial(history.settled, prices=data.prices, coupons=data.coupons,
                                     known_discounts=source.known_discounts, shared=kept.shared))
        exporter.stop()
    every_discount = store.discounts
    changes = source.events.changes()
    assert all(change.pending is None for change in changes)  # every event parsed for good
    now_mrr = customer_mrr(data.subscriptions, NOW, DEMO_FX_RATES, MrrRules())
    for at in (NOW - 30 * 86400, NOW - 86400, NOW - 7 * 86400):
        rebuilt = history.customer_mrr_at(data.subscriptions, changes, at, now_mrr=now_mrr,
                                          fx_rates=DEMO_FX_RATES, rules=MrrRules())
        truth = customer_mrr(
            [parse.parse_subscription(raw, data.prices, data.coupons, known_discounts=every_discount)
             for raw in (store.subscription_at(s.id, at) for s in data.subscriptions)
             if raw is not None],
            at, DEMO_FX_RATES, MrrRules())
        assert len(truth) > 300
        assert rebuilt == truth and len(rebuilt) == len(truth)
        assert all(customer in rebuilt for customer in truth)
        # Only the customers a change since then touched were valued anew: the rest
        # read today's MRR (most of a month's events are renewals).
        assert 0 < len(rebuilt.touched) < len(now_mrr) // 2


def test_a_listing_decoded_into_the_schema_parses_as_its_whole_json():
    """schema.py decodes listed subscriptions into the fields parse.py reads only: every
    subscription of a company (discounts, tiers, trials, currencies, cancellations)
    parses to the record its whole JSON gives."""
    import orjson

    store = generate_company(seed=5, customers=400, now=NOW)
    with FakeStripe(store, api_key=KEY) as fake:
        client = make_client(StripeConfig(api_key=Secret(KEY), base_url=fake.url,
                                          rate_limit=None), sleep=lambda seconds: None)
        prices, coupons = fetch.price_list(client), fetch.coupon_list(client)
        whole = list(fetch.list_all(client, "/v1/subscriptions", [
            ("status", "all"), *(("expand[]", "data." + p) for p in fetch.SUBSCRIPTION_EXPAND)],
            decode=orjson.loads))
        listed = [sub for page in fetch.subscription_pages(client) for sub in page]
        one = fetch.subscription(client, whole[0]["id"])
    assert len(listed) == len(whole) > 400
    assert "plan" in whole[0]["items"]["data"][0] and "plan" not in listed[0]["items"]["data"][0]
    records = [parse.parse_subscription(sub, prices, coupons) for sub in listed]
    assert records == [parse.parse_subscription(sub, prices, coupons) for sub in whole]
    assert parse.parse_subscription(one, prices, coupons) == records[0]
    assert {r.status for r in records} >= {"active", "canceled", "trialing", "past_due"}
    assert any(r.discounts for r in records) and any(i.discounts for r in records for i in r.items)
    assert any(r.trial_end for r in records) and any(r.cancel_at_period_end for r in records)


def subscriptions_as_stored(store: StripeStore) -> dict[str, str]:
    return {sub["id"]: repr(sub) for sub in store.snapshot(store.objects("subscriptions"))}


def _stripe_source(fake: FakeStripe, clock: dict):
    exporter = exporter_for(fake)
    source = exporter.sources[0]
    source.clock = lambda: clock["now"]
    return exporter, source


def _payments_move_on(store: StripeStore, step: int) -> set[str]:
    """Between polls: a pending refund settles, an open dispute is answered or
    closed, a pending charge settles (the first step makes them pending); returns
    their paths."""
    moved = set()
    with store.lock:
        at = store.now - 30
        if step == 0:
            customer = store.objects("customers")[0]
            store.add_charge(customer, 2500, status="pending", created=at)
            paid = [c for c in store.objects("charges") if c["status"] == "succeeded"
                    and not c["amount_refunded"]]
            for charge in paid[-2:]:
                store.add_refund(charge, status="pending", created=at)
            return moved
        pending = [c for c in store.objects("charges") if c["status"] == "pending"]
        if pending:
            moved.add(f"/v1/charges/{store.settle_charge(pending[0], 'failed', at=at)['id']}")
        refunds = [r for r in store.objects("refunds") if r["status"] == "pending"]
        if refunds:
            status = "failed" if step % 2 else "succeeded"
            moved.add(f"/v1/refunds/{store.update_refund(refunds[0], status, at=at)['id']}")
        disputes = [d for d in store.objects("disputes")
                    if d["status"] in ("needs_response", "under_review")]
        if disputes:
            status = "under_review" if disputes[0]["status"] == "needs_response" else "lost"
            moved.add(f"/v1/disputes/{store.update_dispute(disputes[0], status, at=at)['id']}")
    return moved


def test_incremental_polls_equal_a_full_sync_on_a_changing_company():
    """The ticker signs up, upgrades, cancels, fails and retries payments between
    polls, and refunds, disputes and a charge change status; a later poll re-reads
    only what the events name (or re-lists when that costs less), and every
    number equals a fresh exporter's full sync of the same moment, exactly."""
    start = 1_800_000_000
    clock = {"now": start}
    store = generate_company(seed=3, customers=1000, now=start)
    rates = {kind: per_day * 10 for kind, per_day in DEFAULT_RATES.items()}
    ticker = CompanyTicker(store, rng_seed=5, clock=lambda: clock["now"], rates=rates)
    updates, payments_moved = [], []
    with FakeStripe(store, api_key=KEY) as fake:
        kept, source = _stripe_source(fake, clock)
        assert kept.poller.poll_once(source).up
        relist_cost = len(source.held.data([]).subscriptions) // 100
        for step, hours in enumerate((1, 2, 5, 11, 17)):  # 17: past midnight UTC
            clock["now"] = start + hours * 3600
            before = subscriptions_as_stored(store)
            assert ticker.tick()
            moved = _payments_move_on(store, step)
            after = subscriptions_as_stored(store)
            changed = {sub for sub in after if before.get(sub) != after[sub]}
            fake.reset_log()
            incremental = kept.poller.poll_once(source)
            paths = [path for _, path, _ in fake.requests]
            payments_moved.append(moved)
            fresh, fresh_source = _stripe_source(fake, clock)
            full = fresh.poller.poll_once(fresh_source)
            fresh.stop()
            assert incremental.up and full.up
            assert changed and changed <= source.held.reread  # every changed one is named
            updates.append(source.held.last_update)
            if len(source.held.reread) > relist_cost:
                assert source.held.last_update.endswith("more than a re-list costs)")
            else:
                assert source.held.last_update == f"{len(source.held.reread)} re-read"
                assert "/v1/subscriptions" not in paths and "/v1/prices" not in paths
                assert sorted(p for p in paths if p.startswith("/v1/subscriptions/")) == \
                    sorted(f"/v1/subscriptions/{sub}" for sub in source.held.reread)
            assert {(s.kpi, tuple(sorted(s.labels.items()))): s.value
                    for s in incremental.samples} == \
                {(s.kpi, tuple(sorted(s.labels.items()))): s.value for s in full.samples}
        kept.stop()
    assert sum(u.endswith("re-read") and u != "0 re-read" for u in updates) >= 3, updates
    assert any(u.startswith("full sync") for u in updates), updates
    # a charge, refunds and disputes changed (their numbers followed, above)
    assert {path.split("/")[2] for moved in payments_moved for path in moved} == \
        {"charges", "refunds", "disputes"}


def test_a_poll_with_nothing_changed_costs_a_handful_of_requests():
    clock = {"now": 1_800_000_000}
    store = generate_company(seed=4, customers=300, now=clock["now"])
    with FakeStripe(store, api_key=KEY) as fake:
        exporter, source = _stripe_source(fake, clock)
        first = exporter.poller.poll_once(source)
        listed = fake.request_count
        fake.reset_log()
        clock["now"] += 300
        steady = exporter.poller.poll_once(source)
        exporter.stop()
    assert first.up and steady.up and listed > 20
    assert source.held.last_update == "0 re-read"
    # subscription events, charges, refunds, disputes and the events of their
    # changes since the last poll: one page each
    assert sorted(path for _, path, _ in fake.requests) == \
        ["/v1/charges", "/v1/disputes", "/v1/events", "/v1/events", "/v1/refunds"]
    assert {(s.kpi, tuple(s.labels.items())) for s in steady.samples} == \
        {(s.kpi, tuple(s.labels.items())) for s in first.samples}


def test_a_full_sync_follows_the_full_sync_interval():
    clock = {"now": 1_800_000_000}
    store = generate_company(seed=4, customers=40, now=clock["now"])
    with FakeStripe(store, api_key=KEY) as fake:
        exporter, source = _stripe_source(fake, clock)
        source.held.full_sync_interval = 3600
        reasons = []
        for minutes in (0, 30, 59, 60, 90):
            clock["now"] = 1_800_000_000 + minutes * 60
            assert exporter.poller.poll_once(source).up
            reasons.append(source.held.last_update)
        exporter.stop()
    assert reasons == ["full sync (first poll)", "0 re-read", "0 re-read",
                       "full sync (full_sync_interval)", "0 re-read"]


def test_two_stripe_accounts_each_under_its_own_name():
    """A US and an EU account: two sources of one type, each with its own poll, client
    and health series, its samples labelled with its name; one failing leaves the
    other up."""
    us_store, eu_store = small_company(), generate_company(seed=3, customers=40, now=NOW)
    with FakeStripe(us_store, api_key=KEY) as us, FakeStripe(eu_store, api_key=KEY) as eu:
        def account(fake):
            return StripeConfig(api_key=Secret(KEY), base_url=fake.url, rate_limit=1000)

        config = Config(file="<test>", listen=("127.0.0.1", 0), reporting_currency="usd",
                        fx_rates=dict(DEMO_FX_RATES),
                        sources={"stripe_us": account(us), "stripe_eu": account(eu)},
                        source_types={"stripe_us": "stripe", "stripe_eu": "stripe"})
        exporter = Exporter(config)
        alone = exporter_for(eu)  # the EU account as the only source, named stripe
        for source in (*exporter.sources, *alone.sources):
            source.clock = lambda: NOW
        states = [exporter.poller.poll_once(source) for source in exporter.sources]
        alone_state = alone.poller.poll_once(alone.sources[0])
        exporter.server.start()
        _, scraped = scrape(exporter)
        eu.fail_next(10, status=401)  # the EU key stops working; the US account does not care
        failed = exporter.poller.poll_once(exporter.sources[1])
        us_again = exporter.poller.poll_once(exporter.sources[0])
        exporter.stop()
        alone.stop()
    assert [s.name for s in exporter.sources] == ["stripe_us", "stripe_eu"]
    assert all(state.up for state in states) and alone_state.up
    assert not failed.up and "stripe_eu: GET" in failed.last_error and us_again.up

    def mrr(source):
        return scraped.get(("kpi_mrr", frozenset({"source": source}.items())))

    assert mrr("stripe_us") == pytest.approx(49 + 110 + 86 + 65.66 + 49)
    assert mrr("stripe_eu") == [s.value for s in alone_state.samples if s.kpi == "mrr"][0]
    assert mrr("stripe") is None  # no series under the type's name
    for source in ("stripe_us", "stripe_eu"):
        assert scraped[("kpi_source_up", frozenset({"source": source}.items()))] == 1
        assert scraped[("kpi_source_requests_total", frozenset({"source": source}.items()))] > 0


def is_cohort_page(path: str, query: dict) -> bool:
    """A page of the 1y cohort's invoices (not a trial's paid-invoice check)."""
    return path == "/v1/invoices" and "subscription" not in query


def cohort_requests(requests_made) -> list[dict]:
    """The queries of the 1y cohort's invoice pages."""
    return [query for _, path, query in requests_made if is_cohort_page(path, query)]


def test_the_year_old_cohort_reads_only_a_new_day_of_invoices_each_day():
    """The 1y cohort's moment moves a day each day: the next day lists only the
    invoices created since the last read, and its numbers equal a fresh source's."""
    day = 86400
    clock = {"now": NOW}
    store = generate_company(seed=4, customers=300, now=NOW)

    def cohort_reads(requests_made):  # the first page of each
        return [query for query in cohort_requests(requests_made)
                if "starting_after" not in query]

    with FakeStripe(store, api_key=KEY) as fake:
        exporter, source = _stripe_source(fake, clock)
        assert exporter.poller.poll_once(source).up
        [first] = cohort_reads(fake.requests)
        read = first
        for _ in range(7):  # a week of days: renewals of the cohort's monthly plans
            fake.reset_log()
            last_read = read
            clock["now"] += day
            later = exporter.poller.poll_once(source)
            [read] = cohort_reads(fake.requests)
        fresh_exporter, fresh = _stripe_source(fake, clock)
        fresh_state = fresh_exporter.poller.poll_once(fresh)
        exporter.stop()
        fresh_exporter.stop()
    first_moment, moment = ((t // day) * day - 365 * day for t in (NOW, clock["now"]))
    # the first read: a year before the moment a year ago, to a day after it
    assert first["created[gte]"] == [str(first_moment - 366 * day)]
    assert first["created[lte]"] == [str(first_moment + day)]
    # each next day: from just after the last read to a day after the new moment
    assert read["created[gte]"] == [str(int(last_read["created[lte]"][0]) + 1)]
    assert read["created[lte]"] == [str(moment + day)]
    assert later.up and fresh_state.up
    # what is kept is what a fresh read keeps, no more and no less
    assert set(source.cohort_lines._kept) == set(fresh.cohort_lines._kept)
    assert len(source.cohort_lines._kept) == len(set(source.cohort_lines._kept))

    def by_series(samples):
        return {(s.kpi, tuple(sorted(s.labels.items()))): s.value for s in samples}

    cohort = {key: value for key, value in by_series(later.samples).items()
              if ("window", "1y") in key[1]}
    assert cohort and cohort[("nrr_cohort_mrr_start", (("source", "stripe"), ("window", "1y")))] > 0
    assert by_series(later.samples) == by_series(fresh_state.samples)


def history_pages_read(requests_made) -> list[int]:
    """Where in a poll's requests the pages of history are: the month of events
    read on from a cursor, and the 1y cohort's invoices."""
    return [i for i, (_, path, query) in enumerate(requests_made)
            if (path == "/v1/events" and "starting_after" in query)
            or is_cohort_page(path, query)]


# What needs the month of events: the 30-day bridge and the last day's churn.
EVENT_SERIES = {"mrr_movement", "mrr_window_start", "customers_churned",
                "paying_customers_window_start", "customer_churn_rate",
                "gross_revenue_churn_rate", "net_revenue_churn_rate",
                "customer_lifetime_value", "largest_churn_arr"}


def test_a_large_accounts_history_is_read_over_polls(caplog):
    """A poll reads history only while it has asked fewer than `history_pages`
    requests, everything counted: past that, a first poll is its subscriptions
    and the last minutes' events. The month of events, then the 1y cohort's
    year of invoices, come over the next polls; the series that need them are
    absent (not 0) until they are read, and then equal a fresh source's that
    read it all at once."""
    budget = 4  # fewer than the first poll asks before the month's events
    clock = {"now": NOW}
    store = generate_company(seed=4, customers=300, now=NOW)

    def series(samples):
        return {(s.kpi, tuple(sorted(s.labels.items()))): s.value for s in samples}

    def needs_events(key):
        kpi, labels = key
        return kpi in EVENT_SERIES or (("window", "30d") in labels and kpi in (
            "nrr_cohort_mrr_start", "nrr_cohort_mrr_now", "mrr_growth_rate",
            "net_revenue_retention"))

    caplog.set_level("INFO")
    with FakeStripe(store, api_key=KEY) as fake:
        exporter, source = _stripe_source(fake, clock)
        source.history_pages = budget
        polls = []  # (state, events complete after it, where its history pages were, paths)
        while not polls or not any(("window", "1y") in labels
                                   for _, labels in series(polls[-1][0].samples)):
            assert len(polls) < 50
            fake.reset_log()
            state = exporter.poller.poll_once(source)
            polls.append((state, source.events.complete, history_pages_read(fake.requests),
                          [path for _, path, _ in fake.requests]))
            clock["now"] += 300
        clock["now"] -= 300
        fresh_exporter, fresh = _stripe_source(fake, clock)
        fresh_state = fresh_exporter.poller.poll_once(fresh)
        exporter.stop()
        fresh_exporter.stop()
    assert all(state.up for state, *_ in polls)
    # the first poll: its subscriptions, then only the events since a little before it
    first_paths = polls[0][3]
    month_listed = [i for i, path in enumerate(first_paths) if path == "/v1/events"][1:]
    assert len(month_listed) == 1 and month_listed[0] >= budget  # one page, past the budget
    assert "/v1/invoices" not in first_paths
    # no later poll reads a page of history once it has asked `budget` requests
    assert all(max(where, default=0) < budget for _, _, where, _ in polls)
    events_read = [complete for _, complete, _, _ in polls].index(True)
    assert events_read >= 2  # the month took polls
    assert len(polls) > events_read + 1  # and so did the year of invoices after it
    for state, complete, _, _ in polls:
        keys = series(state.samples)
        assert any(needs_events(key) for key in keys) == complete  # absent, not 0
        assert ("trials_started", (("source", "stripe"), ("window", "30d"))) in keys
    assert "the month of events: " in caplog.text and \
        "the 1y cohort's invoices: " in caplog.text
    assert series(polls[-1][0].samples) == series(fresh_state.samples)
    assert {key[0] for key in series(fresh_state.samples) if needs_events(key)} >= \
        EVENT_SERIES - {"customer_lifetime_value"}


def test_a_refund_pending_for_weeks_is_asked_by_id_once_its_event_says_it_changed():
    """A refund pending since 25 days ago, among 250 settled ones: while no event
    names it, a poll lists only the refunds since the last poll; once it fails at
    the bank (refund.updated, refund.failed), the next poll asks it by id (the
    whole 30 days would be 3 pages), and its amount leaves kpi_refunds_amount."""
    day = 86400
    clock = {"now": NOW}
    store = generate_company(seed=4, customers=300, now=NOW)
    charges = [c for c in store.list("charges") if c["status"] == "succeeded"
               and not c["amount_refunded"] and c["currency"] == "usd"]
    pending = store.add_refund(charges[0], 1, created=NOW - 25 * day, status="pending")
    for i in range(250):  # a cent each, of the other charges in turn
        store.add_refund(charges[1 + i % 100], 1, created=NOW - 20 * day + i)

    def refunds_amount(samples):
        return next(s.value for s in samples if s.kpi == "refunds_amount")

    def poll_in_five_minutes():
        clock["now"] += 300
        with store.lock:
            store.advance(clock["now"])
        fake.reset_log()
        state = exporter.poller.poll_once(source)
        return state, [(path, query) for _, path, query in fake.requests
                       if path.startswith("/v1/refunds")]

    with FakeStripe(store, api_key=KEY) as fake:
        exporter, source = _stripe_source(fake, clock)
        first = exporter.poller.poll_once(source)
        quiet, quiet_asked = poll_in_five_minutes()
        store.update_refund(pending, "failed", at=clock["now"] + 10)
        steady, asked = poll_in_five_minutes()
        fresh_exporter, fresh = _stripe_source(fake, clock)
        fresh_state = fresh_exporter.poller.poll_once(fresh)
        exporter.stop()
        fresh_exporter.stop()
    assert first.up and quiet.up and steady.up
    assert quiet_asked == [("/v1/refunds", quiet_asked[0][1])]  # not the pending one
    assert quiet_asked[0][1]["created[gte]"] == [str(NOW - 300)]  # since the last poll, less 5 min
    assert [path for path, _ in asked] == [f"/v1/refunds/{pending['id']}", "/v1/refunds"]
    assert asked[1][1]["created[gte]"] == [str(NOW)]
    assert refunds_amount(quiet.samples) == refunds_amount(first.samples)
    # the failed refund is no longer money out: one cent less
    assert refunds_amount(first.samples) - refunds_amount(steady.samples) == \
        pytest.approx(0.01, abs=1e-9)
    assert refunds_amount(steady.samples) == refunds_amount(fresh_state.samples)


def test_history_read_over_polls_while_the_company_changes_equals_a_fresh_read():
    """While the month of events and the year of invoices are read a few pages a
    poll, the ticker signs up, upgrades and cancels: the new events come in at
    the front of the log and the month at its back, and once it is all read
    every number equals a fresh source's that read it at once."""
    start = 1_800_000_000
    clock = {"now": start}
    store = generate_company(seed=3, customers=300, now=start)
    rates = {kind: per_day * 10 for kind, per_day in DEFAULT_RATES.items()}
    ticker = CompanyTicker(store, rng_seed=5, clock=lambda: clock["now"], rates=rates)

    def series(samples):
        return {(s.kpi, tuple(sorted(s.labels.items()))): s.value for s in samples}

    with FakeStripe(store, api_key=KEY) as fake:
        kept, source = _stripe_source(fake, clock)
        source.history_pages = 4
        polls = [kept.poller.poll_once(source)]
        reread_while_reading = 0  # subscriptions re-read while the month was not all read
        while not any(("window", "1y") in labels for _, labels in series(polls[-1].samples)):
            assert len(polls) < 60
            clock["now"] += 1200
            ticker.tick()
            reading = not source.events.complete
            polls.append(kept.poller.poll_once(source))
            reread_while_reading += len(source.held.reread) if reading else 0
        fresh, fresh_source = _stripe_source(fake, clock)
        full = fresh.poller.poll_once(fresh_source)
        fresh.stop()
        kept.stop()
    assert len(polls) > 3 and all(state.up for state in polls) and full.up
    assert reread_while_reading > 0
    assert series(polls[-1].samples) == series(full.samples)


def test_a_long_full_sync_says_how_many_subscriptions_it_has_listed(caplog):
    """Every PROGRESS_EVERY seconds of a full sync the log says how many are listed;
    from the second full sync on, with the last one's count as the estimate
    (Stripe's lists have no count)."""
    clock = {"now": NOW}
    store = generate_company(seed=4, customers=300, now=NOW)
    ticks = iter(range(0, 10**9, 61))  # a minute and a second a page
    caplog.set_level("INFO")
    with FakeStripe(store, api_key=KEY) as fake:
        exporter, source = _stripe_source(fake, clock)
        source.held = held.HeldSubscriptions(clock=lambda: next(ticks))
        assert exporter.poller.poll_once(source).up
        first = [r.getMessage() for r in caplog.records if "full sync: " in r.getMessage()]
        caplog.clear()
        clock["now"] += held.FULL_SYNC_INTERVAL
        assert exporter.poller.poll_once(source).up
        second = [r.getMessage() for r in caplog.records if "full sync: " in r.getMessage()]
        exporter.stop()
    total = len(source.held.data([]).subscriptions)
    assert first[:2] == ["stripe: full sync: 100 subscriptions listed",
                         "stripe: full sync: 200 subscriptions listed"]
    assert second[0] == \
        f"stripe: full sync: 100 subscriptions listed (the last full sync listed {total})"
