"""CSV exports: cells a spreadsheet would run as formulas are neutralised, numbers are not."""

from __future__ import annotations

import csv
import io

import pytest

from services.api.exports import BOM, INSIGHT_COLUMNS, encode_rows, header, neutralise


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\r=1", "'\r=1"),
        ("Great sound", "Great sound"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_formula_cells_get_an_apostrophe(cell: str, safe: str) -> None:
    assert neutralise(cell) == safe


def test_rows_quote_text_and_leave_numbers_alone() -> None:
    raw = encode_rows([("=cmd|' /C calc'!A0", -0.5, 3, None, 'say "hi",\nbye')])
    (row,) = list(csv.reader(io.StringIO(raw.decode())))
    assert row == ["'=cmd|' /C calc'!A0", "-0.5", "3", "", 'say "hi",\nbye']
    assert raw.endswith(b"\r\n")


def test_header_with_and_without_a_byte_order_mark() -> None:
    assert header(INSIGHT_COLUMNS, True).startswith(BOM.encode())
    plain = header(INSIGHT_COLUMNS, False).decode()
    assert plain.split("\r\n")[0].split(",")[:3] == ["job_id", "review_id", "internal_review_id"]
