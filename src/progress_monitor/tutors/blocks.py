"""The tutors' Slack messages as Block Kit, in Brazilian Portuguese; pure functions (no I/O, fast to test).

Every name shown comes from students' own Cademi profiles, so it is escaped as Slack asks (`&`, `<`, `>`): a
student named `<!channel>` must not ping a whole channel. Limits kept here: 50 blocks per message, 3000
characters per section, 2000 per button value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from progress_monitor.contracts.messages import CLICK_ACTIONS
from progress_monitor.slack_api import MAX_BLOCKS, MAX_TEXT

ACTIONS = dict(zip(CLICK_ACTIONS, ("Contatado", "Sem resposta"), strict=True))  # action_id -> button label
BUTTON_VALUE = re.compile(r"w=(\d{4}-\d{2}-\d{2});t=([1-9]\d{0,8});u=([1-9]\d{0,11})", re.ASCII)
STATUS_ICON = {"em risco": ":red_circle:", "atrasado": ":large_orange_circle:"}
BLOCKS_PER_CLASS = 3  # summary, "more" line, divider
BLOCKS_PER_STUDENT = 2  # the student's line, the buttons
MAX_CLASSES = (MAX_BLOCKS - 1) // BLOCKS_PER_CLASS  # after the header


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


def _student_line(s: ListedStudent, actions: list[Action]) -> str:
    parts = [f"*{escape(s.nome) or f'Aluno {s.user_id}'}* — {s.status}"]
    if s.weeks_behind:
        parts.append(f"{s.weeks_behind} {'semana' if s.weeks_behind == 1 else 'semanas'} fora do ritmo")
    if s.days_without_access is not None:
        parts.append(f"{s.days_without_access} {'dia' if s.days_without_access == 1 else 'dias'} sem acessar")
    else:
        parts.append("último acesso desconhecido")
    parts.append(f"{pct(s.actual)} feito (esperado {pct(s.expected)})")
    line = f"{STATUS_ICON.get(s.status, '')} " + " · ".join(parts)
    for a in actions:
        who = f"<@{a.tutor.removeprefix('slack:')}>"
        line += (
            f"\n:white_check_mark: contatado por {who}" if a.action == "contatado" else f"\n:zzz: sem resposta ({who})"
        )
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
            f"*Turma {escape(c.turma)} · {escape(c.track_name)}* (tag {c.tag_id}, {c.students} alunos)\n"
            f":red_circle: *{c.em_risco}* em risco{_change(c.em_risco, c.previous_em_risco)} · "
            f":large_orange_circle: *{c.atrasado}* atrasados{_change(c.atrasado, c.previous_atrasado)}\n"
            f"Progresso médio {pct(c.mean_actual)}"
            + (f" ({signed_pp(c.change_mean_actual)} na semana)" if c.change_mean_actual is not None else "")
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": summary}})
        names = listed.get(c.tag_id, [])
        for s in names:
            line = _student_line(s, actions.get((s.tag_id, s.user_id), []))
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line}})
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
    if not students:
        text = f"Turma {tag_id}, semana {iso_week(week)}: nenhum aluno atrasado ou em risco. :tada:"
        return {"response_type": "ephemeral", "replace_original": True, "text": text}
    title = f"Turma {tag_id}, semana {iso_week(week)}: {len(students)} aluno(s) para contatar"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}}]
    lines = [_student_line(s, []) for s in students]
    room = MAX_BLOCKS - 2
    for start in range(0, min(len(lines), room * LINES_PER_SECTION), LINES_PER_SECTION):
        text = "\n".join(lines[start : start + LINES_PER_SECTION])[:MAX_TEXT]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    if list_url:
        link = f"<{list_url}|Abrir a lista completa>"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    return {"response_type": "ephemeral", "replace_original": True, "text": title, "blocks": blocks[:MAX_BLOCKS]}
