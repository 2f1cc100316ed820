"""The Salesforce source through the real HTTP client against `responses` mocks in
Salesforce's shapes: config, the token request, query batches, an expired token, a spent
API quota, currencies, stages, lead status history and first touches, and secrets."""

from __future__ import annotations

import itertools
import json
import logging
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
import yaml

from exporter import catalog
from exporter.config import Config, ConfigError, Section
from exporter.http import UpstreamError
from exporter.secrets import Secret
from exporter.sources.base import UpstreamDataError
from exporter.sources.crm.pipeline import Deal, Lead, Stage
from exporter.sources.salesforce import SalesforceConfig, SalesforceSource
from exporter.sources.salesforce.source import create, make_client, parse_config

LOGIN = "https://acme.my.salesforce.com"
DATA = f"{LOGIN}/services/data/v62.0"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
CLIENT_ID = "3MVG9A2kN3Bn17hsWsLDatgr7Qjh2X0qZx7A9vYlB8Kd4mT2p6Ws3e5R1uXoHcJ_q8n"
SECRET = "8E2A1F0C9D7B6A5F4E3D2C1B0A9F8E7D6C5B4A3F2E1D0C9B8A7F6E5D4C3B2A1F"
TOKEN = "00D5g000004KpiX!AQ4AQFz7l6Fv9wq3Xw1bN0Rk2uYs8JtP5cE4aH7mL3dG6"
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
DAY = 86400
HOUR = 3600
FX = {"usd": Decimal(1), "eur": Decimal("1.10")}


def sfid(prefix: str, n: int) -> str:
    return f"{prefix}{n:012d}AAA"


def dt(at: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime(at))


def day(at: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def midnight(at: int) -> int:
    return at - at % DAY


def token_answer(token: str = TOKEN) -> dict:
    return {"access_token": token, "signature": "dGhpcyBpcyBub3QgYSBzaWduYXR1cmU=",
            "scope": "api", "instance_url": LOGIN,
            "id": "https://login.salesforce.com/id/00D5g000004KpiXEAS/0055g00000KpiXyAAB",
            "token_type": "Bearer", "issued_at": "1799999990000"}


def batch(records: list, next_url: str | None = None, total: int | None = None) -> dict:
    answer = {"totalSize": len(records) if total is None else total, "done": next_url is None,
              "records": records}
    if next_url:
        answer["nextRecordsUrl"] = next_url
    return answer


def rec(kind: str, **fields) -> dict:
    url = f"/services/data/v62.0/sobjects/{kind}/{fields.get('Id', '')}"
    return {"attributes": {"type": kind, "url": url}, **fields}


def agg(**fields) -> dict:
    return {"attributes": {"type": "AggregateResult"}, **fields}


LIMIT_INFO = {"Sforce-Limit-Info": "api-usage=18/15000"}
DESCRIBE = {"name": "Opportunity", "fields": [
    {"name": n, "type": "string"} for n in
    ("Id", "Name", "StageName", "Amount", "Probability", "CloseDate", "CreatedDate", "IsClosed",
     "IsWon", "LastStageChangeDate", "CurrencyIsoCode", "RecordTypeId")]}
STAGES = [
    rec("OpportunityStage", ApiName="Prospecting", MasterLabel="Prospecting",
        DefaultProbability=10.0, IsClosed=False, IsWon=False),
    rec("OpportunityStage", ApiName="Negotiation", MasterLabel="Negotiation/Review",
        DefaultProbability=90.0, IsClosed=False, IsWon=False),
    rec("OpportunityStage", ApiName="Closed Won", MasterLabel="Closed Won",
        DefaultProbability=100.0, IsClosed=True, IsWon=True),
    rec("OpportunityStage", ApiName="Closed Lost", MasterLabel="Closed Lost",
        DefaultProbability=0.0, IsClosed=True, IsWon=False),
]


def opp(n: int, stage: str, amount, currency: str, created_days: float, *, close_days=-30,
        changed_days=None, closed=False, won=False, record_type="New Business",
        probability=None) -> dict:
    return rec("Opportunity", Id=sfid("006", n), StageName=stage, Amount=amount,
               Probability=probability, CloseDate=day(NOW - close_days * DAY),
               CreatedDate=dt(NOW - int(created_days * DAY)), IsClosed=closed, IsWon=won,
               CurrencyIsoCode=currency,
               LastStageChangeDate=None if changed_days is None else dt(NOW - changed_days * DAY),
               RecordType=None if record_type is None else {
                   "attributes": {"type": "RecordType", "url": "/services/data/v62.0/sobjects/"
                                                               "RecordType/0125g000000AbCdAAK"},
                   "Name": record_type})


OPPORTUNITIES = [
    opp(1, "Prospecting", 10000.0, "USD", 10),
    opp(2, "Prospecting", None, "USD", 20, record_type=None),  # no amount, no record type
    opp(3, "Negotiation", 20000.0, "EUR", 30, changed_days=2),
    opp(4, "Negotiation", 900000.0, "JPY", 6, changed_days=1),  # no fx rate
    opp(5, "Closed Won", 40000.0, "USD", 30, close_days=10, changed_days=10, closed=True,
        won=True),
    opp(6, "Closed Lost", 7000.0, "USD", 40, close_days=3, changed_days=3, closed=True),
    opp(7, "Legacy Stage", 1000.0, "USD", 5, probability=50.0),  # no such OpportunityStage
]
NEW, DEFAULT = "New Business", "default"
# Hand-checked: EUR 20,000 x 1.10 = 22,000; JPY has no rate; stage 7 falls back to its own 50 %.
EXPECTED_DEALS = [
    Deal(sfid("006", 1), Stage(NEW, "Prospecting", Decimal("0.1")), Decimal(10000),
         NOW - 10 * DAY, None, NOW - 10 * DAY),
    Deal(sfid("006", 2), Stage(DEFAULT, "Prospecting", Decimal("0.1")), None,
         NOW - 20 * DAY, None, NOW - 20 * DAY),
    Deal(sfid("006", 3), Stage(NEW, "Negotiation/Review", Decimal("0.9")), Decimal(22000),
         NOW - 30 * DAY, None, NOW - 2 * DAY),
    Deal(sfid("006", 4), Stage(NEW, "Negotiation/Review", Decimal("0.9")), None,
         NOW - 6 * DAY, None, NOW - 1 * DAY),
    Deal(sfid("006", 5), Stage(NEW, "Closed Won", Decimal(1), True, True), Decimal(40000),
         NOW - 30 * DAY, midnight(NOW - 10 * DAY), NOW - 10 * DAY),
    Deal(sfid("006", 6), Stage(NEW, "Closed Lost", Decimal(0), True, False), Decimal(7000),
         NOW - 40 * DAY, midnight(NOW - 3 * DAY), NOW - 3 * DAY),
    Deal(sfid("006", 7), Stage(NEW, "Legacy Stage", Decimal("0.5")), Decimal(1000),
         NOW - 5 * DAY, None, NOW - 5 * DAY),
]

A, B, C, D, E = (sfid("00Q", n) for n in range(1, 6))
LEADS_SINCE = [  # created in the 30 days, or converted on a later date
    rec("Lead", Id=A, CreatedDate=dt(NOW - 5 * DAY), Status="Marketing Qualified",
        IsConverted=False, ConvertedDate=None, ConvertedContactId=None),
    rec("Lead", Id=B, CreatedDate=dt(NOW - 8 * DAY), Status="Sales Qualified",
        IsConverted=False, ConvertedDate=None, ConvertedContactId=None),
    rec("Lead", Id=C, CreatedDate=dt(NOW - 10 * DAY), Status="Marketing Qualified",
        IsConverted=False, ConvertedDate=None,
        ConvertedContactId=None),  # created an MQL: no history
    rec("Lead", Id=E, CreatedDate=dt(NOW - 50 * DAY), Status="Closed - Converted",
        IsConverted=True, ConvertedDate=day(NOW - 3 * DAY), ConvertedContactId=sfid("003", 5)),
]
LEAD_D = rec("Lead", Id=D, CreatedDate=dt(NOW - 40 * DAY), Status="Sales Qualified",
             IsConverted=False, ConvertedDate=None, ConvertedContactId=None)


HISTORY_ROWS = itertools.count(1)


def change(lead: str, old: str, new: str, at: int) -> dict:
    return rec("LeadHistory", Id=sfid("017", next(HISTORY_ROWS)), LeadId=lead, OldValue=old,
               NewValue=new, CreatedDate=dt(at))


HISTORY = [
    change(A, "Open - Not Contacted", "Marketing Qualified", NOW - 4 * DAY),
    change(B, "Marketing Qualified", "Sales Qualified", NOW - 2 * DAY),
    change(B, "Open - Not Contacted", "Marketing Qualified", NOW - 7 * DAY),  # not in time order
    change(D, "Marketing Qualified", "Sales Qualified", NOW - 20 * DAY),  # created 40 days ago
    change(E, "Sales Qualified", "Closed - Converted", NOW - 3 * DAY),
    change(sfid("00Q", 6), "Open - Not Contacted", "Working - Contacted", NOW - DAY),  # unmapped
]
TASKS = [agg(WhoId=A, firstTouch=dt(NOW - 5 * DAY + HOUR)),
         agg(WhoId=B, firstTouch=dt(NOW - 8 * DAY + 5 * HOUR))]
EVENTS = [agg(WhoId=A, firstTouch=dt(NOW - 5 * DAY + 3 * HOUR)),
          agg(WhoId=B, firstTouch=dt(NOW - 8 * DAY + 2 * HOUR))]  # B: the Event came first
EXPECTED_LEADS = [
    Lead(A, NOW - 5 * DAY, mql=NOW - 4 * DAY, first_touch=NOW - 5 * DAY + HOUR),
    Lead(B, NOW - 8 * DAY, mql=NOW - 7 * DAY, sql=NOW - 2 * DAY,
         first_touch=NOW - 8 * DAY + 2 * HOUR),
    Lead(C, NOW - 10 * DAY, mql=NOW - 10 * DAY),
    Lead(D, NOW - 40 * DAY, sql=NOW - 20 * DAY),  # its MQL was before the window
    Lead(E, NOW - 50 * DAY, opportunity=midnight(NOW - 3 * DAY)),
]


def answer_soql(queries: list[str], answers: dict[str, object]):
    """A responses callback for GET .../query: the answer for the query's FROM object
    (a list of batches is served one per call), recording each query."""
    def reply(request):
        soql = parse_qs(urlsplit(request.url).query)["q"][0]
        queries.append(soql)
        kind = soql.split(" FROM ")[1].split()[0]
        if kind == "Lead" and " Id IN " in soql:
            kind = "Lead by id"
        elif kind == "Lead" and "SystemModstamp" in soql:
            kind = "Lead modified"
        elif kind in ("Task", "Event") and "GROUP BY" not in soql:
            kind += " on" if " WhoId IN " in soql else " since"
        answer = answers[kind]
        if isinstance(answer, list) and answer and isinstance(answer[0], tuple):
            status, body = answer.pop(0) if len(answer) > 1 else answer[0]
        else:
            status, body = 200, batch(answer)
        return status, LIMIT_INFO, json.dumps(body)
    return reply


def mock_org(rsps, queries: list[str], **overrides):
    answers = {"OpportunityStage": STAGES, "Opportunity": OPPORTUNITIES, "Lead": LEADS_SINCE,
               "Lead by id": [LEAD_D], "LeadHistory": HISTORY, "Task": TASKS, "Event": EVENTS,
               "Lead modified": [], "Task since": [], "Event since": [], "Task on": [],
               "Event on": [],
               "Organization": [rec("Organization", DefaultCurrencyIsoCode="USD")]}
    answers.update(overrides)
    rsps.post(TOKEN_URL, json=token_answer())
    rsps.get(f"{DATA}/sobjects/Opportunity/describe", json=DESCRIBE, headers=LIMIT_INFO)
    rsps.add_callback("GET", f"{DATA}/query", callback=answer_soql(queries, answers))


def config(**options) -> SalesforceConfig:
    options.setdefault("pipeline_field", "RecordType.Name")
    return SalesforceConfig(login_url=LOGIN, client_id=CLIENT_ID, client_secret=Secret(SECRET),
                            rate_limit=1000, **options)


def source(**options) -> SalesforceSource:
    sf = config(**options)
    return SalesforceSource(sf, FX, clock=lambda: NOW,
                            client=make_client(sf, sleep=lambda _: None, max_retries=2))


def by_id(records):
    return sorted(records, key=lambda r: r.id)


# --- config ----------------------------------------------------------------------------


def parse(text: str) -> SalesforceConfig:
    section = Section("kpi.yml", "sources.salesforce", yaml.safe_load(text))
    parsed = parse_config(section)
    section.finish()
    return parsed


GOOD = f"{{login_url: '{LOGIN}/', client_id: {CLIENT_ID}, client_secret: {SECRET}"


def test_a_full_config_and_the_defaults():
    sf = parse(GOOD + ", api_version: 61.0, poll_interval: 5m, pipeline_field: RecordType.Name,"
               " lead_statuses: {mql: [MQL, Marketing Qualified]}, max_stages: 12}")
    assert (sf.login_url, sf.client_id, sf.client_secret.reveal()) == (LOGIN, CLIENT_ID, SECRET)
    assert (sf.api_version, sf.poll_interval, sf.pipeline_field, sf.max_stages) == \
        ("61.0", 300, "RecordType.Name", 12)
    assert sf.lead_statuses == {"mql": ("MQL", "Marketing Qualified"), "sql": ("Sales Qualified",)}
    defaults = parse(GOOD + "}")
    assert (defaults.api_version, defaults.poll_interval, defaults.pipeline_field,
            defaults.rate_limit, defaults.timeout) == ("62.0", 900, None, 5.0, 30)
    assert defaults.lead_statuses == {"mql": ("Marketing Qualified",), "sql": ("Sales Qualified",)}


@pytest.mark.parametrize("text, key", [
    ("{client_id: x, client_secret: y}", "login_url"),
    (f"{{login_url: {LOGIN}, client_secret: y}}", "client_id"),
    (f"{{login_url: {LOGIN}, client_id: x}}", "client_secret"),
    ("{login_url: 'http://acme.my.salesforce.com', client_id: x, client_secret: y}", "login_url"),
    ("{login_url: 'https://login.salesforce.com', client_id: x, client_secret: y}", "login_url"),
    (f"{{login_url: '{LOGIN}/services/oauth2', client_id: x, client_secret: y}}", "login_url"),
    (GOOD + ", api_version: 62}", "api_version"),
    (GOOD + ", api_version: v62.0}", "api_version"),
    (GOOD + ", api_version: '62.0.1'}", "api_version"),
    (GOOD + ", lead_statuses: {lead: [Open]}}", "lead_statuses"),
    (GOOD + ", lead_statuses: {mql: []}}", "lead_statuses"),
    (GOOD + ", lead_statuses: [Marketing Qualified]}", "lead_statuses"),
    (GOOD + ", lead_statuses: {sql: [1]}}", "lead_statuses"),
    (GOOD + ", pipeline_field: 'RecordType Name'}", "pipeline_field"),
    (GOOD + ", max_stages: 2.5}", "max_stages"),
    (GOOD + ", pipline_field: RecordType.Name}", "pipline_field"),  # a typo
])
def test_bad_config_names_the_key(text, key):
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith(f"kpi.yml: sources.salesforce.{key}: ") and "\n" not in message


def test_login_salesforce_com_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="My Domain"):
        parse("{login_url: 'https://login.salesforce.com', client_id: x, client_secret: y}")


def test_create_takes_fx_rates_reporting_currency_and_the_catalog_response_target():
    kpis = catalog.apply_overrides({"sales_lead_response": catalog.KpiOverride(target=3600)})
    whole = Config(file="kpi.yml", listen=("127.0.0.1", 19877), reporting_currency="eur",
                   fx_rates={"usd": Decimal("0.9")}, sources={}, kpis=kpis)
    sf = create(config(max_stages=7), whole)
    assert sf.fx_rates == {"eur": Decimal(1), "usd": Decimal("0.9")}
    assert (sf.options.max_stages, sf.options.response_target) == (7, 3600)
    sf.close()


# --- a poll, hand-checked ---------------------------------------------------------------


@responses.activate
def test_a_poll_reads_deals_and_leads_into_hand_checked_records():
    queries: list[str] = []
    mock_org(responses, queries)
    data = source().read(NOW)
    assert by_id(data.deals) == EXPECTED_DEALS
    assert data.unconverted == {"jpy": 1}
    assert by_id(data.leads) == EXPECTED_LEADS
    assert queries[:4] == [
        "SELECT ApiName, MasterLabel, DefaultProbability, IsClosed, IsWon FROM OpportunityStage",
        "SELECT Id, StageName, Amount, Probability, CloseDate, CreatedDate, IsClosed, IsWon, "
        "CurrencyIsoCode, LastStageChangeDate, RecordType.Name FROM Opportunity "
        "WHERE IsClosed = false OR CloseDate > 2026-10-17",
        "SELECT Id, CreatedDate, Status, IsConverted, ConvertedDate, ConvertedContactId FROM Lead "
        "WHERE CreatedDate > 2026-12-16T08:00:00Z OR ConvertedDate > 2026-12-16",
        "SELECT Id, LeadId, OldValue, NewValue, CreatedDate FROM LeadHistory "
        "WHERE Field = 'Status' AND CreatedDate > 2026-12-16T08:00:00Z",
    ]
    # Only D reached a stage in the window without being read yet; only A, B, C are new.
    assert queries[4] == ("SELECT Id, CreatedDate, Status, IsConverted, ConvertedDate, "
                          "ConvertedContactId FROM Lead "
                          f"WHERE Id IN ('{D}')")
    ids = f"('{A}','{B}','{C}')"
    assert queries[5:] == [
        f"SELECT WhoId, MIN(CreatedDate) firstTouch FROM Task WHERE WhoId IN {ids} GROUP BY WhoId",
        f"SELECT WhoId, MIN(CreatedDate) firstTouch FROM Event WHERE WhoId IN {ids} GROUP BY WhoId"]


@responses.activate
def test_poll_exports_the_shared_crm_samples():
    mock_org(responses, [])
    samples = source().poll()
    amounts = {(s.labels["pipeline"], s.labels["stage"]): s.value for s in samples
               if s.kpi == "sales_pipeline_amount"}
    assert amounts == {(NEW, "Prospecting"): 10000, (DEFAULT, "Prospecting"): 0,
                       (NEW, "Negotiation/Review"): 22000, (NEW, "Legacy Stage"): 1000}
    weighted = {(s.labels["stage"]): s.value for s in samples
                if s.kpi == "sales_pipeline_weighted_amount" and s.labels["pipeline"] == NEW}
    assert weighted["Negotiation/Review"] == pytest.approx(19800)
    one = {(s.kpi, s.labels.get("window"), s.labels.get("currency")): s.value for s in samples}
    assert one[("unconverted_objects", None, "jpy")] == 1
    assert one[("sales_deals_won", "30d", None)] == 1
    assert one[("sales_mqls", "30d", None)] == 3
    assert one[("sales_sqls", "30d", None)] == 2
    assert one[("sales_opportunities", "30d", None)] == 1
    assert all(s.labels["source"] == "salesforce" for s in samples)


@responses.activate
def test_without_pipeline_field_every_deal_is_in_the_default_pipeline():
    queries: list[str] = []
    mock_org(responses, queries)
    data = source(pipeline_field=None).read(NOW)
    assert {d.stage.pipeline for d in data.deals} == {DEFAULT}
    assert "RecordType" not in queries[1]


@responses.activate
def test_a_single_currency_org_asks_its_currency_once():
    queries: list[str] = []
    single = [{k: v for k, v in o.items() if k != "CurrencyIsoCode"} for o in OPPORTUNITIES[:3]]
    describe = {"name": "Opportunity", "fields": [f for f in DESCRIBE["fields"]
                                                  if f["name"] != "CurrencyIsoCode"]}
    mock_org(responses, queries, Opportunity=single,
             Organization=[rec("Organization", DefaultCurrencyIsoCode="EUR")])
    responses.replace(responses.GET, f"{DATA}/sobjects/Opportunity/describe", json=describe)
    sf = source()
    deals = by_id(sf.read(NOW).deals)
    sf.read(NOW)
    assert [d.amount for d in deals] == [Decimal(11000), None, Decimal(22000)]  # all EUR
    assert "CurrencyIsoCode" not in queries[1]
    assert [q for q in queries if "Organization" in q] == \
        ["SELECT DefaultCurrencyIsoCode FROM Organization"]


# --- the token ----------------------------------------------------------------------------


@responses.activate
def test_the_token_is_requested_with_the_client_credentials_form_and_kept():
    mock_org(responses, [])
    sf = source()
    sf.poll()
    sf.poll()
    tokens = [c for c in responses.calls if c.request.url == TOKEN_URL]
    assert len(tokens) == 1  # lazily once, then kept between polls
    request = tokens[0].request
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body) == {"grant_type": ["client_credentials"],
                                      "client_id": [CLIENT_ID], "client_secret": [SECRET]}
    calls = [c for c in responses.calls if c.request.url != TOKEN_URL]
    assert calls and all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in calls)
    assert all(c.request.url.startswith(DATA) for c in calls)
    assert sum(c.request.url.endswith("/describe") for c in calls) == 1  # learned once


@responses.activate
def test_an_expired_token_gets_one_new_token_and_the_call_is_repeated():
    queries: list[str] = []
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    mock_org(responses, queries, OpportunityStage=[(401, expired), (200, batch(STAGES))])
    responses.replace(responses.POST, TOKEN_URL, json=token_answer())
    responses.add(responses.POST, TOKEN_URL, json=token_answer("00D5g000004KpiX!second-token"))
    data = source().read(NOW)
    assert by_id(data.deals) == EXPECTED_DEALS
    assert len([c for c in responses.calls if c.request.url == TOKEN_URL]) == 2
    stage_calls = [c for c in responses.calls if "OpportunityStage" in c.request.url]
    assert [c.request.headers["Authorization"] for c in stage_calls] == \
        [f"Bearer {TOKEN}", "Bearer 00D5g000004KpiX!second-token"]


@responses.activate
def test_a_second_401_fails_the_poll_after_one_renewal():
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    responses.post(TOKEN_URL, json=token_answer())
    responses.get(f"{DATA}/sobjects/Opportunity/describe", status=401, json=expired)
    with pytest.raises(UpstreamError) as caught:
        source().poll()
    assert (caught.value.reason, caught.value.status, caught.value.code) == \
        ("auth", 401, "INVALID_SESSION_ID")
    assert [c.request.url.endswith("/token") for c in responses.calls] == [True, False, True, False]


@pytest.mark.parametrize("answer", [
    {"error": "invalid_client", "error_description": "invalid client credentials"},
    {"error": "invalid_client", "error_description": f"invalid client credentials: {SECRET}"},
    {"error": "invalid_grant", "error_description": "request not supported on this domain"},
])
@responses.activate
def test_refused_credentials_are_a_clear_auth_error_that_names_no_secret(answer, caplog):
    caplog.set_level(logging.DEBUG)
    responses.post(TOKEN_URL, status=400, json=answer)
    with pytest.raises(UpstreamError) as caught:
        source().poll()
    message = str(caught.value)
    assert (caught.value.reason, caught.value.status) == ("auth", 400)
    assert "token request was refused" in message and "My Domain" in message
    assert SECRET not in message and SECRET not in caplog.text and SECRET not in repr(caught.value)
    assert len(responses.calls) == 1  # never retried


@responses.activate
def test_a_token_answer_without_instance_url_marks_the_data_bad():
    responses.post(TOKEN_URL, json={**token_answer(), "instance_url": "ftp://elsewhere"})
    with pytest.raises(UpstreamDataError, match="instance_url"):
        source().poll()


@responses.activate
def test_no_secret_or_token_appears_in_logs_of_a_poll(caplog):
    caplog.set_level(logging.DEBUG)
    mock_org(responses, [])
    sf = source()
    sf.poll()
    responses.replace(responses.GET, f"{DATA}/sobjects/Opportunity/describe", status=500,
                      json=[{"message": f"boom {TOKEN} {SECRET}",
                             "errorCode": "UNKNOWN_EXCEPTION"}])
    sf._deal_fields = None  # ask the describe again, which now fails echoing both
    with pytest.raises(UpstreamError) as caught:
        sf.poll()
    assert caught.value.reason == "http_5xx"
    for text in (caplog.text, str(caught.value)):
        assert SECRET not in text and TOKEN not in text


# --- limits and batches --------------------------------------------------------------------


@responses.activate
def test_a_spent_daily_quota_fails_the_poll_with_one_request_and_no_retries():
    responses.post(TOKEN_URL, json=token_answer())
    responses.get(f"{DATA}/sobjects/Opportunity/describe", status=403, headers={
        "Sforce-Limit-Info": "api-usage=15000/15000"}, json=[
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    with pytest.raises(UpstreamError) as caught:
        source().poll()
    assert (caught.value.reason, caught.value.code) == ("rate_limited", "REQUEST_LIMIT_EXCEEDED")
    assert len(responses.calls) == 2  # the token, then the one refused call
    assert caught.value.status == 403


@responses.activate
def test_query_batches_follow_next_records_url_on_the_instance():
    queries: list[str] = []
    first = batch(LEADS_SINCE[:2], "/services/data/v62.0/query/01gD0000002HU6KIAW-2", total=4)
    mock_org(responses, queries, Lead=[(200, first)])
    responses.get(f"{DATA}/query/01gD0000002HU6KIAW-2", json=batch(LEADS_SINCE[2:], total=4))
    data = source().read(NOW)
    assert by_id(data.leads) == EXPECTED_LEADS
    [more] = [c for c in responses.calls if "/query/01g" in c.request.url]
    assert more.request.url == f"{DATA}/query/01gD0000002HU6KIAW-2"
    assert more.request.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("link", [
    "https://evil.example/services/data/v62.0/query/01gD0000002HU6KIAW-2",
    "//evil.example/services/data/v62.0/query/01gD0000002HU6KIAW-2",
    "/services/apexrest/steal",
    "/services/data/../../oauth2/revoke",
    None,
])
@responses.activate
def test_a_next_batch_anywhere_else_is_refused(link):
    first = {"totalSize": 4, "done": False, "records": LEADS_SINCE[:2]}
    if link is not None:
        first["nextRecordsUrl"] = link
    mock_org(responses, [], Lead=[(200, first)])
    with pytest.raises(UpstreamDataError, match="next batch"):
        source().read(NOW)
    assert all(urlsplit(c.request.url).netloc == "acme.my.salesforce.com"
               for c in responses.calls)


@responses.activate
def test_first_touches_go_200_leads_to_a_query():
    queries: list[str] = []
    many = [rec("Lead", Id=sfid("00Q", 100 + n), CreatedDate=dt(NOW - DAY),
                Status="Open - Not Contacted", IsConverted=False, ConvertedDate=None,
                ConvertedContactId=None)
            for n in range(450)]
    mock_org(responses, queries, Lead=many, LeadHistory=[], Task=[], Event=[])
    leads = source().read(NOW).leads
    assert len(leads) == 450 and all(lead.first_touch is None for lead in leads)
    touches = [q for q in queries if "firstTouch" in q]
    assert [q.count("'00Q") for q in touches] == [200, 200, 200, 200, 50, 50]
    assert [q.split(" FROM ")[1].split()[0] for q in touches] == ["Task", "Event"] * 3


@responses.activate
def test_a_converted_leads_first_touch_is_on_its_contact_from_its_creation():
    """Converting a lead moves its activities to the contact it became; a contact
    that existed before may have older ones, which are not the lead's touch."""
    queries: list[str] = []
    contact = sfid("003", 7)
    converted = rec("Lead", Id=sfid("00Q", 7), CreatedDate=dt(NOW - 6 * DAY),
                    Status="Closed - Converted", IsConverted=True, ConvertedDate=day(NOW - DAY),
                    ConvertedContactId=contact)
    mock_org(responses, queries, Lead=[converted], LeadHistory=[], Task=[], Event=[],
             **{"Task on": [rec("Task", WhoId=contact, CreatedDate=dt(NOW - 9 * DAY)),  # older
                            rec("Task", WhoId=contact, CreatedDate=dt(NOW - 5 * DAY))],
                "Event on": [rec("Event", WhoId=contact, CreatedDate=dt(NOW - 6 * DAY + HOUR))]})
    [lead] = source().read(NOW).leads
    assert lead.first_touch == NOW - 6 * DAY + HOUR and lead.opportunity == midnight(NOW - DAY)
    on_contact = [q for q in queries if f"WhoId IN ('{contact}')" in q]
    assert [q.split(" FROM ")[1].split()[0] for q in on_contact] == ["Task", "Event"]
    assert all("CreatedDate > 2026-12-16T08:00:00Z" in q for q in on_contact)


@responses.activate
def test_a_malformed_date_marks_the_data_bad():
    broken = [{**OPPORTUNITIES[0], "CreatedDate": "yesterday"}]
    mock_org(responses, [], Opportunity=broken)
    with pytest.raises(UpstreamDataError, match="yesterday"):
        source().read(NOW)


# --- schema drift: a field the KPIs read, gone or of another type, fails the poll ------

def _without(record: dict, field: str) -> dict:
    return {k: v for k, v in record.items() if k != field}


@pytest.mark.parametrize("overrides,message", [
    ({"Opportunity": [_without(OPPORTUNITIES[4], "IsClosed")] + OPPORTUNITIES[5:]},
     f"Opportunity {sfid('006', 5)} has no field IsClosed"),
    ({"Opportunity": [{**OPPORTUNITIES[4], "IsWon": "true"}]},
     f"Opportunity {sfid('006', 5)} has IsWon 'true', not true or false"),
    ({"Opportunity": [{**OPPORTUNITIES[4], "IsClosed": False}]},
     f"Opportunity {sfid('006', 5)} is won but not closed"),
    ({"Opportunity": [{**OPPORTUNITIES[4], "CloseDate": None}]},
     f"Opportunity {sfid('006', 5)} has no CloseDate"),
    ({"Opportunity": [{**OPPORTUNITIES[4], "Amount": "forty thousand"}]}, "is 'forty thousand'"),
    ({"Opportunity": [_without(OPPORTUNITIES[0], "StageName")]}, "has no field StageName"),
    ({"Opportunity": [{**OPPORTUNITIES[0], "StageName": None}]}, "record has no StageName"),
    ({"Opportunity": [{**OPPORTUNITIES[0], "CreatedDate": 1795000000}]}, "is not a date"),
    ({"OpportunityStage": [_without(STAGES[2], "DefaultProbability")] + STAGES[3:]},
     "has no field DefaultProbability"),
    ({"Lead": [_without(LEADS_SINCE[3], "IsConverted")]}, "has no field IsConverted"),
    ({"Lead": [{**LEADS_SINCE[3], "IsConverted": 1}]}, "has IsConverted 1"),
    ({"Lead": [{**LEADS_SINCE[3], "ConvertedDate": None}]}, "has no ConvertedDate"),
    ({"LeadHistory": [_without(HISTORY[0], "NewValue")]}, "has no field NewValue"),
    ({"Lead": [{**LEADS_SINCE[0], "ConvertedContactId": 3}]}, "has no ConvertedContactId"),
])
def test_a_drifted_field_fails_the_poll_instead_of_counting_wrong(overrides, message):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_org(rsps, [], **overrides)
        with pytest.raises(UpstreamDataError, match=message):
            source().poll()
