"""Tutors in Slack on the local stack, end to end: the Monday digest, the buttons, `/turma alunos`, the outcomes.

A school built for it (expected values by hand). Track t1: product 101 due in class week 2, 102 in week 4;
both classes start on the first snapshot, so the expected track mean is 0, 25, 50, 75 in weeks 0-3.
Class A (8101) has its own channel; class B (8102) has none, so its track's channel gets its digest.

Week 1 (expected 25), class A: 201 at 5, 202 at 10, 203 at 0, 205 at 0 are atrasado; 204 is on pace.
Digest order: 201 (3 days without access) first, then unknown access by gap (203 and 205 at -25, then 202);
DIGEST_STUDENTS_PER_CLASS=3 names 201, 203, 205 and counts 202 behind the link.

The tests run in file order on one stack (weeks 0, 1, then 2 and 3), as a school's month would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from cademi_sim.builder import School
from devstack.here import services_here
from devstack.slack_standin import SlackStandin, click, interaction_payload, signed_post
from devstack.stack import LocalStack
from devstack.wiring import LOCAL_SLACK_TEAM, LOCAL_SLACK_USER
from progress_monitor.contracts.objects import digest_claim_name
from progress_monitor.contracts.values import RunId
from progress_monitor.pipeline import reporting
from progress_monitor.platform import warehouse
from progress_monitor.stages import daily
from progress_monitor.tutors import digest

pytestmark = pytest.mark.integration
WEEKS = ["2026-06-01", "2026-06-08", "2026-06-15", "2026-06-22"]
A, B = 8101, 8102
CHANNEL_A, CHANNEL_T1 = "C0TURMAA", "C0TRILHA1"
TUTOR_1, TUTOR_2 = "UTUTOR01", "UTUTOR02"
HACKER_NAME = "<!channel> Aluno"
# user: (tag, totals of 101 per week, totals of 102 per week, last access per week)
STUDENTS: dict[int, tuple[int, list[float], list[float], list[str | None]]] = {
    201: (A, [0, 10, 60, 100], [0, 0, 0, 50], [None, "2026-06-05 10:00:00", "2026-06-12 10:00:00", None]),
    202: (A, [0, 20, 30, 40], [0, 0, 0, 0], [None] * 4),
    203: (A, [0, 0, 0, 0], [0, 0, 0, 0], [None] * 4),
    204: (A, [0, 50, 100, 100], [0, 0, 0, 50], [None] * 4),
    205: (A, [0, 0, 10, 20], [0, 0, 0, 0], [None] * 4),
    206: (B, [0, 50, 100, 100], [0, 0, 0, 50], [None] * 4),
    207: (B, [0, 0, 0, 0], [0, 0, 0, 0], [None] * 4),
}


def tutors_world() -> dict[str, Any]:
    school = School(WEEKS, api_key="tutors-key")
    school.product(101, "Curso 1")
    school.product(102, "Curso 2")
    school.track("t1", "Trilha 1", {101: 2, 102: 4}, slack_channel=CHANNEL_T1)
    school.tag(A, "Turma A", track="t1", turma="2026-06", slack_channel=CHANNEL_A)
    school.tag(B, "Turma B", track="t1", turma="2026-06b")
    for uid, (tag, p101, p102, access) in STUDENTS.items():
        nome = HACKER_NAME if uid == 205 else None
        school.student(uid, tag, nome=nome, last_access=access, totals={101: p101, 102: p102})
    return school.build()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("tutors")
    scenario = workdir / "scenario.json"
    scenario.write_text(json.dumps(tutors_world()))
    stack = LocalStack.start(workdir, scenario, piece_budget_s=30, extra_env={"DIGEST_STUDENTS_PER_CLASS": "3"})
    stack.use_here()
    yield stack
    stack.stop()


def week(i: int) -> date:
    return date.fromisoformat(WEEKS[i])


def rows(sql: str, **params: Any) -> list[dict[str, Any]]:
    return warehouse.query(services_here(), sql, **params)


def run(stack: LocalStack, i: int, rerun: str | None = None) -> RunId:
    run_id = stack.trigger(week(i), rerun=rerun)
    assert stack.wait_run(run_id, timeout=180)["status"] == "succeeded"
    return run_id


def messages(stack: LocalStack, i: int) -> dict[str, dict[str, Any]]:
    """The digests of week i in the Slack stand-in, by channel."""
    label = f"Semana {week(i).isocalendar()[0]}-W{week(i).isocalendar()[1]:02d}"
    found = [m for m in SlackStandin(stack.endpoints["slack"]).messages() if m["text"].startswith(label)]
    by_channel = {m["channel"]: m for m in found}
    assert len(by_channel) == len(found), "two messages for one channel"
    return by_channel


def text_of(message: dict[str, Any]) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False)


def actions_table() -> list[tuple[int, str, str]]:
    found = rows("SELECT user_id, action, tutor FROM `${tutor_actions}` ORDER BY user_id, action, tutor")
    return [(r["user_id"], r["action"], r["tutor"]) for r in found]


def wait_for(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def test_one_digest_per_week_and_channel_through_duplicates_replays_and_a_rerun(stack: LocalStack) -> None:
    stack.duplicate_deliveries(True)  # every message of the run delivered twice, digest requests included
    try:
        run_id = run(stack, 0)
        records = stack.wait_digests(run_id)
    finally:
        stack.duplicate_deliveries(False)
    assert sorted((r["channel_id"], r["status"]) for r in records) == sorted(
        [(CHANNEL_A, "posted"), (CHANNEL_T1, "posted")]
    )
    posted = messages(stack, 0)
    assert set(posted) == {CHANNEL_A, CHANNEL_T1}
    assert "Nenhum aluno atrasado" in text_of(posted[CHANNEL_A])  # week 0: everyone on pace
    assert "Turma 2026-06b" in text_of(posted[CHANNEL_T1]) and "Turma 2026-06 " not in text_of(posted[CHANNEL_T1])

    # A replay of the request (what an operator re-publishing it does): nothing new in Slack.
    for _ in range(2):
        services_here().publish("slack-tasks", json.dumps({"kind": "digest", "run_id": str(run_id)}).encode())
    time.sleep(8)
    assert {c: m["versions"] for c, m in messages(stack, 0).items()} == {CHANNEL_A: 1, CHANNEL_T1: 1}

    # A re-run of the week: the same messages are updated in place, not posted again.
    rerun = run(stack, 0, rerun="again")
    records = stack.wait_digests(rerun)
    assert sorted(r["status"] for r in records) == ["updated", "updated"]
    again = messages(stack, 0)
    assert {c: (m["ts"], m["versions"]) for c, m in again.items()} == {c: (m["ts"], 2) for c, m in posted.items()}
    assert stack.dead_letters() == []


def test_a_slack_outage_is_retried_and_never_fails_the_load(stack: LocalStack) -> None:
    slack = SlackStandin(stack.endpoints["slack"])
    slack.fail("chat.postMessage", 503, 4)  # both channels fail twice before Slack comes back...
    slack.missing(CHANNEL_T1)  # ...and then the track's channel is refused (the app is not in it)
    run_id = run(stack, 1)  # the run (and its last load) succeeded although Slack was down
    records = wait_for(lambda: (found := stack.wait_digests(run_id, timeout=5)) and len(found) == 2 and found, 90)
    assert sorted((r["channel_id"], r["status"]) for r in records) == [(CHANNEL_T1, "refused"), (CHANNEL_A, "posted")]
    assert CHANNEL_T1 not in messages(stack, 1)
    # The cause fixed, the daily health check asks again for the newest week (never a past one: issue 30 #5):
    # the refused channel gets its digest, the others are not posted twice.
    slack.missing(CHANNEL_T1, missing=False)
    assert daily.request_recent_digests(services_here()) == [WEEKS[1]]
    wait_for(lambda: CHANNEL_T1 in messages(stack, 1))
    records = stack.wait_digests(run_id)
    assert sorted((r["channel_id"], r["status"]) for r in records) == [(CHANNEL_T1, "posted"), (CHANNEL_A, "posted")]
    time.sleep(3)
    assert {c: m["versions"] for c, m in messages(stack, 1).items()} == {CHANNEL_A: 1, CHANNEL_T1: 1}
    assert {c: m["versions"] for c, m in messages(stack, 0).items()} == {CHANNEL_A: 2, CHANNEL_T1: 2}
    digest = messages(stack, 1)[CHANNEL_A]
    assert digest["versions"] == 1
    text = text_of(digest)
    # 201, 203, 205 named in that order; 202 behind the link
    assert text.index("Aluna 201") < text.index("Aluna 203") < text.index("&lt;!channel&gt; Aluno")
    assert "Aluna 202" not in text and "E mais 1 aluno(s)" in text
    assert "3 dias sem acessar" in text and "último acesso desconhecido" in text
    assert "<!channel>" not in text  # a student's name never pings the channel
    assert ":large_orange_circle: *4* atrasados (semana anterior: 0)" in text
    assert len(digest["blocks"]) <= 50
    assert stack.dead_letters() == []


def test_a_click_is_recorded_once_and_the_message_updates_in_place(stack: LocalStack) -> None:
    digest = messages(stack, 1)[CHANNEL_A]
    url = stack.endpoints["functions"]["slack_actions"]
    secret = stack.local_secrets["SLACK_SIGNING_SECRET"]
    first = click(url, secret, digest, 201, "contatado", LOCAL_SLACK_TEAM, TUTOR_1)
    again = click(url, secret, digest, 201, "contatado", LOCAL_SLACK_TEAM, TUTOR_1)  # a double click
    assert (first.status_code, again.status_code) == (200, 200)
    replay = requests.post(url, data=first.request.body, headers=dict(first.request.headers), timeout=30)
    assert replay.status_code == 200  # a replayed request within the 5 minutes: accepted, recorded once
    assert click(url, secret, digest, 203, "sem_resposta", LOCAL_SLACK_TEAM, TUTOR_2).status_code == 200

    expected = [(201, "contatado", f"slack:{TUTOR_1}"), (203, "sem_resposta", f"slack:{TUTOR_2}")]
    wait_for(lambda: actions_table() == expected)
    updated = wait_for(lambda: (m := messages(stack, 1)[CHANNEL_A]) and "sem resposta" in text_of(m) and m)
    assert f"contatado por <@{TUTOR_1}>" in text_of(updated) and f"sem resposta (<@{TUTOR_2}>)" in text_of(updated)
    assert updated["ts"] == digest["ts"]  # in place
    time.sleep(3)
    assert actions_table() == expected


def _post_interaction(stack: LocalStack, payload: Any, **kwargs: Any) -> requests.Response:
    body = urlencode({"payload": json.dumps(payload)})
    return signed_post(
        stack.endpoints["functions"]["slack_actions"], body, stack.local_secrets["SLACK_SIGNING_SECRET"], **kwargs
    )


def test_forged_stale_or_foreign_interactions_are_refused_and_record_nothing(stack: LocalStack) -> None:
    digest = messages(stack, 1)[CHANNEL_A]
    before = actions_table()
    button = next(b for b in digest["blocks"] if b.get("block_id") == f"aluno:{A}:205")["elements"][0]
    good = interaction_payload(digest, {**button, "block_id": f"aluno:{A}:205"}, LOCAL_SLACK_TEAM, TUTOR_1)

    assert _post_interaction(stack, good, signature="v0=" + "0" * 64).status_code == 401  # forged
    assert _post_interaction(stack, good, timestamp=int(time.time()) - 301).status_code == 401  # stale
    refused = {
        "another workspace": {**good, "team": {"id": "TOUTRA01"}},
        "unknown action": {**good, "actions": [{**good["actions"][0], "action_id": "apagar_tudo"}]},
        "two actions": {**good, "actions": good["actions"] * 2},
        "tampered value": {**good, "actions": [{**good["actions"][0], "value": "w=2026-06-08;t=8101;u=abc"}]},
        "another type": {**good, "type": "view_submission"},
        "no ts": {**good, "container": {}, "message": {}},
        "bad user": {**good, "user": {"id": "<@U1>"}},
    }
    for reason, payload in refused.items():
        response = _post_interaction(stack, payload)
        assert response.status_code == 400, reason
    url = stack.endpoints["functions"]["slack_actions"]
    secret = stack.local_secrets["SLACK_SIGNING_SECRET"]
    assert signed_post(url, "payload=%7Bnot+json", secret).status_code == 400
    assert signed_post(url, "text=hello", secret).status_code == 400
    assert signed_post(url, "payload=" + "a" * 70_000, secret).status_code == 413
    assert requests.get(url, timeout=10).status_code == 405

    # Signed by Slack but not a button of that digest: a student it does not name, or another message.
    not_listed = {**good, "actions": [{**good["actions"][0], "value": f"w={WEEKS[1]};t={A};u=202"}]}
    other_message = {**good, "container": {**good["container"], "message_ts": "1700000000.000001"}}
    assert _post_interaction(stack, not_listed).status_code == 200
    assert _post_interaction(stack, other_message).status_code == 200
    time.sleep(5)
    assert actions_table() == before


def _slash(stack: LocalStack, text: str, user: str, channel: str, response_url: str) -> requests.Response:
    body = urlencode(
        {
            "command": "/turma",
            "text": text,
            "user_id": user,
            "team_id": LOCAL_SLACK_TEAM,
            "channel_id": channel,
            "response_url": response_url,
        }
    )
    return signed_post(stack.endpoints["functions"]["slack_command"], body, stack.local_secrets["SLACK_SIGNING_SECRET"])


def test_turma_alunos_answers_the_current_list_through_the_response_url(stack: LocalStack) -> None:
    slack = SlackStandin(stack.endpoints["slack"])
    answer = _slash(stack, f"alunos {A}", TUTOR_1, CHANNEL_A, slack.response_url("lista-a"))
    # acknowledged before any query (Slack waits 3 s at most): the list itself arrives through the response_url
    assert answer.json() == {"response_type": "ephemeral", "text": f"Buscando a lista da turma {A}…"}
    reply = wait_for(lambda: next((r for r in slack.responses() if r["url_path"].endswith("lista-a")), None))
    listed = json.dumps(reply["body"], ensure_ascii=False)
    assert reply["body"]["response_type"] == "ephemeral"
    for name in ("Aluna 201", "Aluna 202", "Aluna 203", "&lt;!channel&gt; Aluno"):  # the whole list, not the top 3
        assert name in listed
    assert "Aluna 204" not in listed

    # A tutor asking in another class's channel sees nothing; a coordinator may ask anywhere.
    _slash(stack, f"alunos {A}", TUTOR_1, CHANNEL_T1, slack.response_url("lista-outro-canal"))
    elsewhere = wait_for(lambda: next((r for r in slack.responses() if r["url_path"].endswith("outro-canal")), None))
    assert "só pode ser vista no canal" in elsewhere["body"]["text"] and "Aluna" not in json.dumps(elsewhere["body"])
    _slash(stack, f"alunos {A}", LOCAL_SLACK_USER, CHANNEL_T1, slack.response_url("lista-coord"))
    wait_for(
        lambda: any(
            r["url_path"].endswith("lista-coord") and "Aluna 201" in json.dumps(r["body"]) for r in slack.responses()
        )
    )

    # A response_url that is not Slack's is refused at once: the worker never POSTs to a host of the caller's choice.
    evil = _slash(stack, f"alunos {A}", TUTOR_1, CHANNEL_A, "https://evil.example/collect")
    assert "Pedido incompleto" in evil.json()["text"]
    assert _slash(stack, "alunos 12abc", TUTOR_1, CHANNEL_A, slack.response_url("x")).json()["text"].startswith("Uso:")


def test_the_outcome_of_contacting_on_a_hand_computed_school(stack: LocalStack, tmp_path: Path) -> None:
    run(stack, 2)
    run(stack, 3)
    outcome = rows("SELECT * FROM `${report_tutor_outcomes}` WHERE tag_id = @t AND snapshot_date = @d", t=A, d=week(1))
    assert len(outcome) == 1
    o = outcome[0]
    assert (o["students_listed"], o["students_contacted"], o["students_no_answer"]) == (4, 1, 1)
    assert o["share_contacted"] == pytest.approx(0.25)
    # 201 (contacted): 5 -> 75 two snapshots later. Not contacted: 202 10 -> 20, 203 0 -> 0, 205 0 -> 10.
    assert o["change_contacted"] == pytest.approx(70.0)
    assert o["change_not_contacted"] == pytest.approx(20 / 3)
    assert (o["contacted_with_outcome"], o["not_contacted_with_outcome"]) == (1, 3)
    # week 2 has no two later snapshots yet: listed and counted, outcome unknown
    later = rows("SELECT * FROM `${report_tutor_outcomes}` WHERE tag_id = @t AND snapshot_date = @d", t=A, d=week(2))
    assert later[0]["change_not_contacted"] is None and later[0]["students_contacted"] == 0

    timeline = rows("SELECT * FROM `${report_risk_timeline}` WHERE user_id = 201")[0]
    # 201: w0 0 vs 0, w1 5 vs 25, w2 30 vs 50, w3 75 vs 75
    assert timeline["timeline"] == "2026-W23: no ritmo → 2026-W24: atrasado → 2026-W25: atrasado → 2026-W26: no ritmo"
    assert (timeline["weeks_atrasado"], timeline["last_status"], timeline["times_contacted"]) == (2, "no ritmo", 1)
    assert timeline["first_flagged"] == week(1)

    csv_path = tmp_path / "lista.csv"
    count = reporting.export_tutors(services_here(), csv_path, A)
    lines = csv_path.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("turma,tag_id,iso_week,user_id,nome") and len(lines) == count + 1
    # week 3 (expected 75): 202 at 20, 203 at 0, 205 at 10 -> em risco by gap; 201 and 204 on pace
    assert sorted(int(line.split(",")[3]) for line in lines[1:]) == [202, 203, 205]


def test_a_post_slack_took_but_never_answered_is_not_posted_again(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack posts the digest but its answer comes after our timeout: it may be in the channel, so the claim
    stays (`unconfirmed`), the week is recorded so, and neither a redelivery nor the health check posts twice."""
    run_id = RunId(week(3))
    label = f"Semana {week(3).isocalendar()[0]}-W{week(3).isocalendar()[1]:02d}"
    slack = SlackStandin(stack.endpoints["slack"])

    def posts() -> int:
        return sum(1 for m in slack.messages() if m["channel"] == CHANNEL_A and m["text"].startswith(label))

    # week 3's digests, posted after the outcome test's run: both channels done before the test starts
    wait_for(lambda: (found := stack.wait_digests(run_id, timeout=5)) and len(found) == 2 and found, 90)
    before = posts()
    assert before == 1
    # As if the operator deleted the claim to post the week again: the next post starts from nothing.
    services_here().state.blob(digest_claim_name(week(3), CHANNEL_A)).delete()
    monkeypatch.setenv("SLACK_TIMEOUT_S", "1")
    monkeypatch.setenv("SLACK_BOT_TOKEN", stack.local_secrets["SLACK_BOT_TOKEN"])  # as notify_tutors reads it
    try:
        slack.slow("chat.postMessage", seconds=3)
        result = digest.post_run_digests(services_here(), run_id)
        assert result.unconfirmed == [CHANNEL_A] and result.posted == []
        wait_for(lambda: posts() == before + 1)  # Slack did post it
        again = digest.post_run_digests(services_here(), run_id)  # a redelivery, or the health check
        assert CHANNEL_A in again.skipped and again.posted == [] and again.unconfirmed == []
        time.sleep(2)
        assert posts() == before + 1
        recorded = rows(
            "SELECT status, error FROM `${slack_digests}` WHERE snapshot_date = @d AND channel_id = @c",
            d=week(3),
            c=CHANNEL_A,
        )
        assert [(r["status"], r["error"]) for r in recorded] == [("unconfirmed", "no_answer")]
    finally:
        monkeypatch.undo()
    # A tutor's signed click on that message proves it is there: the digest is `posted` with its ts again.
    posted = [m for m in slack.messages() if m["channel"] == CHANNEL_A and m["text"].startswith(label)][-1]
    url, secret = stack.endpoints["functions"]["slack_actions"], stack.local_secrets["SLACK_SIGNING_SECRET"]
    assert click(url, secret, posted, 202, "contatado", LOCAL_SLACK_TEAM, TUTOR_1).status_code == 200
    query = "SELECT status, message_ts FROM `${slack_digests}` WHERE snapshot_date = @d AND channel_id = @c"
    wait_for(lambda: rows(query, d=week(3), c=CHANNEL_A) == [{"status": "posted", "message_ts": posted["ts"]}])
    assert posts() == before + 1


def test_turma_canal_sets_where_a_class_digest_goes(stack: LocalStack) -> None:
    slack = SlackStandin(stack.endpoints["slack"])
    ok = _slash(stack, f"canal {B} <#C0NOVO01|tutores-b>", LOCAL_SLACK_USER, CHANNEL_T1, slack.response_url("c"))
    assert "<#C0NOVO01>" in ok.json()["text"]
    found = rows("SELECT channel_id FROM `${slack_channels}` WHERE scope = 'turma' AND target = @t", t=str(B))
    assert [r["channel_id"] for r in found] == ["C0NOVO01"]
    for text in (f"canal {B} #tutores-b", f"canal {B} <@U123>", "canal 999999 C0NOVO01", "canal naoexiste C0NOVO01"):
        assert ":warning:" in _slash(stack, text, LOCAL_SLACK_USER, CHANNEL_T1, slack.response_url("c")).json()["text"]
    # only coordinators change the registry
    refused = _slash(stack, f"canal {B} C0NOVO02", TUTOR_1, CHANNEL_T1, slack.response_url("c"))
    assert "não tem permissão" in refused.json()["text"]
