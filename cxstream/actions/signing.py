"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A message is signed with HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.{body}"`` using the
secret; the ``webhook-signature`` header is ``v1,<base64 signature>`` (several may be space-separated
during a secret rotation). A secret is the base64 of the key, usually written ``whsec_<base64>``; as in
the reference libraries, the prefix is optional and so is the base64 padding.

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
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from cxstream.errors import SignatureError

__all__ = ["SignatureError", "secret_key", "sign", "sign_headers", "verify"]

DEFAULT_TOLERANCE_S = 300


def secret_key(secret: str) -> bytes:
    """The key of a Standard Webhooks secret: the base64 after an optional ``whsec_``, padded if
    its ``=`` were left out.

    >>> secret_key("whsec_a2V5") == secret_key("a2V5") == secret_key("whsec_a2V5==") == b"key"
    True
    """
    text = secret.removeprefix("whsec_").strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        msg = "the webhook secret is not base64 (Standard Webhooks: whsec_<base64 of the key>)"
        raise SignatureError(msg) from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_headers(
    secret: str,
    msg_id: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    previous: str | None = None,
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``; with ``previous`` (a secret being
    retired) the signature header carries both signatures, space-separated, so a receiver with
    either secret verifies the message.

    >>> old, new = "whsec_b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQ=", "whsec_bmV3LW5ldy1uZXctbmV3LW5ldy1uZXc="
    >>> h = sign_headers(new, "m1", b"{}", timestamp=100, previous=old)
    >>> verify(old, h, b"{}", now=100), verify(new, h, b"{}", now=100)
    (None, None)
    """
    ts = int(time.time()) if timestamp is None else timestamp
    signature = sign(secret, msg_id, ts, body)
    if previous is not None:
        signature += " " + sign(previous, msg_id, ts, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
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
