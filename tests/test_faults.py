"""Every source behind a fault-injecting proxy, for every kind of fault, over real sockets.

For each source x fault: a good poll, then a poll through the fault that must
fail (source down, the last good values kept, the poll bounded in requests),
then a good poll again once the fault clears. The fakes are the simulator's;
only the proxy in between misbehaves.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Callable

import pytest

from exporter import catalog
from exporter.config import Config
from exporter.poller import Poller
from exporter.secrets import Secret
from exporter.simulator import FakeStripe, generate_company
from exporter.simulator.crm_company import generate_crm
from exporter.simulator.hubspot_fake import FakeHubSpot
from exporter.simulator.intercom_fake import FakeIntercom
from exporter.simulator.mailgun_fake import FakeMailgun, MailgunAccount
from exporter.simulator.salesforce_fake import FakeSalesforce
from exporter.simulator.support_company import generate_support
from exporter.simulator.zendesk_fake import FakeZendesk
from exporter.sources import SOURCE_TYPES, hubspot, intercom, mailgun, salesforce, stripe, zendesk
from fault_proxy import FaultProxy

pytestmark = pytest.mark.slow  # 48 cases, each three polls through a proxy

FAULTS = ("5xx", "429", "timeout", "reset", "truncated", "drift", "endless", "auth")
NOW = int(time.time())
FX = {"usd": Decimal(1), "eur": Decimal("1.10"), "gbp": Decimal("1.27"), "jpy": Decimal("0.0067")}
# How the client retries here: at once (no backoff sleeps), twice, with a short read timeout.
CLIENT = {"sleep": lambda _: None, "max_retries": 2}
TIMEOUT = 0.5


def each(items: Any, change: Callable[[dict], None]) -> Any:
    for item in items:
        change(item)
    return items


# Per source: the fake, its config pointed at the proxy, and how the proxy drifts
# a field the KPIs read and makes a listing endless.
def stripe_case(url_of):
    fake = FakeStripe(generate_company(seed=3, customers=60, now=NOW), live=False).start()

    def drift(path, body):  # events are read every poll (a steady one re-reads no subscription)
        if path == "/v1/events":
            each(body["data"], lambda e: e.pop("created"))
        return body

    def endless(path, body):
        if isinstance(body, dict) and body.get("object") == "list" and body.get("data"):
            body["has_more"] = True  # and every next page is this one again
        return body

    config = stripe.StripeConfig(api_key=Secret(fake.api_key), base_url=url_of(fake),
                                 rate_limit=1000, timeout=TIMEOUT)
    return fake, config, drift, endless, lambda path: path


def mailgun_case(url_of):
    fake = FakeMailgun(MailgunAccount(3, NOW)).start()

    def drift(path, body):
        if path == "/v1/analytics/metrics":
            each(body["items"], lambda item: item.pop("dimensions"))
        return body

    def endless(path, body):
        if path == "/v1/analytics/metrics":
            body["pagination"] = {**body.get("pagination", {}), "total": 10**9}
        return body

    config = mailgun.MailgunConfig(api_key=Secret(fake.api_key), base_url=url_of(fake),
                                   rate_limit=1000, timeout=TIMEOUT)
    return fake, config, drift, endless, lambda path: path


def hubspot_case(url_of):
    fake = FakeHubSpot(generate_crm(3, NOW), search_per_second=None, burst_limit=None).start()

    def drift(path, body):  # the pipelines are read every poll, full or incremental
        if path == "/crm/v3/pipelines/deals":
            each(body["results"], lambda p: each(p["stages"], lambda s: s["metadata"].pop(
                "isClosed")))
        return body

    def endless(path, body):
        if path.startswith(("/crm/v3/objects/deals", "/crm/v3/objects/contacts")):
            body["paging"] = {"next": {"after": "100"}}
        return body

    config = hubspot.HubSpotConfig(access_token=Secret(fake.access_token), base_url=url_of(fake),
                                   rate_limit=1000, search_rate_limit=1000, timeout=TIMEOUT)
    return fake, config, drift, endless, lambda path: path


def salesforce_case(url_of):
    fake = FakeSalesforce(generate_crm(4, NOW), batch_size=200).start()

    def drift(path, body):  # stages are read every poll; opportunities only when changed
        if path.endswith("/query") and isinstance(body, dict):
            each(body.get("records", []), lambda r: r.pop("IsClosed", None)
                 if (r.get("attributes") or {}).get("type") in ("Opportunity", "OpportunityStage")
                 else None)
        return body

    def endless(path, body):
        if "/query" in path and isinstance(body, dict) and body.get("records"):
            body["done"] = False
            body["nextRecordsUrl"] = "/services/data/v62.0/query/01gEndless-200"
        return body

    config = salesforce.SalesforceConfig(
        login_url=url_of(fake), client_id=fake.client_id,
        client_secret=Secret(fake.client_secret), pipeline_field="RecordType.Name",
        rate_limit=1000, timeout=TIMEOUT)
    # Every query and its next batches are one listing.
    return fake, config, drift, endless, lambda path: "query" if "/query" in path else path


def zendesk_case(url_of):
    fake = FakeZendesk(generate_support(3, NOW), export_limit=None).start()

    def drift(path, body):  # ratings are read every poll; the export only has changes
        if path == "/api/v2/satisfaction_ratings":
            each(body["satisfaction_ratings"], lambda r: (r.pop("created_at"), r.pop("updated_at")))
        return body

    def endless(path, body):
        if path.endswith("/cursor.json"):
            body.update(end_of_stream=False, after_cursor="c2VlbjoxMjM=")
        return body

    config = zendesk.ZendeskConfig(base_url=url_of(fake), email=fake.email,
                                   api_token=Secret(fake.api_token), export_rate_limit=6000,
                                   rate_limit=1000, timeout=TIMEOUT)
    return fake, config, drift, endless, lambda path: path


def intercom_case(url_of):
    fake = FakeIntercom(generate_support(4, NOW)).start()

    def drift(path, body):  # an incremental search may find nothing: drift the page itself
        if path == "/conversations/search":
            body["items"] = body.pop("conversations")
        return body

    def endless(path, body):
        if path == "/conversations/search":
            body["pages"] = {**body.get("pages", {}), "next": {"starting_after": "WzE3MDBd"}}
        return body

    config = intercom.IntercomConfig(access_token=Secret(fake.access_token), base_url=url_of(fake),
                                     rate_limit=1000, timeout=TIMEOUT)
    return fake, config, drift, endless, lambda path: path


CASES = {"stripe": stripe_case, "mailgun": mailgun_case, "hubspot": hubspot_case,
         "salesforce": salesforce_case, "zendesk": zendesk_case, "intercom": intercom_case}
MODULES = {"stripe": stripe, "mailgun": mailgun, "hubspot": hubspot, "salesforce": salesforce,
           "zendesk": zendesk, "intercom": intercom}


@pytest.fixture(scope="module", params=sorted(CASES))
def rig(request):
    name = request.param
    proxies = []

    def url_of(fake):
        proxies.append(FaultProxy(fake.url, drift=lambda p, b: b, endless=lambda p, b: b,
                                  hang=TIMEOUT * 3))
        return proxies[0].url

    fake, source_config, drift, endless, listing = CASES[name](url_of)
    proxy = proxies[0]
    proxy.drift, proxy.endless, proxy.listing = drift, endless, listing
    config = Config(file="<faults>", listen=("127.0.0.1", 0), reporting_currency="usd",
                    fx_rates=FX, sources={name: source_config}, kpis=catalog.KPIS)
    source = SOURCE_TYPES[name].create(source_config, config)
    source.client.close()
    source.client = MODULES[name].source.make_client(source_config, **CLIENT)
    if name == "salesforce":
        source.api.client = source.client
    poller = Poller([source])
    yield name, source, poller, proxy
    proxy.close()
    fake.stop()


def values(state) -> dict:
    return {(s.kpi, tuple(sorted(s.labels.items()))): s.value for s in state.samples}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_marks_the_source_down_keeps_the_values_and_clears(rig, fault):
    name, source, poller, proxy = rig
    proxy.set(None)
    good = poller.poll_once(source)
    assert good.up, good.last_error
    before = values(good)
    assert before

    proxy.set(fault)
    started = time.monotonic()
    failed = poller.poll_once(source)
    spent = time.monotonic() - started
    assert not failed.up, f"{name} polled through {fault}"
    assert values(failed) == before  # the last good values stay
    assert proxy.requests <= 40, f"{name} sent {proxy.requests} requests through {fault}"
    assert spent < 60  # bounded (the real bound is the poll's deadline)
    reason = {"5xx": "http_5xx", "429": "rate_limited", "timeout": "timeout",
              "reset": "connection", "truncated": "malformed", "drift": "malformed",
              "endless": "endless_paging", "auth": "auth"}[fault]
    assert failed.failure_reasons[reason] >= 1, (name, fault, failed.last_error)

    proxy.set(None)
    recovered = poller.poll_once(source)
    assert recovered.up, recovered.last_error
