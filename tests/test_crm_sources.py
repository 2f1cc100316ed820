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


@pytest.fixture(scope="module")
def polled():
    now = int(time.time())
    company = generate_crm(seed=5, now=now, profile=PROFILE)
    with FakeHubSpot(company) as hubspot_fake, FakeSalesforce(company) as salesforce_fake:
        hubspot = HubSpotSource(
            HubSpotConfig(access_token=Secret(hubspot_fake.access_token),
                          base_url=hubspot_fake.url), FX, clock=lambda: now)
        salesforce = SalesforceSource(
            SalesforceConfig(login_url=salesforce_fake.url, client_id=salesforce_fake.client_id,
                             client_secret=Secret(salesforce_fake.client_secret),
                             pipeline_field="RecordType.Name"), FX, clock=lambda: now)
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
