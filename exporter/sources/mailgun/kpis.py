"""Email KPIs from per-domain event counts: pure functions, no I/O.

Definitions (each over a window, per sending domain):

- delivery rate      = delivered / accepted
- hard-bounce rate   = hard bounces / accepted

Permanent failures are hard bounces, soft bounces (a temporary failure that
ran out of retries) and suppressed messages (not sent: the address is on a
suppression list), so bounced_hard + bounced_soft + suppressed =
failed_permanent; fetch.py fails the poll when Mailgun's counts say otherwise.
- complaint rate     = complained / delivered
- open rate          = unique opens / delivered
- click rate         = unique clicks / delivered
- unsubscribe rate   = unsubscribed / delivered

A rate whose denominator is zero has no value (no series), never 0 or NaN.
Domains are an upstream-controlled label: `cap_domains` keeps the largest by
accepted volume and sums the rest under OTHER.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from exporter.labels import OTHER, fold, top  # OTHER has no dot: no real domain is named so

# The event counts we keep, and the label value each is exported with.
EVENTS = ("accepted", "delivered", "failed_permanent", "bounced_hard", "bounced_soft", "suppressed",
          "failed_temporary", "opened", "opened_unique", "clicked", "clicked_unique",
          "unsubscribed", "complained")


@dataclass(frozen=True)
class Counts:
    """Events of one domain over one window (accepted = outgoing messages accepted)."""

    accepted: int = 0
    delivered: int = 0
    failed_permanent: int = 0  # bounced_hard + bounced_soft + suppressed
    bounced_hard: int = 0
    bounced_soft: int = 0  # retried until Mailgun gave up
    suppressed: int = 0  # not sent: the address is on a suppression list
    failed_temporary: int = 0
    opened: int = 0
    opened_unique: int = 0
    clicked: int = 0
    clicked_unique: int = 0
    unsubscribed: int = 0
    complained: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                         for f in fields(self)})


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def rates(c: Counts) -> dict[str, float]:
    """The defined rates of one domain and window; a rate without a denominator is left out."""
    found = {
        "delivery_rate": _ratio(c.delivered, c.accepted),
        "hard_bounce_rate": _ratio(c.bounced_hard, c.accepted),
        "complaint_rate": _ratio(c.complained, c.delivered),
        "open_rate": _ratio(c.opened_unique, c.delivered),
        "click_rate": _ratio(c.clicked_unique, c.delivered),
        "unsubscribe_rate": _ratio(c.unsubscribed, c.delivered),
    }
    return {name: value for name, value in found.items() if value is not None}


def kept_domains(volume: dict[str, int], limit: int) -> list[str]:
    """The `limit` domains with the most volume (ties by name); the rest become OTHER."""
    return top(volume, limit)


def cap_domains(by_domain: dict[str, Counts], kept: list[str]) -> dict[str, Counts]:
    """Counts of the kept domains, and the sum of every other one under OTHER (if any)."""
    return fold(by_domain, kept, Counts(), lambda a, b: a + b, OTHER)


def _add_sizes(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {name: a.get(name, 0) + b.get(name, 0) for name in {*a, *b}}


def cap_sizes(sizes: dict[str, dict[str, int]], kept: list[str]) -> dict[str, dict[str, int]]:
    """Suppression list sizes ({domain: {list: size}}), capped the same way."""
    return fold(sizes, kept, {}, _add_sizes, OTHER)
