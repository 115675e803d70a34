"""Where a student's id appears, and the rewrite of a text or an object without it. Pure: no Google call.

An id is matched only in the forms our code writes it in free text, so a tag id, a product id or an HTTP
status equal to it is left alone: Cademi's URLs (`/usuario/progresso_por_produto/{id}/{product}`, v3's
`usr_{id}`), a Slack button's value (`…;u={id}`) or block (`aluno:{tag}:{id}`), and words naming a student
(`user {id}`, `student {id}`, `aluno {id}`, `user_id={id}`, `"user_id": {id}`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from progress_monitor.contracts.objects import parse_contacts, parse_progress_shard, parse_roster_body
from progress_monitor.privacy.inventory import ID_LIST, TABLES, TEXT, Handling

# What comes right before an id where our code writes one (case-insensitive; `\b` so `superuser 7` is no id).
ID_FORMS = (
    r"progresso_por_produto/"
    r"|usr_"
    r"|[;&?]u="
    r"|aluno:[0-9]+:"
    r'|\b(?:user_id|user|usuario|student|aluno)"?\s*[:= ]\s*'
)
# Stands for the pseudonym in a rewritten text until BigQuery fills it in (privacy_tables.py): the query that
# rewrites a text then carries the id (to find the row) and never the pseudonym.
MARK = "\u27e6pseudonym\u27e7"  # ⟦pseudonym⟧: in no text we write


def id_pattern(user_id: int) -> re.Pattern[str]:
    """The id in one of ID_FORMS, as a whole number (`7` is not found in `user 70`); group 1 is the form."""
    return re.compile(rf"(?i:({ID_FORMS})){int(user_id)}(?![0-9])", re.ASCII)


def mentions(text: str | None, user_id: int) -> bool:
    return bool(text) and id_pattern(user_id).search(str(text)) is not None


def rewritten(handling: Handling, text: str, user_id: int, replacement: str) -> str:
    """The text with the student's id replaced: in a list of ids the item, in free text each mention."""
    if handling is ID_LIST:
        return ",".join(replacement if p.strip() == str(user_id) else p for p in text.split(","))
    return id_pattern(user_id).sub(lambda m: m[1] + replacement, text)


def _ndjson_rows(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def _ndjson(rows: list[dict[str, Any]]) -> bytes:
    return b"".join((json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n").encode() for r in rows)


def rewrite_object(name: str, raw: bytes, user_id: int, pseudonym: int) -> bytes | None:
    """The object's body without the student (None: it does not name them; b"": delete it). ValueError,
    KeyError or TypeError: the body is not what its name says."""
    if parse_progress_shard(name):
        rows = _ndjson_rows(raw)
        mine = [r for r in rows if r.get("user_id") == user_id]
        texts = [c for c, h in TABLES["progress_history"].items() if h is TEXT]  # a record is a history row
        for row in mine:
            row["user_id"] = pseudonym
            row.update(
                {k: rewritten(TEXT, row[k], user_id, str(pseudonym)) for k in texts if isinstance(row.get(k), str)}
            )
        return _ndjson(rows) if mine else None
    if parse_contacts(name):
        rows = _ndjson_rows(raw)
        kept = [r for r in rows if r.get("user_id") != user_id]
        return None if len(kept) == len(rows) else _ndjson(kept) if kept else b""
    if name.startswith("rosters/"):
        ids, _ = parse_roster_body(raw)  # refuses a body that is not a roster
        if user_id not in ids:
            return None
        body = json.loads(raw)
        body["user_ids"] = [u for u in ids if u != user_id]
        body["last_access_at"] = {u: t for u, t in (body.get("last_access_at") or {}).items() if u != str(user_id)}
        return json.dumps(body).encode()
    body = json.loads(raw) if name.startswith(("slack/", "carry/")) else None
    if not isinstance(body, dict):
        return None
    before = json.dumps(body, sort_keys=True)
    if isinstance(body.get("listed"), list):  # a digest claim: [tag, student] pairs
        body["listed"] = [[t, pseudonym if u == user_id else u] for t, u in body["listed"]]
    if isinstance(body.get("carried"), dict):  # a carry plan
        body["carried"].pop(str(user_id), None)
        body["sample"] = [u for u in body.get("sample") or [] if u != user_id]
    if body.get("user_id") == user_id:  # the carrying switch names the student of its first mismatch
        # Dropped, not pseudonymised: its run, tag, product and time would join the pseudonym to the log line of
        # that mismatch (issue 30).
        body["user_id"] = None
    return None if json.dumps(body, sort_keys=True) == before else json.dumps(body).encode()
