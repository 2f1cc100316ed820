"""A built-in Stripe simulator: run the exporter with no accounts, test over real sockets.

`generate_company()` builds a seeded SaaS company as a `StripeStore` of
dahlia-shaped objects; `FakeStripe` serves a store over HTTP on 127.0.0.1 the
way api.stripe.com answers, with fault injection for tests.
"""

from exporter.simulator.company import generate_company
from exporter.simulator.stripe_fake import FakeStripe
from exporter.simulator.stripe_store import API_VERSION, StripeStore

__all__ = ["API_VERSION", "FakeStripe", "StripeStore", "generate_company"]
