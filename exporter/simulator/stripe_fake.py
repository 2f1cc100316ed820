"""A local HTTP server that answers like api.stripe.com, from a `StripeStore`.

    with FakeStripe(generate_company()) as fake:
        requests.get(f"{fake.url}/v1/subscriptions",
                     headers={"Authorization": f"Bearer {fake.api_key}"})

Faithful to API version 2026-07-29.dahlia:
- Bearer (or HTTP basic) auth with Stripe's 401 messages and masked key;
  `Request-Id` and `Stripe-Version` response headers (the request's version
  echoed, the dahlia one by default).
- Read endpoints for customers, products, prices, coupons, subscriptions,
  subscription_items, charges, refunds, disputes, events and invoices (with
  `/v1/invoices/{id}/lines`): list and retrieve, list envelopes, newest
  first, `limit` 1..100 (default 10), `starting_after` / `ending_before`
  cursors, the common filters (see ENDPOINTS), subscriptions' default of
  excluding `canceled` (`status=all`, `status=ended` supported).
- Events: only the last 30 days are served (older ids are 404); `type` takes
  an exact type or a wildcard (`customer.subscription.*`), `types[]` up to 20
  of them, not both. Events and invoices are derived from the subscription
  histories on request (see history.py, invoices.py).
- `expand[]` (also `expand[0]`) with Stripe's depth limit of 4 levels, counting
  `data`, and its error for properties that cannot be expanded. Prices carry
  `tiers` only when expanded; discounts reference their coupon by id
  (`source.coupon`) unless `source.coupon` is expanded.
- Errors use Stripe's envelope: `{"error": {"type", "message", "code", "param"}}`,
  including "Received unknown parameter" for query keys Stripe would reject.

Simplified:
- Read-only: no POST/DELETE (they get Stripe's "Unrecognized request URL" 404),
  no search endpoints, no idempotency keys, no Connect headers. A few real
  filters are accepted but not applied (ENDPOINTS.ignored).
- The `Stripe-Version` header is echoed, never validated, and does not change
  object shapes. Rate limiting is a plain per-second window set by
  `rate_limit()`; otherwise nothing is throttled.
- A subscription's embedded `items` list holds all its items (`has_more` false).

`FakeStripe(store, live=True)` runs a `CompanyTicker` on a daemon thread while
serving, so the company keeps changing (new signups, cancellations, failed
payments...) every `tick_interval` seconds.

Fault injection and the request log come from `FakeServer` (fake_server.py).
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import random
import re
import string
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from exporter.simulator.fake_server import FakeServer, Response, json_body
from exporter.simulator.stripe_store import API_VERSION, SUBSCRIPTION_STATUSES, \
    VIRTUAL_COLLECTIONS, StripeStore

MAX_EXPAND_DEPTH = 4
_DOCS = "https://stripe.com/docs/error-codes/"

# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error response in Stripe's envelope."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "type": type}
        if code:
            self.body["code"] = code
            self.body["doc_url"] = _DOCS + code.replace("_", "-")
        if param:
            self.body["param"] = param

    def payload(self) -> dict:
        return {"error": dict(self.body)}


def _missing(noun: str, object_id: str, param: str, status: int = 400) -> ApiError:
    return ApiError(status, f"No such {noun}: '{object_id}'", code="resource_missing", param=param)


def _bad_param(param: str, message: str, code: str = "parameter_invalid_integer") -> ApiError:
    return ApiError(400, message, code=code, param=param)


RATE_LIMIT_BODY = {
    "error": {
        "code": "rate_limit",
        "doc_url": _DOCS + "rate-limit",
        "message": "Request rate limit exceeded. Learn more about rate limits here "
                   "https://stripe.com/docs/rate-limits.",
        "type": "invalid_request_error",
    }
}

# Bodies for fail_next() when none is given.
_DEFAULT_FAILURES = {
    400: ApiError(400, "Invalid request (simulated).").payload(),
    401: ApiError(401, "Invalid API Key provided: sk_test_****mock").payload(),
    402: ApiError(402, "Your card was declined.", type="card_error", code="card_declined").payload(),
    404: ApiError(404, "No such object (simulated).", code="resource_missing").payload(),
    409: ApiError(409, "This object cannot be accessed right now because another API request "
                       "or Stripe process is currently accessing it.", code="lock_timeout").payload(),
    429: RATE_LIMIT_BODY,
}
_SERVER_ERROR = {"error": {"message": "An unknown error occurred", "type": "api_error"}}

# --------------------------------------------------------------------------- filters
# A filter builder gets the values of one parameter family ({"": [...]} for
# `status=x`, {"gte": [...], "lt": [...]} for `created[gte]=..&created[lt]=..`)
# or None when the request does not use it, and returns a predicate or None.

Group = dict[str, list[str]]
Predicate = Callable[[dict], bool]


def _single(name: str, group: Group) -> str:
    if set(group) != {""}:
        raise ApiError(400, f"Received unknown parameter: {name}[{next(k for k in group if k)}]",
                       param=name)
    return group[""][-1]


def _integer(param: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _bad_param(param, f"Invalid integer: {value}") from None


def equals(field_name: str) -> Callable[[str, Group | None], Predicate | None]:
    def build(name: str, group: Group | None) -> Predicate | None:
        if group is None:
            return None
        wanted = _single(name, group)
        return lambda obj: obj.get(field_name) == wanted
    return build


def boolean(field_name: str) -> Callable[[str, Group | None], Predicate | None]:
    def build(name: str, group: Group | None) -> Predicate | None:
        if group is None:
            return None
        value = _single(name, group)
        if value not in ("true", "false"):
            raise _bad_param(name, f"Invalid boolean: {value}", code="parameter_invalid_boolean")
        return lambda obj: obj.get(field_name) is (value == "true")
    return build


def one_of(field_name: str) -> Callable[[str, Group | None], Predicate | None]:
    """`ids[]=a&ids[]=b` / `lookup_keys[0]=a`."""
    def build(name: str, group: Group | None) -> Predicate | None:
        if group is None:
            return None
        wanted = {v for values in group.values() for v in values}
        return lambda obj: obj.get(field_name) in wanted
    return build


_RANGE_OPS = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
              "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "": lambda a, b: a == b}


def time_range(field_name: str) -> Callable[[str, Group | None], Predicate | None]:
    """`created=ts` or `created[gte]=ts&created[lt]=ts`."""
    def build(name: str, group: Group | None) -> Predicate | None:
        if group is None:
            return None
        checks = []
        for op, values in group.items():
            if op not in _RANGE_OPS:
                raise ApiError(400, f"Received unknown parameter: {name}[{op}]", param=f"{name}[{op}]")
            bound = _integer(f"{name}[{op}]" if op else name, values[-1])
            checks.append((_RANGE_OPS[op], bound))
        return lambda obj: all(test(obj.get(field_name), bound) for test, bound in checks)
    return build


def subscription_status(name: str, group: Group | None) -> Predicate:
    """Stripe's default lists every subscription that is not canceled."""
    if group is None:
        return lambda sub: sub["status"] != "canceled"
    value = _single(name, group)
    if value == "all":
        return lambda sub: True
    if value == "ended":
        return lambda sub: sub["status"] in ("canceled", "incomplete_expired")
    if value not in SUBSCRIPTION_STATUSES:
        allowed = ", ".join((*SUBSCRIPTION_STATUSES, "ended", "all"))
        raise _bad_param(name, f"Invalid status: must be one of {allowed}",
                         code="parameter_invalid_string")
    return lambda sub: sub["status"] == value


def subscription_price(name: str, group: Group | None) -> Predicate | None:
    if group is None:
        return None
    wanted = _single(name, group)
    return lambda sub: any(i["price"]["id"] == wanted for i in sub["items"]["data"])


def required(field_name: str) -> Callable[[str, Group | None], Predicate]:
    def build(name: str, group: Group | None) -> Predicate:
        if group is None:
            raise ApiError(400, f"Missing required param: {name}.", code="parameter_missing",
                           param=name)
        wanted = _single(name, group)
        return lambda obj: obj.get(field_name) == wanted
    return build


def event_type(name: str, group: Group | None) -> Predicate | None:
    """`type=customer.subscription.updated` or a wildcard `type=customer.subscription.*`."""
    if group is None:
        return None
    pattern = _single(name, group)
    return lambda event: fnmatch.fnmatchcase(event.get("type"), pattern)


def event_types(name: str, group: Group | None) -> Predicate | None:
    """`types[]=a&types[]=b`: any of up to 20 types (wildcards allowed)."""
    if group is None:
        return None
    patterns = [v for values in group.values() for v in values]
    if len(patterns) > 20:
        raise ApiError(400, "Invalid array: types must have at most 20 elements.",
                       code="parameter_invalid_array", param=name)
    return lambda event: any(fnmatch.fnmatchcase(event.get("type"), p) for p in patterns)


INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")


def invoice_status(name: str, group: Group | None) -> Predicate | None:
    if group is None:
        return None
    value = _single(name, group)
    if value not in INVOICE_STATUSES:
        raise _bad_param(name, "Invalid status: must be one of draft, open, paid, "
                               "uncollectible, or void", code="parameter_invalid_string")
    return lambda invoice: invoice.get("status") == value


@dataclass(frozen=True)
class Endpoint:
    collection: str  # the store table
    object_type: str  # key into EXPANSIONS
    noun: str  # "No such <noun>: 'id'"
    filters: dict[str, Callable[[str, Group | None], Predicate | None]] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()  # accepted by Stripe, not simulated
    # Filters naming another object, which must exist: param -> (collection, noun).
    references: dict[str, tuple[str, str]] = field(default_factory=dict)
    exclusive: tuple[str, ...] = ()  # parameters that cannot be given together


_CREATED = {"created": time_range("created")}
ENDPOINTS: dict[str, Endpoint] = {
    "customers": Endpoint("customers", "customer", "customer",
                          {**_CREATED, "email": equals("email")}, ignored=("test_clock",)),
    "products": Endpoint("products", "product", "product",
                         {**_CREATED, "active": boolean("active"), "ids": one_of("id")},
                         ignored=("shippable", "url")),
    "prices": Endpoint("prices", "price", "price",
                       {**_CREATED, "active": boolean("active"), "currency": equals("currency"),
                        "product": equals("product"), "type": equals("type"),
                        "lookup_keys": one_of("lookup_key")},
                       ignored=("recurring",)),
    "coupons": Endpoint("coupons", "coupon", "coupon", dict(_CREATED)),
    "subscriptions": Endpoint("subscriptions", "subscription", "subscription",
                              {**_CREATED, "status": subscription_status,
                               "customer": equals("customer"), "price": subscription_price,
                               "collection_method": equals("collection_method")},
                              ignored=("automatic_tax", "current_period_end",
                                       "current_period_start", "test_clock"),
                              references={"customer": ("customers", "customer"),
                                          "price": ("prices", "price")}),
    "subscription_items": Endpoint("subscription_items", "subscription_item", "subscription item",
                                   {"subscription": required("subscription")},
                                   references={"subscription": ("subscriptions", "subscription")}),
    "charges": Endpoint("charges", "charge", "charge",
                        {**_CREATED, "customer": equals("customer"),
                         "payment_intent": equals("payment_intent")},
                        ignored=("transfer_group",),
                        references={"customer": ("customers", "customer")}),
    "refunds": Endpoint("refunds", "refund", "refund",
                        {**_CREATED, "charge": equals("charge"),
                         "payment_intent": equals("payment_intent")},
                        references={"charge": ("charges", "charge")}),
    "disputes": Endpoint("disputes", "dispute", "dispute",
                         {**_CREATED, "charge": equals("charge"),
                          "payment_intent": equals("payment_intent")},
                         references={"charge": ("charges", "charge")}),
    "events": Endpoint("events", "event", "event",
                       {**_CREATED, "type": event_type, "types": event_types},
                       ignored=("delivery_success",), exclusive=("type", "types")),
    "invoices": Endpoint("invoices", "invoice", "invoice",
                         {**_CREATED, "status": invoice_status, "customer": equals("customer"),
                          "subscription": equals("subscription"),
                          "collection_method": equals("collection_method")},
                         ignored=("due_date", "customer_account", "test_clock"),
                         references={"customer": ("customers", "customer"),
                                     "subscription": ("subscriptions", "subscription")}),
}

# --------------------------------------------------------------------------- expansion
# For each object type, the properties `expand[]` may name or walk through:
#   ("expand", collection, type)  an id (or list of ids) replaced by the object(s)
#   ("list", type)                a list object: the next level must be `data`
#   ("nested", type)              a sub-object walked into, not itself expandable
#   ("include",)                  a property returned only when expanded (tiers)

EXPANSIONS: dict[str, dict[str, tuple]] = {
    "subscription": {"customer": ("expand", "customers", "customer"),
                     "discounts": ("expand", "discounts", "discount"),
                     "items": ("list", "subscription_item")},
    "subscription_item": {"discounts": ("expand", "discounts", "discount"),
                          "price": ("nested", "price"), "plan": ("nested", "plan")},
    "discount": {"customer": ("expand", "customers", "customer"),
                 "source": ("nested", "discount_source")},
    "discount_source": {"coupon": ("expand", "coupons", "coupon")},
    "price": {"product": ("expand", "products", "product"), "tiers": ("include",),
              "currency_options": ("include",)},
    "plan": {"product": ("expand", "products", "product"), "tiers": ("include",)},
    "charge": {"customer": ("expand", "customers", "customer")},
    "product": {"default_price": ("expand", "prices", "price")},
    "customer": {},
    "coupon": {"currency_options": ("include",), "applies_to": ("include",)},
    "refund": {"charge": ("expand", "charges", "charge")},
    "dispute": {"charge": ("expand", "charges", "charge")},
    "event": {},
    "invoice": {"customer": ("expand", "customers", "customer"),
                "discounts": ("expand", "discounts", "discount"),
                "total_discount_amounts": ("nested", "discount_amount"),
                "lines": ("list", "line_item")},
    "line_item": {"discounts": ("expand", "discounts", "discount"),
                  "discount_amounts": ("nested", "discount_amount")},
    "discount_amount": {"discount": ("expand", "discounts", "discount")},
}


def check_expansion(path: str, root: tuple) -> None:
    """Raise Stripe's 400 unless `path` can be expanded from `root`:
    ("list", type) for list responses, ("object", type) for a single object."""
    segments = path.split(".")
    if len(segments) > MAX_EXPAND_DEPTH:
        raise ApiError(400, f"You cannot expand more than {MAX_EXPAND_DEPTH} levels of a "
                            f"property. Property: {path}", code="property_expansion_max_depth")
    state, expandable = root, False
    for seg in segments:
        kind, type_name = state
        if kind == "list":
            if seg != "data":
                break
            state, expandable = ("object", type_name), False
            continue
        rule = EXPANSIONS.get(type_name, {}).get(seg)
        if rule is None:
            break
        expandable = rule[0] in ("expand", "include")
        state = {"expand": ("object", rule[-1]), "list": ("list", rule[-1]),
                 "nested": ("object", rule[-1]), "include": ("include", "")}[rule[0]]
    else:
        if expandable:
            return
    raise ApiError(400, f"This property cannot be expanded ({path}).")


class _Expander:
    """Applies checked expansion paths to a response (a deep copy, mutated in place)."""

    def __init__(self, store: StripeStore):
        self.store = store

    def apply(self, node: Any, segments: list[str], state: tuple) -> Any:
        if node is None or not segments:
            return node
        if isinstance(node, list):  # a list of ids being expanded
            return [self.apply(item, segments, state) for item in node]
        kind, type_name = state
        seg, rest = segments[0], segments[1:]
        if kind == "list":
            node["data"] = [self.apply(item, rest, ("object", type_name)) for item in node["data"]]
            return node
        rule = EXPANSIONS[type_name][seg]
        if rule[0] == "include":
            if not (seg == "tiers" and node.get("billing_scheme") != "tiered"):
                node[seg] = self._included(node, seg)  # a per_unit price shows no tiers
            return node
        value = node.get(seg)
        if rule[0] == "expand":
            value = self._objects(value, rule[1])
        state = ("list", rule[-1]) if rule[0] == "list" else ("object", rule[-1])
        node[seg] = self.apply(value, rest, state)
        return node

    def _included(self, node: dict, prop: str) -> Any:
        """An expand-only property. The simulator's prices bill in one currency and
        its coupons apply to every product, which Stripe shows like this."""
        if prop == "tiers":
            return copy.deepcopy(self.store.price_tiers.get(node["id"], []))
        if prop == "currency_options" and node.get("object") == "price":
            return {node["currency"]: {
                "custom_unit_amount": None, "tax_behavior": node.get("tax_behavior"),
                "unit_amount": node.get("unit_amount"),
                "unit_amount_decimal": node.get("unit_amount_decimal"),
                **({"tiers": copy.deepcopy(self.store.price_tiers.get(node["id"], []))}
                   if node.get("billing_scheme") == "tiered" else {})}}
        if prop == "currency_options":
            return {}
        return {"products": []}  # applies_to

    def _objects(self, value: Any, collection: str) -> Any:
        if isinstance(value, list):
            return [self._objects(v, collection) for v in value]
        if isinstance(value, str):
            obj = self.store.get(collection, value)
            return self.store.snapshot(obj) if obj is not None else value
        return value  # None, or already expanded


# --------------------------------------------------------------------------- server


class FakeStripe(FakeServer):
    """A Stripe API double on 127.0.0.1, serving a StripeStore over real HTTP."""

    name = "fake-stripe"
    malformed_body = b'{\n  "object": "list",\n  "data": [\n    {"id": '

    def __init__(self, store: StripeStore, api_key: str = "sk_test_simulator",
                 host: str = "127.0.0.1", port: int = 0, *, live: bool = False,
                 tick_interval: float = 60.0, clock: Callable[[], float] = time.time,
                 ticker_options: dict | None = None):
        super().__init__(host, port)
        self.store = store
        self.ticker = None
        self.tick_interval = tick_interval
        if live:  # the company keeps moving while served (options: see CompanyTicker)
            from exporter.simulator.ticker import CompanyTicker
            self.ticker = CompanyTicker(store, clock=clock, **(ticker_options or {}))
        self.api_key = api_key
        self._ids = random.Random()
        self._expander = _Expander(store)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "FakeStripe":
        started = self._server is not None
        super().start()
        if self.ticker is not None and not started:
            self.ticker.start(self.tick_interval)
        return self

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        super().stop()

    # ------------------------------------------------------------------ Stripe's answers

    def failure_body(self, status: int) -> Any:
        return _DEFAULT_FAILURES.get(status, _SERVER_ERROR)

    def rate_limited(self) -> Response:
        return 429, {}, json_body(RATE_LIMIT_BODY)

    def response_headers(self, request_headers: Any) -> dict[str, str]:
        return {"Request-Id": self.request_id(),
                "Stripe-Version": request_headers.get("Stripe-Version") or API_VERSION}

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        try:
            self._authenticate(headers.get("Authorization"))
            return 200, {}, self.body(method, path, query)
        except ApiError as err:
            extra = {"WWW-Authenticate": 'Bearer realm="Stripe"'} if err.status == 401 else {}
            return err.status, extra, json_body(err.payload())

    def body(self, method: str, path: str, query: dict[str, list[str]]) -> bytes:
        """The JSON of a successful answer (raises ApiError otherwise)."""
        return json_body(self._route(method, path, query))

    def request_id(self) -> str:
        with self._lock:
            return "req_" + "".join(self._ids.choices(string.ascii_letters + string.digits, k=14))

    def _authenticate(self, header: str | None) -> None:
        key = ""
        if header:
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() == "bearer":
                key = credentials.strip()
            elif scheme.lower() == "basic":
                try:
                    key = base64.b64decode(credentials).decode().partition(":")[0]
                except (ValueError, UnicodeDecodeError):
                    key = credentials
        if not key:
            raise ApiError(401, "You did not provide an API key. You need to provide your API "
                                "key in the Authorization header, using Bearer auth (e.g. "
                                "'Authorization: Bearer YOUR_SECRET_KEY'). See "
                                "https://stripe.com/docs/api#authentication for details, or we "
                                "can help at https://support.stripe.com/.")
        if key != self.api_key:
            raise ApiError(401, f"Invalid API Key provided: {mask_key(key)}")

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> dict:
        match = re.fullmatch(r"/v1/([a-z_]+)(?:/([^/]+)(/lines)?)?/?", path)
        endpoint = ENDPOINTS.get(match.group(1)) if match else None
        if match and match.group(3) and match.group(1) != "invoices":
            endpoint = None
        if method != "GET" or endpoint is None:
            raise ApiError(404, f"Unrecognized request URL ({method}: {path}). Please see "
                                "https://stripe.com/docs or we can help at "
                                "https://support.stripe.com/.")
        params = _group(query)
        expand = params.pop("expand", {})
        paths = [p for values in expand.values() for p in values]
        if match.group(3):
            return self._lines(match.group(2), params, paths, path)
        if match.group(2):
            return self._retrieve(endpoint, match.group(2), params, paths)
        return self._list(endpoint, params, paths, path)

    def _retrieve(self, endpoint: Endpoint, object_id: str, params: dict[str, Group],
                  expand: list[str]) -> dict:
        for name in params:
            raise ApiError(400, f"Received unknown parameter: {name}", param=name)
        obj = self.store.get(endpoint.collection, object_id)
        if obj is None:
            raise _missing(endpoint.noun, object_id, "id", status=404)
        return self._expanded(self.store.snapshot(obj), expand, ("object", endpoint.object_type))

    def _list(self, endpoint: Endpoint, params: dict[str, Group], expand: list[str],
              path: str) -> dict:
        limit, after, before = _paging(params)
        for name in params:
            if name not in endpoint.filters and name not in endpoint.ignored:
                raise ApiError(400, f"Received unknown parameter: {name}", param=name)
        if endpoint.exclusive and all(name in params for name in endpoint.exclusive):
            raise ApiError(400, "You may only specify one of these parameters: "
                                f"{', '.join(endpoint.exclusive)}.")
        predicates = [p for name, build in endpoint.filters.items()
                      if (p := build(name, params.get(name))) is not None]
        for name, (collection, noun) in endpoint.references.items():
            if name in params and self.store.get(collection, _single(name, params[name])) is None:
                raise _missing(noun, _single(name, params[name]), name)
        for path_ in expand:
            check_expansion(path_, ("list", endpoint.object_type))

        derived = endpoint.collection in VIRTUAL_COLLECTIONS
        with self.store.lock:  # one consistent view while a ticker writes
            if derived:  # light entries, newest first; objects built for the page only
                everything, positions = self.store.index(endpoint.collection)
            else:
                everything, positions = self.store.listing(endpoint.collection)
            page, has_more = _page(everything, predicates, limit, after, before, endpoint.noun,
                                   positions)
            data = ([self.store.materialize(endpoint.collection, o) for o in page] if derived
                    else self.store.snapshot(page))
        body = {"object": "list", "data": data, "has_more": has_more, "url": path.rstrip("/")}
        return self._expanded(body, expand, ("list", endpoint.object_type))

    def _lines(self, invoice_id: str, params: dict[str, Group], expand: list[str],
               path: str) -> dict:
        """`/v1/invoices/{id}/lines`: every line of an invoice, paged."""
        limit, after, before = _paging(params)
        for name in params:
            raise ApiError(400, f"Received unknown parameter: {name}", param=name)
        for path_ in expand:
            check_expansion(path_, ("list", "line_item"))
        lines = self.store.invoice_lines(invoice_id)
        if lines is None:
            raise _missing("invoice", invoice_id, "id", status=404)
        page, has_more = _page(lines, [], limit, after, before, "invoice line item")
        body = {"object": "list", "data": page, "has_more": has_more, "url": path.rstrip("/")}
        return self._expanded(body, expand, ("list", "line_item"))

    def _expanded(self, body: dict, expand: list[str], root: tuple) -> dict:
        for path in expand:
            check_expansion(path, root)
        for path in expand:
            body = self._expander.apply(body, path.split("."), root)
        return body


def _page(everything: list, predicates: list[Predicate], limit: int, after: Group | None,
          before: Group | None, noun: str, positions: dict[str, int] | None = None
          ) -> tuple[list, bool]:
    """One page of a newest-first list after the cursor, and whether more match."""
    start, stop, step = 0, len(everything), 1
    if after or before:
        cursor = _single("starting_after" if after else "ending_before", after or before)
        if positions is not None:
            position = positions.get(cursor)
        else:
            position = next((i for i, o in enumerate(everything) if o["id"] == cursor), None)
        if position is None:
            raise _missing(noun, cursor, "starting_after" if after else "ending_before")
        if after:
            start = position + 1
        else:  # walk backwards from the cursor, then restore the order
            start, stop, step = position - 1, -1, -1
    matching = []
    for i in range(start, stop, step):
        obj = everything[i]
        if all(p(obj) for p in predicates):
            matching.append(obj)
            if len(matching) > limit:
                break
    has_more = len(matching) > limit
    page = matching[:limit]
    if step < 0:
        page.reverse()
    return page, has_more


def mask_key(key: str) -> str:
    """sk_test_abcdef1234 -> sk_test_****1234, as Stripe echoes a wrong key."""
    prefix = re.match(r"[a-z]{2,4}_(?:test|live)_", key)
    return (prefix.group(0) if prefix else "") + "****" + key[-4:]


def _group(query: dict[str, list[str]]) -> dict[str, Group]:
    """{"created[gte]": ["1"], "expand[]": [..]} -> {"created": {"gte": ["1"]}, "expand": {"": [..]}}."""
    grouped: dict[str, Group] = {}
    for key, values in query.items():
        match = re.fullmatch(r"([A-Za-z_]+)(?:\[([A-Za-z0-9_]*)\])?", key)
        if match is None:
            raise ApiError(400, f"Received unknown parameter: {key}", param=key)
        grouped.setdefault(match.group(1), {}).setdefault(match.group(2) or "", []).extend(values)
    return grouped


def _paging(params: dict[str, Group]) -> tuple[int, Group | None, Group | None]:
    """Take `limit`, `starting_after` and `ending_before` out of a list request."""
    limit = _limit(params.pop("limit", None))
    after = params.pop("starting_after", None)
    before = params.pop("ending_before", None)
    if after and before:
        raise ApiError(400, "You may only specify one of these parameters: "
                            "starting_after, ending_before.")
    return limit, after, before


def _limit(group: Group | None) -> int:
    if group is None:
        return 10
    value = _integer("limit", _single("limit", group))
    if value < 1:
        raise _bad_param("limit", "This value must be greater than or equal to 1.")
    if value > 100:
        raise _bad_param("limit", "This value must be less than or equal to 100.")
    return value
