"""Where the churn model's shared state lives: feature snapshots and model checkpoints.

* **Snapshots.** When a customer is scored, the features used are kept under
  ``<prefix>:churn:snap:<subscriber>`` with a TTL (``churn.snapshot_ttl_s``). An outcome that
  arrives days later is learned from that snapshot, not from the customer's features of today
  (which may already reflect the churn: a cancelled contract, a closed ticket).
* **Learned outcomes.** Once learned, a snapshot moves to ``<prefix>:churn:learned:<subscriber>``
  (same TTL) with the outcome, the model's count of learned outcomes once it was learned, and the
  revision of the checkpoint that holds it. The same outcome seen again is a duplicate if the
  learner has learned that many outcomes, and a replay if it has learned fewer (a restart
  resumed it from a recovery snapshot taken before): a replay is learned again from the same
  features, a duplicate is not.
* **Checkpoints.** The model's single writer (the flow's ``learn_churn`` step) stores every new
  revision under ``<prefix>:churn:model`` and its number under ``<prefix>:churn:revision`` in one
  transaction; scorers on every worker poll the number and reload when it changes. A restarted
  flow starts from the last checkpoint.

:class:`MemoryChurnState` is the in-process twin for tests and single-process tools.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import redis

log = logging.getLogger(__name__)

__all__ = ["ChurnState", "MemoryChurnState", "RedisChurnState", "learned_outcome"]


def learned_outcome(learned: dict[str, Any] | None) -> str | None:
    """The kind of outcome a learned record holds (``"churned"`` of ``"churned@<time>"``), or
    None where there is no record or it holds none.

    >>> learned_outcome({"outcome": "churned@2026-01-05T10:00:00+00:00"})
    'churned'
    >>> learned_outcome({"outcome": "not_a_label"}) is None, learned_outcome(None) is None
    (True, True)
    """
    outcome = learned.get("outcome") if isinstance(learned, dict) else None
    return outcome.partition("@")[0] if isinstance(outcome, str) and "@" in outcome else None


class ChurnState(Protocol):
    """Snapshots and checkpoints (Redis in production)."""

    def save_snapshots(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None: ...
    def get_snapshots(self, subscribers: Sequence[str]) -> list[dict[str, Any] | None]: ...
    def get_learned(self, subscribers: Sequence[str]) -> list[dict[str, Any] | None]: ...
    def mark_learned(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None: ...
    def save_checkpoint(self, revision: int, data: bytes) -> None: ...
    def revision(self) -> int | None: ...
    def load_checkpoint(self) -> bytes | None: ...


def _stored_object(raw: bytes | str | None, what: str) -> dict[str, Any] | None:
    """A stored JSON object, or None where there is none or what is stored is not one (a key
    written by something else must not stop the step that reads it)."""
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        log.warning("a stored churn %s is not a JSON object; read as missing", what)
        return None
    return value


class RedisChurnState:
    """:class:`ChurnState` in Redis; one round trip per call."""

    def __init__(self, client: redis.Redis, *, prefix: str = "cx", ttl_s: int = 90 * 86_400):
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s

    def _snap(self, subscriber: str) -> str:
        return f"{self._prefix}:churn:snap:{subscriber}"

    def save_snapshots(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Keep the features each customer was scored with (the latest score wins)."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for subscriber, snapshot in items:
            pipe.set(self._snap(subscriber), orjson.dumps(snapshot), ex=self._ttl_s)
        pipe.execute()

    def get_snapshots(self, subscribers: Sequence[str]) -> list[dict[str, Any] | None]:
        """The stored snapshots (None where there is none, or it expired)."""
        if not subscribers:
            return []
        raw = self._client.mget([self._snap(s) for s in subscribers])
        return [_stored_object(r, "snapshot") for r in raw]

    def _learned(self, subscriber: str) -> str:
        return f"{self._prefix}:churn:learned:{subscriber}"

    def get_learned(self, subscribers: Sequence[str]) -> list[dict[str, Any] | None]:
        """The last learned outcome of each customer (None where there is none, or it expired)."""
        if not subscribers:
            return []
        raw = self._client.mget([self._learned(s) for s in subscribers])
        return [_stored_object(r, "learned outcome") for r in raw]

    def mark_learned(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Move each learned snapshot to its customer's learned key (the outcome and revision
        added), so a repeated outcome is not learned from a newer snapshot."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for subscriber, learned in items:
            pipe.set(self._learned(subscriber), orjson.dumps(learned), ex=self._ttl_s)
            pipe.delete(self._snap(subscriber))
        pipe.execute()

    def save_checkpoint(self, revision: int, data: bytes) -> None:
        """Store a new model revision and its number atomically."""
        pipe = self._client.pipeline(transaction=True)
        pipe.set(f"{self._prefix}:churn:model", data)
        pipe.set(f"{self._prefix}:churn:revision", revision)
        pipe.execute()

    def revision(self) -> int | None:
        """The newest stored revision number, if any."""
        raw = self._client.get(f"{self._prefix}:churn:revision")
        try:
            return int(raw) if raw is not None else None
        except ValueError:  # not written by the learner: as if there were none
            log.warning("the stored churn model revision is not a number; read as missing")
            return None

    def load_checkpoint(self) -> bytes | None:
        """The newest stored checkpoint, if any."""
        raw: Any = self._client.get(f"{self._prefix}:churn:model")
        return bytes(raw) if raw is not None else None


class MemoryChurnState:
    """:class:`ChurnState` in a dict (no expiry)."""

    def __init__(self) -> None:
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.learned: dict[str, dict[str, Any]] = {}
        self.checkpoint: tuple[int, bytes] | None = None

    def save_snapshots(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Keep the features each customer was scored with."""
        for subscriber, snapshot in items:
            self.snapshots[subscriber] = orjson.loads(orjson.dumps(snapshot))

    def get_snapshots(self, subscribers: Sequence[str]) -> list[dict[str, Any] | None]:
        """The stored snapshots (None where there is none)."""
        return [self.snapshots.get(s) for s in subscribers]

    def get_learned(self, subscribers: Sequence[str]) -> list[dict[str, Any] | None]:
        """The last learned outcome of each customer (None where there is none)."""
        return [self.learned.get(s) for s in subscribers]

    def mark_learned(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Move learned snapshots to the learned outcomes."""
        for subscriber, learned in items:
            self.learned[subscriber] = orjson.loads(orjson.dumps(learned))
            self.snapshots.pop(subscriber, None)

    def save_checkpoint(self, revision: int, data: bytes) -> None:
        """Store a new model revision."""
        self.checkpoint = (revision, data)

    def revision(self) -> int | None:
        """The newest revision number, if any."""
        return self.checkpoint[0] if self.checkpoint else None

    def load_checkpoint(self) -> bytes | None:
        """The newest checkpoint, if any."""
        return self.checkpoint[1] if self.checkpoint else None
