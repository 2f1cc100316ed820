"""HubSpot fetching through the real HTTP client against `responses` mocks in HubSpot's shapes:
list cursors, and searches sliced at the 10,000-result cap."""

from __future__ import annotations

import json

import pytest
import responses

from exporter.http import HttpClient, UpstreamError
from exporter.sources.base import UpstreamDataError
from exporter.sources.hubspot import fetch

API = "https://api.hubapi.com"
TOKEN = "pat-eu1-11111111-2222-3333-4444-555555555555"


def client() -> HttpClient:
    return HttpClient("hubspot", API, headers={"Authorization": f"Bearer {TOKEN}"},
                      sleep=lambda _: None, max_retries=1)


def deal(i: int, modified_ms: int) -> dict:
    return {"id": str(i), "properties": {"hs_lastmodifieddate": str(modified_ms), "amount": "100"},
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
            "archived": False}


@responses.activate
def test_pipelines_come_as_results_with_string_metadata():
    responses.get(f"{API}/crm/v3/pipelines/deals", json={"results": [{
        "id": "default", "label": "Sales Pipeline", "displayOrder": 0, "archived": False,
        "stages": [{"id": "closedwon", "label": "Closed won", "displayOrder": 5,
                    "metadata": {"isClosed": "true", "probability": "1.0"}}]}]})
    [pipeline] = fetch.pipelines(client())
    assert pipeline["stages"][0]["metadata"]["probability"] == "1.0"


@responses.activate
def test_the_list_endpoint_follows_after_cursors():
    responses.get(f"{API}/crm/v3/objects/deals", json={
        "results": [deal(1, 1), deal(2, 2)], "paging": {"next": {"after": "2", "link": "x"}}})
    responses.get(f"{API}/crm/v3/objects/deals", json={"results": [deal(3, 3)]})
    ids = [d["id"] for d in fetch.list_objects(client(), "deals", ["amount", "dealstage"])]
    assert ids == ["1", "2", "3"]
    first, second = (c.request.url for c in responses.calls)
    assert "limit=100" in first and "properties=amount%2Cdealstage" in first
    assert "after=2" in second and "after" not in first


@responses.activate
def test_a_search_past_10000_results_is_sliced_by_its_date():
    """12,000 deals changed since `since`: the first query pages to 10,000 (50 pages of
    200), the second starts again from the last date seen; none is lost."""
    base = 1_800_000_000_000
    everything = [deal(i, base + i * 1000) for i in range(12_000)]
    bodies = []

    def search(request):
        body = json.loads(request.body)
        bodies.append(body)
        [flt] = body["filterGroups"][0]["filters"]
        start = int(flt["value"])
        matching = [d for d in everything if int(d["properties"]["hs_lastmodifieddate"]) >= start]
        after = int(body.get("after", 0))
        if after + body["limit"] > fetch.SEARCH_CAP:
            return 400, {}, json.dumps({"status": "error", "category": "VALIDATION_ERROR",
                                        "message": "paging past 10,000 results"})
        page = matching[after:after + body["limit"]]
        reply = {"total": len(matching), "results": page}
        if after + len(page) < len(matching):
            reply["paging"] = {"next": {"after": str(after + len(page))}}
        return 200, {}, json.dumps(reply)

    responses.add_callback(responses.POST, f"{API}/crm/v3/objects/deals/search", callback=search)
    found = list(fetch.search_since(client(), "deals", "hs_lastmodifieddate", base // 1000,
                                    ["amount"]))
    assert {d["id"] for d in found} == {str(i) for i in range(12_000)}
    assert len(bodies) == 50 + 11  # 10,000 in the first slice, 2,001 (one repeat) in the second
    assert bodies[0]["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    assert bodies[50]["filterGroups"][0]["filters"][0]["value"] == str(base + 9_999 * 1000)
    assert "after" not in bodies[50]


@responses.activate
def test_a_search_that_cannot_be_sliced_is_a_data_error():
    same = [deal(i, 5_000) for i in range(200)]

    def page(request):  # 20,000 deals modified at one moment, 200 a page
        after = int(json.loads(request.body).get("after", 0)) + 200
        return 200, {}, json.dumps({"total": 20_000, "results": same,
                                    "paging": {"next": {"after": str(after)}}})

    responses.add_callback(responses.POST, f"{API}/crm/v3/objects/deals/search", callback=page)
    with pytest.raises(UpstreamDataError, match="cannot slice"):
        list(fetch.search_since(client(), "deals", "hs_lastmodifieddate", 0, []))


@responses.activate
def test_an_expired_token_is_an_auth_error_without_the_token():
    responses.get(f"{API}/crm/v3/pipelines/deals", status=401,
                  headers={"X-HubSpot-Auth-Failure": "401 Unauthorized"},
                  json={"status": "error", "category": "EXPIRED_AUTHENTICATION",
                        "message": "The OAuth token used to make this call expired 3 second(s) ago.",
                        "correlationId": "2f1e"})
    with pytest.raises(UpstreamError) as caught:
        fetch.pipelines(client())
    assert caught.value.reason == "auth" and TOKEN not in str(caught.value)


@pytest.mark.parametrize("value,ms", [("2026-11-23T10:00:00Z", 1_795_428_000_000),
                                      ("2026-11-23T10:00:00.250Z", 1_795_428_000_250),
                                      ("1795428000000", 1_795_428_000_000), ("", None), (None, None)])
def test_dates_as_hubspot_sends_them(value, ms):
    assert fetch.timestamp_ms(value) == ms


def test_a_date_that_is_not_one_is_a_data_error():
    with pytest.raises(UpstreamDataError):
        fetch.timestamp_ms("yesterday")
