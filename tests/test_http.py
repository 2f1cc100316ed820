"""Tests for exporter.http (HttpClient) and exporter.ratelimit (RateLimiter).

The real client runs against `responses` mocks; `sleep` is a recorder so the
tests are fast and can assert the exact delays the client chose.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import http.server
import logging
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from exporter.http import ERROR_REASONS, HttpClient, RequestStats, UpstreamError
from exporter.ratelimit import RateLimiter
from concurrency import run_concurrently

BASE = "https://api.example.test"
API_KEY = "sk_test_abcd1234efgh"


class Recorder:
    """Stands in for time.sleep; remembers every delay."""

    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleep():
    return Recorder()


@pytest.fixture
def mocked():
    with responses.RequestsMock() as rsps:
        yield rsps


def make_client(sleep, **kwargs) -> HttpClient:
    kwargs.setdefault("jitter", lambda: 1.0)  # deterministic backoff: the full window
    return HttpClient("stripe", BASE, sleep=sleep, **kwargs)


# -- success ----------------------------------------------------------------

def test_get_json_sends_params_including_repeated_keys(mocked, sleep):
    mocked.get(f"{BASE}/v1/subscriptions", json={"data": [1, 2]})
    client = make_client(sleep)

    body = client.get_json("/v1/subscriptions", [("status", "active"), ("expand[]", "data.customer"),
                                                 ("expand[]", "data.plan")])

    assert body == {"data": [1, 2]}
    query = parse_qs(urlsplit(mocked.calls[0].request.url).query)
    assert query == {"status": ["active"], "expand[]": ["data.customer", "data.plan"]}
    assert sleep.calls == []
    assert client.stats.snapshot()["requests"] == 1


def test_dict_params_and_session_headers_are_sent(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", json={"ok": True})
    client = make_client(sleep, headers={"Authorization": f"Bearer {API_KEY}"})

    assert client.get_json("v1/prices", {"limit": 100}) == {"ok": True}
    request = mocked.calls[0].request
    assert parse_qs(urlsplit(request.url).query) == {"limit": ["100"]}
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_base_url_path_prefix_is_kept(mocked, sleep):
    mocked.get("https://acme.my.salesforce.test/services/data/v59.0/query", json={"records": []})
    client = HttpClient("salesforce", "https://acme.my.salesforce.test/services/data/v59.0/", sleep=sleep)

    assert client.get_json("/query") == {"records": []}


def test_absolute_url_path_is_used_as_is(mocked, sleep):
    url = "https://acme.my.salesforce.test/services/data/v59.0/query/01gXX-2000"
    mocked.get(url, json={"records": [{"Id": "1"}], "done": True})
    client = HttpClient("salesforce", "https://login.salesforce.test", sleep=sleep)

    assert client.get_json(url) == {"records": [{"Id": "1"}], "done": True}
    assert mocked.calls[0].request.url == url


def test_post_sends_json_and_per_request_headers(mocked, sleep):
    mocked.post(f"{BASE}/v1/analytics/metrics", json={"items": []})
    client = make_client(sleep)

    body = client.request_json("post", "/v1/analytics/metrics", json={"metrics": ["delivered_count"]},
                               headers={"X-Trace": "1"})

    assert body == {"items": []}
    request = mocked.calls[0].request
    assert request.method == "POST"
    assert request.body == b'{"metrics": ["delivered_count"]}'
    assert request.headers["X-Trace"] == "1"


def test_post_form_data(mocked, sleep):
    mocked.post(f"{BASE}/services/oauth2/token", json={"access_token": "tok"})
    client = make_client(sleep)

    body = client.request_json("POST", "/services/oauth2/token", data={"grant_type": "client_credentials"})

    assert body == {"access_token": "tok"}
    assert mocked.calls[0].request.body == "grant_type=client_credentials"


def test_204_no_content_returns_none(mocked, sleep):
    mocked.post(f"{BASE}/v1/thing", status=204)
    assert make_client(sleep).request_json("POST", "/v1/thing") is None


def test_timeouts_are_connect_and_read(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", json={})
    client = make_client(sleep, connect_timeout=3.0, read_timeout=12.0)

    client.get_json("/v1/prices")

    assert mocked.calls[0].request.req_kwargs["timeout"] == (3.0, 12.0)


# -- retries ----------------------------------------------------------------

def test_retries_500_then_succeeds(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=500, json={"error": {"message": "boom"}})
    mocked.get(f"{BASE}/v1/prices", json={"data": []})
    client = make_client(sleep, backoff_base=0.5)

    assert client.get_json("/v1/prices") == {"data": []}
    assert len(mocked.calls) == 2
    assert sleep.calls == [0.5]
    stats = client.stats.snapshot()
    assert stats["requests"] == 2
    assert stats["retries"] == 1
    assert stats["errors"]["http_5xx"] == 1  # counted even though the retry succeeded


def test_retries_exhausted_raises_http_5xx(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=503, json={"error": {"message": "try later"}})
    client = make_client(sleep, max_retries=2)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices", {"limit": 10})

    err = info.value
    assert err.reason == "http_5xx"
    assert err.status == 503
    assert str(err) == "stripe: GET /v1/prices failed: HTTP 503 (http_5xx): try later"
    assert len(mocked.calls) == 3
    stats = client.stats.snapshot()
    assert stats["requests"] == 3
    assert stats["retries"] == 2
    assert stats["errors"]["http_5xx"] == 3


def test_backoff_grows_and_stays_under_cap(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=502)
    client = make_client(sleep, max_retries=6, backoff_base=1.0, backoff_cap=5.0)

    with pytest.raises(UpstreamError):
        client.get_json("/v1/prices")

    assert sleep.calls == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_uses_full_jitter(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=500)
    client = make_client(sleep, max_retries=3, backoff_base=1.0, jitter=lambda: 0.25)

    with pytest.raises(UpstreamError):
        client.get_json("/v1/prices")

    assert sleep.calls == [0.25, 0.5, 1.0]


def test_zero_retries_means_one_attempt(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=500)
    client = make_client(sleep, max_retries=0)

    with pytest.raises(UpstreamError):
        client.get_json("/v1/prices")

    assert len(mocked.calls) == 1
    assert sleep.calls == []


def test_connection_error_is_retried(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", body=requests.exceptions.ConnectionError("connection refused"))
    mocked.get(f"{BASE}/v1/prices", json={"data": []})
    client = make_client(sleep)

    assert client.get_json("/v1/prices") == {"data": []}
    assert len(mocked.calls) == 2
    stats = client.stats.snapshot()
    assert stats["errors"]["connection"] == 1
    assert stats["retries"] == 1


def test_connection_errors_exhausted_raise_connection(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", body=requests.exceptions.ConnectionError("refused"))
    client = make_client(sleep, max_retries=1)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices")

    assert info.value.reason == "connection"
    assert info.value.status is None
    assert client.stats.snapshot()["errors"]["connection"] == 2


def test_read_timeout_gives_reason_timeout(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", body=requests.exceptions.ReadTimeout("read timed out"))
    client = make_client(sleep, max_retries=2)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices")

    assert info.value.reason == "timeout"
    assert info.value.status is None
    assert len(mocked.calls) == 3  # timeouts are retried
    assert client.stats.snapshot()["errors"]["timeout"] == 3


def test_connect_timeout_is_timeout_not_connection(mocked, sleep):
    # ConnectTimeout subclasses both ConnectionError and Timeout.
    mocked.get(f"{BASE}/v1/prices", body=requests.exceptions.ConnectTimeout("connect timed out"))
    client = make_client(sleep, max_retries=0)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices")

    assert info.value.reason == "timeout"


# -- 429 and Retry-After ------------------------------------------------------

def test_429_honours_retry_after_seconds(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=429, headers={"Retry-After": "7"})
    mocked.get(f"{BASE}/v1/prices", json={"ok": True})
    client = make_client(sleep)

    assert client.get_json("/v1/prices") == {"ok": True}
    assert sleep.calls == [7.0]
    assert client.stats.snapshot()["errors"]["rate_limited"] == 1


def test_429_honours_retry_after_http_date(mocked, sleep):
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    mocked.get(f"{BASE}/v1/prices", status=429, headers={"Retry-After": when})
    mocked.get(f"{BASE}/v1/prices", json={"ok": True})
    client = make_client(sleep)

    client.get_json("/v1/prices")

    assert len(sleep.calls) == 1
    assert 18.0 <= sleep.calls[0] <= 20.0  # HTTP dates have one-second resolution


def test_429_retry_after_date_in_the_past_means_no_wait(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=429,
               headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    mocked.get(f"{BASE}/v1/prices", json={"ok": True})
    client = make_client(sleep)

    client.get_json("/v1/prices")

    assert sleep.calls == [0.0]


def test_429_huge_retry_after_is_capped(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=429, headers={"Retry-After": "86400"})
    mocked.get(f"{BASE}/v1/prices", json={"ok": True})
    client = make_client(sleep, max_retry_after=60.0)

    client.get_json("/v1/prices")

    assert sleep.calls == [60.0]


@pytest.mark.parametrize("reset,low,high", [
    (lambda: str(int(time.time()) + 12), 10.0, 12.0),  # Mailgun: the Unix time it resets
    (lambda: "5", 5.0, 5.0),                            # a delay in seconds
    (lambda: str(int(time.time() * 1000) + 8000), 6.0, 8.0),  # a Unix time in milliseconds
    (lambda: str(int(time.time()) - 30), 0.0, 0.0),     # already reset
])
def test_429_without_retry_after_honours_x_ratelimit_reset(mocked, sleep, reset, low, high):
    mocked.get(f"{BASE}/v1/prices", status=429, headers={"X-RateLimit-Reset": reset()})
    mocked.get(f"{BASE}/v1/prices", json={"ok": True})
    client = make_client(sleep)

    client.get_json("/v1/prices")

    [waited] = sleep.calls
    assert low <= waited <= high


def test_429_without_retry_after_uses_backoff(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=429)
    client = make_client(sleep, max_retries=2, backoff_base=0.5)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices")

    assert info.value.reason == "rate_limited"
    assert info.value.status == 429
    assert sleep.calls == [0.5, 1.0]


def test_429_unparseable_retry_after_falls_back_to_backoff(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=429, headers={"Retry-After": "soon-ish"})
    mocked.get(f"{BASE}/v1/prices", json={"ok": True})
    client = make_client(sleep, backoff_base=0.5)

    client.get_json("/v1/prices")

    assert sleep.calls == [0.5]


# -- Stripe-Should-Retry --------------------------------------------------------

def test_stripe_should_retry_false_stops_retry_on_500(mocked, sleep):
    mocked.get(f"{BASE}/v1/charges", status=500, headers={"Stripe-Should-Retry": "false"})
    client = make_client(sleep)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/charges")

    assert info.value.reason == "http_5xx"
    assert len(mocked.calls) == 1
    assert sleep.calls == []
    assert client.stats.snapshot()["retries"] == 0


def test_stripe_should_retry_false_stops_retry_on_429(mocked, sleep):
    mocked.get(f"{BASE}/v1/charges", status=429,
               headers={"Stripe-Should-Retry": "false", "Retry-After": "1"})
    client = make_client(sleep)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/charges")

    assert info.value.reason == "rate_limited"
    assert len(mocked.calls) == 1


def test_stripe_should_retry_true_retries_409(mocked, sleep):
    mocked.get(f"{BASE}/v1/charges", status=409, headers={"Stripe-Should-Retry": "true"},
               json={"error": {"message": "lock timeout"}})
    mocked.get(f"{BASE}/v1/charges", json={"data": []})
    client = make_client(sleep, backoff_base=0.5)

    assert client.get_json("/v1/charges") == {"data": []}
    assert len(mocked.calls) == 2
    assert sleep.calls == [0.5]
    assert client.stats.snapshot()["errors"]["http_4xx"] == 1


def test_409_without_header_is_not_retried(mocked, sleep):
    mocked.get(f"{BASE}/v1/charges", status=409)
    client = make_client(sleep)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/charges")

    assert info.value.reason == "http_4xx"
    assert info.value.status == 409
    assert len(mocked.calls) == 1


# -- 4xx, auth and secrets ------------------------------------------------------

def test_401_is_auth_not_retried_and_key_is_redacted(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=401,
               json={"error": {"message": f"Invalid API Key provided: {API_KEY}"}})
    client = make_client(sleep, headers={"Authorization": f"Bearer {API_KEY}"})

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices")

    err = info.value
    assert err.reason == "auth"
    assert err.status == 401
    assert len(mocked.calls) == 1
    assert sleep.calls == []
    assert API_KEY not in str(err)
    assert API_KEY not in repr(err)
    assert "Authorization" not in str(err)
    assert "Invalid API Key provided" in str(err)  # the upstream's reason survives
    assert client.stats.snapshot()["errors"]["auth"] == 1


def test_non_stripe_key_from_header_is_redacted_when_echoed(mocked, sleep):
    key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
    mocked.get(f"{BASE}/v3/domains", status=403, json={"message": f"Forbidden for {key}"})
    client = HttpClient("mailgun", BASE, headers={"X-Api-Key": key}, sleep=sleep)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v3/domains")

    assert info.value.reason == "auth"
    assert key not in str(info.value)
    assert "Forbidden for" in str(info.value)


def test_404_is_http_4xx_with_upstream_message(mocked, sleep):
    mocked.get(f"{BASE}/v3/domains/x/stats", status=404, json={"message": "Domain not found"})
    client = HttpClient("mailgun", BASE, sleep=sleep)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v3/domains/x/stats", {"event": "delivered"})

    assert info.value.reason == "http_4xx"
    assert str(info.value) == "mailgun: GET /v3/domains/x/stats failed: HTTP 404 (http_4xx): Domain not found"
    assert len(mocked.calls) == 1


def test_errors_carry_the_upstreams_error_code(mocked, sleep):
    mocked.get(f"{BASE}/services/data/v62.0/query", status=401,
               json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    mocked.get(f"{BASE}/crm/v3/objects/deals", status=401,
               json={"status": "error", "message": "Authentication credentials not found.",
                     "category": "INVALID_AUTHENTICATION"})
    mocked.get(f"{BASE}/v1/charges", status=400, json={"error": {"message": "No such charge"}})
    client = make_client(sleep)
    codes = []
    for path in ("/services/data/v62.0/query", "/crm/v3/objects/deals", "/v1/charges"):
        with pytest.raises(UpstreamError) as info:
            client.get_json(path)
        codes.append(info.value.code)
    assert codes == ["INVALID_SESSION_ID", "INVALID_AUTHENTICATION", None]


def test_oauth_and_salesforce_query_errors_keep_their_reason(mocked, sleep):
    mocked.post(f"{BASE}/services/oauth2/token", status=400,
                json={"error": "invalid_client", "error_description": "invalid client credentials"})
    mocked.get(f"{BASE}/services/data/v62.0/query", status=400, json=[{
        "message": "\nSELECT Id, Nope FROM Lead\n           ^\nERROR at Row:1:Column:12\n"
                   "No such column 'Nope' on entity 'Lead'.", "errorCode": "INVALID_FIELD"}])
    client = make_client(sleep)
    with pytest.raises(UpstreamError) as token:
        client.request_json("POST", "/services/oauth2/token", data={"grant_type": "x"})
    with pytest.raises(UpstreamError) as query:
        client.get_json("/services/data/v62.0/query")
    assert token.value.code == "invalid_client" and "invalid client credentials" in str(token.value)
    assert query.value.code == "INVALID_FIELD"
    assert str(query.value).endswith(": No such column 'Nope' on entity 'Lead'.")


def test_a_spent_daily_quota_fails_at_once_as_rate_limited(mocked, sleep):
    """Salesforce's REQUEST_LIMIT_EXCEEDED is a 403 that lasts for hours: no retries."""
    mocked.get(f"{BASE}/services/data/v62.0/query", status=403, json=[
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    client = make_client(sleep)
    with pytest.raises(UpstreamError) as info:
        client.get_json("/services/data/v62.0/query")
    assert (info.value.reason, info.value.status, info.value.code) == \
        ("rate_limited", 403, "REQUEST_LIMIT_EXCEEDED")
    assert len(mocked.calls) == 1 and sleep.calls == []


def test_pace_holds_the_next_request_back_as_the_upstream_asks(mocked, sleep):
    """A pace hook reads each response's headers; the next request waits that long."""
    mocked.get(f"{BASE}/a", json={}, headers={"X-Left": "0"})
    mocked.get(f"{BASE}/b", json={}, headers={"X-Left": "5"})
    mocked.get(f"{BASE}/c", json={})
    now = [100.0]

    def pace(headers):
        return 2.5 if headers.get("X-Left") == "0" else None

    client = make_client(sleep, pace=pace, clock=lambda: now[0])
    client.get_json("/a")
    assert sleep.calls == []
    client.get_json("/b")
    assert sleep.calls == [2.5]
    now[0] += 2.5
    client.get_json("/c")
    assert sleep.calls == [2.5]  # /b left 5: no hold
    assert client.stats.snapshot()["rate_limit_wait_seconds"] == 2.5


def test_a_route_limit_paces_its_endpoints_on_top_of_the_client_limit(mocked, sleep):
    """HubSpot's searches: 2 a second of their own, and they count against the 10 of all."""
    mocked.get(f"{BASE}/list", json={})
    mocked.post(f"{BASE}/objects/deals/search", json={})
    now = [0.0]
    client = make_client(sleep, clock=lambda: now[0], rate_limit=10,
                         route_limits=[(r"/search$", 2)])
    for _ in range(3):  # the first second's burst of searches: 2, then a wait of 1/2 s
        client.request_json("POST", "/objects/deals/search", json={})
    assert sleep.calls == [0.5]
    for _ in range(7):  # lists: what is left of the client's 10 at once
        client.get_json("/list")
    assert sleep.calls == [0.5]
    client.get_json("/list")  # the eleventh request of the second waits for the client's
    assert sleep.calls == [0.5, pytest.approx(0.1)]


def test_error_message_omits_query_string_and_non_json_body(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=400, body="<html>bad request</html>")
    client = make_client(sleep)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices?hapikey=secretvalue123")

    message = str(info.value)
    assert message == "stripe: GET /v1/prices failed: HTTP 400 (http_4xx)"


def test_exception_message_never_contains_url_query(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices",
               body=requests.exceptions.ConnectionError(f"{BASE}/v1/prices?token=hunter22 refused"))
    client = make_client(sleep, max_retries=0)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices", {"token": "hunter22"})

    assert "hunter22" not in str(info.value)
    assert info.value.__cause__ is None


# -- malformed bodies --------------------------------------------------------------

def test_malformed_json_on_200_is_not_retried(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", body="<html>gateway</html>", content_type="text/html")
    client = make_client(sleep)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices")

    assert info.value.reason == "malformed"
    assert info.value.status == 200
    assert len(mocked.calls) == 1
    assert sleep.calls == []
    assert client.stats.snapshot()["errors"]["malformed"] == 1


@pytest.mark.parametrize("body", [
    '{"amount": NaN}',  # Python's json reads it; no JSON API sends it
    '{"data": [1, 2}',  # cut short
    '"\\ud800"',  # a lone surrogate: not text
])
def test_json_that_is_not_rfc_8259_is_malformed(mocked, sleep, body):
    mocked.get(f"{BASE}/v1/prices", body=body, content_type="application/json")
    client = make_client(sleep)

    with pytest.raises(UpstreamError) as info:
        client.get_json("/v1/prices")

    assert info.value.reason == "malformed" and len(mocked.calls) == 1


def test_json_is_decoded_exactly(mocked, sleep):
    body = '{"a": 1, "a": 2, "big": 9223372036854775807, "f": 0.1, "s": "caf\\u00e9", "n": null}'
    mocked.get(f"{BASE}/v1/prices", body=body, content_type="application/json")
    assert make_client(sleep).get_json("/v1/prices") == {
        "a": 2, "big": 9223372036854775807, "f": 0.1, "s": "café", "n": None}


# -- pagination ----------------------------------------------------------------------

def test_paginate_follows_next_page_over_three_pages(mocked, sleep):
    pages = {
        None: {"data": [{"id": "a"}, {"id": "b"}], "has_more": True},
        "b": {"data": [{"id": "c"}], "has_more": True},
        "c": {"data": [{"id": "d"}], "has_more": False},
    }
    for cursor, page in pages.items():
        params = {"limit": "2"} if cursor is None else {"limit": "2", "starting_after": cursor}
        mocked.get(f"{BASE}/v1/customers", json=page,
                   match=[responses.matchers.query_param_matcher(params)])
    client = make_client(sleep)

    def next_page(page):
        if not page["has_more"]:
            return None
        return "/v1/customers", {"limit": 2, "starting_after": page["data"][-1]["id"]}

    got = list(client.paginate("/v1/customers", {"limit": 2}, next_page))

    assert [item["id"] for page in got for item in page["data"]] == ["a", "b", "c", "d"]
    assert len(mocked.calls) == 3


def test_paginate_with_absolute_next_links(mocked, sleep):
    instance = "https://acme.my.salesforce.test"
    mocked.get(f"{instance}/services/data/v59.0/query", json={"records": [1], "nextRecordsUrl": "/q/2"},
               match=[responses.matchers.query_param_matcher({"q": "SELECT Id FROM Opportunity"})])
    mocked.get(f"{instance}/q/2", json={"records": [2]})
    client = HttpClient("salesforce", f"{instance}/services/data/v59.0", sleep=sleep)

    def next_page(page):
        link = page.get("nextRecordsUrl")
        return (instance + link, None) if link else None

    got = list(client.paginate("/query", {"q": "SELECT Id FROM Opportunity"}, next_page))

    assert [page["records"] for page in got] == [[1], [2]]


def test_paginate_is_lazy(mocked, sleep):
    mocked.get(f"{BASE}/v1/customers", json={"n": 1})
    client = make_client(sleep)

    pages = client.paginate("/v1/customers", {"page": 1},
                            lambda page: ("/v1/customers", {"page": 2}))
    assert next(pages) == {"n": 1}
    assert next(pages) == {"n": 1}
    assert len(mocked.calls) == 2  # only as many requests as pages consumed


def test_a_next_page_already_read_fails_instead_of_paging_for_ever(mocked, sleep):
    mocked.get(f"{BASE}/v1/customers", json={"has_more": True})
    client = make_client(sleep)
    pages = client.paginate("/v1/customers", {"limit": 100},
                            lambda page: ("/v1/customers", {"limit": 100}))
    assert next(pages) == {"has_more": True}
    with pytest.raises(UpstreamError) as caught:
        next(pages)
    assert caught.value.reason == "endless_paging"
    assert len(mocked.calls) == 1 and client.stats.snapshot()["errors"]["endless_paging"] == 1


def test_a_poll_scope_caps_the_requests_of_a_poll(mocked, sleep):
    mocked.get(f"{BASE}/v1/x", json={})
    client = make_client(sleep)
    with client.poll_scope(max_requests=3, seconds=3600):
        for _ in range(3):
            client.get_json("/v1/x")
        with pytest.raises(UpstreamError) as caught:
            client.get_json("/v1/x")
    assert caught.value.reason == "request_limit" and "cap of 3 requests" in str(caught.value)
    assert len(mocked.calls) == 3
    client.get_json("/v1/x")  # outside a poll: no cap
    with client.poll_scope(max_requests=3, seconds=3600):  # a new poll, a new budget
        client.get_json("/v1/x")


def test_a_long_poll_logs_its_progress_once_a_minute(mocked, sleep, caplog):
    mocked.get(f"{BASE}/v1/x", json={})
    now = [0.0]
    client = make_client(sleep, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="exporter.http"), \
            client.poll_scope(max_requests=1000, seconds=3600):
        for _ in range(250):  # a request every second
            client.get_json("/v1/x")
            now[0] += 1
    progress = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert progress == [f"stripe: poll still running after {s}s: {s + 1} requests so far "
                        "(at most 1000)" for s in (60, 120, 180, 240)]


def test_retries_count_against_the_cap(mocked, sleep):
    mocked.get(f"{BASE}/v1/x", status=503, json={})
    client = make_client(sleep, max_retries=10)
    with client.poll_scope(max_requests=4, seconds=3600), pytest.raises(UpstreamError) as caught:
        client.get_json("/v1/x")
    assert caught.value.reason == "request_limit" and len(mocked.calls) == 4


def test_the_deadline_stops_requests_and_waits_that_would_pass_it(mocked, sleep):
    now = {"t": 1000.0}
    mocked.get(f"{BASE}/v1/slow", status=429, headers={"Retry-After": "50"}, json={})
    client = make_client(sleep, clock=lambda: now["t"])
    with client.poll_scope(max_requests=100, seconds=30), pytest.raises(UpstreamError) as caught:
        client.get_json("/v1/slow")
    assert caught.value.reason == "deadline" and "rate_limited" in str(caught.value)
    assert sleep.calls == [] and len(mocked.calls) == 1  # never waited 50 s into a 30 s poll
    with client.poll_scope(max_requests=100, seconds=30):
        now["t"] += 31
        with pytest.raises(UpstreamError) as caught:
            client.get_json("/v1/slow")
    assert caught.value.reason == "deadline" and len(mocked.calls) == 1


def test_a_body_past_the_size_cap_is_cut_off(mocked, sleep):
    mocked.get(f"{BASE}/v1/big", body=b"[" + b"1," * 600 + b"1]")
    client = make_client(sleep, max_body_bytes=1000)
    with pytest.raises(UpstreamError) as caught:
        client.get_json("/v1/big")
    assert caught.value.reason == "too_large"


# -- stats and logging -------------------------------------------------------------------

def test_stats_snapshot_starts_at_zero_for_every_reason():
    snap = RequestStats().snapshot()

    assert snap == {
        "requests": 0,
        "retries": 0,
        "errors": {reason: 0 for reason in ERROR_REASONS},
        "rate_limit_wait_seconds": 0.0,
    }
    assert set(snap["errors"]) == {"timeout", "connection", "http_5xx", "rate_limited",
                                   "auth", "http_4xx", "malformed", "too_large",
                                   "endless_paging", "request_limit", "deadline"}


def test_stats_snapshot_is_a_copy(mocked, sleep):
    mocked.get(f"{BASE}/v1/prices", status=500)
    client = make_client(sleep, max_retries=0)
    before = client.stats.snapshot()

    with pytest.raises(UpstreamError):
        client.get_json("/v1/prices")

    assert before["errors"]["http_5xx"] == 0
    assert client.stats.snapshot()["errors"]["http_5xx"] == 1


def test_retry_is_logged_at_debug_without_query_headers_or_body(mocked, sleep, caplog):
    mocked.get(f"{BASE}/v1/prices", status=503, json={"error": {"message": "body-text"}})
    mocked.get(f"{BASE}/v1/prices", json={})
    client = make_client(sleep, headers={"Authorization": f"Bearer {API_KEY}"}, backoff_base=0.5)

    with caplog.at_level(logging.DEBUG, logger="exporter.http"):
        client.get_json("/v1/prices", {"customer": "cus_123"})

    records = [r for r in caplog.records if r.name == "exporter.http"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG
    text = records[0].getMessage()
    for expected in ("stripe", "GET", "/v1/prices", "http_5xx", "0.50"):
        assert expected in text
    for leaked in ("cus_123", API_KEY, "body-text", "Authorization"):
        assert leaked not in text


# -- rate limiting ------------------------------------------------------------------------

class FakeClock:
    """A monotonic clock that only moves when sleep() is called."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_waits_only_beyond_burst():
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock, sleep=clock.sleep)

    waits = [limiter.acquire() for _ in range(7)]

    assert waits[:3] == [0.0, 0.0, 0.0]  # the burst goes through at once
    assert waits[3:] == pytest.approx([0.5] * 4)  # then one token every 1/rate seconds
    assert sum(waits) == pytest.approx(2.0)
    assert clock.slept == pytest.approx([0.5] * 4)


def test_token_bucket_refills_over_time_up_to_burst():
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.acquire()

    clock.now += 100  # a long idle period refills only up to the burst
    waits = [limiter.acquire() for _ in range(3)]

    assert waits == pytest.approx([0.0, 0.0, 1.0])


def test_token_bucket_is_thread_safe():
    # The clock never advances, so waiters queue up: the k-th one beyond the
    # burst must wait k/rate seconds, whichever thread it happens to be.
    clock = FakeClock()
    limiter = RateLimiter(rate=10.0, burst=1, clock=clock, sleep=lambda s: None)
    waits = run_concurrently(limiter.acquire, 10)

    assert sorted(waits) == pytest.approx([k / 10 for k in range(10)])


def test_rate_limiter_rejects_bad_arguments():
    with pytest.raises(ValueError):
        RateLimiter(rate=0)
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=0.5)


def test_client_rate_limit_adds_wait_to_stats(mocked):
    mocked.get(f"{BASE}/v1/prices", json={})
    clock = FakeClock()
    client = HttpClient("stripe", BASE, rate_limit=2.0, clock=clock, sleep=clock.sleep)

    for _ in range(4):  # burst defaults to one second's worth: 2 requests
        client.get_json("/v1/prices")

    stats = client.stats.snapshot()
    assert stats["requests"] == 4
    assert stats["rate_limit_wait_seconds"] == pytest.approx(1.0)
    assert clock.slept == pytest.approx([0.5, 0.5])


def test_rate_limit_applies_to_retries_too(mocked):
    mocked.get(f"{BASE}/v1/prices", status=500)
    mocked.get(f"{BASE}/v1/prices", json={})
    clock = FakeClock()
    client = HttpClient("stripe", BASE, rate_limit=1.0, backoff_base=0.25, jitter=lambda: 1.0,
                        clock=clock, sleep=clock.sleep)

    client.get_json("/v1/prices")

    # First attempt uses the burst token; after the 0.25 s backoff the bucket
    # holds 0.25 tokens, so the retry waits another 0.75 s.
    assert clock.slept == pytest.approx([0.25, 0.75])
    assert client.stats.snapshot()["rate_limit_wait_seconds"] == pytest.approx(0.75)


# -- session lifecycle -----------------------------------------------------------------------

def test_close_leaves_a_caller_session_open(sleep):
    class TrackingSession(requests.Session):
        closed = False

        def close(self):
            self.closed = True
            super().close()

    mine = TrackingSession()
    HttpClient("stripe", BASE, session=mine, headers={"Authorization": "Bearer x-token-1"}).close()
    assert not mine.closed
    assert mine.headers["Authorization"] == "Bearer x-token-1"

    with HttpClient("stripe", BASE, sleep=sleep) as client:
        owned = client._session
        owned.close = lambda: setattr(owned, "closed_by_client", True)
    assert getattr(owned, "closed_by_client", False)


# -- a real socket ---------------------------------------------------------------------------

@contextlib.contextmanager
def serving(handler, tls=None):
    """An HTTP server on a loopback port, on a thread, with `handler`; `tls`: an
    ssl.SSLContext to serve HTTPS with. Yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_real_read_timeout_against_slow_local_server():
    release = threading.Event()

    class SlowHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            release.wait(5)  # far longer than the client's read timeout

        def log_message(self, *args):
            pass

    with serving(SlowHandler) as url:
        try:
            client = HttpClient("slow", url, read_timeout=0.2, max_retries=0)
            started = time.monotonic()
            with pytest.raises(UpstreamError) as info:
                client.get_json("/slow")
            elapsed = time.monotonic() - started
            client.close()
        finally:
            release.set()  # before the server shuts down: it waits for its handlers

    assert info.value.reason == "timeout"
    assert info.value.status is None
    assert elapsed < 2.0
    assert client.stats.snapshot()["errors"]["timeout"] == 1


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the request line's target and the Authorization header
    it was sent: as an upstream, or as an HTTP proxy (which is sent the whole URL)."""

    def do_GET(self):
        body = json.dumps({"target": self.path,
                           "authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo():
    with serving(_Echo) as url:
        yield url


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


def test_a_proxy_from_the_environment_carries_the_requests(echo, clean_environment):
    clean_environment.setenv("HTTP_PROXY", echo)
    client = HttpClient("stripe", "http://api.upstream.invalid/v1", max_retries=0)
    # The proxy is asked for the whole URL (a host that resolves nowhere: only the
    # proxy could have answered), twice: the settings held for the origin are used again.
    for _ in range(2):
        assert client.get_json("/charges", params={"limit": 1})["target"] == \
            "http://api.upstream.invalid/v1/charges?limit=1"
    client.close()


def test_no_proxy_sends_its_hosts_past_the_proxy(echo, clean_environment):
    clean_environment.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing there
    clean_environment.setenv("NO_PROXY", "127.0.0.1")
    client = HttpClient("stripe", echo, max_retries=0)
    assert client.get_json("/v1/charges")["target"] == "/v1/charges"
    client.close()


def test_a_netrc_entry_never_replaces_the_sources_authorization(echo, clean_environment, tmp_path):
    # requests, left to itself, sends Basic auth from ~/.netrc for a host it lists,
    # over the Authorization header the session carries.
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password elsewhere\n")
    netrc.chmod(0o600)
    client = HttpClient("stripe", echo, headers={"Authorization": f"Bearer {API_KEY}"},
                        max_retries=0)
    assert client.get_json("/v1/charges")["authorization"] == f"Bearer {API_KEY}"
    client.close()


def test_a_ca_bundle_from_the_environment_verifies_the_upstream(clean_environment, tmp_path):
    import ssl

    from tls import make_certificates

    certificates = make_certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    with serving(_Echo, tls=context) as url:
        untrusting = HttpClient("stripe", url, max_retries=0)
        with pytest.raises(UpstreamError) as info:  # the test CA is in no system store
            untrusting.get_json("/v1/charges")
        assert info.value.reason == "connection"
        untrusting.close()
        clean_environment.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca))
        trusting = HttpClient("stripe", url, max_retries=0)
        assert trusting.get_json("/v1/charges")["target"] == "/v1/charges"
        trusting.close()
