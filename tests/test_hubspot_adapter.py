"""The HubSpot source through the real HTTP client against `responses` mocks in HubSpot's
shapes: config, a full read, incremental polls, currencies, a 429, an expired token,
rate-limit headers, and the KPIs from hand-checked deals and contacts."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
import responses

from exporter.config import ConfigError, parse
from exporter.http import UpstreamError
from exporter.sources.base import UpstreamDataError
from exporter.sources.hubspot import HubSpotSource
from exporter.sources.hubspot.source import make_client, pace

API = "https://api.hubapi.com"
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
DAY = 86400
FX = {"usd": Decimal(1), "eur": Decimal("1.10")}


def iso(t: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


PIPELINES = {"results": [
    {"id": "default", "label": "Sales Pipeline", "displayOrder": 0, "archived": False, "stages": [
        {"id": "qualifiedtobuy", "label": "Qualified to buy", "displayOrder": 0,
         "metadata": {"isClosed": "false", "probability": "0.4"}},
        {"id": "contractsent", "label": "Contract sent", "displayOrder": 1,
         "metadata": {"isClosed": "false", "probability": "0.9"}},
        {"id": "closedwon", "label": "Closed won", "displayOrder": 2,
         "metadata": {"isClosed": "true", "probability": "1.0"}},
        {"id": "closedlost", "label": "Closed lost", "displayOrder": 3,
         "metadata": {"isClosed": "true", "probability": "0.0"}}]},
    {"id": "77", "label": "Renewals", "displayOrder": 1, "archived": False, "stages": [
        {"id": "88", "label": "Negotiation", "displayOrder": 0,
         "metadata": {"isClosed": "false", "probability": "0.5"}}]},
]}
ACCOUNT = {"portalId": 62515, "companyCurrency": "USD", "additionalCurrencies": ["EUR", "JPY"],
           "timeZone": "US/Eastern", "utcOffset": "-05:00"}


def deal(id, stage, amount, created_days, *, pipeline="default", currency=None,
         closed_days=None, changed_days=None, modified=NOW - DAY):
    props = {"hs_object_id": id, "dealname": f"Deal {id}", "dealstage": stage,
             "pipeline": pipeline, "amount": amount, "createdate": iso(NOW - created_days * DAY),
             "closedate": None if closed_days is None else iso(NOW - closed_days * DAY),
             "hs_lastmodifieddate": iso(modified),
             "hs_v2_date_entered_current_stage":
                 None if changed_days is None else iso(NOW - changed_days * DAY)}
    if currency:
        props["deal_currency_code"] = currency
    return {"id": id, "properties": props, "archived": False}


# Hand-checked: open pipeline default/Qualified to buy = 10,000 + 0 (no amount) in usd;
# default/Contract sent = 20,000 EUR x 1.10 = 22,000 (weighted x 0.9 = 19,800);
# Renewals/Negotiation = 5,000; the JPY deal has no fx rate: amount left out, counted.
# Closed in 30 days: won 40,000 (cycle 20 days) and 60,000 (cycle 40 days), lost 1.
DEALS = [
    deal("1", "qualifiedtobuy", "10000", 10, changed_days=3),
    deal("2", "qualifiedtobuy", "", 20),                      # no amount; stalled 20 days
    deal("3", "contractsent", "20000", 30, currency="EUR", changed_days=2),
    deal("4", "88", "5000", 5, pipeline="77"),
    deal("5", "contractsent", "900000", 6, currency="JPY", changed_days=1),
    deal("6", "closedwon", "40000", 30, closed_days=10, changed_days=10),
    deal("7", "closedwon", "60000", 45, closed_days=5, changed_days=5),
    deal("8", "closedlost", "7000", 40, closed_days=3, changed_days=3),
]


def contact(id, created_days, mql_days=None, sql_days=None, touch_hours=None, legacy=False):
    created = NOW - created_days * DAY
    mql_key = ("hs_lifecyclestage_marketingqualifiedlead_date" if legacy
               else "hs_v2_date_entered_marketingqualifiedlead")
    props = {"createdate": iso(created), "lastmodifieddate": iso(created),
             mql_key: None if mql_days is None else iso(NOW - mql_days * DAY),
             "hs_v2_date_entered_salesqualifiedlead":
                 None if sql_days is None else iso(NOW - sql_days * DAY),
             "hs_sa_first_engagement_date":
                 None if touch_hours is None else iso(created + int(touch_hours * 3600))}
    return {"id": id, "properties": props, "archived": False}


# Leads: 3 created in 30 days; MQLs in 30 days: 101, 102, 104 (legacy property; created
# 40 days ago); SQL: 102. Response: 1 h and 3 h -> median 2 h, 1 of 2 within 2 h... plus
# 103, untouched and created 10 days ago (overdue): within target 1 / 3.
CONTACTS = [contact("101", 5, mql_days=4, touch_hours=1),
            contact("102", 8, mql_days=7, sql_days=2, touch_hours=3),
            contact("103", 10),
            contact("104", 40, mql_days=20, legacy=True)]


def search_results(request, objects, date_property_of=None):
    body = json.loads(request.body)
    [flt] = body["filterGroups"][0]["filters"]
    since = int(flt["value"])
    prop = flt["propertyName"]

    def at(obj):
        value = obj["properties"].get(prop)
        if value is None and prop == "hs_v2_date_entered_marketingqualifiedlead":
            value = obj["properties"].get("hs_lifecyclestage_marketingqualifiedlead_date")
        return value

    from exporter.sources.hubspot.fetch import timestamp_ms
    found = sorted((o for o in objects if at(o) and timestamp_ms(at(o)) >= since),
                   key=lambda o: timestamp_ms(at(o)))
    return 200, {}, json.dumps({"total": len(found), "results": found})


def mock_account(rsps, deals=DEALS, contacts=CONTACTS):
    rsps.get(f"{API}/crm/v3/pipelines/deals", json=PIPELINES)
    rsps.get(f"{API}/account-info/v3/details", json=ACCOUNT)
    rsps.get(f"{API}/crm/v3/objects/deals", json={
        "results": deals[:5], "paging": {"next": {"after": "5"}}})
    rsps.get(f"{API}/crm/v3/objects/deals", json={"results": deals[5:]})
    rsps.add_callback("POST", f"{API}/crm/v3/objects/contacts/search",
                      callback=lambda r: search_results(r, contacts))
    rsps.add_callback("POST", f"{API}/crm/v3/objects/deals/search",
                      callback=lambda r: search_results(r, deals))


def source(config_text="", **client_options) -> HubSpotSource:
    config = parse(f"sources: {{hubspot: {{access_token: {TOKEN}{config_text}}}}}", "kpi.yml", {})
    hubspot = config.sources["hubspot"]
    client_options.setdefault("sleep", lambda _: None)
    client = make_client(hubspot, max_retries=2, **client_options)
    return HubSpotSource(hubspot, FX, clock=lambda: NOW, client=client)


def values(samples, metric, **labels):
    return {tuple(sorted(s.labels.items())): s.value for s in samples
            if s.kpi == metric and all(s.labels.get(k) == v for k, v in labels.items())}


def one(samples, metric, **labels):
    [value] = values(samples, metric, **labels).values()
    return value


@pytest.mark.parametrize("text, key", [
    ("{}", "sources.hubspot.access_token"),
    ("{access_token: x, pipelines: default}", "sources.hubspot.pipelines"),
    ("{access_token: x, lifecycle_stages: {lead: subscriber}}", "sources.hubspot.lifecycle_stages"),
    ("{access_token: x, lifecycle_stages: {mql: 'Marketing Qualified'}}",
     "sources.hubspot.lifecycle_stages"),
    ("{access_token: x, max_stages: 0}", "sources.hubspot.max_stages"),
    ("{access_token: x, full_sync_interval: daily}", "sources.hubspot.full_sync_interval"),
    ("{access_token: x, pipeline: [default]}", "sources.hubspot.pipeline"),  # a typo
    ("{access_token: x, search_rate_limit: 0}", "sources.hubspot.search_rate_limit"),
])
def test_bad_config_names_the_key(text, key):
    with pytest.raises(ConfigError) as caught:
        parse(f"sources: {{hubspot: {text}}}", "kpi.yml", {})
    assert f"kpi.yml: {key}:" in str(caught.value)


@responses.activate
def test_searches_are_paced_to_their_own_limit_and_every_request_to_the_general_one():
    """Defaults under what HubSpot documents: 100 requests per 10 s, 5 searches a second."""
    responses.post(f"{API}/crm/v3/objects/deals/search", json={"results": []})
    responses.get(f"{API}/crm/v3/pipelines/deals", json=PIPELINES)
    waits = []
    hubspot = source(clock=lambda: 0.0, sleep=waits.append)  # the clock stands still
    assert (hubspot.config.rate_limit, hubspot.config.search_rate_limit) == (9.0, 4.0)
    for _ in range(5):  # a second's 4 searches at once, the fifth a quarter second later
        hubspot.client.request_json("POST", "/crm/v3/objects/deals/search", json={})
    assert waits == [0.25]
    for _ in range(5):  # 9 requests of any kind at once: the tenth waits a ninth of a second
        hubspot.client.get_json("/crm/v3/pipelines/deals")
    assert waits == [0.25, pytest.approx(1 / 9)]
    faster = source(", search_rate_limit: 40")
    assert faster.config.search_rate_limit == 40


@responses.activate
def test_a_full_read_gives_hand_checked_kpis():
    mock_account(responses)
    samples = source().poll()

    pipeline = values(samples, "sales_pipeline_amount")
    assert pipeline == {
        (("pipeline", "Renewals"), ("source", "hubspot"), ("stage", "Negotiation")): 5000,
        (("pipeline", "Sales Pipeline"), ("source", "hubspot"), ("stage", "Contract sent")): 22000,
        (("pipeline", "Sales Pipeline"), ("source", "hubspot"), ("stage", "Qualified to buy")):
            10000}
    assert one(samples, "sales_pipeline_weighted_amount", stage="Contract sent") == \
        pytest.approx(19800)
    assert one(samples, "sales_open_deals", stage="Contract sent") == 2  # the JPY one too
    assert one(samples, "unconverted_objects", currency="jpy") == 1
    assert one(samples, "sales_deals_won", window="30d") == 2
    assert one(samples, "sales_deals_lost", window="30d") == 1
    assert one(samples, "sales_won_amount", window="30d") == 100000
    assert one(samples, "sales_average_deal_amount", window="30d") == 50000
    assert one(samples, "sales_win_rate", window="30d") == pytest.approx(2 / 3)
    assert one(samples, "sales_cycle", window="30d") == 30 * DAY  # median of 20, 40
    assert one(samples, "sales_stalled_deals") == 1  # deal 2: created 20 days ago
    assert one(samples, "sales_stage_changes", window="14d") == 7  # all but deal 2

    assert one(samples, "sales_leads", window="30d") == 3
    assert one(samples, "sales_mqls", window="30d") == 3  # 104 by the legacy property
    assert one(samples, "sales_sqls", window="30d") == 1
    assert one(samples, "sales_mql_to_sql_conversion", window="30d") == pytest.approx(1 / 3)
    assert one(samples, "sales_lead_response", window="30d") == 2 * 3600
    assert one(samples, "sales_lead_response_within_target", window="30d") == \
        pytest.approx(1 / 3)
    assert one(samples, "sales_sql_to_opportunity_conversion", window="30d") == 0  # 0 of 1
    assert all(s.labels["source"] == "hubspot" for s in samples)


@responses.activate
def test_the_first_poll_lists_deals_and_searches_contacts_by_each_stage_date():
    mock_account(responses)
    source().poll()
    searched = [json.loads(c.request.body)["filterGroups"][0]["filters"][0]
                for c in responses.calls if c.request.method == "POST"]
    assert [f["propertyName"] for f in searched] == [
        "createdate", "hs_v2_date_entered_marketingqualifiedlead",
        "hs_v2_date_entered_salesqualifiedlead", "hs_v2_date_entered_opportunity"]
    assert {f["value"] for f in searched} == {str((NOW - 30 * DAY) * 1000)}
    listed = [c.request.url for c in responses.calls if "/objects/deals?" in c.request.url]
    assert len(listed) == 2 and "after=5" in listed[1]
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in responses.calls)


@responses.activate
def test_later_polls_search_only_what_changed_and_merge_it():
    mock_account(responses)
    clock = [NOW]
    hubspot = source()
    hubspot.clock = lambda: clock[0]
    hubspot.poll()
    responses.calls.reset()

    # Deal 1 moves to Contract sent; a new contact becomes an MQL.
    moved = deal("1", "contractsent", "10000", 10, changed_days=0, modified=NOW + 600)
    fresh = contact("105", 0, mql_days=0, touch_hours=0.5)
    fresh["properties"]["lastmodifieddate"] = iso(NOW + 600)
    responses.replace(responses.POST, f"{API}/crm/v3/objects/deals/search",
                      json={"total": 1, "results": [moved]})
    responses.replace(responses.POST, f"{API}/crm/v3/objects/contacts/search",
                      json={"total": 1, "results": [fresh]})
    clock[0] = NOW + 900
    samples = hubspot.poll()

    posts = [json.loads(c.request.body)["filterGroups"][0]["filters"][0]
             for c in responses.calls if c.request.method == "POST"]
    assert [(f["propertyName"], f["value"]) for f in posts] == [
        ("hs_lastmodifieddate", str((NOW - 300) * 1000)),
        ("lastmodifieddate", str((NOW - 300) * 1000))]
    assert not [c for c in responses.calls if "/objects/deals?" in c.request.url]  # no list
    assert one(samples, "sales_pipeline_amount", stage="Contract sent") == 32000
    assert one(samples, "sales_open_deals", stage="Qualified to buy") == 1  # deal 2 left
    assert one(samples, "sales_mqls", window="30d") == 4


@responses.activate
def test_a_full_refresh_drops_deleted_deals():
    mock_account(responses)
    clock = [NOW]
    hubspot = source(", full_sync_interval: 1h")
    hubspot.clock = lambda: clock[0]
    hubspot.poll()
    # Deal 4 (the only Renewals deal) was deleted: search never says so, the next list does.
    responses.replace(responses.GET, f"{API}/crm/v3/objects/deals",
                      json={"results": [d for d in DEALS if d["id"] != "4"]})
    clock[0] = NOW + 3600
    samples = hubspot.poll()
    assert not values(samples, "sales_pipeline_amount", pipeline="Renewals")


@responses.activate
def test_the_pipelines_filter_keeps_the_named_pipelines():
    mock_account(responses)
    samples = source(", pipelines: [Renewals]").poll()
    assert set(values(samples, "sales_pipeline_amount")) == {
        (("pipeline", "Renewals"), ("source", "hubspot"), ("stage", "Negotiation"))}
    assert one(samples, "sales_deals_won", window="30d") == 0


@responses.activate
def test_a_429_from_search_is_retried_and_a_lasting_one_fails_the_poll():
    limited = {"status": "error", "message": "You have reached your secondly limit.",
               "errorType": "RATE_LIMIT", "correlationId": "c0ffee", "policyName": "SECONDLY"}
    # Registered first, the 429 answers first; then the real search.
    responses.add(responses.POST, f"{API}/crm/v3/objects/contacts/search", status=429,
                  json=limited)
    mock_account(responses)
    samples = source().poll()
    assert one(samples, "sales_leads", window="30d") == 3

    responses.reset()
    for _ in range(3):  # the first try and both retries
        responses.add(responses.POST, f"{API}/crm/v3/objects/contacts/search", status=429,
                      json=limited)
    mock_account(responses)
    with pytest.raises(UpstreamError) as caught:
        source().poll()
    assert caught.value.reason == "rate_limited"
    assert "secondly limit" in str(caught.value)


@responses.activate
def test_an_expired_token_fails_the_poll_without_echoing_it(caplog):
    responses.get(f"{API}/crm/v3/pipelines/deals", status=401, json={
        "status": "error", "message": "The OAuth token used to make this call expired 2 hours ago.",
        "correlationId": "c0ffee", "category": "EXPIRED_AUTHENTICATION"},
        headers={"X-HubSpot-Auth-Failure": "EXPIRED_AUTHENTICATION"})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamError) as caught:
        source().poll()
    assert (caught.value.reason, caught.value.code) == ("auth", "EXPIRED_AUTHENTICATION")
    assert "expired" in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in caplog.text
    assert len(responses.calls) == 1  # not retried


@responses.activate
def test_a_malformed_amount_fails_the_poll_and_keeps_the_state():
    mock_account(responses, deals=DEALS[:4] + [deal("9", "closedwon", "lots", 9, closed_days=1)]
                 + DEALS[5:])
    hubspot = source()
    with pytest.raises(ValueError, match="the amount of deal 9 is 'lots', not a number"):
        hubspot.poll()
    assert hubspot._state.deals == {}  # nothing half-kept


def test_pace_waits_the_interval_once_none_is_left():
    assert pace({"X-HubSpot-RateLimit-Remaining": "0",
                 "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}) == 10.0
    assert pace({"X-HubSpot-RateLimit-Remaining": "12",
                 "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}) is None
    assert pace({}) is None  # search responses carry no rate headers


@responses.activate
def test_the_client_holds_back_when_hubspot_says_the_allowance_is_spent():
    mock_account(responses)
    responses.replace(responses.GET, f"{API}/crm/v3/pipelines/deals", json=PIPELINES, headers={
        "X-HubSpot-RateLimit-Max": "190", "X-HubSpot-RateLimit-Remaining": "0",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"})
    slept = []
    source(sleep=slept.append).poll()
    assert slept and 9.5 < slept[0] <= 10.0


# --- schema drift: a field the KPIs read, gone or of another type, fails the poll ------

def _drop(obj, name):
    props = dict(obj["properties"])
    del props[name]
    return {**obj, "properties": props}


def _set(obj, name, value):
    return {**obj, "properties": {**obj["properties"], name: value}}


def _stage_metadata(metadata):
    pipelines = json.loads(json.dumps(PIPELINES))
    pipelines["results"][0]["stages"][2]["metadata"] = metadata  # closedwon
    return pipelines


@pytest.mark.parametrize("deals,pipelines,message", [
    ([_drop(DEALS[5], "dealstage")] + DEALS[6:], PIPELINES, "deal 6 has no dealstage property"),
    ([_drop(DEALS[5], "closedate")] + DEALS[6:], PIPELINES, "deal 6 has no closedate property"),
    ([_set(DEALS[5], "closedate", None)] + DEALS[6:], PIPELINES,
     "deal 6 is closed but has no closedate"),
    ([_set(DEALS[5], "amount", {"value": 40000})] + DEALS[6:], PIPELINES,
     "the amount of deal 6 is"),
    ([_set(DEALS[5], "pipeline", "999")] + DEALS[6:], PIPELINES,
     "deal 6 is in pipeline '999', which the pipelines endpoint does not list"),
    ([_set(DEALS[5], "dealstage", "closedwon2")] + DEALS[6:], PIPELINES,
     "deal 6 is in stage 'closedwon2', which pipeline 'default' does not have"),
    ([_set(DEALS[5], "createdate", 1795000000000)] + DEALS[6:], PIPELINES, "is not a date"),
    ([_set(DEALS[5], "deal_currency_code", 978)] + DEALS[6:], PIPELINES,
     "deal 6 has currency 978"),
    (DEALS, _stage_metadata({"probability": "1.0"}), "has isClosed None"),
    (DEALS, _stage_metadata({"isClosed": "true"}), "has probability None"),
    (DEALS, _stage_metadata({"isClosed": "true", "probability": "100"}), "has probability '100'"),
])
def test_a_drifted_field_fails_the_poll_instead_of_counting_wrong(deals, pipelines, message):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{API}/crm/v3/pipelines/deals", json=pipelines)
        rsps.get(f"{API}/account-info/v3/details", json=ACCOUNT)
        rsps.get(f"{API}/crm/v3/objects/deals", json={"results": deals})
        rsps.add_callback("POST", f"{API}/crm/v3/objects/contacts/search",
                          callback=lambda r: search_results(r, CONTACTS))
        hubspot = source()
        with pytest.raises(UpstreamDataError, match=message):
            hubspot.poll()
        assert hubspot._state.full_at is None  # nothing kept from the bad read


def test_a_contact_without_createdate_fails_the_poll():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_account(rsps, contacts=[_set(CONTACTS[0], "createdate", None)])
        with pytest.raises(UpstreamDataError, match="contact 101 has no createdate"):
            source().poll()


def test_what_hubspot_legitimately_leaves_out_is_read_as_documented():
    # No amount (null or ""), no currency (the portal's), no stage-entry date (creation):
    # these are deals like any other, not drift.
    quiet = [_set(DEALS[5], "amount", None), _drop(DEALS[6], "deal_currency_code")
             if "deal_currency_code" in DEALS[6]["properties"] else DEALS[6],
             _set(DEALS[7], "hs_v2_date_entered_current_stage", None)]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_account(rsps, deals=quiet + DEALS[:5])
        samples = source().poll()
    assert one(samples, "sales_deals_won", window="30d") == 2
    assert one(samples, "sales_won_amount", window="30d") == 60000
