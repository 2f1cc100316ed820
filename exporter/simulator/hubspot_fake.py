"""A local HTTP server that answers like HubSpot's CRM v3 API, for the demo and tests.

    with FakeHubSpot(generate_crm(seed=9, now=now)) as fake:
        requests.get(f"{fake.url}/crm/v3/pipelines/deals",
                     headers={"Authorization": f"Bearer {fake.access_token}"})

It serves a `CrmCompany` (exporter/simulator/crm_company.py) in HubSpot's
shapes: its pipelines and stages (`GET /crm/v3/pipelines/deals`, metadata
values as strings: won is closed at probability "1.0"), the account
(`GET /account-info/v3/details`: companyCurrency from the company, the other
deal currencies as additionalCurrencies), its deals and its leads as contacts
(`GET /crm/v3/objects/{deals|contacts}` and `.../{id}`, `POST .../search`).
Ids are the company's ids as strings; dates are ISO 8601 in UTC with
milliseconds (a deterministic 0-999 ms per object on second-resolution times,
.000 on close and conversion dates, which are midnights), so flooring them to
seconds gives back the company's values exactly.

Deal properties: dealname, amount (a plain decimal string; a deal without an
amount has null or "", both of which HubSpot sends), deal_currency_code,
dealstage, pipeline, closedate (the close date for closed deals, an expected
future date for open ones), createdate, hs_lastmodifieddate, hs_is_closed,
hs_is_closed_won, hs_deal_stage_probability, hs_v2_date_entered_current_stage,
hs_object_id. Contact properties: email, firstname/lastname (null),
createdate, lastmodifieddate, lifecyclestage (lead, marketingqualifiedlead,
salesqualifiedlead or opportunity), hs_v2_date_entered_<stage> and the legacy
hs_lifecyclestage_<stage>_date for every standard lifecycle stage (lead =
createdate, the MQL/SQL/opportunity dates from the lead, null when not
reached), hs_sa_first_engagement_date (the first touch). Requested properties
an object type does not have are left out, as HubSpot does; hs_object_id,
createdate and the last-modified date always come back; no `properties` gives
HubSpot's default set.

List: `limit` up to 100 (more is a 400), `after` cursors with a
`paging.next.link` to this server, no paging key on the last page, ordered by
id, `archived=true` lists deleted objects. Search: filterGroups ORed, filters
ANDed (EQ, NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY,
NOT_HAS_PROPERTY; date values as epoch milliseconds or ISO 8601; EQ/IN on text
ignore case; NEQ/NOT_IN match objects without the property), at most 5 groups,
6 filters a group and 18 in all (HubSpot's search guide; an August 2024
changelog announced 5/10/25 - the guide's numbers are kept), one sort (the
first given; ties by id, objects without the property last), `limit` up to 200,
`after` an offset, `total`. The 10,000-result cap: a search whose after + limit
passes 10,000 answers 400 VALIDATION_ERROR "There was a problem with the
request." - the status and category are documented, the exact message is not
(it is HubSpot's generic search validation message).

Auth: `Authorization: Bearer <access_token>`; a missing or wrong token is a 401
INVALID_AUTHENTICATION, a token made stale by `expire_token()` a 401
EXPIRED_AUTHENTICATION ("The OAuth token used to make this call expired N
second(s) ago."), both with `X-HubSpot-Auth-Failure: 401 Unauthorized`;
`renew_token()` issues a new one. Errors are `{"status": "error", "message",
"correlationId", "category"}` with the same id in `X-HubSpot-Correlation-Id`.

Rate limits, from this server's own requests: searches are limited to
`search_per_second` in any one-second window (429 `{"status": "error",
"message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT",
"correlationId", "policyName": "SECONDLY"}`) and carry no rate-limit headers,
as HubSpot documents. Every other authenticated request counts against
`burst_limit` per rolling 10 seconds and `daily_limit` per UTC day and carries
X-HubSpot-RateLimit-Daily, -Daily-Remaining, -Interval-Milliseconds (10000),
-Max, -Remaining, -Secondly and -Secondly-Remaining; once -Remaining has reached
0 the next requests get 429 policyName TEN_SECONDLY_ROLLING ("You have reached
your ten_secondly_rolling limit.") until the window frees (DAILY likewise).
Refused requests do not count. `FakeServer.rate_limit()` stays available on top.

Changes for tests: `touch_deal(id, stage=...)` / `touch_contact(id, sql=...)`
change the company's object in place and mark it modified now (a stage move
also sets hs_v2_date_entered_current_stage, and the close date when it
closes); `delete_deal(id)` / `delete_contact(id)` take it out of the company
and archive it (gone from list and search, listed with archived=true);
`reload()` re-reads the company after other changes to it.

Simplified: deals and contacts only (other object types are a 400), no
associations, property history, free-text `query`, CONTAINS_TOKEN, batch or
write endpoints; the search index is never behind writes.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from datetime import datetime, timezone
from typing import Any, Callable

from exporter.simulator.crm_company import DAY, CrmCompany, CrmDeal, CrmLead, midnight
from exporter.simulator.fake_server import FakeServer, Response, json_body

DEFAULT_TOKEN = "pat-na1-5e1b4f2a-7c3d-4e8f-9a6b-0d2c1e3f4a5b"
PORTAL_ID = 62515
MAX_LIST_LIMIT = 100
MAX_SEARCH_LIMIT = 200
SEARCH_CAP = 10_000  # results one search query can page through
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
INTERVAL_MS = 10_000  # the rolling window of X-HubSpot-RateLimit-Max
BURST_LIMIT = 190  # requests per 10 s of a Professional or Enterprise account's private app
DAILY_LIMIT = 650_000  # requests per day of a Professional account's private app
SEARCH_PER_SECOND = 5

KINDS = {"deals": "deals", "0-3": "deals", "contacts": "contacts", "0-1": "contacts"}
LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                    "opportunity", "customer", "evangelist", "other")
MODIFIED = {"deals": "hs_lastmodifieddate", "contacts": "lastmodifieddate"}
DEFAULT_PROPERTIES = {
    "deals": ("amount", "closedate", "createdate", "dealname", "dealstage",
              "hs_lastmodifieddate", "hs_object_id", "pipeline"),
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate",
                 "lastname"),
}
NUMBER_PROPERTIES = frozenset({"amount", "hs_object_id", "hs_deal_stage_probability"})
DATE_PROPERTIES = frozenset({"createdate", "closedate", "hs_lastmodifieddate", "lastmodifieddate",
                             "hs_sa_first_engagement_date", "hs_v2_date_entered_current_stage"})
OPERATORS = frozenset({"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN",
                       "HAS_PROPERTY", "NOT_HAS_PROPERTY"})
RANGE_OPERATORS = frozenset({"EQ", "LT", "LTE", "GT", "GTE", "BETWEEN"})
AUTH_NOT_FOUND = ("Authentication credentials not found. This API supports OAuth 2.0 "
                  "authentication and you can find more details at "
                  "https://developers.hubspot.com/docs/methods/auth/oauth-overview")
SEARCH_CAP_MESSAGE = "There was a problem with the request."


class ApiError(Exception):
    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR"):
        super().__init__(message)
        self.status = status
        self.category = category


@dataclass
class _Record:
    """One object as served: its properties as HubSpot strings, and the same values
    in comparable form (ms, Decimal, lower-case text; None when not set) for search."""

    id: int
    properties: dict[str, str | None]
    values: dict[str, Any]
    created: str
    updated: str
    archived_at: str | None = None

    def public(self, names: tuple[str, ...]) -> dict:
        props = self.properties
        body: dict[str, Any] = {"id": str(self.id),
                                "properties": {n: props[n] for n in names if n in props},
                                "createdAt": self.created, "updatedAt": self.updated,
                                "archived": self.archived_at is not None}
        if self.archived_at is not None:
            body["archivedAt"] = self.archived_at
        return body


@dataclass
class _Filter:
    name: str
    operator: str
    operand: Any = None


@dataclass
class _Objects:
    """One object type: live and archived records, and what searches reuse."""

    kind: str
    live: dict[int, _Record] = field(default_factory=dict)
    archived: dict[int, _Record] = field(default_factory=dict)
    version: int = 0
    _order: list[int] | None = None
    _indexes: dict[str, tuple[list[Any], list[int]]] = field(default_factory=dict)
    _queries: collections.OrderedDict = field(default_factory=collections.OrderedDict)

    def changed(self) -> None:
        self.version += 1
        self._order = None
        self._indexes.clear()
        self._queries.clear()

    def ids(self) -> list[int]:
        if self._order is None:
            self._order = sorted(self.live)
        return self._order

    def index(self, name: str) -> tuple[list[Any], list[int]]:
        """(values ascending, ids) of the live objects that have the property."""
        if name not in self._indexes:
            pairs = sorted((r.values[name], r.id) for r in self.live.values()
                           if r.values.get(name) is not None)
            self._indexes[name] = ([v for v, _ in pairs], [i for _, i in pairs])
        return self._indexes[name]

    def search(self, groups: list[list[_Filter]], sort: tuple[str, bool] | None) -> list[int]:
        key = repr((groups, sort))
        cached = self._queries.get(key)
        if cached is not None:
            self._queries.move_to_end(key)
            return cached
        if not groups:
            matched = set(self.live)
        else:
            matched = set()
            for group in groups:
                matched.update(self._match_group(group))
        ordered = sorted(matched)
        if sort is not None:
            name, descending = sort
            values = {i: self.live[i].values.get(name) for i in ordered}
            present = [i for i in ordered if values[i] is not None]
            present.sort(key=values.__getitem__, reverse=descending)  # stable: ties by id
            ordered = present + [i for i in ordered if values[i] is None]
        self._queries[key] = ordered
        if len(self._queries) > 32:
            self._queries.popitem(last=False)
        return ordered

    def _match_group(self, group: list[_Filter]) -> list[int]:
        candidates: list[int] | None = None
        for flt in group:
            if flt.operator in RANGE_OPERATORS:
                candidates = self._range(flt)
                break
        if candidates is None:
            candidates = self.ids()
        live = self.live
        return [i for i in candidates
                if all(_matches(live[i].values.get(f.name), f) for f in group)]

    def _range(self, flt: _Filter) -> list[int]:
        values, ids = self.index(flt.name)
        op, operand = flt.operator, flt.operand
        lo, hi = 0, len(values)
        if op in ("EQ", "GTE"):
            lo = bisect_left(values, operand)
        elif op == "GT":
            lo = bisect_right(values, operand)
        elif op == "BETWEEN":
            lo = bisect_left(values, operand[0])
        if op in ("EQ", "LTE"):
            hi = bisect_right(values, operand)
        elif op == "LT":
            hi = bisect_left(values, operand)
        elif op == "BETWEEN":
            hi = bisect_right(values, operand[1])
        return ids[lo:hi]


def _matches(value: Any, flt: _Filter) -> bool:
    op, operand = flt.operator, flt.operand
    if op == "HAS_PROPERTY":
        return value is not None
    if op == "NOT_HAS_PROPERTY":
        return value is None
    if op == "NEQ":
        return value is None or value != operand
    if op == "NOT_IN":
        return value is None or value not in operand
    if value is None:
        return False
    if op == "EQ":
        return value == operand
    if op == "IN":
        return value in operand
    if op == "GT":
        return value > operand
    if op == "GTE":
        return value >= operand
    if op == "LT":
        return value < operand
    if op == "LTE":
        return value <= operand
    return operand[0] <= value <= operand[1]  # BETWEEN


class FakeHubSpot(FakeServer):
    """A HubSpot CRM v3 API double on 127.0.0.1 (see the module doc)."""

    name = "fake-hubspot"
    server_header = "cloudflare"
    malformed_body = b'{"results":[{"id":"1","properties":{"dealname":"Deal 1","amount":'

    def __init__(self, company: CrmCompany, access_token: str = DEFAULT_TOKEN,
                 search_per_second: float | None = SEARCH_PER_SECOND, *,
                 burst_limit: int | None = BURST_LIMIT, daily_limit: int | None = DAILY_LIMIT,
                 portal_id: int = PORTAL_ID, clock: Callable[[], float] = time.monotonic,
                 host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.company = company
        self.access_token = access_token
        self.portal_id = portal_id
        # Limits are read on every request: assign None to switch one off.
        self.search_per_second = search_per_second
        self.burst_limit = burst_limit
        self.daily_limit = daily_limit
        self._clock = clock
        self._state = threading.RLock()
        self._expired_at: float | None = None
        self._searches: collections.deque[float] = collections.deque()
        self._window: collections.deque[float] = collections.deque()
        self._day = (int(time.time()) // DAY, 0)
        self._objects = {"deals": _Objects("deals"), "contacts": _Objects("contacts")}
        self.reload()

    # ------------------------------------------------------------------ test controls

    def expire_token(self) -> None:
        """The current access token has expired: requests with it get 401 EXPIRED_AUTHENTICATION."""
        with self._state:
            self._expired_at = time.time()

    def renew_token(self, token: str | None = None) -> str:
        """Issue a new access token (the old one stops working) and return it."""
        with self._state:
            self.access_token = token or f"pat-na1-{uuid.uuid4()}"
            self._expired_at = None
            return self.access_token

    def reload(self) -> None:
        """Re-read every deal and lead of the company (after changes made to it directly)."""
        with self._state:
            for kind, source, render in (("deals", self.company.deals, self._render_deal),
                                         ("contacts", self.company.leads, self._render_lead)):
                objects = self._objects[kind]
                objects.live = {item.id: render(item) for item in source}
                for item_id in objects.live:
                    objects.archived.pop(item_id, None)
                objects.changed()

    def touch_deal(self, deal_id: int | str, at: int | None = None, **changes: Any) -> dict:
        """Change a deal (CrmDeal fields: stage, pipeline, amount, currency, name, closed)
        and mark it modified at `at` (default: now). A new stage is entered at `at`; a
        closed stage sets the close date to that day unless `closed` is given, an open
        one clears it. Returns the deal's properties as served."""
        at = int(time.time()) if at is None else int(at)
        with self._state:
            deal = self._find(self.company.deals, deal_id, "deal")
            _check_fields(CrmDeal, changes, {"id", "created", "modified", "stage_changed"})
            if changes.get("amount") is not None:
                changes["amount"] = Decimal(str(changes["amount"]))
            pipeline = self.company.pipeline(changes.get("pipeline", deal.pipeline))
            stage_id = changes.get("stage", deal.stage)
            if stage_id not in {s.id for s in pipeline.stages}:
                raise ValueError(f"pipeline {pipeline.id!r} has no stage {stage_id!r}")
            moved = stage_id != deal.stage or pipeline.id != deal.pipeline
            for name, value in changes.items():
                setattr(deal, name, value)
            if moved:
                deal.stage_changed = at
                if "closed" not in changes:
                    deal.closed = midnight(at) if pipeline.stage(stage_id).is_closed else None
            deal.modified = at
            return self._replace("deals", self._render_deal(deal))

    def touch_contact(self, contact_id: int | str, at: int | None = None, **changes: Any) -> dict:
        """Change a lead (CrmLead fields: email, mql, sql, opportunity, first_touch) and mark
        it modified at `at` (default: now). Returns its properties as served."""
        at = int(time.time()) if at is None else int(at)
        with self._state:
            lead = self._find(self.company.leads, contact_id, "contact")
            _check_fields(CrmLead, changes, {"id", "created", "modified"})
            for name, value in changes.items():
                setattr(lead, name, value)
            lead.modified = at
            return self._replace("contacts", self._render_lead(lead))

    def delete_deal(self, deal_id: int | str) -> None:
        """Delete (archive) a deal: it leaves the company, the list and the search."""
        self._delete("deals", self.company.deals, deal_id, "deal")

    def delete_contact(self, contact_id: int | str) -> None:
        """Delete (archive) a contact: it leaves the company, the list and the search."""
        self._delete("contacts", self.company.leads, contact_id, "contact")

    def properties(self, kind: str, object_id: int | str) -> dict[str, str | None]:
        """Every property of a live deal or contact, as served."""
        with self._state:
            return dict(self._objects[KINDS[kind]].live[int(object_id)].properties)

    # ------------------------------------------------------------------ FakeServer hooks

    def failure_body(self, status: int) -> Any:
        if status == 401:
            return _error_body(AUTH_NOT_FOUND, "INVALID_AUTHENTICATION")
        if status == 429:
            return _rate_body("You have reached your ten_secondly_rolling limit.",
                              "TEN_SECONDLY_ROLLING")
        if status < 500:
            return _error_body("simulated failure", "VALIDATION_ERROR")
        return {"status": "error", "message": "internal error", "correlationId": str(uuid.uuid4())}

    def rate_limited(self) -> Response:
        body = _rate_body("You have reached your ten_secondly_rolling limit.",
                          "TEN_SECONDLY_ROLLING")
        return 429, {"X-HubSpot-Correlation-Id": body["correlationId"]}, json_body(body)

    def response_headers(self, request_headers: Any) -> dict[str, str]:
        return {"X-HubSpot-Correlation-Id": str(uuid.uuid4()), "Vary": "Accept-Encoding"}

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        refused = self._authenticate(headers.get("Authorization"))
        if refused is not None:
            return refused
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 5 and parts[:3] == ["crm", "v3", "objects"] \
                and parts[4] == "search":
            limited = self._search_limited()
            if limited is not None:
                return limited
            return self._answer(lambda: self._search(parts[3], body))
        rate_headers, limited = self._count_request()
        if limited is not None:
            status, extra, payload = limited
            return status, {**rate_headers, **extra}, payload
        status, extra, payload = self._route(method, parts, query)
        return status, {**rate_headers, **extra}, payload

    # ------------------------------------------------------------------ auth and limits

    def _authenticate(self, header: str | None) -> Response | None:
        scheme, _, token = (header or "").partition(" ")
        with self._state:
            current, expired_at = self.access_token, self._expired_at
        if scheme.lower() == "bearer" and token.strip() == current:
            if expired_at is None:
                return None
            ago = max(0, int(time.time() - expired_at))
            return _error(401, f"The OAuth token used to make this call expired {ago} second(s) "
                               "ago.", "EXPIRED_AUTHENTICATION",
                          {"X-HubSpot-Auth-Failure": "401 Unauthorized"})
        return _error(401, AUTH_NOT_FOUND, "INVALID_AUTHENTICATION",
                      {"X-HubSpot-Auth-Failure": "401 Unauthorized"})

    def _search_limited(self) -> Response | None:
        limit = self.search_per_second
        if not limit:
            return None
        now = self._clock()
        with self._state:
            while self._searches and self._searches[0] <= now - 1.0:
                self._searches.popleft()
            if len(self._searches) >= limit:
                body = _rate_body("You have reached your secondly limit.", "SECONDLY")
                return 429, {"X-HubSpot-Correlation-Id": body["correlationId"]}, json_body(body)
            self._searches.append(now)
        return None

    def _count_request(self) -> tuple[dict[str, str], Response | None]:
        """Count a non-search request against the 10-second and daily limits: its
        X-HubSpot-RateLimit-* headers, and a 429 when a limit is used up."""
        burst, daily = self.burst_limit, self.daily_limit
        if not burst and not daily:
            return {}, None
        now = self._clock()
        with self._state:
            window = self._window
            while window and window[0] <= now - INTERVAL_MS / 1000:
                window.popleft()
            day = int(time.time()) // DAY
            if self._day[0] != day:
                self._day = (day, 0)
            used_today = self._day[1]
            policy = None
            if burst and len(window) >= burst:
                policy = ("You have reached your ten_secondly_rolling limit.",
                          "TEN_SECONDLY_ROLLING")
            elif daily and used_today >= daily:
                policy = ("You have reached your daily limit.", "DAILY")
            if policy is None:
                window.append(now)
                used_today += 1
                self._day = (day, used_today)
            in_last_second = len(window) - bisect_right(window, now - 1.0)
        headers: dict[str, str] = {}
        if daily:
            headers["X-HubSpot-RateLimit-Daily"] = str(daily)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(0, daily - used_today))
        if burst:
            secondly = max(1, burst // 10)
            headers.update({
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(INTERVAL_MS),
                "X-HubSpot-RateLimit-Max": str(burst),
                "X-HubSpot-RateLimit-Remaining": str(max(0, burst - len(window))),
                "X-HubSpot-RateLimit-Secondly": str(secondly),
                "X-HubSpot-RateLimit-Secondly-Remaining": str(max(0, secondly - in_last_second)),
            })
        if policy is None:
            return headers, None
        body = _rate_body(*policy)
        return headers, (429, {"X-HubSpot-Correlation-Id": body["correlationId"]}, json_body(body))

    # ------------------------------------------------------------------ endpoints

    def _route(self, method: str, parts: list[str], query: dict[str, list[str]]) -> Response:
        if method != "GET":
            return _error(405, f"Method {method} is not supported by this simulator",
                          "VALIDATION_ERROR")
        if parts == ["crm", "v3", "pipelines", "deals"]:
            return self._answer(self._pipelines)
        if parts == ["account-info", "v3", "details"]:
            return self._answer(self._account)
        if len(parts) == 4 and parts[:3] == ["crm", "v3", "objects"]:
            return self._answer(lambda: self._list(parts[3], query))
        if len(parts) == 5 and parts[:3] == ["crm", "v3", "objects"]:
            return self._answer(lambda: self._read(parts[3], parts[4], query))
        return _error(404, f"Unknown endpoint /{'/'.join(parts)}", "OBJECT_NOT_FOUND")

    def _answer(self, produce: Callable[[], Any]) -> Response:
        try:
            with self._state:
                payload = produce()
        except ApiError as err:
            return _error(err.status, str(err), err.category)
        return 200, {}, json_body(payload)

    def _pipelines(self) -> dict:
        stamp = _iso((self.company.now - 400 * DAY) * 1000)
        return {"results": [
            {"id": p.id, "label": p.label, "displayOrder": order, "archived": False,
             "createdAt": stamp, "updatedAt": stamp,
             "stages": [{"id": s.id, "label": s.label, "displayOrder": position,
                         "archived": False, "createdAt": stamp, "updatedAt": stamp,
                         "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
                         "metadata": {"isClosed": "true" if s.is_closed else "false",
                                      "probability": str(s.probability)}}
                        for position, s in enumerate(p.stages)]}
            for order, p in enumerate(self.company.pipelines)]}

    def _account(self) -> dict:
        own = self.company.currency.upper()
        others = sorted({d.currency.upper() for d in self.company.deals} - {own})
        return {"portalId": self.portal_id, "accountType": "STANDARD", "timeZone": "US/Eastern",
                "companyCurrency": own, "additionalCurrencies": others, "utcOffset": "-05:00",
                "utcOffsetMilliseconds": -18_000_000, "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1"}

    def _list(self, kind_name: str, query: dict[str, list[str]]) -> dict:
        kind = _kind(kind_name)
        limit = _int(query.get("limit", ["10"])[0], "limit")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ApiError(400, f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
        after = query.get("after", [""])[0]
        start = _int(after, "after") if after else 0
        names = _property_names(kind, _listed(query.get("properties")))
        objects = self._objects[kind]
        archived = query.get("archived", ["false"])[0].lower() == "true"
        records = objects.archived if archived else objects.live
        ids = sorted(records) if archived else objects.ids()
        first = bisect_right(ids, start)
        page = ids[first:first + limit]
        reply: dict[str, Any] = {"results": [records[i].public(names) for i in page]}
        if first + limit < len(ids):
            cursor = str(page[-1])
            link = f"{self.url}/crm/v3/objects/{kind_name}?limit={limit}&after={cursor}"
            if query.get("properties"):
                link += f"&properties={','.join(_listed(query.get('properties')))}"
            reply["paging"] = {"next": {"after": cursor, "link": link}}
        return reply

    def _read(self, kind_name: str, object_id: str, query: dict[str, list[str]]) -> dict:
        kind = _kind(kind_name)
        record = self._objects[kind].live.get(int(object_id)) if object_id.isdigit() else None
        if record is None:
            raise ApiError(404, "Object not found.  objectId are usually numeric.",
                           "OBJECT_NOT_FOUND")
        return record.public(_property_names(kind, _listed(query.get("properties"))))

    def _search(self, kind_name: str, raw: bytes) -> dict:
        kind = _kind(kind_name)
        try:
            body = json.loads(raw or b"{}")
        except ValueError as err:
            raise ApiError(400, f"Invalid input JSON: {err}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid input JSON: expected an object")
        limit = _int(body.get("limit", 10), "limit")
        if not 0 <= limit <= MAX_SEARCH_LIMIT:
            raise ApiError(400, f"limit must be between 0 and {MAX_SEARCH_LIMIT}, got {limit}")
        after = _int(body.get("after") or 0, "after")
        if after < 0:
            raise ApiError(400, f"after must not be negative, got {after}")
        if after + limit > SEARCH_CAP:
            raise ApiError(400, SEARCH_CAP_MESSAGE)
        groups = _filter_groups(kind, body.get("filterGroups") or [])
        sort = _sort(body.get("sorts") or [])
        names = _property_names(kind, body.get("properties") or ())
        objects = self._objects[kind]
        ordered = objects.search(groups, sort)
        page = ordered[after:after + limit]
        reply: dict[str, Any] = {"total": len(ordered),
                                 "results": [objects.live[i].public(names) for i in page]}
        if limit and after + len(page) < len(ordered):
            reply["paging"] = {"next": {"after": str(after + len(page))}}
        return reply

    # ------------------------------------------------------------------ rendering

    def _render_deal(self, deal: CrmDeal) -> _Record:
        pipeline = self.company.pipeline(deal.pipeline)
        stage = pipeline.stage(deal.stage)
        jitter = _jitter(deal.id)
        if deal.closed is not None:
            close_ms = deal.closed * 1000
        else:  # an open deal's expected close date, in the future of the company's now
            expected = midnight(max(deal.created + 40 * DAY, self.company.now))
            close_ms = (expected + (7 + deal.id % 21) * DAY) * 1000
        if deal.amount is not None:
            amount: str | None = format(deal.amount.normalize(), "f")
        else:
            amount = None if deal.id % 2 else ""
        values: dict[str, Any] = {
            "hs_object_id": Decimal(deal.id), "dealname": deal.name,
            "amount": deal.amount, "deal_currency_code": deal.currency.upper(),
            "dealstage": stage.id, "pipeline": pipeline.id, "closedate": close_ms,
            "createdate": deal.created * 1000 + jitter,
            "hs_lastmodifieddate": deal.modified * 1000 + jitter,
            "hs_v2_date_entered_current_stage": deal.stage_changed * 1000 + jitter,
            "hs_is_closed": "true" if stage.is_closed else "false",
            "hs_is_closed_won": "true" if stage.is_won else "false",
            "hs_deal_stage_probability": stage.probability,
        }
        properties = _strings(values)
        properties["amount"] = amount
        return _Record(deal.id, properties, _comparable(values),
                       properties["createdate"], properties["hs_lastmodifieddate"])

    def _render_lead(self, lead: CrmLead) -> _Record:
        jitter = _jitter(lead.id)

        def ms(at: int | None, exact: bool = False) -> int | None:
            return None if at is None else at * 1000 + (0 if exact else jitter)

        entered = {"lead": ms(lead.created), "marketingqualifiedlead": ms(lead.mql),
                   "salesqualifiedlead": ms(lead.sql),
                   "opportunity": ms(lead.opportunity, exact=True)}
        current = next(s for s in ("opportunity", "salesqualifiedlead", "marketingqualifiedlead",
                                   "lead") if entered[s] is not None)
        values: dict[str, Any] = {
            "hs_object_id": Decimal(lead.id), "email": lead.email, "firstname": None,
            "lastname": None, "createdate": ms(lead.created), "lastmodifieddate": ms(lead.modified),
            "lifecyclestage": current, "hs_sa_first_engagement_date": ms(lead.first_touch),
        }
        for stage in LIFECYCLE_STAGES:
            values[f"hs_v2_date_entered_{stage}"] = entered.get(stage)
            values[f"hs_lifecyclestage_{stage}_date"] = entered.get(stage)
        properties = _strings(values)
        return _Record(lead.id, properties, _comparable(values),
                       properties["createdate"], properties["lastmodifieddate"])

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _find(items: list, object_id: int | str, what: str) -> Any:
        wanted = int(object_id)
        for item in items:
            if item.id == wanted:
                return item
        raise KeyError(f"no {what} {object_id!r}")

    def _replace(self, kind: str, record: _Record) -> dict:
        objects = self._objects[kind]
        objects.live[record.id] = record
        objects.changed()
        return dict(record.properties)

    def _delete(self, kind: str, items: list, object_id: int | str, what: str) -> None:
        with self._state:
            item = self._find(items, object_id, what)
            items.remove(item)
            objects = self._objects[kind]
            record = objects.live.pop(item.id)
            record.archived_at = _iso(int(time.time() * 1000))
            objects.archived[item.id] = record
            objects.changed()


# ---------------------------------------------------------------------- request parsing


def _kind(name: str) -> str:
    kind = KINDS.get(name)
    if kind is None:
        raise ApiError(400, f"Unable to infer object type from: {name}")
    return kind


def _int(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ApiError(400, f"{name}: {value!r} is not a whole number") from None


def _listed(values: list[str] | None) -> list[str]:
    """Query properties, repeated or comma-separated."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def _property_names(kind: str, requested: Any) -> tuple[str, ...]:
    if isinstance(requested, str):
        requested = [requested]
    names = [str(n) for n in requested] or list(DEFAULT_PROPERTIES[kind])
    return tuple(dict.fromkeys(["hs_object_id", "createdate", MODIFIED[kind], *names]))


def _filter_groups(kind: str, raw: Any) -> list[list[_Filter]]:
    if not isinstance(raw, list) or not all(isinstance(g, dict) for g in raw):
        raise ApiError(400, "filterGroups must be a list of objects with filters")
    if len(raw) > MAX_FILTER_GROUPS:
        raise ApiError(400, f"Too many filter groups ({len(raw)}); the maximum is "
                            f"{MAX_FILTER_GROUPS}")
    groups = []
    for group in raw:
        filters = group.get("filters") or []
        if not isinstance(filters, list) or not filters:
            raise ApiError(400, "every filter group needs at least one filter")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise ApiError(400, f"Too many filters in a group ({len(filters)}); the maximum is "
                                f"{MAX_FILTERS_PER_GROUP}")
        groups.append([_filter(kind, f) for f in filters])
    total = sum(len(g) for g in groups)
    if total > MAX_FILTERS:
        raise ApiError(400, f"Too many filters ({total}); the maximum is {MAX_FILTERS}")
    return groups


def _filter(kind: str, raw: Any) -> _Filter:
    if not isinstance(raw, dict) or not isinstance(raw.get("propertyName"), str):
        raise ApiError(400, "a filter needs a propertyName")
    name, operator = raw["propertyName"], str(raw.get("operator", "EQ")).upper()
    if operator not in OPERATORS:
        raise ApiError(400, f"operator {operator!r} is not supported by this simulator")
    if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        return _Filter(name, operator)
    if operator in ("IN", "NOT_IN"):
        values = raw.get("values")
        if not isinstance(values, list) or not values:
            raise ApiError(400, f"{operator} on {name} needs a non-empty 'values' list")
        return _Filter(name, operator, frozenset(_operand(name, v) for v in values))
    if raw.get("value") is None:
        raise ApiError(400, f"{operator} on {name} needs a 'value'")
    if operator == "BETWEEN":
        if raw.get("highValue") is None:
            raise ApiError(400, f"BETWEEN on {name} needs a 'highValue'")
        return _Filter(name, operator, (_operand(name, raw["value"]),
                                        _operand(name, raw["highValue"])))
    return _Filter(name, operator, _operand(name, raw["value"]))


def _operand(name: str, value: Any) -> Any:
    kind = _property_type(name)
    text = str(value).strip()
    if kind == "date":
        return _date_ms(text, name)
    if kind == "number":
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise ApiError(400, f"{name}: {value!r} is not a number")
        return number
    return text.lower()


def _date_ms(text: str, name: str) -> int:
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name}: {text!r} is not a date (epoch milliseconds or "
                            "ISO 8601)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def _sort(raw: Any) -> tuple[str, bool] | None:
    if not isinstance(raw, list):
        raise ApiError(400, "sorts must be a list")
    if not raw:
        return None
    first = raw[0]  # HubSpot applies one sort
    if isinstance(first, str):
        return (first[1:], True) if first.startswith("-") else (first, False)
    if not isinstance(first, dict) or not isinstance(first.get("propertyName"), str):
        raise ApiError(400, "a sort needs a propertyName")
    direction = str(first.get("direction", "ASCENDING")).upper()
    if direction not in ("ASCENDING", "DESCENDING"):
        raise ApiError(400, f"sort direction {direction!r} is not ASCENDING or DESCENDING")
    return first["propertyName"], direction == "DESCENDING"


def _property_type(name: str) -> str:
    if name in DATE_PROPERTIES or name.startswith(("hs_v2_date_entered_", "hs_v2_date_exited_")) \
            or (name.startswith("hs_lifecyclestage_") and name.endswith("_date")):
        return "date"
    return "number" if name in NUMBER_PROPERTIES else "text"


def _check_fields(cls: type, changes: dict[str, Any], fixed: set[str]) -> None:
    allowed = {f.name for f in fields(cls)} - fixed
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise TypeError(f"cannot change {unknown[0]!r} (can change: {', '.join(sorted(allowed))})")


# ---------------------------------------------------------------------- responses


def _error_body(message: str, category: str) -> dict:
    return {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
            "category": category}


def _error(status: int, message: str, category: str,
           headers: dict[str, str] | None = None) -> Response:
    body = _error_body(message, category)
    return status, {"X-HubSpot-Correlation-Id": body["correlationId"], **(headers or {})}, \
        json_body(body)


def _rate_body(message: str, policy: str) -> dict:
    return {"status": "error", "message": message, "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()), "policyName": policy}


# ---------------------------------------------------------------------- values


def _jitter(object_id: int) -> int:
    """A fixed millisecond part per object for its second-resolution times."""
    return object_id * 389 % 1000


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _strings(values: dict[str, Any]) -> dict[str, str | None]:
    """Values as HubSpot sends them: dates as ISO 8601, numbers and text as strings."""
    out: dict[str, str | None] = {}
    for name, value in values.items():
        if value is None:
            out[name] = None
        elif _property_type(name) == "date":
            out[name] = _iso(value)
        elif isinstance(value, Decimal):
            out[name] = format(value.normalize(), "f") if value == value.to_integral() \
                else str(value)
        else:
            out[name] = str(value)
    return out


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value.lower() if isinstance(value, str) else value
            for name, value in values.items()}
