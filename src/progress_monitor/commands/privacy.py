"""Operator command for a student's rights under the LGPD (Art. 18): what we hold about them, and erasure.

    python -m progress_monitor privacy export --student 123456 [--out aluno.json]
    python -m progress_monitor privacy erase --student 123456 --request LGPD-2026-014 --by dpo@escola.com.br --dry-run
    python -m progress_monitor privacy erase --student 123456 --request LGPD-2026-014 --by dpo@escola.com.br --confirm

The functions' settings (`--settings FILE` from Terraform, or the environment), plus the `privacy-key` secret.
`export` writes one JSON document
with everything held about the student: contact data, every weekly observation, statuses, movements, tutors'
actions, the digests and failures that name them, and the raw objects that do. `erase` deletes their contact
data, pseudonymises their rows everywhere else, rewrites the objects naming them and records the erasure
(privacy_erase.py); `--dry-run` prints what would change, and nothing changes without `--confirm`. Where each
piece of data lives and how it is handled: privacy_inventory.py and docs/privacy.md.

A refusal (a malformed or unknown id, no confirmation, a run unfinished, the wrong privacy key) exits 2 and
changes nothing. An erasure that changed things and did not finish exits 3: run the same command again. Logs go
to stderr, so stdout holds only the document (or the dry run's plan).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from progress_monitor.commands import options
from progress_monitor.errors import SecretUnavailableError
from progress_monitor.platform import logs, warehouse
from progress_monitor.privacy import erasures
from progress_monitor.privacy.erasure import Incomplete, Refusal, erase, verified_key
from progress_monitor.privacy.inventory import OTHER_PEOPLE, REPORT, REPORTS, TABLES
from progress_monitor.privacy.objects import buckets, naming_objects
from progress_monitor.privacy.tables import naming_rows, table_rows, unfinished_runs
from progress_monitor.services import Services

log = logging.getLogger("progress_monitor.commands.privacy")
# A Cademi user id: ASCII digits only (no Unicode digits, no CPF punctuation, no e-mail), no leading zero.
STUDENT_ID = re.compile(r"[1-9][0-9]{0,11}", re.ASCII)
REQUEST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
WHO = re.compile(r"[A-Za-z0-9._%+@-]{3,100}", re.ASCII)


def export(svc: Services, user_id: int) -> dict[str, Any]:
    """Everything held about one student, as one JSON-ready document; Refusal when nothing is."""
    tables = {}
    for table in TABLES:
        hidden = OTHER_PEOPLE.get(table, ())
        columns = [f["name"] for f in warehouse.schema_json(table)["fields"] if f["name"] not in hidden]
        rows = naming_rows(svc, table, user_id, columns)
        tables[table] = [{c: row.get(c) for c in columns} for row in rows]
    reports = {}
    for name, handling in REPORTS.items():
        if handling is REPORT:
            reports[name] = warehouse.query(svc, f"SELECT * FROM `${{{name}}}` WHERE user_id = @u", u=user_id)
    bucket = svc.state  # the registry of erasures
    objects = naming_objects(buckets(svc), user_id, -1).names()
    try:
        entry = erasures.read(bucket, erasures.digest_of(verified_key(svc.cfg, bucket), user_id))
    except SecretUnavailableError:
        entry = None  # an export does not need the key: only whether an erasure is recorded is then unknown
        log.warning("privacy key unavailable: the export cannot say whether an erasure is recorded")
    if not any(tables.values()) and not objects and entry is None:
        raise Refusal("no data is held about that student id")
    erasure = None
    if entry is not None:
        erasure = {k: getattr(entry[0], k) for k in ("request", "state", "started_at", "finished_at")}
    contact = tables.pop("students")
    return {
        "student": {"cademi_user_id": user_id},
        "generated_at": svc.now().isoformat(),
        "controller_note": "Dados mantidos pela escola para acompanhar o progresso do aluno (LGPD, art. 18).",
        "contact": contact[0] if contact else None,
        "progress_history": sorted(tables.pop("progress_history"), key=_week_order),
        "tutor_actions": tables.pop("tutor_actions"),
        "reports": reports,
        "mentions": tables,  # digests and failures naming the student
        "raw_objects": objects,
        "erasure": erasure,
    }


def _week_order(row: dict[str, Any]) -> tuple[str, int, int]:
    return (str(row.get("snapshot_date")), int(row.get("tag_id") or 0), int(row.get("product_id") or 0))


def dry_run(svc: Services, user_id: int) -> dict[str, Any]:
    """What `erase` would change (counts and object names only: the command prints no personal data)."""
    rows = table_rows(svc, user_id)
    bucket = svc.state  # the registry of erasures
    scan = naming_objects(buckets(svc), user_id, -1)
    digest = erasures.digest_of(verified_key(svc.cfg, bucket), user_id)
    if not rows and scan.clean() and erasures.read(bucket, digest) is None:
        raise Refusal("no data is held about that student id, and no erasure of it is recorded")
    return {
        "would_delete_contact_rows": rows.get("students", 0),
        "would_pseudonymise_rows": {t: n for t, n in rows.items() if t != "students"},
        "would_rewrite_objects": sorted({f.blob.name for f in scan.found if f.current}),
        "would_delete_old_versions_of": sorted({f.blob.name for f in scan.found if not f.current}),
        "unreadable_objects": scan.unreadable,
        "would_rebuild_reports": True,
        "unfinished_runs": unfinished_runs(svc),
    }


def looks_like_cpf(text: str) -> bool:
    """11 digits whose last two are a valid CPF's check digits (and not one digit repeated)."""
    if not re.fullmatch(r"[0-9]{11}", text, re.ASCII) or len(set(text)) == 1:
        return False
    digits = [int(c) for c in text]
    for n in (9, 10):
        check = sum(d * (n + 1 - i) for i, d in enumerate(digits[:n])) * 10 % 11 % 10
        if check != digits[n]:
            return False
    return True


def _student(text: str) -> int:
    if not STUDENT_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            "a student is named by their Cademi user id: 1-12 ASCII digits (not a CPF, an e-mail or a name)"
        )
    if looks_like_cpf(text):
        raise argparse.ArgumentTypeError(
            "looks like a CPF (11 digits with valid check digits): a student is named by their Cademi user id"
        )
    return int(text)


def _write_private(path: Path, text: str) -> None:
    """Write the document readable by its owner only (0600), also when the file already existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _pattern(pattern: re.Pattern[str], what: str) -> Any:
    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{what} must match {pattern.pattern}")
        return text

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m progress_monitor privacy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    out = sub.add_parser("export", help="everything held about one student, as JSON")
    out.add_argument("--student", required=True, type=_student)
    out.add_argument("--out", type=Path, help="write the document here (default: stdout)")
    rm = sub.add_parser("erase", help="erase one student (contact data deleted, the rest pseudonymised)")
    rm.add_argument("--student", required=True, type=_student)
    rm.add_argument("--request", required=True, type=_pattern(REQUEST, "--request"), help="the request's reference")
    rm.add_argument("--by", required=True, type=_pattern(WHO, "--by"), help="who erases (the operator)")
    mode = rm.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    mode.add_argument("--confirm", action="store_true", help="erase")
    ref = sub.add_parser("ref", help="how the logs name one student (a keyed hash): to find their log lines")
    ref.add_argument("--student", required=True, type=_student)
    for command in (out, rm, ref):
        options.add_settings_option(command)
    args = parser.parse_args(argv)
    logs.configure(stream=sys.stderr)  # stdout holds the document only
    svc = options.build(args)
    try:
        if args.command == "ref":
            print(json.dumps({"log_ref": erasures.log_ref(erasures.privacy_key(svc.cfg), args.student)}))
            return 0
        if args.command == "export":
            document = json.dumps(export(svc, args.student), ensure_ascii=False, indent=2, default=str)
            if args.out:
                _write_private(args.out, document + "\n")
                print(f"written to {args.out}", file=sys.stderr)
            else:
                print(document)
            return 0
        if args.dry_run or not args.confirm:
            print(json.dumps(dry_run(svc, args.student), indent=2))
            if not args.confirm and not args.dry_run:
                raise Refusal("erase changes nothing without --confirm (run with --dry-run to review first)")
            return 0
        outcome = erase(svc, args.student, args.request, args.by)
        print(json.dumps(outcome.__dict__))
        return 0
    except Refusal as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except Incomplete as exc:
        print(f"erasure incomplete: {exc}; run the same command again", file=sys.stderr)
        return 3
    except SecretUnavailableError as exc:
        print(f"refused: the privacy key is unavailable ({exc})", file=sys.stderr)
        return 2
