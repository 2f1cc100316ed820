"""The Zendesk source through the real HTTP client against `responses` mocks in
Zendesk's shapes: config, a full then an incremental export, deleted tickets,
null metrics, business hours, priorities, the export's pace and a 429 with
Retry-After, failures that keep the state, malformed data, and ratings. Every
expected record is worked out by hand from the mocked minutes and times."""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from responses import matchers

from exporter import config as config_module
from exporter.config import ConfigError
from exporter.http import UpstreamError
from exporter.ratelimit import RateLimiter
from exporter.sources.base import UpstreamDataError
from exporter.sources.helpdesk.tickets import DAY, HOUR, Rating, Ticket
from exporter.sources.zendesk import ZendeskSource
from exporter.sources.zendesk.source import make_client

API = "https://acme.zendesk.com"
EXPORT = API + "/api/v2/incremental/tickets/cursor.json"
RATINGS = API + "/api/v2/satisfaction_ratings"
SEARCH = API + "/api/v2/search/export.json"
TOKEN = "zd-secret-token-123456"
NOW = 1_800_000_000
MINUTE = 60


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load(text: str):
    return config_module.parse("sources:\n  zendesk:\n" + text, "kpi.yml",
                               {"ZENDESK_TOKEN": TOKEN})


def parse_config_text(text):
    return load("    " + text.replace("\n", "\n    ")).sources["zendesk"]


def ticket(id, status, created_ago, priority="normal"):
    return {"id": id, "url": f"{API}/api/v2/tickets/{id}.json", "status": status,
            "priority": priority, "subject": f"Ticket {id}",
            "created_at": iso(NOW - created_ago), "updated_at": iso(NOW - MINUTE)}


def metrics(id, reply=None, resolution=None, solved_ago=None, business=None):
    """Minutes: reply and resolution in calendar time; business = (reply, resolution)."""
    business = business or (reply, resolution)
    return {"id": 9000 + id, "ticket_id": id,
            "reply_time_in_minutes": {"calendar": reply, "business": business[0]},
            "full_resolution_time_in_minutes": {"calendar": resolution, "business": business[1]},
            "solved_at": None if solved_ago is None else iso(NOW - solved_ago),
            "created_at": iso(NOW - DAY)}


def page(tickets, metric_sets, cursor, end=True):
    return {"tickets": tickets, "metric_sets": metric_sets, "after_cursor": cursor,
            "after_url": f"{EXPORT}?cursor={cursor}", "before_cursor": None,
            "before_url": None, "end_of_stream": end}


def export_from(cursor, body=None, **kwargs):
    """Mock the export page asked for with `cursor` (None: the first poll's, from 30
    days before NOW, after a search export for the backlog: none unless `backlog` ran)."""
    params = {"include": "metric_sets", "per_page": "1000"}
    params.update({"cursor": cursor} if cursor else {"start_time": str(NOW - 30 * DAY)})
    if cursor is None:
        backlog([])
    responses.get(EXPORT, match=[matchers.query_param_matcher(params)], json=body, **kwargs)


def backlog(tickets, more=None):
    """Mock a page of the search export of unsolved tickets (`more`: the next cursor)."""
    responses.get(SEARCH, json={"results": [{**t, "result_type": "ticket"} for t in tickets],
                                "meta": {"has_more": more is not None, "after_cursor": more,
                                         "before_cursor": None},
                                "links": {"next": None, "prev": None}})


def no_ratings():
    responses.get(RATINGS, json={"satisfaction_ratings": [], "meta": {"has_more": False}})


def sent(url):
    """The query of every request to `url`, in order."""
    return [dict(parse_qsl(urlsplit(call.request.url).query)) for call in responses.calls
            if call.request.url.startswith(url)]


def source(business_hours=False, **client_options):
    cfg = parse_config_text(f"subdomain: acme\nemail: ops@acme.example\napi_token: {TOKEN}\n"
                            f"business_hours: {str(business_hours).lower()}\n")
    client_options.setdefault("sleep", lambda _: None)
    return ZendeskSource(cfg, client=make_client(cfg, max_retries=2, **client_options),
                         export_limiter=RateLimiter(1000), clock=lambda: NOW)


def by_id(data):
    return {t.id: t for t in data.tickets}


# -- config ---------------------------------------------------------------------

def test_config_from_a_subdomain_with_the_defaults():
    cfg = parse_config_text("subdomain: Acme\nemail: ops@acme.example\n"
                            "api_token: ${ZENDESK_TOKEN}\n")
    assert cfg.base_url == "https://acme.zendesk.com" and cfg.email == "ops@acme.example"
    assert cfg.api_token.reveal() == TOKEN and TOKEN not in repr(cfg)
    assert (cfg.business_hours, cfg.poll_interval, cfg.timeout) == (False, 300, 30)
    assert (cfg.export_rate_limit, cfg.rate_limit) == (10, 5)


def test_config_with_every_key():
    cfg = parse_config_text("base_url: http://127.0.0.1:8080/\nemail: a@b.c\n"
                            "api_token: x-token\nbusiness_hours: true\npoll_interval: 1m\n"
                            "timeout: 10s\nexport_rate_limit: 30\nrate_limit: 2\n")
    assert cfg.base_url == "http://127.0.0.1:8080" and cfg.business_hours is True
    assert (cfg.poll_interval, cfg.timeout, cfg.export_rate_limit, cfg.rate_limit) == \
        (60, 10, 30, 2)
    # 30 export requests a minute: one every 2 seconds, never two at once
    zendesk = ZendeskSource(cfg)
    assert (zendesk.export_limiter.rate, zendesk.export_limiter.burst) == (0.5, 1)
    zendesk.close()


def test_api_token_from_a_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    cfg = parse_config_text(f"subdomain: acme\nemail: a@b.c\napi_token_file: {secret}\n")
    assert cfg.api_token.reveal() == TOKEN


GOOD = "subdomain: acme\nemail: a@b.c\napi_token: x-token\n"


@pytest.mark.parametrize("text, key", [
    ("email: a@b.c\napi_token: x\n", "subdomain"),                           # neither
    ("subdomain: acme\nbase_url: https://x\nemail: a@b.c\napi_token: x\n", "subdomain"),
    ("subdomain: acme.zendesk.com\nemail: a@b.c\napi_token: x\n", "subdomain"),
    ("subdomain: -acme\nemail: a@b.c\napi_token: x\n", "subdomain"),
    ("subdomain: ac_me\nemail: a@b.c\napi_token: x\n", "subdomain"),
    ("base_url: acme.zendesk.com\nemail: a@b.c\napi_token: x\n", "base_url"),
    ("base_url: 'https://'\nemail: a@b.c\napi_token: x\n", "base_url"),
    ("subdomain: acme\napi_token: x\n", "email"),
    ("subdomain: acme\nemail: nobody\napi_token: x\n", "email"),
    ("subdomain: acme\nemail: a@b.c\n", "api_token"),
    ("subdomain: acme\nemail: a@b.c\napi_token: ''\n", "api_token"),
    ("subdomain: acme\nemail: a@b.c\napi_token: x\napi_token_file: /x\n", "api_token"),
    ("subdomain: acme\nemail: a@b.c\napi_token_file: /nonexistent/token\n", "api_token_file"),
    (GOOD + "business_hours: often\n", "business_hours"),
    (GOOD + "poll_interval: soon\n", "poll_interval"),
    (GOOD + "timeout: [1]\n", "timeout"),
    (GOOD + "export_rate_limit: 0\n", "export_rate_limit"),
    (GOOD + "rate_limit: 0\n", "rate_limit"),
    (GOOD + "views: [1]\n", "views"),                                        # unknown
])
def test_bad_config_names_the_key(text, key):
    with pytest.raises(ConfigError) as error:
        parse_config_text(text)
    assert f"sources.zendesk.{key}" in str(error.value)


def test_a_token_put_in_the_wrong_key_is_not_echoed():
    with pytest.raises(ConfigError) as error:
        parse_config_text("subdomain: acme\nemail: ${ZENDESK_TOKEN}\napi_token: x\n")
    assert "sources.zendesk.email" in str(error.value) and TOKEN not in str(error.value)


def test_basic_auth_is_the_email_slash_token_and_the_token():
    cfg = parse_config_text(GOOD)
    client = make_client(cfg)
    scheme, encoded = client._session.headers["Authorization"].split()
    assert scheme == "Basic" and base64.b64decode(encoded).decode() == "a@b.c/token:x-token"


# -- the export -----------------------------------------------------------------

@responses.activate
def test_a_full_then_an_incremental_export():
    # First poll: the backlog from the search export (ticket 9 has not changed for 60
    # days; ticket 2 is in the export too, which replaces it with its metric set)...
    stale = {**ticket(9, "hold", 90 * DAY, "low"), "updated_at": iso(NOW - 60 * DAY)}
    backlog([stale, ticket(2, "open", 2 * HOUR, "high")])
    # ...then two pages of the export from 30 days ago.
    export_from(None, page([ticket(1, "solved", 5 * HOUR, "urgent"),
                            ticket(2, "open", 2 * HOUR, "high")],
                           [metrics(1, reply=30, resolution=180, solved_ago=2 * HOUR),
                            metrics(2, reply=10)], "c1", end=False))
    export_from("c1", page([ticket(3, "new", HOUR, None)], [], "c2"))  # no metric set yet
    no_ratings()
    zendesk = source()
    first = by_id(zendesk.read(NOW))
    created1, created2 = NOW - 5 * HOUR, NOW - 2 * HOUR
    # ticket 1: replied 30 minutes and solved 180 minutes after creation
    assert first["1"] == Ticket("1", "solved", "urgent", created1, solved=NOW - 2 * HOUR,
                                first_reply=created1 + 30 * MINUTE, first_reply_seconds=1800,
                                resolution_seconds=10800)
    assert first["2"] == Ticket("2", "open", "high", created2, first_reply=created2 + 600,
                                first_reply_seconds=600)
    # ticket 3: no priority (counted as normal) and no metric set: nothing happened yet
    assert first["3"] == Ticket("3", "new", "normal", NOW - HOUR)
    # ticket 9: unsolved, and no reply or solve in any window
    assert first["9"] == Ticket("9", "hold", "low", NOW - 90 * DAY)
    assert sent(SEARCH) == [{"query": "type:ticket status<solved", "filter[type]": "ticket",
                             "page[size]": "1000"}]

    # Second poll, from the kept cursor: ticket 2 solved, ticket 4 new.
    export_from("c2", page([ticket(2, "solved", 2 * HOUR, "high"),
                            ticket(4, "pending", 30 * MINUTE, "low")],
                           [metrics(2, reply=10, resolution=100, solved_ago=20 * MINUTE),
                            metrics(4, reply=5)], "c3"))
    second = by_id(zendesk.read(NOW))
    assert second["1"] == first["1"] and second["3"] == first["3"] and second["9"] == first["9"]
    assert second["2"] == Ticket("2", "solved", "high", created2, solved=NOW - 20 * MINUTE,
                                 first_reply=created2 + 600, first_reply_seconds=600,
                                 resolution_seconds=6000)
    assert second["4"] == Ticket("4", "pending", "low", NOW - 30 * MINUTE,
                                 first_reply=NOW - 25 * MINUTE, first_reply_seconds=300)

    # Third poll: nothing changed, the export still starts from the newest cursor.
    export_from("c3", page([], [], "c3"))
    assert by_id(zendesk.read(NOW)) == second
    assert [q.get("cursor", "start_time=" + q.get("start_time", "")) for q in sent(EXPORT)] \
        == [f"start_time={NOW - 30 * DAY}", "c1", "c2", "c3"]
    assert len(sent(SEARCH)) == 1  # the backlog is searched on the first poll only


@responses.activate
def test_a_deleted_ticket_is_dropped():
    export_from(None, page([ticket(1, "open", HOUR), ticket(2, "open", HOUR)],
                           [metrics(1, reply=5), metrics(2, reply=5)], "c1"))
    no_ratings()
    zendesk = source()
    assert set(by_id(zendesk.read(NOW))) == {"1", "2"}
    # ticket 2 deleted; ticket 9 created and deleted between two polls (never kept)
    export_from("c1", page([{"id": 2, "status": "deleted", "created_at": iso(NOW - HOUR),
                             "updated_at": iso(NOW)},
                            {"id": 9, "status": "deleted", "created_at": iso(NOW - 60),
                             "updated_at": iso(NOW)}], [], "c2"))
    assert set(by_id(zendesk.read(NOW))) == {"1"}


@responses.activate
def test_null_metrics_give_no_reply_or_solve_and_a_reopened_ticket_is_unsolved():
    export_from(None, page(
        [ticket(1, "new", HOUR), ticket(2, "open", 3 * DAY), ticket(3, "hold", HOUR)],
        [metrics(1),                                                        # all null
         # solved once (solved_at and resolution stay), then reopened: unsolved now
         metrics(2, reply=60, resolution=600, solved_ago=2 * DAY),
         {"ticket_id": 3, "reply_time_in_minutes": None,                     # null objects
          "full_resolution_time_in_minutes": None, "solved_at": None}], "c1"))
    no_ratings()
    found = by_id(source().read(NOW))
    assert found["1"] == Ticket("1", "new", "normal", NOW - HOUR)
    assert found["2"] == Ticket("2", "open", "normal", NOW - 3 * DAY,
                                first_reply=NOW - 3 * DAY + HOUR, first_reply_seconds=3600)
    assert found["3"] == Ticket("3", "hold", "normal", NOW - HOUR)


@responses.activate
def test_business_hours_switch_the_durations_not_the_moments():
    def read(business_hours):
        responses.reset()
        export_from(None, page([ticket(1, "closed", 10 * HOUR)],
                               [metrics(1, reply=60, resolution=480, solved_ago=2 * HOUR,
                                        business=(20, 160))], "c1"))
        no_ratings()
        return source(business_hours=business_hours).read(NOW).tickets[0]

    calendar, business = read(False), read(True)
    assert (calendar.first_reply_seconds, calendar.resolution_seconds) == (3600, 28800)
    assert (business.first_reply_seconds, business.resolution_seconds) == (1200, 9600)
    # the first reply's moment is calendar time either way: created + 60 minutes
    assert calendar.first_reply == business.first_reply == NOW - 9 * HOUR
    assert calendar.solved == business.solved == NOW - 2 * HOUR


@responses.activate
def test_priorities_null_and_unknown_count_as_normal(caplog):
    export_from(None, page([ticket(1, "open", HOUR, None), ticket(2, "open", HOUR, "critical"),
                            ticket(3, "open", HOUR, "critical"), ticket(4, "open", HOUR, "low")],
                           [], "c1"))
    no_ratings()
    with caplog.at_level(logging.WARNING):
        found = by_id(source().read(NOW))
    assert {i: t.priority for i, t in found.items()} == \
        {"1": "normal", "2": "normal", "3": "normal", "4": "low"}
    assert sum("'critical'" in r.getMessage() for r in caplog.records) == 1  # warned once


@responses.activate
def test_only_the_tickets_the_kpis_need_are_kept_as_time_passes():
    export_from(None, page(
        [ticket(1, "closed", 90 * DAY), ticket(2, "pending", 90 * DAY, "low"),
         ticket(3, "solved", 35 * DAY)],
        [metrics(1, reply=5, resolution=60, solved_ago=89 * DAY), metrics(2, reply=5),
         metrics(3, reply=5, resolution=60, solved_ago=29 * DAY)], "c1"))
    no_ratings()
    zendesk = source()
    # 1 was solved 89 days ago: no window needs it; 3 was solved 29 days ago: the 30-day one does
    assert set(by_id(zendesk.read(NOW))) == {"2", "3"}
    export_from("c1", page([], [], "c1"))
    # two days on, ticket 3's solve is 31 days old: it goes, the open ticket stays
    assert set(by_id(zendesk.read(NOW + 2 * DAY))) == {"2"}


@responses.activate
def test_a_429_waits_for_retry_after():
    export_from(None, status=429, headers={"Retry-After": "7"},
                body={"error": "APIRateLimitExceeded",
                      "description": "Number of allowed incremental export API requests "
                                     "per minute exceeded"})
    export_from(None, page([ticket(1, "open", HOUR)], [metrics(1)], "c1"))
    no_ratings()
    slept = []
    zendesk = source(sleep=slept.append)
    assert set(by_id(zendesk.read(NOW))) == {"1"}
    assert slept == [7.0]
    stats = zendesk.request_stats()
    assert stats["retries"] == 1 and stats["errors"]["rate_limited"] == 1


@responses.activate
def test_export_requests_are_spread_over_the_minute_and_the_waits_counted():
    export_from(None, page([ticket(1, "open", HOUR)], [], "c1", end=False))
    export_from("c1", page([ticket(2, "open", HOUR)], [], "c2", end=False))
    export_from("c2", page([], [], "c2"))
    no_ratings()
    t, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        t[0] += seconds

    cfg = parse_config_text(GOOD)
    zendesk = ZendeskSource(cfg, client=make_client(cfg, rate_limit=None, sleep=sleep),
                            export_limiter=RateLimiter(10 / 60, burst=1, clock=lambda: t[0],
                                                       sleep=sleep))
    zendesk.read(NOW)
    # 10 a minute: the first request at once, then one every 6 seconds
    assert slept == [pytest.approx(6.0), pytest.approx(6.0)]
    assert zendesk.request_stats()["rate_limit_wait_seconds"] == pytest.approx(12.0)


# -- failures -------------------------------------------------------------------

@responses.activate
def test_a_failure_mid_export_keeps_the_tickets_and_the_cursor():
    export_from(None, page([ticket(1, "open", HOUR)], [metrics(1, reply=5)], "c1"))
    no_ratings()
    zendesk = source()
    before = zendesk.read(NOW).tickets
    # The next export: ticket 1 solved and ticket 2 new on page one, then page two fails.
    export_from("c1", page([ticket(1, "solved", HOUR), ticket(2, "open", HOUR)],
                           [metrics(1, reply=5, resolution=50, solved_ago=10 * MINUTE),
                            metrics(2)], "c2", end=False))
    export_from("c2", status=500, body={"error": "InternalError"})
    with pytest.raises(UpstreamError) as error:
        zendesk.read(NOW)
    assert error.value.reason == "http_5xx"
    assert zendesk._state.cursor == "c1" and list(zendesk._state.tickets.values()) == before
    assert [q.get("cursor") for q in sent(EXPORT)] == [None, "c1", "c2", "c2", "c2"]  # 2 retries
    # The next poll repeats the same changes from c1, and this time gets through.
    responses.reset()
    export_from("c1", page([ticket(1, "solved", HOUR), ticket(2, "open", HOUR)],
                           [metrics(1, reply=5, resolution=50, solved_ago=10 * MINUTE),
                            metrics(2)], "c2", end=False))
    export_from("c2", page([], [], "c3"))
    no_ratings()
    after = by_id(zendesk.read(NOW))
    assert after["1"].solved == NOW - 10 * MINUTE and set(after) == {"1", "2"}
    assert [q.get("cursor") for q in sent(EXPORT)] == ["c1", "c2"]
    assert zendesk._state.cursor == "c3"


@responses.activate
def test_a_failure_reading_ratings_keeps_the_export_cursor():
    export_from(None, page([ticket(1, "open", HOUR)], [], "c1"))
    responses.get(RATINGS, status=401, json={"error": "Couldn't authenticate you"})
    zendesk = source()
    with pytest.raises(UpstreamError) as error:
        zendesk.read(NOW)
    assert error.value.reason == "auth"
    assert zendesk._state.cursor is None and zendesk._state.tickets == {}


@responses.activate
def test_an_upstream_echoing_the_token_is_redacted():
    export_from(None, status=403, body={"error": {"title": "Forbidden",
                                                  "message": f"token {TOKEN} may not export"}})
    with pytest.raises(UpstreamError) as error:
        source().read(NOW)
    assert error.value.reason == "auth" and TOKEN not in str(error.value)
    assert "may not export" in str(error.value)


@pytest.mark.parametrize("body, message", [
    (page([{"status": "open", "created_at": iso(NOW)}], [], "c1"),
     "a ticket in the export has no id"),
    (page([{**ticket(7, "open", HOUR), "created_at": "yesterday"}], [], "c1"),
     "the created_at of ticket 7 is 'yesterday'"),
    (page([{**ticket(7, "open", HOUR), "created_at": None}], [], "c1"),
     "ticket 7 has no created_at"),
    (page([{**ticket(7, "open", HOUR), "status": None}], [], "c1"), "ticket 7 has status None"),
    (page([ticket(7, "open", HOUR)], [{**metrics(7), "reply_time_in_minutes": {
        "calendar": "ten", "business": 3}}], "c1"), "ticket 7 has calendar reply_time_in_minutes"),
    (page([ticket(7, "solved", HOUR)], [{**metrics(7, reply=1, resolution=2),
                                         "solved_at": "2026-13-40"}], "c1"),
     "the solved_at of ticket 7"),
    ({"tickets": None, "end_of_stream": True}, "no 'tickets' list"),
    ({**page([], [], "c1"), "end_of_stream": None}, "no end_of_stream flag"),
    (page([], [], None, end=False), "gives no after_cursor"),
])
@responses.activate
def test_malformed_data_fails_the_poll_naming_it_without_the_token(body, message):
    export_from(None, page([ticket(1, "open", HOUR)], [], "c0"))
    no_ratings()
    zendesk = source()
    zendesk.read(NOW)
    kept = dict(zendesk._state.tickets)
    export_from("c0", body)
    with pytest.raises(UpstreamDataError) as error:
        zendesk.read(NOW)
    assert message in str(error.value) and TOKEN not in str(error.value)
    assert zendesk._state.tickets == kept and zendesk._state.cursor == "c0"


@responses.activate
def test_an_end_of_stream_without_a_cursor_keeps_the_one_it_started_from():
    export_from(None, page([ticket(1, "open", HOUR)], [], "c1"))
    no_ratings()
    zendesk = source()
    zendesk.read(NOW)
    export_from("c1", page([ticket(2, "open", HOUR)], [], None))
    assert set(by_id(zendesk.read(NOW))) == {"1", "2"} and zendesk._state.cursor == "c1"


# -- ratings --------------------------------------------------------------------

@responses.activate
def test_ratings_of_the_lookback_good_and_bad_across_pages():
    export_from(None, page([], [], "c1"))
    query = {"score": "received", "start_time": str(NOW - 30 * DAY), "page[size]": "100"}
    responses.get(RATINGS, match=[matchers.query_param_matcher(query)], json={
        "satisfaction_ratings": [
            # changed from bad to good an hour after it was first given: counted when changed
            {"id": 11, "ticket_id": 1, "score": "good", "created_at": iso(NOW - 3 * HOUR),
             "updated_at": iso(NOW - 2 * HOUR)},
            {"id": 12, "ticket_id": 2, "score": "offered", "created_at": iso(NOW - HOUR),
             "updated_at": iso(NOW - HOUR)}],
        "meta": {"has_more": True, "after_cursor": "r1", "before_cursor": "r0"},
        "links": {"next": f"{RATINGS}?page[after]=r1", "prev": None}})
    responses.get(RATINGS, match=[matchers.query_param_matcher({**query, "page[after]": "r1"})],
                  json={"satisfaction_ratings": [
                      {"id": 13, "ticket_id": 3, "score": "bad",
                       "created_at": iso(NOW - 9 * HOUR), "updated_at": iso(NOW - 9 * HOUR)}],
                      "meta": {"has_more": False, "after_cursor": "r2"}})
    assert source().read(NOW).ratings == [Rating("11", NOW - 2 * HOUR, True),
                                          Rating("13", NOW - 9 * HOUR, False)]


@responses.activate
def test_ratings_are_read_again_every_poll():
    export_from(None, page([], [], "c1"))
    export_from("c1", page([], [], "c1"))
    rating = {"id": 11, "ticket_id": 1, "created_at": iso(NOW - HOUR)}
    responses.get(RATINGS, json={"satisfaction_ratings": [
        {**rating, "score": "bad", "updated_at": iso(NOW - HOUR)}], "meta": {"has_more": False}})
    responses.get(RATINGS, json={"satisfaction_ratings": [
        {**rating, "score": "good", "updated_at": iso(NOW)}], "meta": {"has_more": False}})
    zendesk = source()
    assert zendesk.read(NOW).ratings == [Rating("11", NOW - HOUR, False)]
    assert zendesk.read(NOW + 300).ratings == [Rating("11", NOW, True)]
    starts = [query["start_time"] for query in sent(RATINGS)]
    assert starts == [str(NOW - 30 * DAY), str(NOW + 300 - 30 * DAY)]


@pytest.mark.parametrize("ratings, message", [
    ([{"ticket_id": 1, "score": "good", "updated_at": iso(NOW)}], "rating has no id"),
    ([{"id": 5, "score": "good", "updated_at": "now"}], "satisfaction rating 5 is 'now'"),
    ([{"id": 5, "score": "bad"}], "satisfaction rating 5 has no time"),
])
@responses.activate
def test_malformed_ratings_fail_the_poll(ratings, message):
    export_from(None, page([], [], "c1"))
    responses.get(RATINGS, json={"satisfaction_ratings": ratings, "meta": {"has_more": False}})
    with pytest.raises(UpstreamDataError) as error:
        source().read(NOW)
    assert message in str(error.value)


@responses.activate
def test_statuses_zendesk_does_not_document_are_counted_under_other_and_logged_once(caplog):
    invented = [ticket(i, f"status-{i}", HOUR) for i in range(1, 301)]  # 300 new statuses
    export_from(None, page(invented + [ticket(400, "open", HOUR)], [], "c1"))
    no_ratings()
    with caplog.at_level(logging.WARNING):
        samples = source().poll()
    backlog = {(s.labels["status"], s.labels["priority"]): s.value for s in samples
               if s.kpi == "support_open_tickets"}
    assert backlog == {("other", "normal"): 300, ("open", "normal"): 1}  # two series, not 301
    assert len([r for r in caplog.records if "does not document" in r.getMessage()]) == 1


@responses.activate
def test_the_backlog_search_pages_by_cursor_and_fails_on_a_page_it_cannot_read():
    backlog([ticket(1, "open", 40 * DAY)], more="b1")
    responses.get(SEARCH, match=[matchers.query_param_matcher(
        {"query": "type:ticket status<solved", "filter[type]": "ticket", "page[size]": "1000",
         "page[after]": "b1"})], json={"results": [ticket(2, "pending", 50 * DAY)],
                                       "meta": {"has_more": False}})
    export_from(None, page([], [], "c1"))
    no_ratings()
    assert set(by_id(source().read(NOW))) == {"1", "2"}

    responses.reset()
    responses.get(SEARCH, json={"tickets": []})  # not a search export page
    no_ratings()
    with pytest.raises(UpstreamDataError, match="search export page has no 'results'"):
        source().read(NOW)
