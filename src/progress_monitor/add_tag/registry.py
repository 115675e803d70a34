"""Registering classes: one validation and one atomic insert, shared by the web form and the Slack command.

Every message here is shown to coordinators, so it is in Brazilian Portuguese and says what to fix.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from progress_monitor.cademi.clients import make_client
from progress_monitor.contracts.cademi import CademiSource
from progress_monitor.contracts.values import SLACK_CHANNEL, strict
from progress_monitor.errors import (
    CademiConfigError,
    CademiError,
    PermanentError,
    SecretUnavailableError,
    TransientError,
)
from progress_monitor.platform import warehouse
from progress_monitor.platform.secret_store import get_secret
from progress_monitor.services import Services
from progress_monitor.settings import CADEMI_API_KEY

log = logging.getLogger(__name__)

MAX_FIELD = 64  # no legitimate value is longer; a 10 kB field is refused before anything else
TURMA = strict(r"(\d{4})-(0[1-9]|1[0-2])")
TAG_ID = strict(r"[1-9]\d{0,8}")
BR_DATE = strict(r"(\d{2})/(\d{2})/(\d{4})")
ISO_DATE = strict(r"\d{4}-\d{2}-\d{2}")
# A channel as Slack escapes it in a command's text (`<#C0123|nome>`), or its bare id.
SLACK_CHANNEL_REF = strict(rf"<#(?P<id>{SLACK_CHANNEL.pattern})(?:\|[^<>|]{{0,80}})?>|(?P<id2>{SLACK_CHANNEL.pattern})")
FIELDS = ("tag_id", "track", "turma", "start_date")
LABELS = {"tag_id": "Tag", "track": "Trilha", "turma": "Turma", "start_date": "Início da turma"}


@dataclass(frozen=True)
class NewTag:
    tag_id: int
    track_id: str
    turma: str
    start_date: date


@dataclass
class Outcome:
    """What happened to a registration: `ok`, or field errors / a general error to show."""

    ok: bool
    message: str
    field_errors: dict[str, str] = field(default_factory=dict)
    tag: NewTag | None = None


def _clean(raw: Any) -> str:
    return raw.strip() if isinstance(raw, str) else ""


def parse_fields(raw: dict[str, Any], tracks: set[str], today: date) -> tuple[NewTag | None, dict[str, str]]:
    """Check each field on its own; returns the parsed tag or a message per field."""
    errors: dict[str, str] = {}
    values = {name: _clean(raw.get(name)) for name in FIELDS}
    for name, value in values.items():
        if isinstance(raw.get(name), str) and len(raw[name]) > MAX_FIELD:
            errors[name] = f"{LABELS[name]}: o valor é longo demais (máximo {MAX_FIELD} caracteres)."
        elif not value:
            errors[name] = f"{LABELS[name]}: campo obrigatório."
    if "tag_id" not in errors and not TAG_ID.fullmatch(values["tag_id"]):
        errors["tag_id"] = "Tag: use apenas o número da tag na Cademi (um inteiro positivo de até 9 dígitos)."
    if "track" not in errors and values["track"] not in tracks:
        errors["track"] = "Trilha: escolha uma das trilhas cadastradas."
    if "turma" not in errors and not TURMA.fullmatch(values["turma"]):
        errors["turma"] = "Turma: use o formato AAAA-MM, por exemplo 2026-03."
    start: date | None = None
    if "start_date" not in errors:
        start = _parse_date(values["start_date"])
        if start is None:
            errors["start_date"] = "Início da turma: data inválida; use AAAA-MM-DD ou DD/MM/AAAA."
        elif not date(2015, 1, 1) <= start <= date(today.year + 1, 12, 31):
            errors["start_date"] = "Início da turma: a data parece errada (muito antiga ou distante demais)."
    if errors or start is None:
        return None, errors
    return NewTag(int(values["tag_id"]), values["track"], values["turma"], start), {}


def _parse_date(text: str) -> date | None:
    try:
        if ISO_DATE.fullmatch(text):
            return date.fromisoformat(text)
        match = BR_DATE.fullmatch(text)
        if match:
            return date(int(match[3]), int(match[2]), int(match[1]))
    except ValueError:
        return None
    return None


class Registry:
    """Reads and writes the `registered_tags` table; the only way tags enter the registry."""

    def __init__(self, svc: Services, cademi: CademiSource | None) -> None:
        self.svc = svc
        self.cademi = cademi
        self._lock = threading.Lock()  # one registration at a time per instance; MERGE guards across instances

    def tracks(self) -> dict[str, str]:
        """Track id -> name, for the form's choice."""
        rows = warehouse.query(self.svc, "SELECT DISTINCT track_id, track_name FROM `${tracks}` ORDER BY 1")
        return {r["track_id"]: r["track_name"] for r in rows}

    def list_tags(self) -> list[dict[str, Any]]:
        """Registered tags, newest first."""
        return warehouse.query(
            self.svc,
            """SELECT r.tag_id, r.track_id, r.turma, r.start_date, r.active, r.added_by, r.added_at,
                      r.deactivated_by, r.deactivated_at
               FROM `${registered_tags}` r ORDER BY r.added_at DESC, r.tag_id DESC""",
        )

    def register(self, raw: dict[str, Any], added_by: str, request_id: str) -> Outcome:
        """Validate every rule, then insert atomically; nothing is written unless every check passed."""
        try:
            tracks = self.tracks()
        except TransientError:
            return Outcome(False, "O banco de dados não respondeu; tente novamente em instantes. Nada foi registrado.")
        tag, errors = parse_fields(raw, set(tracks), self.svc.now().date())
        if tag is None:
            return Outcome(False, "Corrija os campos indicados.", errors)
        cademi_problem = self._check_cademi(tag.tag_id)
        if cademi_problem is not None:
            return cademi_problem
        with self._lock:
            return self._insert(tag, tracks[tag.track_id], added_by, request_id)

    def _check_cademi(self, tag_id: int) -> Outcome | None:
        if self.cademi is None:
            return Outcome(False, "A consulta à Cademi não está configurada. Avise a equipe de dados.")
        try:
            known = {t.tag_id for t in self.cademi.list_tags()}
        except CademiConfigError:
            log.error("Cademi refused the API key while checking a tag")
            return Outcome(
                False, "A Cademi recusou nossa chave de acesso. Avise a equipe de dados. Nada foi registrado."
            )
        except CademiError as exc:
            log.warning("Cademi unavailable while checking tag %d: %s", tag_id, exc)
            return Outcome(
                False, "A Cademi não respondeu a tempo; tente novamente em alguns minutos. Nada foi registrado."
            )
        if tag_id not in known:
            return Outcome(
                False,
                "Corrija os campos indicados.",
                {"tag_id": f"Tag: a tag {tag_id} não existe na Cademi. Confira o número."},
            )
        return None

    def _insert(self, tag: NewTag, track_name: str, added_by: str, request_id: str) -> Outcome:
        params: dict[str, Any] = {
            "tag_id": tag.tag_id,
            "track_id": tag.track_id,
            "turma": tag.turma,
            "start_date": tag.start_date,
            "added_by": added_by[:200],
            "now": self.svc.now(),
            "request_id": request_id,
        }
        # One statement: inserts only if neither the tag nor the track + turma pair exists. Concurrent
        # MERGEs on the table are serialised by BigQuery (the loser fails and is re-checked below).
        sql = """MERGE `${registered_tags}` T
                 USING (SELECT @tag_id AS tag_id, @track_id AS track_id, @turma AS turma) S
                 ON T.tag_id = S.tag_id OR (T.track_id = S.track_id AND T.turma = S.turma)
                 WHEN NOT MATCHED THEN INSERT
                   (tag_id, track_id, turma, start_date, active, added_by, added_at, request_id)
                 VALUES (@tag_id, @track_id, @turma, @start_date, TRUE, @added_by, @now, @request_id)"""
        try:
            warehouse.query(self.svc, sql, **params)
        except (TransientError, PermanentError) as exc:
            log.warning("registering tag %d did not complete: %s", tag.tag_id, exc)
        rows = warehouse.query(
            self.svc,
            """SELECT tag_id, track_id, turma, request_id FROM `${registered_tags}`
               WHERE tag_id = @tag_id OR (track_id = @track_id AND turma = @turma)""",
            tag_id=tag.tag_id,
            track_id=tag.track_id,
            turma=tag.turma,
        )
        mine = [r for r in rows if r["tag_id"] == tag.tag_id and r["request_id"] == request_id]
        if mine:
            log.info("tag %d registered by %s", tag.tag_id, added_by, extra={"tag_id": tag.tag_id})
            return Outcome(
                True,
                f"Turma registrada: tag {tag.tag_id}, trilha {track_name}, turma {tag.turma}. "
                "Ela entra na próxima extração semanal.",
                tag=tag,
            )
        if any(r["tag_id"] == tag.tag_id for r in rows):
            return Outcome(
                False, "Corrija os campos indicados.", {"tag_id": f"Tag: a tag {tag.tag_id} já está registrada."}
            )
        if rows:
            return Outcome(
                False,
                "Corrija os campos indicados.",
                {
                    "turma": f"Turma: a trilha {tag.track_id} já tem a turma {tag.turma} registrada "
                    f"(tag {rows[0]['tag_id']})."
                },
            )
        return Outcome(False, "O registro não foi concluído; tente novamente. Nada foi registrado.")

    def deactivate(self, raw_tag: Any, by: str) -> Outcome:
        """Soft-deactivate a class that ended: its history stays, the pipeline stops extracting it."""
        text = _clean(raw_tag)
        if not TAG_ID.fullmatch(text):
            return Outcome(False, "Informe o número de uma tag registrada.", {"tag_id": "Tag inválida."})
        tag_id = int(text)
        rows = warehouse.query(
            self.svc, "SELECT active FROM `${registered_tags}` WHERE tag_id = @tag_id", tag_id=tag_id
        )
        if not rows:
            return Outcome(False, f"A tag {tag_id} não está registrada.")
        if not rows[0]["active"]:
            return Outcome(True, f"A tag {tag_id} já estava desativada.")
        warehouse.query(
            self.svc,
            """UPDATE `${registered_tags}` SET active = FALSE, deactivated_by = @by, deactivated_at = @now
               WHERE tag_id = @tag_id AND active""",
            tag_id=tag_id,
            by=by[:200],
            now=self.svc.now(),
        )
        log.info("tag %d deactivated by %s", tag_id, by, extra={"tag_id": tag_id})
        return Outcome(True, f"Tag {tag_id} desativada: o histórico continua, e ela não será mais extraída.")

    def set_channel(self, raw_target: Any, raw_channel: Any, by: str) -> Outcome:
        """Where a class's (or a whole track's) tutors get the Monday digest; a class's own channel wins."""
        target, channel_text = _clean(raw_target), _clean(raw_channel)
        match = SLACK_CHANNEL_REF.fullmatch(channel_text)
        if match is None:
            return Outcome(
                False,
                "Canal inválido: escolha o canal na lista do Slack (como #tutores-2026-03) para que o Slack envie o "
                "identificador dele.",
            )
        channel_id = match["id"] or match["id2"]
        if TAG_ID.fullmatch(target):
            scope, known = "turma", self._registered(int(target))
            label = f"a turma (tag {target})"
        elif target in self.tracks():
            scope, known, label = "trilha", True, f"as turmas da trilha {target} sem canal próprio"
        else:
            return Outcome(False, "Informe o número de uma tag registrada ou o identificador de uma trilha.")
        if not known:
            return Outcome(False, f"A tag {target} não está registrada.")
        warehouse.query(
            self.svc,
            """MERGE `${slack_channels}` T USING (SELECT @scope AS scope, @target AS target) S
               ON T.scope = S.scope AND T.target = S.target
               WHEN MATCHED THEN UPDATE SET channel_id = @channel, set_by = @by, set_at = @now
               WHEN NOT MATCHED THEN INSERT (scope, target, channel_id, set_by, set_at)
               VALUES (@scope, @target, @channel, @by, @now)""",
            scope=scope,
            target=target,
            channel=channel_id,
            by=by[:200],
            now=self.svc.now(),
        )
        log.info("Slack channel of %s %s set by %s", scope, target, by)
        return Outcome(True, f"Pronto: o resumo de segunda-feira para {label} vai para <#{channel_id}>.")

    def _registered(self, tag_id: int) -> bool:
        rows = warehouse.query(self.svc, "SELECT 1 FROM `${registered_tags}` WHERE tag_id = @t", t=tag_id)
        return bool(rows)


@functools.cache
def _with_cademi(svc: Services) -> Registry:
    # The school's one budget: a registration during a run takes a slot like any piece's call.
    api_key = get_secret(svc.cfg, CADEMI_API_KEY)  # raises: nothing is cached, the next request reads it again
    return Registry(svc, make_client(svc.cfg, api_key, svc.cademi_budget, interactive=True))


def instance_registry(svc: Services) -> Registry:
    """One Registry per instance, with a Cademi client tuned for interactive use (short timeouts).

    Without the API key (a Secret Manager hiccup) the answer is a registry that refuses tag checks for this
    request only: nothing is cached, so the next request reads the secret again."""
    try:
        return _with_cademi(svc)
    except SecretUnavailableError:
        log.error("Cademi API key unavailable: tag checks are refused until it can be read")
        return Registry(svc, None)


def reset_instance_registry() -> None:
    """Forget the instance's Registry (tests)."""
    _with_cademi.cache_clear()
