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

import dataclasses
import hashlib
import hmac
import math
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import Annotated, Any, Final, NamedTuple

import msgspec
import numpy as np
from numpy.typing import NDArray

from cxstream.detectors.churn_features import (
    _WHOLE,
    Featurizer,
    InferredSchema,
    Row,
    Running,
    Schema,
    infer_schema,
    parse_number,
    parse_numbers,
    read_categories,
)
from cxstream.detectors.churn_trees import (
    BoostedTrees,
    LabelledWindow,
    Refit,
    Stacker,
    TreeEncoder,
    TreeSettings,
    moderated_logit,
    refit,
    sigmoid,
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
    "TreeSettings",
    "UntrustedCheckpoint",
    "infer_schema",
    "parse_number",
]

CHECKPOINT_FORMAT: Final = 3
"""Version of the checkpoint layout; bump it when the stored state changes shape."""

_MAX_DIM: Final = 20_000  # features a checkpoint may hold (its covariance is dim x dim)
_MAX_WINDOW: Final = 1_000_000  # labelled rows a checkpoint's tree window may hold

_MAGIC: Final = b"cxstream-churn"
_DEFAULT_TREES: Final = TreeSettings()
_TRIAL: Final = 100  # outcomes a post-drift challenger is judged on
_FORGET: Final = 2.0  # posterior widening after a drift
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
        return sigmoid(moderated_logit(m, s2))

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


class Contribution(NamedTuple):
    """How much one column pushed a risk up (positive) or down, in logit units (a named tuple:
    a batch of scores makes one per row and reason)."""

    column: str
    value: Any
    contribution: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the action payload)."""
        return {"feature": self.column, "value": self.value, "contribution": self.contribution}


class ChurnModel:
    """The churn model: Bayesian logistic regression and gradient-boosted trees, blended by an
    online stacker, with River's classifier interface.

    The logistic part learns every outcome at once; the trees are refit from the last
    ``trees.window`` labelled rows every ``refit_every`` rows (and at least ``refit_growth`` of
    the rows learned so far), in a background thread when :attr:`background` is set; the
    stacker (:class:`~cxstream.detectors.churn_trees.Stacker`) learns how much each part is
    worth from their out-of-sample predictions.

    Parameters
    ----------
    schema
        Numeric and categorical columns to read.
    prior_variance
        Prior variance of each logistic weight.
    max_categories
        Categories kept per column; later new ones are pooled as ``<other>``.
    trees
        How the trees are fitted; None for the logistic model alone.
    """

    def __init__(
        self,
        schema: Schema,
        prior_variance: float = 1.0,
        max_categories: int = 64,
        trees: TreeSettings | None = _DEFAULT_TREES,
    ) -> None:
        self.schema = schema
        self.prior_variance = prior_variance
        self.max_categories = max_categories
        self.features = Featurizer(schema, max_categories=max_categories)
        self.learner = BayesianLogisticRegression(prior_variance)
        self.n_learned = 0
        self.tree_settings = trees
        self.encoder = TreeEncoder(schema, max_categories)
        width = len(self.encoder.columns)
        self.window = LabelledWindow(trees.window, width) if trees is not None else None
        self.trees: BoostedTrees | None = None
        self.stacker = Stacker()
        self.last_fit = 0  # rows learned when the last refit was asked for
        self.background: Executor | None = None  # refits run here when set (the flow's)
        self._pending: tuple[str, Future[Refit]] | None = None
        self.challenger: Refit | None = None  # a post-drift refit on trial
        self._trial = [0.0, 0.0, 0]  # log loss of champion, challenger; outcomes
        self.events: list[str] = []  # refit / drift events for the learner's metrics and logs

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["background"] = None
        state["_pending"] = None
        return state

    # -- River interface ---------------------------------------------------------------------
    def predict_proba_one(self, x: Row) -> dict[bool, float]:
        """``{False: 1 - p, True: p}`` for one row (scored before it is learned)."""
        p = float(self.score_many([x], top=0)[0][0])
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: Row, y: bool) -> None:
        """Learn one labelled row: the stacker from both parts' predictions made before it, then
        the features' statistics and the logistic weights; the row joins the trees' window."""
        self._adopt()
        f = self._blend_inputs([x])
        if self.challenger is not None:
            self._judge(x, f[0], bool(y))
        if self.window is not None:  # without trees the linear part stands alone
            self.stacker.learn_one(f[0], bool(y))
        self.features.learn_one(x)
        idx, val = self.features.transform_one(x)
        self.learner.learn_one(idx, val, bool(y))
        self.n_learned += 1
        if self.window is not None:
            self.encoder.learn_one(x)
            self.window.add(self.encoder.encode_many([x])[0], bool(y), float(f[0, 1]))
            self._maybe_refit()

    # -- the trees' refits ---------------------------------------------------------------------
    def _maybe_refit(self) -> None:
        t = self.tree_settings
        if t is None or self.window is None or self._pending is not None:
            return
        due = max(t.refit_every, t.refit_growth * self.n_learned)
        negatives, positives = self.window.class_counts()
        if self.n_learned - self.last_fit >= due and min(negatives, positives) >= t.min_class:
            self.refit("refit")

    def refit(self, kind: str = "refit", rows: int | None = None) -> None:
        """Fit new trees on the last ``rows`` of the window (all by default): ``refit`` replaces
        the trees when done; ``challenger`` puts them on trial beside the current ones."""
        t = self.tree_settings
        if t is None or self.window is None:
            return
        self.last_fit = self.n_learned
        x, y, z = self.window.recent(rows)
        if min(int(y.sum()), len(y) - int(y.sum())) < t.min_class:
            return
        job = (x, y, z, self.encoder.categorical_index, t)
        if self.background is None:
            self._install(kind, refit(*job))
        else:
            self._pending = (kind, self.background.submit(refit, *job))

    def _adopt(self) -> None:
        """Install a background refit that has finished (a failed one is reported, not raised)."""
        if self._pending is None or not self._pending[1].done():
            return
        kind, future = self._pending
        self._pending = None
        try:
            done = future.result()
        except Exception as exc:  # any failure: the previous trees keep serving
            self.events.append(f"refit_failed: {type(exc).__name__}: {str(exc)[:200]}")
            return
        self._install(kind, done)

    def wait_for_refit(self, timeout: float | None = None) -> None:
        """Block until a background refit has finished and install it (tests, shutdown)."""
        if self._pending is not None:
            futures_wait([self._pending[1]], timeout=timeout)
            self._adopt()

    def _install(self, kind: str, done: Refit) -> None:
        if kind == "challenger" and self.trees is not None:
            self.challenger = done
            self._trial = [0.0, 0.0, 0]
            self.events.append("challenger")
        else:
            self._adopt_refit(done)
            self.events.append("refit")

    def _adopt_refit(self, done: Refit) -> None:
        self.trees = done.trees
        if done.stacker is not None:
            self.stacker.mean, self.stacker.cov = done.stacker[0].copy(), done.stacker[1].copy()

    def _judge(self, x: Row, f: FloatArray, y: bool) -> None:
        """Score the challenger beside the champion on one outcome; after ``_TRIAL`` outcomes,
        keep whichever had the lower log loss."""
        challenger = self.challenger
        if challenger is None:
            return
        g = f.copy()
        g[2] = float(challenger.trees.logit(self.encoder.encode_many([x]))[0])
        p_champion = float(self.stacker.predict(f[None, :])[0])
        trial = Stacker()
        if challenger.stacker is not None:
            trial.mean, trial.cov = challenger.stacker
        else:
            trial.mean, trial.cov = self.stacker.mean, self.stacker.cov
        p_challenger = float(trial.predict(g[None, :])[0])
        probs = np.array([p_champion, p_challenger])
        loss = -np.log(np.clip(probs if y else 1.0 - probs, 1e-15, 1.0))
        self._trial[0] += float(loss[0])
        self._trial[1] += float(loss[1])
        self._trial[2] += 1
        if self._trial[2] >= _TRIAL:
            if self._trial[1] < self._trial[0]:
                self._adopt_refit(challenger)
                self.events.append("challenger_promoted")
            else:
                self.events.append("challenger_dropped")
            self.challenger = None

    def on_drift(self, recent: int) -> None:
        """The response to a drift in the loss: the logistic and stacker posteriors are widened
        (recent outcomes weigh twice as much as before), and trees refit on the ``recent`` rows
        since the change go on trial beside the current ones (promoted only if they do better
        on the next outcomes)."""
        d = self.learner.dim
        self.learner.cov[:d, :d] *= _FORGET
        self.stacker.forget(_FORGET)
        self.events.append("drift")
        if self._pending is None and self.tree_settings is not None:
            self.refit("challenger", max(recent, 2 * self.tree_settings.min_leaf))

    # -- the flow's batch path -----------------------------------------------------------------
    def _blend_inputs(
        self,
        rows: Sequence[Row],
        x: FloatArray | None = None,
        *,
        tree_logit: FloatArray | None = None,
    ) -> FloatArray:
        """``[1, logit_linear, logit_trees]`` per row (the stacker's inputs); ``x`` and
        ``tree_logit`` are the rows' linear features and trees' logit when already computed."""
        n = len(rows)
        f = np.zeros((n, 3))
        f[:, 0] = 1.0
        d = self.learner.dim
        if d > 0:
            if x is None:
                x = self.features.transform_many(rows, d)
            mean = self.learner.mean[:d]
            m = x @ mean
            s2 = np.einsum("ij,ij->i", x @ self.learner.cov[:d, :d], x)
            f[:, 1] = moderated_logit(m, s2)
        if tree_logit is not None:
            f[:, 2] = tree_logit
        elif self.trees is not None:
            f[:, 2] = self.trees.logit(self.encoder.encode_many(rows))
        return f

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
        numbers = parse_numbers(rows, self.schema.numeric)  # read once for both parts
        categories = (  # a row or a few are read cell by cell by each part
            read_categories(rows, self.schema.categorical) if len(rows) >= _WHOLE else None
        )
        x = self.features.transform_many(rows, d, numbers, categories)
        trees = self.trees
        leaves = None
        if trees is not None and top > 0:  # the leaves give both the logit and the reasons
            leaves = trees.leaves(self.encoder.encode_many(rows, numbers, categories))
            f = self._blend_inputs(rows, x, tree_logit=trees.logit_of(leaves))
        else:
            f = self._blend_inputs(rows, x)
        if self.window is None:  # the linear part alone: its own posterior-averaged probability
            probs = np.asarray(sigmoid(f[:, 1]), dtype=np.float64)
        else:
            probs = np.asarray(self.stacker.predict(f), dtype=np.float64)
        if top <= 0:
            return probs, [[] for _ in rows]
        return probs, self._explain(rows, x, leaves, top)

    def _explain(
        self, rows: Sequence[Row], x: FloatArray, leaves: NDArray[np.intp] | None, top: int
    ) -> list[list[Contribution]]:
        """Per column: the logistic part's ``weight x feature`` against the average customer,
        plus the trees' path contribution, each scaled by the stacker's weight for its part."""
        d = x.shape[1]
        owners = self.features.owner[:d]
        columns = list(self.encoder.columns)
        if not columns:
            return [[] for _ in rows]
        pos = {c: j for j, c in enumerate(columns)}
        group = np.zeros((d, len(columns)))
        for i, owner in enumerate(owners):
            if owner in pos:
                group[i, pos[owner]] = 1.0
        weighted = self.learner.mean[:d] * group.T  # columns x features
        _, w_linear, w_trees = self.stacker.mean
        per_column = (x @ weighted.T - self.features.baseline(d) @ weighted.T) * w_linear
        if self.trees is not None and leaves is not None:
            per_column += self.trees.contributions(leaves) * w_trees
        k = min(top, len(columns))
        best = np.argpartition(-np.abs(per_column), k - 1, axis=1)[:, :k]
        chosen = np.round(np.take_along_axis(per_column, best, axis=1), 4)
        order = np.argsort(-np.abs(chosen), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        chosen = np.take_along_axis(chosen, order, axis=1)
        # made flat in one pass (C-level where it can be), then cut into each row's list
        keep = chosen != 0.0
        names = np.array(columns, dtype=object)[best][keep].tolist()
        counts = keep.sum(axis=1).tolist()
        whose = [row for row, c in zip(rows, counts, strict=True) for _ in range(c)]
        cells = [row.get(name) for row, name in zip(whose, names, strict=True)]
        triples = zip(names, cells, chosen[keep].tolist(), strict=True)
        made = list(map(tuple.__new__, repeat(Contribution), triples))
        ends = list(accumulate(counts))
        return [made[end - c : end] for end, c in zip(ends, counts, strict=True)]

    def explain_many(self, rows: Sequence[Row], top: int = 5) -> list[list[Contribution]]:
        """The ``top`` columns by absolute contribution to each row's logit, signed."""
        return self.score_many(rows, top)[1]

    def explain_one(self, x: Row, top: int = 5) -> list[Contribution]:
        """The ``top`` signed contributions for one row."""
        return self.explain_many([x], top)[0]

    # -- checkpoints ---------------------------------------------------------------------------
    def _trees_state(self) -> _TreesState | None:
        t, w = self.tree_settings, self.window
        if t is None or w is None:
            return None
        return _TreesState(
            settings=_TreeSettingsState(**dataclasses.asdict(t)),
            codes={c: list(v) for c, v in self.encoder.codes.items()},
            model=self.trees.to_text() if self.trees is not None else None,
            model_rows=self.trees.rows if self.trees is not None else 0,
            window_x=np.ascontiguousarray(w.x, "<f8").tobytes(),
            window_y=w.y.tobytes(),
            window_z=np.ascontiguousarray(w.z, "<f8").tobytes(),
            window_count=w.count,
            last_fit=self.last_fit,
        )

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
            stacker_mean=self.stacker.mean.tolist(),
            stacker_cov=self.stacker.cov.ravel().tolist(),
            trees=self._trees_state(),
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


class _TreeSettingsState(msgspec.Struct, forbid_unknown_fields=True):
    rounds: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    leaves: Annotated[int, msgspec.Meta(ge=2, le=1_024)]
    learning_rate: Annotated[float, msgspec.Meta(gt=0, le=1)]
    min_leaf: Annotated[int, msgspec.Meta(ge=1)]
    window: Annotated[int, msgspec.Meta(ge=1, le=_MAX_WINDOW)]
    refit_every: Annotated[int, msgspec.Meta(ge=1)]
    refit_growth: Annotated[float, msgspec.Meta(ge=0)]
    min_class: Annotated[int, msgspec.Meta(ge=1)]
    folds: Annotated[int, msgspec.Meta(ge=0, le=20)]


class _TreesState(msgspec.Struct, forbid_unknown_fields=True):
    settings: _TreeSettingsState
    codes: dict[str, list[str]]
    model: str | None  # LightGBM's text model format
    model_rows: Annotated[int, msgspec.Meta(ge=0)]
    window_x: bytes  # float64, little-endian, window x columns, row-major
    window_y: bytes  # uint8 labels
    window_z: bytes  # float64, little-endian: the linear part's logit before each row was learned
    window_count: Annotated[int, msgspec.Meta(ge=0)]
    last_fit: Annotated[int, msgspec.Meta(ge=0)]


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
    stacker_mean: list[float]
    stacker_cov: list[float]
    trees: _TreesState | None
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
    if len(state.stacker_mean) != 3 or len(state.stacker_cov) != 9:
        problems.append("stacker weights of the wrong size")
    width = len(state.numeric) + len(state.categorical)
    t = state.trees
    if t is not None:
        size = t.settings.window
        if (
            len(t.window_x) != 8 * size * width
            or len(t.window_y) != size
            or len(t.window_z) != 8 * size
        ):
            problems.append("a tree window of the wrong size")
        if set(t.codes) != set(state.categorical):
            problems.append("category codes for other columns")
        if any(len(set(v)) != len(v) for v in t.codes.values()):
            problems.append("a category coded twice")
    if problems:
        msg = f"churn-model checkpoint is inconsistent: {'; '.join(problems)}"
        raise IncompatibleCheckpoint(msg)
    schema = Schema(tuple(state.numeric), tuple(state.categorical))
    settings = TreeSettings(**msgspec.structs.asdict(t.settings)) if t is not None else None
    model = ChurnModel(schema, state.prior_variance, state.max_categories, settings)
    model.stacker.mean = np.array(state.stacker_mean, dtype=np.float64)
    model.stacker.cov = np.array(state.stacker_cov, dtype=np.float64).reshape(3, 3)
    if t is not None and model.window is not None:
        window = model.window
        window.x = np.frombuffer(t.window_x, "<f8").reshape(t.settings.window, width).copy()
        window.y = np.frombuffer(t.window_y, np.uint8).copy()
        window.z = np.frombuffer(t.window_z, "<f8").copy()
        window.count = t.window_count
        model.last_fit = t.last_fit
        model.encoder.codes = {c: {v: i for i, v in enumerate(vs)} for c, vs in t.codes.items()}
        if t.model is not None:
            try:
                model.trees = BoostedTrees.from_text(t.model, t.model_rows, width)
            except ValueError as exc:
                msg = f"churn-model checkpoint is inconsistent: {exc}"
                raise IncompatibleCheckpoint(msg) from exc
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
    finite = (learner.mean[:d], learner.cov[:d, :d], model.stacker.mean, model.stacker.cov)
    if not all(np.isfinite(a).all() for a in finite):
        msg = "churn-model checkpoint is inconsistent: weights that are not finite"
        raise IncompatibleCheckpoint(msg)
    return model


class QualityMonitor:
    """Rolling prequential ROC AUC and log loss, and ADWIN watching the per-row loss.

    Each labelled outcome is first scored with the model as it was (the probability stored at
    scoring time is not used: the model may have learned since), then learned.

    The ROC AUC is :attr:`measured` once the window holds at least :attr:`LEAST` outcomes of
    each kind: over a handful it says nothing (a fresh model's first outcomes, all scored 0.5,
    give 0.5; two churners and three retained give 0, 0.5 or 1), and the standard error of an
    AUC near 0.75 over 30 of each is about 0.05, so a window that reads below 0.6 then is a poor
    model, not chance.

    >>> q = QualityMonitor(window=100)
    >>> for n in range(60):
    ...     _ = q.update(n % 2 == 0, 0.5)
    >>> q.measured
    True
    """

    LEAST: Final = 30
    _labels: deque[bool] | None = None  # the window's outcomes (absent from older snapshots)

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
        if self._labels is None:
            self._labels = deque(maxlen=self.window)
        self._labels.append(y)
        self.auc.update(y, p)
        self.log_loss.update(y, p)
        clipped = min(max(p, 1e-15), 1 - 1e-15)
        self.drift.update(-math.log(clipped if y else 1.0 - clipped))
        if self.drift.drift_detected:
            self.drifts += 1
            return True
        return False

    @property
    def measured(self) -> bool:
        """Whether the window holds enough outcomes of each kind for its ROC AUC to mean
        something (:attr:`LEAST`)."""
        labels = self._labels or ()
        churned = sum(labels)
        return min(churned, len(labels) - churned) >= self.LEAST

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
        """Score (for the quality metrics), then learn; returns the probability and drift flag.

        On a drift the model responds (:meth:`ChurnModel.on_drift`) with the rows since the
        change as ADWIN measured them."""
        p = self.model.predict_proba_one(x)[True]
        drifted = self.quality.update(y, p)
        self.model.learn_one(x, y)
        if drifted:
            self.model.on_drift(int(self.quality.drift.width))
        return p, drifted

    def take_events(self) -> list[str]:
        """The model's refit and drift events since the last call (for metrics and logs)."""
        events, self.model.events = self.model.events, []
        return events

    def checkpoint(self) -> bytes:
        """A new revision of the model as a versioned checkpoint, with its quality metrics."""
        self.revision += 1
        metrics = {**self.quality.report(), "revision": float(self.revision)}
        return self.model.to_bytes(metrics, key=self.key)
