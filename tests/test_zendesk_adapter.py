"""The Zendesk source through the real HTTP client against `responses` mocks in
Zendesk's shapes: config, a full then an incremental export, deleted tickets,
null metrics, business hours, a 429 with Retry-After, failures that keep the
state, and ratings."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest
import responses

from exporter import config as config_module
from exporter.config import ConfigError
from exporter.http import UpstreamError
from exporter.ratelimit import RateLimiter
from exporter.sources.base import UpstreamDataError
from exporter.sources.helpdesk.tickets import HOUR, Rating, Ticket
from exporter.sources.zendesk import ZendeskSource
from exporter.sources.zendesk.source import make_client, parse_config

API = "https://acme.zendesk.com"
EXPORT = API + "/api/v2/incremental/tickets/cursor.json"
RATINGS = API + "/api/v2/satisfaction_ratings"
TOKEN = "zd-secret-token-123456"
NOW = 1_800_000_000


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load(text: str, env: dict | None = None):
    return config_module.parse("sources:\n  zendesk:\n" + text, "kpi.yml",
                               {"ZENDESK_TOKEN": TOKEN, **(env or {})})


def ticket(id, status, created_ago, priority="normal"):
    return {"id": id, "status": status, "priority": priority, "subject": f"Ticket {id}",
            "created_at": iso(NOW - created_ago), "updated_at": iso(NOW - 60)}


def metrics(id, reply=None, resolution=None, solved_ago=None, business=None):
    """Minutes: reply and resolution in calendar time; business = (reply, resolution)."""
    business = business or (reply, resolution)
    return {"ticket_id": id,
            "reply_time_in_minutes": {"calendar": reply, "business": business[0]},
            "full_resolution_time_in_minutes": {"calendar": resolution, "business": business[1]},
            "solved_at": None if solved_ago is None else iso(NOW - solved_ago)}


def page(tickets, metric_sets, cursor, end=True):
    return {"tickets": tickets, "metric_sets": metric_sets, "after_cursor": cursor,
            "after_url": f"{EXPORT}?cursor={cursor}", "before_cursor": None,
            "end_of_stream": end}


def no_ratings():
    responses.get(RATINGS, json={"satisfaction_ratings": [], "meta": {"has_more": False}})


def source(business_hours=False, **client_options):
    cfg = parse_config_text(f"subdomain: acme\nemail: ops@acme.example\napi_token: {TOKEN}\n"
                            f"business_hours: {str(business_hours).lower()}\n")
    client_options.setdefault("sleep", lambda _: None)
    return ZendeskSource(cfg, client=make_client(cfg, max_retries=2, **client_options),
                         export_limiter=RateLimiter(1000))


def parse_config_text(text):
    return load("    " + text.replace("\n", "\n    ")).sources["zendesk"]


# -- config ---------------------------------------------------------------------

def test_config_from_subdomain_or_base_url():
    cfg = parse_config_text(f"subdomain: Acme\nemail: ops@acme.example\napi_token: {TOKEN}\n")
    assert cfg.base_url == "https://acme.zendesk.com" and cfg.poll_interval == 300
    assert cfg.export_rate_limit == 10 and cfg.business_hours is False
    cfg = parse_config_text("base_url: http://127.0.0.1:8080/\nemail: a@b.c\n"
                            "api_token: ${ZENDESK_TOKEN}\nbusiness_hours: true\n")
    assert cfg.base_url == "http://127.0.0.1:8080" and cfg.business_hours is True
    assert cfg.api_token.reveal() == TOKEN


def test_api_token_from_a_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    cfg = parse_config_text(f"subdomain: acme\nemail: a@b.c\napi_token_file: {secret}\n")
    assert cfg.api_token.reveal() == TOKEN


@pytest.mark.parametrize("text, key", [
    ("email: a@b.c\napi_token: x\n", "subdomain"),                           # neither
    ("subdomain: acme\nbase_url: https://x\nemail: a@b.c\napi_token: x\n", "subdomain"),
    ("subdomain: acme.zendesk.com/x\nemail: a@b.c\napi_token: x\n", "subdomain"),
    ("base_url: acme.zendesk.com\nemail: a@b.c\napi_token: x\n", "base_url"),
    ("subdomain: acme\napi_token: x\n", "email"),
    ("subdomain: acme\nemail: nobody\napi_token: x\n", "email"),
    ("subdomain: acme\nemail: a@b.c\n", "api_token"),
    ("subdomain: acme\nemail: a@b.c\napi_token: x\nbusiness_hours: often\n", "business_hours"),
    ("subdomain: acme\nemail: a@b.c\napi_token: x\nexport_rate_limit: 0\n", "export_rate_limit"),
    ("subdomain: acme\nemail: a@b.c\napi_token: x\nviews: [1]\n", "views"),
])
def test_bad_config_names_the_key(text, key):
    with pytest.raises(ConfigError) as error:
        parse_config_text(text)
    assert f"sources.zendesk.{key}" in str(error.value)


# -- the export -----------------------------------------------------------------

@responses.activate
def test_a_full_then_an_incremental_export():
    responses.get(EXPORT, match=[responses.matchers.query_param_matcher(
        {"start_time": "0", "include": "metric_sets", "per_page": "1000"})],
        json=page([ticket(1, "solved", 5 * HOUR, "urgent"), ticket(2, "open", 2 * HOUR, "high")],
                  [metrics(1, reply=30, resolution=180, solved_ago=2 * HOUR),
                   metrics(2, reply=10)], "c1", end=False))
    responses.get(EXPORT, match=[responses.matchers.query_param_matcher(
        {"cursor": "c1", "include": "metric_sets", "per_page": "1000"})],
        json=page([ticket(3, "new", HOUR, None)], [metrics(3)], "c2"))
    no_ratings()
    zendesk = source()
    first = {t.id: t for t in zendesk.read(NOW).tickets}
    created1 = NOW - 5 * HOUR
    assert first["1"] == Ticket("1", "solved", "urgent", created1, solved=NOW - 2 * HOUR,
                                first_reply=created1 + 1800, first_reply_seconds=1800,
                                resolution_seconds=3 * HOUR)
    assert first["2"].solved is None and first["2"].first_reply_seconds == 600
    # a new ticket: no priority (counted as normal), null metrics everywhere
    assert first["3"] == Ticket("3", "new", "normal", NOW - HOUR)

    # The next poll continues from the kept cursor: ticket 2 solved, ticket 3 deleted.
    responses.get(EXPORT, match=[responses.matchers.query_param_matcher(
        {"cursor": "c2", "include": "metric_sets", "per_page": "1000"})],
        json=page([ticket(2, "solved", 2 * HOUR, "high"), ticket(3, "deleted", HOUR)],
                  [metrics(2, reply=10, resolution=100, solved_ago=20 * 60)], "c3"))
    second = {t.id: t for t in zendesk.read(NOW).tickets}
    assert set(second) == {"1", "2"}
    assert second["2"].solved == NOW - 1200 and second["2"].resolution_seconds == 6000
    exports = [call.request.url for call in responses.calls if "incremental" in call.request.url]
    assert len(exports) == 3 and "cursor=c2" in exports[2]


@responses.activate
def test_business_hours_take_the_business_clock():
    responses.get(EXPORT, json=page([ticket(1, "closed", 10 * HOUR)],
                                    [metrics(1, reply=60, resolution=480, solved_ago=HOUR,
                                             business=(20, 160))], "c1"))
    no_ratings()
    found = source(business_hours=True).read(NOW).tickets[0]
    # the first reply's moment is still calendar time: created + 60 minutes
    assert (found.first_reply_seconds, found.resolution_seconds) == (1200, 9600)
    assert found.first_reply == NOW - 10 * HOUR + 3600


@responses.activate
def test_tickets_solved_long_ago_are_not_kept_but_old_open_ones_are():
    responses.get(EXPORT, json=page(
        [ticket(1, "closed", 90 * 86400), ticket(2, "pending", 90 * 86400, "low")],
        [metrics(1, reply=5, resolution=60, solved_ago=89 * 86400), metrics(2, reply=5)], "c1"))
    no_ratings()
    assert [t.id for t in source().read(NOW).tickets] == ["2"]


@responses.activate
def test_a_429_waits_for_retry_after():
    responses.get(EXPORT, status=429, headers={"Retry-After": "7"},
                  json={"error": "APIRateLimitExceeded"})
    responses.get(EXPORT, json=page([ticket(1, "open", HOUR)], [metrics(1)], "c1"))
    no_ratings()
    slept = []
    assert len(source(sleep=slept.append).read(NOW).tickets) == 1
    assert slept == [7.0]


@responses.activate
def test_a_failure_mid_export_keeps_the_tickets_and_the_cursor():
    responses.get(EXPORT, json=page([ticket(1, "open", HOUR)], [metrics(1)], "c1"))
    no_ratings()
    zendesk = source()
    zendesk.read(NOW)
    responses.get(EXPORT, match=[responses.matchers.query_param_matcher(
        {"cursor": "c1", "include": "metric_sets", "per_page": "1000"})],
        json=page([ticket(2, "open", HOUR)], [metrics(2)], "c2", end=False))
    responses.get(EXPORT, match=[responses.matchers.query_param_matcher(
        {"cursor": "c2", "include": "metric_sets", "per_page": "1000"})], status=500)
    with pytest.raises(UpstreamError):
        zendesk.read(NOW)
    assert set(zendesk._tickets) == {"1"} and zendesk._cursor == "c1"


@responses.activate
def test_malformed_data_fails_the_poll_without_the_token():
    responses.get(EXPORT, json=page([{**ticket(1, "open", HOUR), "created_at": "yesterday"}],
                                    [], "c1"))
    no_ratings()
    with pytest.raises(UpstreamDataError) as error:
        source().read(NOW)
    assert "ticket 1" in str(error.value) and TOKEN not in str(error.value)
    auth = responses.calls[0].request.headers["Authorization"]
    user = base64.b64decode(auth.split()[1]).decode()
    assert user == f"ops@acme.example/token:{TOKEN}"


@responses.activate
def test_ratings_of_the_lookback_good_and_bad():
    responses.get(EXPORT, json=page([], [], "c1"))
    responses.get(RATINGS, match=[responses.matchers.query_param_matcher(
        {"score": "received", "start_time": str(NOW - 30 * 86400), "page[size]": "100"})],
        json={"satisfaction_ratings": [
            {"id": 11, "ticket_id": 1, "score": "good", "created_at": iso(NOW - 3 * HOUR),
             "updated_at": iso(NOW - 2 * HOUR)},
            {"id": 12, "ticket_id": 2, "score": "offered", "created_at": iso(NOW - HOUR),
             "updated_at": iso(NOW - HOUR)}],
            "meta": {"has_more": True, "after_cursor": "r1"}})
    responses.get(RATINGS, match=[responses.matchers.query_param_matcher(
        {"score": "received", "start_time": str(NOW - 30 * 86400), "page[size]": "100",
         "page[after]": "r1"})],
        json={"satisfaction_ratings": [
            {"id": 13, "ticket_id": 3, "score": "bad", "created_at": iso(NOW - 9 * HOUR),
             "updated_at": iso(NOW - 9 * HOUR)}], "meta": {"has_more": False}})
    assert source().read(NOW).ratings == [Rating("11", NOW - 2 * HOUR, True),
                                          Rating("13", NOW - 9 * HOUR, False)]

