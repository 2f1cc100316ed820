"""The Stripe adapter: parsing real dahlia shapes, and fetching through the real
HTTP client against `responses` mocks."""

from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

import stripe_objects as so
from exporter.http import UpstreamError
from exporter.secrets import Secret
from exporter.sources.stripe import StripeConfig, StripeSource
from exporter.sources.stripe.parse import (
    MalformedObject,
    parse_charge,
    parse_coupon,
    parse_discount,
    parse_price,
    parse_subscription,
)
from exporter.sources.stripe.source import make_client

API = "https://api.stripe.test"
NOW = 1_800_000_000
FX = {"usd": Decimal(1), "eur": Decimal("1.10")}


# --- parsing the fixtures as Stripe sends them -------------------------------

def test_parse_fixture_subscription():
    sub = parse_subscription(so.fixture("subscription"), {}, {})
    assert sub.id == "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
    assert sub.customer == "cus_QXg1o8vcGmoR32"
    assert sub.status == "active" and sub.currency == "usd" and sub.cancel_at_period_end
    [item] = sub.items
    assert item.quantity == 1
    assert item.price.unit_amount == Decimal("2000")
    assert (item.price.interval, item.price.interval_count) == ("month", 1)
    # the fixture's transform_quantity divides by a huge number, rounding down
    assert item.price.divide_by == 1592560163 and item.price.round == "down"


def test_parse_fixture_price_coupon_charge():
    price = parse_price(so.fixture("price"))
    assert price.billing_scheme == "per_unit" and price.usage_type == "licensed"
    coupon = parse_coupon(so.fixture("coupon"))
    assert coupon.percent_off == Decimal("25.5") and coupon.duration == "forever"
    charge = parse_charge(so.fixture("charge"))
    assert (charge.amount, charge.status, charge.created) == (Decimal(100), "succeeded", 1234567890)


def test_discount_coupon_comes_from_source():
    coupons = {"SAVE10": parse_coupon(so.coupon("SAVE10", percent_off=10))}
    discount = parse_discount(so.discount("di_1", "SAVE10", end=NOW + 5), coupons)
    assert discount.coupon.percent_off == 10 and discount.end == NOW + 5
    # a deleted coupon still discounts: it comes expanded in source.coupon
    deleted = so.discount("di_2", so.coupon("GONE", percent_off=30))
    assert parse_discount(deleted, coupons).coupon.percent_off == 30
    # neither listed nor expanded: refuse to guess
    with pytest.raises(MalformedObject, match="coupon GONE not found"):
        parse_discount(so.discount("di_3", "GONE"), coupons)


def test_legacy_discount_shape_from_events_in_an_older_api_version():
    # before 2025-09-30 a discount embeds its coupon as `coupon`, with no `source`
    legacy = {"id": "di_old", "object": "discount", "end": None,
              "coupon": so.coupon("OLD", percent_off=20)}
    discount = parse_discount(legacy, {}, known_discounts={})
    assert discount.coupon.percent_off == 20


def test_fixture_discount_without_coupon_is_malformed():
    with pytest.raises(MalformedObject, match="source.coupon"):
        parse_discount(so.fixture("discount"), {})


def test_unexpanded_discount_is_malformed():
    sub = so.subscription("sub_1", "cus_1", [], discounts=["di_123"])
    with pytest.raises(MalformedObject, match="not expanded"):
        parse_subscription(sub, {}, {})


@pytest.mark.parametrize("field,value", [("status", None), ("currency", 5), ("items", "x")])
def test_malformed_subscription_names_the_field(field, value):
    sub = so.fixture("subscription")
    sub[field] = value
    with pytest.raises(MalformedObject, match=field):
        parse_subscription(sub, {}, {})


def test_tiers_come_from_the_price_list():
    tiers = [{"up_to": 5, "unit_amount": 1000, "unit_amount_decimal": "1000", "flat_amount": None,
              "flat_amount_decimal": None},
             {"up_to": None, "unit_amount": 800, "unit_amount_decimal": "800", "flat_amount": 500,
              "flat_amount_decimal": "500"}]
    listed = so.price("price_t", None, tiers=tiers, tiers_mode="volume")
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", listed, 7)])
    parsed = parse_subscription(sub, {"price_t": parse_price(listed)}, {})
    assert [t.up_to for t in parsed.items[0].price.tiers] == [5, None]
    assert parsed.items[0].price.tiers[1].flat_amount == 500


# --- fetching with the real HTTP client --------------------------------------

def make_source(**config):
    cfg = StripeConfig(api_key=Secret("sk_test_adapter1234"), base_url=API, **config)
    return StripeSource(cfg, FX, clock=lambda: NOW, client=make_client(cfg, sleep=lambda s: None))


def query(call) -> dict:
    return parse_qs(urlsplit(call.request.url).query)


def add_list(path, *pages):
    for body in pages:
        responses.add(responses.GET, API + path, json=body)


def add_quiet_history():
    """No events, invoices, refunds or disputes (each answers every call)."""
    for path in ("/v1/events", "/v1/invoices", "/v1/refunds", "/v1/disputes"):
        responses.add(responses.GET, API + path, json=so.page([]))


TIERS = [{"up_to": 10, "unit_amount": 500, "unit_amount_decimal": "500", "flat_amount": 0,
          "flat_amount_decimal": "0"},
         {"up_to": None, "unit_amount": 300, "unit_amount_decimal": "300", "flat_amount": 1000,
          "flat_amount_decimal": "1000"}]


@responses.activate
def test_poll_fetches_pages_and_computes_kpis():
    starter = so.price("price_starter", 4900)
    yearly_eur = so.price("price_eur", 120000, currency="eur", interval="year")
    seats = so.price("price_seats", None, tiers=TIERS, tiers_mode="graduated")
    metered = so.price("price_usage", 10, usage="metered")
    add_list("/v1/prices", so.page([starter, yearly_eur], has_more=True),
             so.page([seats, metered]))
    add_list("/v1/coupons", so.page([so.coupon("HALF", percent_off=50)]))
    deleted_coupon = so.coupon("OLD10", percent_off=10)  # no longer listed
    seats_coupon = so.coupon("OLDSEATS", percent_off=25)  # no longer listed
    subs = [
        # $49, half price forever -> $24.50
        so.subscription("sub_a", "cus_a", [so.item("si_a", starter)],
                        discounts=[so.discount("di_a", "HALF")]),
        # 1200 EUR a year -> 100 EUR a month, 10 % off by a deleted coupon that comes
        # expanded -> 90 EUR -> $99
        so.subscription("sub_b", "cus_b", [so.item("si_b", yearly_eur)], currency="eur",
                        discounts=[so.discount("di_b", deleted_coupon)]),
        # 12 seats graduated: 10 x 500 + 2 x 300 + 1000 flat = 6600 cents, 25 % off by a
        # deleted coupon on the item -> $49.50, + metered 0. Its items are paged separately
        # (has_more, and the item coupon needs expanding there).
        so.subscription("sub_c", "cus_c", [so.item("si_c1", seats, 12,
                                                   [so.discount("di_c", "OLDSEATS")])],
                        items_has_more=True),
        so.subscription("sub_d", "cus_d", [so.item("si_d", starter)], status="trialing"),
        so.subscription("sub_e", "cus_e", [so.item("si_e", starter)], status="canceled"),
    ]
    add_list("/v1/subscriptions", so.page(subs[:3], has_more=True), so.page(subs[3:]))
    add_list("/v1/subscription_items", so.page([
        so.item("si_c1", seats, 12, [so.discount("di_c", seats_coupon)]),
        so.item("si_c2", metered, 1)]))
    add_list("/v1/charges", so.page([
        so.charge("ch_1", 120000, created=NOW - 100),                       # $1,200 failed
        so.charge("ch_2", 50000, currency="eur", created=NOW - 200),        # 500 EUR = $550 failed
        so.charge("ch_3", 99999, status="succeeded", created=NOW - 300),
    ]))
    add_quiet_history()

    samples = make_source().poll()
    values = {(s.kpi, tuple(sorted(s.labels.items()))): s.value for s in samples}

    def value(metric, **labels):
        return values[(metric, tuple(sorted({"source": "stripe", **labels}.items())))]

    cent = {"abs": 0.005}
    assert value("mrr") == pytest.approx(24.5 + 99 + 49.5, **cent)
    assert value("mrr_by_currency", currency="usd") == pytest.approx(74, **cent)
    assert value("mrr_by_currency", currency="eur") == pytest.approx(90, **cent)
    assert value("paying_customers") == 3
    assert value("arpa") == pytest.approx((24.5 + 99 + 49.5) / 3, **cent)
    assert value("subscriptions", status="active") == 3
    assert value("subscriptions", status="trialing") == 1
    assert value("subscriptions", status="canceled") == 1
    assert value("failed_payments", window="24h") == 2
    assert value("failed_payments_amount", window="24h") == pytest.approx(1750, **cent)

    calls = {urlsplit(c.request.url).path: c for c in responses.calls}
    sub_queries = [query(c) for c in responses.calls if c.request.url.startswith(API + "/v1/subscriptions")]
    assert sub_queries[0]["status"] == ["all"]
    assert set(sub_queries[0]["expand[]"]) == {"data.discounts.source.coupon",
                                               "data.items.data.discounts"}
    assert sub_queries[1]["starting_after"] == ["sub_c"]  # cursor = last id of page 1
    assert set(query(calls["/v1/prices"])["expand[]"]) == {"data.tiers", "data.currency_options"}
    assert set(query(calls["/v1/coupons"])["expand[]"]) == {"data.currency_options",
                                                            "data.applies_to"}
    assert query(calls["/v1/subscription_items"])["subscription"] == ["sub_c"]
    assert query(calls["/v1/subscription_items"])["expand[]"] == ["data.discounts.source.coupon"]
    assert query(calls["/v1/charges"])["created[gte]"] == [str(NOW - 86400)]
    for call in responses.calls:
        assert call.request.headers["Stripe-Version"] == "2026-07-29.dahlia"
        assert call.request.headers["Authorization"] == "Bearer sk_test_adapter1234"
        assert query(call)["limit"] == ["100"]  # every list page, not just the first


@responses.activate
def test_unknown_fx_rate_is_left_out_and_logged_once(caplog):
    gbp = so.price("price_gbp", 1000, currency="gbp")
    for _ in range(2):
        add_list("/v1/prices", so.page([gbp]))
        add_list("/v1/coupons", so.page([]))
        add_list("/v1/subscriptions", so.page([
            so.subscription("sub_g", "cus_g", [so.item("si_g", gbp)], currency="gbp")]))
        add_list("/v1/charges", so.page([]))
    add_quiet_history()
    source = make_source()
    with caplog.at_level("WARNING"):
        first, second = source.poll(), source.poll()
    by_metric = {s.kpi: s for s in first}
    assert by_metric["mrr"].value == 0
    assert by_metric["mrr_by_currency"].value == 10
    assert by_metric["unconverted_objects"].labels == {"source": "stripe", "currency": "gbp"}
    assert by_metric["paying_customers"].value == 1
    assert len([r for r in caplog.records if "GBP" in r.getMessage()]) == 1
    assert first == second


@responses.activate
def test_auth_failure_raises_without_the_key():
    responses.add(responses.GET, API + "/v1/events", status=401, json={"error": {
        "type": "invalid_request_error",
        "message": "Invalid API Key provided: sk_test_adapter1234"}})
    with pytest.raises(UpstreamError) as caught:
        make_source().poll()
    assert caught.value.reason == "auth"
    assert "sk_test_adapter1234" not in str(caught.value)


@responses.activate
def test_non_list_response_is_malformed():
    responses.add(responses.GET, API + "/v1/events", json={"object": "event"})
    with pytest.raises(MalformedObject, match="not a Stripe list"):
        make_source().poll()


@responses.activate
def test_a_listed_subscription_of_the_wrong_shape_fails_the_poll_naming_where():
    """Listings are decoded into the fields the KPIs read (schema.py): a container of
    the wrong kind fails as malformed, where it is named, and nothing is parsed."""
    monthly = so.price("price_m", 1000)
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly)])
    _one_subscription_account(monthly, sub)
    responses.add(responses.GET, API + "/v1/events", json=so.page([]))
    responses.replace(responses.GET, API + "/v1/subscriptions",
                      json=so.page([{**sub, "items": {**sub["items"], "data": "x"}}]))
    source = make_source()
    with pytest.raises(UpstreamError) as info:
        source.poll()
    assert info.value.reason == "malformed" and info.value.path == "/v1/subscriptions"
    assert "Expected `array | null`, got `str` - at `$.data[0].items.data`" in str(info.value)
    assert source.held.synced_at is None


@responses.activate
def test_second_poll_fetches_only_new_events_no_subscriptions_and_no_invoices():
    monthly = so.price("price_m", 1000)
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly)], created=NOW - 90 * 86400)
    for path, body in [("/v1/prices", [monthly]), ("/v1/coupons", []),
                       ("/v1/subscriptions", [sub]), ("/v1/charges", []), ("/v1/refunds", []),
                       ("/v1/disputes", []), ("/v1/invoices", [])]:
        responses.add(responses.GET, API + path, json=so.page(body))
    older = so.event("evt_1", "customer.subscription.updated", sub, NOW - 5000,
                     previous={"cancel_at_period_end": True})
    newest = so.event("evt_2", "customer.subscription.updated", sub, NOW - 100,
                      previous={"metadata": {}})
    responses.add(responses.GET, API + "/v1/events", json=so.page([newest]))  # the last 5 min
    responses.add(responses.GET, API + "/v1/events", json=so.page([newest, older]))
    responses.add(responses.GET, API + "/v1/events", json=so.page([newest]))  # seen already

    source = make_source()
    source.poll()
    source.poll()
    event_calls = [query(c) for c in responses.calls if "/v1/events" in c.request.url]
    subscription_calls = [q for q in event_calls if "customer.subscription.updated" in q["types[]"]]
    # the first poll asks for the last 5 minutes' ids, lists the subscriptions, then
    # the month of events; the second asks from 5 minutes before the newest event held
    # (late arrivals)
    assert [q["created[gte]"] for q in subscription_calls] == [
        [str(NOW - 300)], [str(NOW - 30 * 86400)], [str(NOW - 100 - 300)]]
    # and, for the charges, refunds and disputes, what changed since the first poll
    assert [q["created[gte]"] for q in event_calls if "refund.updated" in q["types[]"]] == \
        [[str(NOW - 300)]]
    assert len(event_calls) == 4
    assert [c.id for c in source.events.changes()] == ["evt_2", "evt_1"]
    invoice_calls = [query(c) for c in responses.calls if "/v1/invoices" in c.request.url]
    assert len(invoice_calls) == 1  # a year-old cohort does not change within a day
    assert invoice_calls[0]["status"] == ["paid"]
    # a year before the start of today, and a day of slack
    assert invoice_calls[0]["created[lte]"] == [str(NOW // 86400 * 86400 - 364 * 86400)]
    # the second poll re-read no subscription: no event was new
    assert sum("/v1/subscriptions" in c.request.url for c in responses.calls) == 1


def test_merging_new_events_orders_them_as_sorting_everything_would():
    """events.merged sorts only the held events within the new ones' span; the result
    is sorted(new + held) exactly, ties (events of one second) in the same order."""
    import random

    from exporter.sources.stripe.events import merged

    rng = random.Random(7)
    for trial in range(2000):
        held = sorted(([rng.randint(0, 40), f"held{k}"] for k in range(rng.randint(0, 30))),
                      key=lambda e: e[0], reverse=True)
        new = [[rng.randint(0, 40), f"new{k}"] for k in range(rng.randint(0, 12))]
        if rng.random() < 0.5 and new:  # as a refresh: newer, but for the overlap
            floor = max((e[0] for e in held), default=0) - 3
            new = [[max(e[0], floor), e[1]] for e in new]
        expected = sorted(new + held, key=lambda e: e[0], reverse=True)
        result = merged(new, held, lambda e: e[0])
        assert [id(e) for e in result] == [id(e) for e in expected], trial
        assert result is not held


def test_the_change_log_merges_prunes_and_settles_rows_as_lists_of_changes_would():
    """changelog.ChangeLog keeps events as columns: merging new changes into it gives
    the rows sorted(new + held) gives, ties in the same order; pruning drops the rows
    before a time; settling re-parses only the pending rows."""
    import random

    from exporter.sources.stripe import parse
    from exporter.sources.stripe.changelog import ChangeLog
    from exporter.sources.stripe.records import SubscriptionChange

    def change(created, name, pending=None):
        after = None if pending else parse.parse_subscription(
            {"id": f"sub_{name}", "customer": "cus_1", "status": "active", "currency": "usd",
             "items": {"data": []}, "created": 1}, {}, {})
        return SubscriptionChange(f"evt_{name}", "customer.subscription.updated", created,
                                  f"sub_{name}", after=after, before=after,
                                  puts_back=bool(created % 2), pending=pending)

    rng = random.Random(11)
    for trial in range(500):
        held = sorted((change(rng.randint(0, 40), f"held{k}") for k in range(rng.randint(0, 30))),
                      key=lambda c: c.created, reverse=True)
        new = [change(rng.randint(0, 40), f"new{k}") for k in range(rng.randint(0, 12))]
        if rng.random() < 0.4:  # all older or all newer: put in as they are, if in order
            shift = rng.choice([-41, 41])
            new = [change(c.created + shift, c.subscription[4:]) for c in new]
            if rng.random() < 0.7:
                new.sort(key=lambda c: c.created, reverse=True)
        log = ChangeLog(held)
        assert list(log) == held and len(log) == len(held)
        log.merge(ChangeLog(new))
        expected = sorted(new + held, key=lambda c: c.created, reverse=True)
        assert list(log) == expected, trial
        cutoff = rng.randint(0, 41)
        log.prune(cutoff)
        assert list(log) == [c for c in expected if c.created >= cutoff], trial

    pending = {"id": "evt_p"}
    log = ChangeLog([change(30, "a"), change(20, "p", pending=pending), change(10, "b")])
    asked = []
    log.settle(lambda event: asked.append(event) or change(20, "p"))
    assert asked == [pending]  # only the pending row is parsed again
    assert list(log) == [change(30, "a"), change(20, "p"), change(10, "b")]
    assert log.pending == [None, None, None]


def test_event_log_drops_events_past_retention():
    from exporter.sources.stripe.events import EventLog

    log = EventLog(retention=1000)
    pages = [[so.event("e2", "customer.subscription.updated", {"id": "s2"}, 950),
              so.event("e1", "customer.subscription.created", {"id": "s1"}, 120)],
             [so.event("e3", "customer.subscription.deleted", {"id": "s3"}, 1010),
              so.event("e2", "customer.subscription.updated", {"id": "s2"}, 950)]]
    calls = []

    def list_all(path, params):
        calls.append(dict(params)["created[gte]"])
        return iter(pages[len(calls) - 1])

    assert log.refresh(list_all, now=1000) == {"s1", "s2"}  # the subscriptions they name
    assert log.refresh(list_all, now=1150) == {"s3"}         # e2 is not added twice
    assert calls == ["0", "650"]                         # 950 less the 300 s overlap
    assert [c.id for c in log.changes()] == ["e3", "e2"]  # e1 (120) fell out of 150..1150
    # a discount event names the subscription its discount is on (if any)
    discounts = [so.event("e5", "customer.discount.deleted",
                          {"id": "di_1", "object": "discount", "subscription": "s5"}, 1190),
                 so.event("e4", "customer.discount.created",
                          {"id": "di_2", "object": "discount", "customer": "c1"}, 1180)]
    pages.append(discounts)
    assert log.refresh(list_all, now=1200) == {"s5"}


class ListedEvents:
    """/v1/events as Stripe lists them: newest first, from created[gte], after the
    starting_after cursor (recorded); it fails at the `fail_at`-th event listed."""

    def __init__(self, events: list[dict]):
        self.events, self.cursors, self.fail_at = events, [], None

    def __call__(self, path, params):
        query = dict(params)
        self.cursors.append(query.get("starting_after"))
        ids = [event["id"] for event in self.events]
        start = ids.index(query["starting_after"]) + 1 if "starting_after" in query else 0
        listed = [e for e in self.events[start:] if e["created"] >= int(query["created[gte]"])]
        for n, event in enumerate(listed):
            if n == self.fail_at:
                raise RuntimeError("HTTP 500 on page 2")
            yield event


def test_event_log_lists_a_long_month_over_polls():
    """refresh(max_pages) stops after that many pages once its events are older than
    named_since; read_back goes on from the last one, a page budget at a time, and
    names nothing; once at the end the log holds what one listing gives."""
    from exporter.sources.stripe.events import EventLog

    # newest first, one a second; a page is 100 (fetch.PAGE_SIZE)
    month = [so.event(f"e{i}", "customer.subscription.updated", {"id": f"s{i}"}, 10_000 - i)
             for i in range(450)]
    list_all = ListedEvents(month)

    log = EventLog(retention=5000)
    assert not log.complete  # never listed
    named = log.refresh(list_all, now=10_000, max_pages=1, named_since=9750)
    # one page, then on to the end of the page with the first event before 9750 (e251)
    assert named == {f"s{i}" for i in range(251)}
    assert [c.id for c in log.changes()] == [f"e{i}" for i in range(300)]
    assert not log.complete
    month.insert(0, so.event("new", "customer.subscription.updated", {"id": "s-new"}, 10_100))
    assert log.refresh(list_all, now=10_200) == {"s-new"}  # forward, as every poll
    assert log.read_back(list_all, now=10_200, max_pages=0) == 0  # the poll's budget is spent
    assert log.read_back(list_all, now=10_200, max_pages=1) == 1  # e300..e399
    assert not log.complete
    assert log.read_back(list_all, now=10_200, max_pages=None) == 1  # e400..e449: the end
    assert log.complete
    assert log.read_back(list_all, now=10_200, max_pages=None) == 0  # nothing more to read
    assert list_all.cursors == [None, None, "e299", "e399"]
    assert [c.id for c in log.changes()] == [e["id"] for e in month]
    # a relist (prices changed at a full sync) stops only past the newest held
    # before (10,100, less the 300 s overlap), naming what was not held
    month[:0] = [so.event(f"n{i}", "customer.subscription.updated", {"id": f"s-n{i}"},
                          10_150 - i) for i in range(3)]
    assert log.refresh(list_all, now=10_200, relist=True, max_pages=0) == {"s-n0", "s-n1", "s-n2"}
    assert not log.complete and len(log.changes()) == 300  # 3 pages: to e201, before 9800
    log.read_back(list_all, now=10_200, max_pages=None)
    assert log.complete and [c.id for c in log.changes()] == [e["id"] for e in month]


def test_a_read_back_skips_a_held_event_listed_again_after_the_cursor():
    """Events of one second may come in another order in a later listing: one held
    then, listed after the cursor now, is not added twice (the log keeps no set of
    every id, only the ids of the second the cursor is in)."""
    from exporter.sources.stripe.events import EventLog

    # pairs of events a second, newest first: the first page ends with e99, at 9,951
    month = [so.event(f"e{i}", "customer.subscription.updated", {"id": f"s{i}"}, 10_000 - i // 2)
             for i in range(150)]
    list_all = ListedEvents(month)
    log = EventLog(retention=5000)
    log.refresh(list_all, now=10_000, max_pages=1, named_since=10_000)
    assert [c.id for c in log.changes()][-2:] == ["e98", "e99"]
    month[98], month[99] = month[99], month[98]  # now e98 comes after the cursor (e99)
    log.read_back(list_all, now=10_000, max_pages=None)
    ids = [c.id for c in log.changes()]
    assert log.complete and len(ids) == len(set(ids)) == 150


def test_a_read_back_that_fails_part_way_adds_nothing_and_goes_on_from_the_same_place():
    from exporter.sources.stripe.events import EventLog

    month = [so.event(f"e{i}", "customer.subscription.updated", {"id": f"s{i}"}, 10_000 - i)
             for i in range(250)]
    list_all = ListedEvents(month)

    log = EventLog(retention=5000)
    log.refresh(list_all, now=10_000, max_pages=1, named_since=10_000)
    assert len(log.changes()) == 100 and not log.complete
    list_all.fail_at = 120
    with pytest.raises(RuntimeError):
        log.read_back(list_all, now=10_100, max_pages=None)
    assert len(log.changes()) == 100 and not log.complete  # nothing half-added
    list_all.fail_at = None
    assert log.read_back(list_all, now=10_100, max_pages=None) == 2
    assert list_all.cursors == [None, "e99", "e99"] and log.complete
    assert [c.id for c in log.changes()] == [e["id"] for e in month]


def test_event_log_fails_on_bad_events_and_survives_failed_fetches():
    from exporter.sources.stripe.events import EventLog
    from exporter.sources.stripe.parse import MalformedObject

    log = EventLog()
    good = so.event("e1", "customer.subscription.updated", {"id": "s"}, 990)
    with pytest.raises(MalformedObject, match="event 'bad'"):  # not skipped: the past needs it
        log.refresh(lambda path, params: iter([{"id": "bad"}, good]), now=1000)
    assert len(log.changes()) == 0
    assert log.refresh(lambda path, params: iter([good]), now=1000) == {"s"}

    def fails_part_way(path, params):
        yield so.event("e2", "customer.subscription.updated", {"id": "s"}, 995)
        raise RuntimeError("HTTP 500 on page 2")

    with pytest.raises(RuntimeError):
        log.refresh(fails_part_way, now=1000)
    assert [c.id for c in log.changes()] == ["e1"]  # nothing half-added...
    assert log.refresh(lambda path, params: iter([so.event(
        "e2", "customer.subscription.updated", {"id": "s"}, 995)]), now=1000) == {"s"}  # ...so e2 comes


def test_upstream_label_values_are_bounded(caplog):
    """Invented statuses fold into "other" (logged once); at most MAX_CURRENCIES currencies
    get series of their own, the largest MRR first; unconverted counts sum under "other"."""
    from exporter.sources.stripe.mrr import RevenueKpis
    from exporter.sources.stripe.source import MAX_CURRENCIES, samples

    def code(i: int) -> str:  # qaa, qab, ...: 60 currencies without an fx rate
        return f"q{chr(97 + i // 26)}{chr(97 + i % 26)}"

    statuses = {"active": 5, "canceled": 2, **{f"made_up_{i}": 1 for i in range(375)}}
    by_currency = {"usd": Decimal(500), "eur": Decimal(100),
                   **{code(i): Decimal(i + 1) for i in range(60)}}
    missing = {code(i): 1 for i in range(60)}
    kpis = RevenueKpis(mrr=Decimal(600), mrr_by_currency=by_currency,
                       subscriptions_by_status=statuses, paying_customers=3,
                       paying_customers_converted=3, failed_payments=0,
                       failed_payments_amount=Decimal(0), missing_fx=missing)
    with caplog.at_level("WARNING"):
        bounded = make_source()._bounded(kpis)
        make_source()._bounded(kpis)  # another source instance: its own single warning
    assert bounded.subscriptions_by_status == {"active": 5, "canceled": 2, "other": 375}
    assert len(bounded.mrr_by_currency) == MAX_CURRENCIES
    assert {"usd", "eur"} <= set(bounded.mrr_by_currency)  # converted MRR ranks first
    assert len(bounded.missing_fx) == MAX_CURRENCIES + 1 and bounded.missing_fx["other"] == 20
    assert sum(bounded.missing_fx.values()) == 60
    exported = samples(bounded)
    assert len({s.labels["status"] for s in exported if s.kpi == "subscriptions"}) == 3
    assert sum("does not document" in r.getMessage() for r in caplog.records) == 2


def _one_subscription_account(monthly, sub):
    for path, body in [("/v1/prices", [monthly]), ("/v1/coupons", []),
                       ("/v1/subscriptions", [sub]), ("/v1/charges", []), ("/v1/refunds", []),
                       ("/v1/disputes", []), ("/v1/invoices", [])]:
        responses.add(responses.GET, API + path, json=so.page(body))


@responses.activate
def test_a_subscription_an_event_names_is_re_read_until_it_succeeds():
    monthly = so.price("price_m", 1000)
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly)], created=NOW - 90 * 86400)
    _one_subscription_account(monthly, sub)
    upgraded = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly, quantity=3)],
                               created=NOW - 90 * 86400)
    changed = so.event("evt_2", "customer.subscription.updated", upgraded, NOW - 10,
                       previous={"items": sub["items"]})
    for events in ([], [], [changed], [changed]):  # poll 1 (the last 5 min, a month), 2, 3
        responses.add(responses.GET, API + "/v1/events", json=so.page(events))
    retrieve = API + "/v1/subscriptions/sub_1"
    responses.add(responses.GET, retrieve, status=500, json={"error": {"type": "api_error"}})

    source = make_source()
    mrr = {s.kpi: s.value for s in source.poll()}["mrr"]
    assert mrr == 10.0
    with pytest.raises(UpstreamError):  # the re-read fails (after its retries)...
        source.poll()
    responses.replace(responses.GET, retrieve, json=upgraded)
    after = {s.kpi: s.value for s in source.poll()}
    assert source.held.last_update == "1 re-read"  # ...so the next poll re-reads it
    assert after["mrr"] == 30.0
    [call] = [c for c in responses.calls if c.request.url.startswith(retrieve)
              and c.response is not None and c.response.status_code == 200]
    assert sorted(query(call)["expand[]"]) == ["discounts.source.coupon", "items.data.discounts"]


@responses.activate
def test_an_event_naming_a_discount_a_re_read_removed_is_valued_with_it():
    """Events name discounts by id; the held subscriptions' discounts resolve them,
    also one that the re-read the event asked for no longer carries."""
    monthly = so.price("price_m", 1000)
    created = NOW - 90 * 86400
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly)], created=created,
                          discounts=[so.discount("di_1", "TENTH")])
    _one_subscription_account(monthly, sub)
    responses.replace(responses.GET, API + "/v1/coupons",
                      json=so.page([so.coupon("TENTH", percent_off=10)]))
    plain = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly)], created=created)
    removed = so.event("evt_2", "customer.subscription.updated", plain, NOW - 10,
                       previous={"discounts": ["di_1"]})
    for events in ([], [], [removed]):  # poll 1 (the last 5 min, a month), poll 2
        responses.add(responses.GET, API + "/v1/events", json=so.page(events))
    responses.add(responses.GET, API + "/v1/subscriptions/sub_1", json=plain)

    source = make_source()
    assert {s.kpi: s.value for s in source.poll()}["mrr"] == 9.0
    after = {(s.kpi, s.labels.get("movement")): s.value for s in source.poll()}
    assert source.held.last_update == "1 re-read"
    [change] = source.events.changes()
    assert change.pending is None and [d.id for d in change.before.discounts] == ["di_1"]
    assert after[("mrr", None)] == 10.0
    assert after[("mrr_window_start", None)] == 9.0  # the discount was in force then
    assert after[("mrr_movement", "expansion")] == 1.0


@responses.activate
def test_a_subscription_stripe_no_longer_has_means_a_full_sync():
    monthly = so.price("price_m", 1000)
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly)], created=NOW - 90 * 86400)
    _one_subscription_account(monthly, sub)
    gone = so.event("evt_2", "customer.subscription.updated", sub, NOW - 10, previous={})
    for events in ([], [], [gone]):
        responses.add(responses.GET, API + "/v1/events", json=so.page(events))
    responses.add(responses.GET, API + "/v1/subscriptions/sub_1", status=404, json={"error": {
        "type": "invalid_request_error", "code": "resource_missing"}})
    source = make_source()
    source.poll()
    source.poll()
    assert source.held.last_update == \
        "full sync (an event names a subscription Stripe no longer has)"
    assert sum(c.request.url.startswith(API + "/v1/subscriptions?") for c in responses.calls) == 2


@responses.activate
def test_a_change_while_the_first_poll_lists_is_re_read_at_the_next_poll():
    """The first poll lists the subscriptions before the month of events: an event
    that was not there when the listing began is re-read next time; one that was
    there is already in the listing."""
    monthly = so.price("price_m", 1000)
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly)], created=NOW - 90 * 86400)
    other = so.subscription("sub_2", "cus_2", [so.item("si_2", monthly)], created=NOW - 90 * 86400)
    _one_subscription_account(monthly, sub)
    responses.replace(responses.GET, API + "/v1/subscriptions", json=so.page([sub, other]))
    upgraded = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly, quantity=3)],
                               created=NOW - 90 * 86400)
    during = so.event("evt_during", "customer.subscription.updated", upgraded, NOW + 2,
                      previous={"items": sub["items"]})
    before = so.event("evt_before", "customer.subscription.updated", other, NOW - 60,
                      previous={"cancel_at_period_end": True})
    for events in ([before], [during, before], [during, before]):  # the last 5 min, a month, poll 2
        responses.add(responses.GET, API + "/v1/events", json=so.page(events))
    responses.add(responses.GET, API + "/v1/subscriptions/sub_1", json=upgraded)

    source = make_source()
    assert {s.kpi: s.value for s in source.poll()}["mrr"] == 20.0  # as listed: 1 seat each
    after = {s.kpi: s.value for s in source.poll()}
    assert source.held.last_update == "1 re-read"  # sub_1, not sub_2
    assert after["mrr"] == 40.0
    assert not any("/v1/subscriptions/sub_2" in c.request.url for c in responses.calls)


@responses.activate
def test_a_coupon_gone_at_a_full_sync_parses_the_events_again():
    """Events are parsed once; when a full sync finds a price or coupon they were
    parsed with changed or gone, the month of events is listed and parsed again,
    and the numbers equal a fresh source's."""
    seat = so.price("price_seat", 1000)
    # restricted to another product, so it takes nothing off here; once deleted, the
    # discount's own copy of it (which has no restriction) takes 10 % off everything
    restricted = so.coupon("TEN", percent_off=10)
    restricted["applies_to"] = {"products": ["prod_other"]}
    embedded = so.coupon("TEN", percent_off=10)
    discount = so.discount("di_1", embedded)
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", seat, quantity=2)],
                          discounts=[discount], created=NOW - 90 * 86400)
    then = {**sub, "discounts": ["di_1"]}  # events name discounts by id
    upgrade = so.event("evt_1", "customer.subscription.updated", then, NOW - 10 * 86400,
                       previous={"items": {"data": [so.item("si_1", seat, quantity=1)]}})
    for path, body in [("/v1/prices", [seat]), ("/v1/subscriptions", [sub]),
                       ("/v1/events", [upgrade]), ("/v1/charges", []), ("/v1/refunds", []),
                       ("/v1/disputes", []), ("/v1/invoices", [])]:
        responses.add(responses.GET, API + path, json=so.page(body))
    add_list("/v1/coupons", so.page([restricted]), so.page([]))  # then deleted

    def window_start(samples):
        return {s.kpi: s.value for s in samples if s.labels.get("window") == "30d"}[
            "mrr_window_start"]

    source = make_source(full_sync_interval=0)  # a full sync every poll
    assert window_start(source.poll()) == 10.0  # 1 seat, the coupon restricted
    events_before = sum("/v1/events" in c.request.url for c in responses.calls)
    incremental = source.poll()
    relisted = [query(c) for c in responses.calls[len(responses.calls) - 100:]
                if "/v1/events" in c.request.url]
    relisted = [q for q in relisted if "customer.subscription.updated" in q["types[]"]]
    # the new events, the month again, and the charges', refunds' and disputes' changes
    assert sum("/v1/events" in c.request.url for c in responses.calls) == events_before + 3
    assert relisted[-1]["created[gte]"] == [str(NOW - 30 * 86400)]  # the month again
    assert window_start(incremental) == 9.0  # 1 seat, 10 % off
    fresh = make_source().poll()
    assert sorted((s.kpi, sorted(s.labels.items()), s.value) for s in incremental) == \
        sorted((s.kpi, sorted(s.labels.items()), s.value) for s in fresh)


@responses.activate
def test_an_invoice_with_no_created_time_fails_the_cohorts_read():
    """The 1y cohort keeps lines by their invoice's creation time: an invoice without
    one is not guessed at, the poll fails and names it."""
    monthly = so.price("price_m", 1000)
    sub = so.subscription("sub_1", "cus_1", [so.item("si_1", monthly)], created=NOW - 90 * 86400)
    _one_subscription_account(monthly, sub)
    responses.add(responses.GET, API + "/v1/events", json=so.page([]))
    invoice = so.fixture("invoice")
    invoice.pop("created")
    responses.replace(responses.GET, API + "/v1/invoices", json=so.page([invoice]))
    with pytest.raises(MalformedObject, match=f"invoice {invoice['id']} has no created time"):
        make_source().poll()
