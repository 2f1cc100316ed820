"""The Stripe source: config, fetching, and the samples of one poll.

Fetching follows Stripe's limits: expansions go at most four levels deep, so
tiers come from `/v1/prices?expand[]=data.tiers` and coupons from `/v1/coupons`
(dahlia no longer embeds the coupon in a discount), while subscriptions are
listed with their discounts expanded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from exporter.config import Section
from exporter.http import HttpClient
from exporter.sources.base import Sample
from exporter.sources.stripe import parse
from exporter.sources.stripe.mrr import FAILED_PAYMENTS_WINDOW, MrrRules, RevenueKpis, revenue_kpis
from exporter.sources.stripe.records import Charge, Coupon, Price, Subscription
from exporter.secrets import Secret

log = logging.getLogger(__name__)

NAME = "stripe"
STRIPE_VERSION = "2026-07-29.dahlia"
PAGE_SIZE = 100


@dataclass(frozen=True)
class StripeConfig:
    api_key: Secret
    base_url: str = "https://api.stripe.com"
    poll_interval: float = 300.0
    rate_limit: float = 25.0  # requests per second; Stripe allows 100 live, 25 in test mode
    timeout: float = 30.0
    mrr: MrrRules = field(default_factory=MrrRules)


def parse_config(section: Section) -> StripeConfig:
    mrr = section.section("mrr")
    rules = MrrRules(
        include_past_due=mrr.boolean("include_past_due", True),
        include_cancel_at_period_end=mrr.boolean("include_cancel_at_period_end", True),
        apply_once_discounts=mrr.boolean("apply_once_discounts", False),
    )
    mrr.finish()
    base_url = section.string("base_url", StripeConfig.base_url)
    if not base_url.startswith(("http://", "https://")):
        raise section.error("base_url", "must start with http:// or https://")
    return StripeConfig(
        api_key=section.secret("api_key"),
        base_url=base_url.rstrip("/"),
        poll_interval=section.duration("poll_interval", StripeConfig.poll_interval),
        rate_limit=section.number("rate_limit", StripeConfig.rate_limit, minimum=0.1),
        timeout=section.duration("timeout", StripeConfig.timeout),
        mrr=rules,
    )


@dataclass(frozen=True)
class StripeData:
    subscriptions: list[Subscription]
    charges: list[Charge]


def list_all(client: HttpClient, path: str, params: list[tuple[str, str]]) -> Iterator[dict]:
    """Every object of a Stripe list endpoint, following `starting_after` cursors."""

    params = [("limit", str(PAGE_SIZE)), *params]

    def next_page(page: Any) -> tuple[str, list] | None:
        if page.get("has_more") and page["data"]:
            return path, [*params, ("starting_after", page["data"][-1]["id"])]
        return None

    for page in client.paginate(path, params, next_page):
        if not isinstance(page, dict) or not isinstance(page.get("data"), list):
            raise parse.MalformedObject(f"{path}: response is not a Stripe list")
        yield from page["data"]


def fetch(client: HttpClient, now: int) -> StripeData:
    prices = {p["id"]: parse.parse_price(p) for p in list_all(client, "/v1/prices", [
        ("expand[]", "data.tiers"), ("expand[]", "data.currency_options")])
        if p.get("type", "recurring") == "recurring" and p.get("recurring")}
    coupons = {c["id"]: parse.parse_coupon(c) for c in list_all(client, "/v1/coupons", [
        ("expand[]", "data.currency_options"), ("expand[]", "data.applies_to")])}

    raw_subscriptions = list(list_all(client, "/v1/subscriptions", [
        ("status", "all"), ("expand[]", "data.discounts.source.coupon"),
        ("expand[]", "data.items.data.discounts"),
    ]))
    items_of = _complete_items(client, raw_subscriptions, coupons)
    _fetch_missing_tiers(client, raw_subscriptions, items_of, prices)

    subscriptions = [parse.parse_subscription(sub, prices, coupons, items_of.get(sub["id"]))
                     for sub in raw_subscriptions]
    charges = [parse.parse_charge(c) for c in list_all(
        client, "/v1/charges", [("created[gte]", str(now - FAILED_PAYMENTS_WINDOW))])]
    return StripeData(subscriptions=subscriptions, charges=charges)


def _complete_items(client: HttpClient, raw_subscriptions: list[dict],
                    coupons: dict[str, Coupon]) -> dict[str, list[dict]]:
    """Item lists to fetch separately: when a subscription embeds only its first
    items, or when an item discount's coupon is not in the coupon list (deleted
    coupons still discount): `/v1/subscription_items` can expand it, four levels
    being too deep from the subscription list."""

    def unknown_coupon(item: dict) -> bool:
        return any(isinstance(d, dict) and parse.coupon_id(d) not in coupons
                   for d in item.get("discounts") or [])

    items_of = {}
    for sub in raw_subscriptions:
        embedded = sub.get("items") or {}
        if embedded.get("has_more") or any(unknown_coupon(i) for i in embedded.get("data") or []):
            items_of[sub["id"]] = list(list_all(client, "/v1/subscription_items", [
                ("subscription", sub["id"]), ("expand[]", "data.discounts.source.coupon")]))
    return items_of


def _all_items(raw_subscriptions: list[dict], items_of: dict[str, list[dict]]) -> Iterator[dict]:
    for sub in raw_subscriptions:
        yield from items_of.get(sub["id"]) or (sub.get("items") or {}).get("data") or []


def _fetch_missing_tiers(client: HttpClient, raw_subscriptions: list[dict],
                         items_of: dict[str, list[dict]], prices: dict[str, Price]) -> None:
    """Tiered prices the price list did not return (rare), fetched one by one."""
    for item in _all_items(raw_subscriptions, items_of):
        price = item.get("price") or {}
        if price.get("billing_scheme") == "tiered" and price.get("id") not in prices:
            prices[price["id"]] = parse.parse_price(client.get_json(
                f"/v1/prices/{price['id']}", [("expand[]", "tiers"), ("expand[]", "currency_options")]))


def samples(kpis: RevenueKpis) -> list[Sample]:
    """The exported series for one poll. Labels besides `source` are per metric."""

    def sample(metric: str, value: Any, **labels: str) -> Sample:
        return Sample(metric, {"source": NAME, **labels}, float(value))

    result = [
        sample("kpi_mrr", kpis.mrr),
        sample("kpi_paying_customers", kpis.paying_customers),
        sample("kpi_failed_payments", kpis.failed_payments, window="24h"),
        sample("kpi_failed_payments_amount", kpis.failed_payments_amount, window="24h"),
    ]
    if kpis.arpa is not None:
        result.append(sample("kpi_arpa", kpis.arpa))
    result += [sample("kpi_mrr_by_currency", amount, currency=currency)
               for currency, amount in sorted(kpis.mrr_by_currency.items())]
    result += [sample("kpi_subscriptions", count, status=status)
               for status, count in sorted(kpis.subscriptions_by_status.items())]
    result += [sample("kpi_unconverted_objects", count, currency=currency)
               for currency, count in sorted(kpis.missing_fx.items())]
    return result


def make_client(source_config: StripeConfig, **overrides: Any) -> HttpClient:
    """The HTTP client for Stripe; tests override e.g. `sleep`."""
    options = {"read_timeout": source_config.timeout, "rate_limit": source_config.rate_limit,
               **overrides}
    return HttpClient(NAME, source_config.base_url, headers={
        "Authorization": f"Bearer {source_config.api_key.reveal()}",
        "Stripe-Version": STRIPE_VERSION,
    }, **options)


class StripeSource:
    name = NAME

    def __init__(self, source_config: StripeConfig, fx_rates: dict, *,
                 clock: Callable[[], float] = time.time, client: HttpClient | None = None):
        self.config = source_config
        self.poll_interval = source_config.poll_interval
        self.fx_rates = fx_rates
        self.clock = clock
        self.client = client or make_client(source_config)
        self._warned_currencies: set[str] = set()

    def poll(self) -> list[Sample]:
        now = int(self.clock())
        data = fetch(self.client, now)
        kpis = revenue_kpis(data.subscriptions, data.charges, now=now,
                            fx_rates=self.fx_rates, rules=self.config.mrr)
        for currency in sorted(set(kpis.missing_fx) - self._warned_currencies):
            log.warning("stripe: no fx_rates entry for %s; its amounts are left out of "
                        "reporting-currency sums (see kpi_unconverted_objects)", currency.upper())
            self._warned_currencies.add(currency)
        return samples(kpis)

    def request_stats(self) -> dict:
        return self.client.stats.snapshot()

    def close(self) -> None:
        self.client.close()


class _StripeType:
    parse_config = staticmethod(parse_config)

    @staticmethod
    def create(source_config: StripeConfig, config: Any) -> StripeSource:
        return StripeSource(source_config, config.fx_rates)


SOURCE_TYPE = _StripeType()
