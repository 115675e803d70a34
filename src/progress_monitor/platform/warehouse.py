"""BigQuery basics: table definitions from the schema files, table ids, parametrised queries, the registry.

All SQL (the strings in the modules and the files in `sql/`) names a table or view one way: `${name}`, with
`name` one of NAMES (the base tables and the reporting tables and views). `render` (which `query` calls) turns
it into the full id, `project.dataset.name`, in the restricted dataset for the names in RESTRICTED (and the Slack
agent's dataset for SLACK). Any other
`${name}` is a value the caller passes in `sql_vars` (generated SQL, thresholds, a staging table's id). A
`${name}` that is neither, a value named like a table, or any other use of `$` (`$$` is a literal dollar)
raises a PlaceholderError instead of reaching BigQuery. Terraform renders `sql/report_run_health.sql` itself
and passes the id of each table it reads under the same name.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from string import Template
from typing import Any, Protocol

from google.cloud import bigquery

from progress_monitor.errors import GOOGLE_ERRORS, pipeline_error
from progress_monitor.platform.access import needs
from progress_monitor.settings import Settings

log = logging.getLogger(__name__)

TABLES = (
    "tracks",
    "registered_tags",
    "students",
    "progress_history",
    "runs",
    "loads",
    "failures",
    "slack_channels",
    "slack_digests",
    "tutor_actions",
)
# The reporting tables and views, built from `sql/<name>.sql` (reporting.py says which are which and when).
REPORTS = (
    "report_product_week",
    "report_student_week",
    "report_class_week",
    "report_movements",
    "tutor_list",
    "report_tutor_outcomes",
    "report_risk_timeline",
    "report_run_health",
    "student_names",
)
NAMES = frozenset(TABLES + REPORTS)  # every `${name}` that is a table or view
RESTRICTED = frozenset({"students", "tutor_list"})  # contact data: the tutors-only dataset
# The Slack agent's dataset: an authorized view exposing the students' names and nothing else of `students`.
SLACK = frozenset({"student_names"})


def schema_json(name: str) -> dict[str, Any]:
    """The schema file of a table (shared with Terraform and the tests)."""
    text = resources.files("progress_monitor").joinpath(f"schemas/{name}.json").read_text(encoding="utf-8")
    value: dict[str, Any] = json.loads(text)
    return value


def schema_fields(name: str, *, nullable: bool = False) -> list[bigquery.SchemaField]:
    fields = []
    for f in schema_json(name)["fields"]:
        mode = "NULLABLE" if nullable else f.get("mode", "NULLABLE")
        fields.append(bigquery.SchemaField(f["name"], f["type"], mode=mode, description=f.get("description")))
    return fields


def dataset_of(settings: Settings, name: str) -> str:
    if name in SLACK:
        return settings.bq_slack_dataset
    return settings.bq_restricted_dataset if name in RESTRICTED else settings.bq_dataset


def table_id(settings: Settings, name: str) -> str:
    return f"{settings.gcp_project}.{dataset_of(settings, name)}.{name}"


class Warehouse(Protocol):
    """What a query needs: the settings (tables' ids) and the BigQuery client; a `services.Services` is one."""

    @property
    def cfg(self) -> Settings: ...

    @property
    def bigquery(self) -> bigquery.Client: ...


class PlaceholderError(ValueError):
    """SQL whose `$` placeholders cannot be filled in as written."""


class UnknownPlaceholder(PlaceholderError):
    """A `${name}` that is neither a table or view (NAMES) nor a value the caller passed."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        listed = ", ".join("${" + name + "}" for name in names)
        super().__init__(f"unknown SQL placeholder {listed}: neither a table or view nor a value in sql_vars")


class ShadowedTable(PlaceholderError):
    """A caller's value under a table's or view's name: it would silently replace the table's id."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"sql_vars may not redefine a table or view: {', '.join(names)}")


class MalformedPlaceholder(PlaceholderError):
    """A `$` that is neither `${name}` nor `$$`."""


class _Sql(Template):
    # One form only: `${name}`; `$$` is a literal `$`. A bare `$name` is invalid rather than a second form.
    idpattern = r"(?!)"  # the unbraced form: matches nothing
    braceidpattern = r"(?a:[_a-z][_a-z0-9]*)"  # Template's identifiers (its flags make it case-insensitive)


def render(settings: Settings, sql: str, sql_vars: Mapping[str, str] | None = None) -> str:
    """Fill in `${name}` placeholders: a table's or view's full id, or the caller's value from `sql_vars`.

    Raises UnknownPlaceholder for any other `${name}`, ShadowedTable when `sql_vars` names a table or view, and
    MalformedPlaceholder for any other `$`."""
    given = dict(sql_vars or {})
    shadowed = sorted(given.keys() & NAMES)
    if shadowed:
        raise ShadowedTable(shadowed)
    template = _Sql(sql)
    unknown = [name for name in template.get_identifiers() if name not in NAMES and name not in given]
    if unknown:
        raise UnknownPlaceholder(unknown)
    values = {name: table_id(settings, name) for name in NAMES} | given
    try:
        return template.substitute(values)
    except ValueError as exc:  # only Template's "Invalid placeholder in string: line L, col C"
        raise MalformedPlaceholder(f"malformed SQL placeholder ({exc}): `$` goes before a braced name or `$`") from exc


@needs("bigquery.admin project")
def ensure_tables(svc: Warehouse) -> None:
    """Create the datasets and every table from the schema files (Terraform does this in the cloud)."""
    settings, client = svc.cfg, svc.bigquery
    for dataset in (
        settings.bq_dataset,
        settings.bq_restricted_dataset,
        settings.bq_slack_dataset,
        settings.bq_slack_staging_dataset,
    ):
        client.create_dataset(bigquery.Dataset(f"{settings.gcp_project}.{dataset}"), exists_ok=True)
    for name in TABLES:
        spec = schema_json(name)
        table = bigquery.Table(table_id(settings, name), schema=schema_fields(name))
        table.description = spec.get("description")
        if spec.get("partition_field"):
            table.time_partitioning = bigquery.TimePartitioning(field=spec["partition_field"])
        if spec.get("clustering"):
            table.clustering_fields = spec["clustering"]
        client.create_table(table, exists_ok=True)


_SCALAR_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "BOOL"),  # before int: a bool is an int
    (int, "INT64"),
    (float, "FLOAT64"),
    (datetime, "TIMESTAMP"),  # before date: a datetime is a date
    (date, "DATE"),
)


def _param(name: str, value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    if isinstance(value, list):
        kind = "INT64" if all(isinstance(v, int) for v in value) else "STRING"
        return bigquery.ArrayQueryParameter(name, kind, value)
    kind = next((k for t, k in _SCALAR_TYPES if isinstance(value, t)), "STRING")
    return bigquery.ScalarQueryParameter(name, kind, value)


@needs("bigquery.jobs project", "tables {sql} {sql_vars}")
def query(
    svc: Warehouse, sql: str, *, sql_vars: Mapping[str, str] | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Run a parametrised query and return its rows as dicts; a failure is a pipeline error (errors.RULES)."""
    config = bigquery.QueryJobConfig(query_parameters=[_param(k, v) for k, v in params.items()])
    text = render(svc.cfg, sql, sql_vars)
    try:
        job = svc.bigquery.query(text, job_config=config)
        return [dict(row.items()) for row in job.result(timeout=120)]
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "BigQuery query") from exc


def _json_value(value: Any) -> Any:
    """Dates and timestamps as a load job reads them."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"no JSON form for {type(value).__name__}")


@needs("bigquery.jobs project")  # into a table its caller made: the caller's declaration names the dataset
def load_rows(svc: Warehouse, table: str, fields: list[bigquery.SchemaField], rows: list[dict[str, Any]]) -> None:
    """Replace `table`'s rows with `rows` by a load job from memory. Unlike a query's parameters, a load job's
    configuration keeps none of the values in BigQuery's job history (docs/privacy.md)."""
    config = bigquery.LoadJobConfig(
        schema=fields,
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    body = io.BytesIO(b"".join(json.dumps(row, default=_json_value).encode() + b"\n" for row in rows))
    try:
        # A resumable upload (no size given): the emulator refuses the multipart one's generic media type.
        svc.bigquery.load_table_from_file(body, table, job_config=config).result(timeout=120)
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"load job into {table}") from exc


@dataclass(frozen=True)
class ActiveTag:
    tag_id: int
    product_ids: tuple[int, ...]


def active_tags(svc: Warehouse) -> list[ActiveTag]:
    """Active registered tags with their track's products in order."""
    rows = query(
        svc,
        """SELECT r.tag_id, t.product_id FROM `${registered_tags}` r JOIN `${tracks}` t ON t.track_id = r.track_id
           WHERE r.active ORDER BY r.tag_id, t.position""",
    )
    grouped: dict[int, list[int]] = {}
    for row in rows:
        grouped.setdefault(int(row["tag_id"]), []).append(int(row["product_id"]))
    return [ActiveTag(tag, tuple(products)) for tag, products in grouped.items()]
