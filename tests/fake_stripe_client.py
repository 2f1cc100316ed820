"""Plain HTTP calls to the fake Stripe, for the simulator's own tests."""

import requests

from exporter.simulator import FakeStripe

KEY = "sk_test_simulator"
AUTH = {"Authorization": f"Bearer {KEY}"}


def get(fake: FakeStripe, path: str, params=None, headers=None) -> requests.Response:
    return requests.get(fake.url + path, params=params, headers=headers or AUTH, timeout=30)


def list_all(fake: FakeStripe, path: str, params=None) -> list[dict]:
    """Page through a list the way a client does; checks the envelope on every page."""
    out, after = [], None
    while True:
        query = dict(params or {}, limit=100)
        if after:
            query["starting_after"] = after
        response = get(fake, path, query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list" and body["url"] == path
        out.extend(body["data"])
        if not body["has_more"]:
            return out
        assert len(body["data"]) == 100  # every page but the last is full
        after = body["data"][-1]["id"]
