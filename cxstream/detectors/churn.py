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

import io
import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CHECKPOINT_FORMAT",
    "BayesianLogisticRegression",
    "ChurnLearner",
    "ChurnModel",
    "Contribution",
    "Featurizer",
    "IncompatibleCheckpoint",
    "QualityMonitor",
    "Schema",
    "infer_schema",
    "parse_number",
]

CHECKPOINT_FORMAT: Final = 1
"""Version of the checkpoint layout; bump it when the pickled state changes shape."""

_MAGIC: Final = b"cxstream-churn"
MISSING: Final = "<missing>"
OTHER: Final = "<other>"
_MISSING_TOKENS: Final = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})

Row = Mapping[str, Any]
FloatArray = NDArray[np.float64]


class IncompatibleCheckpoint(ValueError):
    """A checkpoint written by a different (incompatible) version of the model."""


def parse_number(value: Any) -> float | None:
    """A finite float from a cell, or None for blanks, missing markers and non-numbers."""
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, int | float):
        f = float(value)
        return f if math.isfinite(f) else None
    text = str(value).strip()
    if text.lower() in _MISSING_TOKENS:
        return None
    try:
        f = float(text)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def _category(value: Any) -> str:
    if value is None:
        return MISSING
    text = str(value).strip()
    return MISSING if text.lower() in _MISSING_TOKENS else text


@dataclass(frozen=True)
class Schema:
    """Which columns are numbers and which are categories (all others are ignored)."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the model reads."""
        return self.numeric + self.categorical


@dataclass(frozen=True)
class InferredSchema:
    """A schema read off a table, and the columns left out with the reason."""

    schema: Schema
    skipped: dict[str, str]


def infer_schema(
    rows: Iterable[Row],
    *,
    exclude: Iterable[str] = (),
    max_categories: int = 64,
    id_share: float = 0.5,
) -> InferredSchema:
    """Infer column types from the values (never from the label).

    A column is numeric when every non-blank value parses as a number and it has more than two
    distinct values (0/1 flags are categories); otherwise categorical. A non-numeric column
    whose distinct values exceed both ``max_categories`` and ``id_share`` of the rows looks like
    an identifier and is skipped, as is a column with a single value.
    """
    excluded = set(exclude)
    distinct: dict[str, set[str]] = {}
    numeric_ok: dict[str, bool] = {}
    n = 0
    order: list[str] = []
    for row in rows:
        n += 1
        for col, value in row.items():
            if col in excluded:
                continue
            if col not in distinct:
                distinct[col] = set()
                numeric_ok[col] = True
                order.append(col)
            cat = _category(value)
            if cat == MISSING:
                continue
            seen = distinct[col]
            if len(seen) <= max(max_categories, int(id_share * n)) + 1:
                seen.add(cat)
            if numeric_ok[col] and parse_number(cat) is None:
                numeric_ok[col] = False
    numeric: list[str] = []
    categorical: list[str] = []
    skipped: dict[str, str] = {}
    for col in order:
        k = len(distinct[col])
        if k <= 1:
            skipped[col] = "a single value" if k == 1 else "always blank"
        elif numeric_ok[col] and k > 2:
            numeric.append(col)
        elif not numeric_ok[col] and k > max_categories and k > id_share * n:
            skipped[col] = f"looks like an identifier ({k} distinct values)"
        else:
            categorical.append(col)
    return InferredSchema(Schema(tuple(numeric), tuple(categorical)), skipped)


@dataclass
class _Running:
    """Welford mean and variance."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def scale(self, x: float) -> float:
        if self.n < 2:
            return 0.0
        std = math.sqrt(self.m2 / (self.n - 1))
        return (x - self.mean) / std if std > 1e-12 else 0.0


def _slog(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


@dataclass
class Featurizer:
    """Turns a row into ``(feature indices, values)``, growing the feature space online.

    Feature ``i`` belongs to column ``self.owner[i]``; index 0 is the intercept.
    """

    schema: Schema
    max_categories: int = 64
    names: list[str] = field(default_factory=lambda: ["<intercept>"])
    owner: list[str] = field(default_factory=lambda: ["<intercept>"])
    index: dict[str, int] = field(default_factory=dict)
    stats: dict[str, _Running] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    n: int = 0

    def _slot(self, name: str, column: str) -> int:
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.names)
            self.names.append(name)
            self.owner.append(column)
        return i

    def transform_one(self, x: Row, *, grow: bool = True) -> tuple[list[int], list[float]]:
        """Indices and values of the row's features (unknown ones dropped unless ``grow``)."""
        idx = [0]
        val = [1.0]
        for col in self.schema.numeric:
            num = parse_number(x.get(col))
            if num is None:
                key = f"{col}={MISSING}"
                i = self._slot(key, col) if grow else self.index.get(key)
                if i is not None:
                    idx.append(i)
                    val.append(1.0)
                continue
            for key, v in ((col, num), (f"log({col})", _slog(num))):
                i = self._slot(key, col) if grow else self.index.get(key)
                if i is not None:
                    run = self.stats.get(key)
                    idx.append(i)
                    val.append(run.scale(v) if run is not None else 0.0)
        for col in self.schema.categorical:
            cat = _category(x.get(col))
            seen = self.counts.get(col)
            if seen is not None and cat not in seen and len(seen) >= self.max_categories:
                cat = OTHER
            key = f"{col}={cat}"
            i = self._slot(key, col) if grow else self.index.get(key)
            if i is not None:
                idx.append(i)
                val.append(1.0)
        return idx, val

    def transform_many(self, rows: Sequence[Row], dim: int) -> FloatArray:
        """The rows' features as a dense ``len(rows) x dim`` matrix, column by column.

        The same values as :meth:`transform_one` with ``grow=False`` (features past ``dim`` are
        dropped); working a column at a time keeps the per-row Python cost to a few lookups.
        """
        n = len(rows)
        x = np.zeros((n, dim))
        x[:, 0] = 1.0
        index = self.index
        for col in self.schema.numeric:
            nums = [parse_number(row.get(col)) for row in rows]
            present = np.fromiter((v is not None for v in nums), dtype=bool, count=n)
            i_missing = index.get(f"{col}={MISSING}")
            if i_missing is not None and i_missing < dim:
                x[~present, i_missing] = 1.0
            if not present.any():
                continue
            raw = np.fromiter((0.0 if v is None else v for v in nums), dtype=np.float64, count=n)
            logged = np.copysign(np.log1p(np.abs(raw)), raw)
            for key, values in ((col, raw), (f"log({col})", logged)):
                i = index.get(key)
                run = self.stats.get(key)
                if i is None or i >= dim or run is None or run.n < 2:
                    continue
                std = math.sqrt(run.m2 / (run.n - 1))
                if std > 1e-12:
                    x[present, i] = (values[present] - run.mean) / std
        for col in self.schema.categorical:
            seen = self.counts.get(col, {})
            full = len(seen) >= self.max_categories
            prefix = f"{col}="
            other = index.get(prefix + OTHER, -1) if full else -1
            slots: dict[str, int] = {}
            cols = np.empty(n, dtype=np.intp)
            for r, row in enumerate(rows):
                cat = _category(row.get(col))
                i = slots.get(cat)
                if i is None:
                    found = index.get(prefix + cat)
                    i = slots[cat] = (
                        found if found is not None else (other if cat not in seen else -1)
                    )
                cols[r] = i
            ok = (cols >= 0) & (cols < dim)
            x[np.flatnonzero(ok), cols[ok]] = 1.0
        return x

    def learn_one(self, x: Row) -> None:
        """Update running means/variances and category counts with one row."""
        self.n += 1
        for col in self.schema.numeric:
            num = parse_number(x.get(col))
            if num is None:
                continue
            for key, v in ((col, num), (f"log({col})", _slog(num))):
                self.stats.setdefault(key, _Running()).update(v)
        for col in self.schema.categorical:
            cat = _category(x.get(col))
            seen = self.counts.setdefault(col, {})
            if cat not in seen and len(seen) >= self.max_categories:
                cat = OTHER
            seen[cat] = seen.get(cat, 0) + 1

    def baseline(self, dim: int) -> FloatArray:
        """The average customer's feature vector so far (categories at their frequencies)."""
        base = np.zeros(dim)
        base[0] = 1.0
        if self.n == 0:
            return base
        for col in self.schema.numeric:
            seen = self.stats[col].n if col in self.stats else 0
            key = f"{col}={MISSING}"
            i = self.index.get(key)
            if i is not None and i < dim:
                base[i] = (self.n - seen) / self.n
        for col, seen_counts in self.counts.items():
            for cat, count in seen_counts.items():
                i = self.index.get(f"{col}={cat}")
                if i is not None and i < dim:
                    base[i] = count / self.n
        return base


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
    def to_bytes(self, metrics: Mapping[str, float] | None = None) -> bytes:
        """A versioned checkpoint: magic, format version, then the pickled state and metrics."""
        buf = io.BytesIO()
        buf.write(_MAGIC + b":" + str(CHECKPOINT_FORMAT).encode() + b"\n")
        pickle.dump({"model": self, "metrics": dict(metrics or {})}, buf, protocol=5)
        return buf.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> tuple[ChurnModel, dict[str, float]]:
        """Restore a checkpoint; one of another format version raises
        :class:`IncompatibleCheckpoint` naming both versions."""
        head, sep, body = data.partition(b"\n")
        magic, _, version = head.partition(b":")
        if not sep or magic != _MAGIC:
            msg = "not a cxstream churn-model checkpoint"
            raise IncompatibleCheckpoint(msg)
        if version != str(CHECKPOINT_FORMAT).encode():
            msg = (
                f"churn-model checkpoint has format {version.decode(errors='replace')}, this "
                f"cxstream reads format {CHECKPOINT_FORMAT}: delete the checkpoint to start a "
                "fresh model, or run the version that wrote it"
            )
            raise IncompatibleCheckpoint(msg)
        state = pickle.loads(body)  # noqa: S301 - our own checkpoint, from our own Redis/file
        model = state["model"]
        if not isinstance(model, ChurnModel):
            msg = "checkpoint does not hold a ChurnModel"
            raise IncompatibleCheckpoint(msg)
        return model, dict(state["metrics"])


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

    def learn_one(self, x: Row, y: bool) -> tuple[float, bool]:
        """Score (for the quality metrics), then learn; returns the probability and drift flag."""
        p = self.model.predict_proba_one(x)[True]
        drifted = self.quality.update(y, p)
        self.model.learn_one(x, y)
        return p, drifted

    def checkpoint(self) -> bytes:
        """A new revision of the model as a versioned checkpoint, with its quality metrics."""
        self.revision += 1
        return self.model.to_bytes({**self.quality.report(), "revision": float(self.revision)})
