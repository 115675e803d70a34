"""The reporting layer: SQL in `sql/`, rebuilt after each successful run into small partitioned tables.

Looker Studio re-runs every chart's query on every filter change, so dashboards read these pre-aggregated
tables (partitioned by snapshot_date, clustered by tag) instead of recomputing from the raw history.
"""

from __future__ import annotations

import csv
import logging
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from progress_monitor.platform import warehouse
from progress_monitor.services import Services
from progress_monitor.settings import Settings

log = logging.getLogger(__name__)

# Materialised in this order (each reads the one before); clustering keys per table.
MATERIALISED = {
    "report_product_week": "tag_id, user_id",
    "report_student_week": "tag_id, user_id",
    "report_class_week": "tag_id",
    "report_movements": "from_tag_id",
}
# Rebuilt with the tables after each run. Views, so the tutors' clicks count as soon as they are made.
VIEWS = ("tutor_list", "report_tutor_outcomes", "report_risk_timeline")
# Created once at deploy (Terraform in the cloud, `create_deployed_views` on the local stack): run health reads
# only `runs` and must exist before any run has succeeded, i.e. exactly when a failing run needs it; the
# students' names are the Slack agent's authorized view of `students` (docs/security.md).
DEPLOYED_VIEWS = ("report_run_health", "student_names")


# What a spreadsheet reads as a formula when it starts a cell (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(column: str) -> str:
    """SQL for `column` as text a spreadsheet never runs: a leading formula character gets a quote before it."""
    starts = ", ".join("'" + c.replace("\t", "\\t").replace("\r", "\\r") + "'" for c in FORMULA_STARTS)
    return f'IF(SUBSTR({column}, 1, 1) IN ({starts}), CONCAT("\'", {column}), {column})'


def csv_cell(value: Any) -> Any:
    """One value as a CSV cell a spreadsheet never runs. The view's guard (`spreadsheet_safe`) sees only the
    first character; here a text that, once leading whitespace (any Unicode space, the no-break space
    included) and invisible characters (Unicode C*) are skipped, starts with a formula character or a
    look-alike of one (full-width ＝ ＋ － ＠, any whose NFKC form is one), or that starts with a tab or CR, gets
    a quote before it. Text the view already quoted starts with that quote and is left alone; numbers, dates
    and None (an empty cell) are not text a spreadsheet reads as a formula."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    first = next((ch for ch in value if not (ch.isspace() or unicodedata.category(ch).startswith("C"))), "")
    if value.startswith(("\t", "\r")) or unicodedata.normalize("NFKC", first)[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def sql_text(name: str, settings: Settings) -> str:
    """A reporting query with its tables' ids (`${table}`), status thresholds and generated SQL filled in.

    Terraform renders `report_run_health.sql` itself, passing the ids of the tables it reads."""
    read = resources.files("progress_monitor").joinpath
    thresholds = {
        "ahead_gap": str(settings.status_ahead_gap),
        "behind_gap": str(settings.status_behind_gap),
        "risk_gap": str(settings.status_risk_gap),
        "inactive_days": str(settings.status_inactive_days),
        "grace_days": str(settings.status_grace_days),
        "timezone": settings.timezone,
    }
    status_case = warehouse.render(settings, read("sql/status_case.sql").read_text(encoding="utf-8"), thresholds)
    names = {
        "status_case": status_case.strip(),
        **thresholds,
        **{f"neutral_{column}": spreadsheet_safe(f"c.{column}") for column in ("nome", "email", "celular")},
    }
    return warehouse.render(settings, read(f"sql/{name}.sql").read_text(encoding="utf-8"), names)


def refresh(svc: Services) -> None:
    """Rebuild every reporting table and (re)create the views; idempotent."""
    for name, clustering in MATERIALISED.items():
        warehouse.query(
            svc,
            "CREATE OR REPLACE TABLE `${target}` PARTITION BY snapshot_date CLUSTER BY ${clustering} AS\n${body}",
            sql_vars={
                "target": warehouse.table_id(svc.cfg, name),
                "clustering": clustering,
                "body": sql_text(name, svc.cfg),
            },
        )
    _create_views(svc, VIEWS)
    log.info("reporting tables refreshed")


def create_deployed_views(svc: Services) -> None:
    """What Terraform creates in the cloud: the views that exist from the start (local stack only)."""
    _create_views(svc, DEPLOYED_VIEWS)


def _create_views(svc: Services, names: tuple[str, ...]) -> None:
    for name in names:
        warehouse.query(
            svc,
            "CREATE OR REPLACE VIEW `${target}` AS\n${body}",
            sql_vars={"target": warehouse.table_id(svc.cfg, name), "body": sql_text(name, svc.cfg)},
        )


def looker_studio_url(settings: Settings) -> str:
    """A Looker Studio Linking API URL creating a report on the reporting tables in one click."""
    sources = {
        "ds0": "report_class_week",
        "ds1": "report_student_week",
        "ds2": "report_product_week",
        "ds3": "report_movements",
        "ds4": "report_run_health",
        "ds5": "report_tutor_outcomes",
        "ds6": "report_risk_timeline",
    }
    params: dict[str, str] = {"c.mode": "edit", "r.reportName": "Progresso dos alunos"}
    for alias, table in sources.items():
        params.update(
            {
                f"ds.{alias}.connector": "bigQuery",
                f"ds.{alias}.type": "TABLE",
                f"ds.{alias}.projectId": settings.gcp_project,
                f"ds.{alias}.datasetId": settings.bq_dataset,
                f"ds.{alias}.tableId": table,
                f"ds.{alias}.datasourceName": table,
            }
        )
    return "https://lookerstudio.google.com/reporting/create?" + urlencode(params)


def call_first(prefix: str, days_column: str) -> str:
    """SQL ORDER BY terms of the tutors' call order (the digest, `/turma alunos`, the CSV): at risk before
    behind, longest behind, longest without access (unknown last), furthest behind; `prefix` is the table alias
    with its dot, `days_column` the days-without-access column's name in that table."""
    p = prefix
    return (
        f"IF({p}status = 'em risco', 0, 1), {p}weeks_behind DESC, COALESCE({p}{days_column}, -1) DESC, "
        f"{p}gap, {p}user_id"
    )


TUTOR_CSV_COLUMNS = (
    "turma",
    "tag_id",
    "iso_week",
    "user_id",
    "nome",
    "email",
    "celular",
    "status",
    "weeks_behind",
    "dias_sem_acessar",
    "ultimo_acesso",
    "actual",
    "expected",
    "gap",
)


def export_tutors(svc: Services, out: Path, tag_id: int | None = None) -> int:
    """The tutors' list (each class's latest week) as CSV for a spreadsheet; returns the rows written. Every
    text cell goes through `csv_cell` (the view's guard sees only a value's first character)."""
    where = "WHERE tag_id = @tag_id" if tag_id is not None else ""
    params: dict[str, Any] = {"tag_id": tag_id} if tag_id is not None else {}
    rows = warehouse.query(
        svc,
        f"SELECT * FROM `${{tutor_list}}` {where} ORDER BY turma, ${{call_first}}",
        sql_vars={"call_first": call_first("", "dias_sem_acessar")},
        **params,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8-sig") as f:  # the BOM makes Excel read UTF-8 accents
        writer = csv.writer(f)
        writer.writerow(TUTOR_CSV_COLUMNS)
        for row in rows:
            writer.writerow([csv_cell(row.get(c)) for c in TUTOR_CSV_COLUMNS])
    return len(rows)
