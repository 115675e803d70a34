"""add_tag's two front ends over one Registry: the staff web form and the Slack slash command."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from urllib.parse import parse_qs

import jinja2
from flask import Request, Response
from markupsafe import escape

from progress_monitor import runtime
from progress_monitor.add_tag.identity import (
    Forbidden,
    Unauthenticated,
    csrf_token,
    csrf_valid,
    slack_signature_valid,
    staff_identity,
)
from progress_monitor.add_tag.registry import Outcome, Registry
from progress_monitor.cademi import CademiClient
from progress_monitor.cademi_v3 import CademiV3Client
from progress_monitor.contracts import parse_uint
from progress_monitor.errors import TransientError
from progress_monitor.secrets import SecretUnavailableError, get_secret
from progress_monitor.settings import (
    CADEMI_API_KEY,
    FORM_CSRF_SECRET,
    SLACK_CHANNEL,
    SLACK_SIGNING_SECRET,
    SLACK_USER,
    Settings,
)

log = logging.getLogger("progress_monitor.add_tag")
MAX_BODY = 16 * 1024
MAX_FIELDS = 50
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
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

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("progress_monitor.add_tag", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),  # every value is untrusted input
    undefined=jinja2.StrictUndefined,
)
_lock = threading.Lock()
_registry: Registry | None = None


def registry(settings: Settings) -> Registry:
    """One Registry per instance, with a Cademi client tuned for interactive use (short timeouts).

    Without the API key (a Secret Manager hiccup) the answer is a registry that refuses tag checks for this
    request only: nothing is cached, so the next request reads the secret again."""
    global _registry
    with _lock:
        if _registry is not None:
            return _registry
        try:
            api_key = get_secret(settings, CADEMI_API_KEY)
        except SecretUnavailableError:
            log.error("Cademi API key unavailable: tag checks are refused until it can be read")
            return Registry(settings, None)
        timeout = settings.interactive_timeout_s
        # The school's one budget: a registration during a run takes a slot like any piece's call.
        source = CademiV3Client if settings.cademi_api_version == "v3" else CademiClient
        client = source(
            settings.cademi_base_url,
            api_key,
            runtime.cademi_budget(settings),
            connect_timeout_s=timeout,
            read_timeout_s=timeout,
            max_attempts=2,
            backoff_base_s=0.2,
            backoff_cap_s=0.5,
        )
        _registry = Registry(settings, client)
        return _registry


def reset() -> None:
    global _registry
    with _lock:
        _registry = None


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/html", headers=SECURITY_HEADERS)


def read_body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The raw body, or None when it is longer than `limit`: read from the stream with a cap, so a chunked
    body (no Content-Length) is refused after limit + 1 bytes instead of being read whole."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


def unread(response: Response) -> Response:
    """A refusal sent without reading the rest of the body: functions-framework reads the whole request
    before any non-streamed response (to avoid connection resets), which would undo the cap. Streamed, it
    leaves the body to the server, which drops the connection."""
    response.response = iter([response.get_data()])
    return response


def parse_form(body: bytes) -> dict[str, str] | None:
    """An url-encoded body as single values (the first of each name), or None when it is not UTF-8 or has
    more than MAX_FIELDS fields."""
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=MAX_FIELDS)
    except ValueError:  # UnicodeDecodeError included
        return None
    return {k: v[0] for k, v in fields.items() if v}


def _message_page(title: str, text: str, status: int) -> Response:
    page = (
        '<!doctype html><html lang="pt-BR"><head><meta charset="utf-8"><title>{t}</title></head>'
        "<body><main><h1>{t}</h1><p>{x}</p></main></body></html>"
    )
    return _html(page.format(t=escape(title), x=escape(text)), status)


# -- the web form ------------------------------------------------------------------------------------------


def handle_form(request: Request, settings: Settings) -> Response:
    """GET shows the form and the registered tags; POST adds or deactivates, then re-renders."""
    if request.method not in ("GET", "POST"):
        return _message_page("Método não permitido", "Use o formulário da página.", 405)
    if (problem := settings.form_config_error()) is not None:
        log.error("form refused every request: %s", problem)
        return _message_page("Indisponível", "O formulário não está configurado. Avise a equipe de dados.", 503)
    try:
        identity = staff_identity(settings, request.headers)
    except Unauthenticated as exc:
        log.warning("form request refused: %s", exc)
        return _message_page("Acesso restrito", "Entre com sua conta Google da escola para usar esta página.", 401)
    except Forbidden as exc:
        log.warning("form request from a non-staff account refused: %s", exc)
        return _message_page("Acesso negado", "Sua conta não está na lista da equipe da escola.", 403)
    try:
        secret = get_secret(settings, FORM_CSRF_SECRET)
    except SecretUnavailableError:
        log.error("form CSRF secret unavailable")
        return _message_page("Indisponível", "O formulário não está configurado. Avise a equipe de dados.", 503)
    reg = registry(settings)
    outcome: Outcome | None = None
    values: dict[str, str] = {}
    if request.method == "POST":
        body = read_body(request)
        if body is None:
            return unread(_message_page("Envio grande demais", "O formulário enviado é grande demais.", 413))
        form = parse_form(body)
        if form is None:
            return _message_page("Envio inválido", "O formulário enviado não pôde ser lido. Nada foi alterado.", 400)
        token = form.get("csrf")
        if not csrf_valid(secret, identity, token):
            log.warning("form POST with an invalid CSRF token refused")
            return _message_page(
                "Envio recusado",
                "A página expirou ou o envio não veio deste formulário. "
                "Recarregue a página e tente de novo. Nada foi alterado.",
                403,
            )
        action = form.get("acao")
        try:
            if action == "adicionar":
                values = {k: str(form.get(k, ""))[:64] for k in ("tag_id", "track", "turma", "start_date")}
                request_id = hashlib.sha256(json.dumps([token, values]).encode()).hexdigest()[:32]
                outcome = reg.register(form, identity, request_id)
                if outcome.ok:
                    values = {}
            elif action == "desativar":
                outcome = reg.deactivate(form.get("tag_id"), identity)
            else:
                outcome = Outcome(False, "Ação desconhecida.")
        except TransientError:
            outcome = Outcome(False, "O banco de dados não respondeu; tente novamente em instantes.")
    try:
        tracks, tags = reg.tracks(), reg.list_tags()
    except TransientError:
        return _message_page("Indisponível", "O banco de dados não respondeu; tente novamente em instantes.", 503)
    page = _env.get_template("add_tag.html").render(
        identity=identity,
        csrf=csrf_token(secret, identity),
        outcome=outcome,
        values=values,
        tracks=tracks,
        tags=tags,
        action_url=request.path or "/",
    )
    status = 200 if outcome is None or outcome.ok else 422
    return _html(page, status)


# -- the Slack slash command -------------------------------------------------------------------------------


def _class_list_request(settings: Settings, form: dict[str, str], words: list[str]) -> Response:
    """`/turma alunos <tag>`: acknowledged now (Slack waits 3 s at most); the worker answers through the
    command's response_url once BigQuery has."""
    if len(words) != 2 or parse_uint(words[1], 9) is None or int(words[1]) == 0:
        return _slack("Uso: `/turma alunos <tag>`, por exemplo `/turma alunos 5012`.")
    url = form.get("response_url")
    requester, channel = form.get("user_id", ""), form.get("channel_id", "")
    if not settings.slack_response_url_ok(url) or not SLACK_USER.fullmatch(requester):
        log.warning("Slack list request without a Slack response_url or user refused")
        return _slack("Pedido incompleto: tente de novo pelo Slack. Nada foi mostrado.")
    task = {
        "kind": "list",
        "tag_id": int(words[1]),
        "response_url": url,
        "requester": requester,
        "channel": channel if SLACK_CHANNEL.fullmatch(channel) else "",  # a DM: coordinators only
    }
    try:
        runtime.publish(settings, settings.slack_tasks_topic, json.dumps(task).encode(), {"kind": "list"})
    except Exception:
        log.exception("could not queue a class list request")
        return _slack("O serviço não respondeu; tente novamente em instantes.")
    return _slack(f"Buscando a lista da turma {words[1]}…")


def _slack(text: str, status: int = 200) -> Response:
    body = json.dumps({"response_type": "ephemeral", "text": text}, ensure_ascii=False)
    return Response(body, status=status, mimetype="application/json")


def verified_slack_body(request: Request, settings: Settings, limit: int = MAX_BODY) -> bytes | Response:
    """The raw body of a request Slack signed (slash command or interaction), or the refusal to send: 405, 503
    when Slack is not configured (fails closed), 413 over `limit`, 401 for a missing, wrong or stale signature."""
    if request.method != "POST":
        return Response("method not allowed", status=405)
    if (problem := settings.slack_config_error()) is not None:
        log.error("Slack request refused: %s", problem)
        return Response("not configured", status=503)
    body = read_body(request, limit)
    if body is None:
        return unread(Response("payload too large", status=413))
    try:
        secret = get_secret(settings, SLACK_SIGNING_SECRET)
    except SecretUnavailableError:
        log.error("Slack signing secret unavailable; refusing the request")
        return Response("not configured", status=503)
    if not slack_signature_valid(secret, request.headers, body, settings.slack_max_skew_s):
        log.warning("Slack request with a missing, stale or wrong signature refused")
        return Response("invalid signature", status=401)
    return body


def handle_slack(request: Request, settings: Settings) -> Response:
    """Verify Slack's signature on the raw body, then run `/turma <subcomando>` and answer ephemerally."""
    body = verified_slack_body(request, settings)
    if isinstance(body, Response):
        return body
    form = parse_form(body)
    if form is None:
        return _slack("Pedido ilegível: o texto não é UTF-8 ou tem campos demais. Nada foi alterado.")
    if form.get("team_id") != settings.slack_team_id:
        log.warning("Slack request from another workspace refused")
        return _slack("Este comando só funciona no Slack da escola. Nada foi alterado.")
    user_id = form.get("user_id", "")
    words = form.get("text", "").split()
    command = words[0].lower() if words else "ajuda"
    if command == "alunos":  # any member; the worker shows the list only in the class's tutors' channel
        return _class_list_request(settings, form, words)
    if user_id not in settings.slack_users:
        log.warning("Slack request from a member outside the allow-list refused", extra={"slack_user": user_id[:30]})
        return _slack(
            "Você não tem permissão para usar /turma. Peça à coordenação para incluir seu usuário. Nada foi alterado."
        )
    identity = f"slack:{user_id}"  # the id, which members cannot change (their user name they can)
    reg = registry(settings)
    try:
        if command == "adicionar":
            if len(words) != 5:
                return _slack(
                    "Uso: `/turma adicionar <tag> <trilha> <turma> <início>`, por exemplo "
                    "`/turma adicionar 5012 analista 2026-03 2026-03-02`."
                )
            fields = dict(zip(("tag_id", "track", "turma", "start_date"), words[1:], strict=True))
            request_id = hashlib.sha256(request.headers.get("X-Slack-Signature", "").encode()).hexdigest()[:32]
            outcome = reg.register(fields, identity, request_id)
            if outcome.ok:
                return _slack(f":white_check_mark: {outcome.message}")
            details = "\n".join(f"• {m}" for m in outcome.field_errors.values())
            return _slack(f":warning: {outcome.message}" + (f"\n{details}" if details else ""))
        if command == "listar":
            tags = reg.list_tags()
            if not tags:
                return _slack("Nenhuma turma registrada ainda.")
            lines = [
                f"• tag {t['tag_id']} — {t['track_id']} {t['turma']} ({'ativa' if t['active'] else 'desativada'})"
                for t in tags[:30]
            ]
            return _slack("*Turmas registradas (mais novas primeiro)*\n" + "\n".join(lines))
        if command == "canal":
            if len(words) != 3:
                return _slack(
                    "Uso: `/turma canal <tag ou trilha> <#canal>`, por exemplo `/turma canal 5012 #tutores-2026-03`."
                )
            outcome = reg.set_channel(words[1], words[2], identity)
            return _slack((":white_check_mark: " if outcome.ok else ":warning: ") + outcome.message)
        if command == "desativar":
            if len(words) != 2:
                return _slack("Uso: `/turma desativar <tag>`.")
            outcome = reg.deactivate(words[1], identity)
            return _slack((":white_check_mark: " if outcome.ok else ":warning: ") + outcome.message)
    except TransientError:
        return _slack("O banco de dados não respondeu; tente novamente em instantes. Nada foi alterado.")
    return _slack(HELP)
