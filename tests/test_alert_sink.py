"""The demo stack's receiver, over a real socket."""

from __future__ import annotations

import logging

import pytest
import requests

from exporter.alert_sink import serve

PAYLOAD = {
    "version": "4", "receiver": "finance-critical", "status": "firing",
    "groupLabels": {"alertname": "KpiLargestChurnArrHigh", "source": "stripe"},
    "alerts": [{"status": "firing", "startsAt": "2026-11-23T10:00:00Z",
                "labels": {"alertname": "KpiLargestChurnArrHigh", "severity": "critical",
                           "team": "finance", "source": "stripe", "window": "24h"},
                "annotations": {"summary": "Largest churn ARR is above 10,000 over 24h."}}],
}


@pytest.fixture
def sink():
    sink, server = serve("127.0.0.1", 0)
    yield sink, f"http://127.0.0.1:{server.port}"
    server.stop()


def test_a_notification_is_kept_shown_and_logged(sink, caplog):
    _, url = sink
    with caplog.at_level(logging.INFO, logger="exporter.alert_sink"):
        assert requests.post(f"{url}/alerts", json=PAYLOAD, timeout=5).status_code == 200
    assert requests.get(f"{url}/notifications", timeout=5).json() == [PAYLOAD]
    [line] = caplog.messages
    assert line == ("FIRING -> finance-critical: KpiLargestChurnArrHigh severity=critical "
                    "source=stripe team=finance window=24h "
                    "Largest churn ARR is above 10,000 over 24h.")
    page = requests.get(f"{url}/", timeout=5).text
    assert "finance-critical" in page and "KpiLargestChurnArrHigh" in page


@pytest.mark.parametrize("body", [b"", b"{not json", b'{"alerts": []}', b'{"receiver": "x"}',
                                  b"\xff\xfe", b'[1, 2]', b'{"receiver": "x", "alerts": [1]}',
                                  b'{"receiver": "x", "alerts": [{"labels": "oops"}]}'])
def test_what_is_not_a_webhook_payload_is_refused(sink, body):
    store, url = sink
    reply = requests.post(f"{url}/alerts", data=body, timeout=5,
                          headers={"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert store.notifications() == []
    assert requests.get(f"{url}/", timeout=5).status_code == 200  # the page still renders


def test_other_paths_and_methods(sink):
    _, url = sink
    assert requests.get(f"{url}/healthz", timeout=5).text == "ok\n"
    assert requests.get(f"{url}/nope", timeout=5).status_code == 404
    assert requests.put(f"{url}/alerts", data=b"{}", timeout=5).status_code == 405
