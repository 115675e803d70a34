"""The tutors' Slack messages and the interaction payloads, without Slack: limits, escaping, hostile payloads."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from datetime import date
from typing import Any
from urllib.parse import urlencode

import flask
import pytest
from flask import Flask

from progress_monitor.settings import Settings
from progress_monitor.tutors.actions import InteractionRefused, handle_interaction, parse_click
from progress_monitor.tutors.blocks import (
    MAX_CLASSES,
    Action,
    ClassWeek,
    ListedStudent,
    button_value,
    class_list,
    digest,
    escape,
    parse_button_value,
    students_per_class,
)
from tests.unit.offline import offline_services

WEEK = date(2026, 11, 23)
TEAM = "TESCOLA01"


def student(tag: int, user: int, name: str = "Ana", status: str = "em risco") -> ListedStudent:
    return ListedStudent(tag, user, name, status, 2, 15, 20.0, 60.0)


def class_week(tag: int, flagged: int) -> ClassWeek:
    students = [student(tag, tag * 1000 + i) for i in range(flagged)]
    return ClassWeek(tag, "2026-09", "Analista", 40, flagged, 0, 1, 0, 45.0, 3.25, students)


@pytest.mark.parametrize("classes", [1, 2, 3, 5, 10, 16, 17, 40])
def test_a_digest_stays_within_slacks_50_blocks_whatever_the_channel_holds(classes: int) -> None:
    weeks = [class_week(5000 + i, 30) for i in range(classes)]
    room = students_per_class(min(classes, MAX_CLASSES), 10)
    listed = {c.tag_id: c.flagged[:room] for c in weeks}
    _, blocks = digest(WEEK, weeks, listed, {}, "https://example.com/lista")
    assert len(blocks) <= 50
    if classes <= MAX_CLASSES:
        named = sum(1 for b in blocks if b["type"] == "actions")
        assert named == room * classes and room >= (1 if classes <= 8 else 0)
    else:
        assert "E mais" in blocks[-1]["elements"][0]["text"]


def test_the_students_per_class_fill_the_50_blocks_and_no_more() -> None:
    # header + 3 blocks per class + 2 per student: 2 classes -> (50 - 1 - 6) / 4 = 10.75; 3 -> 40 / 6 = 6.67
    assert students_per_class(1, 10) == 10 and students_per_class(2, 10) == 10 and students_per_class(3, 10) == 6


def test_names_from_students_never_mention_or_link() -> None:
    hostile = student(5001, 1, "<!channel> <@U123|x> <https://evil.example|clique> & *negrito*")
    _, blocks = digest(WEEK, [class_week(5001, 0)], {5001: [hostile]}, {}, "")
    text = str(blocks)
    assert "<!channel>" not in text and "<@U123" not in text and "<https://evil" not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_the_summary_shows_the_weeks_change_in_portuguese() -> None:
    text, blocks = digest(WEEK, [class_week(5001, 3)], {5001: []}, {}, "")
    assert text == "Semana 2026-W48: 3 em risco e 0 atrasados em 1 turma(s)."
    summary = blocks[1]["text"]["text"]
    assert "*3* em risco (semana anterior: 1)" in summary and "Progresso médio 45% (+3,2 p.p. na semana)" in summary


def test_recorded_actions_show_under_the_student() -> None:
    s = student(5001, 7)
    actions = {(5001, 7): [Action("contatado", "slack:UTUTOR1"), Action("sem_resposta", "slack:UTUTOR2")]}
    _, blocks = digest(WEEK, [class_week(5001, 1)], {5001: [s]}, actions, "")
    line = blocks[2]["text"]["text"]
    assert "contatado por <@UTUTOR1>" in line and "sem resposta (<@UTUTOR2>)" in line


@pytest.mark.parametrize(
    "value",
    [
        "w=2026-11-23;t=5001;u=7;x=1",
        "w=2026-11-23;t=0;u=7",
        "w=2026-13-23;t=5001;u=7",
        "w=2026-11-23;t=5001;u=-7",
        "w=2026-11-23;t=５００１;u=7",
        "w=2026-11-23;t=5001;u=7\n",
        "",
        None,
        7,
    ],
)
def test_button_values_not_of_ours_are_refused(value: Any) -> None:
    assert parse_button_value(value) is None


def test_a_button_value_round_trips() -> None:
    assert parse_button_value(button_value(WEEK, 5001, 7)) == (WEEK, 5001, 7)


def click_payload() -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": TEAM},
        "user": {"id": "UTUTOR01"},
        "channel": {"id": "C0TURMA"},
        "container": {"message_ts": "1795647237.000006"},
        "message": {"ts": "1795647237.000006"},
        "actions": [{"action_id": "contatado", "value": button_value(WEEK, 5001, 7)}],
    }


def test_a_click_is_read_from_its_payload() -> None:
    click = parse_click(click_payload(), TEAM)
    assert (click.week, click.tag_id, click.user_id, click.action) == (WEEK, 5001, 7, "contatado")
    assert (click.tutor, click.channel, click.message_ts) == ("slack:UTUTOR01", "C0TURMA", "1795647237.000006")


def _with(path: list[str], value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(click_payload())
    target: Any = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_with(["type"], "view_submission"), "block_actions"),
        (_with(["team"], {"id": "TOUTRA01"}), "workspace"),
        (_with(["team"], "TESCOLA01"), "workspace"),
        (_with(["user"], {"id": "U1"}), "user"),
        (_with(["user"], None), "user"),
        (_with(["channel"], {"id": "#geral"}), "channel"),
        (_with(["container"], {"message_ts": "agora"}), "ts"),
        (_with(["actions"], []), "exactly one"),
        (_with(["actions"], "contatado"), "exactly one"),
        (_with(["actions"], [{"action_id": "apagar", "value": "x"}]), "unknown action"),
        (_with(["actions"], [{"action_id": "contatado", "value": "u=1"}]), "button value"),
        # a real date, but no digest's: every digest is a Monday's (2026-11-24 is a Tuesday, 11-22 a Sunday)
        (_with(["actions"], [{"action_id": "contatado", "value": "w=2026-11-24;t=5001;u=7"}]), "not a Monday"),
        (_with(["actions"], [{"action_id": "sem_resposta", "value": "w=2026-11-22;t=5001;u=7"}]), "not a Monday"),
        ([], "block_actions"),
        ("payload", "block_actions"),
    ],
)
def test_hostile_interaction_payloads_are_refused_by_name(payload: Any, reason: str) -> None:
    with pytest.raises(InteractionRefused, match=reason):
        parse_click(payload, TEAM)


def test_a_button_of_another_weekday_is_a_named_400_at_the_endpoint() -> None:
    payload = _with(["actions"], [{"action_id": "contatado", "value": "w=2026-11-25;t=5001;u=7"}])
    answer = post_interaction(payload)
    assert answer.status_code == 400 and "not a Monday" in answer.get_data(as_text=True)
    assert post_interaction({**payload, "type": "view_submission"}).status_code == 400


def post_interaction(payload: dict[str, Any]) -> Any:
    """`handle_interaction` on a request Slack signed, as functions-framework hands it over."""
    secret = "test-signing-secret"
    settings = Settings(
        slack_team_id=TEAM,
        slack_allowed_users="UCOORD01",
        secrets_backend="env",
        local_secrets={"SLACK_SIGNING_SECRET": secret},
    )
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()))
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}
    app = Flask(__name__)
    content_type = "application/x-www-form-urlencoded"
    with app.test_request_context("/", method="POST", data=body, headers=headers, content_type=content_type):
        return handle_interaction(flask.request, offline_services(settings))


def test_the_class_list_answer_is_ephemeral_and_bounded() -> None:
    many = [student(5001, i, f"Aluno {i}") for i in range(1, 900)]
    answer = class_list(5001, WEEK, many, "https://example.com/lista")
    assert answer["response_type"] == "ephemeral" and len(answer["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in answer["blocks"] if b["type"] == "section")
    assert class_list(5001, None, [], "")["text"].startswith("A turma 5001 ainda não tem dados")
