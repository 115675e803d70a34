"""The erasure's logic without emulators: ids matched only where our code writes one, noncurrent object versions
(fake-gcs-server keeps none), the registry's key check and request list, the erasure's order around runs, the
refusal of a CPF, and the command's output (stdout holds the document only; the file is 0600)."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions

from progress_monitor.commands import options, privacy
from progress_monitor.contracts.objects import ERASURES_KEYCHECK, erasure_name, roster_body
from progress_monitor.errors import TransientError
from progress_monitor.privacy import erasure, erasures
from progress_monitor.privacy.inventory import ID_LIST, TEXT
from progress_monitor.privacy.match import MARK, id_pattern, mentions, rewritten
from progress_monitor.privacy.objects import naming_objects, rewrite_objects
from progress_monitor.services import Services
from progress_monitor.settings import Settings
from tests.unit.offline import offline_services

TAG, USER = 6201, 2003


# -- where an id is ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "GET /usuario/progresso_por_produto/2003/301: 503",
        "/users/usr_2003/progress failed 3 times",
        "click on student 2003 of tag 6201 not in the digest",
        "progress extraction failed for user 2003.",
        "user:2003",
        "button w=2026-06-08;t=6201;u=2003",
        "block aluno:6201:2003",
        '{"user_id": 2003}',
        "User_Id=2003",
    ],
)
def test_the_id_is_found_where_our_code_writes_one(text: str) -> None:
    assert mentions(text, USER)


@pytest.mark.parametrize(
    "text",
    [
        "GET /usuario/lista_por_tag/2003 failed",  # a tag id equal to the student's
        "click on student 7 of tag 2003 not in the digest",
        "/usuario/progresso_por_produto/7/2003: 503",  # a product id
        "HTTP 2003 from Cademi",
        "user 20030 and superuser 2003",
        "run 2003-06-08 at 10:20:2003",
        "w=2026-06-08;t=2003;u=7",
    ],
)
def test_an_equal_number_that_is_not_the_student_is_left_alone(text: str) -> None:
    assert not mentions(text, USER)


def test_a_text_keeps_everything_but_the_id() -> None:
    text = "student 2003 of tag 2003: /usuario/progresso_por_produto/2003/2003"
    assert rewritten(TEXT, text, USER, "-9") == "student -9 of tag 2003: /usuario/progresso_por_produto/-9/2003"
    assert rewritten(TEXT, text, USER, MARK).count(MARK) == 2 and "2003" in rewritten(TEXT, text, USER, MARK)
    assert rewritten(ID_LIST, "2001,2003,20030", USER, MARK) == f"2001,{MARK},20030"
    assert id_pattern(USER).pattern.count("2003") == 1


# -- the bucket, with versions (fake-gcs-server's filesystem backend keeps none) ------------------------------


@dataclass
class Version:
    name: str
    data: bytes
    generation: int
    time_deleted: datetime | None = None
    metadata: dict[str, str] | None = None
    content_type: str = "application/json"


@dataclass
class FakeBucket:
    """Cloud Storage with object versioning: a write or delete makes the live version noncurrent."""

    versions: list[Version] = field(default_factory=list)
    next_generation: int = 100

    def put(self, name: str, data: bytes) -> None:
        for v in self.versions:
            if v.name == name and v.time_deleted is None:
                v.time_deleted = datetime.now(UTC)
        self.next_generation += 1
        self.versions.append(Version(name, data, self.next_generation))

    def live(self, name: str) -> Version | None:
        return next((v for v in self.versions if v.name == name and v.time_deleted is None), None)

    def list_blobs(self, prefix: str, versions: bool = False) -> list[FakeBlob]:
        found = [v for v in self.versions if v.name.startswith(prefix) and (versions or v.time_deleted is None)]
        return [FakeBlob(self, v.name, v.generation, v) for v in found]

    def blob(self, name: str, generation: int | None = None) -> FakeBlob:
        return FakeBlob(self, name, generation, None)

    def get_blob(self, name: str) -> FakeBlob | None:
        v = self.live(name)
        return None if v is None else FakeBlob(self, name, v.generation, v)


@dataclass
class FakeBlob:
    bucket: FakeBucket
    name: str
    generation: int | None
    version: Version | None
    metadata: dict[str, str] | None = None

    @property
    def time_deleted(self) -> datetime | None:
        return None if self.version is None else self.version.time_deleted

    @property
    def content_type(self) -> str:
        return "application/json"

    def download_as_bytes(self) -> bytes:
        if self.version is None:
            raise exceptions.NotFound("no such version")
        return self.version.data

    def upload_from_string(self, data: bytes, content_type: str = "", if_generation_match: int | None = None) -> None:
        live = self.bucket.live(self.name)
        if if_generation_match is not None and (live.generation if live else 0) != if_generation_match:
            raise exceptions.PreconditionFailed("generation")
        self.bucket.put(self.name, data)
        self.generation = self.bucket.next_generation

    def delete(self, if_generation_match: int | None = None) -> None:
        if self.generation is not None and if_generation_match is None:  # one version, for good
            before = len(self.bucket.versions)
            self.bucket.versions = [
                v for v in self.bucket.versions if not (v.name == self.name and v.generation == self.generation)
            ]
            if len(self.bucket.versions) == before:
                raise exceptions.NotFound("no such version")
            return
        live = self.bucket.live(self.name)
        if live is None:
            raise exceptions.NotFound("gone")
        if if_generation_match is not None and live.generation != if_generation_match:
            raise exceptions.PreconditionFailed("generation")
        live.time_deleted = datetime.now(UTC)


CONTACTS = "contacts/snapshot_date=2026-06-08/run=2026-06-08/tag=6201.ndjson"
ROSTER = "rosters/snapshot_date=2026-06-08/run=2026-06-08/tag=6201.json"
CLAIM = "slack/digests/2026-06-08/C0PRIV1.json"


def test_noncurrent_versions_naming_the_student_are_deleted_and_the_others_kept() -> None:
    shards, state = FakeBucket(), FakeBucket()
    shards.put(CONTACTS, b'{"user_id":2003,"nome":"Zuleica"}\n')
    shards.blob(CONTACTS).delete()  # merged by the loader: only a noncurrent version is left
    state.put(CLAIM, json.dumps({"listed": [[TAG, USER], [TAG, 2004]]}).encode())
    state.put(CLAIM, json.dumps({"listed": [[TAG, 2004]]}).encode())  # rewritten since: the old one names them
    state.put(ROSTER, roster_body((2001, 2004), {}))
    state.put(ROSTER, roster_body((2001, USER, 2004), {}))  # current names them; the old one does not

    scan = naming_objects((shards, state), USER, -9)
    assert sorted((f.blob.name, f.current) for f in scan.found) == [(CONTACTS, False), (ROSTER, True), (CLAIM, False)]
    assert rewrite_objects(scan) == 3
    assert not any(b"2003" in v.data for v in shards.versions + state.versions)
    assert shards.versions == []
    assert [v.name for v in state.versions] == [CLAIM, ROSTER]  # the claim's current, the roster's rewrite
    assert naming_objects((shards, state), USER, -9).clean()


def test_a_roster_written_before_the_state_bucket_existed_is_rewritten_where_it_is() -> None:
    """Until their retention ends, rosters and claims of earlier runs stay in the shards bucket: found there."""
    shards, state = FakeBucket(), FakeBucket()
    shards.put(ROSTER, roster_body((2001, USER), {}))
    scan = naming_objects((shards, state), USER, -9)
    assert [(f.blob.name, f.current) for f in scan.found] == [(ROSTER, True)]
    assert rewrite_objects(scan) == 1
    assert [json.loads(v.data)["user_ids"] for v in shards.versions] == [[2001]] and state.versions == []


def test_an_unreadable_object_is_reported_by_name_and_left_alone() -> None:
    bucket = FakeBucket()
    bucket.put(ROSTER, b'{"not": "a roster", "x": 2003}')
    scan = naming_objects((bucket,), USER, -9)
    assert scan.unreadable == [ROSTER] and not scan.found and scan.names() == [ROSTER]


# -- the registry -----------------------------------------------------------------------------------------------


def test_the_key_check_stops_extraction_and_the_command_when_the_key_changed() -> None:
    bucket = FakeBucket()
    erasures.check_key(bucket, b"key-1", entries=False)  # nothing recorded yet: any key
    with pytest.raises(erasures.KeyMismatch, match="missing"):
        erasures.check_key(bucket, b"key-1", entries=True)
    erasures.write_keycheck(bucket, b"key-1")  # type: ignore[arg-type]
    erasures.check_key(bucket, b"key-1", entries=True)
    with pytest.raises(erasures.KeyMismatch, match="not the one"):
        erasures.check_key(bucket, b"key-2", entries=True)
    assert b"key-1" not in bucket.live(ERASURES_KEYCHECK).data  # type: ignore[union-attr]


def test_extraction_waits_when_the_key_does_not_match(monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = FakeBucket()
    erasures.write_keycheck(bucket, b"old-key")  # type: ignore[arg-type]
    bucket.put(erasure_name(erasures.digest_of(b"old-key", USER)), b"{}")
    cfg = Settings.from_env({"SECRETS_BACKEND": "env", "PRIVACY_KEY": "new-key"})
    with pytest.raises(TransientError, match="cannot be checked"):
        erasures.without_erased(cfg, bucket, [])  # type: ignore[arg-type]


def test_every_request_is_kept_and_the_entry_loses_its_pseudonym_and_old_versions() -> None:
    first = erasures.Erasure("REQ-1", "dpo@escola", "t1", pseudonym=-5, scratch="0123456789abcdef")
    again = first.with_request("REQ-2", "dpo2@escola", "t2").with_request("REQ-2", "x", "t3")
    assert [r["request"] for r in again.requests] == ["REQ-1", "REQ-2"]
    assert erasures.Erasure.parse(again.body()) == again
    bucket = FakeBucket()
    digest = erasures.digest_of(b"k", USER)
    erasures.create(bucket, digest, again)  # type: ignore[arg-type]
    read = erasures.read(bucket, digest)  # type: ignore[arg-type]
    assert read is not None
    done = erasures.Erasure("REQ-1", "dpo@escola", "t1", erasures.DONE, "t4", None, again.requests)
    generation = erasures.replace(bucket, digest, done, read[1])  # type: ignore[arg-type]
    assert erasures.drop_old_versions(bucket, digest, generation) == 1  # type: ignore[arg-type]
    assert [json.loads(v.data)["pseudonym"] for v in bucket.versions] == [None]


# -- the erasure's order ------------------------------------------------------------------------------------------


class Steps:
    """privacy_erase's collaborators, recording the order they are called in."""

    def __init__(self, runs: list[list[str]], left: int = 0) -> None:
        self.calls: list[str] = []
        self.runs = runs
        self.bucket = FakeBucket()  # the state bucket: the registry, rosters, claims
        self.shards = FakeBucket()
        self.left = left  # passes after which rows are still found

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def runs(_cfg: Any) -> list[str]:
            self.calls.append("runs")
            return self.runs.pop(0) if len(self.runs) > 1 else self.runs[0]

        def rows(_cfg: Any, _user: int) -> dict[str, int]:
            self.calls.append("scan")
            return {"progress_history": 4} if "erase_tables" not in self.calls or self.left > 0 else {}

        def erase_tables(*_: Any) -> None:
            self.calls.append("erase_tables")
            self.left -= 1

        monkeypatch.setattr(erasure, "unfinished_runs", runs)
        monkeypatch.setattr(erasure.erasures, "privacy_key", lambda _cfg: b"key")
        monkeypatch.setattr(erasure, "table_rows", rows)
        monkeypatch.setattr(erasure, "erase_tables", erase_tables)
        monkeypatch.setattr(erasure, "load_scratch", lambda *_: self.calls.append("load") or "p.d._erasure_x")
        monkeypatch.setattr(erasure, "drop_scratch", lambda *_: self.calls.append("drop"))
        monkeypatch.setattr(erasure, "drop_dead_tables", lambda *_: 0)
        monkeypatch.setattr(erasure, "writes_in_flight", lambda *_: self.calls.append("in flight") or [])
        monkeypatch.setattr(erasure.reporting, "refresh", lambda _cfg: self.calls.append("reports"))

    def entry(self) -> dict[str, Any]:
        [v] = [v for v in self.bucket.versions if v.name.startswith("erasures/") and "_keycheck" not in v.name]
        return dict(json.loads(v.data))


CFG = Settings()


def svc(steps: Steps) -> Services:
    return offline_services(CFG, shards=steps.shards, state=steps.bucket)


def test_any_unfinished_run_refuses_the_erasure_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps([["2026-01-05"]])  # months old, never finished: its roster positions must not move
    steps.install(monkeypatch)
    with pytest.raises(erasure.Refusal, match=r"unfinished run\(s\) 2026-01-05: resume.*close"):
        erasure.erase(svc(steps), USER, "REQ-1", "dpo")
    assert steps.bucket.versions == []


def test_the_pending_entry_comes_before_the_second_look_at_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps([[], ["2026-06-15"]])  # a weekly run starts while the erasure begins
    steps.install(monkeypatch)
    with pytest.raises(erasure.Incomplete, match=r"2026-06-15.*skip the student"):
        erasure.erase(svc(steps), USER, "REQ-1", "dpo")
    assert steps.entry()["state"] == erasures.PENDING  # extraction skips the student from now on
    assert "erase_tables" not in steps.calls


def test_the_reports_follow_the_tables_and_the_passes_repeat_until_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps([[]], left=2)
    steps.install(monkeypatch)
    outcome = erasure.erase(svc(steps), USER, "REQ-1", "dpo")
    assert outcome.state == "erased" and steps.calls.count("erase_tables") == 2
    first = steps.calls.index("erase_tables")
    assert steps.calls[first + 1] == "reports" and steps.calls[-1] == "drop"
    # Each pass looks for writes in flight after the reports and before its final scan: a write merged before the
    # look, the scan finds; one staged after it reads reports that no longer hold the student.
    passes = [i for i, call in enumerate(steps.calls) if call == "erase_tables"]
    for start, end in zip(passes, [*passes[1:], len(steps.calls)], strict=True):
        one_pass = steps.calls[start:end]
        assert one_pass.index("reports") < one_pass.index("in flight") < one_pass.index("scan")
    entry = steps.entry()
    assert entry["state"] == erasures.DONE and entry["pseudonym"] is None and entry["scratch"] is None


def test_an_erasure_still_finding_rows_after_its_passes_is_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps([[]], left=erasure.PASSES + 1)
    steps.install(monkeypatch)
    with pytest.raises(erasure.Incomplete, match="still found"):
        erasure.erase(svc(steps), USER, "REQ-1", "dpo")
    assert steps.entry()["state"] == erasures.PENDING and steps.calls[-1] == "drop"


def test_a_failure_after_the_first_change_exits_3(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    steps = Steps([[]])
    steps.install(monkeypatch)
    monkeypatch.setattr(options, "build", lambda *_: svc(steps))
    monkeypatch.setattr(erasure, "rewrite_objects", lambda *_: (_ for _ in ()).throw(RuntimeError("killed")))
    args = ["erase", "--student", str(USER), "--request", "REQ-1", "--by", "dpo", "--confirm"]
    assert privacy.main(args) == 3
    assert "erasure incomplete: RuntimeError: killed; run the same command again" in capsys.readouterr().err


# -- the command ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cpf", ["52998224725", "11144477735"])
def test_a_cpf_without_punctuation_is_refused_by_name(cpf: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_:
        privacy.main(["export", "--student", cpf])
    assert exit_.value.code == 2 and "looks like a CPF" in capsys.readouterr().err


def test_an_11_digit_id_that_is_no_cpf_is_accepted() -> None:
    assert not privacy.looks_like_cpf("52998224726") and not privacy.looks_like_cpf("11111111111")
    assert privacy._student("52998224726") == 52998224726


def test_the_export_leaves_stdout_to_the_document_and_the_file_private(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    def export(_cfg: Any, user_id: int) -> dict[str, Any]:
        privacy.log.warning("a log line")
        return {"student": {"cademi_user_id": user_id}}

    monkeypatch.setattr(privacy, "export", export)
    monkeypatch.setattr(options, "build", lambda *_: offline_services(CFG))
    assert privacy.main(["export", "--student", str(USER)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"student": {"cademi_user_id": USER}} and "a log line" in captured.err
    out = tmp_path / "aluno.json"
    out.write_text("old")
    out.chmod(0o644)
    assert privacy.main(["export", "--student", str(USER), "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and json.loads(out.read_text())["student"]
