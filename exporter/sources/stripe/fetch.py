"""Fetching from Stripe: every list it takes to compute the KPIs of one poll.

Stripe's limits shape this: expansions go at most four levels deep, so tiers
and currency amounts come from the price list, coupons (with their product
restrictions) from the coupon list, and subscriptions are listed with their
discounts expanded. Lists are paged 100 objects at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from exporter.http import Decode, HttpClient
from exporter.sources.stripe import parse, schema
from exporter.sources.stripe.records import (
    Charge,
    Coupon,
    Dispute,
    InvoiceLine,
    Price,
    Refund,
    Subscription,
)

PAGE_SIZE = 100
DAY = 86400


@dataclass(frozen=True)
class StripeData:
    """Today's state, parsed."""

    prices: dict[str, Price]
    coupons: dict[str, Coupon]
    subscriptions: list[Subscription]
    charges: list[Charge]


def list_all(client: HttpClient, path: str, params: list[tuple[str, str]],
             decode: Decode | None = None) -> Iterator[dict]:
    """Every object of a Stripe list endpoint, following `starting_after` cursors (from
    the one in `params`, if any); `decode` decodes each page (HttpClient.request_json)."""

    params = [("limit", str(PAGE_SIZE)), *params]
    unpaged = [param for param in params if param[0] != "starting_after"]

    def next_page(page: Any) -> tuple[str, list] | None:
        if page.get("has_more") and page["data"]:
            return path, [*unpaged, ("starting_after", page["data"][-1]["id"])]
        return None

    for page in client.paginate(path, params, next_page, decode):
        if not isinstance(page, dict) or not isinstance(page.get("data"), list):
            raise parse.MalformedObject(f"{path}: response is not a Stripe list")
        for item in page["data"]:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                raise parse.MalformedObject(f"stripe: {path}: an object in the list has no id")
        yield from page["data"]


# The same expansions for a subscription listed and one retrieved by id.
SUBSCRIPTION_EXPAND = ("discounts.source.coupon", "items.data.discounts")


def price_list(client: HttpClient) -> dict[str, Price]:
    return {p["id"]: parse.parse_price(p) for p in list_all(client, "/v1/prices", [
        ("expand[]", "data.tiers"), ("expand[]", "data.currency_options")])
        if p.get("type", "recurring") == "recurring" and p.get("recurring")}


def coupon_list(client: HttpClient) -> dict[str, Coupon]:
    return {c["id"]: parse.parse_coupon(c) for c in list_all(client, "/v1/coupons", [
        ("expand[]", "data.currency_options"), ("expand[]", "data.applies_to")])}


def subscription_pages(client: HttpClient) -> Iterator[list[dict]]:
    """Every subscription, canceled ones included, a page at a time."""
    page: list[dict] = []
    for sub in list_all(client, "/v1/subscriptions", [
            ("status", "all"), *(("expand[]", "data." + path) for path in SUBSCRIPTION_EXPAND)],
            schema.subscription_list):
        page.append(sub)
        if len(page) == PAGE_SIZE:
            yield page
            page = []
    if page:
        yield page


def retrieve(client: HttpClient, path: str, object_id: str,
             params: list[tuple[str, str]] | None = None, decode: Decode | None = None) -> dict:
    """One object by id (GET path/id), checked to be that object."""
    obj = client.get_json(f"{path}/{object_id}", params, decode)
    if not isinstance(obj, dict) or obj.get("id") != object_id:
        raise parse.MalformedObject(f"stripe: {path}/{object_id} answered something other "
                                    "than that object")
    return obj


def subscription(client: HttpClient, subscription_id: str) -> dict:
    """One subscription by id, expanded as the list expands it."""
    return retrieve(client, "/v1/subscriptions", subscription_id,
                    [("expand[]", path) for path in SUBSCRIPTION_EXPAND], schema.subscription)


def completed(client: HttpClient, raw_subscriptions: list[dict], prices: dict[str, Price],
              coupons: dict[str, Coupon]) -> list[dict]:
    """The subscriptions with their whole item lists, and the tiered prices they use
    added to `prices`."""
    items_of = _complete_items(client, raw_subscriptions, coupons)
    _fetch_missing_tiers(client, raw_subscriptions, items_of, prices)
    for sub in raw_subscriptions:
        if sub["id"] in items_of:
            sub["items"] = {**sub["items"], "data": items_of[sub["id"]], "has_more": False}
    return raw_subscriptions


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
            items_of[sub["id"]] = list(list_all(
                client, "/v1/subscription_items", [
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


def paid_invoice_lines(client: HttpClient, first: int, last: int) -> list[InvoiceLine]:
    """Subscription lines of the paid invoices whose periods overlap the moments from
    `first` to `last`, the only ones history.billed_lines reads there (a year of
    invoices holds about twelve lines for each one kept a moment)."""
    created_from, created_to = invoices_covering(first, last)
    return [line for _, _, lines in paid_invoices(client, created_from, created_to)
            for line in lines if line.period_start <= last and line.period_end > first]


def invoices_covering(first: int, last: int) -> tuple[int, int]:
    """When an invoice whose lines cover the moments from `first` to `last` was
    created: at most a year before a moment it covers (yearly plans), or a little
    after its period started (renewals are drafts first)."""
    return first - 366 * DAY, last + DAY


def paid_invoices(client: HttpClient, created_from: int, created_to: int,
                  after: str | None = None) -> Iterator[tuple[str, int, list[InvoiceLine]]]:
    """Each paid invoice created from `created_from` to `created_to` (inclusive), newest
    first (after the invoice `after`, to resume a listing): its id, when it was
    created, and its subscription lines."""
    resume = [("starting_after", after)] if after is not None else []
    for invoice in list_all(client, "/v1/invoices", [
            ("status", "paid"), ("created[gte]", str(created_from)),
            ("created[lte]", str(created_to)), *resume]):
        more = None
        if parse.embedded_list_is_partial(invoice, "lines"):
            more = list(list_all(client, f"/v1/invoices/{invoice['id']}/lines", []))
        created = invoice.get("created")
        if not isinstance(created, int):
            raise parse.MalformedObject(f"stripe: invoice {invoice['id']} has no created time")
        yield invoice["id"], created, parse.parse_invoice_lines(invoice, more)


def _created_since(path: str, parse_one: Callable[[dict], Any]) -> Callable[..., list]:
    def fetch(client: HttpClient, since: int) -> list:
        return [parse_one(obj) for obj in list_all(client, path, [("created[gte]", str(since))])]
    fetch.__doc__ = f"The objects of {path} created since `since`, parsed."
    return fetch


def _by_id(path: str, parse_one: Callable[[dict], Any]) -> Callable[[HttpClient, str], Any]:
    def fetch(client: HttpClient, object_id: str) -> Any:
        return parse_one(retrieve(client, path, object_id))
    fetch.__doc__ = f"One object of {path} by id, parsed."
    return fetch


charges: Callable[[HttpClient, int], list[Charge]] = _created_since("/v1/charges", parse.parse_charge)
refunds: Callable[[HttpClient, int], list[Refund]] = _created_since("/v1/refunds", parse.parse_refund)
# A dispute stays open for weeks, not years: see source.DISPUTE_LOOKBACK.
disputes: Callable[[HttpClient, int], list[Dispute]] = _created_since("/v1/disputes",
                                                                      parse.parse_dispute)
charge: Callable[[HttpClient, str], Charge] = _by_id("/v1/charges", parse.parse_charge)
refund: Callable[[HttpClient, str], Refund] = _by_id("/v1/refunds", parse.parse_refund)
dispute: Callable[[HttpClient, str], Dispute] = _by_id("/v1/disputes", parse.parse_dispute)


def paid_since(client: HttpClient, subscription: str, since: int) -> bool:
    """Whether the subscription paid a non-zero invoice created since `since`."""
    return any(invoice.get("amount_paid", 0) > 0 for invoice in list_all(
        client, "/v1/invoices", [("subscription", subscription), ("status", "paid"),
                                 ("created[gte]", str(since))]))
