"""A fake Stripe serving `copies` copies of one simulated company, for the 1M bench.

A generated company of a million subscriptions would hold some 20 GB in the
fake; this serves ten copies of a 100,000 one from that one's memory. Copy 0
is the company as generated; copy c > 0 is the same objects with every
per-customer id suffixed `_c` (`sub_1Abc` -> `sub_1Abc_3`): customers,
subscriptions and their items, discounts, invoices and their lines, charges,
payment intents, refunds, disputes and events. Prices, products and coupons
are the company's own, shared by every copy, as in one big company.

A list without an id filter has each object's copies next to each other (in
copy order, one `created` time: ties Stripe also has); a list filtered by an
id (`subscription=sub_1Abc_3`) and a retrieve by id are that copy's alone. The
exporter sees ten times the subscriptions, events and invoices, ten times the
MRR and the same ratios. Only what the exporter sends is supported: forward
paging (`starting_after`), not `ending_before`.
"""

from __future__ import annotations

import json
import re

from exporter.simulator.stripe_fake import (
    ENDPOINTS, ApiError, Endpoint, FakeStripe, _group, _limit, _missing,
)

# The ids of objects each copy has its own of (not prices, products, coupons).
_COPIED = "cus|sub|si|di|ch|pi|pm|re|dp|txn|in|il|evt"
_ID = re.compile(rf'(?<=["/])((?:{_COPIED})_[A-Za-z0-9]+)(?=["/])')
_ID_FILTERS = ("customer", "subscription", "charge", "payment_intent")


def split_copy(object_id: str) -> tuple[str, int]:
    """`sub_1Abc_3` -> (`sub_1Abc`, 3); an id of copy 0 (or a shared one) -> (id, 0)."""
    original, sep, copy = object_id.rpartition("_")
    if sep and "_" in original and copy.isdigit():
        return original, int(copy)
    return object_id, 0


def in_copy(text: str, copy: int) -> str:
    """JSON of copy 0's objects, made copy `copy`'s."""
    return text if copy == 0 else _ID.sub(rf"\g<1>_{copy}", text)


def _compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


class CopiedStripe(FakeStripe):
    name = "copied-stripe"

    def __init__(self, store, copies: int, **options):
        super().__init__(store, **options)
        if not 1 <= copies <= 100:
            raise ValueError("copies must be 1 to 100 (a page of 100 holds at least one object)")
        self.copies = copies

    def body(self, method: str, path: str, query: dict[str, list[str]]) -> bytes:
        match = re.fullmatch(r"/v1/([a-z_]+)(?:/([^/]+)(/lines)?)?/?", path)
        if method != "GET" or match is None or match.group(1) not in ENDPOINTS:
            return super().body(method, path, query)  # its 404
        query = {key: list(values) for key, values in query.items()}
        if "ending_before" in query:
            raise ApiError(400, "the copied fake pages forward only (starting_after)")
        copy = None  # the one copy asked for, if the request names an object
        if match.group(2):
            original, copy = split_copy(match.group(2))
            path = f"/v1/{match.group(1)}/{original}{match.group(3) or ''}"
        for name in _ID_FILTERS:
            if name in query:
                original, copy = split_copy(query[name][0])
                query[name] = [original]
        after = query.pop("starting_after", [None])[0]
        if copy is not None:  # one copy's objects: its own cursor, its own ids
            if after is not None:
                query["starting_after"] = [split_copy(after)[0]]
            return (in_copy(super().body(method, path, query).decode(), copy)).encode()
        return self._every_copy(ENDPOINTS[match.group(1)], path, query, after).encode()

    def _every_copy(self, endpoint: Endpoint, path: str, query: dict[str, list[str]],
                    after: str | None) -> str:
        """A page of the list with each object's copies side by side."""
        limit = _limit(_group(query).get("limit"))
        owed: list[str] = []  # the copies after the cursor of the object it names
        if after is not None:
            original, copy = split_copy(after)
            query["starting_after"] = [original]
            if copy < self.copies - 1:
                named = self._one(endpoint, original, query)
                owed = [in_copy(named, c) for c in range(copy + 1, self.copies)]
        wanted = max(1, -(-(limit - len(owed)) // self.copies))
        query["limit"] = [str(min(100, wanted))]
        listing = self._route("GET", path, query)
        pieces = owed + [in_copy(_compact(obj), c) for obj in listing["data"]
                         for c in range(self.copies)]
        has_more = listing["has_more"] or len(pieces) > limit
        return (f'{{"object":"list","data":[{",".join(pieces[:limit])}],'
                f'"has_more":{_compact(has_more)},"url":{_compact(listing["url"])}}}\n')

    def _one(self, endpoint: Endpoint, object_id: str, query: dict[str, list[str]]) -> str:
        """The object a cursor names, as the list (its expansions) shows it."""
        obj = self.store.get(endpoint.collection, object_id)
        if obj is None:
            raise _missing(endpoint.noun, object_id, "starting_after")
        expand = [p for values in _group(query).get("expand", {}).values() for p in values]
        body = self._expanded({"object": "list", "data": [self.store.snapshot(obj)]},
                              expand, ("list", endpoint.object_type))
        return _compact(body["data"][0])

