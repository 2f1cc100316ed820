"""Upstream-controlled label values (domains, pipeline stages): keep the largest, fold the rest.

A CRM or mail account decides how many domains or stages exist; exporting each
as a label value would let it grow Prometheus' series without bound. Sources
keep the `limit` largest by name and sum every other one under OTHER.
"""

from __future__ import annotations

from typing import Callable, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

OTHER = "other"  # the label value of everything beyond the cap


def top(volume: dict[K, float], limit: int) -> list[K]:
    """The `limit` keys with the most volume, largest first (ties by key)."""
    return sorted(volume, key=lambda key: (-volume[key], key))[:limit]


def fold(by_key: dict[K, V], kept: list[K], empty: V, add: Callable[[V, V], V],
         other: K) -> dict[K, V]:
    """The kept keys' values (`empty` for a kept key without one), and the sum of every
    other key's value under `other` (absent when nothing was folded)."""
    result = {key: by_key.get(key, empty) for key in kept}
    rest = [value for key, value in by_key.items() if key not in result]
    if rest:
        total = empty
        for value in rest:
            total = add(total, value)
        result[other] = total
    return result
