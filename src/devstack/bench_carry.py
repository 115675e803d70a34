"""`make bench`, phase 7 (`python -m devstack.bench --carry-only`): carrying off and on side by side.

The same school (2 tags x 15 students x 3 products, about half of it inactive each week, 150 +- 100 ms latency)
extracted five weeks at Cademi's 2 req/s, on API v1 and v3, once with INCREMENTAL=off and once with it on, each
on its own local stack: calls per week, calls per active student, elapsed, rows against the ground truth, the
verification sample. Five weeks are the first full read and one whole carrying cycle after it: the fifth week
is the forced full read (`CARRY_FULL_READ_WEEKS`, 4) of everyone carried since the first. The read share of
that cycle (progress calls with carrying over those without, week by week, averaged over the cycle) is the
measured steady state that the projection to 60 tags x 300 students x 15 products uses.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from cademi_sim.demo import active_weeks
from cademi_sim.truth import expected_rows
from devstack.bench_measurements import PIECE_BUDGET_S, running_stack
from devstack.stack import LocalStack
from progress_monitor.carrying.rule import sample_size

WEEKS = ["2026-03-02", "2026-03-09", "2026-03-16", "2026-03-23", "2026-03-30"]
TAGS, STUDENTS, PRODUCTS = 2, 15, 3
SEED = 24
CARRY_SECTION = ("<!-- carry -->", "<!-- /carry -->")
# The projection's school, weekly activity, and the settings' defaults (settings.py).
P_TAGS, P_STUDENTS, P_PRODUCTS, P_ACTIVE = 60, 300, 15, 0.5
FULL_READ_WEEKS, SAMPLE_SHARE = 4, 0.05
CYCLE = range(1, FULL_READ_WEEKS + 1)  # the weeks after the first full read, the forced full read included
assert len(WEEKS) > FULL_READ_WEEKS, "the bench must reach the forced full-read week"
PLAN_LINE = re.compile(r"carry plan: .*pairs by reason: (\{.*\})$")


def school() -> dict[str, Any]:
    """Students study (progress and last access move) only in the weeks `active_weeks` draws for them."""
    products = list(range(101, 101 + PRODUCTS))
    users, memberships, progress = [], [], []
    for t in range(TAGS):
        for s in range(STUDENTS):
            uid = 10_001 + t * STUDENTS + s
            active = active_weeks(SEED, uid, len(WEEKS), len(WEEKS))
            rng = random.Random(uid)
            accesses, points, last = [], 0.0, ""
            totals = []
            for w, monday in enumerate(WEEKS):
                if active[w]:
                    points += rng.uniform(10, 30)
                    moment = datetime.combine(date.fromisoformat(monday), datetime.min.time()) - timedelta(
                        days=rng.randint(1, 5), hours=-rng.randint(8, 20)
                    )
                    last = moment.strftime("%Y-%m-%d %H:%M:%S")
                accesses.append(last)
                totals.append(points)
            users.append(
                {"id": uid, "nome": f"Aluno {uid}", "email": f"a{uid}@example.com", "ultimo_acesso_em": accesses}
            )
            memberships.append({"user": uid, "tag": 9001 + t, "from_week": 0, "to_week": None})
            for k, p in enumerate(products):
                mine = [min(100.0, max(0.0, x - 40 * k)) for x in totals]
                progress.append(
                    {
                        "user": uid,
                        "product": p,
                        "total": [f"{x:.1f}%" for x in mine],
                        "assistidas": [round(x / 5) for x in mine],
                        "completas": [round(x / 6) for x in mine],
                    }
                )
    return {
        "api_key": "bench-key",
        "rate_limit": {"per_second": 2, "per_minute": 120, "breach": "429"},
        "latency_ms": {"mean": 150, "jitter": 100},
        "weeks": WEEKS,
        "products": [{"id": p, "nome": f"Curso {p}", "aulas": 20} for p in products],
        "tags": [{"id": 9001 + t, "nome": f"Turma {t}"} for t in range(TAGS)],
        "users": users,
        "memberships": memberships,
        "access": [{"user": p["user"], "product": p["product"]} for p in progress],
        "progress": progress,
        "registry": {
            "tracks": [
                {"id": "trilha", "nome": "Trilha", "products": [{"product": p, "due_week": 8} for p in products]}
            ],
            "tags": [
                {"tag_id": 9001 + t, "track": "trilha", "turma": f"2026-{t + 1:02d}", "start_date": WEEKS[0]}
                for t in range(TAGS)
            ],
        },
    }


def active_students(scenario: dict[str, Any], week: int) -> int:
    """Students whose last access moved into this week's span (all of them in the first week)."""
    return sum(
        1 for u in scenario["users"] if week == 0 or u["ultimo_acesso_em"][week] != u["ultimo_acesso_em"][week - 1]
    )


def _exactness(stack: LocalStack, week: int) -> dict[str, int]:
    from devstack.here import services_here
    from progress_monitor.platform import warehouse

    expected = expected_rows(stack.scenario, week)
    rows = warehouse.query(
        services_here(),
        "SELECT * FROM `${progress_history}` WHERE snapshot_date = @d",
        d=date.fromisoformat(WEEKS[week]),
    )
    actual = {
        (r["snapshot_date"].isoformat(), r["tag_id"], r["user_id"], r["product_id"]): (
            r["status"],
            r["total"],
            r["assistidas"],
            r["completas"],
        )
        for r in rows
    }
    wrong = sum(1 for k in expected if k in actual and actual[k] != expected[k])
    return {"expected": len(expected), "missing": len(set(expected) - set(actual)), "wrong": wrong}


def full_read_due(stack: LocalStack, week: str) -> int:
    """Student x product pairs the week's carry plans read because their observation was due a full read (the
    extraction logs each tag's plan with its reasons)."""
    due = 0
    for line in (stack.workdir / "logs" / "extract_progress.log").read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        found = PLAN_LINE.search(str(entry.get("message", "")))
        if found and entry.get("run_id") == week:
            due += int(json.loads(found.group(1)).get("full_read_due", 0))
    return due


def closest_window_s(arrivals: list[dict[str, Any]], per_second: int) -> float | None:
    """The shortest time Cademi saw between an admitted call and the `per_second`-th admitted call after it:
    under 1 s is a breach, so this less 1 s is what was left of the margin."""
    at = sorted(a["at"] for a in arrivals if a["admitted"])
    return min((b - a for a, b in zip(at, at[per_second:], strict=False)), default=None)


def all_weeks(root: Path, api: str, incremental: str, scenario: dict[str, Any]) -> dict[str, Any]:
    weeks: list[dict[str, Any]] = []
    with running_stack(
        root / f"carry-{api}-{incremental}",
        scenario,
        piece_budget_s=PIECE_BUDGET_S,
        cademi_api=api,
        incremental=incremental,
    ) as stack:
        for w, monday in enumerate(WEEKS):
            admin = stack.admin()
            admin.reset()
            started = time.monotonic()
            row = stack.wait_run(stack.trigger(date.fromisoformat(monday)), timeout=3600)
            elapsed = time.monotonic() - started
            if row.get("status") != "succeeded":
                raise RuntimeError(f"bench run did not succeed: {row}")
            counters, window, arrivals = admin.counters(), admin.window(), admin.arrivals()
            first, last = window["first"] or 0.0, window["last"] or 0.0
            progress_calls = counters.get("progresso_por_produto", 0) + counters.get("v3/progress", 0)
            sample_calls = (row["carry_checked"] or 0) // (PRODUCTS if api == "v3" else 1)
            active = active_students(scenario, w)
            weeks.append(
                {
                    "week": monday,
                    "calls": counters.get("requests_total", 0),
                    "progress_calls": progress_calls,
                    "active_students": active,
                    "sample_calls": sample_calls,
                    "elapsed_s": round(elapsed, 1),
                    "api_rate": round((counters.get("requests_total", 0) - 1) / (last - first), 3)
                    if last > first
                    else 0,
                    "carried": row["rows_carried"] or 0,
                    "calls_saved": row["calls_saved"] or 0,
                    "carry_checked": row["carry_checked"] or 0,
                    "carry_mismatches": row["carry_mismatches"] or 0,
                    "breaches": counters.get("breaches", 0),
                    "closest_window_s": closest_window_s(arrivals, int(scenario["rate_limit"]["per_second"])),
                    "full_read_due": full_read_due(stack, monday) // PRODUCTS,  # students (all their pairs are due)
                    **_exactness(stack, w),
                }
            )
            print(f"  {api} INCREMENTAL={incremental}: {weeks[-1]}", flush=True)
    return {
        "weeks": weeks,
        "calls": sum(w["calls"] for w in weeks),
        "elapsed_s": round(sum(w["elapsed_s"] for w in weeks), 1),
    }


def _cycle_weeks(active: float = P_ACTIVE, full_read_weeks: int = FULL_READ_WEEKS) -> float:
    """The expected weeks between two reads of a student when activity is independent from week to week."""
    cycle = sum(k * active * (1 - active) ** (k - 1) for k in range(1, full_read_weeks))
    return cycle + full_read_weeks * (1 - active) ** (full_read_weeks - 1)


def read_fraction(
    active: float = P_ACTIVE, full_read_weeks: int = FULL_READ_WEEKS, share: float = SAMPLE_SHARE
) -> float:
    """Steady-state share of a school's students read in a week, activity independent from week to week: a
    student is read when active or when their observation is `full_read_weeks` old (the cycle between two reads
    is k weeks with probability a(1-a)^(k-1), k < N, else N), plus the sample of those carried."""
    read = 1 / _cycle_weeks(active, full_read_weeks)
    return read + share * (1 - read)


def calls_per_student(api: str) -> int:
    """Progress calls that read one student whole: one per product on v1, one on v3."""
    return PRODUCTS if api == "v1" else 1


def read_shares(off: dict[str, Any], on: dict[str, Any], *, sampled: bool = True) -> list[float]:
    """Week by week, the progress calls made with carrying over those made without (the same school, weeks and
    API): the share of the full read's calls that carrying still makes, forced full reads included, and the
    verification sample too unless `sampled` is False."""
    return [
        (b["progress_calls"] - (0 if sampled else b["sample_calls"])) / a["progress_calls"]
        for a, b in zip(off["weeks"], on["weeks"], strict=True)
    ]


def over_cycle(shares: list[float]) -> float:
    """A share averaged over one whole cycle after the first full read: from the week after it to the forced
    full read `FULL_READ_WEEKS` weeks later, both included (the steady state, measured)."""
    return sum(shares[w] for w in CYCLE) / len(CYCLE)


def projected_share(unsampled: float) -> float:
    """The measured read share without the sample, plus the sample the rule draws in a tag of the projection's
    size (rule.sample_size: 5 %, at least one per tag, which in the bench's tags of 15 is 1 in about 8)."""
    carried = round(P_STUDENTS * (1 - unsampled))
    return unsampled + sample_size(carried, SAMPLE_SHARE) / P_STUDENTS


def project(off: dict[str, Any], share: float, api: str) -> dict[str, Any]:
    """60 x 300 x 15 from the measured full-read weeks (progress calls per student, rate achieved) and the read
    share `share`; the listing is a tag's pages (150 students a page on v1, 200 on v3), which carrying keeps."""
    week = off["weeks"][-1]
    progress = week["progress_calls"] / (TAGS * STUDENTS) * (P_PRODUCTS / PRODUCTS if api == "v1" else 1)
    listing = P_TAGS * math.ceil(P_STUDENTS / (150 if api == "v1" else 200))
    rate = week["api_rate"]  # achieved from the first call to the last (a big school's run overhead is minutes)
    n = P_TAGS * P_STUDENTS
    full = math.ceil(n * progress) + listing
    carried = math.ceil(n * progress * share) + listing
    return {
        "calls_off": full,
        "hours_off": round(full / rate / 3600, 1),
        "calls_on": carried,
        "hours_on": round(carried / rate / 3600, 2),
        "read_share": round(share, 3),
        "rate": round(rate, 3),
    }


def carry_phase(root: Path) -> dict[str, Any]:
    scenario = school()
    found: dict[str, Any] = {
        api: {mode: all_weeks(root, api, mode, scenario) for mode in ("off", "on")} for api in ("v1", "v3")
    }
    return summarise(found)


def summarise(found: dict[str, Any]) -> dict[str, Any]:
    """What the measured weeks give: per week, calls per active student and the read shares; per API, the
    shares over the cycle and the projection; the targets."""
    for api in ("v1", "v3"):
        off, on = found[api]["off"], found[api]["on"]
        for mode in ("off", "on"):
            for w in found[api][mode]["weeks"]:
                # The sample's and the forced full reads' calls taken out: what the week's activity cost.
                due_calls = w["full_read_due"] * calls_per_student(api)
                w["calls_per_active_student"] = round(
                    (w["progress_calls"] - w["sample_calls"] - due_calls) / w["active_students"], 3
                )
        shares, unsampled = read_shares(off, on), read_shares(off, on, sampled=False)
        for w, share, bare in zip(on["weeks"], shares, unsampled, strict=True):
            w["read_share"], w["read_share_unsampled"] = round(share, 3), round(bare, 3)
        sampled = [  # of the students the plans would carry, the share the sample read anyway
            w["sample_calls"]
            / calls_per_student(api)
            / (w["carried"] / PRODUCTS + w["sample_calls"] / calls_per_student(api))
            if w["carried"] or w["sample_calls"]
            else 0.0
            for w in on["weeks"]
        ]
        found[api]["cycle"] = {
            "sample_of_carried": round(over_cycle(sampled), 3),
            "read_share": round(over_cycle(shares), 3),
            "read_share_unsampled": round(over_cycle(unsampled), 3),
            "projected_share": round(projected_share(over_cycle(unsampled)), 3),
            "model_read_fraction": round(read_fraction(), 3),
        }
        found[api]["projection"] = project(off, projected_share(over_cycle(unsampled)), api)
    v1, v3 = found["v1"]["projection"], found["v3"]["projection"]
    later = [w for api in ("v1", "v3") for w in found[api]["on"]["weeks"][1:]]
    every = [w for api in ("v1", "v3") for mode in ("off", "on") for w in found[api][mode]["weeks"]]
    found["targets"] = {
        "v3_under_1_5_h": v3["hours_on"] < 1.5,
        "v1_under_22_h": v1["hours_on"] < 22,
        "v3_calls_per_active_le_1": all(w["calls_per_active_student"] <= 1.0 for w in found["v3"]["on"]["weeks"][1:]),
        "exact": all(w["missing"] == 0 and w["wrong"] == 0 for w in every),
        "no_mismatch": all(w["carry_mismatches"] == 0 for w in later),
        "forced_full_read": all(
            found[api]["on"]["weeks"][FULL_READ_WEEKS]["full_read_due"] > 0 for api in ("v1", "v3")
        ),
        "no_breach": all(w["breaches"] == 0 for w in every),
    }
    return found


def markdown(r: dict[str, Any]) -> str:
    ok = {True: "met", False: "**missed**"}
    lines = [
        "| API | INCREMENTAL | week | active students | calls | progress calls | per active student | sample calls "
        "| due a full read | read share | rows carried | calls saved | compared / mismatches | elapsed (s) "
        "| missing / wrong |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for api in ("v1", "v3"):
        for mode in ("off", "on"):
            for w in r[api][mode]["weeks"]:
                share = w.get("read_share", "")
                due = w["full_read_due"] if mode == "on" else ""
                lines.append(
                    f"| {api} | {mode} | {w['week']} | {w['active_students']} | {w['calls']} | {w['progress_calls']} "
                    f"| {w['calls_per_active_student']} | {w['sample_calls']} | {due} | {share} | {w['carried']} "
                    f"| {w['calls_saved']} | {w['carry_checked']} / {w['carry_mismatches']} | {w['elapsed_s']} "
                    f"| {w['missing']} / {w['wrong']} |"
                )

    def later(api: str, mode: str, key: str) -> float:
        return float(sum(w[key] for w in r[api][mode]["weeks"][1:]))

    def closest(api: str) -> float:
        return min(w["closest_window_s"] or 9.0 for mode in ("off", "on") for w in r[api][mode]["weeks"])

    totals = " ".join(
        f"{api}: **{r[api]['off']['calls']} -> {r[api]['on']['calls']}** calls, "
        f"{r[api]['off']['elapsed_s']} -> {r[api]['on']['elapsed_s']} s (weeks 2-{len(WEEKS)}: "
        f"{later(api, 'on', 'calls') / later(api, 'off', 'calls'):.2f}x the calls, "
        f"{later(api, 'on', 'elapsed_s') / later(api, 'off', 'elapsed_s'):.2f}x the time);"
        for api in ("v1", "v3")
    )
    p1, p3, t = r["v1"]["projection"], r["v3"]["projection"], r["targets"]
    c1, c3 = r["v1"]["cycle"], r["v3"]["cycle"]
    breaches = sum(w["breaches"] for api in ("v1", "v3") for mode in ("off", "on") for w in r[api][mode]["weeks"])
    return f"""{CARRY_SECTION[0]}
## 8. Carrying students who did not study (INCREMENTAL off and on, side by side)

The same school ({TAGS} tags x {STUDENTS} students x {PRODUCTS} products, about half inactive each week, 150 +-
100 ms latency) extracted {len(WEEKS)} weeks at Cademi's 2 req/s on each API, once with carrying off and once on,
each on its own local stack, in one run ({r["date"]}). "Due a full read" is the students the carry plans read because
their observation was {FULL_READ_WEEKS} weeks old; "per active student" is progress calls, the sample's and
those full reads' taken out, over the students whose last access moved that week; "read share" is the week's
progress calls with carrying over those without. The first week reads everyone either way; the fifth is the
forced full read of everyone carried since the first.

{chr(10).join(lines)}

{len(WEEKS)} weeks, off -> on: {totals} every week's rows equal the ground truth ({ok[t["exact"]]}), no mismatch in
the sample ({ok[t["no_mismatch"]]}), the forced full-read week reached on both APIs ({ok[t["forced_full_read"]]}).
Calls per active student on v3 with carrying <= 1.0, the sample, the forced full reads and the listing apart
({ok[t["v3_calls_per_active_le_1"]]}). Rate-limit breaches: {breaches} ({ok[t["no_breach"]]}); the shortest span
Cademi saw from an admitted call to the second one after it (under its 1 s window would be a breach): v1
{closest("v1"):.3f} s, v3 {closest("v3"):.3f} s.

**Measured steady-state read share**, averaged over the cycle from the second week to the forced full read
({len(CYCLE)} weeks): v1 {c1["read_share"]:.1%}, v3 {c3["read_share"]:.1%} of a full read's progress calls with
the forced full read and the sample included; without the sample, v1 **{c1["read_share_unsampled"]:.1%}**, v3
**{c3["read_share_unsampled"]:.1%}** (the analytic model of independent weeks at {P_ACTIVE:.0%} activity and a
read every {FULL_READ_WEEKS} weeks at least gives {1 / _cycle_weeks():.1%}). The sample is set apart because
its size depends on the tag's: one student at least, which in the bench's tags of {STUDENTS} was
{c1["sample_of_carried"]:.0%} of the students carried, where a tag of {P_STUDENTS} draws {SAMPLE_SHARE:.0%}.

**Projection** to {P_TAGS} tags x {P_STUDENTS} students x {P_PRODUCTS} products, from the measured full-read calls
per student (v1 scaled to {P_PRODUCTS} products), the rate achieved from first call to last, and the measured
read share without the sample plus the sample a tag of {P_STUDENTS} draws: v1 {c1["projected_share"]:.1%},
v3 {c3["projected_share"]:.1%} of the full read's calls (the model with its {SAMPLE_SHARE:.0%} sample:
{c1["model_read_fraction"]:.1%}). v1: {p1["hours_off"]} h -> **{p1["hours_on"]} h** (< 22 h:
{ok[t["v1_under_22_h"]]}); v3: {p3["hours_off"]} h -> **{p3["hours_on"]} h** (< 1.5 h: {ok[t["v3_under_1_5_h"]]}).
The bench school's activity is drawn independently week by week; real students who stop tend to stay
stopped, which carries more.
{CARRY_SECTION[1]}"""
