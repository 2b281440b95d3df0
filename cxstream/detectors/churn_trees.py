"""The churn model's non-linear part: gradient-boosted trees refit from a bounded window of
labelled rows, and the online stacker that blends them with the Bayesian logistic model.

* :class:`TreeEncoder` turns a row into one number per column: a numeric column's value as
  parsed (NaN when missing; trees need no scaling), a categorical column's code in an
  append-only vocabulary (NaN for a category first seen after ``max_categories``). A code never
  changes meaning, so trees fitted on old rows read new rows correctly.
* :class:`LabelledWindow` keeps the last ``size`` encoded, labelled rows (a ring buffer: memory is
  ``size x columns`` floats, whatever the stream's length).
* :class:`BoostedTrees` is one fitted LightGBM booster, immutable: refits build a new one (in a
  background thread in the flow; LightGBM releases the GIL while it trains), and scorers swap
  the reference. Its checkpoint form is LightGBM's own text model format, which is data only.
  Per-column contributions are path contributions (Saabas): along the path a row takes through
  a tree, each split moves the expected value from the node's to the child's (means of the
  training rows below each), and that move is credited to the split's column. They are signed,
  in logit units, and add up to the trees' logit minus its average. Each booster precomputes
  them per leaf once, so explaining a batch is one leaf lookup and one gather (TreeSHAP, through
  LightGBM's ``pred_contrib``, gives comparable values at about a twentieth of the speed).
* :class:`Stacker` learns prequentially how much to trust each part: a Bayesian logistic
  regression on ``[1, logit_linear, logit_trees]``, updated with each outcome *before* the
  models learn it (so its inputs are always out-of-sample predictions), starting from "trust
  the linear model" (prior mean ``[0, 1, 0]``). Where the trees add nothing, their weight stays
  near 0, so the blend cannot fall far below the linear model; where they capture thresholds and
  interactions, their weight grows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from cxstream.detectors.churn_features import (
    _WHOLE,
    Categories,
    Schema,
    _category,
    parse_numbers,
    read_categories,
)

__all__ = [
    "BoostedTrees",
    "LabelledWindow",
    "Refit",
    "Stacker",
    "TreeEncoder",
    "TreeSettings",
    "moderated_logit",
    "refit",
    "sigmoid",
]

FloatArray = NDArray[np.float64]
Row = Mapping[str, Any]

_LOGIT_CLIP: Final = 35.0


@dataclass(frozen=True)
class TreeSettings:
    """How the trees are fitted and when they are refit.

    The booster's values are LightGBM's usual small-data settings (shallow trees of 15 leaves,
    shrinkage 0.05 over 200 rounds, 80 % row and column subsampling, at least 20 rows per leaf);
    ``docs/evaluation.md#churn-risk`` shows they hold on both shared churn files.
    """

    rounds: int = 200
    leaves: int = 15
    learning_rate: float = 0.05
    min_leaf: int = 20
    window: int = 5_000  # labelled rows kept for refits (the most recent)
    refit_every: int = 200  # labelled rows between refits, at least ...
    refit_growth: float = 0.1  # ... and this share of the rows learned so far
    min_class: int = 10  # rows of each class before the first fit
    folds: int = 3  # out-of-fold fits that re-estimate the stacker at each refit (0: none)

    def params(self) -> dict[str, Any]:
        """LightGBM's training parameters."""
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.leaves,
            "min_data_in_leaf": self.min_leaf,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "cat_smooth": 10.0,
            "min_data_per_group": 20,
            "num_threads": 1,
            "seed": 1,
            "deterministic": True,
            "verbose": -1,
        }


class TreeEncoder:
    """Rows to a dense matrix, one column per schema column (numbers first, then categories)."""

    def __init__(self, schema: Schema, max_categories: int = 64) -> None:
        self.schema = schema
        self.max_categories = max_categories
        self.codes: dict[str, dict[str, int]] = {c: {} for c in schema.categorical}

    @property
    def columns(self) -> tuple[str, ...]:
        """The matrix's columns, in order."""
        return (*self.schema.numeric, *self.schema.categorical)

    @property
    def categorical_index(self) -> list[int]:
        """Positions of the categorical columns."""
        start = len(self.schema.numeric)
        return list(range(start, start + len(self.schema.categorical)))

    def learn_one(self, x: Row) -> None:
        """Give the row's new categories a code (until a column has ``max_categories``)."""
        for col in self.schema.categorical:
            codes = self.codes[col]
            cat = _category(x.get(col))
            if cat not in codes and len(codes) < self.max_categories:
                codes[cat] = len(codes)

    def encode_many(
        self,
        rows: Sequence[Row],
        numbers: FloatArray | None = None,
        categories: dict[str, Categories] | None = None,
    ) -> FloatArray:
        """The rows as an ``n x columns`` float matrix (NaN where missing or unknown);
        ``numbers`` and ``categories`` are :func:`parse_numbers` and :func:`read_categories` of
        the rows when the caller has them already."""
        n = len(rows)
        out = np.full((n, len(self.schema.numeric) + len(self.schema.categorical)), np.nan)
        out[:, : len(self.schema.numeric)] = (
            parse_numbers(rows, self.schema.numeric) if numbers is None else numbers
        )
        start = len(self.schema.numeric)
        if categories is None and n < _WHOLE:  # a row or a few (learning): cell by cell
            for j, col in enumerate(self.schema.categorical, start):
                codes = self.codes[col]
                out[:, j] = [codes.get(_category(row.get(col)), np.nan) for row in rows]
            return out
        if categories is None:
            categories = read_categories(rows, self.schema.categorical)
        for j, col in enumerate(self.schema.categorical, start):
            codes = self.codes[col]
            read = categories[col]
            out[:, j] = np.array([codes.get(c, np.nan) for c in read.distinct])[read.rows]
        return out


class LabelledWindow:
    """The last ``size`` encoded rows with their labels (a ring buffer)."""

    def __init__(self, size: int, width: int) -> None:
        self.size = size
        self.x = np.zeros((size, width))
        self.y = np.zeros(size, dtype=np.uint8)
        self.z = np.zeros(size)  # the linear part's logit for the row, made before it was learned
        self.count = 0  # rows ever added

    def add(self, x: FloatArray, y: bool, z: float) -> None:
        """Keep one row, dropping the oldest when full."""
        i = self.count % self.size
        self.x[i] = x
        self.y[i] = 1 if y else 0
        self.z[i] = z
        self.count += 1

    def recent(self, n: int | None = None) -> tuple[FloatArray, NDArray[np.uint8], FloatArray]:
        """The most recent ``n`` rows (all kept by default), oldest first, as copies."""
        kept = min(self.count, self.size)
        n = kept if n is None else min(n, kept)
        idx = (np.arange(self.count - n, self.count)) % self.size
        return self.x[idx].copy(), self.y[idx].copy(), self.z[idx].copy()

    def class_counts(self) -> tuple[int, int]:
        """(negatives, positives) among the rows kept."""
        kept = min(self.count, self.size)
        pos = int(self.y[:kept].sum())
        return kept - pos, pos


class BoostedTrees:
    """One fitted LightGBM booster (immutable once built)."""

    def __init__(self, booster: Any, rows: int) -> None:
        self.booster = booster
        self.rows = rows  # labelled rows it was fitted on
        self._paths: FloatArray | None = None  # trees x leaves x columns, built on first use
        self._values: FloatArray | None = None  # trees x leaves

    @classmethod
    def fit(
        cls, x: FloatArray, y: NDArray[Any], categorical: list[int], settings: TreeSettings
    ) -> BoostedTrees:
        """Fit a new booster on ``x``, ``y`` (safe to call in a background thread)."""
        import lightgbm

        data = lightgbm.Dataset(
            x, y.astype(np.float64), categorical_feature=categorical, params={"verbose": -1}
        )
        booster = lightgbm.train(settings.params(), data, num_boost_round=settings.rounds)
        return cls(booster, len(y))

    def logit(self, x: FloatArray) -> FloatArray:
        """The trees' log-odds for each row."""
        out = self.booster.predict(x, raw_score=True, num_threads=1)
        return np.clip(np.asarray(out, dtype=np.float64), -_LOGIT_CLIP, _LOGIT_CLIP)

    def leaves(self, x: FloatArray) -> NDArray[np.intp]:
        """The leaf each row reaches in each tree (``n x trees``)."""
        out = np.asarray(self.booster.predict(x, pred_leaf=True, num_threads=1), dtype=np.intp)
        return out.reshape(len(x), -1)

    def logit_of(self, leaves: NDArray[np.intp]) -> FloatArray:
        """The trees' log-odds from the leaves reached (the same as :meth:`logit`)."""
        values = self._tables()[1]
        z: FloatArray = values.ravel()[self._flat(leaves, values.shape[1])].sum(axis=1)
        return np.clip(z, -_LOGIT_CLIP, _LOGIT_CLIP)

    def contributions(self, leaves: NDArray[np.intp]) -> FloatArray:
        """Path contributions from the leaves reached: ``n x columns``, signed, in logit units.

        One sparse product: each row's leaves as ones in a ``n x (trees x leaves)`` matrix,
        times every leaf's path (the cost is a row's leaves x columns, with no per-tree
        temporaries)."""
        import scipy.sparse

        paths = self._tables()[0]
        trees, most, width = paths.shape
        n = len(leaves)
        if n == 0 or leaves.shape[1] == 0:
            return np.zeros((n, width))
        flat = self._flat(leaves, most).ravel()
        reached = scipy.sparse.csr_matrix(
            (np.ones(flat.size), flat, np.arange(0, flat.size + 1, leaves.shape[1])),
            shape=(n, trees * most),
        )
        return np.asarray(reached @ paths.reshape(trees * most, width), dtype=np.float64)

    @staticmethod
    def _flat(leaves: NDArray[np.intp], most: int) -> NDArray[np.intp]:
        """Each reached leaf's row in the trees x leaves tables flattened."""
        return np.asarray(leaves + np.arange(leaves.shape[1]) * most, dtype=np.intp)

    def _tables(self) -> tuple[FloatArray, FloatArray]:
        if self._paths is None or self._values is None:
            self._paths, self._values = self._path_table()
        return self._paths, self._values

    def _path_table(self) -> tuple[FloatArray, FloatArray]:
        """Each leaf's contribution per column, and its value, from the tree structure."""
        model = self.booster.dump_model()
        trees = model["tree_info"]
        width = int(model["max_feature_idx"]) + 1
        most = max(int(t["num_leaves"]) for t in trees) if trees else 1
        paths = np.zeros((len(trees), most, width))
        values = np.zeros((len(trees), most))
        for t, info in enumerate(trees):
            _walk(info["tree_structure"], paths[t], values[t], np.zeros(width))
        return paths, values

    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.to_text(), "rows": self.rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_str=state["model"])
        self.rows = state["rows"]
        self._paths = self._values = None

    def to_text(self) -> str:
        """LightGBM's text model (data only)."""
        return str(self.booster.model_to_string())

    @classmethod
    def from_text(cls, text: str, rows: int, width: int) -> BoostedTrees:
        """Rebuild from :meth:`to_text`; ValueError when it is not a model of ``width`` columns."""
        import lightgbm

        try:
            booster = lightgbm.Booster(model_str=text)
        except lightgbm.basic.LightGBMError as exc:
            msg = f"not a LightGBM model: {str(exc)[:200]}"
            raise ValueError(msg) from exc
        if booster.num_feature() != width:
            msg = f"trees read {booster.num_feature()} columns, the model has {width}"
            raise ValueError(msg)
        return cls(booster, rows)


@dataclass(frozen=True)
class Refit:
    """New trees, and the stacker re-estimated from out-of-fold predictions (or None)."""

    trees: BoostedTrees
    stacker: tuple[FloatArray, FloatArray] | None = None  # posterior mean and covariance


def refit(
    x: FloatArray,
    y: NDArray[Any],
    z_linear: FloatArray,
    categorical: list[int],
    settings: TreeSettings,
) -> Refit:
    """Fit trees on the window, and re-estimate the stacker (safe in a background thread).

    The stacker must learn from predictions made on rows the models had not seen. The linear
    part's are kept with each row (made before it was learned); the trees' come from
    ``settings.folds`` fits, each on the window without one contiguous block, predicting that
    block. The stacker is then the posterior of a logistic regression of the labels on
    ``[1, logit_linear, logit_trees_out_of_fold]`` (prior: the linear part alone, variance 1).
    """
    trees = BoostedTrees.fit(x, y, categorical, settings)
    n = len(y)
    if settings.folds < 2:
        return Refit(trees)
    bounds = np.linspace(0, n, settings.folds + 1).astype(int)
    out_of_fold = np.zeros(n)
    for lo, hi in itertools.pairwise(bounds):
        train = np.ones(n, dtype=bool)
        train[lo:hi] = False
        kept = y[train]
        if min(int(kept.sum()), len(kept) - int(kept.sum())) < settings.min_class:
            return Refit(trees)
        fold = BoostedTrees.fit(x[train], kept, categorical, settings)
        out_of_fold[lo:hi] = fold.logit(x[lo:hi])
    f = np.column_stack([np.ones(n), z_linear, out_of_fold])
    return Refit(trees, _logistic_posterior(f, y.astype(np.float64)))


def _logistic_posterior(
    f: FloatArray, y: FloatArray, prior_variance: float = 1.0
) -> tuple[FloatArray, FloatArray] | None:
    """Laplace approximation: MAP weights by damped Newton steps (each halved until the
    penalised loss falls), covariance the inverse Hessian; None if either is not finite."""
    prior = np.array(Stacker.PRIOR_MEAN)
    precision = np.eye(f.shape[1]) / prior_variance

    def loss(w: FloatArray) -> float:
        z = np.clip(f @ w, -_LOGIT_CLIP, _LOGIT_CLIP)
        nll = float(np.sum(np.logaddexp(0.0, z) - y * z))
        return nll + 0.5 * float((w - prior) @ precision @ (w - prior))

    w = prior.copy()
    current = loss(w)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(f @ w, -_LOGIT_CLIP, _LOGIT_CLIP)))
        gradient = f.T @ (p - y) + precision @ (w - prior)
        hessian = (f * (p * (1.0 - p))[:, None]).T @ f + precision
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6 and loss(w - scale * step) > current:
            scale /= 2.0
        if scale <= 1e-6:
            break
        w = w - scale * step
        current = loss(w)
        if np.abs(scale * step).max() < 1e-8:
            break
    p = 1.0 / (1.0 + np.exp(-np.clip(f @ w, -_LOGIT_CLIP, _LOGIT_CLIP)))
    hessian = (f * (p * (1.0 - p))[:, None]).T @ f + precision
    if not (np.isfinite(w).all() and np.isfinite(hessian).all()):
        return None
    return w, np.asarray(np.linalg.inv(hessian), dtype=np.float64)


def _mean(node: dict[str, Any]) -> tuple[float, float]:
    """(sum of leaf values weighted by their training rows, rows) below ``node``."""
    if "leaf_value" in node:
        n = float(node.get("leaf_count", 0)) or 1.0
        return float(node["leaf_value"]) * n, n
    left = _mean(node["left_child"])
    right = _mean(node["right_child"])
    return left[0] + right[0], left[1] + right[1]


def _walk(node: dict[str, Any], table: FloatArray, values: FloatArray, path: FloatArray) -> None:
    if "leaf_value" in node:
        leaf = int(node.get("leaf_index", 0))
        table[leaf] = path
        values[leaf] = float(node["leaf_value"])
        return
    total, n = _mean(node)
    here = total / n
    for side in ("left_child", "right_child"):
        child_total, child_n = _mean(node[side])
        step = path.copy()
        step[int(node["split_feature"])] += child_total / child_n - here
        _walk(node[side], table, values, step)


def moderated_logit(m: Any, s2: Any) -> Any:
    """The logit of P(y=1) averaged over a Gaussian posterior of the logit (mean ``m``, variance
    ``s2``): the probit approximation of the logistic integral."""
    return np.asarray(m) / np.sqrt(1.0 + (math.pi / 8.0) * np.asarray(s2))


def sigmoid(z: Any) -> Any:
    """The logistic function, its argument clipped to +-35."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -_LOGIT_CLIP, _LOGIT_CLIP)))


class Stacker:
    """Bayesian logistic regression on ``[1, logit_linear, logit_trees]`` (prior: the linear
    model alone)."""

    PRIOR_MEAN: Final = (0.0, 1.0, 0.0)

    def __init__(self, prior_variance: float = 1.0) -> None:
        self.mean = np.array(self.PRIOR_MEAN)
        self.cov = np.eye(3) * prior_variance

    def logit_moments(self, f: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Posterior mean and variance of the blended logit for rows ``f`` (``n x 3``)."""
        return f @ self.mean, np.einsum("ij,jk,ik->i", f, self.cov, f)

    def predict(self, f: FloatArray) -> FloatArray:
        """P(y=1) for rows ``f``, averaged over the posterior (probit approximation)."""
        return np.asarray(sigmoid(moderated_logit(*self.logit_moments(f))), dtype=np.float64)

    def learn_one(self, f: FloatArray, y: bool) -> None:
        """One Laplace step on one outcome (``f`` made before the models learned it)."""
        m = float(f @ self.mean)
        p = 1.0 / (1.0 + math.exp(-max(min(m, _LOGIT_CLIP), -_LOGIT_CLIP)))
        h = max(p * (1.0 - p), 1e-6)
        pf = self.cov @ f
        self.cov -= np.outer(pf, pf) * (h / (1.0 + h * float(f @ pf)))
        self.mean += (self.cov @ f) * ((1.0 if y else 0.0) - p)

    def forget(self, factor: float) -> None:
        """Widen the posterior (after a drift): recent outcomes weigh ``factor`` times more."""
        self.cov *= factor
