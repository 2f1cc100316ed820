"""A column of ids in one buffer, for the columns held by the million.

A Stripe id (`evt_` and 24 letters and digits) is a 77-byte str object and an
8-byte list slot; here it is its 28 bytes, padded to the longest id held, with
a byte for its length. Ids are text up to 255 bytes in UTF-8: Stripe's are
ASCII and under 70.
"""

from __future__ import annotations

from typing import Iterable

MAX_BYTES = 255


class IdColumn:
    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._width = 1
        self._data = bytearray()  # row r at r * width, padded with zeros
        self._lengths = bytearray()
        for value in ids:
            self.append(value)

    def append(self, value: str) -> None:
        raw = _encoded(value)
        self._widen(len(raw))
        self._data += raw.ljust(self._width, b"\0")
        self._lengths.append(len(raw))

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, row: int) -> str:
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        start = row * self._width
        return self._data[start:start + self._lengths[row]].decode()

    def __setitem__(self, rows: slice, other: "IdColumn") -> None:
        """Replace a run of rows (step 1) with another column's (widened to match)."""
        start, stop, step = rows.indices(len(self))
        if step != 1:
            raise ValueError("only a run of rows can be replaced")
        stop = max(start, stop)
        self._widen(other._width)
        other._widen(self._width)
        self._data[start * self._width:stop * self._width] = other._data
        self._lengths[start:stop] = other._lengths

    def _widen(self, width: int) -> None:
        """Make every row at least `width` bytes (the first longer id re-pads them all)."""
        if width <= self._width:
            return
        old, self._width = self._width, width
        pad = b"\0" * (width - old)
        self._data = bytearray(b"".join(
            self._data[start:start + old] + pad for start in range(0, len(self._data), old)))


def _encoded(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > MAX_BYTES:
        raise ValueError(f"id {value[:40]!r}... is longer than {MAX_BYTES} bytes")
    return raw
