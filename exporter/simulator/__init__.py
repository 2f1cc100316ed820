"""The built-in simulator of the upstream APIs: run the exporter with no accounts, test over
real sockets. Stripe below; Mailgun (mailgun_fake.py), HubSpot (hubspot_fake.py) and
Salesforce (salesforce_fake.py) serve their own simulated data (crm_company.py for both CRMs).

`generate_company()` builds a seeded SaaS company with a history as a
`StripeStore` of dahlia-shaped objects; `FakeStripe` serves a store over HTTP
on 127.0.0.1 the way api.stripe.com answers (events and invoices included),
with fault injection for tests; `CompanyTicker` keeps a company moving
(`FakeStripe(store, live=True)` runs one while serving); `SCENARIOS` put the
company in states that break documented thresholds, for the demo.
"""

from exporter.simulator.company import generate_company
from exporter.simulator.scenarios import SCENARIOS
from exporter.simulator.stripe_fake import FakeStripe
from exporter.simulator.stripe_store import API_VERSION, StripeStore
from exporter.simulator.ticker import CompanyTicker

__all__ = ["API_VERSION", "SCENARIOS", "CompanyTicker", "FakeStripe", "StripeStore",
           "generate_company"]
