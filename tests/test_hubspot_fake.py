"""The fake HubSpot over real sockets, with the real HTTP client and the HubSpot fetch
functions as its client: the company's pipelines, deals and leads in HubSpot's shapes,
list cursors, searches (filters, sorts, the 10,000-result cap), the search and
10-second rate limits, tokens, deletes and touches."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import requests

from exporter.http import HttpClient, UpstreamError
from exporter.secrets import Secret
from exporter.simulator.crm_company import DAY, CrmProfile, generate_crm, midnight
from exporter.simulator.hubspot_fake import DEFAULT_TOKEN, SEARCH_CAP, FakeHubSpot
from exporter.sources.hubspot import fetch
from exporter.sources.hubspot.source import (DEAL_PROPERTIES, HubSpotConfig, HubSpotSource,
                                             make_client, pace)

NOW = int(time.time()) // 60 * 60
DEAL_KEYS = DEAL_PROPERTIES + ["hs_is_closed", "hs_is_closed_won", "hs_object_id"]


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def company():
    return generate_crm(seed=9, now=NOW)


@pytest.fixture
def fake(company):
    with FakeHubSpot(company, search_per_second=None) as server:
        yield server


def client(fake: FakeHubSpot, token: str | None = None, **options) -> HttpClient:
    options = {"sleep": lambda _: None, "max_retries": 0, **options}
    return HttpClient("hubspot", fake.url,
                      headers={"Authorization": f"Bearer {token or fake.access_token}"}, **options)


def post_search(fake: FakeHubSpot, kind: str, body: dict, token: str | None = None):
    return requests.post(f"{fake.url}/crm/v3/objects/{kind}/search", json=body,
                         headers={"Authorization": f"Bearer {token or fake.access_token}"})


def get(fake: FakeHubSpot, path: str, token: str | None = None, **params):
    return requests.get(f"{fake.url}{path}", params=params,
                        headers={"Authorization": f"Bearer {token or fake.access_token}"})


def seconds(value) -> int | None:
    return fetch.seconds(value)


# --- pipelines, account, list ---------------------------------------------------------


def test_pipelines_are_the_company_stages_with_string_metadata(fake, company):
    pipelines = fetch.pipelines(client(fake))
    assert [p["id"] for p in pipelines] == [p.id for p in company.pipelines]
    for served, pipeline in zip(pipelines, company.pipelines):
        assert served["label"] == pipeline.label and served["archived"] is False
        assert [s["id"] for s in served["stages"]] == [s.id for s in pipeline.stages]
        for stage, original in zip(served["stages"], pipeline.stages):
            assert stage["metadata"] == {"isClosed": "true" if original.is_closed else "false",
                                         "probability": str(original.probability)}
            assert stage["label"] == original.label and stage["createdAt"].endswith("Z")
    won = [s for p in pipelines for s in p["stages"] if s["id"] == "closedwon"]
    assert all(s["metadata"] == {"isClosed": "true", "probability": "1.0"} for s in won)


def test_account_details_name_the_company_currency(fake):
    details = client(fake).get_json("/account-info/v3/details")
    assert details["portalId"] == 62515 and details["companyCurrency"] == "USD"
    assert details["additionalCurrencies"] == ["EUR", "GBP"]
    assert details["utcOffsetMilliseconds"] == -18_000_000 and details["timeZone"] == "US/Eastern"


def test_the_list_endpoint_returns_every_deal_once_across_pages(fake, company):
    deals = list(fetch.list_objects(client(fake), "deals", DEAL_PROPERTIES + ["no_such_property"]))
    ids = [d["id"] for d in deals]
    assert len(ids) == len(set(ids)) == len(company.deals) > 400
    assert set(ids) == {str(d.id) for d in company.deals}
    lists = [q for m, p, q in fake.requests if p == "/crm/v3/objects/deals"]
    assert len(lists) == -(-len(company.deals) // 100)
    assert "after" not in lists[0] and all(q["limit"] == ["100"] for q in lists)
    for deal in deals:
        assert set(deal["properties"]) == set(DEAL_PROPERTIES) | {"hs_object_id"}
        assert deal["archived"] is False and deal["createdAt"] == deal["properties"]["createdate"]
    page = get(fake, "/crm/v3/objects/deals", limit=100).json()
    assert page["paging"]["next"]["link"].startswith(f"{fake.url}/crm/v3/objects/deals?")
    last = get(fake, "/crm/v3/objects/deals", limit=100, after=ids[-2]).json()
    assert [d["id"] for d in last["results"]] == [ids[-1]] and "paging" not in last


def test_a_list_page_above_100_is_a_400(fake):
    with pytest.raises(UpstreamError) as caught:
        client(fake).get_json("/crm/v3/objects/deals", params={"limit": 101})
    assert caught.value.status == 400 and caught.value.code == "VALIDATION_ERROR"


def test_deals_carry_the_company_values_in_hubspot_strings(fake, company):
    served = {d["id"]: d["properties"]
              for d in fetch.list_objects(client(fake), "deals", DEAL_KEYS)}
    for deal in company.deals:
        props = served[str(deal.id)]
        stage = company.pipeline(deal.pipeline).stage(deal.stage)
        assert props["dealstage"] == deal.stage and props["pipeline"] == deal.pipeline
        assert props["deal_currency_code"] == deal.currency.upper()
        if deal.amount is None:
            assert props["amount"] in (None, "")
        else:
            assert Decimal(props["amount"]) == deal.amount and "E" not in props["amount"]
        assert seconds(props["createdate"]) == deal.created
        assert seconds(props["hs_lastmodifieddate"]) == deal.modified
        assert seconds(props["hs_v2_date_entered_current_stage"]) == deal.stage_changed
        assert props["hs_is_closed"] == str(stage.is_closed).lower()
        assert props["hs_is_closed_won"] == str(stage.is_won).lower()
        if deal.closed is not None:
            assert props["closedate"] == time.strftime("%Y-%m-%dT00:00:00.000Z",
                                                       time.gmtime(deal.closed))
        else:
            assert seconds(props["closedate"]) > company.now
        assert len(props["createdate"]) == len("2026-11-01T09:30:00.123Z")
    amounts = [served[str(d.id)]["amount"] for d in company.deals if d.amount is None]
    assert None in amounts and "" in amounts  # HubSpot sends both for a deal without amount


def test_contacts_carry_the_lead_dates_and_lifecycle_stage(fake, company):
    lead = next(l for l in company.leads if l.opportunity is not None and l.first_touch)
    props = client(fake).get_json(f"/crm/v3/objects/contacts/{lead.id}", params={
        "properties": "email,lifecyclestage,hs_v2_date_entered_lead,"
                      "hs_v2_date_entered_marketingqualifiedlead,"
                      "hs_lifecyclestage_salesqualifiedlead_date,hs_v2_date_entered_opportunity,"
                      "hs_v2_date_entered_customer,hs_sa_first_engagement_date"})["properties"]
    assert props["email"] == lead.email and props["lifecyclestage"] == "opportunity"
    assert seconds(props["hs_v2_date_entered_lead"]) == lead.created
    assert seconds(props["hs_v2_date_entered_marketingqualifiedlead"]) == lead.mql
    assert seconds(props["hs_lifecyclestage_salesqualifiedlead_date"]) == lead.sql
    assert props["hs_v2_date_entered_opportunity"].endswith("T00:00:00.000Z")
    assert seconds(props["hs_v2_date_entered_opportunity"]) == lead.opportunity
    assert props["hs_v2_date_entered_customer"] is None
    assert seconds(props["hs_sa_first_engagement_date"]) == lead.first_touch
    assert seconds(props["lastmodifieddate"]) == lead.modified
    plain = next(l for l in company.leads if l.mql is None)
    assert fake.properties("contacts", plain.id)["lifecyclestage"] == "lead"


# --- search ---------------------------------------------------------------------------


def test_search_since_finds_exactly_the_mqls_of_the_last_30_days(fake, company):
    since = NOW - 30 * DAY
    found = list(fetch.search_since(client(fake), "contacts",
                                    "hs_v2_date_entered_marketingqualifiedlead", since,
                                    ["email", "hs_v2_date_entered_marketingqualifiedlead"]))
    expected = {str(l.id) for l in company.leads if l.mql is not None and l.mql >= since}
    assert [c["id"] for c in found] and {c["id"] for c in found} == expected
    assert len(found) == len(expected)
    dates = [fetch.timestamp_ms(c["properties"]["hs_v2_date_entered_marketingqualifiedlead"])
             for c in found]
    assert dates == sorted(dates)  # sorted by the property, as asked
    assert all(set(c["properties"]) >= {"hs_object_id", "createdate", "lastmodifieddate", "email"}
               for c in found)


def test_search_ors_groups_ands_filters_and_sorts(fake, company):
    body = {"filterGroups": [
        {"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"},
                     {"propertyName": "amount", "operator": "GTE", "value": "50000"}]},
        {"filters": [{"propertyName": "pipeline", "operator": "EQ", "value": "enterprise"},
                     {"propertyName": "deal_currency_code", "operator": "IN",
                      "values": ["eur", "gbp"]}]}],
        "sorts": [{"propertyName": "amount", "direction": "DESCENDING"}],
        "properties": ["amount", "dealstage"], "limit": 200}
    page = post_search(fake, "deals", body).json()
    expected = [d for d in company.deals
                if (d.stage == "closedwon" and d.amount is not None and d.amount >= 50000)
                or (d.pipeline == "enterprise" and d.currency in ("eur", "gbp"))]
    assert page["total"] == len(expected) and "paging" not in page
    assert {r["id"] for r in page["results"]} == {str(d.id) for d in expected}
    amounts = [Decimal(r["properties"]["amount"]) for r in page["results"]
               if r["properties"]["amount"]]
    assert amounts == sorted(amounts, reverse=True)
    assert [r for r in page["results"] if not r["properties"]["amount"]] \
        == page["results"][len(amounts):]  # no amount: last

    no_amount = post_search(fake, "deals", {"filterGroups": [{"filters": [
        {"propertyName": "amount", "operator": "NOT_HAS_PROPERTY"}]}]}).json()
    assert no_amount["total"] == sum(d.amount is None for d in company.deals)
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 10 * DAY))
    recent = post_search(fake, "deals", {"filterGroups": [{"filters": [
        {"propertyName": "createdate", "operator": "GT", "value": iso}]}], "limit": 0}).json()
    assert recent["total"] == sum(d.created > NOW - 10 * DAY for d in company.deals)


@pytest.mark.parametrize("groups", [
    [{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "x"}]}] * 6,
    [{"filters": [{"propertyName": "dealstage", "operator": "NEQ", "value": "x"}] * 7}],
    [{"filters": [{"propertyName": "dealstage", "operator": "NEQ", "value": "x"}] * 5}] * 4,
    [{"filters": [{"propertyName": "dealstage", "operator": "LIKE", "value": "x"}]}],
    [{"filters": [{"propertyName": "createdate", "operator": "GTE", "value": "yesterday"}]}],
])
def test_search_limits_on_filters_are_validation_errors(fake, groups):
    reply = post_search(fake, "deals", {"filterGroups": groups})
    assert reply.status_code == 400 and reply.json()["category"] == "VALIDATION_ERROR"


def test_a_search_page_above_200_is_a_400(fake):
    reply = post_search(fake, "deals", {"limit": 201})
    assert reply.status_code == 400 and reply.json()["status"] == "error"


def test_searching_past_10000_results_is_a_400_and_search_since_slices_past_it():
    """~13,000 leads created since `since`: one query can page through 10,000 of them,
    a page reaching beyond is refused; search_since starts a new query from the last
    date seen and finds every lead once (one or two at the seam may repeat)."""
    big = generate_crm(seed=3, now=NOW, profile=CrmProfile(leads_per_day=110, history_days=120))
    assert len(big.leads) > 12_000
    with FakeHubSpot(big, search_per_second=None) as fake:
        since = NOW - 121 * DAY
        body = {"filterGroups": [{"filters": [{"propertyName": "createdate", "operator": "GTE",
                                               "value": str(since * 1000)}]}],
                "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}], "limit": 200}
        edge = post_search(fake, "contacts", {**body, "after": "9800"}).json()
        assert edge["total"] == len(big.leads) and edge["paging"]["next"]["after"] == "10000"
        for after, limit in (("9900", 200), ("10000", 1)):
            refused = post_search(fake, "contacts", {**body, "after": after, "limit": limit})
            assert refused.status_code == 400
            error = refused.json()
            assert error["category"] == "VALIDATION_ERROR" and error["status"] == "error"
            assert error["message"] == "There was a problem with the request."
            assert refused.headers["X-HubSpot-Correlation-Id"] == error["correlationId"]
        with pytest.raises(UpstreamError) as caught:
            client(fake).request_json("POST", "/crm/v3/objects/contacts/search",
                                      json={**body, "after": "9900"})
        assert caught.value.reason == "http_4xx" and caught.value.code == "VALIDATION_ERROR"

        fake.reset_log()
        found = list(fetch.search_since(client(fake), "contacts", "createdate", since,
                                        ["email", "createdate"]))
        by_id = {c["id"]: c for c in found}
        assert set(by_id) == {str(l.id) for l in big.leads}
        assert len(found) - len(by_id) <= 2
        for lead in big.leads:
            props = by_id[str(lead.id)]["properties"]
            assert props["email"] == lead.email and seconds(props["createdate"]) == lead.created
        searches = [b for b in fake.bodies if isinstance(b, dict)]
        assert [i for i, b in enumerate(searches) if "after" not in b] == [0, SEARCH_CAP // 200]
        assert all(int(b.get("after", 0)) + b["limit"] <= SEARCH_CAP for b in searches)
        tenth_thousand = sorted(l.created for l in big.leads)[SEARCH_CAP - 1]
        second_start = int(searches[SEARCH_CAP // 200]["filterGroups"][0]["filters"][0]["value"])
        assert second_start // 1000 == tenth_thousand


# --- rate limits ----------------------------------------------------------------------


def test_the_search_limit_answers_429_with_hubspots_body(company):
    clock = Clock()
    with FakeHubSpot(company, search_per_second=5, clock=clock) as fake:
        replies = [post_search(fake, "deals", {"limit": 1}) for _ in range(6)]
        assert [r.status_code for r in replies] == [200] * 5 + [429]
        body = replies[-1].json()
        assert body == {"status": "error", "message": "You have reached your secondly limit.",
                        "errorType": "RATE_LIMIT", "correlationId": body["correlationId"],
                        "policyName": "SECONDLY"}
        # Search responses carry no rate-limit headers (HubSpot documents that).
        assert not [h for r in replies for h in r.headers if h.startswith("X-HubSpot-RateLimit")]
        assert get(fake, "/crm/v3/pipelines/deals").status_code == 200  # other endpoints go on
        clock.t += 1.0
        assert post_search(fake, "deals", {"limit": 1}).status_code == 200


def test_the_http_client_retries_through_the_search_limit(company):
    with FakeHubSpot(company) as fake:  # 5 searches a second, on the real clock
        http = client(fake, max_retries=4, jitter=lambda: 1.0, sleep=time.sleep)
        for _ in range(8):
            page = http.request_json("POST", "/crm/v3/objects/deals/search", json={"limit": 1})
            assert page["total"] == len(company.deals)
        assert http.stats.snapshot()["retries"] >= 1
        assert fake.request_count == 8 + http.stats.snapshot()["retries"]


def test_rate_limit_headers_count_down_over_a_rolling_10_seconds(company):
    clock = Clock()
    with FakeHubSpot(company, burst_limit=3, daily_limit=100, clock=clock) as fake:
        replies = [get(fake, "/crm/v3/pipelines/deals") for _ in range(3)]
        assert [r.headers["X-HubSpot-RateLimit-Remaining"] for r in replies] == ["2", "1", "0"]
        assert [r.headers["X-HubSpot-RateLimit-Daily-Remaining"] for r in replies] \
            == ["99", "98", "97"]
        first = replies[0].headers
        assert first["X-HubSpot-RateLimit-Max"] == "3"
        assert first["X-HubSpot-RateLimit-Daily"] == "100"
        assert first["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert first["X-HubSpot-RateLimit-Secondly"] == "1"
        assert first["X-HubSpot-RateLimit-Secondly-Remaining"] == "0"
        assert pace(replies[-1].headers) == 10.0 and pace(first) is None

        clock.t += 5
        refused = get(fake, "/crm/v3/objects/deals", limit=1)
        assert refused.status_code == 429
        assert refused.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert refused.json()["policyName"] == "TEN_SECONDLY_ROLLING"
        assert refused.json()["message"] == "You have reached your ten_secondly_rolling limit."
        with pytest.raises(UpstreamError) as caught:
            client(fake).get_json("/crm/v3/pipelines/deals")
        assert caught.value.reason == "rate_limited"

        clock.t += 5.001  # the window has moved past the first three
        again = get(fake, "/crm/v3/pipelines/deals")
        assert again.status_code == 200 and again.headers["X-HubSpot-RateLimit-Remaining"] == "2"
        assert again.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "96"


def test_faults_and_the_general_rate_limit_answer_in_hubspots_shapes(fake):
    fake.fail_next(1, status=500)
    http = client(fake, max_retries=2)
    assert fetch.pipelines(http)
    assert http.stats.snapshot()["errors"]["http_5xx"] == 1
    fake.serve_malformed_next()
    with pytest.raises(UpstreamError) as caught:
        fetch.pipelines(http)
    assert caught.value.reason == "malformed"
    fake.fail_next(1, status=401)
    assert get(fake, "/crm/v3/pipelines/deals").json()["category"] == "INVALID_AUTHENTICATION"
    fake.rate_limit(1)
    assert get(fake, "/crm/v3/pipelines/deals").status_code == 200
    limited = get(fake, "/crm/v3/pipelines/deals")
    assert limited.status_code == 429 and limited.json()["policyName"] == "TEN_SECONDLY_ROLLING"


# --- tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer pat-na1-00000000-0000-0000-0000-000000000000",
                                    f"Basic {DEFAULT_TOKEN}"])
def test_a_missing_or_wrong_token_is_a_401_invalid_authentication(fake, header):
    reply = requests.get(f"{fake.url}/crm/v3/pipelines/deals",
                         headers={"Authorization": header} if header else {})
    assert reply.status_code == 401
    assert reply.headers["X-HubSpot-Auth-Failure"] == "401 Unauthorized"
    body = reply.json()
    assert body["category"] == "INVALID_AUTHENTICATION" and body["status"] == "error"
    assert body["message"].startswith("Authentication credentials not found.")
    assert body["correlationId"] == reply.headers["X-HubSpot-Correlation-Id"]
    assert "X-HubSpot-RateLimit-Remaining" not in reply.headers


def test_a_bad_token_is_an_auth_error_through_the_client(fake):
    with pytest.raises(UpstreamError) as caught:
        fetch.pipelines(client(fake, token="pat-na1-wrong"))
    assert caught.value.reason == "auth" and caught.value.code == "INVALID_AUTHENTICATION"
    assert "pat-na1-wrong" not in str(caught.value)


def test_an_expired_token_until_a_new_one_is_issued(fake):
    old = fake.access_token
    fake.expire_token()
    reply = get(fake, "/crm/v3/pipelines/deals")
    assert reply.status_code == 401 and reply.headers["X-HubSpot-Auth-Failure"]
    assert reply.json()["category"] == "EXPIRED_AUTHENTICATION"
    assert reply.json()["message"].startswith("The OAuth token used to make this call expired ")
    with pytest.raises(UpstreamError) as caught:
        fetch.pipelines(client(fake))
    assert caught.value.reason == "auth" and caught.value.code == "EXPIRED_AUTHENTICATION"
    new = fake.renew_token()
    assert new != old and new.startswith("pat-na1-")
    assert fetch.pipelines(client(fake, token=new))
    assert get(fake, "/crm/v3/pipelines/deals", token=old).json()["category"] \
        == "INVALID_AUTHENTICATION"


# --- changes --------------------------------------------------------------------------


def test_deleted_objects_leave_list_and_search(fake, company):
    deal, lead = company.deals[2], company.leads[5]
    fake.delete_deal(deal.id)
    fake.delete_contact(str(lead.id))
    http = client(fake)
    listed = {d["id"] for d in fetch.list_objects(http, "deals", ["dealstage"])}
    assert str(deal.id) not in listed and len(listed) == len(company.deals)
    searched = {d["id"] for d in fetch.search_since(http, "deals", "createdate", 0, [])}
    assert str(deal.id) not in searched and len(searched) == len(company.deals)
    contacts = {c["id"] for c in fetch.search_since(http, "contacts", "createdate", 0, [])}
    assert str(lead.id) not in contacts and lead not in company.leads
    archived = get(fake, "/crm/v3/objects/deals", archived="true").json()["results"]
    assert [(d["id"], d["archived"]) for d in archived] == [(str(deal.id), True)]
    assert get(fake, f"/crm/v3/objects/deals/{deal.id}").status_code == 404
    with pytest.raises(KeyError):
        fake.delete_deal(deal.id)


def test_a_touched_deal_shows_in_the_next_incremental_search(fake, company):
    deal = next(d for d in company.deals if d.closed is None and d.pipeline == "default")
    http = client(fake)
    before = fake.properties("deals", deal.id)
    at = NOW + 3600
    fake.touch_deal(deal.id, at=at, stage="closedwon", amount="75000")
    changed = list(fetch.search_since(http, "deals", "hs_lastmodifieddate", NOW + 1, DEAL_KEYS))
    assert [d["id"] for d in changed] == [str(deal.id)]
    props = changed[0]["properties"]
    assert props["dealstage"] == "closedwon" and props["hs_is_closed_won"] == "true"
    assert props["amount"] == "75000" and before["amount"] != "75000"
    assert seconds(props["hs_lastmodifieddate"]) == at
    assert seconds(props["hs_v2_date_entered_current_stage"]) == at
    assert seconds(props["closedate"]) == midnight(at) and deal.closed == midnight(at)
    assert changed[0]["updatedAt"] == props["hs_lastmodifieddate"]

    lead = next(l for l in company.leads if l.mql is not None and l.sql is None)
    fake.touch_contact(lead.id, at=at + 60, sql=at + 60)
    contacts = list(fetch.search_since(http, "contacts", "lastmodifieddate", at,
                                       ["lifecyclestage", "hs_v2_date_entered_salesqualifiedlead"]))
    assert [c["id"] for c in contacts] == [str(lead.id)]
    assert contacts[0]["properties"]["lifecyclestage"] == "salesqualifiedlead"
    with pytest.raises(ValueError):
        fake.touch_deal(deal.id, stage="security")  # not a stage of its pipeline
    with pytest.raises(TypeError):
        fake.touch_deal(deal.id, created=0)


# --- the source over the fake -----------------------------------------------------------


def test_the_hubspot_source_reads_the_whole_company(fake, company):
    config = HubSpotConfig(access_token=Secret(fake.access_token), base_url=fake.url)
    source = HubSpotSource(config, {"usd": Decimal(1), "eur": Decimal("1.1"),
                                    "gbp": Decimal("1.3")},
                           clock=lambda: NOW, client=make_client(config, rate_limit=None))
    data = source.read(NOW)
    assert len(data.deals) == len(company.deals) and not data.unconverted
    assert {lead.id for lead in data.leads if lead.mql} >= {
        str(l.id) for l in company.leads if l.mql is not None and l.mql > NOW - 30 * DAY}
