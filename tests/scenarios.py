"""Small hand-written scenarios for tests."""

from __future__ import annotations

from typing import Any


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
    users = [
        {
            "id": first_user + i,
            "nome": f"Aluno {i}",
            "email": f"aluno{i}+ds@example.com",
            "doc": f"{i:03d}.123.456-{i % 100:02d}",
            "celular": "+55 11 91234-5678",
            "criado_em": "2026-02-20 10:00:00",
        }
        for i in range(n_students)
    ]
    progress = [
        {
            "user": u["id"],
            "product": p,
            "total": [f"{min(100, (i + 1) * 7.5 + w * 10 + j):.1f}%" for w in range(len(weeks))],
            "assistidas": [w + j for w in range(len(weeks))],
            "completas": [w for w in range(len(weeks))],
        }
        for i, u in enumerate(users)
        for j, p in enumerate(products)
    ]
    return {
        "api_key": "test-key",
        "rate_limit": {"per_second": rate[0], "per_minute": rate[1], "breach": breach},
        "latency_ms": 0,
        "weeks": list(weeks),
        "products": [{"id": p, "nome": f"Produto {p}", "aulas": 20} for p in products],
        "tags": [{"id": tag_id, "nome": "Turma teste"}],
        "users": users,
        "memberships": [{"user": u["id"], "tag": tag_id, "from_week": 0, "to_week": None} for u in users],
        "access": [{"user": u["id"], "product": p} for u in users for p in products],
        "progress": progress,
        "faults": [],
        "registry": {
            "tracks": [
                {
                    "id": "trilha",
                    "nome": "Trilha",
                    "products": [{"product": p, "due_week": 4 * (k + 1)} for k, p in enumerate(products)],
                }
            ],
            "tags": [{"tag_id": tag_id, "track": "trilha", "turma": "2026-03", "start_date": weeks[0]}],
        },
    }


def hand_progress(user: int, totals: dict[int, list[float]]) -> list[dict[str, Any]]:
    """A student's `progress` entries from hand-written totals per product and week (lessons: one per 10 %)."""
    entries = []
    for product, per_week in totals.items():
        lessons = [int(t // 10) for t in per_week]
        entries.append(
            {
                "user": user,
                "product": product,
                "total": [f"{t:g}%" for t in per_week],
                "assistidas": lessons,
                "completas": lessons,
            }
        )
    return entries
