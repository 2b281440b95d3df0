"""Prequential evaluation of churn models on any tabular churn file (``cxstream eval churn``).

Each row is scored, then learned, in file order, in one pass: the test a streaming model faces in
production. Column types are inferred from the values (:func:`~cxstream.detectors.churn.infer_schema`),
the id column is skipped, blanks are missing values. Models compared (``--model``): the flow's
model (``blend``: Bayesian logistic regression and gradient-boosted trees refit from a window of
labelled rows, blended by an online stacker), its logistic part alone (``bayes``), its trees
alone (``trees``), a River logistic-regression pipeline (``river-lr``), a River adaptive random
forest (``river-arf``), and the average of ``bayes`` and the two River models (``ensemble``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from cxstream.csvfile import decode_table, delimiter_of, plain_number
from cxstream.detectors.churn import ChurnModel, Schema, infer_schema, parse_number
from cxstream.detectors.churn_trees import sigmoid
from cxstream.errors import DataError
from cxstream.steps.churn_risk import churn_model

if TYPE_CHECKING:
    from cxstream.settings import ChurnSettings

__all__ = [
    "MODELS",
    "ChurnReport",
    "average_precision",
    "log_loss",
    "reliability",
    "roc_auc",
    "run_churn",
]

_log = logging.getLogger(__name__)
_POSITIVE_GUESSES = ("yes", "true", "1", "churn", "churned", "y", "t")


class Classifier(Protocol):
    """What the evaluation needs: River's binary classifier interface."""

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]: ...
    def learn_one(self, x: dict[str, Any], y: bool) -> None: ...


def roc_auc(labels: Sequence[bool] | NDArray[Any], scores: Sequence[float] | NDArray[Any]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class.

    >>> roc_auc([False, True, False, True], [0.1, 0.9, 0.4, 0.4])
    0.875
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(
    labels: Sequence[bool] | NDArray[Any], scores: Sequence[float] | NDArray[Any]
) -> float:
    """Area under the precision-recall curve as average precision (step-wise, no interpolation).

    >>> round(average_precision([True, False, True], [0.9, 0.8, 0.7]), 4)
    0.8333
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    y_sorted = y[order]
    s_sorted = s[order]
    tp = np.cumsum(y_sorted)
    # evaluate only at the last position of each run of tied scores
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp_at = tp[last]
    n_at = (np.arange(len(s)) + 1)[last]
    precision = tp_at / n_at
    recall_gain = np.diff(np.r_[0, tp_at]) / n_pos
    return float((precision * recall_gain).sum())


def log_loss(labels: Sequence[bool] | NDArray[Any], probs: Sequence[float] | NDArray[Any]) -> float:
    """Mean negative log-likelihood, probabilities clipped to [1e-15, 1 - 1e-15].

    >>> round(log_loss([True, False], [0.8, 0.2]), 4)
    0.2231
    """
    y = np.asarray(labels, dtype=bool)
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-15, 1 - 1e-15)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


class _RiverModel:
    """A River classifier fed parsed numbers and category strings (missing values left out)."""

    def __init__(self, schema: Schema, model: Any) -> None:
        self.schema = schema
        self.model = model

    def _x(self, row: dict[str, Any]) -> dict[str, Any]:
        x: dict[str, Any] = {}
        for col in self.schema.numeric:
            v = parse_number(row.get(col))
            if v is not None:
                x[col] = v
        for col in self.schema.categorical:
            v = row.get(col)
            x[col] = "<missing>" if v is None or str(v).strip() == "" else str(v).strip()
        return x

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        proba = self.model.predict_proba_one(self._x(x))
        p = float(proba.get(True, 0.0)) if proba else 0.5
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: dict[str, Any], y: bool) -> None:
        self.model.learn_one(self._x(x), y)


def _river_lr(schema: Schema) -> Classifier:
    from river import compose, linear_model, optim, preprocessing

    num_cols, cat_cols = schema.numeric, schema.categorical
    # FuncTransformer rather than Select: a missing number is left out, not a KeyError
    numeric = (
        compose.FuncTransformer(lambda x: {k: x[k] for k in num_cols if k in x})
        | preprocessing.StandardScaler()
    )
    categorical = (
        compose.FuncTransformer(lambda x: {k: x[k] for k in cat_cols if k in x})
        | preprocessing.OneHotEncoder()
    )
    features = numeric + categorical if schema.numeric and schema.categorical else None
    if features is None:
        features = numeric if schema.numeric else categorical
    model = features | linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    return _RiverModel(schema, model)


def _river_arf(schema: Schema) -> Classifier:
    from river import forest

    return _RiverModel(schema, forest.ARFClassifier(n_models=10, seed=42))


class _Average:
    """The mean probability of several models (each learns every row)."""

    def __init__(self, models: Sequence[Classifier]) -> None:
        self.models = list(models)

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        p = sum(m.predict_proba_one(x)[True] for m in self.models) / len(self.models)
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: dict[str, Any], y: bool) -> None:
        for m in self.models:
            m.learn_one(x, y)


class _TreesOnly:
    """The blend's trees alone: the flow's model with the stacker's weights fixed on the trees."""

    def __init__(self, schema: Schema) -> None:
        self.model = ChurnModel(schema)

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        trees = self.model.trees
        if trees is None:
            return {False: 0.5, True: 0.5}
        p = float(sigmoid(trees.logit(self.model.encoder.encode_many([x]))[0]))
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: dict[str, Any], y: bool) -> None:
        self.model.learn_one(x, y)


MODELS: dict[str, Callable[[Schema], Classifier]] = {
    "blend": lambda schema: ChurnModel(schema),
    "bayes": lambda schema: ChurnModel(schema, trees=None),
    "trees": _TreesOnly,
    "river-lr": _river_lr,
    "river-arf": _river_arf,
    "ensemble": lambda schema: _Average(
        [ChurnModel(schema, trees=None), _river_lr(schema), _river_arf(schema)]
    ),
}
"""Model name -> factory; ``blend`` is the one the flow uses."""


@dataclass(frozen=True)
class ChurnReport:
    """Prequential quality and speed of one model on one file."""

    rows: int
    positives: int
    model: str
    schema: Schema
    skipped: dict[str, str]
    roc_auc: float
    pr_auc: float
    log_loss: float
    accuracy: float
    rows_per_s: float
    score_per_s: float
    roc_auc_last_fifth: float = math.nan  # the last 20 % of rows: what the model does once warm
    reliability: tuple[dict[str, Any], ...] = ()

    def summary(self) -> dict[str, Any]:
        """The JSON keys of ``cxstream eval churn --json``."""
        return {
            "rows": self.rows,
            # null where the rows scored hold one class only (JSON has no NaN)
            "roc_auc": _rounded(self.roc_auc),
            "roc_auc_last_fifth": _rounded(self.roc_auc_last_fifth),
            "pr_auc": _rounded(self.pr_auc),
            "reliability": list(self.reliability),
            "log_loss": round(self.log_loss, 4),
            "accuracy": round(self.accuracy, 4),
            "rows_per_s": round(self.rows_per_s),
            "score_per_s": round(self.score_per_s),
            "positives": self.positives,
            "model": self.model,
            "numeric": list(self.schema.numeric),
            "categorical": list(self.schema.categorical),
            "skipped": self.skipped,
        }


def _rounded(x: float) -> float | None:
    """``x`` to 4 places, or None when it is not a number (an AUC of one class)."""
    return round(x, 4) if math.isfinite(x) else None


def _label_word(value: str) -> str:
    """A label value as it is guessed: lower case, without a closing full stop ("True." as
    some exports write it), and a number as its integer when it is one ("1.0" is "1")."""
    word = value.strip().lower().rstrip(".")
    try:
        number = float(word)
    except ValueError:
        return word
    return str(int(number)) if number.is_integer() else word


def _as_written(wanted: str, present: Collection[str], key: Callable[[str], str]) -> str | None:
    """``wanted`` as it is written in ``present``: itself, else the one value that reads the
    same by ``key`` (None when none or several do)."""
    if wanted in present:
        return wanted
    alike = [v for v in present if key(v) == key(wanted)]
    return alike[0] if len(alike) == 1 else None


def _positive_value(values: set[str], positive: str | None, label: str) -> str:
    if positive is not None:
        # "true" for "True.", "1" for "1.0": the same word as the label guesser reads it
        found = _as_written(positive, values, _label_word)
        if found is not None:
            return found
        shown = ", ".join(sorted(values)[:10])
        msg = f"--positive {positive!r} never occurs in column {label!r} (values: {shown})"
        raise DataError(msg)
    if len(values) != 2:
        shown = ", ".join(sorted(values)[:10])
        msg = (
            f"label column {label!r} has {len(values)} distinct values ({shown}); "
            "a binary label is needed (use --positive to name the churn value)"
        )
        raise DataError(msg)
    words = {_label_word(v): v for v in values}
    for guess in _POSITIVE_GUESSES:
        if guess in words and (guess != "1" or "0" in words):  # 1 means churn only against 0
            return words[guess]
    msg = f"cannot tell which value of {label!r} means churn ({', '.join(sorted(values))}): use --positive"
    raise DataError(msg)


def _column(name: str, header: Sequence[str], flag: str, path: Path) -> str:
    """The header's column ``name``: as written, else the one column that differs from it only
    in case or surrounding spaces ("churn" for "Churn", "Churn" for " Churn")."""
    found = _as_written(name, header, lambda h: h.strip().lower())
    if found is not None:
        return found
    msg = f"{flag} {name!r} is not a column of {path} (columns: {', '.join(header)})"
    raise DataError(msg)


def _unique(header: list[str]) -> list[str]:
    """The header with a name written again renamed by its field (``a``, ``a (field 3)``), so
    that every column is read.

    >>> _unique(["a", "b", "a", ""])
    ['a', 'b', 'a (field 3)', '']
    """
    seen: set[str] = set()
    out = []
    for i, name in enumerate(header, 1):
        if name in seen:
            renamed = f"{name} (field {i})".strip()
            _log.warning("column %r appears again in field %d: read as %r", name, i, renamed)
            name = renamed
        seen.add(name)
        out.append(name)
    return out


def read_labelled(
    path: Path, label: str, positive: str | None, id_column: str | Sequence[str] | None
) -> tuple[list[dict[str, str]], list[bool], str]:
    """Rows (label and identifier columns removed), labels, and the positive value used."""
    text = decode_table(path.read_bytes(), str(path))
    end = text.find("\n")
    header_line = text if end < 0 else text[:end]  # not a copy of the whole rest of the file
    # the delimiter the header uses most: comma, or a spreadsheet export's semicolon, tab or bar
    delimiter = delimiter_of(header_line)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = _unique(list(reader.fieldnames or []))
    reader.fieldnames = header  # a name written twice would otherwise keep only its last column
    label = _column(label, header, "--label", path)
    given = [id_column] if isinstance(id_column, str) else list(id_column or ())
    left_out = {label, *(_column(name, header, "--id", path) for name in given)}
    # where the comma is free (another delimiter), it may be the decimal mark ("1,5")
    decimal_comma = delimiter != ","
    kept: list[dict[str, str]] = []
    values: list[str] = []
    blank = short = long = 0
    for row in reader:
        long += None in row  # cells beyond the header's, under the key None
        short += None in row.values()  # the header's columns a row does not reach
        value = (plain_number(row.get(label), decimal_comma) or "").strip()
        if not value:  # an unlabelled row cannot be evaluated; counted, not hidden
            blank += 1
            continue
        values.append(value)
        kept.append(
            {
                k: plain_number(v, decimal_comma)
                for k, v in row.items()
                if k not in left_out and k is not None
            }
        )
    if not kept:
        msg = f"no labelled rows in {path}"
        raise DataError(msg)
    written = set(values)
    words = {_label_word(v) for v in written}
    if len(written) > 2 and len(words) == 2:  # "Yes", "yes " and "YES": one value, typed apart
        _log.warning(
            "label %r is written %d ways (%s): read as %s",
            label, len(written), ", ".join(sorted(written)[:10]), " and ".join(sorted(words)),
        )  # fmt: skip
        values = [_label_word(v) for v in values]
    pos = _positive_value(set(values), positive, label)
    if blank:
        _log.warning("%d %s without a label skipped", blank, "row" if blank == 1 else "rows")
    if short:
        has = "row has" if short == 1 else "rows have"
        _log.warning("%d %s fewer cells than the header: the missing read as blank", short, has)
    if long:
        has = "row has" if long == 1 else "rows have"
        _log.warning("%d %s more cells than the header: the extra not read", long, has)
    return kept, [v == pos for v in values], pos


def run_churn(
    path: Path,
    label: str,
    *,
    positive: str | None = None,
    id_column: str | Sequence[str] | None = None,
    model: str = "blend",
    predictions: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    churn: ChurnSettings | None = None,
) -> ChurnReport:
    """Score then learn every row in file order; return prequential metrics. With ``churn``
    (the ``churn`` section of the settings), ``blend`` and ``bayes`` are built as the flow
    builds its model from it."""
    rows, labels, _ = read_labelled(path, label, positive, id_column)
    inferred = infer_schema(rows)
    if not inferred.schema.columns:
        msg = f"no usable feature columns in {path} (skipped: {inferred.skipped})"
        raise DataError(msg)
    if churn is not None and model in ("blend", "bayes"):
        clf: Classifier = churn_model(inferred.schema, churn, trees=model == "blend")
    else:
        clf = MODELS[model](inferred.schema)
    probs = np.empty(len(rows))
    start = time.perf_counter()
    for i, (row, y) in enumerate(zip(rows, labels, strict=True)):
        probs[i] = clf.predict_proba_one(row)[True]
        clf.learn_one(row, y)
        if on_progress is not None and i % 500 == 0:
            on_progress(i, len(rows))
    elapsed = time.perf_counter() - start
    score_per_s = _score_speed(clf, rows, inferred.schema.numeric)
    y_arr = np.asarray(labels, dtype=bool)
    if predictions is not None:
        with predictions.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "label", "probability"])
            for i, (y, p) in enumerate(zip(labels, probs, strict=True)):
                writer.writerow([i, int(y), f"{p:.6f}"])
    return ChurnReport(
        rows=len(rows),
        positives=int(y_arr.sum()),
        model=model,
        schema=inferred.schema,
        skipped=inferred.skipped,
        roc_auc=roc_auc(y_arr, probs),
        roc_auc_last_fifth=roc_auc(y_arr[len(rows) * 4 // 5 :], probs[len(rows) * 4 // 5 :]),
        pr_auc=average_precision(y_arr, probs),
        log_loss=log_loss(y_arr, probs),
        accuracy=float(np.mean((probs >= 0.5) == y_arr)),
        rows_per_s=len(rows) / elapsed if elapsed > 0 else math.inf,
        score_per_s=score_per_s,
        reliability=reliability(y_arr, probs),
    )


def reliability(
    labels: Sequence[bool] | NDArray[Any], probs: Sequence[float] | NDArray[Any], bins: int = 10
) -> tuple[dict[str, Any], ...]:
    """Mean predicted probability and observed churn rate in each of ``bins`` equal-width bins.

    >>> reliability([True, False, True, False], [0.9, 0.1, 0.8, 0.3], bins=2)[1]
    {'low': 0.5, 'high': 1.0, 'rows': 2, 'predicted': 0.85, 'observed': 1.0}
    """
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        out.append(
            {
                "low": round(b / bins, 2),
                "high": round((b + 1) / bins, 2),
                "rows": n,
                "predicted": round(float(p[mask].mean()), 4) if n else round((b + 0.5) / bins, 4),
                "observed": round(float(y[mask].mean()), 4) if n else None,
            }
        )
    return tuple(out)


_SPEED_ROWS = 20_000  # rows the score path is timed on, passed over until a second has gone


def _typed(rows: Sequence[dict[str, Any]], numeric: Sequence[str]) -> list[dict[str, Any]]:
    """The rows as the flow hands them to the model: its numeric columns as numbers (None where
    missing), as a customer's profile holds them, rather than the table's text."""
    return [{**row, **{col: parse_number(row.get(col)) for col in numeric}} for row in rows]


def _score_speed(
    clf: Classifier,
    rows: Sequence[dict[str, Any]],
    numeric: Sequence[str],
    batch: int = 256,
    min_s: float = 1.0,
) -> float:
    """Predictions per second of the scoring path the flow uses, on the trained model.

    For ``blend`` and ``bayes`` that is :meth:`ChurnModel.score_many` on batches, with
    explanations; ``trees`` and the River models score one row at a time (their
    ``predict_proba_one``). One batch first builds what a model builds once (the trees'
    per-leaf tables, made once per refit or reload); then passes over the first
    ``_SPEED_ROWS`` rows, their ``numeric`` columns already numbers (:func:`_typed`), are timed
    until ``min_s`` has passed, so a small file is measured as long as a large one.
    """
    sample = _typed(rows[:_SPEED_ROWS], numeric)
    if not sample:
        return math.inf

    def one_pass() -> None:
        if isinstance(clf, ChurnModel):
            for i in range(0, len(sample), batch):
                clf.score_many(sample[i : i + batch], top=5)
        else:
            for row in sample:
                clf.predict_proba_one(row)

    if isinstance(clf, ChurnModel):
        clf.score_many(sample[:batch], top=5)
    scored = 0
    start = time.perf_counter()
    while True:
        one_pass()
        scored += len(sample)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return scored / elapsed
