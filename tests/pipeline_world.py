"""The school of the pipeline tests: small enough to run in seconds, shaped to exercise every case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cademi_sim.builder import School, rising_progress
from devstack.stack import LocalStack

WEEKS = ["2026-09-07", "2026-09-14", "2026-09-21", "2026-09-28"]
BIG_TAG, SMALL_TAG, OTHER_TAG, UNREGISTERED_TAG = 7001, 7002, 7003, 7999
MOVER, DROPOUT = 2001, 2002  # a class change SMALL -> OTHER at week 1; a dropout after week 0
ALWAYS_FAILING = (2003, 301)  # this student's progress in product 301 never answers
CPF_PREFIX = "987.654."


def world(big: int = 155, per_page: int | None = None) -> dict[str, Any]:
    """The school; `big` students in BIG_TAG (155: more than one of Cademi's pages of 150). Tests that need no
    full page take fewer, with a smaller page (the simulator's `per_page` quirk) so the tag still spans pages."""
    extra = {"quirks": {"per_page": per_page}} if per_page else {}
    school = School(WEEKS, api_key="pipeline-test-key", rate=(150, 9000), breach="429", extra=extra)
    for p in (101, 102, 301, 302, 303):
        school.product(p, aulas=20)
    school.track("analista", "Analista", {101: 4, 102: 8})
    school.track("cientista", "Cientista", {301: 3, 302: 6, 303: 9})
    for tag in (BIG_TAG, SMALL_TAG, OTHER_TAG, UNREGISTERED_TAG):
        track, turma, start = {
            BIG_TAG: ("analista", "2026-08", "2026-08-03"),
            SMALL_TAG: ("cientista", "2026-08", "2026-08-03"),
            OTHER_TAG: ("cientista", "2026-09", "2026-09-07"),
        }.get(tag, (None, None, None))
        school.tag(tag, f"Tag {tag}", track=track, turma=turma, start_date=start)

    def add_user(uid: int, spans: list[tuple[int, int, int | None]], products: list[int]) -> None:
        school.student(
            uid,
            spans,
            nome=f"Aluno {uid}",
            email=f"aluno{uid}+turma@example.com",
            doc=f"{CPF_PREFIX}{uid % 1000:03d}-{uid % 100:02d}",
            celular="+55 21 99999-0000",
            criado_em="2026-08-01 09:00:00",
            progress=[
                rising_progress(uid, p, [min(100.0, 5.0 * (w + 1) + (uid % 7) + 3 * k) for w in range(len(WEEKS))])
                for k, p in enumerate(products)
            ],
        )

    for i in range(big):
        add_user(1001 + i, [(BIG_TAG, 0, None)], [101, 102])
    moves: dict[int, list[tuple[int, int, int | None]]] = {
        MOVER: [(SMALL_TAG, 0, 0), (OTHER_TAG, 1, None)],  # a class change at week 1
        DROPOUT: [(SMALL_TAG, 0, 0)],
    }
    for i in range(8):
        add_user(2001 + i, moves.get(2001 + i, [(SMALL_TAG, 0, None)]), [301, 302, 303])
    for i in range(6):
        add_user(3001 + i, [(OTHER_TAG, 0, None)], [301, 302, 303])
    add_user(3100, [(OTHER_TAG, 0, None)], [301, 302])  # no access to 303: the API answers 409
    add_user(9001, [(UNREGISTERED_TAG, 0, None)], [101])
    for entry in school.progress:
        school.grant(entry["user"], entry["product"])
    school.fault(
        path=f"/usuario/progresso_por_produto/{ALWAYS_FAILING[0]}/{ALWAYS_FAILING[1]}", status=503, times=100000
    )
    return school.build()


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
