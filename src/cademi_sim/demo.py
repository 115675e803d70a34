"""Deterministic demo school: python -m cademi_sim.demo --out FILE [--seed N] [--weeks N]."""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

FIRST_NAMES = [
    "Ana",
    "Bruno",
    "Carla",
    "Diego",
    "Eduarda",
    "Felipe",
    "Gabriela",
    "Henrique",
    "Isabela",
    "João",
    "Larissa",
    "Marcos",
    "Natália",
    "Otávio",
    "Paula",
    "Rafael",
    "Sofia",
    "Tiago",
    "Vitória",
    "Yuri",
]
LAST_NAMES = [
    "Silva",
    "Souza",
    "Oliveira",
    "Santos",
    "Lima",
    "Pereira",
    "Costa",
    "Almeida",
    "Ribeiro",
    "Gomes",
]

TRACKS: list[dict[str, Any]] = [
    {
        "id": "analista",
        "nome": "Analista de Dados",
        "products": [
            (101, "SQL Essencial", 20, 3),
            (102, "Python do Zero", 24, 6),
            (103, "Estatística", 18, 9),
            (104, "Visualização de Dados", 16, 12),
        ],
    },
    {
        "id": "cientista",
        "nome": "Cientista de Dados",
        "products": [
            (102, "Python do Zero", 24, 3),
            (201, "Machine Learning I", 30, 7),
            (202, "Machine Learning II", 30, 11),
            (203, "Deploy de Modelos", 12, 13),
            (204, "Projeto Final", 10, 16),
        ],
    },
    {
        "id": "engenheiro",
        "nome": "Engenheiro de Dados",
        "products": [
            (301, "Pipelines em Python", 22, 4),
            (302, "Cloud para Dados", 20, 8),
            (303, "Spark", 18, 12),
        ],
    },
]

# (tag id, track, turma, class start offset in weeks before the first simulated week, students)
# The tutors' Slack channels: one per track, and the big class has its own.
TRACK_CHANNELS = {"analista": "C0ANALISTAS", "cientista": "C0CIENTISTAS", "engenheiro": "C0ENGENHEIROS"}
CLASS_CHANNELS = {5002: "C0ANALISTA0926"}
TAGS: list[tuple[int, str, str, int, int]] = [
    (5001, "analista", "2026-08", 6, 55),
    (5002, "analista", "2026-09", 2, 160),  # more than one page of 150
    (5003, "cientista", "2026-08", 6, 45),
    (5004, "cientista", "2026-09", 2, 50),
    (5005, "engenheiro", "2026-09", 2, 40),
]
UNREGISTERED_TAG = (5999, "Alunos antigos (não monitorada)")

# weekly progress in "track points" (100 points = one product complete)
PROFILES = {"fast": (34, 46), "steady": (24, 34), "slow": (10, 20), "stalled": (22, 30)}
# The share of students who open Cademi in a given week; the others' progress and last access stay as they were
# (they catch up on the weeks they missed when they come back).
ACTIVE_SHARE = 0.5


def _cpf(rng: random.Random) -> str:
    d = [rng.randint(0, 9) for _ in range(11)]
    return f"{d[0]}{d[1]}{d[2]}.{d[3]}{d[4]}{d[5]}.{d[6]}{d[7]}{d[8]}-{d[9]}{d[10]}"


def _email(rng: random.Random, first: str, last: str, user_id: int) -> str:
    base = f"{first}.{last}".lower().translate(str.maketrans("áãâéêíóôõúç", "aaaeeiooouc"))
    tag = rng.choice(["", "", "+ds", "+cademi", "_x"])
    return f"{base}{user_id % 1000}{tag}@example.com"


def active_weeks(seed: int, user_id: int, n_weeks: int, stall_at: int, share: float = ACTIVE_SHARE) -> list[bool]:
    """Whether the student opened Cademi in the days before each week's snapshot (week 0: before the simulated
    weeks began); never after they stall. Its own random stream, so the rest of the school stays as it was."""
    rng = random.Random(seed * 7_919 + user_id)
    return [w == 0 or (w <= stall_at and rng.random() < share) for w in range(n_weeks)]


def _last_accesses(
    seed: int, user_id: int, weeks: list[date], active: list[bool], never_came: bool
) -> list[str | None]:
    """What the listing reports as last access each week, in the fact sheet's mixed formats: a day or a few
    before the Monday of each week the student was active (so after the previous snapshot started), unchanged
    in a week they were not, null for one who never came."""
    rng = random.Random(seed * 100_003 + user_id)
    if never_came:
        return [None] * len(weeks)
    values: list[str | None] = []
    last: str | None = None
    for w, monday in enumerate(weeks):
        if active[w] or last is None:
            moment = datetime.combine(monday, time(rng.randint(7, 22), rng.randint(0, 59))) - timedelta(
                days=rng.randint(1, 5)
            )
            offset = rng.random() < 0.5
            last = moment.strftime("%Y-%m-%dT%H:%M:%S-03:00" if offset else "%Y-%m-%d %H:%M:%S")
        values.append(last)
    return values


def generate(seed: int = 7, n_weeks: int = 6, first_week: date = date(2026, 10, 5)) -> dict[str, Any]:
    """Build the demo scenario (same seed, same school)."""
    rng = random.Random(seed)
    weeks = [first_week + timedelta(weeks=i) for i in range(n_weeks)]
    products: dict[int, dict[str, Any]] = {}
    for track in TRACKS:
        for pid, name, aulas, _ in track["products"]:
            products[pid] = {"id": pid, "nome": name, "aulas": aulas}
    track_products = {t["id"]: [p[0] for p in t["products"]] for t in TRACKS}
    users: list[dict[str, Any]] = []
    memberships: list[dict[str, Any]] = []
    access: list[dict[str, Any]] = []
    progress: list[dict[str, Any]] = []
    user_id = 1000
    same_track_tags: dict[str, list[int]] = {}
    for tag_id, track_id, _, _, _ in TAGS:
        same_track_tags.setdefault(track_id, []).append(tag_id)

    for tag_id, track_id, _, start_offset, n_students in TAGS:
        for _ in range(n_students):
            user_id += 1
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            users.append(
                {
                    "id": user_id,
                    "nome": f"{first} {last}",
                    "email": _email(rng, first, last, user_id),
                    "doc": _cpf(rng),
                    "celular": rng.choice([None, f"+55 11 9{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"]),
                    "criado_em": (weeks[0] - timedelta(weeks=start_offset, days=rng.randint(1, 9))).isoformat()
                    + " 10:00:00",
                }
            )
            roll = rng.random()
            profile = "fast" if roll < 0.2 else "steady" if roll < 0.6 else "slow" if roll < 0.8 else "stalled"
            # class changes (to the other class of the same track) and dropouts, a few percent each
            event = rng.random()
            others = [t for t in same_track_tags[track_id] if t != tag_id]
            if event < 0.04 and others and n_weeks > 2:
                move = rng.randint(1, n_weeks - 1)
                memberships.append({"user": user_id, "tag": tag_id, "from_week": 0, "to_week": move - 1})
                memberships.append({"user": user_id, "tag": others[0], "from_week": move, "to_week": None})
            elif event < 0.09 and n_weeks > 2:
                memberships.append(
                    {"user": user_id, "tag": tag_id, "from_week": 0, "to_week": rng.randint(0, n_weeks - 2)}
                )
                profile = "stalled"
            else:
                memberships.append({"user": user_id, "tag": tag_id, "from_week": 0, "to_week": None})
            pids = track_products[track_id]
            no_access_last = rng.random() < 0.05
            lo, hi = PROFILES[profile]
            points = sum(rng.uniform(lo, hi) for _ in range(start_offset))
            stall_at = rng.randint(0, n_weeks - 1) if profile == "stalled" else n_weeks
            # A week's work shows only in a week the student opened Cademi: an inactive week changes nothing.
            active = active_weeks(seed, user_id, n_weeks, stall_at)
            series, owed = [], 0.0
            for w in range(n_weeks):
                if w > 0 and w <= stall_at:
                    owed += rng.uniform(lo, hi)
                if active[w]:
                    points, owed = points + owed, 0.0
                series.append(points)
            never_came = stall_at == 0 and start_offset == 0
            users[-1]["ultimo_acesso_em"] = _last_accesses(seed, user_id, weeks, active, never_came)
            for k, pid in enumerate(pids):
                if no_access_last and k == len(pids) - 1:
                    continue  # no access: the API answers 409 for this pair
                access.append({"user": user_id, "product": pid})
                totals = [min(100.0, max(0.0, p - 100 * k)) for p in series]
                aulas = products[pid]["aulas"]
                watched = [round(t / 100 * aulas) for t in totals]
                progress.append(
                    {
                        "user": user_id,
                        "product": pid,
                        "total": [f"{t:.1f}%" for t in totals],
                        "assistidas": watched,
                        "completas": [max(0, a - (1 if 0 < a < aulas else 0)) for a in watched],
                    }
                )

    # students of a tag nobody registered: they must never be extracted
    for _ in range(5):
        user_id += 1
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        users.append(
            {
                "id": user_id,
                "nome": f"{first} {last}",
                "email": _email(rng, first, last, user_id),
                "doc": _cpf(rng),
                "celular": None,
                "criado_em": "2025-01-10 10:00:00",
            }
        )
        memberships.append({"user": user_id, "tag": UNREGISTERED_TAG[0], "from_week": 0, "to_week": None})

    first_user = users[0]["id"]
    faults = [
        {"path": f"/usuario/progresso_por_produto/{first_user}/101", "week": 1, "status": 503, "times": 2},
        {"path_prefix": "/usuario/lista_por_tag/5003", "week": 2, "body": "<html>oops</html>", "times": 1},
        {"path": f"/usuario/progresso_por_produto/{first_user + 1}/102", "status": 502, "times": 1},
        # one student's progress in one product never answers: dashboards flag it instead of counting 0
        {"path": f"/usuario/progresso_por_produto/{first_user + 2}/101", "status": 503, "times": 1_000_000},
    ]
    tags = [{"id": t[0], "nome": f"{next(x['nome'] for x in TRACKS if x['id'] == t[1])} - Turma {t[2]}"} for t in TAGS]
    tags.append({"id": UNREGISTERED_TAG[0], "nome": UNREGISTERED_TAG[1]})
    return {
        "api_key": "dev-key",
        "rate_limit": {"per_second": 50, "per_minute": 3000, "breach": "429"},
        "latency_ms": {"mean": 20, "jitter": 10},
        "weeks": [w.isoformat() for w in weeks],
        "products": sorted(products.values(), key=lambda p: p["id"]),
        "tags": tags,
        "users": users,
        "memberships": memberships,
        "access": access,
        "progress": progress,
        "faults": faults,
        "registry": {
            "tracks": [
                {
                    "id": t["id"],
                    "nome": t["nome"],
                    "slack_channel": TRACK_CHANNELS[t["id"]],
                    "products": [{"product": p[0], "due_week": p[3]} for p in t["products"]],
                }
                for t in TRACKS
            ],
            "tags": [
                {
                    "tag_id": t[0],
                    "track": t[1],
                    "turma": t[2],
                    "start_date": (weeks[0] - timedelta(weeks=t[3])).isoformat(),
                    **({"slack_channel": CLASS_CHANNELS[t[0]]} if t[0] in CLASS_CHANNELS else {}),
                }
                for t in TAGS
            ],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cademi_sim.demo", description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--weeks", type=int, default=6)
    args = parser.parse_args(argv)
    scenario = generate(args.seed, args.weeks)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(scenario, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"wrote {args.out}: {len(scenario['users'])} users, {len(scenario['tags'])} tags, {args.weeks} weeks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
