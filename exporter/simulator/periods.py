"""Billing-period arithmetic shared by the store, the histories and the invoices.

Faithful: months keep the anchor's day of month, clamped to shorter months
(Jan 31 + 1 month = Feb 28/29, + 2 months = Mar 31), as Stripe bills.
Simplified: all times are UTC Unix seconds; no time zones, no leap seconds.
"""

from __future__ import annotations

import calendar
import hashlib
from datetime import datetime, timezone
from typing import Iterator

DAY = 86_400
HOUR = 3_600
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def add_interval(ts: int, interval: str, count: int) -> int:
    """`ts` moved by `count` intervals, months clamped to the month's length.

    Stripe keeps the anchor's day of month: Jan 31 + 1 month = Feb 28 (29).
    """
    if interval == "day":
        return ts + count * DAY
    if interval == "week":
        return ts + count * 7 * DAY
    months = count * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    dt = datetime.fromtimestamp(ts, timezone.utc)
    index = dt.year * 12 + (dt.month - 1) + months
    year, month = divmod(index, 12)
    day = min(dt.day, calendar.monthrange(year, month + 1)[1])
    return int(dt.replace(year=year, month=month + 1, day=day).timestamp())


def boundary_index(anchor: int, ref: int, interval: str, count: int) -> int:
    """k such that boundary k <= ref < boundary k+1, boundary k = anchor + k intervals."""
    if interval in ("day", "week"):
        step = count * (DAY if interval == "day" else 7 * DAY)
        return (ref - anchor) // step
    months = count * (12 if interval == "year" else 1)
    a = datetime.fromtimestamp(anchor, timezone.utc)
    r = datetime.fromtimestamp(ref, timezone.utc)
    k = ((r.year - a.year) * 12 + r.month - a.month) // months - 1
    while add_interval(anchor, interval, (k + 1) * count) <= ref:
        k += 1
    while add_interval(anchor, interval, k * count) > ref:
        k -= 1
    return k


def period_containing(anchor: int, ref: int, interval: str, count: int) -> tuple[int, int]:
    """The billing period [start, end) of an anchor/interval that contains `ref`."""
    if ref < anchor:
        return add_interval(anchor, interval, -count), anchor
    k = boundary_index(anchor, ref, interval, count)
    return add_interval(anchor, interval, k * count), add_interval(anchor, interval, (k + 1) * count)


def boundaries(anchor: int, interval: str, count: int, lo: int, hi: int) -> Iterator[int]:
    """Period starts `anchor + k intervals` (k >= 0) with lo <= start < hi, ascending."""
    if hi <= lo:
        return
    k = 0 if lo <= anchor else boundary_index(anchor, lo, interval, count)
    b = add_interval(anchor, interval, k * count)
    if b < lo:
        k += 1
        b = add_interval(anchor, interval, k * count)
    while b < hi:
        yield b
        k += 1
        b = add_interval(anchor, interval, k * count)


def last_boundary(anchor: int, interval: str, count: int, hi: int) -> int | None:
    """The latest period start `anchor + k intervals` (k >= 0) that is <= hi, if any."""
    if hi < anchor:
        return None
    return add_interval(anchor, interval, boundary_index(anchor, hi, interval, count) * count)


def stable_id(prefix: str, fragment: str, *parts: object) -> str:
    """A long Stripe-style id (`in_1Pgc6t<account>u9fdqL6I`) derived from `parts`:
    the same parts always give the same id, so lazily built objects keep theirs."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(13):
        number, rest = divmod(number, 62)
        chars.append(_ALPHABET[rest])
    body = "".join(chars)
    return f"{prefix}_1{body[:5]}{fragment}{body[5:]}"


def stable_int(*parts: object) -> int:
    """A deterministic 64-bit number from `parts` (seeds per-object choices)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
