"""HTTP client shared by every upstream source (Stripe, Mailgun, HubSpot, ...).

One `HttpClient` per source wraps a `requests.Session` and adds what every
collector needs: (connect, read) timeouts on every request, retries with
exponential backoff and full jitter, `Retry-After` and Stripe's
`Stripe-Should-Retry` handling, an optional client-side rate limit, and
per-source counters for the exporter's own metrics.

Failures surface as one exception type, `UpstreamError`, whose `reason` is
one of `ERROR_REASONS` (a fixed set, so it is safe as a metric label). Its
message is redacted and never contains request headers, which carry API keys.

Retries apply to every method: the POSTs we send (Mailgun metrics queries,
OAuth token requests) are read-only, so repeating them is harmless.

Nothing an upstream does can hold a poll for ever: inside `poll_scope()`
(the poller opens one around every poll) the client refuses requests past
the poll's request cap or deadline, a body is read with a time limit of its
own and a size cap (a server trickling bytes or sending without end is cut
off), and `PageTrail` fails a listing that sends us back to a page already
read. Each of these fails the request for good, with its own reason.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import math
import os
import random
import re
import threading
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests

from exporter.ratelimit import RateLimiter
from exporter.secrets import redact, register

log = logging.getLogger("exporter.http")

ERROR_REASONS = ("timeout", "connection", "http_5xx", "rate_limited", "auth", "http_4xx",
                 "malformed", "too_large", "endless_paging", "request_limit", "deadline")
# The largest response body read; an API page is a few hundred KB at most.
MAX_BODY_BYTES = 64 * 1024 * 1024

# Transport failures worth another attempt. Others (InvalidURL, MissingSchema,
# TooManyRedirects, ...) would fail the same way again.
_RETRYABLE_EXCEPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

# Header names whose values are credentials; they are registered with
# exporter.secrets so that an upstream echoing them back gets redacted.
_SECRET_HEADER_HINTS = ("auth", "key", "token", "secret", "password")

_MAX_DETAIL_CHARS = 200

# Turns a response body into what a request returns (orjson.loads, by default).
Decode = Callable[[bytes], Any]


class MalformedBody(ValueError):
    """Raised by a decoder that knows what it expects (a typed one): where the body
    differs, in types and paths, never the values (the message reaches the log)."""


class UpstreamError(Exception):
    """A request to an upstream API failed for good (after retries)."""

    def __init__(
        self,
        source: str,
        method: str,
        path: str,
        reason: str,
        status: int | None = None,
        detail: str | None = None,
        code: str | None = None,
    ):
        if reason not in ERROR_REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        self.source = source
        self.method = method
        self.path = _display_path(path)
        self.reason = reason
        self.status = status
        # The upstream's own error code when it sends one (Salesforce's errorCode,
        # HubSpot's category, Stripe's code): sources branch on it.
        self.code = code
        what = f"HTTP {status} ({reason})" if status is not None else reason
        message = f"{source}: {method} {self.path} failed: {what}"
        if detail:
            message += f": {detail}"
        # Redact once, here, so that str(), repr() and args are all safe.
        super().__init__(redact(message))


class RequestStats:
    """Thread-safe counters for one source."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._retries = 0
        self._errors = dict.fromkeys(ERROR_REASONS, 0)
        self._rate_limit_wait = 0.0

    def count_request(self) -> None:
        with self._lock:
            self._requests += 1

    def count_retry(self) -> None:
        with self._lock:
            self._retries += 1

    def count_error(self, reason: str) -> None:
        with self._lock:
            self._errors[reason] += 1

    def add_rate_limit_wait(self, seconds: float) -> None:
        with self._lock:
            self._rate_limit_wait += seconds

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "requests": self._requests,
                "retries": self._retries,
                "errors": dict(self._errors),
                "rate_limit_wait_seconds": self._rate_limit_wait,
            }


class _Failure:
    """One failed attempt: why it failed and whether to try again."""

    def __init__(self, reason: str, retry: bool, status: int | None = None,
                 detail: str | None = None, retry_after: float | None = None,
                 code: str | None = None):
        self.reason = reason
        self.code = code
        self.retry = retry
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


PROGRESS_EVERY = 60.0  # seconds between the log lines of a long poll


@dataclass
class _Budget:
    """What one poll may still spend: requests (retries included) and time."""

    max_requests: int
    deadline: float  # on the client's clock
    started: float
    requests: int = 0
    next_progress: float = 0.0  # when a long poll next says how far it is


class PageTrail:
    """The pages one listing has asked for. Being sent to one of them again (the same
    cursor, the same next URL) is an upstream that pages for ever: fail, do not follow."""

    def __init__(self, client: "HttpClient", what: str):
        self._client = client
        self._what = what
        self._seen: set[Hashable] = set()

    def visit(self, page: Hashable) -> None:
        if page in self._seen:
            self._client.stats.count_error("endless_paging")
            raise UpstreamError(self._client.source, "GET", self._what, "endless_paging",
                                detail="the next page is one already read: the upstream "
                                       "pages for ever")
        self._seen.add(page)


class HttpClient:
    """JSON-over-HTTP client for one upstream source. Safe to share between threads."""

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 60.0,
        max_body_seconds: float | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        rate_limit: float | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        pace: Callable[[Any], float | None] | None = None,
        route_limits: Sequence[tuple[str, float]] = (),
    ):
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        # A whole body, however slowly it trickles in: twice the read timeout, 60 s at least.
        self.max_body_seconds = max_body_seconds or max(60.0, 2 * read_timeout)
        self.max_body_bytes = max_body_bytes
        self._budget: _Budget | None = None
        self.stats = RequestStats()
        self._sleep = sleep
        self._jitter = jitter
        self._limiter = RateLimiter(rate_limit, clock=clock, sleep=sleep) if rate_limit else None
        # (path pattern, requests per second): endpoints an API limits on their own
        # (HubSpot's searches), which count against `rate_limit` too.
        self._route_limiters = [(re.compile(pattern), RateLimiter(rate, clock=clock, sleep=sleep))
                                for pattern, rate in route_limits]
        # pace(response headers) -> seconds to hold the next request back, for APIs
        # that say how much of their limit is left (HubSpot's X-HubSpot-RateLimit-*).
        self._pace = pace
        self._clock = clock
        self._resume_at = 0.0
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        if self._owns_session:
            # The proxy and CA settings of the environment are read once per origin
            # (_environment), not on every request as requests does (some 7 % of a full
            # sync's CPU), and ~/.netrc never: an entry there for an upstream's host
            # would replace the Authorization header the sources send.
            self._session.trust_env = False
        self._environments: dict[tuple[str, str], dict[str, Any]] = {}
        if headers:
            _register_secret_headers(headers)
            self._session.headers.update(headers)

    # -- public API ---------------------------------------------------------

    def get_json(self, path: str, params: Any = None, decode: Decode | None = None) -> Any:
        """GET `path` and return the decoded JSON body."""
        return self.request_json("GET", path, params=params, decode=decode)

    def request_json(self, method: str, path: str, *, params: Any = None, json: Any = None,
                     data: Any = None, headers: dict[str, str] | None = None,
                     decode: Decode | None = None) -> Any:
        """Send a request, retrying transient failures; return the decoded JSON body.

        `path` is relative to base_url or an absolute http(s) URL. `params` is
        a dict or a list of (key, value) pairs (for repeated keys). `decode`
        turns the body into what is returned (orjson.loads by default); a
        ValueError it raises fails the request as malformed. Raises
        UpstreamError once the request has failed for good.
        """
        method = method.upper()
        if headers:
            _register_secret_headers(headers)
        kwargs = {"params": params, "json": json, "data": data, "headers": headers}
        attempt = 0
        while True:
            result = self._spend(0) or self._attempt(method, path, kwargs, decode or orjson.loads)
            if not isinstance(result, _Failure):
                return result
            self.stats.count_error(result.reason)
            if not result.retry or attempt >= self.max_retries:
                raise UpstreamError(self.source, method, path, result.reason,
                                    result.status, result.detail, result.code)
            delay = self._retry_delay(attempt, result)
            late = self._spend(delay)
            if late is not None:  # waiting would end past the poll's deadline
                self.stats.count_error(late.reason)
                raise UpstreamError(self.source, method, path, late.reason, result.status,
                                    f"{late.detail} (after {_describe(result)})", result.code)
            log.debug("%s: retrying %s %s after %s in %.2fs (retry %d of %d)",
                      self.source, method, _display_path(path), _describe(result),
                      delay, attempt + 1, self.max_retries)
            self.stats.count_retry()
            self._sleep(delay)
            attempt += 1

    def paginate(self, path: str, params: Any,
                 next_page: Callable[[Any], tuple[str, Any] | None],
                 decode: Decode | None = None) -> Iterator[Any]:
        """Yield each page's JSON; next_page(page_json) returns (path, params) of the next
        page or None. A next page that is one already read fails (endless_paging)."""
        trail = self.trail(path)
        following: tuple[str, Any] | None = (path, params)
        while following is not None:
            trail.visit(_page_key(*following))
            page = self.get_json(*following, decode=decode)
            yield page
            following = next_page(page)

    def trail(self, what: str) -> PageTrail:
        """A PageTrail for a listing that pages by hand (cursors in bodies, POSTed searches)."""
        return PageTrail(self, what)

    @contextlib.contextmanager
    def poll_scope(self, max_requests: int, seconds: float) -> Iterator[None]:
        """Bound the requests (retries included) and the time of everything sent inside."""
        now = self._clock()
        self._budget = _Budget(max_requests, now + seconds, now,
                               next_progress=now + PROGRESS_EVERY)
        try:
            yield
        finally:
            self._budget = None

    def _spend(self, wait: float) -> _Failure | None:
        """Before a request (wait 0) or a wait: a failure if the poll's budget forbids it."""
        budget = self._budget
        if budget is None:
            return None
        if self._clock() + wait > budget.deadline:
            return _Failure("deadline", retry=False, detail="the poll's time limit is reached")
        if wait == 0:
            if budget.requests >= budget.max_requests:
                return _Failure("request_limit", retry=False,
                                detail=f"the poll's cap of {budget.max_requests} requests is "
                                       "reached")
            budget.requests += 1
            if self._clock() >= budget.next_progress:  # so a long first read does not look hung
                budget.next_progress = self._clock() + PROGRESS_EVERY
                log.info("%s: poll still running after %.0fs: %d requests so far (at most %d)",
                         self.source, self._clock() - budget.started, budget.requests,
                         budget.max_requests)
        return None

    def close(self) -> None:
        """Release pooled connections (a session passed in by the caller is left open)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one attempt --------------------------------------------------------

    def _attempt(self, method: str, path: str, kwargs: dict, decode: Decode) -> Any:
        """Send once. Return the decoded JSON body, or a _Failure describing what went wrong."""
        held = self._resume_at - self._clock()
        if held > 0:
            self._sleep(held)
            self.stats.add_rate_limit_wait(held)
        if self._limiter is not None:
            self.stats.add_rate_limit_wait(self._limiter.acquire())
        for pattern, limiter in self._route_limiters:
            if pattern.search(path):
                self.stats.add_rate_limit_wait(limiter.acquire())
        self.stats.count_request()
        url = self._url(path)
        try:
            response = self._session.request(method, url, timeout=self.timeout, stream=True,
                                             **self._environment(url), **kwargs)
        except requests.exceptions.RequestException as exc:
            return _transport_failure(exc)
        with response:
            if self._pace is not None:
                hold = self._pace(response.headers)
                if hold:
                    self._resume_at = max(self._resume_at, self._clock() + hold)
            body = self._read_body(response)
            if isinstance(body, _Failure):
                return body
            response._content = body  # what response.json() and .text read
            if not 200 <= response.status_code < 300:
                return _status_failure(response)
            if response.status_code == 204:
                return None  # No Content is a valid answer, e.g. to a POST
            try:
                return decode(body)
            except ValueError as exc:
                # A proxy's HTML error page or a truncated body: retrying rarely helps.
                return _Failure("malformed", retry=False, status=response.status_code,
                                detail=_malformed(exc))

    def _read_body(self, response: requests.Response) -> bytes | _Failure:
        """The whole body, within max_body_seconds (and the poll's deadline) and
        max_body_bytes: a read timeout alone lets a server trickle a byte at a time."""
        started = self._clock()
        limit = started + self.max_body_seconds
        if self._budget is not None:
            limit = min(limit, self._budget.deadline)
        chunks, size = [], 0
        try:
            while True:
                chunk = response.raw.read1(65536, decode_content=True)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > self.max_body_bytes:
                    return _Failure("too_large", retry=False, status=response.status_code,
                                    detail=f"the body passed {self.max_body_bytes} bytes")
                if self._clock() > limit:
                    return _Failure("timeout", retry=True, status=response.status_code,
                                    detail=f"the body took over {self._clock() - started:.0f} s")
                chunks.append(chunk)
        except (requests.exceptions.RequestException, OSError, ValueError) as exc:
            # urllib3's own errors (a reset, a read timeout, a broken gzip) are OSErrors
            # or ValueErrors here, not requests' wrappers.
            reason = "timeout" if "timed out" in str(exc).lower() else "connection"
            return _Failure(reason, retry=True, status=response.status_code,
                            detail=type(exc).__name__)

    def _environment(self, url: str) -> dict[str, Any]:
        """What requests would take from the environment for `url`: the proxies
        (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, less NO_PROXY) and a CA bundle
        (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE), once per scheme and host; none for a
        session passed in (its own trust_env decides)."""
        if not self._owns_session:
            return {}
        origin = urlsplit(url)[:2]
        settings = self._environments.get(origin)
        if settings is None:
            settings = self._environments[origin] = {
                "proxies": requests.utils.get_environ_proxies(url),
                "verify": os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                or True,
            }
        return settings

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path  # e.g. Salesforce's absolute next-page links
        return f"{self.base_url}/{path.lstrip('/')}"

    def _retry_delay(self, attempt: int, failure: _Failure) -> float:
        if failure.retry_after is not None:
            return min(failure.retry_after, self.max_retry_after)
        # Full jitter spreads retries from many scrapers across the window.
        return self._jitter() * min(self.backoff_cap, self.backoff_base * 2 ** attempt)


# -- classifying failures ---------------------------------------------------

def _malformed(exc: ValueError) -> str:
    if isinstance(exc, MalformedBody):
        return f"response body is not what was expected: {exc}"
    return "response body is not valid JSON"


def _transport_failure(exc: requests.exceptions.RequestException) -> _Failure:
    # Check Timeout first: ConnectTimeout is both a Timeout and a ConnectionError.
    reason = "timeout" if isinstance(exc, requests.exceptions.Timeout) else "connection"
    # Only the exception's class name: its text holds the full URL, query string included.
    return _Failure(reason, retry=isinstance(exc, _RETRYABLE_EXCEPTIONS), detail=type(exc).__name__)


def _status_failure(response: requests.Response) -> _Failure:
    status = response.status_code
    if status >= 500:
        reason = "http_5xx"
    elif status == 429:
        reason = "rate_limited"
    elif status in (401, 403):
        reason = "auth"
    else:
        reason = "http_4xx"  # also an unfollowed 3xx, which no API we use sends
    body = _json_or_none(response)
    code = _upstream_code(body)
    retry = reason in ("http_5xx", "rate_limited")
    if code in _QUOTA_SPENT:
        reason, retry = "rate_limited", False
    # Stripe tells us when its own retry advice differs from the status code.
    should_retry = response.headers.get("Stripe-Should-Retry", "").strip().lower()
    if should_retry in ("true", "false"):
        retry = should_retry == "true"
    retry_after = _parse_retry_after(response.headers.get("Retry-After"))
    if retry_after is None and status == 429:
        retry_after = _parse_rate_limit_reset(response.headers.get("X-RateLimit-Reset"))
    return _Failure(reason, retry, status=status, detail=_upstream_message(body),
                    retry_after=retry_after, code=code)


# Error codes that mean a quota is used up for hours, not seconds: the request
# fails at once (retrying would only spend what is left of the day).
# Salesforce: the org's 24-hour API request limit (sent as a 403).
_QUOTA_SPENT = frozenset({"REQUEST_LIMIT_EXCEEDED"})


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _upstream_code(body: Any) -> str | None:
    """The upstream's machine-readable error code, if its error body has one."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        code = body[0].get("errorCode")  # Salesforce
    elif isinstance(body, dict):
        error = body.get("error")
        code = error.get("code") if isinstance(error, dict) else None  # Stripe
        if code is None and isinstance(error, str):
            code = error  # OAuth token endpoints: {"error": "invalid_client", ...}
        if code is None:
            code = body.get("category")  # HubSpot
    else:
        code = None
    return code if isinstance(code, str) and code.isprintable() and len(code) <= 64 else None


def _upstream_message(body: Any) -> str | None:
    """The upstream's own error message, if the body is JSON and has one."""
    if isinstance(body, list) and body:  # Salesforce: [{"message": ..., "errorCode": ...}]
        body = body[0]
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else None  # Stripe
    if message is None:
        message = body.get("message")  # Mailgun, HubSpot, Salesforce
    if message is None:
        message = body.get("error_description")  # OAuth token endpoints
    if not isinstance(message, str) or not message.strip():
        return None
    # Salesforce's query errors echo the query and a caret first; the reason is last.
    message = message.strip().rsplit("\n", 1)[-1]
    message = " ".join(message.split())  # keep the exception to one line
    if len(message) > _MAX_DETAIL_CHARS:
        message = message[:_MAX_DETAIL_CHARS] + "..."
    return message


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unparseable: fall back to backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # HTTP dates are always GMT
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _parse_rate_limit_reset(value: str | None) -> float | None:
    """Seconds to wait from X-RateLimit-Reset (Mailgun: the Unix time the limit resets;
    small values are taken as seconds from now, as some APIs send)."""
    try:
        reset = float(value) if value else None
    except ValueError:
        return None
    if reset is None or not math.isfinite(reset):
        return None
    if reset > 1e12:  # a Unix time in milliseconds
        reset /= 1000
    if reset > 1e9:  # a Unix time, not a delay
        reset -= datetime.now(timezone.utc).timestamp()
    return max(0.0, reset)


def _describe(failure: _Failure) -> str:
    return f"{failure.reason} (HTTP {failure.status})" if failure.status is not None else failure.reason


def _page_key(path: str, params: Any) -> Hashable:
    """A page's identity: its path and its parameters in a stable order."""
    if isinstance(params, dict):
        params = sorted(params.items())
    return path, repr(params)


# -- keeping secrets out of messages ----------------------------------------

def _display_path(path: str) -> str:
    """The path (or URL) without query string, fragment or userinfo, for logs and errors."""
    parts = urlsplit(path)
    netloc = parts.netloc.rpartition("@")[2]  # drop any user:password@
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _register_secret_headers(headers: dict[str, str]) -> None:
    """Register credential header values so redact() scrubs them if an upstream echoes them."""
    for name, value in headers.items():
        if not isinstance(value, str) or not any(h in name.lower() for h in _SECRET_HEADER_HINTS):
            continue
        register(value)
        scheme, _, token = value.partition(" ")
        if token and scheme.lower() in ("bearer", "basic", "token"):
            register(token.strip())
