"""The tutors' Slack messages as Block Kit, in Brazilian Portuguese; pure functions (no I/O, fast to test).

Every name shown comes from students' own Cademi profiles, so it goes through `shown_name`: one short line
(`display_name`: control and format characters, newlines and runs of whitespace become one space, at most
MAX_NAME characters, then "…"), escaped as Slack asks (`&`, `<`, `>`: a student named `<!channel>` must not ping
a whole channel), in text objects marked `verbatim` (a URL or `#canal` in a name is not turned into a link). A
name can then neither forge a line of the digest, nor push students out of a section, nor swell a message (a
click's payload carries the whole message). Limits kept here: 50 blocks per message, 3000 characters per
section, 2000 per button value.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from progress_monitor.contracts.messages import CLICK_ACTIONS
from progress_monitor.contracts.values import is_pseudonym
from progress_monitor.slack.web import MAX_BLOCKS, MAX_TEXT

ACTIONS = dict(zip(CLICK_ACTIONS, ("Contatado", "Sem resposta"), strict=True))  # action_id -> button label
BUTTON_VALUE = re.compile(r"w=(\d{4}-\d{2}-\d{2});t=([1-9]\d{0,8});u=([1-9]\d{0,11})", re.ASCII)
STATUS_ICON = {"em risco": ":red_circle:", "atrasado": ":large_orange_circle:"}
BLOCKS_PER_CLASS = 3  # summary, "more" line, divider
BLOCKS_PER_STUDENT = 2  # the student's line, the buttons
MAX_CLASSES = (MAX_BLOCKS - 1) // BLOCKS_PER_CLASS  # after the header
MAX_NAME = 80  # characters of a name from outside shown in Slack; a longer one is cut and ends in "…"
MAX_ACTION_LINES = 4  # recorded clicks shown under a student; the rest are counted


@dataclass(frozen=True)
class ListedStudent:
    tag_id: int
    user_id: int
    nome: str
    status: str
    weeks_behind: int
    days_without_access: int | None
    actual: float | None
    expected: float | None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> ListedStudent:
        """From a report_student_week or tutor_list row (days without access named `days_without_access`)."""
        days = r["days_without_access"]
        return cls(
            tag_id=int(r["tag_id"]),
            user_id=int(r["user_id"]),
            nome=str(r["nome"] or ""),
            status=str(r["status"]),
            weeks_behind=int(r["weeks_behind"] or 0),
            days_without_access=None if days is None else int(days),
            actual=r["actual"],
            expected=r["expected"],
        )


@dataclass(frozen=True)
class ClassWeek:
    """One class in one week, as the digest summarises it; `flagged` are its students em risco or atrasado in
    the order tutors should call them."""

    tag_id: int
    turma: str
    track_name: str
    students: int
    em_risco: int
    atrasado: int
    previous_em_risco: int | None
    previous_atrasado: int | None
    mean_actual: float | None
    change_mean_actual: float | None
    flagged: list[ListedStudent] = field(default_factory=list)


@dataclass(frozen=True)
class Action:
    action: str
    tutor: str  # slack:<user id>


def escape(text: str) -> str:
    """Text from outside as Slack mrkdwn shows it literally (no mentions, links or channel pings)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def display_name(text: str, limit: int = MAX_NAME) -> str:
    """A name from outside as one short line: every control or format character (Unicode category C*: newlines,
    tabs, zero-width and bidi controls, lone surrogates) and every run of whitespace become one space, the ends
    are stripped, and a name longer than `limit` characters is cut, ending in "…". Not escaped (see `shown_name`)."""
    spaced = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    line = " ".join(spaced.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def shown_name(text: str) -> str:
    """A name from outside as mrkdwn shows it: one short line, escaped (put it in a `verbatim` text object)."""
    return escape(display_name(text))


def mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object that may carry names from outside: `verbatim`, so Slack links no URL or channel in
    them (our own `<@U…>` and `<url|label>` still render)."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def signed_pp(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}".replace(".", ",") + " p.p."


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def button_value(week: date, tag_id: int, user_id: int) -> str:
    return f"w={week.isoformat()};t={tag_id};u={user_id}"


def parse_button_value(value: object) -> tuple[date, int, int] | None:
    """(week, tag, student) from a button's value, or None when it is not one of ours."""
    if not isinstance(value, str) or (match := BUTTON_VALUE.fullmatch(value)) is None:
        return None
    try:
        return date.fromisoformat(match[1]), int(match[2]), int(match[3])
    except ValueError:
        return None


def students_per_class(classes: int, wanted: int) -> int:
    """How many students each class can list while the whole message stays within Slack's 50 blocks."""
    if classes == 0:
        return wanted
    room = MAX_BLOCKS - 1 - BLOCKS_PER_CLASS * classes
    return max(0, min(wanted, math.floor(room / (BLOCKS_PER_STUDENT * classes))))


def _change(now: int, before: int | None) -> str:
    return "" if before is None else f" (semana anterior: {before})"


def shown_students(students: list[ListedStudent]) -> list[ListedStudent]:
    """The students a message may name: an erased student (their pseudonym in the history) disappears from every
    render, list and re-render; the class's counts as reported stay."""
    return [s for s in students if not is_pseudonym(s.user_id)]


def _student_line(s: ListedStudent, actions: list[Action]) -> str:
    parts = [f"*{shown_name(s.nome) or f'Aluno {s.user_id}'}* — {s.status}"]
    if s.weeks_behind:
        parts.append(f"{s.weeks_behind} {'semana' if s.weeks_behind == 1 else 'semanas'} fora do ritmo")
    if s.days_without_access is not None:
        parts.append(f"{s.days_without_access} {'dia' if s.days_without_access == 1 else 'dias'} sem acessar")
    else:
        parts.append("último acesso desconhecido")
    parts.append(f"{pct(s.actual)} feito (esperado {pct(s.expected)})")
    line = f"{STATUS_ICON.get(s.status, '')} " + " · ".join(parts)
    for a in actions[:MAX_ACTION_LINES]:
        who = f"<@{a.tutor.removeprefix('slack:')}>"
        line += (
            f"\n:white_check_mark: contatado por {who}" if a.action == "contatado" else f"\n:zzz: sem resposta ({who})"
        )
    if len(actions) > MAX_ACTION_LINES:
        line += f"\n… e mais {len(actions) - MAX_ACTION_LINES} registro(s)"
    return line[:MAX_TEXT]


def _buttons(week: date, s: ListedStudent) -> dict[str, Any]:
    value = button_value(week, s.tag_id, s.user_id)
    return {
        "type": "actions",
        "block_id": f"aluno:{s.tag_id}:{s.user_id}",
        "elements": [
            {
                "type": "button",
                "action_id": "contatado",
                "style": "primary",
                "text": {"type": "plain_text", "text": ACTIONS["contatado"]},
                "value": value,
            },
            {
                "type": "button",
                "action_id": "sem_resposta",
                "text": {"type": "plain_text", "text": ACTIONS["sem_resposta"]},
                "value": value,
            },
        ],
    }


def digest(
    week: date,
    classes: list[ClassWeek],
    listed: dict[int, list[ListedStudent]],
    actions: dict[tuple[int, int], list[Action]],
    list_url: str,
) -> tuple[str, list[dict[str, Any]]]:
    """The Monday digest of one channel: (notification text, blocks). `listed` are the students named per
    class (the caller chose them within `students_per_class`); the rest are counted behind the link."""
    shown = classes[:MAX_CLASSES]
    em_risco = sum(c.em_risco for c in shown)
    atrasado = sum(c.atrasado for c in shown)
    text = f"Semana {iso_week(week)}: {em_risco} em risco e {atrasado} atrasados em {len(shown)} turma(s)."
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Alunos para contatar — semana {iso_week(week)}"}}
    ]
    for c in shown:
        summary = (
            f"*Turma {shown_name(c.turma)} · {shown_name(c.track_name)}* (tag {c.tag_id}, {c.students} alunos)\n"
            f":red_circle: *{c.em_risco}* em risco{_change(c.em_risco, c.previous_em_risco)} · "
            f":large_orange_circle: *{c.atrasado}* atrasados{_change(c.atrasado, c.previous_atrasado)}\n"
            f"Progresso médio {pct(c.mean_actual)}"
            + (f" ({signed_pp(c.change_mean_actual)} na semana)" if c.change_mean_actual is not None else "")
        )
        blocks.append({"type": "section", "text": mrkdwn(summary)})
        names = shown_students(listed.get(c.tag_id, []))
        for s in names:
            line = _student_line(s, actions.get((s.tag_id, s.user_id), []))
            blocks.append({"type": "section", "text": mrkdwn(line)})
            blocks.append(_buttons(week, s))
        rest = c.em_risco + c.atrasado - len(names)
        if not c.em_risco + c.atrasado:
            note = ":tada: Nenhum aluno atrasado nesta turma."
        elif rest > 0:
            note = f"E mais {rest} aluno(s) na lista completa."
        else:
            note = "Todos os alunos da lista estão acima."
        if list_url and c.em_risco + c.atrasado:
            note += f" <{list_url}|Abrir a lista completa>"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
        blocks.append({"type": "divider"})
    if len(classes) > len(shown):
        blocks[-1] = {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"E mais {len(classes) - len(shown)} turma(s) neste canal."}],
        }
    return text, blocks[:MAX_BLOCKS]


LINES_PER_SECTION = 15


def class_list(tag_id: int, week: date | None, students: list[ListedStudent], list_url: str) -> dict[str, Any]:
    """`/turma alunos <tag>`: the class's current list, ephemeral (only the one who asked sees it)."""
    if week is None:
        return {"response_type": "ephemeral", "text": f"A turma {tag_id} ainda não tem dados de progresso."}
    students = shown_students(students)
    if not students:
        text = f"Turma {tag_id}, semana {iso_week(week)}: nenhum aluno atrasado ou em risco. :tada:"
        return {"response_type": "ephemeral", "replace_original": True, "text": text}
    sections = _sections([_student_line(s, []) for s in students], MAX_BLOCKS - 2)
    listed = sum(len(lines) for lines in sections)
    count = f"{listed} de {len(students)}" if listed < len(students) else str(len(students))
    title = f"Turma {tag_id}, semana {iso_week(week)}: {count} aluno(s) para contatar"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}}]
    blocks += [{"type": "section", "text": mrkdwn("\n".join(lines))} for lines in sections]
    notes = [f"E mais {len(students) - listed} aluno(s) na lista completa."] if listed < len(students) else []
    if list_url:
        notes.append(f"<{list_url}|Abrir a lista completa>")
    if notes:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " ".join(notes)}]})
    return {"response_type": "ephemeral", "replace_original": True, "text": title, "blocks": blocks[:MAX_BLOCKS]}


def _sections(lines: list[str], room: int) -> list[list[str]]:
    """Lines packed in order into at most `room` sections of at most LINES_PER_SECTION lines and MAX_TEXT
    characters, never cutting a line: the lines that do not fit are left out, for the caller to count."""
    sections: list[list[str]] = []
    size = 0
    for line in lines:
        if sections and len(sections[-1]) < LINES_PER_SECTION and size + 1 + len(line) <= MAX_TEXT:
            sections[-1].append(line)
            size += 1 + len(line)
        elif len(sections) < room:
            sections.append([line])
            size = len(line)
        else:
            break
    return sections
