"""Today's prices, coupons and subscriptions, kept between polls and brought up to
date by events.

A full sync lists every price, coupon and subscription. A later poll re-reads
only the subscriptions that new events name (`customer.subscription.*`, and
`customer.discount.*` on a subscription), one request each, so a poll in which
nothing changed asks nothing of /v1/subscriptions. A price or coupon created
since the full sync reaches the KPIs through the subscriptions that use it, as
on a full sync (fetch.completed: tiers fetched, item coupons expanded), and the
amounts of a price or coupon never change once made.

A full sync runs again every `full_sync_interval`, and whenever the events
cannot be trusted to name every change: on the first poll, when the last
update is older than Stripe keeps events, when Stripe no longer has a
subscription an event names, or when more subscriptions changed than a
re-list costs in requests.
"""

from __future__ import annotations

import logging

from exporter.http import HttpClient, UpstreamError
from exporter.sources.stripe import fetch, parse
from exporter.sources.stripe.compact import Compactor
from exporter.sources.stripe.events import RETENTION
from exporter.sources.stripe.records import Coupon, Price, Subscription

log = logging.getLogger(__name__)

FULL_SYNC_INTERVAL = 24 * 3600.0


def changed_subscriptions(events: list[dict]) -> set[str]:
    """The subscriptions that the events say changed."""
    ids = set()
    for event in events:
        obj = event["data"]["object"]
        if event["type"].startswith("customer.subscription."):
            ids.add(obj["id"])
        elif event["type"].startswith("customer.discount.") and isinstance(
                obj.get("subscription"), str):
            ids.add(obj["subscription"])
    return ids


class HeldSubscriptions:
    def __init__(self, full_sync_interval: float = FULL_SYNC_INTERVAL,
                 compactor: Compactor | None = None):
        self.full_sync_interval = full_sync_interval
        self.prices: dict[str, Price] = {}
        self.coupons: dict[str, Coupon] = {}
        self._raw: dict[str, dict] = {}  # compacted, with whole item lists (compact.py)
        self._parsed: dict[str, Subscription] = {}
        self._pending: set[str] = set()  # named by events, not re-read yet
        self._compactor = compactor or Compactor()  # shared with the event log's (compact.py)
        self.synced_at: int | None = None  # the last full sync
        self.updated_at: int | None = None  # the last successful update
        self.last_update = ""  # "full sync (why)" or "N re-read": for the log and tests
        self.reread: set[str] = set()  # the subscriptions the last update re-read

    def update(self, client: HttpClient, new_events: list[dict], now: int) -> None:
        """Bring the held state to `now`. Call it after the event log's refresh, so
        that whatever changes while a full sync lists is named by the next events."""
        self._pending |= changed_subscriptions(new_events)
        self.reread = set(self._pending)
        why = self._full_sync_reason(now)
        if why is None:
            try:
                count = len(self._pending)
                self._reread(client)
                self.last_update = f"{count} re-read"
            except UpstreamError as exc:
                if exc.status != 404:
                    raise  # the poll fails; what is pending stays pending
                why = "an event names a subscription Stripe no longer has"
        if why is not None:
            log.info("stripe: full sync (%s)", why)
            self._full_sync(client)
            self.synced_at = now
            self.last_update = f"full sync ({why})"
        self._pending.clear()
        self.updated_at = now

    def _full_sync_reason(self, now: int) -> str | None:
        if self.synced_at is None:
            return "first poll"
        if now - self.synced_at >= self.full_sync_interval:
            return "full_sync_interval"
        if self.updated_at is None or now - self.updated_at >= RETENTION:
            return "the last update is older than Stripe keeps events"
        if len(self._pending) > max(10, len(self._raw) // fetch.PAGE_SIZE):
            return f"{len(self._pending)} subscriptions changed, more than a re-list costs"
        return None

    def _full_sync(self, client: HttpClient) -> None:
        prices, coupons, compactor = fetch.price_list(client), fetch.coupon_list(client), self._compactor
        raw = [compactor.shared(sub) for sub in fetch.completed(
            client, fetch.all_subscriptions(client, compactor), prices, coupons, compactor)]
        parsed = {sub["id"]: parse.parse_subscription(sub, prices, coupons) for sub in raw}
        # Only once all of it was read: a failure keeps the state held before.
        self.prices, self.coupons = prices, coupons
        self._raw, self._parsed = {sub["id"]: sub for sub in raw}, parsed
        compactor.keep_only(set(self._raw))

    def _reread(self, client: HttpClient) -> None:
        """Re-read the pending subscriptions; each is applied as it is complete, so a
        failure part-way keeps the rest pending for the next poll."""
        for sub_id in sorted(self._pending):
            raw = self._compactor.shared(fetch.completed(
                client, [fetch.subscription(client, sub_id, self._compactor)],
                self.prices, self.coupons, self._compactor)[0])
            self._parsed[sub_id] = parse.parse_subscription(raw, self.prices, self.coupons)
            self._raw[sub_id] = raw
            self._pending.discard(sub_id)

    def data(self, charges: list) -> fetch.StripeData:
        return fetch.StripeData(prices=self.prices, coupons=self.coupons,
                                raw_subscriptions=list(self._raw.values()),
                                subscriptions=[self._parsed[i] for i in self._raw],
                                charges=charges)
