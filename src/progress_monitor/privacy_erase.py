"""Finding and erasing one student's data, place by place as the inventory (privacy_inventory.py) lists it.

The erasure runs in an order a retry can finish: (1) the registry entry, pending, with a fresh pseudonym (from
then on extraction skips the student); (2) contact data deleted; (3) the tables: text quoting the id and lists
of ids rewritten, then the id columns set to the pseudonym; (4) the bucket's objects rewritten (a shard keeps
its records under the pseudonym, so a replay loads the same pseudonymised rows) and their old versions deleted;
(5) leftover staging tables dropped, the reports rebuilt; (6) the entry marked done, its pseudonym dropped.
Every step finds only what is still to do, so running it again after a failure finishes the job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor import erasures, reporting, runs, runtime, warehouse
from progress_monitor.access import needs
from progress_monitor.contracts.objects import (
    parse_contacts,
    parse_progress_shard,
    parse_roster_body,
)
from progress_monitor.errors import GOOGLE_ERRORS, pipeline_error
from progress_monitor.privacy_inventory import CONTACT, ID, ID_LIST, OBJECTS, TABLES, TEXT
from progress_monitor.settings import Settings

log = logging.getLogger("progress_monitor.privacy")
# An unfinished run started this recently may still write the student's rows: the erasure waits for it.
RUN_WINDOW = timedelta(days=8)
STAGING_DEAD_AFTER = timedelta(hours=1)


class Refusal(Exception):
    """A request the command refuses; nothing was changed."""


def id_pattern(user_id: int) -> re.Pattern[str]:
    """The id as a whole number inside a text: not the digits of a longer number, a date, a time or a decimal
    (`2026` is not found in `2026-06-08`), but found in `/usuario/progresso_por_produto/2026/301`."""
    return re.compile(rf"(?<![0-9.:-]){user_id}(?![0-9.:-])")


def id_column(table: str) -> str | None:
    """The column a table's rows of a student are found by; None when only its text may quote the id."""
    return next((c for c, h in TABLES[table].items() if h in (ID, CONTACT)), None)


# -- the tables ------------------------------------------------------------------------------------------------


def table_rows(cfg: Settings, user_id: int) -> dict[str, int]:
    """Per table, the rows that name the student (by id, or quoting it in text or a list of ids)."""
    counts = {}
    for table in TABLES:
        rows = _naming_rows(cfg, table, user_id, [id_column(table) or "1"])
        if rows:
            counts[table] = len(rows)
    return counts


def _naming_rows(cfg: Settings, table: str, user_id: int, columns: list[str]) -> list[dict[str, Any]]:
    key = id_column(table)
    texts = [c for c, h in TABLES[table].items() if h in (TEXT, ID_LIST)]
    if key is not None:
        return warehouse.query(cfg, f"SELECT {', '.join(columns)} FROM `${{{table}}}` WHERE {key} = @u", u=user_id)
    # No id column: the rows whose text quotes the id as a whole number.
    found = warehouse.query(
        cfg,
        f"SELECT {', '.join(dict.fromkeys(columns + texts))} FROM `${{{table}}}` WHERE "
        + " OR ".join(f"STRPOS({c}, @text) > 0" for c in texts),
        text=str(user_id),
    )
    pattern = id_pattern(user_id)
    return [row for row in found if any(pattern.search(str(row.get(c) or "")) for c in texts)]


def export_rows(cfg: Settings, table: str, user_id: int, columns: list[str]) -> list[dict[str, Any]]:
    """The rows of `table` naming the student, with `columns` (text columns quoting the id are added)."""
    return _naming_rows(cfg, table, user_id, columns)


def _rewritten(handling: Any, text: str, user_id: int, pseudonym: int) -> str:
    if handling is ID_LIST:
        return ",".join(str(pseudonym) if p.strip() == str(user_id) else p for p in text.split(","))
    return id_pattern(user_id).sub(str(pseudonym), text)


def erase_tables(cfg: Settings, user_id: int, pseudonym: int) -> None:
    """Contact rows deleted; text quoting the id and lists of ids rewritten; id columns set to the pseudonym."""
    for table, columns in TABLES.items():
        key = id_column(table)
        if CONTACT in columns.values():
            warehouse.query(cfg, f"DELETE FROM `${{{table}}}` WHERE {key} = @u", u=user_id)
            continue
        for column in (c for c, h in columns.items() if h in (TEXT, ID_LIST)):
            # The student's own rows (pseudonymised already by an interrupted erasure, too), or any row quoting
            # the id where the table has no id column.
            ids: dict[str, Any] = {"u": user_id, "p": pseudonym} if key else {}
            scope = f"{key} IN (@u, @p)" if key else "TRUE"
            olds = warehouse.query(
                cfg,
                f"SELECT DISTINCT {column} AS v FROM `${{{table}}}` WHERE {scope} AND STRPOS({column}, @text) > 0",
                text=str(user_id),
                **ids,
            )
            for old in (str(row["v"]) for row in olds):
                new = _rewritten(columns[column], old, user_id, pseudonym)
                if new != old:
                    warehouse.query(
                        cfg,
                        f"UPDATE `${{{table}}}` SET {column} = @new WHERE {column} = @old AND {scope}",
                        new=new,
                        old=old,
                        **ids,
                    )
        if key is not None:
            warehouse.query(cfg, f"UPDATE `${{{table}}}` SET {key} = @p WHERE {key} = @u", p=pseudonym, u=user_id)


def unfinished_runs(cfg: Settings, now: datetime) -> list[str]:
    rows = warehouse.query(
        cfg,
        "SELECT run_id FROM `${runs}` WHERE status NOT IN UNNEST(@finished) AND started_at >= @since",
        finished=list(runs.FINISHED),
        since=now - RUN_WINDOW,
    )
    return sorted(str(r["run_id"]) for r in rows)


# -- the bucket ------------------------------------------------------------------------------------------------


def _ndjson_rows(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def _ndjson(rows: list[dict[str, Any]]) -> bytes:
    return b"".join((json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n").encode() for r in rows)


def rewrite_object(name: str, raw: bytes, user_id: int, pseudonym: int) -> bytes | None:
    """The object's body without the student (None: it does not name them; b"": delete it)."""
    if parse_progress_shard(name):
        rows = _ndjson_rows(raw)
        pattern = id_pattern(user_id)
        mine = [r for r in rows if r.get("user_id") == user_id]
        texts = [c for c, h in TABLES["progress_history"].items() if h is TEXT]  # a record is a history row
        for row in mine:
            row["user_id"] = pseudonym
            row.update({k: pattern.sub(str(pseudonym), row[k]) for k in texts if isinstance(row.get(k), str)})
        return _ndjson(rows) if mine else None
    if parse_contacts(name):
        rows = _ndjson_rows(raw)
        kept = [r for r in rows if r.get("user_id") != user_id]
        return None if len(kept) == len(rows) else _ndjson(kept) if kept else b""
    if name.startswith("rosters/"):
        ids, _ = parse_roster_body(raw)  # refuses a body that is not a roster
        if user_id not in ids:
            return None
        body = json.loads(raw)
        body["user_ids"] = [u for u in ids if u != user_id]
        body["last_access_at"] = {u: t for u, t in (body.get("last_access_at") or {}).items() if u != str(user_id)}
        return json.dumps(body).encode()
    body = json.loads(raw) if name.startswith(("slack/", "carry/")) else None
    if not isinstance(body, dict):
        return None
    before = json.dumps(body, sort_keys=True)
    if isinstance(body.get("listed"), list):  # a digest claim: [tag, student] pairs
        body["listed"] = [[t, pseudonym if u == user_id else u] for t, u in body["listed"]]
    if isinstance(body.get("carried"), dict):  # a carry plan
        body["carried"].pop(str(user_id), None)
        body["sample"] = [u for u in body.get("sample") or [] if u != user_id]
    if body.get("user_id") == user_id:  # the carrying switch names the student of its first mismatch
        body["user_id"] = pseudonym
    return None if json.dumps(body, sort_keys=True) == before else json.dumps(body).encode()


@dataclass
class Found:
    blob: storage.Blob
    new: bytes


@needs("objects.read shards")  # the operator command only: no function calls it
def naming_objects(cfg: Settings, user_id: int, pseudonym: int) -> list[Found]:
    """Every object of the inventory's prefixes whose body names the student, with its rewritten body."""
    bucket = runtime.shards_bucket(cfg)
    found = []
    needle = str(user_id).encode()
    for prefix, handling in OBJECTS.items():
        if handling is None:
            continue
        for blob in bucket.list_blobs(prefix=prefix):
            try:
                raw = blob.download_as_bytes()
            except exceptions.NotFound:
                continue  # merged and deleted meanwhile (contacts) or expired
            if needle not in raw:
                continue
            try:
                new = rewrite_object(blob.name, raw, user_id, pseudonym)
            except (ValueError, KeyError, TypeError) as exc:
                raise Refusal(f"{blob.name} cannot be read ({type(exc).__name__}); nothing was rewritten") from exc
            if new is not None:
                found.append(Found(blob, new))
    return found


@needs("objects.rewrite shards", "objects.delete shards")  # the operator command only
def rewrite_objects(cfg: Settings, found: list[Found]) -> int:
    """Write each object's new body (compare-and-swap on its generation; its metadata kept), or delete it, and
    delete its older versions (the bucket keeps noncurrent versions)."""
    bucket = runtime.shards_bucket(cfg)
    for item in found:
        blob = bucket.blob(item.blob.name)
        generation = int(item.blob.generation or 0)
        try:
            if item.new == b"":
                blob.delete(if_generation_match=generation)
            else:
                blob.metadata = item.blob.metadata
                blob.upload_from_string(
                    item.new, content_type=item.blob.content_type or "application/json", if_generation_match=generation
                )
            for version in bucket.list_blobs(prefix=item.blob.name, versions=True):
                if version.name == item.blob.name and version.generation != blob.generation:
                    with contextlib.suppress(exceptions.NotFound):
                        bucket.blob(version.name, generation=version.generation).delete()
        except exceptions.PreconditionFailed as exc:
            raise Refusal(f"{item.blob.name} changed meanwhile; run the command again") from exc
        except exceptions.NotFound:
            continue  # a contacts file the loader merged and deleted meanwhile
        except GOOGLE_ERRORS as exc:
            raise pipeline_error(exc, f"cannot rewrite {item.blob.name}") from exc
    return len(found)


@needs("dataset.write main", "dataset.write restricted")  # the operator command only
def drop_dead_staging(cfg: Settings, now: datetime) -> int:
    """Staging tables of load attempts that died (they expire after a day, and may hold the student's rows)."""
    client = runtime.bigquery(cfg)
    dropped = 0
    for dataset in (cfg.bq_dataset, cfg.bq_restricted_dataset):
        for table in client.list_tables(f"{cfg.gcp_project}.{dataset}"):
            created = getattr(table, "created", None)
            if table.table_id.startswith("_staging_") and (created is None or created < now - STAGING_DEAD_AFTER):
                client.delete_table(table.reference, not_found_ok=True)
                dropped += 1
    return dropped


# -- the whole erasure -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    state: str  # "erased", "already erased"
    request: str
    tables: dict[str, int] = field(default_factory=dict)
    objects: int = 0


def erase(cfg: Settings, user_id: int, request: str, by: str, now: datetime | None = None) -> Outcome:
    """Erase one student (see the module's docstring for the order); idempotent."""
    now = now or datetime.now(UTC)
    if running := unfinished_runs(cfg, now):
        raise Refusal(f"run {running[0]} is unfinished and may still write this student's rows; erase once it ends")
    bucket = runtime.shards_bucket(cfg)
    digest = erasures.digest_of(erasures.privacy_key(cfg), user_id)
    entry = erasures.read(bucket, digest)
    if entry is None and not table_rows(cfg, user_id) and not naming_objects(cfg, user_id, -1):
        raise Refusal("no data is held about that student id, and no erasure of it is recorded")
    if entry is not None and entry[0].state == erasures.DONE and not table_rows(cfg, user_id):
        return Outcome("already erased", entry[0].request)
    if entry is None or entry[0].state == erasures.DONE:
        # A new erasure, or rows that came back after a finished one (old shards restored from a backup and
        # replayed): a new pseudonym, since the finished erasure dropped its own.
        fresh = erasures.Erasure(request, by, now.isoformat(), pseudonym=erasures.new_pseudonym())
        if entry is None:
            if not erasures.create(bucket, digest, fresh):
                raise Refusal("another erasure of this student started meanwhile; run the command again")
        else:
            erasures.replace(bucket, digest, fresh, entry[1])
        entry = erasures.read(bucket, digest)
        if entry is None:
            raise Refusal("the erasure entry vanished meanwhile; run the command again")
    erasure, _ = entry
    pseudonym = int(erasure.pseudonym or 0)
    tables = table_rows(cfg, user_id)
    erase_tables(cfg, user_id, pseudonym)
    objects = rewrite_objects(cfg, naming_objects(cfg, user_id, pseudonym))
    drop_dead_staging(cfg, now)
    reporting.refresh(cfg)
    current = erasures.read(bucket, digest)
    if current is None:
        raise Refusal("the erasure entry vanished meanwhile; run the command again")
    done = erasures.Erasure(
        erasure.request, erasure.by, erasure.started_at, erasures.DONE, datetime.now(UTC).isoformat(), None
    )
    erasures.replace(bucket, digest, done, current[1])
    log.info("erasure finished: %d table rows, %d objects", sum(tables.values()), objects, extra={"count": objects})
    return Outcome("erased", erasure.request, tables, objects)
