"""The tutors' Slack agent sees students' names and nothing else of their contact data (docs/security.md).

notify_tutors holds no access to the restricted dataset (tests/tf_model.check_authorized_views); it reads names
through the authorized view `student_names`, whose columns are checked here, and its SQL names no restricted
table. Each check is shown to fail on a planted defect.
"""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path

from progress_monitor.platform import warehouse
from progress_monitor.settings import Settings

SRC = Path(__file__).resolve().parents[2] / "src" / "progress_monitor"
NAMES_ONLY = {"user_id", "nome"}


def select_columns(sql: str) -> set[str]:
    """The output columns of a single `SELECT a, b FROM ...` (comments dropped); anything else is refused."""
    text = re.sub(r"--[^\n]*", "", sql).strip()
    m = re.fullmatch(r"(?is)select\s+(.+?)\s+from\s+`\$\{\w+\}`", text)
    if m is None:
        raise ValueError(f"not a plain projection: {text!r}")
    columns = {c.strip() for c in m.group(1).split(",")}
    if not all(re.fullmatch(r"\w+", c) for c in columns):
        raise ValueError(f"not plain column names: {sorted(columns)}")
    return columns


def restricted_placeholders(source: str) -> set[str]:
    """The restricted tables a module's string constants name as `${table}`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(re.findall(r"\$\{(\w+)\}", node.value)) & warehouse.RESTRICTED
    return found


def test_the_names_view_exposes_names_only() -> None:
    sql = resources.files("progress_monitor").joinpath("sql/student_names.sql").read_text(encoding="utf-8")
    assert select_columns(sql) == NAMES_ONLY
    assert warehouse.dataset_of(Settings(), "student_names") == Settings().bq_slack_dataset


def test_a_view_exposing_more_is_caught() -> None:
    for planted in (
        "SELECT user_id, nome, email FROM `${students}`",
        "SELECT * FROM `${students}`",
        "SELECT user_id, CONCAT(nome, celular) AS nome FROM `${students}`",
    ):
        try:
            columns = select_columns(planted)
        except ValueError:
            continue
        assert columns != NAMES_ONLY, planted


def test_the_slack_agent_names_no_restricted_table() -> None:
    for path in sorted((SRC / "tutors").glob("*.py")):
        assert restricted_placeholders(path.read_text(encoding="utf-8")) == set(), path.name
    planted = 'SQL = """SELECT nome, email FROM `${students}`"""'
    assert restricted_placeholders(planted) == {"students"}
