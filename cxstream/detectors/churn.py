"""Online churn risk: schema-driven features, a Bayesian logistic model, explanations.

The model is plain Python + numpy with River's interface (``learn_one(x, y)``,
``predict_proba_one(x)``), so it can be swapped for a River pipeline and compared with one
(``cxstream eval churn --model``). It learns one row at a time, never sees a row twice, and keeps
a full posterior over its weights:

* **Features** (:class:`Featurizer`): each numeric column gives a standardised value and a
  standardised signed ``log1p`` of it (running mean and variance, so nothing is fitted in advance),
  a missing numeric gives 0 and a ``<column>=<missing>`` indicator; each categorical column is
  one-hot encoded, with ``<missing>`` for blanks, unseen categories growing the model, and rare
  ones beyond ``max_categories`` pooled as ``<other>``.
* **Learner** (:class:`BayesianLogisticRegression`): a Gaussian posterior over the weights
  (mean and full covariance), updated per row by the Laplace / extended-Kalman step (one
  Sherman-Morrison rank-one update). Predictions average over the posterior (the probit
  approximation), which keeps early predictions moderate and calibrated.
* **Explanations**: the logit is a sum over columns of ``weight x feature`` measured against the
  average customer seen so far (category frequencies, running means), so each column's signed
  contribution says how much it pushed this customer's risk up or down.

>>> model = ChurnModel(Schema(numeric=("tenure",), categorical=("contract",)))
>>> for i in range(200):
...     churned = i % 2 == 0
...     model.learn_one({"tenure": 2 if churned else 40, "contract": "monthly" if churned else "2y"}, churned)
>>> round(model.predict_proba_one({"tenure": 1, "contract": "monthly"})[True], 2) > 0.9
True
>>> sorted(c.column for c in model.explain_one({"tenure": 1, "contract": "monthly"}, top=2))
['contract', 'tenure']
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from cxstream.detectors.churn_features import (
    Featurizer,
    InferredSchema,
    Row,
    Running,
    Schema,
    infer_schema,
    parse_number,
)
from cxstream.errors import IncompatibleCheckpoint, UntrustedCheckpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "BayesianLogisticRegression",
    "ChurnLearner",
    "ChurnModel",
    "Contribution",
    "Featurizer",
    "IncompatibleCheckpoint",
    "InferredSchema",
    "QualityMonitor",
    "Schema",
    "UntrustedCheckpoint",
    "infer_schema",
    "parse_number",
]

CHECKPOINT_FORMAT: Final = 2
"""Version of the checkpoint layout; bump it when the stored state changes shape."""

_MAX_DIM: Final = 20_000  # features a checkpoint may hold (its covariance is dim x dim)

_MAGIC: Final = b"cxstream-churn"
FloatArray = NDArray[np.float64]


class BayesianLogisticRegression:
    """Online Bayesian logistic regression on index/value features (Laplace / EKF update).

    Parameters
    ----------
    prior_variance
        Variance of the zero-mean Gaussian prior on each weight (smaller = more shrinkage).
    capacity
        Initial size of the weight arrays; they double when the feature space grows.
    """

    def __init__(self, prior_variance: float = 1.0, capacity: int = 64) -> None:
        self.prior_variance = prior_variance
        self.capacity = capacity
        self.dim = 0
        self.mean = np.zeros(capacity)
        self.cov = np.eye(capacity) * prior_variance

    def _grow(self, dim: int) -> None:
        if dim <= self.dim:
            return
        if dim > self.mean.shape[0]:
            size = max(dim, 2 * self.mean.shape[0])
            mean = np.zeros(size)
            mean[: self.dim] = self.mean[: self.dim]
            cov = np.eye(size) * self.prior_variance
            cov[: self.dim, : self.dim] = self.cov[: self.dim, : self.dim]
            self.mean, self.cov = mean, cov
        self.dim = dim

    def logit_moments(self, idx: Sequence[int], val: Sequence[float]) -> tuple[float, float]:
        """Posterior mean and variance of the logit for one row."""
        ix = np.fromiter(idx, dtype=np.intp, count=len(idx))
        v = np.fromiter(val, dtype=np.float64, count=len(val))
        known = ix < self.dim
        if not known.all():  # features never learned: prior mean 0, prior variance
            extra = float((v[~known] ** 2).sum()) * self.prior_variance
            ix, v = ix[known], v[known]
        else:
            extra = 0.0
        m = float(self.mean[ix] @ v)
        s2 = float(v @ self.cov[np.ix_(ix, ix)] @ v) + extra
        return m, s2

    @staticmethod
    def moderated(m: FloatArray | float, s2: FloatArray | float) -> Any:
        """P(y=1) averaged over the posterior (probit approximation of the logistic integral)."""
        z = np.asarray(m) / np.sqrt(1.0 + (math.pi / 8.0) * np.asarray(s2))
        return 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))

    def predict_one(self, idx: Sequence[int], val: Sequence[float]) -> float:
        """P(y=1) for one row."""
        m, s2 = self.logit_moments(idx, val)
        return float(self.moderated(m, s2))

    def learn_one(self, idx: Sequence[int], val: Sequence[float], y: bool) -> None:
        """One Laplace step: curvature-weighted rank-one covariance update, then the mean."""
        self._grow(max(idx) + 1)
        ix = np.fromiter(idx, dtype=np.intp, count=len(idx))
        v = np.fromiter(val, dtype=np.float64, count=len(val))
        d = self.dim
        cov = self.cov[:d, :d]
        x = np.zeros(d)
        x[ix] = v
        pv = cov[:, ix] @ v
        m = float(self.mean[ix] @ v)
        p = 1.0 / (1.0 + math.exp(-max(min(m, 35.0), -35.0)))
        h = max(p * (1.0 - p), 1e-6)
        cov -= np.outer(pv, pv) * (h / (1.0 + h * float(x @ pv)))
        self.mean[:d] += (cov @ x) * ((1.0 if y else 0.0) - p)


@dataclass(frozen=True)
class Contribution:
    """How much one column pushed a risk up (positive) or down, in logit units."""

    column: str
    value: Any
    contribution: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the action payload)."""
        return {"feature": self.column, "value": self.value, "contribution": self.contribution}


class ChurnModel:
    """Features + Bayesian logistic regression, with River's classifier interface.

    Parameters
    ----------
    schema
        Numeric and categorical columns to read.
    prior_variance
        Prior variance of each weight.
    max_categories
        Categories kept per column; later new ones are pooled as ``<other>``.
    """

    def __init__(
        self, schema: Schema, prior_variance: float = 1.0, max_categories: int = 64
    ) -> None:
        self.schema = schema
        self.prior_variance = prior_variance
        self.max_categories = max_categories
        self.features = Featurizer(schema, max_categories=max_categories)
        self.learner = BayesianLogisticRegression(prior_variance)
        self.n_learned = 0

    # -- River interface ---------------------------------------------------------------------
    def predict_proba_one(self, x: Row) -> dict[bool, float]:
        """``{False: 1 - p, True: p}`` for one row (scored before it is learned)."""
        idx, val = self.features.transform_one(x, grow=False)
        p = self.learner.predict_one(idx, val)
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: Row, y: bool) -> None:
        """Learn one labelled row (the features' statistics first, then the weights)."""
        self.features.learn_one(x)
        idx, val = self.features.transform_one(x)
        self.learner.learn_one(idx, val, bool(y))
        self.n_learned += 1

    # -- the flow's batch path -----------------------------------------------------------------
    def predict_proba_many(self, rows: Sequence[Row]) -> FloatArray:
        """P(churn) for many rows: featurise column by column, then one matrix product."""
        return self.score_many(rows, top=0)[0]

    def score_many(
        self, rows: Sequence[Row], top: int = 5
    ) -> tuple[FloatArray, list[list[Contribution]]]:
        """P(churn) and the ``top`` signed column contributions of each row (the flow's path)."""
        d = self.learner.dim
        if not rows:
            return np.zeros(0), []
        if d == 0:  # nothing learned yet: the prior says 50/50 and nothing explains it
            return np.full(len(rows), 0.5), [[] for _ in rows]
        x = self.features.transform_many(rows, d)
        mean = self.learner.mean[:d]
        cov = self.learner.cov[:d, :d]
        m = x @ mean
        s2 = np.einsum("ij,ij->i", x @ cov, x)
        probs = np.asarray(self.learner.moderated(m, s2), dtype=np.float64)
        if top <= 0:
            return probs, [[] for _ in rows]
        return probs, self._explain(rows, x, top)

    def _explain(self, rows: Sequence[Row], x: FloatArray, top: int) -> list[list[Contribution]]:
        d = x.shape[1]
        owners = self.features.owner[:d]
        columns = list(dict.fromkeys(o for o in owners if o != "<intercept>"))
        if not columns:
            return [[] for _ in rows]
        pos = {c: j for j, c in enumerate(columns)}
        group = np.zeros((d, len(columns)))
        for i, owner in enumerate(owners):
            if owner in pos:
                group[i, pos[owner]] = 1.0
        # contribution of each column relative to the average customer seen so far
        weighted = self.learner.mean[:d] * group.T  # columns x features
        per_column = x @ weighted.T - self.features.baseline(d) @ weighted.T
        k = min(top, len(columns))
        best = np.argpartition(-np.abs(per_column), k - 1, axis=1)[:, :k]
        out = []
        for r, row in enumerate(rows):
            values = per_column[r, best[r]]
            ranked = sorted(
                zip(best[r].tolist(), values.tolist(), strict=True), key=lambda t: -abs(t[1])
            )
            out.append(
                [
                    Contribution(columns[j], row.get(columns[j]), round(v, 4))
                    for j, v in ranked
                    if v != 0.0
                ]
            )
        return out

    def explain_many(self, rows: Sequence[Row], top: int = 5) -> list[list[Contribution]]:
        """The ``top`` columns by absolute contribution to each row's logit, signed."""
        return self.score_many(rows, top)[1]

    def explain_one(self, x: Row, top: int = 5) -> list[Contribution]:
        """The ``top`` signed contributions for one row."""
        return self.explain_many([x], top)[0]

    # -- checkpoints ---------------------------------------------------------------------------
    def to_bytes(
        self, metrics: Mapping[str, float] | None = None, *, key: bytes | None = None
    ) -> bytes:
        """A versioned, data-only checkpoint (JSON, arrays as base64 float64), authenticated with
        HMAC-SHA256 under ``key`` when one is given (see :func:`read_checkpoint`)."""
        f = self.features
        d = self.learner.dim
        state = _ModelState(
            numeric=list(self.schema.numeric),
            categorical=list(self.schema.categorical),
            prior_variance=self.prior_variance,
            max_categories=self.max_categories,
            n_learned=self.n_learned,
            features=_FeatureState(
                names=list(f.names),
                owner=list(f.owner),
                stats={k: (r.n, r.mean, r.m2) for k, r in f.stats.items()},
                counts={c: dict(v) for c, v in f.counts.items()},
                n=f.n,
            ),
            dim=d,
            mean=np.ascontiguousarray(self.learner.mean[:d], "<f8").tobytes(),
            cov=np.ascontiguousarray(self.learner.cov[:d, :d], "<f8").tobytes(),
            metrics={k: (v if math.isfinite(v) else None) for k, v in (metrics or {}).items()},
        )
        head = _MAGIC + b":" + str(CHECKPOINT_FORMAT).encode()
        body = msgspec.json.encode(state)
        return head + b"\n" + _mac(key, head, body) + b"\n" + body

    @staticmethod
    def from_bytes(data: bytes, *, key: bytes | None = None) -> tuple[ChurnModel, dict[str, float]]:
        """Restore a checkpoint written by :meth:`to_bytes`.

        Nothing in it is executed: it is parsed as JSON against a fixed schema and checked for
        consistency. With a ``key``, its authentication code must match
        (:class:`~cxstream.errors.UntrustedCheckpoint` otherwise); another format version, a
        malformed or inconsistent body raise :class:`~cxstream.errors.IncompatibleCheckpoint`.
        """
        head, sep, rest = data.partition(b"\n")
        magic, _, version = head.partition(b":")
        if not sep or magic != _MAGIC:
            msg = "not a cxstream churn-model checkpoint"
            raise IncompatibleCheckpoint(msg)
        if version != str(CHECKPOINT_FORMAT).encode():
            msg = (
                f"churn-model checkpoint has format {version.decode(errors='replace')[:20]}, this "
                f"cxstream reads format {CHECKPOINT_FORMAT}: delete the checkpoint to start a "
                "fresh model, or run the version that wrote it"
            )
            raise IncompatibleCheckpoint(msg)
        mac, sep, body = rest.partition(b"\n")
        if not sep:
            msg = "churn-model checkpoint is truncated"
            raise IncompatibleCheckpoint(msg)
        if key is not None and not hmac.compare_digest(mac, _mac(key, head, body)):
            msg = (
                "churn-model checkpoint is not authenticated by churn.checkpoint_key (written "
                "with another key, without one, or altered)"
            )
            raise UntrustedCheckpoint(msg)
        try:
            state = msgspec.json.decode(body, type=_ModelState)
        except (msgspec.DecodeError, RecursionError) as exc:
            msg = f"churn-model checkpoint is malformed: {str(exc)[:200]}"
            raise IncompatibleCheckpoint(msg) from exc
        return _restore(state), {k: math.nan if v is None else v for k, v in state.metrics.items()}


def _mac(key: bytes | None, head: bytes, body: bytes) -> bytes:
    if key is None:
        return b"unsigned"
    return hmac.new(key, head + b"\n" + body, hashlib.sha256).hexdigest().encode()


class _FeatureState(msgspec.Struct, forbid_unknown_fields=True):
    names: list[str]
    owner: list[str]
    stats: dict[str, tuple[int, float, float]]
    counts: dict[str, dict[str, int]]
    n: int


class _ModelState(msgspec.Struct, forbid_unknown_fields=True):
    numeric: list[str]
    categorical: list[str]
    prior_variance: Annotated[float, msgspec.Meta(gt=0)]
    max_categories: Annotated[int, msgspec.Meta(ge=1)]
    n_learned: Annotated[int, msgspec.Meta(ge=0)]
    features: _FeatureState
    dim: Annotated[int, msgspec.Meta(ge=0, le=_MAX_DIM)]
    mean: bytes  # float64, little-endian, dim values
    cov: bytes  # float64, little-endian, dim x dim, row-major
    metrics: dict[str, float | None]


def _restore(state: _ModelState) -> ChurnModel:
    f, d = state.features, state.dim
    problems = []
    if len(f.names) != len(f.owner) or not f.names or f.names[0] != "<intercept>":
        problems.append("feature names and owners do not match")
    if d > len(f.names):
        problems.append("more weights than features")
    if len(state.mean) != 8 * d or len(state.cov) != 8 * d * d:
        problems.append("weight arrays of the wrong size")
    if len(set(f.names)) != len(f.names):
        problems.append("a feature named twice")
    if problems:
        msg = f"churn-model checkpoint is inconsistent: {'; '.join(problems)}"
        raise IncompatibleCheckpoint(msg)
    schema = Schema(tuple(state.numeric), tuple(state.categorical))
    model = ChurnModel(schema, state.prior_variance, state.max_categories)
    model.n_learned = state.n_learned
    features = model.features
    features.names = list(f.names)
    features.owner = list(f.owner)
    features.index = {name: i for i, name in enumerate(f.names) if i > 0}
    features.stats = {k: Running(n, mean, m2) for k, (n, mean, m2) in f.stats.items()}
    features.counts = {c: dict(v) for c, v in f.counts.items()}
    features.n = f.n
    learner = model.learner
    learner._grow(d)
    learner.mean[:d] = np.frombuffer(state.mean, "<f8")
    learner.cov[:d, :d] = np.frombuffer(state.cov, "<f8").reshape(d, d)
    if not (np.isfinite(learner.mean[:d]).all() and np.isfinite(learner.cov[:d, :d]).all()):
        msg = "churn-model checkpoint is inconsistent: weights that are not finite"
        raise IncompatibleCheckpoint(msg)
    return model


class QualityMonitor:
    """Rolling prequential ROC AUC and log loss, and ADWIN watching the per-row loss.

    Each labelled outcome is first scored with the model as it was (the probability stored at
    scoring time is not used: the model may have learned since), then learned.
    """

    def __init__(self, window: int = 1_000, delta: float = 0.002) -> None:
        from river import drift, metrics, utils

        river: Any = (drift, metrics, utils)  # River's own annotations are partial
        self.window = window
        self.auc: Any = river[1].RollingROCAUC(window_size=window)
        self.log_loss: Any = river[2].Rolling(river[1].LogLoss, window_size=window)
        self.drift: Any = river[0].ADWIN(delta=delta)
        self.n = 0
        self.drifts = 0

    def update(self, y: bool, p: float) -> bool:
        """Record one outcome; True when the loss distribution changed (a drift)."""
        self.n += 1
        self.auc.update(y, p)
        self.log_loss.update(y, p)
        clipped = min(max(p, 1e-15), 1 - 1e-15)
        self.drift.update(-math.log(clipped if y else 1.0 - clipped))
        if self.drift.drift_detected:
            self.drifts += 1
            return True
        return False

    def report(self) -> dict[str, float]:
        """``roc_auc``, ``log_loss`` over the window, outcomes seen, drifts flagged."""
        return {
            "roc_auc": float(self.auc.get()),
            "log_loss": float(self.log_loss.get()),
            "outcomes": float(self.n),
            "drifts": float(self.drifts),
        }


@dataclass
class ChurnLearner:
    """The single writer of the churn model: learns outcomes, tracks quality, counts revisions."""

    model: ChurnModel
    quality: QualityMonitor
    revision: int = 0
    key: bytes | None = None  # authenticates the checkpoints (ChurnModel.to_bytes)

    def learn_one(self, x: Row, y: bool) -> tuple[float, bool]:
        """Score (for the quality metrics), then learn; returns the probability and drift flag."""
        p = self.model.predict_proba_one(x)[True]
        drifted = self.quality.update(y, p)
        self.model.learn_one(x, y)
        return p, drifted

    def checkpoint(self) -> bytes:
        """A new revision of the model as a versioned checkpoint, with its quality metrics."""
        self.revision += 1
        metrics = {**self.quality.report(), "revision": float(self.revision)}
        return self.model.to_bytes(metrics, key=self.key)
