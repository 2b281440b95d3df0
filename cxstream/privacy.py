"""Pseudonyms for logs: subscriber identifiers never appear in clear in a log line.

A keyed hash (HMAC-SHA256, truncated) is stable for one key, so lines about the same subscriber can
be correlated, but it cannot be reversed or recomputed without the key (``CXSTREAM_PRIVACY__LOG_KEY``;
when unset, a random key per process).

>>> p = Pseudonymiser("k")
>>> p("sub-0000001") == p("sub-0000001"), p("sub-0000001").startswith("sub#"), "0000001" in p("sub-0000001")
(True, True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["Pseudonymiser", "configure", "pseudonym"]


class Pseudonymiser:
    """Turn a subscriber id into ``sub#<12 hex>`` under a secret key."""

    def __init__(self, key: str | None = None) -> None:
        self._key = (key or secrets.token_hex(16)).encode()

    def __call__(self, subscriber_id: str) -> str:
        digest = hmac.new(self._key, subscriber_id.encode(), hashlib.sha256).hexdigest()
        return f"sub#{digest[:12]}"


_current = Pseudonymiser()


def configure(key: str | None) -> None:
    """Set the process-wide key (``privacy.log_key``); None keeps a random one."""
    global _current
    _current = Pseudonymiser(key)


def pseudonym(subscriber_id: str | None) -> str:
    """The log-safe pseudonym of a subscriber id (``-`` for none)."""
    return _current(subscriber_id) if subscriber_id else "-"
