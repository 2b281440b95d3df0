"""Tables as spreadsheets export them: which delimiter a file uses, numbers as they are shown,
and how a cell says it holds nothing.

Used where a user hands cxstream a table: ``load-customers``, ``eval churn`` and ``eval nab``.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any, Final

from cxstream.errors import DataError

__all__ = [
    "DELIMITERS",
    "LARGEST",
    "MISSING_TOKENS",
    "decode_table",
    "delimiter_of",
    "file_encoding",
    "plain_number",
]

DELIMITERS = (",", ";", "\t", "|")
"""Comma, or a spreadsheet export's semicolon, tab or bar (the first wins a tie)."""

MISSING_TOKENS: Final = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
"""How a table writes a value not measured, once stripped and in lower case."""

LARGEST: Final = 1e150
"""Beyond +-LARGEST a number is read as missing: no measurement is that large (the largest
float, which some systems write for "no value", is), and sums of squares of such numbers
overflow."""

_CURRENCY = "[$\u20ac\u00a3\u00a5]"
_MARKS = re.compile(r"[,$%\u20ac\u00a3\u00a5]")  # a cell without any is left as it is
_FORMATTED = {  # matched on the stripped cell, a single space at most around a sign
    comma: re.compile(
        rf"([-+]?)(?:{_CURRENCY} ?)?(\d{{1,3}}(?:{group}\d{{3}})+|\d+)({point}\d+)?"
        rf"(?: ?(?:%|{_CURRENCY}))?"
    )
    for comma, group, point in ((False, ",", r"\."), (True, r"\.", ","))
}


_SAMPLE = 65_536  # bytes read to tell a workbook or a UTF-16 file
_WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # zip (xlsx, ods) and OLE2 (xls) files


def _is_utf16(head: bytes, name: str) -> bool:
    """Whether a table whose first bytes are ``head`` is UTF-16 (its byte-order mark: a
    spreadsheet's "Unicode text"); False for other text, whose encoding the caller tells by
    reading it; :class:`DataError` naming ``name`` for a workbook or another binary file."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    if head.startswith(_WORKBOOKS) or b"\x00" in head:
        msg = f"{name} is not a text table (a spreadsheet workbook?): save it as CSV"
        raise DataError(msg)
    return False


def file_encoding(path: Path) -> str:
    """The encoding of a table on disk: UTF-16 when it starts with that byte-order mark, UTF-8
    (with or without a mark) when the whole file reads as UTF-8 (checked in 1 MB pieces,
    without holding the file: a Windows-1252 export whose first accented name comes late is
    still Windows-1252), else Windows-1252 (the usual encoding of an export that is not
    UTF-8). :class:`DataError` for a workbook or another binary file."""
    with path.open("rb") as fh:
        head = fh.read(_SAMPLE)
        if _is_utf16(head, str(path)):
            return "utf-16"
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            decoder.decode(head)
            while chunk := fh.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8-sig"


def decode_table(data: bytes, name: str) -> str:
    """A whole table's text, in the encoding :func:`file_encoding` would find (a byte the
    encoding does not define is replaced).

    >>> decode_table("é;1".encode(), "t.csv"), decode_table("é;1".encode("cp1252"), "t.csv")
    ('é;1', 'é;1')
    >>> decode_table(b"PK\x03\x04...", "book.xlsx")
    Traceback (most recent call last):
    ...
    cxstream.errors.DataError: book.xlsx is not a text table (a spreadsheet workbook?): save it as CSV
    """
    if _is_utf16(data[:_SAMPLE], name):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


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
