"""The staff web form (behind Google identity): GET shows it and the registered classes, POST registers or
deactivates a class through the Registry, then shows the page again with what happened."""

from __future__ import annotations

import hashlib
import json
import logging

import jinja2
from flask import Request, Response
from markupsafe import escape

from progress_monitor.add_tag.identity import Forbidden, Unauthenticated, csrf_token, csrf_valid, staff_identity
from progress_monitor.add_tag.registry import Outcome, instance_registry
from progress_monitor.errors import SecretUnavailableError, TransientError
from progress_monitor.platform.secret_store import get_secret
from progress_monitor.services import Services
from progress_monitor.settings import FORM_CSRF_SECRET
from progress_monitor.slack.signing import parse_form, read_body, unread

log = logging.getLogger("progress_monitor.add_tag")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("progress_monitor.add_tag", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),  # every value is untrusted input
    undefined=jinja2.StrictUndefined,
)
UNAVAILABLE = "O formulário não está configurado. Avise a equipe de dados."
DATABASE_DOWN = "O banco de dados não respondeu; tente novamente em instantes."


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/html", headers=SECURITY_HEADERS)


def _message_page(title: str, text: str, status: int) -> Response:
    page = (
        '<!doctype html><html lang="pt-BR"><head><meta charset="utf-8"><title>{t}</title></head>'
        "<body><main><h1>{t}</h1><p>{x}</p></main></body></html>"
    )
    return _html(page.format(t=escape(title), x=escape(text)), status)


def handle_form(request: Request, svc: Services) -> Response:
    """GET shows the form and the registered tags; POST adds or deactivates, then re-renders."""
    settings = svc.cfg
    if request.method not in ("GET", "POST"):
        return _message_page("Método não permitido", "Use o formulário da página.", 405)
    if (problem := settings.form_config_error()) is not None:
        log.error("form refused every request: %s", problem)
        return _message_page("Indisponível", UNAVAILABLE, 503)
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
        return _message_page("Indisponível", UNAVAILABLE, 503)
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
        outcome, values = _submit(svc, form, identity, str(token))
    try:
        reg = instance_registry(svc)
        tracks, tags = reg.tracks(), reg.list_tags()
    except TransientError:
        return _message_page("Indisponível", DATABASE_DOWN, 503)
    page = TEMPLATES.get_template("add_tag.html").render(
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


def _submit(svc: Services, form: dict[str, str], identity: str, token: str) -> tuple[Outcome, dict[str, str]]:
    """A POST with a valid token: what happened, and the values to show again (none after a success)."""
    reg = instance_registry(svc)
    action = form.get("acao")
    values = {k: str(form.get(k, ""))[:64] for k in ("tag_id", "track", "turma", "start_date")}
    try:
        if action == "adicionar":
            request_id = hashlib.sha256(json.dumps([token, values]).encode()).hexdigest()[:32]
            outcome = reg.register(form, identity, request_id)
            return outcome, ({} if outcome.ok else values)
        if action == "desativar":
            return reg.deactivate(form.get("tag_id"), identity), {}
        return Outcome(False, "Ação desconhecida."), {}
    except TransientError:
        return Outcome(False, DATABASE_DOWN), values if action == "adicionar" else {}
