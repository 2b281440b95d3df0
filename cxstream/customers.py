"""Read customer profiles from CSV files, through a small documented column mapping.

Without a mapping the CSV must use our field names (what ``cxstream simulate`` writes), with consent
as ``consent_<channel>`` columns. With a mapping (YAML, see ``config/mappings/telco_ibm.yaml``) any
file can be loaded: columns are renamed, vocabularies translated, missing fields derived or defaulted.
A row is loaded whole or rejected whole: rows that do not validate are reported with their line
number, the columns at fault and why, never dropped silently or half-loaded. Consent is granted
only by an explicit value in the file; a missing value means not granted.

>>> import io
>>> rows = read_customers(io.StringIO("subscriber_id,monthly_charge,consent_sms\\ns1,80,granted\\n"))
>>> customer, = rows.customers
>>> customer.monthly_charge, customer.consent
(80.0, {<Channel.SMS: 'sms'>: <ConsentStatus.GRANTED: 'granted'>})
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cxstream import yamlfile
from cxstream.csvfile import delimiter_of, plain_number
from cxstream.errors import ConfigError
from cxstream.events import Channel, CustomerContext, ValueTier
from cxstream.settings import format_validation_error

__all__ = ["CsvMapping", "ReadResult", "customers_to_csv", "load_mapping", "read_customers"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Derived(BaseModel):
    """A field computed from one CSV column, optionally through a value map."""

    model_config = _STRICT

    source: str = Field(alias="from")
    map: dict[str, Any] | None = None


class TierRule(BaseModel):
    """Value tier from a numeric field: the first tier whose lower bound the value reaches."""

    model_config = _STRICT

    field: str
    bounds: dict[ValueTier, float]


class CsvMapping(BaseModel):
    """How one CSV layout maps onto :class:`~cxstream.events.CustomerContext`.

    Consent comes only from the file: ``consent`` names, per channel, the column that holds it
    (its values translated through ``values.consent`` if given). A default never grants it.
    """

    model_config = _STRICT

    columns: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[str, Any]] = Field(default_factory=dict)
    derived: dict[str, Derived] = Field(default_factory=dict)
    value_tier: TierRule | None = None
    consent: dict[Channel, str] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)

    def check_fields(self, source: str) -> None:
        """Reject target fields that :class:`CustomerContext` does not have, and consent from
        anywhere but the file's own columns."""
        known = set(CustomerContext.model_fields)
        for section in ("columns", "values", "derived", "defaults"):
            for name in getattr(self, section):
                if name not in known:
                    msg = (
                        f"{source}: {section}.{name}: not a customer field (known: {sorted(known)})"
                    )
                    raise ConfigError(msg)
        for section in ("columns", "derived", "defaults"):
            for name in _CONSENT_FIELDS & set(getattr(self, section)):
                msg = (
                    f"{source}: {section}.{name}: consent is read only from the file's own "
                    "columns (the mapping's consent section), never granted by a mapping"
                )
                raise ConfigError(msg)

    def column_of(self, name: str) -> str:
        """The CSV column a customer field is read from (for error messages)."""
        if name in self.columns:
            return self.columns[name]
        if name in self.derived:
            return self.derived[name].source
        if name == "value_tier" and self.value_tier is not None:
            return self.column_of(self.value_tier.field)
        return name

    def sources(self) -> set[str]:
        """Every CSV column the mapping reads."""
        return {
            *self.columns.values(),
            *(rule.source for rule in self.derived.values()),
            *self.consent.values(),
        }

    def apply(self, row: dict[str, str]) -> dict[str, Any]:
        """One CSV row as CustomerContext input (blank cells are missing)."""
        record: dict[str, Any] = dict(self.defaults)
        for ours, theirs in self.columns.items():
            value = (row.get(theirs) or "").strip()
            if value:
                record[ours] = self.values.get(ours, {}).get(value, value)
        for ours, rule in self.derived.items():
            value = (row.get(rule.source) or "").strip()
            if value:
                record[ours] = rule.map.get(value, None) if rule.map is not None else value
                if record[ours] is None:
                    del record[ours]
        consent: dict[str, Any] = {}
        for channel, column in self.consent.items():
            value = (row.get(column) or "").strip()
            if value:
                consent[channel.value] = self.values.get("consent", {}).get(value, value)
        if consent:
            record["consent"] = consent
        if self.value_tier is not None and self.value_tier.field in record:
            try:
                amount = float(record[self.value_tier.field])
            except (TypeError, ValueError):
                return record  # the field's own validation names the column
            for tier, bound in sorted(self.value_tier.bounds.items(), key=lambda kv: -kv[1]):
                if amount >= bound:
                    record["value_tier"] = tier
                    break
        return record


_CONSENT_FIELDS = {"consent", "consent_updated"}


def load_mapping(path: str | Path) -> CsvMapping:
    """Read and validate a mapping file; errors name the file and the key."""
    try:
        data = yamlfile.load(Path(path).read_text(encoding="utf-8"), path) or {}
    except (OSError, yaml.YAMLError) as exc:
        msg = f"cannot read mapping {path}: {exc}"
        raise ConfigError(msg) from exc
    try:
        mapping = CsvMapping.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc
    mapping.check_fields(str(path))
    return mapping


def _canonical(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    consent: dict[str, str] = {}
    for key, value in row.items():
        value = (value or "").strip()
        if not value or key is None:
            continue
        if key.startswith("consent_") and key != "consent_updated":
            consent[key.removeprefix("consent_")] = value
        else:
            record[key] = value
    if consent:
        record["consent"] = consent
    return record


@dataclass
class ReadResult:
    """Valid profiles, and the rows that were rejected with why."""

    customers: list[CustomerContext] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


_DECIMAL_FIELDS = frozenset(
    name for name, info in CustomerContext.model_fields.items() if info.annotation is float
)


def iter_customers(
    stream: TextIO, mapping: CsvMapping | None = None
) -> Iterator[CustomerContext | tuple[int, str]]:
    """Yield a profile per valid row, or ``(line_number, reason)`` per invalid one.

    A row is loaded whole or not at all: a row with fewer or more fields than the header, an
    unterminated quote, or any field that does not validate rejects the row, with every error
    of the row and the CSV column each comes from. A header that names a column it reads twice
    loads nothing: which of the two holds a customer's value (their consent, say) is unknown.
    A spreadsheet's semicolon, tab or bar separated export reads as its comma-separated twin,
    and a number as a spreadsheet shows it (``1,234.50``; ``29,85`` where the comma is free).
    """
    first = stream.readline()
    delimiter = delimiter_of(first)
    reader = csv.reader(chain([first], stream), delimiter=delimiter, strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, f"malformed CSV header: {exc}"
        return
    if mapping is not None:
        read = mapping.sources()
    else:  # the canonical layout: the profile's fields and consent_<channel>; others are ignored
        read = {h for h in header if h in CustomerContext.model_fields or h.startswith("consent_")}
    twice = [name for name in dict.fromkeys(header) if header.count(name) > 1 and name in read]
    if twice:
        where = "; ".join(
            f"{name!r} in fields {', '.join(str(i) for i, h in enumerate(header, 1) if h == name)}"
            for name in twice
        )
        yield 1, f"the header names a column more than once ({where}): nothing is loaded"
        return
    end = reader.line_num
    while True:
        line = end + 1  # where this row starts (a quoted field may span lines)
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. an unterminated quote: nothing of it is loaded
            yield line, f"malformed CSV: {exc}"
            return  # the reader cannot find the next row's start after this
        end = reader.line_num
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            yield line, f"row has {len(row)} fields, the header {len(header)}"
            continue
        cells = dict(zip(header, row, strict=True))
        try:
            record = mapping.apply(cells) if mapping is not None else _canonical(cells)
            for name in _DECIMAL_FIELDS & record.keys():  # "1,234.50", or "29,85" where free
                record[name] = plain_number(record[name], decimal_comma=delimiter != ",")
            yield CustomerContext.model_validate(record)
        except ValidationError as exc:
            yield line, _reasons(exc, mapping)


def _reasons(exc: ValidationError, mapping: CsvMapping | None) -> str:
    """Every error of a row, each with the CSV column it comes from."""
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if not loc:
            out.append(err["msg"])
            continue
        ours = loc[0]
        if ours == "consent" and len(loc) > 1:
            column = f"consent_{loc[1]}"
            if mapping is not None:
                column = next((c for ch, c in mapping.consent.items() if ch == loc[1]), column)
        else:
            column = mapping.column_of(ours) if mapping is not None else ours
        shown = f"column {column!r}" + (f" ({ours})" if column != ours else "")
        out.append(f"{shown}: {err['msg']}")
    return "; ".join(out)


def read_customers(stream: TextIO, mapping: CsvMapping | None = None) -> ReadResult:
    """Read every row of a CSV stream."""
    result = ReadResult()
    for item in iter_customers(stream, mapping):
        if isinstance(item, CustomerContext):
            result.customers.append(item)
        else:
            result.rejected.append(item)
    return result


def customers_to_csv(customers: Iterable[CustomerContext], stream: TextIO) -> int:
    """Write profiles in the canonical layout that :func:`read_customers` reads back."""
    channels = [c.value for c in Channel]
    fields = [f for f in CustomerContext.model_fields if f != "consent"]
    writer = csv.DictWriter(stream, fieldnames=fields + [f"consent_{c}" for c in channels])
    writer.writeheader()
    count = 0
    for customer in customers:
        row = customer.model_dump(mode="json", exclude={"consent"})
        for channel, status in customer.consent.items():
            row[f"consent_{channel.value}"] = status.value
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        count += 1
    return count
