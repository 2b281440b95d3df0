"""What each customer is worth and how likely they are to leave, for the NOC and care views.

For a customer with a profile in Redis, :class:`RiskView` gives the churn probability of their
latest scoring (the churn model's snapshot: every customer is scored on a schedule, and again at
a degradation), its top reasons and when it was scored, their revenue (the policy's value model:
monthly charge x ``value_model.revenue_months``) and the expected loss, probability x revenue,
in ``value_model.currency``. An incident's value at risk is the sum of its affected customers'
expected losses. Answers are cached for ``ttl_s`` so a busy page costs few Redis round trips;
a customer without a profile or a score has ``None`` there and adds nothing to a sum.

Once an outcome is learned the snapshot moves to the learned record
(:mod:`cxstream.churn_state`) until the next scheduled scoring writes a new one: a customer who
stayed keeps the score of that record meanwhile (it is still their latest), and one who left
has no probability (nothing more is at risk).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import redis

from cxstream.actions.rules import ValueModel
from cxstream.churn_state import ChurnState, learned_outcome
from cxstream.context import ContextStore
from cxstream.events import OutcomeKind

__all__ = ["RiskView", "money"]

log = logging.getLogger(__name__)


def money(amount: float | None, currency: str) -> dict[str, Any] | None:
    """``{"amount", "currency"}`` with the amount to the cent (None stays None)."""
    return None if amount is None else {"amount": round(amount, 2), "currency": currency}


class RiskView:
    """Churn probability, revenue and expected loss per customer (see the module doc)."""

    def __init__(
        self,
        context: ContextStore | None,
        churn: ChurnState | None,
        value_model: Callable[[], ValueModel],
        *,
        ttl_s: float = 10.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._context = context
        self._churn = churn
        self._value_model = value_model
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    @property
    def currency(self) -> str:
        """The value model's currency (ISO 4217)."""
        return self._value_model().currency

    def customers(self, subscriber_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """For each id: ``churn_probability``, ``scored_at``, ``reasons`` (the top signed
        feature contributions), ``value`` and ``expected_loss`` (money), ``profile`` (bool)."""
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        with self._lock:
            for sid in dict.fromkeys(subscriber_ids):
                hit = self._cache.get(sid)
                if hit is not None and now - hit[0] < self._ttl_s:
                    out[sid] = hit[1]
                else:
                    missing.append(sid)
        if missing:
            fresh = self._fetch(missing)
            with self._lock:
                for sid, entry in fresh.items():
                    self._cache[sid] = (now, entry)
                    self._cache.move_to_end(sid)
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
            out.update(fresh)
        return out

    def _fetch(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        model = self._value_model()
        profiles: dict[str, Any] = {}
        snapshots: list[dict[str, Any] | None] = [None] * len(ids)
        try:
            if self._context is not None:
                found = self._context.get_many(ids)
                profiles = {sid: found[sid].customer for sid in ids}
            if self._churn is not None:
                snapshots = self._churn.get_snapshots(ids)
                since = [sid for sid, snap in zip(ids, snapshots, strict=True) if snap is None]
                if since:  # scored, then an outcome learned: the learned record holds the score
                    learned = dict(zip(since, self._churn.get_learned(since), strict=True))
                    snapshots = [
                        _stayed(learned.get(sid)) if snap is None else snap
                        for sid, snap in zip(ids, snapshots, strict=True)
                    ]
        except redis.RedisError as exc:  # the page still shows what it knows
            log.warning("value at risk unavailable: %s", exc)
        out = {}
        for sid, snap in zip(ids, snapshots, strict=True):
            customer = profiles.get(sid)
            risk = snap.get("risk") if isinstance(snap, dict) else None
            probability = float(risk) if isinstance(risk, int | float) else None
            value = model.revenue(customer) if customer is not None else None
            loss = probability * value if probability is not None and value is not None else None
            out[sid] = {
                "churn_probability": None if probability is None else round(probability, 4),
                "scored_at": snap.get("scored_at") if isinstance(snap, dict) else None,
                "reasons": (snap.get("top_features") or []) if isinstance(snap, dict) else [],
                "trend": (snap.get("trend") or []) if isinstance(snap, dict) else [],
                "value": money(value, model.currency),
                "expected_loss": money(loss, model.currency),
                "profile": customer is not None,
            }
        return out

    def incident_value(
        self, affected: Sequence[str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """An incident's value at risk (money: the sum of the affected customers' expected
        losses) and each affected customer's figures, highest expected loss first."""
        per = self.customers(affected)
        rows = [{"subscriber_id": sid, **per[sid]} for sid in dict.fromkeys(affected)]
        rows.sort(key=lambda r: -(r["expected_loss"] or {"amount": 0.0})["amount"])
        total = sum(r["expected_loss"]["amount"] for r in rows if r["expected_loss"])
        return {"amount": round(total, 2), "currency": self.currency}, rows


def _stayed(learned: dict[str, Any] | None) -> dict[str, Any] | None:
    """A learned record as the customer's latest score if its outcome says they stayed."""
    return learned if learned_outcome(learned) == OutcomeKind.RETAINED.value else None
