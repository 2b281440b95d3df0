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

__all__ = ["Pseudonymiser", "SubscriberPseudonyms", "configure", "pseudonym"]


def _keyed_hex(key: bytes, subscriber_id: str) -> str:
    """HMAC-SHA256 of the id under ``key``, in hex: what every pseudonym here is cut from."""
    return hmac.new(key, subscriber_id.encode(), hashlib.sha256).hexdigest()


class Pseudonymiser:
    """Turn a subscriber id into ``sub#<12 hex>`` under a secret key."""

    def __init__(self, key: str | None = None) -> None:
        self._key = (key or secrets.token_hex(16)).encode()

    def __call__(self, subscriber_id: str) -> str:
        return f"sub#{_keyed_hex(self._key, subscriber_id)[:12]}"


_current = Pseudonymiser()


def configure(key: str | None) -> None:
    """Set the process-wide key (``privacy.log_key``); None keeps a random one."""
    global _current
    _current = Pseudonymiser(key)


def pseudonym(subscriber_id: str | None) -> str:
    """The log-safe pseudonym of a subscriber id (``-`` for none)."""
    return _current(subscriber_id) if subscriber_id else "-"


class SubscriberPseudonyms:
    """Replace subscriber ids (MSISDNs) by keyed-hash pseudonyms at every input, so that nothing
    the flow writes (topics, webhooks, Redis keys, the dashboard) carries the real id.

    ``ps-`` and 32 hex digits of HMAC-SHA256 under ``key``: stable for one key, so a CRM that
    holds the key maps its own customers to their pseudonyms (or keeps a lookup table), and not
    reversible without it. Ids already in that form are left as they are (an input that was
    pseudonymised upstream). Pseudonyms computed are cached (up to ``cache`` ids) because the hot
    path asks for the same subscribers again and again.

    >>> p = SubscriberPseudonyms(b"k" * 32)
    >>> a = p("+447700900123")
    >>> a.startswith("ps-"), len(a), p(a) == a, "447700900123" in a
    (True, 35, True, False)
    """

    PREFIX = "ps-"

    def __init__(self, key: bytes, *, cache: int = 1_000_000) -> None:
        self._key = key
        self._cache: dict[str, str] = {}
        self._max = cache

    def __call__(self, subscriber_id: str) -> str:
        found = self._cache.get(subscriber_id)
        if found is not None:
            return found
        if subscriber_id.startswith(self.PREFIX) and len(subscriber_id) == 35:
            return subscriber_id
        out = f"{self.PREFIX}{_keyed_hex(self._key, subscriber_id)[:32]}"
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[subscriber_id] = out
        return out

    def many(self, subscriber_ids: list[str]) -> list[str]:
        """The pseudonym of each id (a dict lookup each once cached)."""
        get = self._cache.get
        out = [get(s) for s in subscriber_ids]
        if None in out:
            return [self(s) for s in subscriber_ids]
        return out  # type: ignore[return-value]
