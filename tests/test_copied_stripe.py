"""bench/copied_stripe.py: the 1M bench's fake serves copies of one company, and
the exporter reads them as one company that many times the size."""

import math
import sys
from decimal import Decimal
from pathlib import Path

import requests

from exporter.poller import Poller
from exporter.secrets import Secret
from exporter.simulator import FakeStripe, generate_company
from exporter.sources.stripe.source import StripeConfig, StripeSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from copied_stripe import CopiedStripe, split_copy  # noqa: E402

NOW = 1_800_000_000
COPIES = 3  # a page of 100 then ends inside an object's copies: the cursor path for that
FX = {"usd": Decimal(1), "eur": Decimal("1.1"), "gbp": Decimal("1.3"), "jpy": Decimal("0.0068")}


def kpis(fake: FakeStripe) -> dict:
    """The samples once all the history is read, by (kpi, labels)."""
    with fake:
        source = StripeSource(StripeConfig(api_key=Secret(fake.api_key), base_url=fake.url,
                                           rate_limit=None), FX)
        source.clock = lambda: NOW
        poller = Poller([source])
        for _ in range(5):
            state = poller.poll_once(source)
            assert state.up, state.error
            if source.events.complete and any(s.labels.get("window") == "1y"
                                               for s in state.samples):
                break
        return {(s.kpi, tuple(sorted(s.labels.items()))): s.value for s in state.samples}


def test_copies_read_as_one_company_that_many_times_the_size():
    store = generate_company(seed=4, customers=150, now=NOW)
    one, copied = kpis(FakeStripe(store)), kpis(CopiedStripe(store, COPIES))
    assert one.keys() == copied.keys()
    # (float sums: equal to the last bits only when summed in one order)
    scaled = {key for key in one if one[key] != 0
              and math.isclose(copied[key], COPIES * one[key], rel_tol=1e-12)}
    same = {key for key in one if copied[key] == one[key]}
    assert scaled | same == set(one), {k: (one[k], copied[k]) for k in set(one) - scaled - same}
    # Amounts and counts scale; ratios, averages and the largest single churn do not.
    assert ("mrr", (("source", "stripe"),)) in scaled
    assert ("paying_customers", (("source", "stripe"),)) in scaled
    assert ("customer_churn_rate", (("source", "stripe"), ("window", "30d"))) in same
    assert ("arpa", (("source", "stripe"),)) in same
    assert len(scaled) > len(same)


def test_lists_interleave_copies_and_ids_name_one_copy():
    store = generate_company(seed=4, customers=150, now=NOW)
    with CopiedStripe(store, COPIES) as fake:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {fake.api_key}"

        def get(path, **params):
            response = session.get(fake.url + path, params=params, timeout=10)
            response.raise_for_status()
            return response.json()

        listed, after = [], None
        while True:
            page = get("/v1/subscriptions", status="all", limit=100,
                       **({"starting_after": after} if after else {}))
            listed += page["data"]
            if not page["has_more"]:
                break
            assert len(page["data"]) == 100
            after = page["data"][-1]["id"]
        originals = [sub["id"] for sub in store.list("subscriptions")]
        assert [sub["id"] for sub in listed] == [
            sub if copy == 0 else f"{sub}_{copy}" for sub in originals for copy in range(COPIES)]
        assert {split_copy(sub["customer"])[1] == split_copy(sub["id"])[1] for sub in listed} \
            == {True}

        invoiced = originals.index(next(
            i["parent"]["subscription_details"]["subscription"] for i in store.invoices()
            if i["parent"]["subscription_details"]))
        third = listed[COPIES * invoiced + 2]  # copy 2 of a subscription with invoices
        assert third["id"] == originals[invoiced] + "_2"
        assert get(f"/v1/subscriptions/{third['id']}") == third
        invoices = get("/v1/invoices", subscription=third["id"], limit=100)["data"]
        assert invoices and {i["parent"]["subscription_details"]["subscription"]
                             for i in invoices} == {third["id"]}
        assert all(i["id"].endswith("_2") for i in invoices)
        price = third["items"]["data"][0]["price"]["id"]
        assert split_copy(price) == (price, 0)  # prices are the company's, not a copy's
