from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

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
        assert rx.stats() == {
            "deliveries": 2,
            "duplicates": 1,
            "rejected": 1,
            "attempts": 3,
            "incomplete": 0,
        }
        assert httpx.get(rx.url).json()["deliveries"] == 2


def test_receiver_can_fail_the_first_attempts():
    with WebhookReceiver(SECRET, fail_first=2) as rx:
        assert [post(rx, "m1") for _ in range(3)] == [503, 503, 200]
        assert rx.deliveries == 1


def test_a_request_cut_off_mid_body_is_counted_apart_not_as_a_bad_signature():
    body = b'{"a":1}'
    with WebhookReceiver(SECRET) as rx:
        url = urlsplit(rx.url)
        headers = sign_headers(SECRET, "m1", body)
        head = f"POST {url.path or '/'} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        with socket.create_connection((url.hostname, url.port)) as sock:
            sock.sendall(head.encode() + body)  # 7 of the 100 bytes announced, then gone
        deadline = time.monotonic() + 5
        while rx.stats()["incomplete"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rx.stats()["incomplete"] == 1
        assert rx.stats()["rejected"] == 0 and rx.deliveries == 0
