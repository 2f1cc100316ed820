"""Keep API keys and tokens out of logs, error messages and metrics.

Two layers: a `Secret` wrapper whose str() and repr() never show the value,
and `redact()`, which scrubs every registered secret value (and anything that
looks like a Stripe key) from a piece of text. A logging filter applies
`redact()` to every record, so even an unexpected traceback cannot leak a key.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"

# Stripe keys echo back in its own error messages ("Invalid API Key provided:
# sk_test_****1234"); scrub the pattern as well as the exact values we know.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9*]+")

_known: set[str] = set()
_lock = threading.Lock()


class Secret:
    """A secret string. Call reveal() at the single place that sends it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        register(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def register(value: str) -> None:
    """Remember a secret value so that redact() scrubs it everywhere."""
    if value and len(value) >= 4:  # shorter values would mangle ordinary text
        with _lock:
            _known.add(value)


def redact(text: str) -> str:
    with _lock:
        values = sorted(_known, key=len, reverse=True)
    for value in values:
        text = text.replace(value, MASK)
    return _KEY_PATTERN.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """Rewrites each log record with secrets removed, tracebacks included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message = message + "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = redact(message)
        record.args = None
        return True
