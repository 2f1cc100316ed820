"""Tests for the simulator's histories: events, invoices, refunds, disputes, the ticker.

Everything is read from FakeStripe over real sockets with `requests`, the way
the exporter reads api.stripe.com; hand-built histories have hand-computed
expectations, and the generated company is checked with an independent MRR
calculation written here.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from decimal import Decimal

import pytest

from concurrency import run_concurrently
from exporter.simulator import CompanyTicker, FakeStripe, StripeStore, generate_company
from exporter.simulator.history import event_stubs
from exporter.simulator.payments import OPEN_DISPUTE_STATUSES
from exporter.simulator.ticker import BUSY_RATES, customer_arr_usd
from fake_stripe_client import KEY, get, list_all

pytestmark = pytest.mark.slow  # whole simulated companies, years of history each

NOW = 1_780_000_000
DAY = 86_400
HOUR = 3_600
SUB_EVENTS = ("customer.subscription.created", "customer.subscription.updated",
              "customer.subscription.deleted", "customer.subscription.paused",
              "customer.subscription.resumed")


def months_later(ts: int, n: int) -> int:
    from exporter.simulator.periods import add_interval
    return add_interval(ts, "month", n)


# --------------------------------------------------------------------------- a hand-built history


@pytest.fixture()
def history_store() -> StripeStore:
    """Acme: created 20 days ago with 2 seats; +3 seats, a coupon, then canceled.
    Beta: an old subscription (events older than 30 days) and a recent change."""
    store = StripeStore(seed=5, now=NOW)
    acme = store.add_customer("Acme", created=NOW - 25 * DAY, id="cus_acme")
    beta = store.add_customer("Beta", created=NOW - 100 * DAY, id="cus_beta")
    store.add_price(10000, product="Pro", id="price_pro", created=NOW - 400 * DAY)
    store.add_price(2500, product="Seat pack", id="price_pack", created=NOW - 400 * DAY)
    store.add_coupon(percent_off=10, id="TEN", created=NOW - 400 * DAY)
    store.add_subscription(acme, [("price_pro", 2)], created=NOW - 20 * DAY, id="sub_acme")
    store.change_subscription("sub_acme", NOW - 15 * DAY, items=[("price_pro", 5)])
    store.change_subscription("sub_acme", NOW - 10 * DAY, coupons=["TEN"])
    store.change_subscription("sub_acme", NOW - 8 * DAY, items=[("price_pro", 5), ("price_pack", 1)])
    store.cancel_subscription("sub_acme", NOW - 5 * DAY)
    store.add_subscription(beta, [("price_pro", 1)], created=NOW - 80 * DAY, id="sub_beta")
    store.change_subscription("sub_beta", NOW - 40 * DAY, items=[("price_pro", 2)])
    store.change_subscription("sub_beta", NOW - 3 * DAY, cancel_at_period_end=True)
    return store


@pytest.fixture()
def history_fake(history_store):
    with FakeStripe(history_store, api_key=KEY) as fake:
        yield fake


def subscription_events(events: list[dict], sub_id: str) -> list[dict]:
    """The created/updated/deleted/... events of one subscription, oldest first."""
    return [e for e in reversed(events)
            if e["type"] in SUB_EVENTS and e["data"]["object"]["id"] == sub_id]


def test_event_stream_follows_the_history(history_fake):
    events = list_all(history_fake, "/v1/events")
    created = [e["created"] for e in events]
    assert created == sorted(created, reverse=True)  # newest first
    acme = subscription_events(events, "sub_acme")
    assert [(e["type"], e["created"]) for e in acme] == [
        ("customer.subscription.created", NOW - 20 * DAY),
        ("customer.subscription.updated", NOW - 15 * DAY),
        ("customer.subscription.updated", NOW - 10 * DAY),
        ("customer.subscription.updated", NOW - 8 * DAY),
        ("customer.subscription.deleted", NOW - 5 * DAY),
    ]
    first, seats, coupon, pack, deleted = acme
    for event in acme:
        assert event["object"] == "event" and event["id"].startswith("evt_")
        assert event["api_version"] == "2026-07-29.dahlia"
        assert event["livemode"] is False and event["pending_webhooks"] == 0
        assert event["request"]["id"].startswith("req_")  # all made through the API
    assert first["data"]["object"]["items"]["data"][0]["quantity"] == 2
    assert "previous_attributes" not in first["data"]
    assert first["data"]["object"]["latest_invoice"].startswith("in_")
    # More seats: the whole old items list is in previous_attributes.
    assert set(seats["data"]["previous_attributes"]) == {"items"}
    old_items = seats["data"]["previous_attributes"]["items"]
    assert old_items["object"] == "list" and old_items["data"][0]["quantity"] == 2
    assert seats["data"]["object"]["items"]["data"][0]["quantity"] == 5
    assert old_items["data"][0]["id"] == seats["data"]["object"]["items"]["data"][0]["id"]
    # A coupon: discounts are ids, old value an empty list.
    assert coupon["data"]["previous_attributes"] == {"discounts": []}
    (discount,) = coupon["data"]["object"]["discounts"]
    assert isinstance(discount, str) and discount.startswith("di_")
    # An extra item.
    assert len(pack["data"]["object"]["items"]["data"]) == 2
    assert len(pack["data"]["previous_attributes"]["items"]["data"]) == 1
    # Items embed their price without tiers.
    assert pack["data"]["object"]["items"]["data"][1]["price"]["id"] == "price_pack"
    assert "tiers" not in pack["data"]["object"]["items"]["data"][1]["price"]
    # Deleted: the canceled subscription, no previous_attributes.
    assert deleted["data"]["object"]["status"] == "canceled"
    assert deleted["data"]["object"]["ended_at"] == NOW - 5 * DAY
    assert "previous_attributes" not in deleted["data"]
    # The discount events around it.
    discount_events = [e for e in events if e["type"].startswith("customer.discount.")]
    assert [e["type"] for e in discount_events] == ["customer.discount.created"]
    assert discount_events[0]["data"]["object"]["id"] == discount


def test_reverting_previous_attributes_gives_the_previous_object(history_fake):
    events = list_all(history_fake, "/v1/events")
    for sub_id in ("sub_acme", "sub_beta"):
        chain = [e for e in subscription_events(events, sub_id)
                 if e["type"] in ("customer.subscription.created", "customer.subscription.updated")]
        assert len(chain) >= 2 or sub_id == "sub_beta"
        for before, after in zip(chain, chain[1:]):
            reverted = {**after["data"]["object"], **after["data"]["previous_attributes"]}
            assert reverted == before["data"]["object"]


def test_events_of_the_last_30_days_only(history_store, history_fake):
    events = list_all(history_fake, "/v1/events")
    assert all(e["created"] >= NOW - 30 * DAY for e in events)
    beta = subscription_events(events, "sub_beta")
    # Created 80 days ago and changed 40 days ago: only the renewal since and
    # the cancellation scheduled for the end of the period are still kept.
    assert beta and all(e["type"] == "customer.subscription.updated" for e in beta)
    assert beta[-1]["created"] == NOW - 3 * DAY
    assert beta[-1]["data"]["previous_attributes"]["cancel_at_period_end"] is False
    assert beta[-1]["data"]["object"]["cancel_at"] > NOW
    renewals = [e for e in beta if set(e["data"]["previous_attributes"]) == {"items", "latest_invoice"}]
    assert renewals and renewals[0]["request"] == {"id": None, "idempotency_key": None}
    # Every event Stripe dropped is gone from retrieval too.
    tl = history_store.timeline("sub_beta")
    old = [s for s in event_stubs(history_store, tl, 0, NOW) if s.created < NOW - 30 * DAY]
    assert old
    for stub in old[:3]:
        response = get(history_fake, f"/v1/events/{stub.id}")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"No such event: '{stub.id}'"
    recent = events[0]
    assert get(history_fake, f"/v1/events/{recent['id']}").json() == recent
    # As time passes, events age out.
    history_store.advance(NOW + 20 * DAY)
    later = list_all(history_fake, "/v1/events")
    assert all(e["created"] >= NOW - 10 * DAY for e in later)
    assert not any(e["created"] == NOW - 15 * DAY for e in later)


def test_type_wildcard_types_and_created_filters(history_fake):
    everything = list_all(history_fake, "/v1/events")
    subs = list_all(history_fake, "/v1/events", {"type": "customer.subscription.*"})
    assert subs and {e["type"] for e in subs} <= set(SUB_EVENTS) | {
        "customer.subscription.trial_will_end"}
    assert len(subs) == sum(1 for e in everything if e["type"].startswith("customer.subscription."))
    exact = list_all(history_fake, "/v1/events", {"type": "customer.subscription.deleted"})
    assert [e["data"]["object"]["id"] for e in exact] == ["sub_acme"]
    several = list_all(history_fake, "/v1/events", {"types[]": ["customer.subscription.created",
                                                                 "customer.discount.created"]})
    assert collections.Counter(e["type"] for e in several) == {
        "customer.subscription.created": 1, "customer.discount.created": 1}
    since = list_all(history_fake, "/v1/events", {"created[gte]": NOW - 8 * DAY})
    assert since and all(e["created"] >= NOW - 8 * DAY for e in since)
    assert {e["id"] for e in since} == {e["id"] for e in everything if e["created"] >= NOW - 8 * DAY}
    window = list_all(history_fake, "/v1/events", {"created[gt]": NOW - 15 * DAY,
                                                    "created[lt]": NOW - 5 * DAY})
    assert all(NOW - 15 * DAY < e["created"] < NOW - 5 * DAY for e in window)
    both = get(history_fake, "/v1/events", {"type": "x", "types[]": "y"})
    assert both.status_code == 400
    assert "only specify one of these parameters: type, types" in both.json()["error"]["message"]
    too_many = get(history_fake, "/v1/events", {"types[]": [f"t{i}" for i in range(21)]})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "types"


def test_event_paging_both_ways(history_fake):
    everything = list_all(history_fake, "/v1/events")
    assert len(everything) > 4
    first = get(history_fake, "/v1/events", {"limit": 2}).json()
    assert [e["id"] for e in first["data"]] == [e["id"] for e in everything[:2]]
    assert first["has_more"] is True
    back = get(history_fake, "/v1/events", {"limit": 2, "ending_before": everything[3]["id"]}).json()
    assert [e["id"] for e in back["data"]] == [e["id"] for e in everything[1:3]]
    missing = get(history_fake, "/v1/events", {"starting_after": "evt_nope"})
    assert missing.status_code == 400 and missing.json()["error"]["message"] == "No such event: 'evt_nope'"


# --------------------------------------------------------------------------- invoices


@pytest.fixture()
def billing() -> StripeStore:
    store = StripeStore(seed=9, now=NOW)
    store.add_price(4000, product="Monthly", id="price_m", created=NOW - 900 * DAY)
    store.add_price(120000, interval="year", product="Yearly", id="price_y", created=NOW - 900 * DAY)
    store.add_price(tiers=[(5, 1000), (None, 800, 2000)], tiers_mode="graduated", product="Seats",
                    id="price_tiers", created=NOW - 900 * DAY)
    store.add_coupon(percent_off=50, duration="repeating", duration_in_months=3, id="HALF3",
                     created=NOW - 900 * DAY)
    store.add_coupon(amount_off=1500, currency="usd", id="FIFTEEN", created=NOW - 900 * DAY)
    store.add_coupon(percent_off=25, duration="once", id="ONCE25", created=NOW - 900 * DAY)
    for name in ("half", "yearly", "trial", "lapse", "canceled", "mixed", "once", "dunning", "lines"):
        store.add_customer(name, created=NOW - 800 * DAY, id=f"cus_{name}")
    return store


def invoices_of(fake: FakeStripe, sub_id: str, **params) -> list[dict]:
    """A subscription's invoices, oldest first."""
    return list_all(fake, "/v1/invoices", {"subscription": sub_id, **params})[::-1]


def test_repeating_coupon_halves_the_first_three_invoices(billing):
    start = NOW - 200 * DAY
    billing.add_subscription("cus_half", [("price_m", 2)], coupons=["HALF3"], created=start,
                             id="sub_half")
    with FakeStripe(billing, api_key=KEY) as fake:
        invoices = invoices_of(fake, "sub_half")
    expected_starts = [months_later(start, k) for k in range(7)]  # 200 days: 7 periods
    assert [i["created"] for i in invoices] == expected_starts
    assert [i["total"] for i in invoices] == [4000, 4000, 4000, 8000, 8000, 8000, 8000]
    assert all(i["subtotal"] == 8000 and i["status"] == "paid" for i in invoices)
    assert [i["billing_reason"] for i in invoices] == ["subscription_create"] + ["subscription_cycle"] * 6
    for k, invoice in enumerate(invoices):
        assert invoice["amount_paid"] == invoice["total"] == invoice["amount_due"]
        assert invoice["customer"] == "cus_half" and invoice["currency"] == "usd"
        assert invoice["parent"]["type"] == "subscription_details"
        assert invoice["parent"]["subscription_details"]["subscription"] == "sub_half"
        (line,) = invoice["lines"]["data"]
        assert line["amount"] == 8000 and line["quantity"] == 2
        assert line["period"] == {"start": expected_starts[k], "end": months_later(start, k + 1)}
        assert line["parent"]["type"] == "subscription_item_details"
        details = line["parent"]["subscription_item_details"]
        assert details["subscription"] == "sub_half" and details["proration"] is False
        assert details["subscription_item"].startswith("si_")
        assert details["proration_details"] == {"credited_items": None}
        assert line["pricing"]["type"] == "price_details"
        assert line["pricing"]["price_details"]["price"] == "price_m"
        assert line["pricing"]["unit_amount_decimal"] == "4000"
        if k < 3:
            assert [d["amount"] for d in line["discount_amounts"]] == [4000]
            assert invoice["total_discount_amounts"][0]["amount"] == 4000
            assert invoice["discounts"] == [line["discount_amounts"][0]["discount"]]
        else:
            assert line["discount_amounts"] == [] and invoice["total_discount_amounts"] == []
        # Stripe's renewal invoices show the period just ended.
        if k:
            assert (invoice["period_start"], invoice["period_end"]) == (expected_starts[k - 1],
                                                                        expected_starts[k])
        assert invoice["status_transitions"]["paid_at"] >= invoice["created"]
    numbers = [i["number"] for i in invoices]
    assert numbers[0].endswith("-0001") and numbers[-1].endswith("-0007")


def test_yearly_price_invoices_once_a_year(billing):
    start = NOW - 800 * DAY
    billing.add_subscription("cus_yearly", ["price_y"], created=start, id="sub_yearly")
    with FakeStripe(billing, api_key=KEY) as fake:
        invoices = invoices_of(fake, "sub_yearly")
    from exporter.simulator.periods import add_interval
    assert [i["created"] for i in invoices] == [start, add_interval(start, "year", 1),
                                                add_interval(start, "year", 2)]
    assert [i["total"] for i in invoices] == [120000] * 3
    line = invoices[1]["lines"]["data"][0]
    assert line["period"] == {"start": add_interval(start, "year", 1),
                              "end": add_interval(start, "year", 2)}


def test_trials_have_no_paid_invoice(billing):
    start = NOW - 100 * DAY
    billing.add_subscription("cus_trial", ["price_m"], status="trialing", created=start,
                             trial_end=start + 14 * DAY, id="sub_trial")
    billing.end_trial("sub_trial", converted=True)
    billing.add_subscription("cus_lapse", ["price_m"], status="trialing", created=start,
                             trial_end=start + 14 * DAY, id="sub_lapse")
    billing.end_trial("sub_lapse", converted=False)
    billing.add_subscription("cus_lapse", ["price_m"], status="trialing", created=NOW - 13 * DAY,
                             id="sub_trialing")  # 14 days: it ends tomorrow
    with FakeStripe(billing, api_key=KEY) as fake:
        converted = invoices_of(fake, "sub_trial")
        assert invoices_of(fake, "sub_lapse") == [] and invoices_of(fake, "sub_trialing") == []
        events = list_all(fake, "/v1/events", {"type": "customer.subscription.*"})
    first = converted[0]
    assert first["created"] == start + 14 * DAY  # nothing for the 14 trial days
    assert first["billing_reason"] == "subscription_cycle" and first["total"] == 4000
    assert first["lines"]["data"][0]["period"]["start"] == start + 14 * DAY
    assert (first["period_start"], first["period_end"]) == (start, start + 14 * DAY)
    assert all(i["status"] == "paid" for i in converted) and len(converted) == 3
    # The trial ended with an update (trialing -> active) or a deletion (lapsed).
    lapsed = billing.subscriptions["sub_lapse"]
    assert lapsed["status"] == "canceled" and lapsed["ended_at"] == start + 14 * DAY
    will_end = [e for e in events if e["type"] == "customer.subscription.trial_will_end"]
    assert [(e["data"]["object"]["id"], e["created"]) for e in will_end] == [
        ("sub_trialing", NOW - 2 * DAY)]
    assert [e["type"] for e in events if e["data"]["object"]["id"] == "sub_trial"] == [
        "customer.subscription.updated"]  # its renewal 25 days ago


def test_a_canceled_subscription_stops_invoicing(billing):
    start = NOW - 150 * DAY
    billing.add_subscription("cus_canceled", [("price_m", 1)], created=start, id="sub_canceled")
    billing.cancel_subscription("sub_canceled", months_later(start, 2) + 5 * DAY)
    with FakeStripe(billing, api_key=KEY) as fake:
        invoices = invoices_of(fake, "sub_canceled")
    assert [i["created"] for i in invoices] == [start, months_later(start, 1), months_later(start, 2)]


def test_discounts_tiers_and_amount_off_are_exact(billing):
    start = NOW - 40 * DAY
    # 7 seats graduated: 5 x 1000 + 2 x 800 + 2000 = 8600, item coupon 10 % -> 7740;
    # plus 3 x 4000 = 12000; then $15 off the invoice, spread pro rata.
    billing.add_coupon(percent_off=10, id="TENPC", created=NOW - 900 * DAY)
    billing.add_subscription("cus_mixed", [("price_tiers", 7, ["TENPC"]), ("price_m", 3)],
                             coupons=["FIFTEEN"], created=start, id="sub_mixed")
    with FakeStripe(billing, api_key=KEY) as fake:
        invoices = invoices_of(fake, "sub_mixed")
        # The embedded discounts expand to discount objects.
        expanded = get(fake, f"/v1/invoices/{invoices[0]['id']}",
                       {"expand[]": ["discounts", "lines.data.discounts"]}).json()
    for invoice in invoices:
        tiers, monthly = invoice["lines"]["data"]
        assert tiers["amount"] == 8600 and monthly["amount"] == 12000
        assert tiers["pricing"]["unit_amount_decimal"] is None
        item_off, sub_off = tiers["discount_amounts"]
        assert item_off["amount"] == 860
        # 1500 spread over 7740 and 12000 in proportion: 588 + 912.
        assert sub_off["amount"] + monthly["discount_amounts"][0]["amount"] == 1500
        assert sub_off["amount"] == 1500 * 7740 // (7740 + 12000)
        assert invoice["subtotal"] == 20600
        assert invoice["total"] == 20600 - 860 - 1500
        totals = {d["discount"]: d["amount"] for d in invoice["total_discount_amounts"]}
        assert sorted(totals.values()) == [860, 1500]
    assert expanded["discounts"][0]["object"] == "discount"
    assert expanded["discounts"][0]["source"]["coupon"] == "FIFTEEN"
    assert expanded["lines"]["data"][0]["discounts"][0]["source"]["coupon"] == "TENPC"


def test_once_coupon_applies_to_the_first_invoice_only(billing):
    billing.add_subscription("cus_once", ["price_m"], coupons=["ONCE25"], created=NOW - 70 * DAY,
                             id="sub_once")
    with FakeStripe(billing, api_key=KEY) as fake:
        invoices = invoices_of(fake, "sub_once")
    assert [i["total"] for i in invoices] == [3000, 4000, 4000]


def test_failed_payment_leaves_an_open_invoice_until_a_retry_succeeds(billing):
    start = NOW - 80 * DAY
    billing.add_subscription("cus_dunning", ["price_m"], created=start, id="sub_dunning")
    second = months_later(start, 1)
    billing.fail_payment("sub_dunning", second + HOUR)  # the renewal's payment attempt
    billing.recover_payment("sub_dunning", second + 3 * DAY)
    third = months_later(start, 2)
    billing.fail_payment("sub_dunning", third + HOUR)
    with FakeStripe(billing, api_key=KEY) as fake:
        invoices = invoices_of(fake, "sub_dunning")
        assert [i["status"] for i in invoices] == ["paid", "paid", "open"]
        assert invoices[1]["status_transitions"]["paid_at"] == second + 3 * DAY
        assert invoices[2]["amount_paid"] == 0 and invoices[2]["amount_remaining"] == 4000
        open_ = list_all(fake, "/v1/invoices", {"status": "open"})
        assert [i["id"] for i in open_] == [invoices[2]["id"]]
        bad = get(fake, "/v1/invoices", {"status": "unpaid"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
        events = subscription_events(list_all(fake, "/v1/events"), "sub_dunning")
    statuses = [(e["data"].get("previous_attributes", {}).get("status"), e["data"]["object"]["status"])
                for e in events if "status" in e["data"].get("previous_attributes", {})]
    assert statuses[-1] == ("active", "past_due")
    assert billing.customers["cus_dunning"]["delinquent"] is True


def test_a_renewal_is_a_draft_for_an_hour(billing):
    start = months_later(NOW - 1800, -3)  # the latest renewal was 30 minutes ago
    billing.add_subscription("cus_lines", ["price_m"], created=start, id="sub_draft")
    with FakeStripe(billing, api_key=KEY) as fake:
        invoices = invoices_of(fake, "sub_draft")
        assert invoices[-1]["status"] == "draft" and invoices[-1]["number"] is None
        assert invoices[-1]["created"] == NOW - 1800
        billing.advance(NOW + HOUR)
        assert invoices_of(fake, "sub_draft")[-1]["status"] == "paid"


def test_invoice_filters_retrieve_and_lines_paging(billing):
    prices = [billing.add_price(100 * (k + 1), product=f"Add-on {k}", created=NOW - 900 * DAY)
              for k in range(12)]
    billing.add_subscription("cus_lines", [(p, 1) for p in prices], created=NOW - 45 * DAY,
                             id="sub_lines")
    billing.add_subscription("cus_half", ["price_m"], created=NOW - 45 * DAY, id="sub_other")
    with FakeStripe(billing, api_key=KEY) as fake:
        mine = list_all(fake, "/v1/invoices", {"customer": "cus_lines"})
        assert len(mine) == 2 and {i["customer"] for i in mine} == {"cus_lines"}
        invoice = mine[0]
        assert len(invoice["lines"]["data"]) == 10 and invoice["lines"]["has_more"] is True
        assert invoice["lines"]["url"] == f"/v1/invoices/{invoice['id']}/lines"
        lines = list_all(fake, f"/v1/invoices/{invoice['id']}/lines")
        assert len(lines) == 12 and len({line["id"] for line in lines}) == 12
        assert sum(line["amount"] for line in lines) == invoice["subtotal"] == 100 * 78
        page = get(fake, f"/v1/invoices/{invoice['id']}/lines", {"limit": 5}).json()
        assert len(page["data"]) == 5 and page["has_more"] is True
        rest = get(fake, f"/v1/invoices/{invoice['id']}/lines",
                   {"limit": 100, "starting_after": page["data"][-1]["id"]}).json()
        assert [x["id"] for x in page["data"] + rest["data"]] == [x["id"] for x in lines]
        assert get(fake, f"/v1/invoices/{invoice['id']}").json() == invoice
        assert get(fake, "/v1/invoices/in_nope").status_code == 404
        assert get(fake, "/v1/invoices/in_nope/lines").status_code == 404
        assert get(fake, "/v1/customers/cus_lines/lines").status_code == 404
        recent = list_all(fake, "/v1/invoices", {"created[gte]": NOW - 20 * DAY})
        assert recent and all(i["created"] >= NOW - 20 * DAY for i in recent)
        paid = list_all(fake, "/v1/invoices", {"status": "paid", "subscription": "sub_other"})
        assert len(paid) == 2 and all(i["status"] == "paid" for i in paid)
        assert get(fake, "/v1/invoices", {"subscription": "sub_nope"}).status_code == 400


# --------------------------------------------------------------------------- the generated company


@pytest.fixture(scope="module")
def company() -> StripeStore:
    return generate_company(seed=7, customers=3000, now=NOW)


@pytest.fixture(scope="module")
def company_fake(company):
    with FakeStripe(company, api_key=KEY) as fake:
        yield fake


PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}


def item_amount(store: StripeStore, price: dict, quantity: int) -> Decimal:
    """One period of a licensed price, written independently of the simulator."""
    tq = price["transform_quantity"]
    units = quantity
    if tq:
        units = -(-quantity // tq["divide_by"]) if tq["round"] == "up" else quantity // tq["divide_by"]
    if price["billing_scheme"] == "per_unit":
        return Decimal(price["unit_amount_decimal"]) * units
    tiers = store.price_tiers[price["id"]]
    if price["tiers_mode"] == "volume":
        tier = next(t for t in tiers if t["up_to"] is None or units <= t["up_to"])
        return Decimal(tier["unit_amount"]) * units + (tier["flat_amount"] or 0)
    total, done = Decimal(0), 0
    for tier in tiers:
        top = units if tier["up_to"] is None else min(units, tier["up_to"])
        if top > done:
            total += Decimal(tier["unit_amount"]) * (top - done) + (tier["flat_amount"] or 0)
        done = top
    return total


def off(store: StripeStore, amount: Decimal, discount_ids: list[str], currency: str) -> Decimal:
    for discount_id in discount_ids:
        coupon = store.coupons[store.discounts[discount_id]["source"]["coupon"]]
        if coupon["duration"] == "once":
            continue
        if coupon["percent_off"] is not None:
            amount -= amount * Decimal(str(coupon["percent_off"])) / 100
        elif coupon["currency"] == currency:
            amount = max(Decimal(0), amount - coupon["amount_off"])
    return amount


def subscription_mrr(store: StripeStore, sub: dict | None) -> Decimal:
    """Monthly revenue of a subscription object, in its minor unit."""
    if sub is None or sub["status"] not in ("active", "past_due"):
        return Decimal(0)
    period = Decimal(0)  # one billing period (the items of a subscription share it)
    for item in sub["items"]["data"]:
        price = item["price"]
        if price["recurring"]["usage_type"] == "licensed":
            period += off(store, item_amount(store, price, item["quantity"]), item["discounts"],
                          sub["currency"])
    period = off(store, period, sub["discounts"], sub["currency"])
    rec = sub["items"]["data"][0]["price"]["recurring"]
    return period * PER_YEAR[rec["interval"]] / (12 * rec["interval_count"])


def customer_mrr(store: StripeStore, customer: str, t: int) -> Decimal:
    return sum((subscription_mrr(store, store.subscription_at(s, t))
                for s in store.subscriptions_of(customer)), Decimal(0))


def movements(store: StripeStore, start: int, end: int) -> dict[str, list[str]]:
    """Customers by MRR movement between `start` and `end`."""
    out = collections.defaultdict(list)
    for customer in store.customers:
        before, after = customer_mrr(store, customer, start), customer_mrr(store, customer, end)
        if before == after:
            continue
        if before == 0:
            paid_before = any(
                customer_mrr(store, customer, t) > 0
                for s in store.subscriptions_of(customer)
                for t in store.timeline(s).starts if t < start)
            out["reactivation" if paid_before else "new"].append(customer)
        elif after == 0:
            out["churn"].append(customer)
        else:
            out["expansion" if after > before else "contraction"].append(customer)
    return out


def test_company_shows_every_movement_in_the_last_30_days(company):
    moved = movements(company, NOW - 30 * DAY, NOW)
    counts = {kind: len(customers) for kind, customers in moved.items()}
    assert set(counts) == {"new", "expansion", "contraction", "churn", "reactivation"}, counts
    assert counts["new"] > 50 and counts["churn"] >= 10
    assert min(counts.values()) >= 2


def test_company_events_show_discount_ends_and_trials(company, company_fake):
    events = list_all(company_fake, "/v1/events", {"types[]": [
        "customer.subscription.created", "customer.subscription.updated",
        "customer.subscription.deleted", "customer.subscription.paused"]})
    assert all(e["created"] >= NOW - 30 * DAY for e in events)
    ended = []
    for e in events:
        old = e["data"].get("previous_attributes", {}).get("discounts")
        if old is None:
            continue
        for d in set(old) - set(e["data"]["object"]["discounts"]):
            discount = company.discounts[d]
            if discount["end"] == e["created"] and e["request"]["id"] is None:
                ended.append(d)
    assert len(ended) >= 2  # repeating discounts reaching their end
    started = [e for e in events if e["type"] == "customer.subscription.created"
               and e["data"]["object"]["status"] == "trialing"]
    ends = [(e["data"]["previous_attributes"].get("status"), e["data"]["object"]["status"])
            for e in events if e["type"] in ("customer.subscription.updated",
                                             "customer.subscription.deleted")
            and e["data"].get("previous_attributes", {}).get("status") == "trialing"]
    lapsed = [e for e in events if e["type"] == "customer.subscription.deleted"
              and e["data"]["object"]["trial_end"] == e["created"]]
    assert len(started) >= 20
    assert ends.count(("trialing", "active")) >= 5  # converted
    assert ends.count(("trialing", "paused")) + len(lapsed) >= 2  # lapsed


def test_company_events_agree_with_subscriptions(company, company_fake):
    events = list_all(company_fake, "/v1/events")
    subscriptions = {s["id"]: s for s in list_all(company_fake, "/v1/subscriptions", {"status": "all"})}
    newest: dict[str, dict] = {}
    chains: dict[str, list[dict]] = collections.defaultdict(list)
    for event in reversed(events):  # oldest first
        if event["type"] not in SUB_EVENTS:
            continue
        obj = event["data"]["object"]
        newest[obj["id"]] = obj
        if event["type"] in ("customer.subscription.created", "customer.subscription.updated"):
            chains[obj["id"]].append(event)
    assert len(newest) > 1000
    for sub_id, obj in newest.items():
        assert obj == subscriptions[sub_id], sub_id  # nothing changed after the last event
    checked = 0
    for chain in chains.values():
        for before, after in zip(chain, chain[1:]):
            reverted = {**after["data"]["object"], **after["data"]["previous_attributes"]}
            assert reverted == before["data"]["object"]
            checked += 1
    assert checked > 100


def test_company_invoices_agree_with_the_timelines(company, company_fake):
    invoices = list_all(company_fake, "/v1/invoices", {"created[gte]": NOW - 30 * DAY})
    assert len(invoices) > 2000
    assert {i["status"] for i in invoices} >= {"paid", "open", "draft"}
    for invoice in invoices[:400]:
        sub_id = invoice["parent"]["subscription_details"]["subscription"]
        state = company.subscription_at(sub_id, invoice["created"])
        if state["status"] == "canceled":  # canceled the second it was created
            assert invoice["status"] == "void"
            continue
        assert state["status"] in ("active", "past_due", "unpaid", "incomplete")
        if invoice["billing_reason"] == "subscription_cycle" and not any(
                i["price"]["recurring"]["usage_type"] == "metered" for i in state["items"]["data"]):
            quantities = sorted(i["quantity"] for i in state["items"]["data"])
            assert sorted(line["quantity"] for line in invoice["lines"]["data"]) == quantities
        assert invoice["total"] == invoice["subtotal"] - sum(
            d["amount"] for d in invoice["total_discount_amounts"])
    # The subscription's latest invoice is the newest one of its invoices.
    sub = next(s for s in company.objects("subscriptions") if s["status"] == "active")
    mine = list_all(company_fake, "/v1/invoices", {"subscription": sub["id"]})
    assert mine[0]["id"] == sub["latest_invoice"]


def test_company_charges_match_paid_invoices(company, company_fake):
    paid = list_all(company_fake, "/v1/invoices", {"status": "paid",
                                                   "created[gte]": NOW - 29 * DAY,
                                                   "created[lte]": NOW - 2 * DAY})
    charges = collections.defaultdict(list)
    for charge in company.objects("charges"):
        if charge["status"] == "succeeded":
            charges[(charge["customer"], charge["created"])].append(charge["amount"])
    transfers = 0
    for invoice in paid:
        if invoice["total"] <= 0:
            continue
        at = invoice["status_transitions"]["paid_at"]
        if invoice["collection_method"] == "send_invoice":  # paid by bank transfer: no charge
            transfers += 1
            assert invoice["total"] not in charges[(invoice["customer"], at)], invoice["id"]
        else:
            assert invoice["total"] in charges[(invoice["customer"], at)], invoice["id"]
    assert transfers > 0


def test_company_refunds_and_disputes(company, company_fake):
    refunds = list_all(company_fake, "/v1/refunds")
    assert len(refunds) >= 3
    assert all(NOW - 31 * DAY <= r["created"] <= NOW for r in refunds)
    assert collections.Counter(r["status"] for r in refunds).most_common(1)[0][0] == "succeeded"
    refund = refunds[0]
    assert refund["object"] == "refund" and refund["id"].startswith("re_")
    charge = get(company_fake, f"/v1/charges/{refund['charge']}").json()
    assert charge["amount_refunded"] >= refund["amount"] or refund["status"] not in (
        "succeeded", "pending")
    by_charge = list_all(company_fake, "/v1/refunds", {"charge": refund["charge"]})
    assert refund["id"] in {r["id"] for r in by_charge}
    recent = list_all(company_fake, "/v1/refunds", {"created[gte]": NOW - 10 * DAY})
    assert all(r["created"] >= NOW - 10 * DAY for r in recent)

    disputes = list_all(company_fake, "/v1/disputes")
    statuses = {d["status"] for d in disputes}
    assert statuses & {"warning_needs_response", "needs_response", "under_review",
                       "warning_under_review"}
    assert statuses & {"won", "lost"}
    dispute = disputes[0]
    assert dispute["object"] == "dispute" and dispute["id"].startswith("dp_")
    assert dispute["evidence_details"]["due_by"] > dispute["created"]
    assert get(company_fake, f"/v1/charges/{dispute['charge']}").json()["disputed"] is True
    expanded = get(company_fake, "/v1/disputes", {"expand[]": "data.charge", "limit": 1}).json()
    assert expanded["data"][0]["charge"]["object"] == "charge"
    assert get(company_fake, "/v1/disputes", {"charge": "ch_nope"}).status_code == 400


def test_refunds_disputes_and_charges_change_status_with_stripes_events():
    store = StripeStore(seed=2, now=NOW)
    customer = store.add_customer("Acme")
    charge = store.add_charge(customer, 5000, created=NOW - 5 * DAY)
    refund = store.add_refund(charge, 2000, status="pending", created=NOW - 4 * DAY)
    dispute = store.add_dispute(charge, status="needs_response", created=NOW - 3 * DAY)
    pending = store.add_charge(customer, 700, status="pending", created=NOW - 2 * DAY)
    assert store.get("charges", charge["id"])["amount_refunded"] == 2000
    store.update_refund(refund, "failed", at=NOW - 3 * DAY)
    store.update_dispute(dispute, "under_review", at=NOW - 2 * DAY)
    store.update_dispute(dispute, "lost", at=NOW - DAY)
    store.settle_charge(pending, "succeeded", at=NOW - DAY + 1)
    assert store.get("charges", charge["id"])["amount_refunded"] == 0  # given back
    assert store.get("refunds", refund["id"])["failure_reason"] == "expired_or_canceled_card"
    with FakeStripe(store, api_key=KEY) as fake:
        events = list_all(fake, "/v1/events")
        only = list_all(fake, "/v1/events", {"types[]": ["refund.failed", "charge.dispute.closed"]})
        one = get(fake, f"/v1/events/{events[0]['id']}").json()
        now_lost = get(fake, f"/v1/disputes/{dispute['id']}").json()
    # newest first, each with the object after the change and, for an update, what it
    # was before
    assert [(e["type"], e["data"]["object"]["id"], e["data"].get("previous_attributes"))
            for e in events] == [
        ("charge.succeeded", pending["id"], None),
        ("charge.dispute.closed", dispute["id"], None),
        ("charge.dispute.updated", dispute["id"], {"status": "needs_response"}),
        ("refund.failed", refund["id"], None),
        ("charge.refund.updated", refund["id"], {"status": "pending"}),
        ("refund.updated", refund["id"], {"status": "pending"}),
    ]
    assert [e["type"] for e in only] == ["charge.dispute.closed", "refund.failed"]
    assert one == events[0] and one["request"] == {"id": None, "idempotency_key": None}
    assert now_lost["status"] == "lost"
    with pytest.raises(ValueError, match="cannot become"):
        store.update_dispute(dispute, "won")  # closed is final
    with pytest.raises(ValueError, match="cannot become"):
        store.update_refund(refund, "succeeded")  # so is failed
    with pytest.raises(ValueError, match="only a pending charge"):
        store.settle_charge(charge, "failed")


def test_the_ticker_settles_pending_refunds_and_moves_disputes_along():
    store = generate_company(seed=3, customers=300, now=NOW)
    paid = [c for c in store.objects("charges") if c["status"] == "succeeded"
            and not c["amount_refunded"] and not c["disputed"]]
    for charge in paid[:3]:
        store.add_refund(charge, status="pending", created=NOW - 3600)
    open_before = {d["id"] for d in store.objects("disputes")
                   if d["status"] in OPEN_DISPUTE_STATUSES}
    pending_before = {r["id"] for r in store.objects("refunds") if r["status"] == "pending"}
    clock = {"now": NOW}
    ticker = CompanyTicker(store, rng_seed=5, clock=lambda: clock["now"])
    moved = []
    for days in range(1, 61):
        clock["now"] = NOW + days * DAY
        moved += [(kind, target) for _, kind, target in ticker.tick()
                  if kind in ("refund_settles", "dispute_moves")]
    assert pending_before and open_before
    assert {r for kind, r in moved if kind == "refund_settles"} == pending_before
    assert all(store.get("refunds", r)["status"] in ("succeeded", "failed") for r in pending_before)
    assert {d for kind, d in moved if kind == "dispute_moves"} == open_before
    # two months on, every one was answered and decided
    assert {store.get("disputes", d)["status"] for d in open_before} <= {"won", "lost",
                                                                         "warning_closed"}
    kinds = collections.Counter(e["type"] for e in store.stored_events)
    assert kinds["refund.updated"] == len(pending_before)
    assert kinds["charge.dispute.closed"] == len(open_before)


def test_company_keeps_the_last_day_calm_unless_asked():
    def large_churn_last_day(store: StripeStore) -> list[str]:
        found = []
        for customer in store.customers:
            before = customer_arr_usd(store, customer, NOW - DAY)
            if before > 10_000 and customer_arr_usd(store, customer, NOW) == 0:
                found.append(customer)
        return found

    calm = generate_company(seed=3, customers=600, now=NOW)
    assert large_churn_last_day(calm) == []
    stormy = generate_company(seed=3, customers=600, now=NOW, large_churn=True)
    (customer,) = large_churn_last_day(stormy)
    with FakeStripe(stormy, api_key=KEY) as fake:
        deleted = list_all(fake, "/v1/events", {"type": "customer.subscription.deleted",
                                                 "created[gte]": NOW - DAY})
    assert customer in {e["data"]["object"]["customer"] for e in deleted}


def test_company_history_is_deterministic():
    first = generate_company(seed=3, customers=150, now=NOW)
    second = generate_company(seed=3, customers=150, now=NOW)
    for name in ("subscriptions", "charges", "refunds", "disputes", "events", "invoices"):
        assert first.objects(name) == second.objects(name), name


# --------------------------------------------------------------------------- the ticker


class Clock:
    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> int:
        return self.t


def run_ticker(seed: int, steps: int, step: int = 10 * 60) -> tuple[StripeStore, list]:
    store = generate_company(seed=seed, customers=300, now=NOW)
    clock = Clock(NOW)
    ticker = CompanyTicker(store, rng_seed=seed, clock=clock, rates=BUSY_RATES)
    changes = []
    for _ in range(steps):
        clock.t += step
        changes += ticker.tick()
    return store, changes


def test_ticker_moves_the_company_and_keeps_it_consistent():
    store, changes = run_ticker(seed=4, steps=36)  # six hours in ten-minute steps
    assert store.now == NOW + 6 * HOUR
    kinds = collections.Counter(kind for _, kind, _ in changes)
    assert kinds["signup"] >= 10 and kinds["upgrade"] + kinds["downgrade"] >= 5
    assert kinds["cancel"] >= 3 and kinds["attempt"] >= 1
    new_charges = [c for c in store.objects("charges") if c["created"] > NOW]
    assert any(c["status"] == "failed" for c in new_charges)
    assert any(c["status"] == "succeeded" for c in new_charges)
    with FakeStripe(store, api_key=KEY) as fake:
        fresh = list_all(fake, "/v1/events", {"created[gt]": NOW})
        assert len(fresh) >= 20
        types = {e["type"] for e in fresh}
        assert {"customer.subscription.created", "customer.subscription.updated",
                "customer.subscription.deleted"} <= types
        subscriptions = {s["id"]: s for s in list_all(fake, "/v1/subscriptions", {"status": "all"})}
        # Each subscription's newest event shows it exactly as it is now.
        newest = {}
        for event in reversed(list_all(fake, "/v1/events")):
            if event["type"] in SUB_EVENTS:
                newest[event["data"]["object"]["id"]] = event["data"]["object"]
        assert {e["data"]["object"]["id"] for e in fresh if e["type"] in SUB_EVENTS} <= set(newest)
        for sub_id, obj in newest.items():
            assert obj == subscriptions[sub_id], sub_id
        signups = [s for s in subscriptions.values() if s["created"] > NOW]
        assert signups and all(s["items"]["data"] for s in signups)


def test_ticker_is_deterministic_for_a_seed_and_clock():
    first, changes_a = run_ticker(seed=6, steps=12)
    second, changes_b = run_ticker(seed=6, steps=12)
    assert changes_a == changes_b and changes_a
    for name in ("customers", "subscriptions", "charges", "events", "invoices"):
        assert first.objects(name) == second.objects(name), name


def test_ticker_does_nothing_when_the_clock_stands_still():
    store = generate_company(seed=2, customers=100, now=NOW)
    before = copy.deepcopy(store.objects("subscriptions"))
    assert CompanyTicker(store, clock=lambda: NOW).tick() == []
    assert CompanyTicker(store, clock=lambda: NOW - 50).tick() == []
    assert store.objects("subscriptions") == before


def test_live_fake_stripe_ticks_on_its_own_while_serving():
    store = generate_company(seed=8, customers=200, now=NOW)
    clock = Clock(NOW)
    lock = threading.Lock()

    def moving_clock() -> int:
        with lock:
            clock.t += 15 * 60  # each tick is a quarter of an hour later
            return clock.t

    with FakeStripe(store, api_key=KEY, live=True, tick_interval=0.05, clock=moving_clock,
                    ticker_options={"rates": BUSY_RATES}) as fake:
        first = get(fake, "/v1/events", {"limit": 1}).json()["data"][0]["created"]
        deadline = time.monotonic() + 20
        while store.now < NOW + 4 * HOUR and time.monotonic() < deadline:
            statuses = run_concurrently(lambda: get(fake, "/v1/events", {"limit": 100}).status_code, 4)
            assert statuses == [200] * 4
        assert store.now >= NOW + 4 * HOUR
        newest = get(fake, "/v1/events", {"limit": 1}).json()["data"][0]["created"]
        assert newest > first
        listed = list_all(fake, "/v1/invoices", {"created[gt]": NOW})
        assert all(i["created"] <= store.now for i in listed)
    assert fake.ticker is not None and fake.ticker._thread is None  # stopped with the server
