"""The Salesforce source against the fake Salesforce over real sockets: the records equal
what the simulated company says, token expiry mid-poll, small batches, the daily limit,
a single-currency org; and the fake's own SOQL, token and error behaviour."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import requests

from exporter.http import UpstreamError
from exporter.secrets import Secret
from exporter.simulator.crm_company import CrmCompany, generate_crm
from exporter.simulator.salesforce_fake import FakeSalesforce, record_id
from exporter.sources.crm.export import CrmData
from exporter.sources.crm.pipeline import Deal, Lead, Stage
from exporter.sources.salesforce import SalesforceConfig, SalesforceSource
from exporter.sources.salesforce.source import make_client

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
DAY = 86400
FX = {"usd": Decimal(1), "eur": Decimal("1.10"), "gbp": Decimal("1.27")}


@pytest.fixture(scope="module")
def company() -> CrmCompany:
    return generate_crm(seed=9, now=NOW)


def expected_deals(company: CrmCompany, multi_currency: bool = True) -> list[Deal]:
    """Open deals and those closed in the last 90 days, straight from the company."""
    deals = []
    for deal in company.deals:
        pipeline = company.pipeline(deal.pipeline)
        stage = pipeline.stage(deal.stage)
        if stage.is_closed and deal.closed <= NOW - 90 * DAY:
            continue
        currency = deal.currency if multi_currency else company.currency
        deals.append(Deal(
            id=record_id("006", deal.id),
            stage=Stage(pipeline.label, stage.label, stage.probability, stage.is_closed,
                        stage.is_won),
            amount=None if deal.amount is None else deal.amount * FX[currency],
            created=deal.created, closed=deal.closed if stage.is_closed else None,
            stage_changed=deal.stage_changed))
    return sorted(deals, key=lambda d: d.id)


def expected_leads(company: CrmCompany) -> list[Lead]:
    """Leads created, MQL, SQL or converted in the last 30 days: MQL and SQL times count
    only inside the window (the status history read), first touches only for new leads."""
    since = NOW - 30 * DAY

    def inside(at: int | None) -> int | None:
        return at if at is not None and at > since else None

    leads = []
    for lead in company.leads:
        record = Lead(id=record_id("00Q", lead.id), created=lead.created, mql=inside(lead.mql),
                      sql=inside(lead.sql), opportunity=lead.opportunity,
                      first_touch=lead.first_touch if lead.created > since else None)
        if any(at is not None and at > since
               for at in (record.created, record.mql, record.sql, record.opportunity)):
            leads.append(record)
    return sorted(leads, key=lambda lead: lead.id)


def source(fake: FakeSalesforce, **options) -> SalesforceSource:
    config = SalesforceConfig(login_url=fake.url, client_id=fake.client_id,
                              client_secret=Secret(fake.client_secret),
                              pipeline_field="RecordType.Name", rate_limit=1000, **options)
    return SalesforceSource(config, FX, clock=lambda: NOW,
                            client=make_client(config, sleep=lambda _: None, max_retries=2))


def sorted_data(data: CrmData) -> tuple[list[Deal], list[Lead]]:
    return sorted(data.deals, key=lambda d: d.id), sorted(data.leads, key=lambda lead: lead.id)


def data_calls(fake: FakeSalesforce) -> list[tuple[str, dict]]:
    return [(path, query) for _, path, query in fake.requests if path.startswith("/services/data")]


# --- the adapter against the fake -------------------------------------------------------


def test_the_records_are_the_company_s_deals_and_leads(company):
    with FakeSalesforce(company) as fake:
        started = time.monotonic()
        data = source(fake).read(NOW)
        elapsed = time.monotonic() - started
    deals, leads = sorted_data(data)
    assert deals == expected_deals(company)
    assert leads == expected_leads(company)
    assert data.unconverted == {}
    # The company is big enough to mean something, and a poll stays quick.
    assert len(deals) > 300 and len(leads) > 1500 and sum(d.amount is None for d in deals) > 0
    assert {d.stage.pipeline for d in deals} == {"Sales Pipeline", "Enterprise"}
    assert elapsed < 3.0


def test_first_touches_take_the_earlier_of_task_and_event(company):
    """Every fifth touched lead was first touched by an Event, then a Task two days later."""
    with FakeSalesforce(company) as fake:
        leads = {lead.id: lead for lead in source(fake).read(NOW).leads}
    by_event = [lead for lead in company.leads if lead.id % 5 == 0 and lead.first_touch
                and lead.created > NOW - 30 * DAY]
    assert len(by_event) > 100
    assert all(leads[record_id("00Q", lead.id)].first_touch == lead.first_touch
               for lead in by_event)


def test_a_token_expiring_mid_poll_is_renewed_once(company):
    with FakeSalesforce(company) as fake:
        salesforce = source(fake)
        first = sorted_data(salesforce.read(NOW))
        assert fake.tokens_issued == 1
        fake.expire_tokens(after_calls=3)  # the fourth call of the next poll gets a 401
        fake.reset_log()
        second = sorted_data(salesforce.read(NOW))
        assert fake.tokens_issued == 2 and salesforce.api.tokens == 2
        calls = data_calls(fake)
        # the refused call was repeated: the same query twice in a row
        assert calls[3] == calls[4]
    assert second == first


def test_an_expired_token_between_polls_is_renewed(company):
    with FakeSalesforce(company) as fake:
        salesforce = source(fake)
        salesforce.poll()
        fake.expire_tokens()
        salesforce.poll()
        assert fake.token_requests == 2


def test_small_batches_are_followed(company):
    with FakeSalesforce(company, batch_size=150) as fake:
        data = source(fake).read(NOW)
        more = [path for path, _ in data_calls(fake) if "/query/01g" in path]
    deals, leads = sorted_data(data)
    assert deals == expected_deals(company) and leads == expected_leads(company)
    assert len(more) >= len(leads) // 150  # the leads alone take that many further batches
    assert all(path.startswith("/services/data/v62.0/query/") for path in more)


def test_the_daily_limit_fails_the_poll_without_retries(company):
    with FakeSalesforce(company, daily_limit=5) as fake:
        with pytest.raises(UpstreamError) as caught:
            source(fake).poll()
        assert (caught.value.reason, caught.value.code) == ("rate_limited",
                                                            "REQUEST_LIMIT_EXCEEDED")
        assert fake.api_usage == 5
        assert len(data_calls(fake)) == 6  # five counted, the sixth refused and not repeated


def test_a_single_currency_org(company):
    with FakeSalesforce(company, multi_currency=False) as fake:
        data = source(fake).read(NOW)
        queries = [query["q"][0] for path, query in data_calls(fake) if "q" in query]
    deals, _ = sorted_data(data)
    assert deals == expected_deals(company, multi_currency=False)  # every amount in usd
    [deal_query] = [q for q in queries if "FROM Opportunity WHERE" in q]
    assert "CurrencyIsoCode" not in deal_query
    assert queries.count("SELECT DefaultCurrencyIsoCode FROM Organization") == 1


def test_a_wrong_secret_is_an_auth_error(company):
    with FakeSalesforce(company, client_secret="the-right-secret") as fake:
        config = SalesforceConfig(login_url=fake.url, client_id=fake.client_id,
                                  client_secret=Secret("a-wrong-secret"), rate_limit=1000)
        with pytest.raises(UpstreamError) as caught:
            SalesforceSource(config, FX).poll()
    assert caught.value.reason == "auth" and "a-wrong-secret" not in str(caught.value)


# --- the fake itself ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake(company):
    with FakeSalesforce(company, daily_limit=10_000) as server:
        yield server


def token(fake: FakeSalesforce) -> str:
    answer = requests.post(f"{fake.url}/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": fake.client_id,
        "client_secret": fake.client_secret})
    assert answer.status_code == 200
    return answer.json()["access_token"]


def soql(fake: FakeSalesforce, query: str) -> requests.Response:
    return requests.get(f"{fake.url}/services/data/v62.0/query", params={"q": query},
                        headers={"Authorization": f"Bearer {token(fake)}"})


def test_the_token_answer_has_salesforce_s_fields(fake):
    answer = requests.post(f"{fake.url}/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": fake.client_id,
        "client_secret": fake.client_secret}).json()
    assert set(answer) == {"access_token", "signature", "scope", "instance_url", "id",
                           "token_type", "issued_at"}
    assert answer["instance_url"] == fake.url and answer["token_type"] == "Bearer"
    assert answer["issued_at"].isdigit() and len(answer["issued_at"]) == 13  # milliseconds
    wrong = requests.post(f"{fake.url}/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": fake.client_id, "client_secret": "x"})
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_client")
    other = requests.post(f"{fake.url}/services/oauth2/token", data={"grant_type": "password"})
    assert other.json()["error"] == "unsupported_grant_type"


def test_records_with_a_relationship_field_and_limit_info(fake, company):
    answer = soql(fake, "SELECT Id, Amount, CloseDate, CreatedDate, RecordType.Name "
                        "FROM Opportunity ORDER BY CreatedDate DESC LIMIT 2")
    assert answer.status_code == 200
    assert answer.headers["Sforce-Limit-Info"].startswith("api-usage=")
    body = answer.json()
    assert (body["totalSize"], body["done"]) == (2, True)
    newest = max(company.deals, key=lambda d: d.created)
    first = body["records"][0]
    assert first["Id"] == record_id("006", newest.id)
    assert first["attributes"] == {"type": "Opportunity", "url": "/services/data/v62.0/sobjects/"
                                   f"Opportunity/{first['Id']}"}
    assert first["RecordType"]["Name"] == company.pipeline(newest.pipeline).label
    assert first["RecordType"]["attributes"]["type"] == "RecordType"
    assert first["CreatedDate"] == time.strftime("%Y-%m-%dT%H:%M:%S.000+0000",
                                                 time.gmtime(newest.created))
    assert len(first["CloseDate"]) == 10  # a date


def test_aggregates_group_alias_and_count(fake, company):
    body = soql(fake, "SELECT StageName, COUNT(Id), SUM(Amount) total FROM Opportunity "
                      "WHERE IsClosed = true GROUP BY StageName ORDER BY StageName").json()
    assert [r["StageName"] for r in body["records"]] == ["Closed lost", "Closed won"]
    won = [d for d in company.deals if d.stage == "closedwon"]
    record = body["records"][1]
    assert record["attributes"] == {"type": "AggregateResult"}
    assert record["expr0"] == len(won)  # an unnamed aggregate
    assert record["total"] == pytest.approx(float(sum(d.amount or 0 for d in won)))
    count = soql(fake, "SELECT COUNT() FROM Lead WHERE IsConverted = true").json()
    assert (count["totalSize"], count["records"]) == (
        sum(lead.opportunity is not None for lead in company.leads), [])


def test_where_and_or_in_and_literals(fake, company):
    since = NOW - 30 * DAY
    body = soql(fake, "SELECT Id FROM Lead WHERE (CreatedDate > 2026-12-16T08:00:00Z "
                      "AND Status IN ('marketing qualified', 'Sales Qualified')) "
                      "OR ConvertedDate >= 2027-01-14").json()
    expected = {record_id("00Q", lead.id) for lead in company.leads
                if (lead.created > since and lead.mql is not None and lead.opportunity is None)
                or (lead.opportunity is not None and lead.opportunity >= NOW - NOW % DAY - DAY)}
    assert {r["Id"] for r in body["records"]} == expected and expected


@pytest.mark.parametrize("query, code, text", [
    ("SELECT Id, Foo FROM Lead", "INVALID_FIELD", "No such column 'Foo' on entity 'Lead'"),
    ("SELECT Id FROM Leads", "INVALID_TYPE", "sObject type 'Leads' is not supported"),
    ("SELECT FROM Lead", "MALFORMED_QUERY", "unexpected token: 'FROM'"),
    ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY", "unexpected end of query"),
    ("SELECT Id FROM Lead WHERE IsConverted = true AND Status = 'x' OR Status = 'y'",
     "MALFORMED_QUERY", "unexpected token: 'OR'"),
    ("SELECT LeadId FROM LeadHistory WHERE NewValue = 'Sales Qualified'", "INVALID_FIELD",
     "field 'NewValue' can not be filtered"),
    ("SELECT Id FROM Lead WHERE CreatedDate > 2026-12-16", "INVALID_FIELD",
     "must be of type dateTime"),
    ("SELECT Id FROM Lead WHERE CreatedDate > '2026-12-16T00:00:00Z'", "INVALID_FIELD",
     "must be of type dateTime"),
    ("SELECT Id FROM Opportunity WHERE CloseDate > 2026-12-16T00:00:00Z", "INVALID_FIELD",
     "must be of type date"),
    ("SELECT Status, Id FROM Lead GROUP BY Status", "MALFORMED_QUERY",
     "Field must be grouped or aggregated: Id"),
    ("SELECT Id, RecordType.Nom FROM Opportunity", "INVALID_FIELD",
     "No such column 'Nom' on entity 'RecordType'"),
])
def test_bad_queries_are_salesforce_errors(fake, query, code, text):
    answer = soql(fake, query)
    assert answer.status_code == 400
    [error] = answer.json()
    assert error["errorCode"] == code and text in error["message"]


def test_the_error_points_at_the_spot():
    with FakeSalesforce(generate_crm(seed=1, now=NOW)) as server:
        [error] = soql(server, "SELECT Id, Foo FROM Lead").json()
    assert error["message"].startswith("\nSELECT Id, Foo FROM Lead\n           ^\n"
                                       "ERROR at Row:1:Column:12\n")


def test_an_aggregate_of_more_than_2000_groups_is_refused(fake):
    answer = soql(fake, "SELECT Id, MIN(CreatedDate) FROM Lead GROUP BY Id")
    assert answer.status_code == 400
    assert answer.json() == [{"message": "Aggregate query does not support queryMore(), use "
                                         "LIMIT to restrict the results to a single batch",
                              "errorCode": "EXCEEDED_ID_LIMIT"}]
    assert soql(fake, "SELECT Id, MIN(CreatedDate) FROM Lead GROUP BY Id LIMIT 2000"
                ).status_code == 200


def test_batches_and_their_locator(fake, company):
    fake.batch_size = 1000
    try:
        first = soql(fake, "SELECT Id FROM Lead").json()
    finally:
        fake.batch_size = 2000
    assert (first["totalSize"], first["done"], len(first["records"])) == \
        (len(company.leads), False, 1000)
    link = first["nextRecordsUrl"]
    assert link.startswith("/services/data/v62.0/query/01g") and link.endswith("-1000")
    second = requests.get(f"{fake.url}{link}",
                          headers={"Authorization": f"Bearer {token(fake)}"}).json()
    assert second["records"][0]["Id"] == record_id("00Q", company.leads[1000].id)
    bad = requests.get(f"{fake.url}/services/data/v62.0/query/01gnope-1000",
                       headers={"Authorization": f"Bearer {token(fake)}"})
    assert (bad.status_code, bad.json()[0]["errorCode"]) == (400, "INVALID_QUERY_LOCATOR")


def test_unknown_tokens_and_versions(fake):
    answer = requests.get(f"{fake.url}/services/data/v62.0/query",
                          params={"q": "SELECT Id FROM Lead"},
                          headers={"Authorization": "Bearer forged"})
    assert answer.status_code == 401
    assert answer.json() == [{"message": "Session expired or invalid",
                              "errorCode": "INVALID_SESSION_ID"}]
    old = requests.get(f"{fake.url}/services/data/v20.0/sobjects/Lead/describe",
                       headers={"Authorization": f"Bearer {token(fake)}"})
    assert (old.status_code, old.json()[0]["errorCode"]) == (404, "NOT_FOUND")


def test_describe_lists_the_fields(company):
    with FakeSalesforce(company, multi_currency=False) as single, FakeSalesforce(company) as multi:
        def names(server):
            answer = requests.get(f"{server.url}/services/data/v62.0/sobjects/Opportunity/describe",
                                  headers={"Authorization": f"Bearer {token(server)}"}).json()
            return {f["name"] for f in answer["fields"]}
        assert "CurrencyIsoCode" in names(multi) and "CurrencyIsoCode" not in names(single)
        assert "LastStageChangeDate" in names(single)


def test_tokens_expire_after_their_lifetime(company):
    with FakeSalesforce(company, token_lifetime=0.2) as server:
        bearer = {"Authorization": f"Bearer {token(server)}"}
        url = f"{server.url}/services/data/v62.0/sobjects/Lead/describe"
        assert requests.get(url, headers=bearer).status_code == 200
        time.sleep(0.3)
        assert requests.get(url, headers=bearer).status_code == 401
