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

What is held is parsed records only (records.py), one per subscription: a
full sync parses the listing a page at a time, so the JSON of one page is in
memory at once, and a record equal to the one held before stays that one
(the events' records share it: history.settled). The discounts events name by
id are resolved from the records' own (`discounts`).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from exporter.http import PROGRESS_EVERY, HttpClient, UpstreamError
from exporter.sources.stripe import fetch, parse
from exporter.sources.stripe.events import RETENTION
from exporter.sources.stripe.records import Coupon, Discount, Price, Subscription

log = logging.getLogger(__name__)

FULL_SYNC_INTERVAL = 24 * 3600.0


class HeldSubscriptions:
    def __init__(self, full_sync_interval: float = FULL_SYNC_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.full_sync_interval = full_sync_interval
        self._clock = clock  # for the progress of a long full sync
        self.prices: dict[str, Price] = {}
        self.coupons: dict[str, Coupon] = {}
        self._parsed: dict[str, Subscription] = {}
        # Every discount the held records carry, by id, for the event payloads that
        # name discounts by id only; one a re-read removed stays until the next full
        # sync (a past state may still name it, and it is still that discount).
        self.discounts: dict[str, Discount] = {}
        self._pending: set[str] = set()  # named by events, not re-read yet
        self.items = parse.SharedItems()  # made with these prices, for every record of them
        self.synced_at: int | None = None  # the last full sync
        self.updated_at: int | None = None  # the last successful update
        self.last_update = ""  # "full sync (why)" or "N re-read": for the log and tests
        self.reread: set[str] = set()  # the subscriptions the last update re-read
        # Whether the last full sync's prices or coupons differ from the ones before
        # it (one changed or is gone): records parsed with the old ones may be stale.
        self.lists_changed = False

    def update(self, client: HttpClient, changed: Iterable[str], now: int) -> None:
        """Bring the held state to `now`; `changed`: the subscriptions new events
        name. Call it after the event log's refresh, so that whatever changes while
        a full sync lists is named by the next events (or pend it)."""
        self._pending |= set(changed)
        self.reread = set(self._pending)
        self.lists_changed = False
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

    def pend(self, subscription_ids: set[str]) -> None:
        """Re-read these at the next update (events seen outside a refresh's
        returned ones: the source's re-list after a full sync)."""
        self._pending |= subscription_ids

    def _full_sync_reason(self, now: int) -> str | None:
        if self.synced_at is None:
            return "first poll"
        if now - self.synced_at >= self.full_sync_interval:
            return "full_sync_interval"
        if self.updated_at is None or now - self.updated_at >= RETENTION:
            return "the last update is older than Stripe keeps events"
        if len(self._pending) > max(10, len(self._parsed) // fetch.PAGE_SIZE):
            return f"{len(self._pending)} subscriptions changed, more than a re-list costs"
        return None

    def _full_sync(self, client: HttpClient) -> None:
        """List every subscription a page at a time: each page is completed, parsed
        and dropped, so the JSON of only one page is held at once."""
        prices, coupons = fetch.price_list(client), fetch.coupon_list(client)
        items = parse.SharedItems()
        parsed: dict[str, Subscription] = {}
        discounts: dict[str, Discount] = {}
        said = self._clock()
        for page in fetch.subscription_pages(client):
            for raw in fetch.completed(client, page, prices, coupons):
                sub = parsed[raw["id"]] = self.shared(parse.parse_subscription(
                    raw, prices, coupons, shared=items))
                _keep_discounts(discounts, sub)
            if self._clock() - said >= PROGRESS_EVERY:  # a first sync of 1M takes minutes
                said = self._clock()
                # Stripe lists have no count: the last sync's is the estimate there is.
                last = f" (the last full sync listed {len(self._parsed)})" if self._parsed else ""
                log.info("stripe: full sync: %d subscriptions listed%s", len(parsed), last)
        # Only once all of it was read: a failure keeps the state held before.
        self.lists_changed = bool(self._parsed) and (
            _changed(self.prices, prices) or _changed(self.coupons, coupons))
        self.prices, self.coupons, self.items = prices, coupons, items
        self._parsed, self.discounts = parsed, discounts

    def _reread(self, client: HttpClient) -> None:
        """Re-read the pending subscriptions; each is applied as it is complete, so a
        failure part-way keeps the rest pending for the next poll."""
        for sub_id in sorted(self._pending):
            raw = fetch.completed(client, [fetch.subscription(client, sub_id)],
                                  self.prices, self.coupons)[0]
            sub = self._parsed[sub_id] = self.shared(parse.parse_subscription(
                raw, self.prices, self.coupons, shared=self.items))
            _keep_discounts(self.discounts, sub)
            self._pending.discard(sub_id)

    def shared(self, sub: Subscription) -> Subscription:
        """The held record of this subscription if it is equal to `sub`, else `sub`:
        one record for the many states of it that are the same (history.settled)."""
        held = self._parsed.get(sub.id)
        return held if held is not None and held == sub else sub

    def sharing(self) -> Callable[[Subscription], Subscription]:
        """`shared`, for the events of one listing: also the record made last for the
        same subscription, if equal. A listing is newest first, and an event's
        subscription after it is mostly the one before the next newer event of it (at
        9,875 subscriptions 1,894 distinct records where each event made its own 3,203)."""
        made: dict[str, Subscription] = {}

        def shared(sub: Subscription) -> Subscription:
            held = self.shared(sub)
            if held is not sub:
                return held
            last = made.get(sub.id)
            if last is not None and last == sub:
                return last
            made[sub.id] = sub
            return sub
        return shared

    def data(self, charges: list) -> fetch.StripeData:
        return fetch.StripeData(prices=self.prices, coupons=self.coupons,
                                subscriptions=list(self._parsed.values()), charges=charges)


def _keep_discounts(discounts: dict[str, Discount], sub: Subscription) -> None:
    for discount in sub.discounts:
        discounts[discount.id] = discount
    for item in sub.items:
        for discount in item.discounts:
            discounts[discount.id] = discount


def _changed(before: dict, after: dict) -> bool:
    """Whether a price or coupon held before is gone from, or differs in, the new list."""
    return any(after.get(key) != value for key, value in before.items())
