"""The inventory of a student's personal data (LGPD): every table column, report and bucket prefix, and how the
privacy command (`python -m progress_monitor privacy`) exports and erases it. Pure data and its checks.

Every column of every schema file is classified here, as student data with its handling or as not about a
student; `uncovered_*` list what is not, and `tests/unit/test_privacy_inventory.py` fails on any of them, so a
new column, report or object prefix cannot hold a student's data unnoticed. docs/privacy.md is the prose.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Handling:
    """How one place holding a student's data is exported and erased."""

    name: str
    export: str
    erase: str


# A column holding the student's Cademi id: exported; erased by replacing it with the student's pseudonym, so
# counts, means and trends over students stay true.
ID = Handling("student id", "the student's rows", "pseudonymised")
# A row of contact data keyed by the student's id: exported; erased by deleting the row.
CONTACT = Handling("contact data", "the student's row", "row deleted")
# Free text that may quote the id (an error naming the Cademi URL of the student): the id in it is replaced.
TEXT = Handling("text quoting the id", "with the rows", "the id replaced by the pseudonym")
# A comma-separated list of student ids: the id in it is replaced.
ID_LIST = Handling("list of student ids", "the rows naming the student, without the others' ids", "id replaced")
# A student's id or contact data copied by a report: rebuilt from the erased tables after the erasure.
REPORT = Handling("report", "statuses and movements", "rebuilt from the pseudonymised history")
# A view reading contact data: nothing stored; the deleted row is gone from it.
VIEW = Handling("view of contact data", "with the contact row", "nothing stored (reads `students`)")

# Student columns per table (the table's id column first: rows are found by it).
TABLES: dict[str, dict[str, Handling]] = {
    "students": {"user_id": CONTACT, "nome": CONTACT, "email": CONTACT, "celular": CONTACT},
    "progress_history": {"user_id": ID, "error": TEXT, "last_failure": TEXT},
    "tutor_actions": {"user_id": ID},
    "slack_digests": {"students_listed": ID_LIST},
    "failures": {"reason": TEXT},  # free text of any stage; no id column
    "runs": {"closed_reason": TEXT},  # the operator's words when closing a run
}
# The columns of each table that are not about a student (configuration, counters, times, tutors' ids).
NOT_STUDENT: dict[str, str] = {
    "students": "last_tag_id last_seen_date updated_at",
    "progress_history": "snapshot_date tag_id product_id status total assistidas completas run_id extracted_at "
    "last_access_at last_failed_at shard loaded_at carried_from",
    "tutor_actions": "snapshot_date tag_id action tutor channel_id acted_at",
    "slack_digests": "snapshot_date channel_id run_id message_ts status error tag_ids em_risco atrasado posted_at",
    "failures": "failed_at stage run_id tag_id piece message_id attempts attributes",
    "loads": "shard generation run_id snapshot_date tag_id piece last_piece rows_in_shard rows_merged failed "
    "no_access students api_calls rate_limited dq_duplicates dq_out_of_range dq_bad_dates dq_unknown_products "
    "dq_bad_status loaded_at carried calls_saved carry_checked carry_mismatches carry_unverified",
    "runs": "run_id snapshot_date status tags_total tags_done pieces_loaded records_loaded failed_extractions "
    "no_access students api_calls rate_limited dq_rejected errors started_at fanned_out_at finished_at "
    "reports_refreshed_at rows_carried calls_saved carry_checked carry_mismatches carry_unverified closed_at closed_by "
    "reconciled",
    "registered_tags": "tag_id track_id turma start_date active added_by added_at deactivated_by deactivated_at "
    "request_id",
    "tracks": "track_id track_name product_id product_name position due_week",
    "slack_channels": "scope target channel_id set_by set_at",
}
# Columns of the tutors themselves, never exported with a student's data (another person's).
OTHER_PEOPLE: dict[str, tuple[str, ...]] = {"tutor_actions": ("tutor",), "slack_digests": ("students_listed",)}

# Reports and views (warehouse.REPORTS): rebuilt or computed from the tables above; None: holds no student.
REPORTS: dict[str, Handling | None] = {
    "report_product_week": REPORT,
    "report_student_week": REPORT,
    "report_class_week": None,  # per class and week: counts and means only
    "report_movements": REPORT,
    "tutor_list": VIEW,
    "report_tutor_outcomes": None,  # per class and week: counts and means only
    "report_risk_timeline": REPORT,  # a view over report_student_week and tutor_actions
    "report_run_health": None,
    "student_names": VIEW,
}

# Object prefixes of the shards and state buckets (contracts.objects.bucket_of) and how each is handled.
OBJECTS: dict[str, Handling | None] = {
    "progress/": Handling("progress shards", "names listed", "rewritten: the id replaced by the pseudonym"),
    "rosters/": Handling("frozen rosters", "names listed", "rewritten without the student"),
    "contacts/": Handling("contact files awaiting the loader", "names listed", "rewritten without the student"),
    "slack/": Handling("digest claims (ids listed)", "not exported (ids only)", "the id replaced by the pseudonym"),
    "carry/": Handling("carry plans and the switch (ids, progress)", "names listed", "rewritten without the id"),
    "lanes/": None,  # tag ids only
    "budget/": None,  # the rate budget
    "erasures/": None,  # the registry: keyed hashes, who, when, which request
}

# Held outside our tables and bucket; the operator's steps are in docs/privacy.md.
ELSEWHERE = {
    "logs": "Cloud Logging: a student is named by a keyed hash (`privacy ref`), never the id, contact data, CPF or "
    "secrets; kept by the log bucket's retention (30 days by default), not erasable entry by entry",
    "slack": "messages posted in the tutors' channels name the student; deleted in Slack by hand if asked",
    "bucket versions": "noncurrent versions (kept 7 days) of every object naming the student are deleted by the "
    "erasure itself, and the registry entry's own old versions once it is done",
    "staging tables": "a load's staging tables and the Slack agent's (its clicks and digests' records, seconds "
    "each, in its own dataset) expire after a day; the erasure waits for those in flight and drops leftovers",
    "pubsub": "tutors' click messages (slack-tasks) carry the student's id in flight, and on the dead-letter topic's "
    "subscription up to 7 days (message retention); they expire, not erasable one by one",
    "bigquery job history": "every job's SQL and parameters, about 180 days: the erasure's jobs name the id or read "
    "the pseudonym from a scratch table, never both (privacy_tables.py); no other job names a student (a click "
    "and a digest's record go through a load job and a staging table: tutors/records.py)",
}

# Column names that look like a student's data: never accepted as NOT_STUDENT.
STUDENT_LIKE = re.compile(
    r"user|aluno|student(?!s$)|^nome|^name$|e_?mail|celular|phone|fone|cpf|^doc|login|listed", re.IGNORECASE
)


def uncovered_columns(schemas: dict[str, list[str]]) -> list[str]:
    """`table.column` of every schema column the inventory does not classify, or classifies as not about a
    student while its name says otherwise; and classified columns no schema has (a stale entry)."""
    problems = []
    for table, columns in sorted(schemas.items()):
        student = set(TABLES.get(table, {}))
        other = set(NOT_STUDENT.get(table, "").split())
        problems += [f"{table}.{c}: not in the inventory" for c in columns if c not in student | other]
        problems += [f"{table}.{c}: looks like a student's data" for c in sorted(other) if STUDENT_LIKE.search(c)]
        problems += [f"{table}.{c}: no such column" for c in sorted((student | other) - set(columns))]
    problems += [f"{t}: no such table" for t in sorted((TABLES.keys() | NOT_STUDENT.keys()) - schemas.keys())]
    return problems


def uncovered_reports(names: tuple[str, ...]) -> list[str]:
    return [f"{n}: report not in the inventory" for n in names if n not in REPORTS] + [
        f"{n}: no such report" for n in REPORTS if n not in names
    ]


def object_prefixes(source: str) -> set[str]:
    """The first path segment (`progress/`, …) of every object name contracts/objects.py builds or matches:
    string constants and the literal head of f-strings (not the pieces in the middle of one)."""
    tree = ast.parse(source)
    inner = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    found = set()
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inner:
            text = node.value
        if text and (match := re.match(r"[a-z][a-z_-]*/", text)):
            found.add(match[0])
    return found


def uncovered_objects(prefixes: set[str]) -> list[str]:
    return [f"{p}: object prefix not in the inventory" for p in sorted(prefixes - OBJECTS.keys())]


# The `field=` parts object names are made of (`…/run=R/tag=T/…`): none names a student.
NAME_FIELDS = frozenset({"snapshot_date", "run", "tag", "piece"})


def uncovered_name_fields(source: str) -> list[str]:
    """`field=` parts of the object names contracts/objects.py builds or matches that NAME_FIELDS does not list
    (an object named after a student, `…/user=U.json`, would be one)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(re.findall(r"(?:^|/)([a-z_]+)=", node.value))
    return [f"{f}=: object name field not in the inventory" for f in sorted(found - NAME_FIELDS)]


def schema_columns(folder: Path) -> dict[str, list[str]]:
    import json

    return {p.stem: [f["name"] for f in json.loads(p.read_text())["fields"]] for p in sorted(folder.glob("*.json"))}
