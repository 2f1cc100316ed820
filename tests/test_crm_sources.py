"""Both CRM sources give the same answers for the same deals and leads.

One simulated company (exporter/simulator/crm_company.py) is served by the fake
HubSpot and the fake Salesforce, each in its own API's shapes; each source
reads it over real sockets. Their samples must be equal, `source` label aside,
and equal to the KPIs computed straight from the company's records.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from exporter.secrets import Secret
from exporter.simulator.crm_company import CrmProfile, generate_crm
from exporter.simulator.hubspot_fake import FakeHubSpot
from exporter.simulator.salesforce_fake import FakeSalesforce
from exporter.sources.crm import export
from exporter.sources.crm.export import CrmData
from exporter.sources.crm.pipeline import Deal, Lead, Stage
from exporter.sources.hubspot import HubSpotConfig, HubSpotSource
from exporter.sources.salesforce.source import SalesforceConfig, SalesforceSource

FX = {"usd": Decimal(1), "eur": Decimal("1.10")}  # no gbp rate: those deals are unconverted
PROFILE = CrmProfile(leads_per_day=12, deals_per_day=1.5, history_days=120)


def reference(company, now: int) -> CrmData:
    """The company's records as the math wants them, with no API in between."""
    deals, unconverted = [], {}
    for deal in company.deals:
        pipeline = company.pipeline(deal.pipeline)
        stage = pipeline.stage(deal.stage)
        amount = deal.amount
        if amount is not None:
            if deal.currency in FX:
                amount = amount * FX[deal.currency]
            else:
                unconverted[deal.currency] = unconverted.get(deal.currency, 0) + 1
                amount = None
        deals.append(Deal(str(deal.id), Stage(pipeline.label, stage.label, stage.probability,
                                              stage.is_closed, stage.is_won),
                          amount, deal.created, deal.closed, deal.stage_changed))
    leads = [Lead(str(lead.id), lead.created, lead.mql, lead.sql, lead.opportunity,
                  lead.first_touch) for lead in company.leads]
    return CrmData(deals, leads, unconverted)


def comparable(samples) -> dict:
    return {(s.kpi, tuple(sorted((k, v) for k, v in s.labels.items() if k != "source"))):
            s.value for s in samples}


def crm_sources(hubspot_fake, salesforce_fake, now: int):
    """Both CRM sources, reading the two fakes at the moment `now`."""
    hubspot = HubSpotSource(
        HubSpotConfig(access_token=Secret(hubspot_fake.access_token),
                      base_url=hubspot_fake.url), FX, clock=lambda: now)
    salesforce = SalesforceSource(
        SalesforceConfig(login_url=salesforce_fake.url, client_id=salesforce_fake.client_id,
                         client_secret=Secret(salesforce_fake.client_secret),
                         pipeline_field="RecordType.Name"), FX, clock=lambda: now)
    return hubspot, salesforce


def salesforce_on(fake, clock: dict):
    """A Salesforce source reading `fake` at the moment clock["now"] (set between polls)."""
    return SalesforceSource(
        SalesforceConfig(login_url=fake.url, client_id=fake.client_id,
                         client_secret=Secret(fake.client_secret),
                         pipeline_field="RecordType.Name"), FX, clock=lambda: clock["now"])


@pytest.fixture(scope="module")
def polled():
    now = int(time.time())
    company = generate_crm(seed=5, now=now, profile=PROFILE)
    with FakeHubSpot(company) as hubspot_fake, FakeSalesforce(company) as salesforce_fake:
        hubspot, salesforce = crm_sources(hubspot_fake, salesforce_fake, now)
        try:
            yield company, now, hubspot.poll(), salesforce.poll()
        finally:
            hubspot.close()
            salesforce.close()


def test_hubspot_and_salesforce_give_the_same_kpis(polled):
    _, _, hubspot, salesforce = polled
    assert {s.labels["source"] for s in hubspot} == {"hubspot"}
    assert {s.labels["source"] for s in salesforce} == {"salesforce"}
    assert comparable(hubspot) == comparable(salesforce)


def test_both_equal_the_kpis_of_the_company_itself(polled):
    company, now, hubspot, _ = polled
    expected = export.samples("reference", reference(company, now), now)
    assert comparable(hubspot) == comparable(expected)


def test_the_company_exercises_every_kpi(polled):
    """The comparison means something only if every kind of series is there."""
    _, _, hubspot, _ = polled
    metrics = {s.kpi for s in hubspot}
    assert {"sales_pipeline_amount", "sales_win_rate", "sales_cycle",
            "sales_average_deal_amount", "sales_mql_to_sql_conversion",
            "sales_sql_to_opportunity_conversion", "sales_lead_response",
            "sales_lead_response_within_target", "unconverted_objects"} <= metrics
    values = comparable(hubspot)
    assert values[("sales_stalled_deals", ())] > 0
    assert {labels for metric, labels in values if metric == "sales_pipeline_amount"} >= {
        (("pipeline", "Enterprise"), ("stage", "Discovery")),
        (("pipeline", "Sales Pipeline"), ("stage", "Contract sent"))}


def test_salesforce_polls_between_full_reads_equal_a_full_read_of_a_changing_company():
    """Deals move, close, reopen, change amount and appear between two polls; the
    second poll reads only what SystemModstamp says changed, and its numbers equal
    a fresh source's full read of the same moment."""
    from exporter.simulator.crm_company import CrmDeal, midnight

    start = int(time.time())
    company = generate_crm(seed=6, now=start, profile=PROFILE)
    clock = {"now": start}

    with FakeSalesforce(company) as fake:
        kept = salesforce_on(fake, clock)
        first = kept.poll()
        at = clock["now"] = start + 3600
        default = company.pipeline("default")
        open_deals = [d for d in company.deals if d.pipeline == "default"
                      and not default.stage(d.stage).is_closed]
        old_closed = [d for d in company.deals if d.closed is not None
                      and d.closed < start - 120 * 86400]
        moved, won, lost, repriced = open_deals[:4]
        moved.stage = "contractsent" if moved.stage != "contractsent" else "qualifiedtobuy"
        won.stage, won.closed = "closedwon", midnight(at)
        lost.stage, lost.closed = "closedlost", midnight(at)
        repriced.amount = Decimal("123456")
        for deal in (moved, won, lost):
            deal.stage_changed = at - 60
        changed = [moved, won, lost, repriced]
        if old_closed:  # reopened: back in the pipeline although closed long ago
            reopened = old_closed[0]
            reopened.stage, reopened.closed, reopened.stage_changed = \
                "appointmentscheduled", None, at - 60
            reopened.pipeline = "default"
            changed.append(reopened)
        new = CrmDeal(id=max(d.id for d in company.deals) + 1, name="New deal",
                      pipeline="default", stage="appointmentscheduled", amount=Decimal("5000"),
                      currency="usd", created=at - 120, stage_changed=at - 120,
                      modified=at - 120)
        company.deals.append(new)
        for deal in changed:
            deal.modified = at - 60
        fake.reload()
        fake.reset_log()
        incremental = kept.poll()
        queries = [q["q"][0] for _, path, q in fake.requests if path.endswith("/query")
                   and "FROM Opportunity " in q.get("q", [""])[0]]
        fresh = salesforce_on(fake, clock)
        full = fresh.poll()
        kept.close()
        fresh.close()
    assert len(queries) == 1 and "SystemModstamp > " in queries[0]
    assert comparable(incremental) == comparable(full)
    before, after = comparable(first), comparable(incremental)
    changed_series = {key for key in before.keys() | after.keys()
                      if before.get(key) != after.get(key)}
    assert {metric for metric, _ in changed_series} >= {
        "sales_deals_won", "sales_deals_lost", "sales_pipeline_amount", "sales_open_deals"}


def test_salesforce_lead_polls_between_full_reads_equal_a_full_read_of_a_changing_company():
    """Between two polls six hours apart leads arrive, qualify, convert and get
    their first touch, an older lead reaches SQL, and the window moves on past the
    oldest; the second poll asks only what changed (SystemModstamp, CreatedDate)
    and its funnel equals a fresh source's full read of the same moment."""
    from exporter.simulator.crm_company import CrmLead, midnight

    start = int(time.time())
    company = generate_crm(seed=7, now=start, profile=PROFILE)
    clock = {"now": start}
    window = export.LEAD_LOOKBACK

    with FakeSalesforce(company) as fake:
        kept = salesforce_on(fake, clock)
        first = kept.poll()
        at = clock["now"] = start + 6 * 3600
        recent = [lead for lead in company.leads if lead.created > at - window + 86400]
        qualifies, to_sql = [lead for lead in recent if lead.mql is None][:2]
        converts = next(lead for lead in recent if lead.sql is not None
                        and lead.opportunity is None)
        touched = next(lead for lead in recent if lead.first_touch is None
                       and lead not in (qualifies, to_sql))
        older = next(lead for lead in company.leads if lead.created < start - window - 86400
                     and lead.mql is not None and lead.mql < start - window and lead.sql is None)
        leaving = [lead for lead in company.leads if start - window < lead.created <= at - window]
        assert leaving  # the window moves past some
        qualifies.mql = at - 600
        to_sql.mql, to_sql.sql = at - 900, at - 300
        converts.opportunity = midnight(at)
        # A Task (or an Event), committed late (the fake makes none after its company's
        # now): the lead itself is not changed.
        touched.first_touch = start - 100
        older.sql = at - 400
        new = CrmLead(id=max(lead.id for lead in company.leads) + 1,
                      email="new@prospect.example", created=at - 1200, modified=at - 1200,
                      mql=at - 1000, first_touch=start - 50)
        company.leads.append(new)
        for lead in (qualifies, to_sql, converts):
            lead.modified = at - 60
        # The older lead's change shows only in its history here (its SystemModstamp is
        # left as it was), so it is asked by id, as a full read asks it.
        fake.reload()
        fake.reset_log()
        incremental = kept.poll()
        asked = [q["q"][0] for _, path, q in fake.requests if path.endswith("/query")]
        fresh = salesforce_on(fake, clock)
        full = fresh.poll()
        kept.close()
        fresh.close()
    assert comparable(incremental) == comparable(full)
    lead_queries = [q for q in asked if " FROM Lead" in q or " FROM Task" in q
                    or " FROM Event" in q]
    assert len(lead_queries) == 5 and not any("GROUP BY" in q for q in lead_queries)
    assert sum("SystemModstamp > " in q for q in lead_queries) == 1
    assert sum(" Id IN " in q for q in lead_queries) == 1  # the older lead
    before, after = comparable(first), comparable(incremental)
    changed_series = {metric for metric, _ in before.keys() | after.keys()
                      if before.get((metric, _)) != after.get((metric, _))}
    assert {"sales_mql_to_sql_conversion", "sales_sql_to_opportunity_conversion"} <= \
        changed_series


def test_both_crms_backfill_the_closed_deals_and_the_funnel_of_past_days():
    """At each past step, the closed deals and the lead funnel from either CRM equal
    the company's own records as they stood then (built here, independently); the
    open pipeline of the past is not written; the last step is a poll."""
    from exporter.backfill import steps

    now = int(time.time())
    company = generate_crm(seed=5, now=now, profile=PROFILE)
    moments = steps(now, 40, 86400)

    def truth(at: int) -> dict:
        everything = reference(company, now)
        closed = [d for d in everything.deals if d.closed is not None and d.closed <= at
                  and d.created <= at]

        def until(moment):
            return moment if moment is not None and moment <= at else None

        leads = [Lead(lead.id, lead.created, until(lead.mql), until(lead.sql),
                      until(lead.opportunity), until(lead.first_touch))
                 for lead in everything.leads if lead.created <= at]
        found = comparable(export.samples("reference", CrmData(closed, leads), at))
        return {key: value for key, value in found.items() if key[0] in export.BACKFILLED}

    with FakeHubSpot(company) as hubspot_fake, FakeSalesforce(company) as salesforce_fake:
        hubspot, salesforce = crm_sources(hubspot_fake, salesforce_fake, now)
        try:
            by_source = {source.name: dict(source.backfill(moments))
                         for source in (hubspot, salesforce)}
            polled = comparable(hubspot.poll())
        finally:
            hubspot.close()
            salesforce.close()
    for name, backfilled in by_source.items():
        assert list(backfilled) == moments
        for at in (moments[0], moments[15], moments[-2]):
            assert comparable(backfilled[at]) == truth(at), (name, at)
        assert comparable(backfilled[now]) == polled, name  # the last step: a poll
    assert truth(moments[15])[("sales_deals_won", (("window", "30d"),))] > 0
    assert truth(moments[15])[("sales_mqls", (("window", "30d"),))] > 0
