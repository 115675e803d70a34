"""The privacy inventory covers every schema column, report and object prefix (and fails on a planted one), and
the pure parts of export, erasure and retention: the registry's names, object rewrites, refused ids."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest

from progress_monitor.commands import privacy
from progress_monitor.contracts.objects import (
    LOADABLE_PREFIXES,
    RAW_PREFIXES,
    STATE_PREFIXES,
    bucket_of,
    erasure_name,
    parse_erasure_name,
    roster_body,
)
from progress_monitor.platform import warehouse
from progress_monitor.privacy import erasures, inventory
from progress_monitor.privacy.match import id_pattern, rewrite_object
from progress_monitor.privacy.retention import months_before
from progress_monitor.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "progress_monitor"
SHARD = "progress/snapshot_date=2026-09-07/run=2026-09-07/tag=7002/piece=0000.ndjson"


def schemas() -> dict[str, list[str]]:
    return inventory.schema_columns(PACKAGE / "schemas")


def test_every_schema_column_is_in_the_inventory() -> None:
    assert inventory.uncovered_columns(schemas()) == []


@pytest.mark.parametrize(
    ("table", "column"),
    [("runs", "aluno_email"), ("tutor_actions", "whatsapp"), ("new_table", "user_id"), ("loads", "nota")],
)
def test_a_planted_column_is_caught(table: str, column: str) -> None:
    planted = schemas()
    planted.setdefault(table, []).append(column)
    problems = inventory.uncovered_columns(planted)
    assert any(p.startswith(f"{table}.{column}:") for p in problems), problems


def test_a_student_field_filed_as_not_personal_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = schemas()
    planted["runs"].append("email")
    monkeypatch.setitem(inventory.NOT_STUDENT, "runs", inventory.NOT_STUDENT["runs"] + " email")
    assert inventory.uncovered_columns(planted) == ["runs.email: looks like a student's data"]


def test_a_vanished_column_is_a_stale_entry() -> None:
    planted = schemas()
    planted["students"].remove("email")
    assert inventory.uncovered_columns(planted) == ["students.email: no such column"]


def test_every_report_is_in_the_inventory_and_a_planted_one_is_caught() -> None:
    assert inventory.uncovered_reports(warehouse.REPORTS) == []
    assert inventory.uncovered_reports((*warehouse.REPORTS, "report_aluno")) == [
        "report_aluno: report not in the inventory"
    ]


def test_reports_reading_contact_data_are_classified_as_holding_it() -> None:
    for sql in (PACKAGE / "sql").glob("*.sql"):
        text = sql.read_text()
        if re.search(r"\bnome\b|\bemail\b|\bcelular\b|\$\{students\}", text):
            assert inventory.REPORTS[sql.stem] is not None, sql.stem
        if re.search(r"\buser_id\b", text.split("SELECT")[-1]) and sql.stem in inventory.REPORTS:
            assert inventory.REPORTS[sql.stem] is not None, sql.stem


def test_every_object_prefix_is_in_the_inventory_and_a_planted_one_is_caught() -> None:
    source = (PACKAGE / "contracts" / "objects.py").read_text()
    prefixes = inventory.object_prefixes(source)
    assert {"progress/", "rosters/", "contacts/", "slack/", "erasures/"} <= prefixes
    assert inventory.uncovered_objects(prefixes) == []
    assert sorted(LOADABLE_PREFIXES + STATE_PREFIXES) == sorted(inventory.OBJECTS)  # each prefix has its bucket
    planted = source + '\n\ndef export_name(x: str) -> str:\n    return f"exports/{x}.json"\n'
    assert inventory.uncovered_objects(inventory.object_prefixes(planted)) == [
        "exports/: object prefix not in the inventory"
    ]


def test_object_names_name_no_student_and_a_planted_field_is_caught() -> None:
    source = (PACKAGE / "contracts" / "objects.py").read_text()
    assert inventory.uncovered_name_fields(source) == []
    planted = source + '\n\ndef note_name(r: str, u: int) -> str:\n    return f"lanes/run={r}/user={u}.json"\n'
    assert inventory.uncovered_name_fields(planted) == ["user=: object name field not in the inventory"]


def test_terraform_lifecycle_deletes_the_same_prefixes_after_the_same_weeks() -> None:
    storage = (ROOT / "infra" / "terraform" / "storage.tf").read_text()
    rules = {}
    for bucket in RAW_PREFIXES:  # each bucket's rule, in its own resource block
        block = storage[storage.index(f'resource "google_storage_bucket" "{bucket}"') :]
        block = block[: block.index("\n}\n")]
        rule = re.search(r"age\s*=\s*var\.raw_retention_weeks \* 7\s*\n\s*matches_prefix\s*=\s*(\[[^\]]*\])", block)
        assert rule is not None, bucket
        rules[bucket] = tuple(json.loads(rule[1]))
    assert rules == RAW_PREFIXES
    assert all(bucket_of(p) == bucket for bucket, prefixes in rules.items() for p in prefixes)
    variables = (ROOT / "infra" / "terraform" / "variables.tf").read_text()
    block = variables[variables.index('variable "raw_retention_weeks"') :]
    default = re.search(r"default\s*=\s*(\d+)", block)
    assert default is not None and int(default[1]) == Settings().retention_raw_weeks


def test_retention_settings_are_checked() -> None:
    assert Settings.from_env({"RETENTION_CONTACTS_MONTHS": "3"}).retention_contacts_months == 3
    for bad in ({"RETENTION_RAW_WEEKS": "1"}, {"RETENTION_CONTACTS_MONTHS": "0"}):
        with pytest.raises(SettingsError, match="RETENTION"):
            Settings.from_env(bad)


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [("2026-11-30", 6, "2026-05-30"), ("2026-08-31", 6, "2026-02-28"), ("2026-03-15", 3, "2025-12-15")],
)
def test_months_before(day: str, months: int, expected: str) -> None:
    assert months_before(date.fromisoformat(day), months) == date.fromisoformat(expected)


def test_the_registry_names_a_student_by_a_keyed_hash_only() -> None:
    one, other = erasures.digest_of(b"key-1", 2001), erasures.digest_of(b"key-2", 2001)
    assert one != other and one == erasures.digest_of(b"key-1", 2001) and "2001" not in one
    assert parse_erasure_name(erasure_name(one)) == one
    assert parse_erasure_name(f"erasures/{one}.json\n") is None and parse_erasure_name("erasures/2001.json") is None
    with pytest.raises(ValueError):
        erasure_name("2001")


def test_a_pseudonym_is_random_negative_and_only_kept_while_pending() -> None:
    drawn = {erasures.new_pseudonym() for _ in range(100)}
    assert len(drawn) == 100 and all(p < 0 for p in drawn)
    pending = erasures.Erasure("REQ-1", "dpo@escola", "2026-11-30T00:00:00+00:00", pseudonym=-42)
    assert erasures.Erasure.parse(pending.body()) == pending
    done = erasures.Erasure("REQ-1", "dpo@escola", "2026-11-30T00:00:00+00:00", erasures.DONE, "later", None)
    assert 'pseudonym": null' in done.body().decode()
    with pytest.raises(ValueError):
        erasures.Erasure.parse(json.dumps({"state": "pending", "pseudonym": None}).encode())


def test_the_id_is_matched_as_a_whole_number() -> None:
    pattern = id_pattern(2003)
    assert pattern.search("GET /usuario/progresso_por_produto/2003/301: 503")
    assert not pattern.search("user 12003 and 20030")
    year = id_pattern(2026)
    assert not year.search("run 2026-06-08-kill at 10:20:2026 of 41.2026")
    assert year.search("click on student 2026 of tag 6201")


def test_a_shard_is_rewritten_under_the_pseudonym_and_others_left_alone() -> None:
    rows = [
        {"user_id": 2003, "product_id": 301, "status": "failed", "error": "/usuario/progresso_por_produto/2003/301: 5"},
        {"user_id": 2004, "product_id": 301, "status": "ok", "error": None},
    ]
    raw = b"".join((json.dumps(r) + "\n").encode() for r in rows)
    new = rewrite_object(SHARD, raw, 2003, -77)
    assert new is not None
    got = [json.loads(line) for line in new.decode().splitlines()]
    assert got[0]["user_id"] == -77 and got[0]["error"] == "/usuario/progresso_por_produto/-77/301: 5"
    assert got[1] == rows[1]
    assert rewrite_object(SHARD, raw, 9999, -77) is None


def test_a_roster_a_contacts_file_a_claim_and_a_carry_plan_lose_the_student() -> None:
    roster = "rosters/snapshot_date=2026-09-07/run=2026-09-07/tag=7002.json"
    raw = roster_body((2001, 2003, 2004), {})
    new = rewrite_object(roster, raw, 2003, -77)
    assert new is not None and json.loads(new)["user_ids"] == [2001, 2004]
    contacts = "contacts/snapshot_date=2026-09-07/run=2026-09-07/tag=7002.ndjson"
    assert rewrite_object(contacts, b'{"user_id":2003,"nome":"A"}\n', 2003, -77) == b""
    claim = "slack/digests/2026-09-07/C123.json"
    body = json.dumps({"run_id": "2026-09-07", "listed": [[7002, 2003], [7002, 2004]]}).encode()
    new = rewrite_object(claim, body, 2003, -77)
    assert new is not None and json.loads(new)["listed"] == [[7002, -77], [7002, 2004]]
    plan = "carry/snapshot_date=2026-09-07/run=2026-09-07/tag=7002.json"
    body = json.dumps({"carried": {"2003": {"301": [1.0, 1, 1, "2026-08-31"]}}, "sample": [2003, 2004]}).encode()
    new = rewrite_object(plan, body, 2003, -77)
    assert new is not None and json.loads(new) == {"carried": {}, "sample": [2004]}


@pytest.mark.parametrize("bad", ["１２３", "٢٠٠٣", "123.456.789-09", "aluno@example.com", "0", "2003\n", "", "12" * 7])
def test_a_malformed_student_id_is_refused_by_name(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        privacy.main(["export", "--student", bad])
    assert exit_.value.code == 2
    assert "Cademi user id: 1-12 ASCII digits" in capsys.readouterr().err


def test_erase_needs_a_request_and_who() -> None:
    with pytest.raises(SystemExit) as exit_:
        privacy.main(["erase", "--student", "2003", "--confirm"])
    assert exit_.value.code == 2
