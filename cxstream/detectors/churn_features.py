"""Churn features from a customer's row: column types and the online featuriser.

* :func:`infer_schema` reads which columns are numbers and which are categories off a table.
* :class:`Featurizer` turns a row into ``(feature indices, values)``: each numeric column gives a
  standardised value and a standardised signed ``log1p`` of it (running mean and variance, so
  nothing is fitted in advance), a missing numeric gives 0 and a ``<column>=<missing>``
  indicator; each categorical column is one-hot encoded, with ``<missing>`` for blanks, unseen
  categories growing the feature space, and rare ones beyond ``max_categories`` pooled as
  ``<other>``.

>>> f = Featurizer(Schema(numeric=("tenure",), categorical=("contract",)))
>>> f.learn_one({"tenure": 3, "contract": "monthly"})
>>> f.transform_one({"tenure": 3, "contract": "monthly"})
([0, 1, 2, 3], [1.0, 0.0, 0.0, 1.0])
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from cxstream.csvfile import LARGEST, MISSING_TOKENS

__all__ = [
    "MISSING",
    "MISSING_TOKENS",
    "OTHER",
    "Categories",
    "Featurizer",
    "InferredSchema",
    "Row",
    "Running",
    "Schema",
    "infer_schema",
    "parse_number",
    "parse_numbers",
    "read_categories",
]

MISSING: Final = "<missing>"
OTHER: Final = "<other>"

Row = Mapping[str, Any]
FloatArray = NDArray[np.float64]


def parse_number(value: Any) -> float | None:
    """A float from a cell, or None for blanks, missing markers, non-numbers and numbers beyond
    +-1e150 (:data:`~cxstream.csvfile.LARGEST`: a sentinel, not a measurement).

    >>> parse_number(" 3.5"), parse_number("NA"), parse_number(1.7976931348623157e308)
    (3.5, None, None)
    """
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:  # an int beyond any float
            return None
        return f if -LARGEST <= f <= LARGEST else None
    text = str(value).strip()
    if text.lower() in MISSING_TOKENS:
        return None
    try:
        f = float(text)
    except ValueError:
        return None
    return f if -LARGEST <= f <= LARGEST else None


_PLAIN: Final = frozenset({float, int, str, bool, type(None)})  # what numpy parses as float() does
# the missing markers as files usually spell them (each is a missing token once stripped)
_BLANK_CELLS: Final = frozenset(
    {"", " ", "na", "NA", "N/A", "n/a", "nan", "NaN", "NAN", "null", "NULL", "None", "none", "?"}
)
_WHOLE: Final = 32  # rows from which a column is read whole (fewer: cell by cell is quicker)


def parse_numbers(rows: Sequence[Row], columns: Sequence[str]) -> FloatArray:
    """:func:`parse_number` of each row's ``columns`` as an ``n x columns`` matrix (NaN where
    missing). A column of plain numbers, numeric text and the usual blanks is parsed by numpy in
    one call; one holding anything else (a word, an odd blank) cell by cell."""
    if len(rows) >= _WHOLE and columns:
        whole = _parse_whole(rows, columns)
        if whole is not None:
            return whole
    out = np.full((len(rows), len(columns)), np.nan)
    for j, col in enumerate(columns):
        cells = [row.get(col) for row in rows]
        parsed = _numpy_floats(cells) if len(cells) >= _WHOLE else None
        if parsed is None:
            out[:, j] = [np.nan if (v := parse_number(c)) is None else v for c in cells]
        else:
            out[:, j] = parsed
    return out


def _parse_whole(rows: Sequence[Row], columns: Sequence[str]) -> FloatArray | None:
    """Every column in one numpy call when each row holds each column and every cell is a plain
    number, numeric text or one of the usual blanks (most batches); None otherwise."""
    get = operator.itemgetter(*columns)
    try:
        table = list(map(get, rows))
    except (KeyError, TypeError):  # a row without one of the columns: column by column
        return None
    parsed = _numpy_floats(table if len(columns) == 1 else list(chain.from_iterable(table)))
    return None if parsed is None else parsed.reshape(len(rows), len(columns))


def _numpy_floats(cells: list[Any]) -> FloatArray | None:
    """The cells as floats in one numpy call (the usual blanks, non-finite values and numbers
    beyond +-1e150 as NaN) when each is a plain number, numeric text or one of the usual blanks;
    None when one is anything odder (a word, an odd blank, a list), to be read cell by cell."""
    if not set(map(type, cells)) <= _PLAIN:
        return None
    try:
        out = np.array([None if c in _BLANK_CELLS else c for c in cells], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if out.shape != (len(cells),):
        return None
    out[~(np.abs(out) <= LARGEST)] = np.nan  # also inf and NaN
    return out


@dataclass(frozen=True)
class Categories:
    """One categorical column of a batch, read once: its distinct categories, and for each row
    the position of its own in ``distinct``."""

    distinct: list[str]
    rows: NDArray[np.intp]


def read_categories(rows: Sequence[Row], columns: Sequence[str]) -> dict[str, Categories]:
    """Each of ``columns`` of the rows as :class:`Categories`; each distinct raw value is read
    once (1, 1.0 and True read differently)."""
    out: dict[str, Categories] = {}
    for col in columns:
        cells = [row.get(col) for row in rows]
        if len(cells) >= _WHOLE and set(map(type, cells)) == {str}:  # text, keyed by itself
            raws: list[Any] = list(dict.fromkeys(cells))
            pos = {c: i for i, c in enumerate(raws)}
            at = list(map(pos.__getitem__, cells))
        else:
            keyed: dict[tuple[type, Any], int] = {}
            raws = []
            at = []
            for cell in cells:
                try:
                    i = keyed.setdefault((cell.__class__, cell), len(raws))
                except TypeError:  # unhashable: read on its own
                    i = -1
                if i == len(raws) or i < 0:
                    raws.append(cell)
                    i = len(raws) - 1
                at.append(i)
        out[col] = Categories([_category(v) for v in raws], np.array(at, dtype=np.intp))
    return out


def _category(value: Any) -> str:
    if value is None:
        return MISSING
    text = str(value).strip()
    return MISSING if text.lower() in MISSING_TOKENS else text


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
    text_share: float = 0.05,
) -> InferredSchema:
    """Infer column types from the values (never from the label).

    A column is numeric when nearly all its non-blank values parse as numbers (all but
    ``text_share`` of them: the others, a word such as ``Unknown`` or a spreadsheet's ``#N/A``,
    are then read as missing) and it has more than two distinct numbers (0/1 flags are
    categories); otherwise categorical. A non-numeric column whose distinct values exceed both
    ``max_categories`` and ``id_share`` of the rows looks like an identifier and is skipped, as
    is a column with a single value, and one of whole numbers that rise with every row (a row
    number or a sequential id: it tells the file's order, not the customer's, and a model
    learning in file order sees each new row beyond every value it learned from).

    >>> rows = [{"calls": str(i % 7), "plan": "A" if i % 2 else "B"} for i in range(99)]
    >>> infer_schema([*rows, {"calls": "#N/A", "plan": "B"}]).schema
    Schema(numeric=('calls',), categorical=('plan',))
    >>> infer_schema([{"row": str(i + 1), **r} for i, r in enumerate(rows)]).skipped
    {'row': 'whole numbers rising with every row (a row number or a sequential id)'}
    """
    excluded = set(exclude)
    distinct: dict[str, set[str]] = {}
    numbers: dict[str, set[str]] = {}  # the distinct values that parse as numbers (up to 3)
    texts: dict[str, int] = {}  # non-blank values that do not
    filled: dict[str, int] = {}  # non-blank values
    last: dict[str, float | None] = {}  # the last whole number, while a column rises row by row
    n = 0
    order: list[str] = []
    for row in rows:
        n += 1
        for col, value in row.items():
            if col in excluded:
                continue
            if col not in distinct:
                distinct[col] = set()
                numbers[col] = set()
                texts[col] = filled[col] = 0
                last[col] = -math.inf if n == 1 else None
                order.append(col)
            cat = _category(value)
            if cat == MISSING:
                last[col] = None
                continue
            filled[col] += 1
            seen = distinct[col]
            if len(seen) <= max(max_categories, int(id_share * n)) + 1:
                seen.add(cat)
            number = parse_number(cat)
            if number is None:
                texts[col] += 1
                last[col] = None
            else:
                if len(numbers[col]) < 3:
                    numbers[col].add(cat)
                previous = last[col]
                rising = previous is not None and number > previous and number.is_integer()
                last[col] = number if rising else None
    numeric: list[str] = []
    categorical: list[str] = []
    skipped: dict[str, str] = {}
    for col in order:
        k = len(distinct[col])
        mostly_numbers = texts[col] <= text_share * filled[col]
        if k <= 1:
            skipped[col] = "a single value" if k == 1 else "always blank"
        elif last[col] is not None and n >= 3:
            skipped[col] = "whole numbers rising with every row (a row number or a sequential id)"
        elif mostly_numbers and len(numbers[col]) > 2:
            numeric.append(col)
        elif texts[col] and k > max_categories and k > id_share * n:
            skipped[col] = f"looks like an identifier ({k} distinct values)"
        else:
            categorical.append(col)
    return InferredSchema(Schema(tuple(numeric), tuple(categorical)), skipped)


@dataclass
class Running:
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
    stats: dict[str, Running] = field(default_factory=dict)
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

    def transform_many(
        self,
        rows: Sequence[Row],
        dim: int,
        numbers: FloatArray | None = None,
        categories: dict[str, Categories] | None = None,
    ) -> FloatArray:
        """The rows' features as a dense ``len(rows) x dim`` matrix, column by column.

        The same values as :meth:`transform_one` with ``grow=False`` (features past ``dim`` are
        dropped); working a column at a time keeps the per-row Python cost to a few lookups.
        ``numbers`` and ``categories`` are :func:`parse_numbers` and :func:`read_categories` of
        the rows when the caller has them already.
        """
        n = len(rows)
        x = np.zeros((n, dim))
        x[:, 0] = 1.0
        index = self.index
        if numbers is None:
            numbers = parse_numbers(rows, self.schema.numeric)
        self._standardise_into(x, numbers)
        few = categories is None and n < _WHOLE  # a row or a few: cell by cell
        if categories is None and not few:
            categories = read_categories(rows, self.schema.categorical)
        for col in self.schema.categorical:
            seen = self.counts.get(col, {})
            full = len(seen) >= self.max_categories
            prefix = f"{col}="
            other = index.get(prefix + OTHER, -1) if full else -1
            if few or categories is None:
                for r, row in enumerate(rows):
                    cat = _category(row.get(col))
                    i = index.get(prefix + cat, other if cat not in seen else -1)
                    if 0 <= i < dim:
                        x[r, i] = 1.0
                continue
            read = categories[col]
            slots = [index.get(prefix + c, other if c not in seen else -1) for c in read.distinct]
            cols = np.array(slots, dtype=np.intp)[read.rows]
            ok = (cols >= 0) & (cols < dim)
            x[np.flatnonzero(ok), cols[ok]] = 1.0
        return x

    def _standardise_into(self, x: FloatArray, numbers: FloatArray) -> None:
        """Write the numeric columns' features into ``x``: a missing flag where a number is
        missing, and where it is present the number and its signed log, each standardised by its
        running mean and deviation (features without two values seen yet stay zero)."""
        dim = x.shape[1]
        index = self.index
        k = len(self.schema.numeric)
        flags, flagged = [], []  # feature slot, column
        slots, sources, means, stds = [], [], [], []  # feature slot, column of [raw | log]
        for j, col in enumerate(self.schema.numeric):
            i = index.get(f"{col}={MISSING}")
            if i is not None and i < dim:
                flags.append(i)
                flagged.append(j)
            for at, key in ((j, col), (k + j, f"log({col})")):
                i = index.get(key)
                run = self.stats.get(key)
                if i is None or i >= dim or run is None or run.n < 2:
                    continue
                std = math.sqrt(run.m2 / (run.n - 1))
                if std > 1e-12:
                    slots.append(i)
                    sources.append(at)
                    means.append(run.mean)
                    stds.append(std)
        present = ~np.isnan(numbers)
        if flags:
            x[:, flags] = ~present[:, flagged]
        if slots:
            raw = np.where(present, numbers, 0.0)
            both = np.concatenate([raw, np.copysign(np.log1p(np.abs(raw)), raw)], axis=1)
            seen = present[:, np.array(sources) % k]  # [raw | log] column -> its number
            scaled = (both[:, sources] - np.array(means)) / np.array(stds)
            x[:, slots] = np.where(seen, scaled, 0.0)

    def learn_one(self, x: Row) -> None:
        """Update running means/variances and category counts with one row."""
        self.n += 1
        for col in self.schema.numeric:
            num = parse_number(x.get(col))
            if num is None:
                continue
            for key, v in ((col, num), (f"log({col})", _slog(num))):
                self.stats.setdefault(key, Running()).update(v)
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
