"""Tutors acting on the list: the buttons under a digest, and `/turma alunos <tag>`.

Slack wants an answer within 3 seconds, so the HTTP side (`handle_interaction`, the slash command) only
verifies, validates and publishes a task on the Slack tasks topic; the `notify_tutors` worker records the
click and updates the message, or answers the list through the `response_url`, with Pub/Sub's retries.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from typing import Any

from flask import Request, Response

from progress_monitor.contracts.messages import CLICK_ACTIONS, ClassListTask, ClickTask
from progress_monitor.contracts.values import MESSAGE_TS, SLACK_CHANNEL, SLACK_USER
from progress_monitor.errors import PermanentError
from progress_monitor.pipeline.reporting import call_first
from progress_monitor.platform import warehouse
from progress_monitor.services import Services
from progress_monitor.slack.signing import parse_form, verified_slack_body
from progress_monitor.slack.web import respond
from progress_monitor.tutors import blocks, claims, digest, records

log = logging.getLogger("progress_monitor.tutors")
MAX_PAYLOAD = 64 * 1024  # a block_actions payload carries the whole message; ours stay well under this
# The class's part of the tutors' list (sql/tutor_list.sql: its latest week, students em risco or atrasado),
# read with names only: the Slack agent cannot read the contact columns the list holds.
TUTOR_LIST_SQL = """
WITH latest AS (SELECT MAX(snapshot_date) AS snapshot_date FROM `${report_student_week}` WHERE tag_id = @tag_id)
SELECT s.tag_id, s.user_id, c.nome, s.status, s.weeks_behind, s.days_without_access, s.actual, s.expected,
  s.snapshot_date
FROM `${report_student_week}` s JOIN latest l ON l.snapshot_date = s.snapshot_date
LEFT JOIN `${student_names}` c ON c.user_id = s.user_id
WHERE s.tag_id = @tag_id AND s.status IN ('em risco', 'atrasado')
  AND s.user_id >= 0  -- an erased student's pseudonym is never shown (contracts.values.is_pseudonym)
ORDER BY ${call_first}
"""


class InteractionRefused(ValueError):
    """An interaction payload that is not a click on one of our buttons."""


def parse_click(payload: Any, team_id: str) -> ClickTask:
    """A `block_actions` payload -> the click; InteractionRefused names what is wrong. Everything is checked:
    the signature proves Slack sent it, not that its fields are ours."""
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise InteractionRefused("not a block_actions payload")
    team = payload.get("team")
    if not isinstance(team, dict) or team.get("id") != team_id:
        raise InteractionRefused("another workspace")
    user = payload.get("user")
    tutor = user.get("id") if isinstance(user, dict) else None
    if not isinstance(tutor, str) or not SLACK_USER.fullmatch(tutor):
        raise InteractionRefused("no user id")
    channel = payload.get("channel")
    channel_id = channel.get("id") if isinstance(channel, dict) else None
    if not isinstance(channel_id, str) or not SLACK_CHANNEL.fullmatch(channel_id):
        raise InteractionRefused("no channel id")
    container = payload.get("container")
    message = payload.get("message")
    ts = (container.get("message_ts") if isinstance(container, dict) else None) or (
        message.get("ts") if isinstance(message, dict) else None
    )
    if not isinstance(ts, str) or not MESSAGE_TS.fullmatch(ts):
        raise InteractionRefused("no message ts")
    actions = payload.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise InteractionRefused("expected exactly one action")
    action_id = actions[0].get("action_id")
    if not isinstance(action_id, str) or action_id not in CLICK_ACTIONS:  # a list or an object is no action id
        raise InteractionRefused("unknown action")
    parsed = blocks.parse_button_value(actions[0].get("value"))
    if parsed is None:
        raise InteractionRefused("unknown button value")
    week, tag_id, user_id = parsed
    if week.weekday() != 0:  # every digest is a Monday's: a button of another day was not made by us
        raise InteractionRefused("button value's week is not a Monday")
    return ClickTask(week, tag_id, user_id, action_id, f"slack:{tutor}", channel_id, ts)


def handle_interaction(request: Request, svc: Services) -> Response:
    """Slack's interactivity request URL: verify like the slash command, then hand the click to the worker."""
    settings = svc.cfg
    body = verified_slack_body(request, settings, MAX_PAYLOAD)
    if isinstance(body, Response):
        return body
    form = parse_form(body)
    try:
        if form is None or "payload" not in form:
            raise InteractionRefused("no payload field")
        click = parse_click(json.loads(form["payload"]), settings.slack_team_id)
    except (ValueError, RecursionError) as exc:  # InteractionRefused and bad JSON
        log.warning("Slack interaction refused: %s", str(exc)[:100])
        return Response(f"refused: {str(exc)[:100]}", status=400)
    try:
        svc.send(click)
    except Exception:
        log.exception("could not queue a tutor's click")
        return Response("try again", status=503)  # Slack shows the tutor that the click did not go through
    log.info("tutor action received", extra={"tag_id": click.tag_id, "slack_user": click.tutor})
    return Response("", status=200)


def record_click(svc: Services, click: ClickTask) -> bool:
    """Record a click once (a double click or a replayed request finds its row) and update the message in
    place; False (nothing recorded) when the button is not on the digest Slack says it came from."""
    bucket = svc.state
    claim = claims.read(bucket, click.week, click.channel)
    unconfirmed = claim is not None and claim.body.get("status") == "unconfirmed" and claim.ts is None
    if claim is not None and unconfirmed and (click.tag_id, click.user_id) in claim.listed:
        # Slack signed a click on this channel's message for that week: the post we could not confirm is there.
        digest.confirm(svc, claim, click.channel, click.message_ts)
    if claim is None or claim.ts != click.message_ts or (click.tag_id, click.user_id) not in claim.listed:
        log.warning(
            "click on a student the digest of this channel does not list; ignored",
            extra={"tag_id": click.tag_id, "slack_user": click.tutor},
        )
        return False
    records.record_action(
        svc,
        {
            "snapshot_date": click.week,
            "tag_id": click.tag_id,
            "user_id": click.user_id,
            "action": click.action,
            "tutor": click.tutor,
            "channel_id": click.channel,
            "acted_at": svc.now(),
        },
    )
    digest.refresh_message(svc, click.week, click.channel, claim)
    return True


def class_list_reply(svc: Services, tag_id: int, requester: str, channel: str) -> dict[str, Any]:
    """The answer to `/turma alunos <tag>`: only in the class's tutors' channel, or to a coordinator."""
    cfg = svc.cfg
    channels = {int(r["tag_id"]): r["channel_id"] for r in warehouse.query(svc, digest.CHANNELS_SQL)}
    if tag_id not in channels:
        return {"response_type": "ephemeral", "text": f"A turma {tag_id} não está registrada."}
    if requester not in cfg.slack_users and channels[tag_id] != channel:
        return {
            "response_type": "ephemeral",
            "text": "A lista desta turma só pode ser vista no canal dos tutores da turma. Nada foi mostrado.",
        }
    order = {"call_first": call_first("s.", "days_without_access")}
    rows = warehouse.query(svc, TUTOR_LIST_SQL, sql_vars=order, tag_id=tag_id)
    students = [blocks.ListedStudent.from_row(r) for r in rows]
    week = rows[0]["snapshot_date"] if rows else _latest_week(svc, tag_id)
    return blocks.class_list(tag_id, week, students, cfg.tutor_list_url)


def _latest_week(svc: Services, tag_id: int) -> date | None:
    found = warehouse.query(
        svc, "SELECT MAX(snapshot_date) AS d FROM `${report_student_week}` WHERE tag_id = @t", t=tag_id
    )
    return found[0]["d"] if found else None


def answer_list(svc: Services, task: ClassListTask) -> None:
    if not svc.cfg.slack_response_url_ok(task.response_url):
        raise PermanentError("list task field 'response_url' is not Slack's")
    respond(task.response_url, class_list_reply(svc, task.tag_id, task.requester, task.channel))
