"""The small school most simulator and client tests start from (cademi_sim/builder.py builds it)."""

from __future__ import annotations

from typing import Any

from cademi_sim.builder import School


def school(
    n_students: int = 3,
    products: tuple[int, ...] = (101, 102),
    weeks: tuple[str, ...] = ("2026-03-02", "2026-03-09"),
    tag_id: int = 5001,
    rate: tuple[float, float] = (1000, 60000),
    breach: str = "429",
    first_user: int = 1001,
) -> dict[str, Any]:
    """One tag, `n_students` students with access to every product; progress rises week by week."""
    built = School(weeks, api_key="test-key", rate=rate, breach=breach)
    for p in products:
        built.product(p, f"Produto {p}", aulas=20)
    built.track("trilha", "Trilha", {p: 4 * (k + 1) for k, p in enumerate(products)})
    built.tag(tag_id, "Turma teste", track="trilha", turma="2026-03")
    for i in range(n_students):
        uid = first_user + i
        built.student(
            uid,
            tag_id,
            nome=f"Aluno {i}",
            email=f"aluno{i}+ds@example.com",
            doc=f"{i:03d}.123.456-{i % 100:02d}",
            celular="+55 11 91234-5678",
            criado_em="2026-02-20 10:00:00",
            progress=[
                {
                    "user": uid,
                    "product": p,
                    "total": [f"{min(100, (i + 1) * 7.5 + w * 10 + j):.1f}%" for w in range(len(weeks))],
                    "assistidas": [w + j for w in range(len(weeks))],
                    "completas": [w for w in range(len(weeks))],
                }
                for j, p in enumerate(products)
            ],
        )
        for p in products:
            built.grant(uid, p)
    built.faults = []
    return built.build()
