"""BigQuery basics: table definitions from the schema files, table ids, parametrised queries, the registry.

SQL throughout the package names tables as `${table}` (string.Template); `query` fills in each table's full
id, plus any extra `${name}` the caller passes in `sql_vars` (generated SQL, a staging table).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from string import Template
from typing import Any

from google.api_core import exceptions
from google.cloud import bigquery

from progress_monitor import runtime
from progress_monitor.errors import PermanentError, TransientError
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
RESTRICTED = frozenset({"students", "tutor_list"})  # contact data: the tutors-only dataset


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
    return settings.bq_restricted_dataset if name in RESTRICTED else settings.bq_dataset


def table_id(settings: Settings, name: str) -> str:
    return f"{settings.gcp_project}.{dataset_of(settings, name)}.{name}"


class _SqlVars(dict[str, str]):
    """`${name}` in SQL: the caller's value if given, else the full id of the table `name`."""

    def __init__(self, settings: Settings, given: Mapping[str, str]) -> None:
        super().__init__(given)
        self.settings = settings

    def __missing__(self, key: str) -> str:
        return table_id(self.settings, key)


def render(settings: Settings, sql: str, sql_vars: Mapping[str, str] | None = None) -> str:
    """Fill in `${name}` placeholders: table ids and the caller's own values."""
    return Template(sql).substitute(_SqlVars(settings, sql_vars or {}))


def ensure_tables(settings: Settings) -> None:
    """Create the datasets and every table from the schema files (Terraform does this in the cloud)."""
    client = runtime.bigquery(settings)
    for dataset in (settings.bq_dataset, settings.bq_restricted_dataset):
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


def query(
    settings: Settings, sql: str, *, sql_vars: Mapping[str, str] | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Run a parametrised query and return its rows as dicts; API failures become TransientError."""
    client = runtime.bigquery(settings)
    config = bigquery.QueryJobConfig(query_parameters=[_param(k, v) for k, v in params.items()])
    try:
        job = client.query(render(settings, sql, sql_vars), job_config=config)
        return [dict(row.items()) for row in job.result(timeout=120)]
    except exceptions.BadRequest as exc:
        raise PermanentError(f"BigQuery rejected a query: {exc.message}") from exc
    except (exceptions.GoogleAPIError, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"BigQuery unavailable: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class ActiveTag:
    tag_id: int
    product_ids: tuple[int, ...]


def active_tags(settings: Settings) -> list[ActiveTag]:
    """Active registered tags with their track's products in order."""
    rows = query(
        settings,
        """SELECT r.tag_id, t.product_id FROM `${registered_tags}` r JOIN `${tracks}` t ON t.track_id = r.track_id
           WHERE r.active ORDER BY r.tag_id, t.position""",
    )
    grouped: dict[int, list[int]] = {}
    for row in rows:
        grouped.setdefault(int(row["tag_id"]), []).append(int(row["product_id"]))
    return [ActiveTag(tag, tuple(products)) for tag, products in grouped.items()]
