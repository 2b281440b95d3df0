from __future__ import annotations

import httpx

from cxstream.actions.receiver import WebhookReceiver
from cxstream.actions.signing import sign_headers

SECRET = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="


def post(rx, msg_id, body=b'{"a":1}', secret=SECRET):
    return httpx.post(rx.url, content=body, headers=sign_headers(secret, msg_id, body)).status_code


def test_receiver_verifies_counts_and_deduplicates():
    with WebhookReceiver(SECRET) as rx:
        assert post(rx, "m1") == 200
        assert post(rx, "m1") == 200
        assert post(rx, "m2") == 200
        assert post(rx, "m3", secret="whsec_b3RoZXI=") == 401
        assert rx.stats() == {"deliveries": 2, "duplicates": 1, "rejected": 1, "attempts": 3}
        assert httpx.get(rx.url).json()["deliveries"] == 2


def test_receiver_can_fail_the_first_attempts():
    with WebhookReceiver(SECRET, fail_first=2) as rx:
        assert [post(rx, "m1") for _ in range(3)] == [503, 503, 200]
        assert rx.deliveries == 1
