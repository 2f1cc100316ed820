"""`kpi-exporter demo`: the real exporter polling the built-in simulator.

The fake upstreams (Stripe, Mailgun, HubSpot, Salesforce, Zendesk, Intercom) listen on
loopback ports chosen by the OS; the exporter reaches them over HTTP exactly as it
reaches the real APIs. The product's own database is an SQLite file the sql source
reads, like a user's.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from exporter import catalog
from exporter.app import Exporter
from exporter.config import DEFAULT_LISTEN, Config, from_mapping, parse_listen
from exporter.secrets import Secret
from exporter.webconfig import WebConfig
from exporter.server import BackgroundHttpServer
from exporter.simulator import SCENARIOS, FakeStripe
from exporter.simulator.application import FakeApplication
from exporter.simulator.crm_company import generate_crm
from exporter.simulator.hubspot_fake import FakeHubSpot
from exporter.simulator.intercom_fake import FakeIntercom
from exporter.simulator.mailgun_fake import FakeMailgun, MailgunAccount
from exporter.simulator.product_company import product_database
from exporter.simulator.salesforce_fake import FakeSalesforce
from exporter.simulator.support_company import generate_support
from exporter.simulator.zendesk_fake import FakeZendesk
from exporter.sources.hubspot import HubSpotConfig
from exporter.sources.intercom import IntercomConfig
from exporter.sources.mailgun import MailgunConfig
from exporter.sources.salesforce import SalesforceConfig
from exporter.sources.stripe import StripeConfig
from exporter.sources.zendesk import ZendeskConfig

# Rates roughly as of late 2026; the simulator bills in these currencies.
DEMO_FX_RATES = {"usd": Decimal(1), "eur": Decimal("1.10"), "gbp": Decimal("1.27"),
                 "jpy": Decimal("0.0067")}


def demo_config(stripe: FakeStripe, mailgun: FakeMailgun, hubspot: FakeHubSpot,
                salesforce: FakeSalesforce, zendesk: FakeZendesk, intercom: FakeIntercom,
                listen: tuple[str, int], poll_interval: float,
                product_database: str) -> Config:
    sql, custom = demo_sql(product_database, poll_interval)
    return Config(
        file="<demo>",
        listen=listen,
        reporting_currency="usd",
        fx_rates=dict(DEMO_FX_RATES),
        sources={
            "stripe": StripeConfig(api_key=Secret(stripe.api_key), base_url=stripe.url,
                                   poll_interval=poll_interval, rate_limit=100),
            "mailgun": MailgunConfig(api_key=Secret(mailgun.api_key), base_url=mailgun.url,
                                     poll_interval=poll_interval, rate_limit=100,
                                     suppressions_interval=10 * poll_interval),
            # HubSpot's own pace (searches 4 a second, under the fake's 5 a second).
            "hubspot": HubSpotConfig(access_token=Secret(hubspot.access_token),
                                     base_url=hubspot.url, poll_interval=poll_interval),
            "salesforce": SalesforceConfig(login_url=salesforce.url,
                                           client_id=salesforce.client_id,
                                           client_secret=Secret(salesforce.client_secret),
                                           pipeline_field="RecordType.Name",
                                           poll_interval=poll_interval, rate_limit=100),
            # The fake's export limit is off: a demo polls every 30 s, not every 5 minutes.
            "zendesk": ZendeskConfig(base_url=zendesk.url, email=zendesk.email,
                                     api_token=Secret(zendesk.api_token),
                                     poll_interval=poll_interval, export_rate_limit=6000,
                                     rate_limit=100),
            "intercom": IntercomConfig(access_token=Secret(intercom.access_token),
                                       base_url=intercom.url, poll_interval=poll_interval,
                                       rate_limit=100),
            "sql": sql,
        },
        kpis=catalog.KPIS + custom,
    )


# The demo product's own database (exporter/simulator/product_company.py), as a user
# would configure the sql source for it, with one KPI of the config's own.
DEMO_SQL = {
    "product": {"database": "app", "events_table": "events", "user_column": "user_id",
                "time_column": "occurred_at"},
    "nps": {"database": "app", "table": "nps_responses", "score_column": "score",
            "time_column": "responded_at"},
}
DEMO_CUSTOM_KPIS = {"signups": {
    "database": "app", "help": "Accounts created in the trailing 24 hours, by plan.",
    "unit": "count", "labels": ["plan"], "target": 20, "direction": "above", "team": "growth",
    "thresholds": {"warning": {"below": 2}},
    "sql": "SELECT plan, count(*) AS value FROM users WHERE created_at > datetime(:now, "
           "'-1 day') AND created_at <= :now GROUP BY plan"}}


def demo_sql(database_path: str, poll_interval: float) -> tuple[Any, tuple[catalog.Kpi, ...]]:
    """The sql source's config and the custom KPIs, read as the config file would be."""
    parsed = from_mapping({"sources": {"sql": {
        "databases": {"app": {"url": f"sqlite:///{database_path}"}},
        "poll_interval": poll_interval, **DEMO_SQL}}, "custom_kpis": DEMO_CUSTOM_KPIS}, "<demo>")
    return parsed.sources["sql"], parsed.kpis[len(catalog.KPIS):]


# The default company: about the size the KPI reference's targets describe
# (MRR a few times the 100 K target, ARPA near 500), calm under every threshold.
DEMO_CUSTOMERS = 500
DEMO_SEED = 9


class DemoExporter(Exporter):
    """An Exporter that also owns the fake upstream servers it polls."""

    def __init__(self, *, listen: tuple[str, int] | None = None,
                 customers: int = DEMO_CUSTOMERS, seed: int = DEMO_SEED,
                 poll_interval: float = 30.0, live: bool = True, scenario: str = "calm",
                 web: WebConfig | None = None, app_listen: tuple[str, int] | None = None):
        # live: the simulated company keeps signing up, upgrading, churning and
        # failing payments while the demo runs, at its own pace (see ticker.py).
        now = int(time.time())
        chosen = SCENARIOS[scenario]
        store, ticker_options = chosen.build(seed, customers, now)
        self.fake_stripe = FakeStripe(store, live=live, ticker_options=ticker_options).start()
        self.fake_mailgun = FakeMailgun(MailgunAccount(seed, now, trouble=chosen.email_trouble)
                                        ).start()
        # Two business units: one sells through HubSpot, the other through Salesforce.
        self.fake_hubspot = FakeHubSpot(generate_crm(seed, now, chosen.crm_profile)).start()
        self.fake_salesforce = FakeSalesforce(
            generate_crm(seed + 1, now, chosen.crm_profile)).start()
        # Two support desks as well: one on Zendesk, the other on Intercom.
        self.fake_zendesk = FakeZendesk(generate_support(seed, now, chosen.support_profile),
                                        export_limit=None).start()
        self.fake_intercom = FakeIntercom(
            generate_support(seed + 1, now, chosen.support_profile)).start()
        # And the product's own database, read by the sql source.
        self.product_database = product_database(seed, now, chosen.product_profile)
        # The application whose SLOs the kit's platform rules watch: Prometheus
        # scrapes its request metrics (/metrics) and its probe (/probe) itself.
        self.application = FakeApplication(outage=chosen.platform_outage)
        self.application_server = BackgroundHttpServer(
            *(app_listen or ("127.0.0.1", 0)), self.application.wsgi).start()
        config = demo_config(self.fake_stripe, self.fake_mailgun, self.fake_hubspot,
                             self.fake_salesforce, self.fake_zendesk, self.fake_intercom,
                             listen or parse_listen(DEFAULT_LISTEN), poll_interval,
                             self.product_database)
        try:
            super().__init__(config, web=web)
        except Exception:
            self._stop_fakes()
            raise

    def stop(self) -> None:
        super().stop()
        self._stop_fakes()

    def _stop_fakes(self) -> None:
        self.application_server.stop()
        self.fake_stripe.stop()
        self.fake_mailgun.stop()
        self.fake_hubspot.stop()
        self.fake_salesforce.stop()
        self.fake_zendesk.stop()
        self.fake_intercom.stop()
