"""The Slack slash command `/turma <verbo> …`: Slack's signature checked on the raw body, then one handler per
verb (`VERBS`), each answering ephemerally in Brazilian Portuguese."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Request, Response

from progress_monitor.add_tag.registry import Outcome, instance_registry
from progress_monitor.contracts.messages import ClassListTask
from progress_monitor.contracts.values import SLACK_CHANNEL, SLACK_USER, parse_uint
from progress_monitor.errors import TransientError
from progress_monitor.services import Services
from progress_monitor.slack.signing import parse_form, verified_slack_body

log = logging.getLogger("progress_monitor.add_tag")
HELP = (
    "*Comandos de /turma*\n"
    "• `/turma adicionar <tag> <trilha> <turma> <início>` — por exemplo `/turma adicionar 5012 analista 2026-03 "
    "2026-03-02` (início em AAAA-MM-DD ou DD/MM/AAAA)\n"
    "• `/turma listar` — as turmas registradas, as mais novas primeiro\n"
    "• `/turma desativar <tag>` — para de extrair uma turma encerrada (o histórico continua)\n"
    "• `/turma canal <tag ou trilha> <#canal>` — onde os tutores recebem o resumo de segunda-feira\n"
    "• `/turma alunos <tag>` — a lista atual de alunos para contatar (só você vê; no canal dos tutores da turma)\n"
    "• `/turma ajuda` — esta mensagem"
)


@dataclass(frozen=True)
class Command:
    """One verified `/turma` request: the services, Slack's form fields, the words of its text, the request."""

    svc: Services
    form: dict[str, str]
    words: list[str]
    request: Request

    @property
    def identity(self) -> str:
        return f"slack:{self.form.get('user_id', '')}"  # the id, which members cannot change (their name they can)


def reply(text: str, status: int = 200) -> Response:
    body = json.dumps({"response_type": "ephemeral", "text": text}, ensure_ascii=False)
    return Response(body, status=status, mimetype="application/json")


def _outcome(outcome: Outcome) -> Response:
    return reply((":white_check_mark: " if outcome.ok else ":warning: ") + outcome.message)


def _add(cmd: Command) -> Response:
    if len(cmd.words) != 5:
        return reply(
            "Uso: `/turma adicionar <tag> <trilha> <turma> <início>`, por exemplo "
            "`/turma adicionar 5012 analista 2026-03 2026-03-02`."
        )
    fields = dict(zip(("tag_id", "track", "turma", "start_date"), cmd.words[1:], strict=True))
    request_id = hashlib.sha256(cmd.request.headers.get("X-Slack-Signature", "").encode()).hexdigest()[:32]
    outcome = instance_registry(cmd.svc).register(fields, cmd.identity, request_id)
    if outcome.ok:
        return reply(f":white_check_mark: {outcome.message}")
    details = "\n".join(f"• {m}" for m in outcome.field_errors.values())
    return reply(f":warning: {outcome.message}" + (f"\n{details}" if details else ""))


def _list(cmd: Command) -> Response:
    tags = instance_registry(cmd.svc).list_tags()
    if not tags:
        return reply("Nenhuma turma registrada ainda.")
    lines = [
        f"• tag {t['tag_id']} — {t['track_id']} {t['turma']} ({'ativa' if t['active'] else 'desativada'})"
        for t in tags[:30]
    ]
    return reply("*Turmas registradas (mais novas primeiro)*\n" + "\n".join(lines))


def _channel(cmd: Command) -> Response:
    if len(cmd.words) != 3:
        return reply("Uso: `/turma canal <tag ou trilha> <#canal>`, por exemplo `/turma canal 5012 #tutores-2026-03`.")
    return _outcome(instance_registry(cmd.svc).set_channel(cmd.words[1], cmd.words[2], cmd.identity))


def _deactivate(cmd: Command) -> Response:
    if len(cmd.words) != 2:
        return reply("Uso: `/turma desativar <tag>`.")
    return _outcome(instance_registry(cmd.svc).deactivate(cmd.words[1], cmd.identity))


def _class_list(cmd: Command) -> Response:
    """`/turma alunos <tag>`: acknowledged now (Slack waits 3 s at most); the worker answers through the
    command's response_url once BigQuery has."""
    words, form = cmd.words, cmd.form
    if len(words) != 2 or parse_uint(words[1], 9) is None or int(words[1]) == 0:
        return reply("Uso: `/turma alunos <tag>`, por exemplo `/turma alunos 5012`.")
    url = form.get("response_url")
    requester, channel = form.get("user_id", ""), form.get("channel_id", "")
    if not cmd.svc.cfg.slack_response_url_ok(url) or not SLACK_USER.fullmatch(requester):
        log.warning("Slack list request without a Slack response_url or user refused")
        return reply("Pedido incompleto: tente de novo pelo Slack. Nada foi mostrado.")
    task = ClassListTask(
        tag_id=int(words[1]),
        response_url=str(url),
        requester=requester,
        channel=channel if SLACK_CHANNEL.fullmatch(channel) else "",  # a DM: coordinators only
    )
    try:
        cmd.svc.send(task)
    except Exception:
        log.exception("could not queue a class list request")
        return reply("O serviço não respondeu; tente novamente em instantes.")
    return reply(f"Buscando a lista da turma {words[1]}…")


def _help(cmd: Command) -> Response:
    return reply(HELP)


# Verb -> handler, and whether any member may use it (the rest need the coordinators' allow-list). `alunos` is
# open: the worker shows a class's list only in that class's tutors' channel (or to a coordinator).
VERBS: dict[str, tuple[Callable[[Command], Response], bool]] = {
    "adicionar": (_add, False),
    "listar": (_list, False),
    "canal": (_channel, False),
    "desativar": (_deactivate, False),
    "alunos": (_class_list, True),
    "ajuda": (_help, False),
}


def handle_slack(request: Request, svc: Services) -> Response:
    """Verify Slack's signature on the raw body, then run `/turma <verbo>` and answer ephemerally."""
    settings = svc.cfg
    body = verified_slack_body(request, settings)
    if isinstance(body, Response):
        return body
    form = parse_form(body)
    if form is None:
        return reply("Pedido ilegível: o texto não é UTF-8 ou tem campos demais. Nada foi alterado.")
    if form.get("team_id") != settings.slack_team_id:
        log.warning("Slack request from another workspace refused")
        return reply("Este comando só funciona no Slack da escola. Nada foi alterado.")
    words = form.get("text", "").split()
    handler, open_to_all = VERBS.get(words[0].lower() if words else "ajuda", (_help, False))
    user_id = form.get("user_id", "")
    if not open_to_all and user_id not in settings.slack_users:
        log.warning("Slack request from a member outside the allow-list refused", extra={"slack_user": user_id[:30]})
        return reply(
            "Você não tem permissão para usar /turma. Peça à coordenação para incluir seu usuário. Nada foi alterado."
        )
    try:
        return handler(Command(svc, form, words, request))
    except TransientError:
        return reply("O banco de dados não respondeu; tente novamente em instantes. Nada foi alterado.")
