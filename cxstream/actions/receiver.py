"""A small webhook receiver that stands in for a marketing/CRM system.

It verifies every request's Standard Webhooks signature, counts deliveries, and remembers idempotency
keys (``webhook-id``) so a duplicate is visible. The demo and the integration tests both use it; an
integrator can read it as the reference for their own endpoint (docs/integration.md).

>>> with WebhookReceiver("whsec_c2VjcmV0") as rx:
...     rx.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from cxstream.actions.signing import DEFAULT_TOLERANCE_S, SignatureError, verify

__all__ = ["WebhookReceiver"]


class WebhookReceiver:
    """Verify and count signed webhook deliveries on a free loopback port.

    Parameters
    ----------
    secret
        The shared Standard Webhooks secret.
    fail_first
        Answer ``503`` to the first N attempts of each message id (to exercise retries).
    tolerance_s
        Accepted clock skew of ``webhook-timestamp``.
    keep_requests
        Keep each accepted delivery's signature headers and raw body in ``requests`` (for
        ``cxstream demo --capture``, which writes them out to be checked).
    """

    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_first: int = 0,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
        keep_requests: bool = False,
    ) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.tolerance_s = tolerance_s
        self._lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.attempt_times: dict[str, list[float]] = {}
        self.delivered: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.rejected = 0
        self.incomplete = 0  # bodies shorter than announced: the sender died mid-request
        self.keep_requests = keep_requests
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where to POST."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/cx"

    @property
    def deliveries(self) -> int:
        """Unique, correctly signed messages accepted."""
        with self._lock:
            return len(self.delivered)

    def kept_requests(self) -> list[dict[str, Any]]:
        """The accepted deliveries' headers and bodies kept so far (``keep_requests``)."""
        with self._lock:
            return list(self.requests)

    def stats(self) -> dict[str, int]:
        """Counts for summaries: unique deliveries, duplicates, rejected signatures, attempts,
        and requests cut off mid-body."""
        with self._lock:
            return {
                "deliveries": len(self.delivered),
                "duplicates": self.duplicates,
                "rejected": self.rejected,
                "attempts": sum(self.attempts.values()),
                "incomplete": self.incomplete,
            }

    def _receive(self, headers: Any, body: bytes) -> int:
        try:
            verify(self.secret, headers, body, tolerance_s=self.tolerance_s)
        except SignatureError:
            with self._lock:
                self.rejected += 1
            return 401
        msg_id = headers.get("webhook-id")
        with self._lock:
            self.attempts[msg_id] += 1
            self.attempt_times.setdefault(msg_id, []).append(time.monotonic())
            if self.attempts[msg_id] <= self.fail_first:
                return 503
            if msg_id in self.delivered:
                self.duplicates += 1
                return 200
            try:
                self.delivered[msg_id] = orjson.loads(body)
            except orjson.JSONDecodeError:
                self.rejected += 1
                return 400
            if self.keep_requests:
                kept = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")
                self.requests.append(
                    {"headers": {h: headers.get(h) for h in kept}, "body": body.decode()}
                )
        return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # cut off: not a delivery, and nobody to answer
                    with receiver._lock:
                        receiver.incomplete += 1
                    self.close_connection = True
                    return
                status = receiver._receive(self.headers, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                payload = orjson.dumps(receiver.stats())
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return  # request lines would flood the demo's output

        return Handler

    def start(self) -> WebhookReceiver:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
