"""Tables as spreadsheets export them: which delimiter a file uses, and numbers as they are shown.

Used where a user hands cxstream a table: ``load-customers`` and ``eval churn``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DELIMITERS", "delimiter_of", "plain_number"]

DELIMITERS = (",", ";", "\t", "|")
"""Comma, or a spreadsheet export's semicolon, tab or bar (the first wins a tie)."""

_CURRENCY = "[$\u20ac\u00a3\u00a5]"
_MARKS = re.compile(r"[,$%\u20ac\u00a3\u00a5]")  # a cell without any is left as it is
_FORMATTED = {  # matched on the stripped cell, a single space at most around a sign
    comma: re.compile(
        rf"([-+]?)(?:{_CURRENCY} ?)?(\d{{1,3}}(?:{group}\d{{3}})+|\d+)({point}\d+)?"
        rf"(?: ?(?:%|{_CURRENCY}))?"
    )
    for comma, group, point in ((False, ",", r"\."), (True, r"\.", ","))
}


def delimiter_of(header_line: str) -> str:
    """The delimiter a header line uses most (a header without any is comma-separated).

    >>> delimiter_of("id;charge;plan"), delimiter_of("id,charge"), delimiter_of("id")
    (';', ',', ',')
    """
    return max(DELIMITERS, key=header_line.count)


def plain_number(cell: Any, decimal_comma: bool) -> Any:
    """A number written as a spreadsheet formats it (a sign, a currency, thousands grouped, a
    percent sign; with a decimal point, or a decimal comma where the comma is not the
    delimiter) as plain numeric text; any other cell as it is. A percentage keeps its scale
    (``12%`` is 12).

    >>> [plain_number(c, False) for c in ["1,234.50", "$1,234", "-12.5%", "1,2", "Fiber, DSL"]]
    ['1234.50', '1234', '-12.5', '1,2', 'Fiber, DSL']
    >>> [plain_number(c, True) for c in ["1,5", "1.234,56 \u20ac", "\u20ac 12", "1.234"]]
    ['1.5', '1234.56', '12', '1.234']
    """
    if not isinstance(cell, str) or not _MARKS.search(cell):
        return cell
    found = _FORMATTED[decimal_comma].fullmatch(cell.strip())
    if found is None:
        return cell
    sign, whole, fraction = found.groups()
    whole = whole.replace("." if decimal_comma else ",", "")
    return sign + whole + ("." + fraction[1:] if fraction else "")
