"""The school of the pipeline tests: small enough to run in seconds, shaped to exercise every case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devstack.stack import LocalStack

WEEKS = ["2026-09-07", "2026-09-14", "2026-09-21", "2026-09-28"]
BIG_TAG, SMALL_TAG, OTHER_TAG, UNREGISTERED_TAG = 7001, 7002, 7003, 7999
MOVER, DROPOUT = 2001, 2002  # a class change SMALL -> OTHER at week 1; a dropout after week 0
ALWAYS_FAILING = (2003, 301)  # this student's progress in product 301 never answers
CPF_PREFIX = "987.654."


def world() -> dict[str, Any]:
    users, memberships, progress = [], [], []

    def add_user(uid: int, tag: int, products: list[int], from_week: int = 0, to_week: int | None = None) -> None:
        users.append(
            {
                "id": uid,
                "nome": f"Aluno {uid}",
                "email": f"aluno{uid}+turma@example.com",
                "doc": f"{CPF_PREFIX}{uid % 1000:03d}-{uid % 100:02d}",
                "celular": "+55 21 99999-0000",
                "criado_em": "2026-08-01 09:00:00",
            }
        )
        memberships.append({"user": uid, "tag": tag, "from_week": from_week, "to_week": to_week})
        for k, p in enumerate(products):
            totals = [min(100.0, 5.0 * (w + 1) + (uid % 7) + 3 * k) for w in range(len(WEEKS))]
            progress.append(
                {
                    "user": uid,
                    "product": p,
                    "total": [f"{t:.1f}%" for t in totals],
                    "assistidas": [int(t // 5) for t in totals],
                    "completas": [int(t // 6) for t in totals],
                }
            )

    for i in range(155):  # more than one page of 150
        add_user(1001 + i, BIG_TAG, [101, 102])
    for i in range(8):
        add_user(2001 + i, SMALL_TAG, [301, 302, 303], to_week=0 if 2001 + i in (MOVER, DROPOUT) else None)
    memberships.append({"user": MOVER, "tag": OTHER_TAG, "from_week": 1, "to_week": None})
    for i in range(6):
        add_user(3001 + i, OTHER_TAG, [301, 302, 303])
    add_user(3100, OTHER_TAG, [301, 302])  # no access to 303: the API answers 409
    add_user(9001, UNREGISTERED_TAG, [101])
    return {
        "api_key": "pipeline-test-key",
        "rate_limit": {"per_second": 150, "per_minute": 9000, "breach": "429"},
        "latency_ms": 0,
        "weeks": WEEKS,
        "products": [{"id": p, "nome": f"Curso {p}", "aulas": 20} for p in (101, 102, 301, 302, 303)],
        "tags": [{"id": t, "nome": f"Tag {t}"} for t in (BIG_TAG, SMALL_TAG, OTHER_TAG, UNREGISTERED_TAG)],
        "users": users,
        "memberships": memberships,
        "access": [{"user": p["user"], "product": p["product"]} for p in progress],
        "progress": progress,
        "faults": [
            {
                "path": f"/usuario/progresso_por_produto/{ALWAYS_FAILING[0]}/{ALWAYS_FAILING[1]}",
                "status": 503,
                "times": 100000,
            }
        ],
        "registry": {
            "tracks": [
                {
                    "id": "analista",
                    "nome": "Analista",
                    "products": [{"product": 101, "due_week": 4}, {"product": 102, "due_week": 8}],
                },
                {
                    "id": "cientista",
                    "nome": "Cientista",
                    "products": [
                        {"product": 301, "due_week": 3},
                        {"product": 302, "due_week": 6},
                        {"product": 303, "due_week": 9},
                    ],
                },
            ],
            "tags": [
                {"tag_id": BIG_TAG, "track": "analista", "turma": "2026-08", "start_date": "2026-08-03"},
                {"tag_id": SMALL_TAG, "track": "cientista", "turma": "2026-08", "start_date": "2026-08-03"},
                {"tag_id": OTHER_TAG, "track": "cientista", "turma": "2026-09", "start_date": "2026-09-07"},
            ],
        },
    }


# Fast client retries: the pipeline tests' faults clear in well under a second.
FAST_RETRIES = {"CADEMI_BACKOFF_BASE_S": "0.05", "CADEMI_BACKOFF_CAP_S": "0.3", "CADEMI_MAX_ATTEMPTS": "4"}


def start_stack(workdir: Path, school: dict[str, Any], **options: Any) -> LocalStack:
    """A local stack on `school` with the pipeline tests' settings (1 s pieces, 30 s ack deadline), used here."""
    scenario = workdir / "scenario.json"
    scenario.write_text(json.dumps(school))
    stack = LocalStack.start(
        workdir, scenario, piece_budget_s=1.0, ack_deadline_s=30, extra_env=dict(FAST_RETRIES), **options
    )
    stack.use_here()
    return stack
