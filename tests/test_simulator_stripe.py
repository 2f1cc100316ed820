"""Tests for the Stripe simulator: StripeStore, generate_company and FakeStripe.

Everything talks to FakeStripe over real sockets with `requests`, the way the
exporter's client talks to api.stripe.com.
"""

from __future__ import annotations

import collections
import time
from datetime import datetime, timezone

import pytest
import requests

from exporter.simulator import API_VERSION, FakeStripe, StripeStore, generate_company
from concurrency import run_concurrently
from fake_stripe_client import AUTH, KEY, get, list_all

NOW = 1_780_000_000  # a fixed "now" so the generated company is reproducible
DAY = 86_400


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def company() -> StripeStore:
    return generate_company(seed=7, customers=3000, now=NOW)


@pytest.fixture(scope="module")
def company_fake(company):
    with FakeStripe(company) as fake:
        yield fake


@pytest.fixture()
def tiny() -> StripeStore:
    """A hand-made company: two customers, a per-seat price, a tiered price, coupons."""
    store = StripeStore(seed=1, now=NOW)
    acme = store.add_customer("Acme Ltd", created=NOW - 100 * DAY, id="cus_acme")
    beta = store.add_customer("Beta GmbH", created=NOW - 50 * DAY, id="cus_beta")
    pro = store.add_price(19900, product="Pro", nickname="Pro monthly", id="price_pro",
                          created=NOW - 200 * DAY)
    team = store.add_price(tiers=[(5, 3000), (None, 2500, 1000)], tiers_mode="graduated",
                           product="Team", id="price_team", created=NOW - 200 * DAY)
    store.add_price(14900, product="Pro", active=False, id="price_old", created=NOW - 300 * DAY)
    store.add_price(4500, "eur", product="Starter", id="price_eur", created=NOW - 200 * DAY)
    forever = store.add_coupon(percent_off=20, id="TWENTY", created=NOW - 200 * DAY)
    welcome = store.add_coupon(amount_off=5000, duration="repeating", duration_in_months=3,
                               id="WELCOME", created=NOW - 200 * DAY)
    store.add_subscription(acme, [(pro, 3, [welcome]), (team, 7)], coupons=[forever],
                           created=NOW - 40 * DAY, id="sub_acme")
    store.add_subscription(beta, ["price_eur"], status="canceled", created=NOW - 45 * DAY,
                           ended_at=NOW - 5 * DAY, id="sub_beta_old")
    store.add_subscription(beta, [(pro, 1)], status="trialing", created=NOW - 2 * DAY,
                           id="sub_beta")
    store.add_charge(acme, 19900 * 3, created=NOW - 10 * DAY)
    store.add_charge(acme, 19900 * 3, status="failed", failure_code="expired_card",
                     created=NOW - 3600)
    return store


@pytest.fixture()
def fake(tiny):
    with FakeStripe(tiny, api_key=KEY) as server:
        yield server


# --------------------------------------------------------------------------- auth and headers


def test_missing_api_key_is_401_with_stripes_message(fake):
    response = requests.get(fake.url + "/v1/customers", timeout=10)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("You did not provide an API key.")
    assert response.headers["Request-Id"].startswith("req_")


def test_wrong_api_key_is_401_and_masks_the_key(fake):
    response = get(fake, "/v1/customers", headers={"Authorization": "Bearer sk_test_wrongkey9876"})
    assert response.status_code == 401
    body = response.json()
    assert body == {"error": {"message": "Invalid API Key provided: sk_test_****9876",
                              "type": "invalid_request_error"}}
    assert "wrongkey" not in response.text


def test_basic_auth_like_curl_u_is_accepted(fake):
    response = requests.get(fake.url + "/v1/customers", auth=(KEY, ""), timeout=10)
    assert response.status_code == 200
    assert [c["id"] for c in response.json()["data"]] == ["cus_beta", "cus_acme"]


def test_stripe_version_header_is_echoed_or_defaults_to_dahlia(fake):
    assert get(fake, "/v1/coupons").headers["Stripe-Version"] == API_VERSION == "2026-07-29.dahlia"
    pinned = get(fake, "/v1/coupons", headers={**AUTH, "Stripe-Version": "2025-03-31.basil"})
    assert pinned.headers["Stripe-Version"] == "2025-03-31.basil"
    first, second = get(fake, "/v1/coupons"), get(fake, "/v1/coupons")
    assert first.headers["Request-Id"] != second.headers["Request-Id"]


def test_unknown_paths_ids_and_methods_are_404(fake):
    assert get(fake, "/v1/quotes").json()["error"]["message"].startswith(
        "Unrecognized request URL (GET: /v1/quotes)")
    missing = get(fake, "/v1/subscriptions/sub_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"
    assert missing.json()["error"]["message"] == "No such subscription: 'sub_nope'"
    post = requests.post(fake.url + "/v1/customers", headers=AUTH, data={"name": "x"}, timeout=10)
    assert post.status_code == 404


# --------------------------------------------------------------------------- lists and paging


def test_paging_with_starting_after_returns_every_subscription_once(company, company_fake):
    seen = list_all(company_fake, "/v1/subscriptions", {"status": "all"})
    ids = [s["id"] for s in seen]
    assert len(ids) == len(set(ids)) == company.count("subscriptions") > 3000
    assert set(ids) == set(company.subscriptions)
    created = [s["created"] for s in seen]
    assert created == sorted(created, reverse=True)  # newest first, like Stripe


def test_ending_before_pages_backwards(fake):
    everything = get(fake, "/v1/prices", {"limit": 100}).json()["data"]
    assert len(everything) == 4
    page = get(fake, "/v1/prices", {"limit": 2, "ending_before": everything[3]["id"]}).json()
    assert [p["id"] for p in page["data"]] == [everything[1]["id"], everything[2]["id"]]
    assert page["has_more"] is True
    first = get(fake, "/v1/prices", {"limit": 2, "ending_before": everything[1]["id"]}).json()
    assert [p["id"] for p in first["data"]] == [everything[0]["id"]]
    assert first["has_more"] is False


def test_default_limit_is_10_and_limit_is_validated(company_fake):
    assert len(get(company_fake, "/v1/customers").json()["data"]) == 10
    for bad, message in ((0, "greater than or equal to 1"), (101, "less than or equal to 100"),
                         ("ten", "Invalid integer: ten")):
        response = get(company_fake, "/v1/customers", {"limit": bad})
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]
        assert response.json()["error"]["param"] == "limit"


def test_unknown_cursor_and_unknown_parameter_are_400(fake):
    cursor = get(fake, "/v1/customers", {"starting_after": "cus_gone"})
    assert cursor.status_code == 400
    assert cursor.json()["error"]["message"] == "No such customer: 'cus_gone'"
    assert cursor.json()["error"]["param"] == "starting_after"
    typo = get(fake, "/v1/charges", {"create[gte]": 1})
    assert typo.status_code == 400
    assert typo.json()["error"]["message"] == "Received unknown parameter: create"


def test_subscription_status_defaults_to_not_canceled(fake):
    default = {s["id"] for s in get(fake, "/v1/subscriptions").json()["data"]}
    everything = {s["id"] for s in get(fake, "/v1/subscriptions", {"status": "all"}).json()["data"]}
    canceled = {s["id"] for s in get(fake, "/v1/subscriptions", {"status": "canceled"}).json()["data"]}
    assert default == {"sub_acme", "sub_beta"}
    assert everything == {"sub_acme", "sub_beta", "sub_beta_old"}
    assert canceled == {"sub_beta_old"}
    bad = get(fake, "/v1/subscriptions", {"status": "cancelled"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"


def test_subscription_customer_and_price_filters(fake):
    by_customer = get(fake, "/v1/subscriptions", {"customer": "cus_beta", "status": "all"}).json()
    assert [s["id"] for s in by_customer["data"]] == ["sub_beta", "sub_beta_old"]
    by_price = get(fake, "/v1/subscriptions", {"price": "price_team"}).json()
    assert [s["id"] for s in by_price["data"]] == ["sub_acme"]
    items = get(fake, "/v1/subscription_items", {"subscription": "sub_acme"}).json()
    assert {i["price"]["id"] for i in items["data"]} == {"price_pro", "price_team"}
    assert get(fake, "/v1/subscription_items").json()["error"]["param"] == "subscription"


def test_prices_active_filter(fake):
    active = get(fake, "/v1/prices", {"active": "true"}).json()["data"]
    inactive = get(fake, "/v1/prices", {"active": "false"}).json()["data"]
    assert "price_old" not in {p["id"] for p in active} and len(active) == 3
    assert [p["id"] for p in inactive] == ["price_old"]


def test_charges_created_filters(company, company_fake):
    since = NOW - DAY
    recent = list_all(company_fake, "/v1/charges", {"created[gte]": since})
    expected = {c["id"] for c in company.objects("charges") if c["created"] >= since}
    assert {c["id"] for c in recent} == expected
    assert recent and all(c["created"] >= since for c in recent)
    assert any(c["status"] == "failed" for c in recent)
    window = get(company_fake, "/v1/charges",
                 {"created[gt]": NOW - 2 * DAY, "created[lt]": NOW - DAY, "limit": 100}).json()
    assert window["data"] and all(NOW - 2 * DAY < c["created"] < NOW - DAY for c in window["data"])


def test_charges_customer_filter_and_customer_expansion(fake):
    body = get(fake, "/v1/charges", {"customer": "cus_acme", "expand[]": "data.customer"}).json()
    assert len(body["data"]) == 2
    assert all(c["customer"]["object"] == "customer" and c["customer"]["id"] == "cus_acme"
               for c in body["data"])
    failed = next(c for c in body["data"] if c["status"] == "failed")
    assert failed["failure_code"] == "expired_card" and failed["paid"] is False
    assert get(fake, "/v1/charges", {"customer": "cus_nobody"}).status_code == 400


# --------------------------------------------------------------------------- object shapes and expansion


def test_subscriptions_have_dahlia_shape_with_discount_ids(fake):
    sub = get(fake, "/v1/subscriptions/sub_acme").json()
    assert "discount" not in sub
    assert "current_period_start" not in sub and "current_period_end" not in sub
    assert len(sub["discounts"]) == 1 and sub["discounts"][0].startswith("di_")
    items = sub["items"]
    assert items["object"] == "list" and items["url"] == "/v1/subscription_items?subscription=sub_acme"
    pro = next(i for i in items["data"] if i["price"]["id"] == "price_pro")
    assert pro["price"]["unit_amount"] == 19900 and pro["price"]["unit_amount_decimal"] == "19900"
    assert pro["quantity"] == 3 and pro["discounts"][0].startswith("di_")
    assert pro["current_period_start"] <= NOW < pro["current_period_end"]
    team = next(i for i in items["data"] if i["price"]["id"] == "price_team")
    assert team["price"]["billing_scheme"] == "tiered" and "tiers" not in team["price"]


def test_expanding_discounts_gives_objects_with_source_coupon(fake, tiny):
    sub = get(fake, "/v1/subscriptions", {"expand[]": ["data.discounts", "data.items.data.discounts"]}
              ).json()["data"][1]
    assert sub["id"] == "sub_acme"
    (discount,) = sub["discounts"]
    assert discount["object"] == "discount"
    assert discount["source"] == {"type": "coupon", "coupon": "TWENTY"}
    assert "coupon" not in discount
    assert discount["end"] is None  # forever
    assert discount["subscription"] == "sub_acme" and discount["subscription_item"] is None
    item = next(i for i in sub["items"]["data"] if i["discounts"])
    (item_discount,) = item["discounts"]
    assert item_discount["source"]["coupon"] == "WELCOME"
    assert item_discount["subscription_item"] == item["id"]
    start = datetime.fromtimestamp(item_discount["start"], timezone.utc)
    end = datetime.fromtimestamp(item_discount["end"], timezone.utc)
    assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == 3  # repeating 3 months
    assert tiny.coupons["WELCOME"]["times_redeemed"] == 1


def test_single_object_expansion_has_no_data_prefix(fake):
    sub = get(fake, "/v1/subscriptions/sub_acme",
              {"expand[]": ["discounts.source.coupon", "customer"]}).json()
    assert sub["customer"]["name"] == "Acme Ltd"
    assert sub["discounts"][0]["source"]["coupon"]["percent_off"] == 20
    assert get(fake, "/v1/subscriptions/sub_acme", {"expand[]": "data.discounts"}).status_code == 400


def test_expansion_deeper_than_four_levels_is_refused(fake):
    response = get(fake, "/v1/subscriptions", {"expand[]": "data.items.data.discounts.customer"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == ("You cannot expand more than 4 levels of a property. "
                                "Property: data.items.data.discounts.customer")
    assert error["type"] == "invalid_request_error"
    # Four levels is fine, and stripe-python's indexed form works too.
    assert get(fake, "/v1/subscriptions", {"expand[0]": "data.items.data.discounts"}).status_code == 200


def test_unknown_expansion_is_refused(fake):
    for path in ("data.latest_invoice", "customer", "data.items"):
        response = get(fake, "/v1/subscriptions", {"expand[]": path})
        assert response.status_code == 400
        assert response.json()["error"]["message"] == f"This property cannot be expanded ({path})."


def test_tiers_only_when_expanded(fake):
    plain = get(fake, "/v1/prices", {"limit": 100}).json()["data"]
    assert all("tiers" not in p for p in plain)
    expanded = get(fake, "/v1/prices", {"limit": 100, "expand[]": "data.tiers"}).json()["data"]
    team = next(p for p in expanded if p["id"] == "price_team")
    assert team["unit_amount"] is None and team["tiers_mode"] == "graduated"
    assert team["tiers"] == [
        {"up_to": 5, "unit_amount": 3000, "unit_amount_decimal": "3000",
         "flat_amount": None, "flat_amount_decimal": None},
        {"up_to": None, "unit_amount": 2500, "unit_amount_decimal": "2500",
         "flat_amount": 1000, "flat_amount_decimal": "1000"},
    ]
    assert "tiers" not in next(p for p in expanded if p["id"] == "price_pro")


# --------------------------------------------------------------------------- fault injection and log


def test_latency_is_measurable(fake):
    fake.set_latency(0.3)
    started = time.monotonic()
    assert get(fake, "/v1/coupons").status_code == 200
    assert time.monotonic() - started >= 0.3
    fake.set_latency(0)
    started = time.monotonic()
    get(fake, "/v1/coupons")
    assert time.monotonic() - started < 0.3


def test_fail_next_serves_the_given_failures_then_recovers(fake):
    fake.fail_next(2, status=429, headers={"Stripe-Should-Retry": "true"})
    for _ in range(2):
        response = get(fake, "/v1/customers")
        assert response.status_code == 429
        assert response.headers["Stripe-Should-Retry"] == "true"
        assert response.json()["error"]["code"] == "rate_limit"
    assert get(fake, "/v1/customers").status_code == 200


def test_fail_next_defaults_to_a_stripe_500_and_accepts_a_raw_body(fake):
    fake.fail_next()
    response = get(fake, "/v1/customers")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"
    fake.fail_next(1, status=503, body="<html>upstream connect error</html>",
                   headers={"Content-Type": "text/html"})
    html = get(fake, "/v1/customers")
    assert html.status_code == 503 and html.headers["Content-Type"] == "text/html"
    assert html.text.startswith("<html>")


def test_malformed_body_is_not_json(fake):
    fake.serve_malformed_next(1)
    response = get(fake, "/v1/subscriptions")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert get(fake, "/v1/subscriptions").json()["object"] == "list"


def test_rate_limit_answers_429_beyond_the_rate(fake):
    fake.rate_limit(3)
    responses = [get(fake, "/v1/coupons") for _ in range(6)]
    assert [r.status_code for r in responses[:3]] == [200, 200, 200]
    limited = [r for r in responses[3:] if r.status_code == 429]
    assert limited, "six requests well within a second must exceed 3 per second"
    assert limited[0].json()["error"]["code"] == "rate_limit"
    assert limited[0].json()["error"]["type"] == "invalid_request_error"
    fake.rate_limit(None)
    assert all(get(fake, "/v1/coupons").status_code == 200 for _ in range(5))


def test_request_log_records_method_path_and_query(fake):
    fake.reset_log()
    get(fake, "/v1/subscriptions", {"status": "all", "expand[]": ["data.discounts", "data.customer"]})
    requests.get(fake.url + "/v1/customers", timeout=10)  # unauthenticated requests count too
    assert fake.request_count == 2
    assert fake.requests[0] == ("GET", "/v1/subscriptions",
                                {"status": ["all"], "expand[]": ["data.discounts", "data.customer"]})
    assert fake.requests[1] == ("GET", "/v1/customers", {})
    fake.reset_log()
    assert fake.request_count == 0 and fake.requests == []


def test_concurrent_requests_are_all_served(company_fake):
    results = run_concurrently(
        lambda: get(company_fake, "/v1/subscriptions", {"limit": 50}).status_code, 8)
    assert results == [200] * 8


def test_keep_alive_session_has_no_per_request_stall(fake):
    """A requests.Session reuses the connection, as the exporter's client does;
    without TCP_NODELAY each response would wait ~40 ms for a delayed ACK."""
    with requests.Session() as session:
        session.headers.update(AUTH)
        started = time.perf_counter()
        for _ in range(50):
            assert session.get(fake.url + "/v1/coupons", timeout=10).status_code == 200
        assert time.perf_counter() - started < 1.0


def test_server_lifecycle_url_and_stop():
    fake = FakeStripe(StripeStore(now=NOW))
    with pytest.raises(RuntimeError):
        fake.url
    fake.start()
    url = fake.url
    assert url.startswith("http://127.0.0.1:") and fake.port > 0
    assert requests.get(url + "/v1/customers", headers=AUTH, timeout=10).json()["data"] == []
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/v1/customers", headers=AUTH, timeout=2)


# --------------------------------------------------------------------------- store helpers


def test_store_helpers_build_real_looking_objects(tiny):
    cus = tiny.add_customer("Gamma KK")
    assert cus["id"].startswith("cus_") and len(cus["id"]) == 18 and cus["currency"] is None
    yen = tiny.add_price(7000, "jpy", "month", product="Starter")
    assert yen["unit_amount"] == 7000 and yen["unit_amount_decimal"] == "7000"
    sub = tiny.add_subscription(cus, [(yen, 1)], cancel_at_period_end=True)
    assert sub["id"].startswith("sub_") and len(sub["id"]) == 4 + 24
    assert sub["items"]["data"][0]["id"].startswith("si_")
    assert tiny.customers[cus["id"]]["currency"] == "jpy"  # set by the first subscription
    assert sub["cancel_at"] == sub["items"]["data"][0]["current_period_end"]
    sms = tiny.add_price(unit_amount_decimal="0.75", usage_type="metered", product="SMS")
    assert sms["unit_amount"] is None and sms["recurring"]["meter"].startswith("mtr_")
    pack = tiny.add_price(1000, transform_quantity=(5, "up"), product="Seats")
    assert pack["transform_quantity"] == {"divide_by": 5, "round": "up"}
    weekly = tiny.add_price(1500, interval="week", product="Weekly")
    assert weekly["recurring"] == {"interval": "week", "interval_count": 1, "meter": None,
                                   "trial_period_days": None, "usage_type": "licensed"}
    charge = tiny.add_charge(cus, 7000, "jpy", status="failed", decline_code="insufficient_funds")
    assert charge["failure_code"] == "card_declined"
    assert charge["outcome"]["reason"] == "insufficient_funds"
    assert charge["amount_captured"] == 0 and charge["balance_transaction"] is None
    with pytest.raises(ValueError):
        tiny.add_coupon(percent_off=10, amount_off=100)
    with pytest.raises(KeyError):
        tiny.add_subscription("cus_missing", ["price_pro"])


def test_trialing_and_canceled_subscription_fields(tiny):
    trialing = tiny.subscriptions["sub_beta"]
    assert trialing["trial_end"] > NOW and trialing["trial_start"] == NOW - 2 * DAY
    item = trialing["items"]["data"][0]
    assert (item["current_period_start"], item["current_period_end"]) == (
        trialing["trial_start"], trialing["trial_end"])
    canceled = tiny.subscriptions["sub_beta_old"]
    assert canceled["ended_at"] == canceled["canceled_at"] == NOW - 5 * DAY
    assert canceled["cancellation_details"]["reason"] == "cancellation_requested"
    assert canceled["items"]["data"][0]["current_period_end"] >= canceled["ended_at"]


# --------------------------------------------------------------------------- generated company


def test_company_has_the_statuses_and_flags_of_a_real_business(company):
    subs = company.objects("subscriptions")
    statuses = collections.Counter(s["status"] for s in subs)
    assert set(statuses) == {"active", "past_due", "trialing", "canceled", "incomplete",
                             "incomplete_expired", "unpaid", "paused"}
    assert statuses["active"] / len(subs) > 0.6  # mostly active
    assert statuses["active"] > statuses["canceled"] > statuses["past_due"] > statuses["unpaid"]
    assert any(s["cancel_at_period_end"] and s["status"] == "active" for s in subs)
    per_customer = collections.Counter(s["customer"] for s in subs)
    assert sum(1 for n in per_customer.values() if n > 1) > 100
    assert company.count("customers") == 3000


def test_company_catalog_covers_currencies_intervals_and_schemes(company):
    items = [i for s in company.objects("subscriptions") for i in s["items"]["data"]]
    prices = [i["price"] for i in items]
    assert {p["currency"] for p in prices} == {"usd", "eur", "gbp", "jpy"}
    intervals = {(p["recurring"]["interval"], p["recurring"]["interval_count"]) for p in prices}
    assert {("day", 1), ("week", 1), ("month", 1), ("month", 3), ("year", 1)} <= intervals
    assert {p["tiers_mode"] for p in prices} == {None, "graduated", "volume"}
    assert any(p["recurring"]["usage_type"] == "metered" for p in prices)
    assert any(p["transform_quantity"] for p in prices)
    by_key = {p["lookup_key"]: p for p in company.objects("prices")}
    assert by_key["starter_m"]["unit_amount"] == 4900
    assert by_key["business_y"]["unit_amount"] == 480000
    assert by_key["business_y"]["recurring"]["interval"] == "year"
    assert by_key["starter_m_jpy"]["unit_amount"] == 7000  # whole yen, JPY has no minor unit
    assert by_key["pro_legacy"]["active"] is False
    pro_quantities = {i["quantity"] for i in items if i["price"]["lookup_key"] == "pro_m"}
    assert min(pro_quantities) == 1 and max(pro_quantities) <= 20 and len(pro_quantities) > 10


def test_company_coupons_and_discounts(company):
    coupons = company.objects("coupons")
    kinds = {(c["duration"], "percent" if c["percent_off"] is not None else "amount") for c in coupons}
    assert {("forever", "percent"), ("repeating", "amount"), ("once", "percent")} <= kinds
    assert any(c["duration"] == "repeating" and c["duration_in_months"] == 3 for c in coupons)
    discounts = company.objects("discounts")
    repeating = [d for d in discounts
                 if company.coupons[d["source"]["coupon"]]["duration"] == "repeating"]
    assert all(d["end"] is not None for d in repeating)
    assert any(d["end"] < NOW for d in repeating) and any(d["end"] > NOW for d in repeating)
    assert all(d["end"] is None for d in discounts if d not in repeating)
    assert any(d["subscription_item"] for d in discounts)  # item-level discounts too


def test_company_charges_last_30_days_with_realistic_failures(company):
    charges = company.objects("charges")
    assert all(NOW - 30 * DAY <= c["created"] <= NOW for c in charges)
    failed = [c for c in charges if c["status"] == "failed"]
    assert 0.02 <= len(failed) / len(charges) <= 0.06
    assert all(c["failure_code"] and c["failure_message"] and not c["paid"] for c in failed)
    assert len({c["failure_code"] for c in failed}) >= 3
    assert sum(1 for c in failed if c["created"] >= NOW - DAY) >= 5
    assert {c["currency"] for c in charges} == {"usd", "eur", "gbp", "jpy"}
    assert {c["currency"] for c in failed} > {"usd"}


def test_company_is_deterministic_for_a_seed_and_now():
    first = generate_company(seed=3, customers=200, now=NOW)
    second = generate_company(seed=3, customers=200, now=NOW)
    other = generate_company(seed=4, customers=200, now=NOW)
    for name in first.collections:
        assert first.objects(name) == second.objects(name), name
    assert first.price_tiers == second.price_tiers
    assert first.objects("subscriptions") != other.objects("subscriptions")
