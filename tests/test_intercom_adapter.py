"""The Intercom source through the real HTTP client against `responses` mocks in
Intercom's shapes (API 2.16): config, a full then an incremental read, the full
refresh dropping a deleted conversation, null statistics, priorities, ratings,
a 429 with Retry-After, and failures that keep the state."""

from __future__ import annotations

import json

import pytest
import responses

from exporter import config as config_module
from exporter.config import ConfigError
from exporter.http import UpstreamError
from exporter.sources.base import UpstreamDataError
from exporter.sources.helpdesk.tickets import HOUR, Rating, Ticket
from exporter.sources.intercom import IntercomSource
from exporter.sources.intercom.source import make_client

API = "https://api.intercom.io"
SEARCH = API + "/conversations/search"
TOKEN = "dG9rOmZha2UtaW50ZXJjb20tdG9rZW4="
NOW = 1_800_000_000
DAY = 86400


def parse_config_text(text, env=None):
    return config_module.parse("sources:\n  intercom:\n    " + text.replace("\n", "\n    "),
                               "kpi.yml", {"INTERCOM_TOKEN": TOKEN, **(env or {})}
                               ).sources["intercom"]


def conversation(id, state, created_ago, *, priority="not_priority", reply_after=None,
                 closed_ago=None, rating=None, rated_ago=None, updated_ago=60):
    created = NOW - created_ago
    statistics = None
    if reply_after is not None or closed_ago is not None:
        closed = None if closed_ago is None else NOW - closed_ago
        statistics = {"type": "conversation_statistics",
                      "first_admin_reply_at": None if reply_after is None else created + reply_after,
                      "time_to_admin_reply": reply_after, "last_close_at": closed,
                      "time_to_last_close": None if closed is None else closed - created}
    return {"type": "conversation", "id": str(id), "created_at": created,
            "updated_at": NOW - updated_ago, "state": state, "priority": priority,
            "statistics": statistics,
            "conversation_rating": None if rating is None else
            {"rating": rating, "remark": "", "created_at": NOW - rated_ago,
             "updated_at": NOW - rated_ago}}


def results(conversations, following=None):
    pages = {"type": "pages", "per_page": 150}
    if following:
        pages["next"] = {"per_page": 150, "starting_after": following}
    return {"type": "conversation.list", "conversations": conversations,
            "total_count": len(conversations), "pages": pages}


def source(**client_options):
    cfg = parse_config_text("access_token: ${INTERCOM_TOKEN}\n")
    client_options.setdefault("sleep", lambda _: None)
    return IntercomSource(cfg, client=make_client(cfg, max_retries=2, **client_options))


def sent_queries():
    return [json.loads(call.request.body) for call in responses.calls]


# -- config ---------------------------------------------------------------------

def test_config_regions_and_defaults(tmp_path):
    assert parse_config_text("access_token: x\n").base_url == "https://api.intercom.io"
    assert parse_config_text("access_token: x\nregion: EU\n").base_url == \
        "https://api.eu.intercom.io"
    assert parse_config_text("access_token: x\nregion: au\n").base_url == \
        "https://api.au.intercom.io"
    cfg = parse_config_text("access_token: x\nregion: eu\nbase_url: http://127.0.0.1:9/\n")
    assert cfg.base_url == "http://127.0.0.1:9" and cfg.full_sync_interval == DAY
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    assert parse_config_text(f"access_token_file: {secret}\n").access_token.reveal() == TOKEN


@pytest.mark.parametrize("text, key", [
    ("region: us\n", "access_token"),
    ("access_token: x\nregion: asia\n", "region"),
    ("access_token: x\nbase_url: api.intercom.io\n", "base_url"),
    ("access_token: x\nfull_sync_interval: daily\n", "full_sync_interval"),
    ("access_token: ''\n", "access_token"),
])
def test_bad_config_names_the_key(text, key):
    with pytest.raises(ConfigError) as error:
        parse_config_text(text)
    assert f"sources.intercom.{key}" in str(error.value)


# -- reads ----------------------------------------------------------------------

@responses.activate
def test_a_full_then_an_incremental_read_and_the_refresh_drops_a_deleted_one():
    responses.post(SEARCH, json=results([
        conversation(1, "closed", 5 * HOUR, priority="priority", reply_after=900,
                     closed_ago=2 * HOUR, rating=5, rated_ago=HOUR)], following="p2"))
    responses.post(SEARCH, json=results([conversation(2, "open", HOUR)]))
    intercom = source()
    first = {t.id: t for t in intercom.read(NOW).tickets}
    created1 = NOW - 5 * HOUR
    assert first["1"] == Ticket("1", "closed", "high", created1, solved=NOW - 2 * HOUR,
                                first_reply=created1 + 900, first_reply_seconds=900,
                                resolution_seconds=3 * HOUR)
    assert first["2"] == Ticket("2", "open", "normal", NOW - HOUR)  # null statistics
    full = sent_queries()
    assert full[0]["query"] == {"operator": "OR", "value": [
        {"field": "state", "operator": "!=", "value": "closed"},
        {"field": "updated_at", "operator": ">", "value": NOW - 30 * DAY}]}
    assert full[1]["pagination"] == {"per_page": 150, "starting_after": "p2"}

    # An hour later: only what changed since the first poll (less 5 minutes' overlap).
    responses.calls.reset()
    responses.replace(responses.POST, SEARCH, json=results([
        conversation(2, "snoozed", 2 * HOUR, reply_after=600), conversation(3, "open", 600)]))
    later = NOW + HOUR
    second = {t.id: t for t in intercom.read(later).tickets}
    assert sent_queries()[0]["query"] == {"field": "updated_at", "operator": ">",
                                          "value": NOW - 300}
    assert set(second) == {"1", "2", "3"} and second["2"].status == "snoozed"
    assert second["2"].first_reply_seconds == 600

    # A day later the full read runs again; conversation 1 was deleted meanwhile.
    responses.replace(responses.POST, SEARCH, json=results([conversation(2, "open", HOUR),
                                                            conversation(3, "open", 600)]))
    third = intercom.read(NOW + DAY)
    assert {t.id for t in third.tickets} == {"2", "3"}


@responses.activate
def test_ratings_four_and_five_are_satisfied():
    responses.post(SEARCH, json=results([
        conversation(i, "closed", 9 * HOUR, reply_after=60, closed_ago=8 * HOUR, rating=score,
                     rated_ago=HOUR * i) for i, score in enumerate((1, 2, 3, 4, 5), 1)]))
    assert source().read(NOW).ratings == [Rating(str(i), NOW - HOUR * i, i >= 4)
                                          for i in range(1, 6)]


@pytest.mark.parametrize("score", [0, 6, "5"])
@responses.activate
def test_a_rating_outside_one_to_five_fails_the_poll(score):
    responses.post(SEARCH, json=results([conversation(1, "closed", 9 * HOUR, closed_ago=HOUR,
                                                      rating=score, rated_ago=HOUR)]))
    with pytest.raises(UpstreamDataError, match="conversation 1 has rating"):
        source().read(NOW)


@responses.activate
def test_every_request_sends_the_version_and_a_bearer_token():
    responses.post(SEARCH, json=results([]))
    source().read(NOW)
    headers = responses.calls[0].request.headers
    assert headers["Intercom-Version"] == "2.16"
    assert headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_a_429_waits_for_retry_after():
    responses.post(SEARCH, status=429, headers={"Retry-After": "4"},
                   json={"type": "error.list", "errors": [{"code": "rate_limit_exceeded",
                                                           "message": "Exceeded rate limit"}]})
    responses.post(SEARCH, json=results([conversation(1, "open", HOUR)]))
    slept = []
    assert len(source(sleep=slept.append).read(NOW).tickets) == 1
    assert slept == [4.0]


@responses.activate
def test_a_failure_mid_read_keeps_the_state():
    responses.post(SEARCH, json=results([conversation(1, "open", HOUR)]))
    intercom = source()
    intercom.read(NOW)
    kept = intercom._state
    responses.replace(responses.POST, SEARCH, json=results([conversation(2, "open", HOUR)],
                                                           following="p2"))
    responses.post(SEARCH, status=500, json={"type": "error.list", "errors": []})
    with pytest.raises(UpstreamError):
        intercom.read(NOW + 600)
    assert intercom._state is kept and set(kept.conversations) == {"1"}


@responses.activate
def test_malformed_data_fails_without_the_token():
    responses.post(SEARCH, json=results([{**conversation(7, "open", HOUR), "created_at": "now"}]))
    with pytest.raises(UpstreamDataError) as error:
        source().read(NOW)
    assert "conversation 7" in str(error.value) and TOKEN not in str(error.value)


@pytest.mark.parametrize("conversation_json,message", [
    ({**conversation(1, "closed", 9 * HOUR), "statistics": None},
     "conversation 1 is closed but has no statistics.last_close_at"),
    (conversation(1, "open", HOUR, priority="urgent!"), "conversation 1 has priority 'urgent!'"),
    (conversation(1, "pending", HOUR), "conversation 1 has state 'pending'"),
    ({**conversation(1, "open", HOUR), "created_at": "yesterday"}, "not a Unix time"),
])
@responses.activate
def test_a_drifted_field_fails_the_poll_instead_of_counting_wrong(conversation_json, message):
    responses.post(SEARCH, json=results([conversation_json]))
    with pytest.raises(UpstreamDataError, match=message):
        source().read(NOW)
