"""`warehouse.render`: one placeholder form, `${name}`, for every table and view in every SQL text (the modules'
strings and the `sql/` files); an unknown name, a value shadowing a table and any other `$` raise.

Pure: no BigQuery, no network. The scan over the modules' string constants catches a mistyped table name
before any query runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progress_monitor.pipeline import reporting
from progress_monitor.platform import warehouse
from progress_monitor.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = ROOT / "src" / "progress_monitor" / "sql"
# The Python code whose strings are SQL run through warehouse.render: the package and the local tooling.
SCANNED = (ROOT / "src" / "progress_monitor", ROOT / "src" / "devstack")
TERRAFORM_BIGQUERY = ROOT / "infra" / "terraform" / "bigquery.tf"

# The only `${name}` that are not tables or views, each with the caller that passes it in sql_vars.
PYTHON_VALUES = frozenset(
    {
        "staging",  # loader: the load job's staging table (a per-shard id, not a registered table)
        "call_first",  # reporting, tutors: the call-order ORDER BY terms (reporting.call_first)
        "target",  # reporting: the report table or view being (re)created
        "body",  # reporting: its rendered SELECT (sql_text)
        "clustering",  # reporting: its clustering columns
        "scratch",  # privacy_tables: the erasure's one-row scratch table holding the pseudonym
    }
)
# ... and in the sql/ files, all passed by reporting.sql_text.
SQL_FILE_VALUES = frozenset(
    {
        "status_case",  # sql/status_case.sql, rendered
        "timezone",
        "ahead_gap",
        "behind_gap",
        "risk_gap",
        "inactive_days",
        "grace_days",
        "neutral_nome",  # reporting.spreadsheet_safe of a contact column
        "neutral_email",
        "neutral_celular",
    }
)

PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")  # anything braced, so `${ runs }` is reported too
QUOTED_ID = re.compile(r"`([^`]*)`")
OTHER = Settings(gcp_project="acme-edu-prod", bq_dataset="prod_progress", bq_restricted_dataset="prod_restricted")


def report_files() -> list[str]:
    return sorted(p.stem for p in SQL_DIR.glob("*.sql") if p.stem != "status_case")


# --- the known names ------------------------------------------------------------------------------------------


def test_known_names_are_the_tables_and_the_reports() -> None:
    assert set(warehouse.TABLES) | set(warehouse.REPORTS) == warehouse.NAMES
    assert len(warehouse.NAMES) == len(warehouse.TABLES) + len(warehouse.REPORTS)
    assert warehouse.RESTRICTED <= warehouse.NAMES


def test_reporting_builds_exactly_the_known_reports_each_from_its_file() -> None:
    built = [*reporting.MATERIALISED, *reporting.VIEWS, *reporting.DEPLOYED_VIEWS]
    assert len(built) == len(set(built))
    assert set(built) == set(warehouse.REPORTS)
    assert set(report_files()) == set(warehouse.REPORTS)


# --- the sql/ files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [Settings(), OTHER], ids=["defaults", "other"])
@pytest.mark.parametrize("name", report_files())
def test_each_sql_file_renders_to_the_settings_table_ids_only(name: str, settings: Settings) -> None:
    sql = reporting.sql_text(name, settings)
    assert "$" not in sql
    quoted = QUOTED_ID.findall(sql)
    assert quoted, "a report reads at least one table"
    allowed = {warehouse.table_id(settings, table) for table in warehouse.NAMES}
    assert set(quoted) <= allowed
    for full_id in quoted:
        project, dataset, table = full_id.split(".")
        assert project == settings.gcp_project
        assert dataset == warehouse.dataset_of(settings, table)


def test_the_contacts_join_reads_the_restricted_dataset() -> None:
    sql = reporting.sql_text("tutor_list", OTHER)
    assert "`acme-edu-prod.prod_restricted.students`" in sql
    assert "`acme-edu-prod.prod_progress.report_student_week`" in sql


@pytest.mark.parametrize("path", sorted(SQL_DIR.glob("*.sql")), ids=lambda p: p.name)
def test_sql_files_use_only_the_one_form(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for old in ("${project}", "${dataset}", "${restricted_dataset}"):
        assert old not in text
    names = set(PLACEHOLDER.findall(text))
    assert names <= warehouse.NAMES | SQL_FILE_VALUES, names - warehouse.NAMES - SQL_FILE_VALUES
    # Tables are quoted ids: every backquoted name is one placeholder, nothing written out by hand.
    for quoted in QUOTED_ID.findall(text):
        assert PLACEHOLDER.fullmatch(quoted), quoted


def test_the_sql_file_allow_list_is_all_in_use() -> None:
    used = {name for p in SQL_DIR.glob("*.sql") for name in PLACEHOLDER.findall(p.read_text(encoding="utf-8"))}
    assert used - warehouse.NAMES == SQL_FILE_VALUES


def test_terraform_passes_run_health_exactly_the_ids_of_the_tables_it_reads() -> None:
    """templatefile fails on a variable it is not given: the view's file and bigquery.tf must agree."""
    tf = TERRAFORM_BIGQUERY.read_text(encoding="utf-8")
    call = re.search(r'templatefile\("[^"]*/sql/report_run_health\.sql", \{(.*?)\}\)', tf, re.S)
    assert call, "the run_health view renders sql/report_run_health.sql"
    args = dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"\s*$', call.group(1), re.M))
    used = set(PLACEHOLDER.findall((SQL_DIR / "report_run_health.sql").read_text(encoding="utf-8")))
    assert set(args) == used
    for name, value in args.items():
        dataset = "local.restricted_dataset" if name in warehouse.RESTRICTED else "local.dataset"
        assert value == "${var.project_id}.${" + dataset + "}." + name


# --- render ---------------------------------------------------------------------------------------------------


def test_a_table_renders_to_its_full_id() -> None:
    sql = "SELECT * FROM `${progress_history}` h JOIN `${tracks}` t USING (product_id)"
    assert warehouse.render(OTHER, sql) == (
        "SELECT * FROM `acme-edu-prod.prod_progress.progress_history` h "
        "JOIN `acme-edu-prod.prod_progress.tracks` t USING (product_id)"
    )
    assert warehouse.render(Settings(), "`${report_run_health}`") == "`local-project.progress.report_run_health`"


@pytest.mark.parametrize("name", sorted(warehouse.RESTRICTED))
def test_a_restricted_table_renders_to_the_restricted_dataset(name: str) -> None:
    assert warehouse.render(OTHER, "${" + name + "}") == f"acme-edu-prod.prod_restricted.{name}"
    assert warehouse.render(OTHER, "${" + name + "}") == warehouse.table_id(OTHER, name)


def test_caller_values_fill_the_other_placeholders_and_are_not_rendered_again() -> None:
    sql = "SELECT * FROM `${staging}` ORDER BY ${call_first}"
    got = warehouse.render(OTHER, sql, {"staging": "p.d.stage_1", "call_first": "gap, '${runs}'"})
    assert got == "SELECT * FROM `p.d.stage_1` ORDER BY gap, '${runs}'"


def test_an_unknown_placeholder_raises_naming_it() -> None:
    with pytest.raises(warehouse.UnknownPlaceholder, match=r"\$\{progres_history\}") as info:
        warehouse.render(Settings(), "SELECT * FROM `${progres_history}` JOIN `${runs}` USING (run_id)")
    assert info.value.names == ["progres_history"]
    assert isinstance(info.value, ValueError)


def test_every_unknown_placeholder_is_named_once() -> None:
    with pytest.raises(warehouse.UnknownPlaceholder) as info:
        warehouse.render(Settings(), "${projct}.${dataset}.x ${projct} ${Runs}", {"staging": "s"})
    assert info.value.names == ["projct", "dataset", "Runs"]


def test_the_old_file_form_raises() -> None:
    with pytest.raises(warehouse.UnknownPlaceholder, match="project"):
        warehouse.render(Settings(), "`${project}.${dataset}.runs`")


@pytest.mark.parametrize("name", sorted(warehouse.NAMES))
def test_a_value_may_not_shadow_a_table(name: str) -> None:
    with pytest.raises(warehouse.ShadowedTable, match=name):
        warehouse.render(Settings(), "SELECT 1", {name: "other.dataset.table"})


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM `$runs`",  # the bare form is not a second way to name a table
        "SELECT * FROM `${ runs }`",
        "SELECT * FROM `${runs`",
        "SELECT * FROM `${1runs}`",
        "SELECT * FROM `${runs-2}`",
        "SELECT JSON_VALUE(j, '$.a') FROM `${runs}`",
        "SELECT 'US$'",
    ],
)
def test_any_other_dollar_raises(sql: str) -> None:
    with pytest.raises(warehouse.MalformedPlaceholder, match="Invalid placeholder") as info:
        warehouse.render(Settings(), sql)
    assert isinstance(info.value, ValueError)


def test_a_doubled_dollar_is_a_literal_one() -> None:
    assert warehouse.render(Settings(), "SELECT JSON_VALUE(j, '$$.a') FROM `${runs}`") == (
        "SELECT JSON_VALUE(j, '$.a') FROM `local-project.progress.runs`"
    )


IDENTIFIERS = st.from_regex(r"[_A-Za-z][_A-Za-z0-9]{0,40}", fullmatch=True)


@given(
    name=IDENTIFIERS.filter(lambda n: n not in warehouse.NAMES),
    values=st.dictionaries(IDENTIFIERS.filter(lambda n: n not in warehouse.NAMES), st.text(max_size=20)),
    table=st.sampled_from(sorted(warehouse.NAMES)),
)
def test_any_identifier_neither_known_nor_given_raises(name: str, values: dict[str, str], table: str) -> None:
    values.pop(name, None)
    with pytest.raises(warehouse.UnknownPlaceholder) as info:
        warehouse.render(OTHER, f"SELECT * FROM `${{{table}}}` WHERE x = ${{{name}}}", values)
    assert info.value.names == [name]
    assert "${" + name + "}" in str(info.value)
    # given, the same name renders
    rendered = warehouse.render(OTHER, f"SELECT * FROM `${{{table}}}` WHERE x = ${{{name}}}", {**values, name: "1"})
    assert rendered == f"SELECT * FROM `{warehouse.table_id(OTHER, table)}` WHERE x = 1"


# --- the modules' SQL strings ---------------------------------------------------------------------------------


def placeholders(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """Every `${name}` in the string constants of a module (f-string parts included, docstrings not)."""
    tree = ast.parse(source, filename)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [(node.lineno, name) for name in PLACEHOLDER.findall(node.value)]
    return sorted(found)


def unexpected(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """The placeholders that are neither a table or view nor an allowed value: a typo, most likely."""
    allowed = warehouse.NAMES | PYTHON_VALUES
    return [(line, name) for line, name in placeholders(source, filename) if name not in allowed]


def modules() -> list[Path]:
    return sorted(p for folder in SCANNED for p in folder.rglob("*.py"))


def test_every_placeholder_in_the_modules_is_a_table_or_an_allowed_value() -> None:
    found = {str(path.relative_to(ROOT)): unexpected(path.read_text(encoding="utf-8"), str(path)) for path in modules()}
    assert {path: names for path, names in found.items() if names} == {}


def test_the_module_scan_reads_the_sql_and_the_allow_list_is_all_in_use() -> None:
    used = {name for path in modules() for _, name in placeholders(path.read_text(encoding="utf-8"), str(path))}
    assert {"runs", "loads", "progress_history", "students", "tutor_list", "report_student_week"} <= used
    assert used - warehouse.NAMES == PYTHON_VALUES


def test_the_scan_flags_a_mistyped_table() -> None:
    source = '''
"""A docstring may show `${anything}`."""
PLAIN = "SELECT * FROM `${progres_history}`"
JOINED = "SELECT 1 FROM `${runs}` r " + "JOIN `${laods}` l USING (run_id)"
def f(where: str) -> str:
    return f"SELECT * FROM `${{tutor_lst}}` {where} ORDER BY ${{call_first}}"
SPACED = "`${ runs }`"
'''
    assert unexpected(source) == [(3, "progres_history"), (4, "laods"), (6, "tutor_lst"), (7, " runs ")]


def test_the_scan_flags_a_typo_planted_in_a_copy_of_a_real_module() -> None:
    path = ROOT / "src" / "progress_monitor" / "pipeline" / "loader.py"
    source = path.read_text(encoding="utf-8")
    assert "${progress_history}" in source and unexpected(source) == []
    planted = source.replace("${progress_history}", "${progres_history}", 1)
    assert [name for _, name in unexpected(planted)] == ["progres_history"]
