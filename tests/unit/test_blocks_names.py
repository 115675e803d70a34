"""Names from students' Cademi profiles are hostile: in Slack they stay one short, escaped, unlinked line.

A newline in a name forged a ":white_check_mark: contatado por …" line, a 3,000-character name hid students of
`/turma alunos`, and three such names pushed a click's payload (which carries the whole message) over the
64 KiB the endpoint reads, so every button of that channel answered 413. Named cases first, then properties.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import date
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progress_monitor.slack.web import MAX_BLOCKS, MAX_TEXT
from progress_monitor.tutors.actions import MAX_PAYLOAD
from progress_monitor.tutors.blocks import (
    MAX_CLASSES,
    MAX_NAME,
    Action,
    ClassWeek,
    ListedStudent,
    button_value,
    class_list,
    digest,
    display_name,
    escape,
    students_per_class,
)

WEEK = date(2026, 11, 23)
FORGED = "Ana\n:white_check_mark: contatado por <@UTUTOR01>"
# the longest a rendered student line can be: icon, bold name (every character escaped to at most 5), the rest
MAX_LINE = 30 + 5 * MAX_NAME + 150


def student(tag: int, user: int, name: str) -> ListedStudent:
    return ListedStudent(tag, user, name, "em risco", 12, 365, 5.5, 100.0)


def class_week(tag: int, flagged: list[ListedStudent], turma: str = "2026-09", track: str = "Analista") -> ClassWeek:
    return ClassWeek(tag, turma, track, 4000, len(flagged), 0, 999, 999, 45.5, -3.25, flagged)


def sections(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b["text"] for b in blocks if b["type"] == "section"]


def student_lines(blocks: list[dict[str, Any]]) -> list[str]:
    """The text of each student's section in a digest (the section right before its buttons)."""
    return [blocks[i - 1]["text"]["text"] for i, b in enumerate(blocks) if b["type"] == "actions"]


def click_body(text: str, blocks: list[dict[str, Any]], ensure_ascii: bool) -> bytes:
    """The body Slack POSTs when a button of this message is pressed: a `block_actions` payload carrying the
    whole message (fields as in Slack's reference), url-encoded in a `payload` field."""
    button = next(b for b in blocks if b["type"] == "actions")
    element = button["elements"][0]
    payload = {
        "type": "block_actions",
        "user": {"id": "UTUTOR01", "username": "tutora", "name": "tutora", "team_id": "TESCOLA01"},
        "api_app_id": "A0ESCOLA01",
        "token": "x" * 24,
        "container": {"type": "message", "message_ts": "1795647237.000006", "channel_id": "C0TURMA01"},
        "trigger_id": "1234567890123.1234567890123.0123456789abcdef0123456789abcdef",
        "team": {"id": "TESCOLA01", "domain": "escola"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0TURMA01", "name": "tutores-analistas"},
        "message": {
            "bot_id": "B0ESCOLA01",
            "type": "message",
            "text": text,
            "user": "U0BOT0001",
            "ts": "1795647237.000006",
            "app_id": "A0ESCOLA01",
            "blocks": blocks,
            "team": "TESCOLA01",
        },
        "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/TESCOLA01/1234567890123/abcdefghijklmnopqrstuvwx",
        "actions": [{**element, "block_id": button["block_id"], "action_ts": "1795647240.123456"}],
    }
    return urlencode({"payload": json.dumps(payload, ensure_ascii=ensure_ascii)}).encode()


# -- named cases ---------------------------------------------------------------------------------------------------


def test_a_newline_in_a_name_forges_no_contacted_line() -> None:
    forged = student(5001, 7, FORGED)
    _, blocks = digest(WEEK, [class_week(5001, [forged])], {5001: [forged]}, {}, "")
    (line,) = student_lines(blocks)
    assert "\n" not in line and "contatado por &lt;@UTUTOR01&gt;" in line  # shown as the text it is, on one line
    actions = {(5001, 7): [Action("contatado", "slack:UTUTOR02")]}
    _, blocks = digest(WEEK, [class_week(5001, [forged])], {5001: [forged]}, actions, "")
    (line,) = student_lines(blocks)
    assert [x for x in line.split("\n") if x.startswith(":white_check_mark:")] == [
        ":white_check_mark: contatado por <@UTUTOR02>"
    ]


def test_every_invisible_and_line_breaking_character_becomes_one_space() -> None:
    name = "\u202eAna\u200b\u00a0\u2028Maria\r\n\tSilva\x00\x85 \u2029\ufeffde\u061cSouza\ud800  "
    assert display_name(name) == "Ana Maria Silva de Souza"
    assert display_name("\n\t\u200b ") == "" and display_name("José") == "José"


def test_a_long_name_is_cut_with_an_ellipsis_before_it_is_escaped() -> None:
    cut = display_name("Ana " + "&" * 3000)
    assert len(cut) == MAX_NAME and cut.endswith("…") and cut.startswith("Ana &&")
    assert display_name("A" * MAX_NAME) == "A" * MAX_NAME
    assert display_name("Ana" + " " * 100 + "B" * 200) == "Ana " + "B" * (MAX_NAME - 5) + "…"
    line = class_list(5001, WEEK, [student(5001, 1, "<" * 3000)], "")["blocks"][1]["text"]["text"]
    assert "&lt;" * (MAX_NAME - 1) + "…" in line and "<" not in line


def test_every_text_object_carrying_a_name_is_verbatim() -> None:
    s = student(5001, 7, "https://evil.example #geral @aqui")
    _, blocks = digest(WEEK, [class_week(5001, [s], turma="#geral")], {5001: [s]}, {}, "https://example.com/l")
    carrying = [t for t in sections(blocks) if "evil.example" in t["text"] or "#geral" in t["text"]]
    assert len(carrying) == 2 and all(t["verbatim"] is True for t in carrying)
    answer = class_list(5001, WEEK, [s], "https://example.com/l")
    named = [t for t in sections(answer["blocks"]) if "evil.example" in t["text"]]
    assert len(named) == 1 and named[0]["verbatim"] is True


def test_long_names_hide_no_student_of_the_class_list() -> None:
    many = [student(5001, i, f"{i:03d}" + "x" * 3000) for i in range(1, 41)]
    answer = class_list(5001, WEEK, many, "https://example.com/lista")
    text = "\n".join(t["text"] for t in sections(answer["blocks"])[1:])
    assert [line.split("*")[1][:3] for line in text.split("\n")] == [f"{i:03d}" for i in range(1, 41)]
    assert answer["text"].endswith(": 40 aluno(s) para contatar")


def test_the_class_list_title_counts_what_it_shows() -> None:
    many = [student(5001, i, "&" * 200) for i in range(1, 900)]
    answer = class_list(5001, WEEK, many, "https://example.com/lista")
    lines = [x for t in sections(answer["blocks"])[1:] for x in t["text"].split("\n")]
    assert len(answer["blocks"]) <= MAX_BLOCKS and 0 < len(lines) < 899
    assert answer["text"].endswith(f": {len(lines)} de 899 aluno(s) para contatar")
    assert f"E mais {899 - len(lines)} aluno(s) na lista completa." in answer["blocks"][-1]["elements"][0]["text"]
    assert all(len(t["text"]) <= MAX_TEXT for t in sections(answer["blocks"]))


def test_three_hostile_names_no_longer_push_a_click_over_the_payload_cap() -> None:
    names = ["\U0001f600" * 3000, "&" * 3000, "\n".join(["<!channel>"] * 300)]
    flagged = [student(5001, i, n) for i, n in enumerate(names, start=1)]
    text, blocks = digest(WEEK, [class_week(5001, flagged)], {5001: flagged}, {}, "https://example.com/lista")
    assert len(click_body(text, blocks, ensure_ascii=True)) < 16 * 1024


def test_recorded_clicks_under_a_student_are_bounded() -> None:
    s = student(5001, 7, "Ana")
    actions = {(5001, 7): [Action("contatado", f"slack:UTUTOR{i:03d}") for i in range(60)]}
    (line,) = student_lines(digest(WEEK, [class_week(5001, [s])], {5001: [s]}, actions, "")[1])
    assert line.count("contatado por") == 4 and line.endswith("… e mais 56 registro(s)")


# -- properties ----------------------------------------------------------------------------------------------------

HOSTILE = [
    "\n", "\r\n", "\r", "\t", "\v", "\x00", "\x85", "\u2028", "\u2029", "\u200b", "\u200d", "\u202e", "\u2066",
    "\ufeff", "\u00a0", "\u3000", "&", "<", ">", "<!channel>", "<@U0TUTOR1>", "*", "_", "~", "`", "```",
    ":white_check_mark: contatado por ", "https://evil.example/", "#geral", "\U0001f600", "\u0301" * 20, "x" * 500,
]  # fmt: skip
names = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=400),
    st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=8)), max_size=40).map("".join),
)


@given(names)
def test_any_name_is_one_bounded_line_of_visible_text(name: str) -> None:
    shown = display_name(name)
    assert len(shown) <= MAX_NAME and shown == shown.strip() and "  " not in shown
    assert not any(unicodedata.category(ch).startswith("C") for ch in shown)
    assert not any(ch.isspace() and ch != " " for ch in shown)
    assert len(escape(shown)) <= 5 * MAX_NAME


@given(names, st.lists(st.sampled_from(["contatado", "sem_resposta"]), max_size=12))
def test_a_rendered_line_has_no_newline_from_the_name_and_is_bounded(name: str, clicks: list[str]) -> None:
    s = student(5001, 7, name)
    actions = {(5001, 7): [Action(a, f"slack:UTUTOR{i:03d}") for i, a in enumerate(clicks)]}
    _, blocks = digest(WEEK, [class_week(5001, [s])], {5001: [s]}, actions, "")
    (line,) = student_lines(blocks)
    first, *rest = line.split("\n")
    assert len(rest) == min(len(clicks), 4) + (len(clicks) > 4)  # one line per click shown, one for the others
    assert len(first) <= MAX_LINE and len(line) <= MAX_LINE + 5 * 50
    answer = class_list(5001, WEEK, [s], "")
    assert "\n" not in answer["blocks"][1]["text"]["text"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=1, max_value=MAX_CLASSES + 2),
    st.lists(names, min_size=1, max_size=5),
    st.sampled_from(["\U0001f600" * 3000, "&" * 3000, "<" * 3000, "\u00e9" * 3000]),
    st.lists(st.sampled_from(["contatado", "sem_resposta"]), max_size=12),
)
def test_a_full_digest_of_hostile_names_stays_within_every_slack_limit(
    classes: int, some: list[str], worst: str, clicks: list[str]
) -> None:
    """As many students as the 50 blocks allow (more than DIGEST_STUDENTS_PER_CLASS's 20 allows), each with the
    hostile names drawn or a worst-case one, every registry name hostile too, clicks by many tutors."""
    room = students_per_class(min(classes, MAX_CLASSES), MAX_BLOCKS)
    weeks: list[ClassWeek] = []
    listed: dict[int, list[ListedStudent]] = {}
    actions: dict[tuple[int, int], list[Action]] = {}
    for c in range(classes):
        tag = 5001 + c
        pool = [*some, worst]
        flagged = [student(tag, 1 + i, pool[i % len(pool)]) for i in range(room)]
        weeks.append(class_week(tag, flagged, turma=worst, track=worst))
        listed[tag] = flagged
        for s in flagged:
            actions[(tag, s.user_id)] = [Action(a, f"slack:UTUTOR{i:03d}") for i, a in enumerate(clicks)]
    text, blocks = digest(WEEK, weeks, listed, actions, "https://lookerstudio.google.com/reporting/" + "x" * 60)
    assert len(blocks) <= MAX_BLOCKS
    assert all(len(t["text"]) <= MAX_TEXT for t in sections(blocks))
    for b in blocks:
        for element in b.get("elements", []):
            assert len(element.get("value", "")) <= 2000
    if any(b["type"] == "actions" for b in blocks):
        for ensure_ascii in (True, False):
            assert len(click_body(text, blocks, ensure_ascii)) < MAX_PAYLOAD


def test_a_button_value_is_independent_of_the_name() -> None:
    s = student(5001, 7, FORGED)
    _, blocks = digest(WEEK, [class_week(5001, [s])], {5001: [s]}, {}, "")
    assert [e["value"] for e in blocks[-3]["elements"]] == [button_value(WEEK, 5001, 7)] * 2
