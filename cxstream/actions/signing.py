"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A message is signed with HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.{body}"`` using the
secret; the ``webhook-signature`` header is ``v1,<base64 signature>`` (several may be space-separated
during a secret rotation). Secrets are written ``whsec_<base64 key>``; any other string is used as the
key's UTF-8 bytes.

>>> secret = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="
>>> headers = sign_headers(secret, "msg_1", b'{"a":1}', timestamp=1_700_000_000)
>>> verify(secret, headers, b'{"a":1}', now=1_700_000_010)
>>> try:
...     verify(secret, headers, b'{"a":2}', now=1_700_000_010)
... except SignatureError as exc:
...     print(exc)
no matching signature
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from cxstream.errors import SignatureError

__all__ = ["SignatureError", "sign", "sign_headers", "verify"]

DEFAULT_TOLERANCE_S = 300


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_headers(
    secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise :class:`SignatureError` unless ``body`` carries a valid, fresh signature.

    ``headers`` lookups are case-insensitive when given an ``http.client``/``httpx`` headers object;
    plain dicts must use lower-case names.
    """
    msg_id = headers.get("webhook-id")
    ts_text = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not msg_id or not ts_text or not sigs:
        msg = "missing webhook-id, webhook-timestamp or webhook-signature header"
        raise SignatureError(msg)
    try:
        ts = int(ts_text)
    except ValueError as exc:
        msg = "webhook-timestamp is not an integer"
        raise SignatureError(msg) from exc
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        msg = f"webhook-timestamp outside the {tolerance_s}s tolerance"
        raise SignatureError(msg)
    expected = sign(secret, msg_id, ts, body)
    for candidate in sigs.split():
        if hmac.compare_digest(candidate, expected):
            return
    msg = "no matching signature"
    raise SignatureError(msg)
