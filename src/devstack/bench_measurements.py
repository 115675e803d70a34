"""`make bench`'s measurements: a synthetic school, a stack per phase, one weekly run timed through it, the old
in-house way on the same simulator, peak memory, the v1 and v3 APIs side by side, what tutors wait for in Slack,
and the projection to a big school. `bench.py` runs them in order; `bench_report.py` writes them down."""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import requests

from devstack.here import services_here
from devstack.stack import LocalStack
from progress_monitor.contracts.messages import ScheduleRequest
from progress_monitor.contracts.values import RunId
from progress_monitor.platform import warehouse

WEEK = "2026-03-02"
LEGACY_SLEEP_S = 0.8  # the earlier in-house script's pause between calls
FUNCTION_MEMORY_MB = 512  # extract_progress's configured memory (infra/terraform)
PIECE_BUDGET_S = 300.0  # production piece budget
LOAD_JOBS_PER_TABLE_PER_DAY = 1500  # BigQuery quota


def school(
    tags: int, students: int, products: int, rate: float, latency_ms: float | dict[str, float]
) -> dict[str, Any]:
    """A synthetic school: every student has access to every product of the one track."""
    product_ids = list(range(101, 101 + products))
    users, memberships, progress = [], [], []
    uid = 10_000
    for t in range(tags):
        for _ in range(students):
            uid += 1
            users.append({"id": uid, "nome": f"Aluno {uid}", "email": f"a{uid}@example.com"})
            memberships.append({"user": uid, "tag": 9001 + t, "from_week": 0, "to_week": None})
            for p in product_ids:
                progress.append(
                    {"user": uid, "product": p, "total": [f"{(uid * p) % 101}%"], "assistidas": [1], "completas": [1]}
                )
    return {
        "api_key": "bench-key",
        "rate_limit": {"per_second": rate, "per_minute": rate * 60, "breach": "429"},
        "latency_ms": latency_ms,
        "weeks": [WEEK],
        "products": [{"id": p, "nome": f"Curso {p}"} for p in product_ids],
        "tags": [{"id": 9001 + t, "nome": f"Turma {t}"} for t in range(tags)],
        "users": users,
        "memberships": memberships,
        "access": [{"user": p["user"], "product": p["product"]} for p in progress],
        "progress": progress,
        "registry": {
            "tracks": [
                {
                    "id": "trilha",
                    "nome": "Trilha",
                    "products": [{"product": p, "due_week": 4 * (i + 1)} for i, p in enumerate(product_ids)],
                }
            ],
            "tags": [
                {"tag_id": 9001 + t, "track": "trilha", "turma": f"2026-{t + 1:02d}", "start_date": WEEK}
                for t in range(tags)
            ],
        },
    }


@contextmanager
def running_stack(workdir: Path, scenario: dict[str, Any], **options: Any) -> Iterator[LocalStack]:
    path = workdir / "scenario.json"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scenario))
    stack = LocalStack.start(workdir, path, **options)
    try:
        stack.use_here()
        yield stack
    finally:
        stack.stop()


def pipeline_run(stack: LocalStack) -> dict[str, Any]:
    """One weekly run through the whole local stack, timed from the schedule's publish to the last row."""
    admin = stack.admin()
    admin.set_week(WEEK)
    admin.reset()
    published = time.time()
    stack.publish_schedule(ScheduleRequest(week=date.fromisoformat(WEEK)))
    row = stack.wait_run(RunId.parse(WEEK), timeout=3600)
    if row.get("status") != "succeeded":
        raise RuntimeError(f"bench run did not succeed: {row}")
    counters, window = admin.counters(), admin.window()
    scenario = stack.scenario
    rate = float(scenario.rate_limit["per_second"])
    calls = int(counters.get("requests_total", 0))
    first, last = window["first"] or published, window["last"] or published
    # "the last row in BigQuery": the latest loaded_at of the run's history rows
    loaded = warehouse.query(
        services_here(), "SELECT MAX(loaded_at) AS t FROM `${progress_history}` WHERE run_id = @run_id", run_id=WEEK
    )[0]["t"]
    finished = loaded.timestamp()
    students = sum(len(scenario.members(t["tag_id"], 0)) for t in scenario.raw["registry"]["tags"])
    products = len(scenario.raw["registry"]["tracks"][0]["products"])
    return {
        "allowed_rate": rate,
        "calls": calls,
        "breaches": int(counters.get("breaches", 0)),
        "achieved_rate": round((calls - 1) / (last - first), 3) if last > first else None,
        "utilisation": round((calls - 1) / (last - first) / rate, 3) if last > first else None,
        "students": students,
        "products": products,
        "calls_per_student_product": round(calls / (students * products), 4),
        "end_to_end_s": round(finished - published, 2),
        "api_bound_s": round(calls / rate, 2),
        "overhead": round((finished - published) / (calls / rate), 3),
        "publish_to_first_call_s": round(first - published, 2),
        "last_call_to_last_row_s": round(finished - last, 2),
        "pieces": row["pieces_loaded"],
        "records_loaded": row["records_loaded"],
    }


def legacy_run(stack: LocalStack, students_per_tag: int) -> dict[str, Any]:
    """The earlier in-house script, faithfully: one call at a time, 0.8 s sleep after each, no retry.

    It followed next_page_url (overwriting its list: only the last page survived); here the cursor is re-based
    on the simulator so the script can run at all. It is timed on the first `students_per_tag` students of
    every tag and its rate projected to the whole school.
    """
    base = stack.endpoints["cademi"]
    scenario = stack.scenario
    session = requests.Session()
    session.headers["Authorization"] = scenario.api_key
    products = [p["product"] for p in scenario.raw["registry"]["tracks"][0]["products"]]
    admin = stack.admin()
    admin.reset()
    calls = 0
    started = time.monotonic()
    for tag in scenario.raw["registry"]["tags"]:
        url: str | None = f"{base}/usuario/lista_por_tag/{tag['tag_id']}"
        users: list[dict[str, Any]] = []
        while url:
            body = session.get(url, timeout=30).json()
            calls += 1
            time.sleep(LEGACY_SLEEP_S)
            users = body["data"]["usuario"]  # the original overwrote its list on every page
            nxt = body["data"]["paginator"].get("next_page_url")
            url = f"{base}/usuario/lista_por_tag/{tag['tag_id']}?cursor={nxt.split('cursor=')[1]}" if nxt else None
        for user in users[:students_per_tag]:
            for product in products:
                session.get(f"{base}/usuario/progresso_por_produto/{user['id']}/{product}", timeout=30).json()
                calls += 1
                time.sleep(LEGACY_SLEEP_S)
    elapsed = time.monotonic() - started
    return {
        "calls": calls,
        "elapsed_s": round(elapsed, 2),
        "rate": round(calls / elapsed, 3),
        "breaches": int(admin.counters().get("breaches", 0)),
    }


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children (the gunicorn worker)."""
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
        pids += [int(p) for p in children.split()]
    except OSError:
        pass
    peak = 0.0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return round(peak, 1)


def v1_and_v3(root: Path) -> dict[str, Any]:
    """The same school (4 tags x 85 students x 3 products, 150 +- 100 ms) at 2 req/s on each API."""
    real_school = school(4, 85, 3, 2.0, {"mean": 150, "jitter": 100})
    found: dict[str, Any] = {}
    for api in ("v1", "v3"):
        with running_stack(root / api, real_school, piece_budget_s=PIECE_BUDGET_S, cademi_api=api) as stack:
            run = pipeline_run(stack)
            per_student = run["calls"] / run["students"]
            run["calls_per_student"] = round(per_student, 3)
            if api == "v1":  # v1's calls grow with the track's products; v3's do not
                per_student = per_student / run["products"] * PROJECTED_PRODUCTS
            run["projection"] = projection(per_student, run["utilisation"] or 0.97)
            found[api] = run
            print(f"  {api}: {run}", flush=True)
    found["speedup"] = round(found["v1"]["end_to_end_s"] / found["v3"]["end_to_end_s"], 2)
    found["targets"] = {
        "v3_calls_per_student_le_1_05": found["v3"]["calls_per_student"] <= 1.05,
        "v3_utilisation_ge_0_95": (found["v3"]["utilisation"] or 0) >= 0.95,
        "v3_zero_breaches": found["v3"]["breaches"] == 0,
    }
    return found


SLACK_SAMPLES = 10
# How a click was recorded before tutors/records.py: one MERGE whose parameters held the student's id (kept here
# only to time it beside today's staging table, load job and MERGE).
CLICK_MERGE_BEFORE = """
MERGE `${tutor_actions}` T
USING (SELECT @week AS snapshot_date, @tag_id AS tag_id, @user_id AS user_id, @action AS action, @tutor AS tutor) S
ON T.snapshot_date = S.snapshot_date AND T.tag_id = S.tag_id AND T.user_id = S.user_id AND T.action = S.action
   AND T.tutor = S.tutor
WHEN NOT MATCHED THEN INSERT (snapshot_date, tag_id, user_id, action, tutor, channel_id, acted_at)
  VALUES (@week, @tag_id, @user_id, @action, @tutor, @channel, @now)
"""


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return round(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2, 3)


def slack_latencies(root: Path) -> dict[str, Any]:
    """On the demo school's first week: seconds from the run's reports to every digest posted; `/turma alunos`
    acknowledged vs answered through its response_url; a click until the message shows it (medians of 10)."""
    from cademi_sim import demo
    from devstack.slack_standin import SlackStandin, click, signed_post
    from devstack.wiring import LOCAL_SLACK_TEAM, LOCAL_SLACK_USER

    scenario = demo.generate()
    with running_stack(root / "slack", scenario) as stack:
        week = stack.scenario.weeks[0]
        run_id = stack.trigger(week)
        row = stack.wait_run(run_id, timeout=900)
        digests = stack.wait_digests(run_id, timeout=300)
        posted = max(r["posted_at"] for r in digests)
        to_digests = (posted - row["reports_refreshed_at"]).total_seconds()
        slack = SlackStandin(stack.endpoints["slack"])
        secret = stack.local_secrets["SLACK_SIGNING_SECRET"]
        acks, answers = [], []
        for i in range(SLACK_SAMPLES):
            name = f"bench-{i}"
            body = (
                f"command=%2Fturma&text=alunos+5001&user_id={LOCAL_SLACK_USER}&team_id={LOCAL_SLACK_TEAM}"
                f"&channel_id=C0ANALISTAS&response_url={slack.response_url(name)}"
            )
            started = time.monotonic()
            signed_post(stack.endpoints["functions"]["slack_command"], body, secret).raise_for_status()
            acks.append(time.monotonic() - started)
            while not any(r["url_path"].endswith(name) for r in slack.responses()):
                time.sleep(0.02)
            answers.append(time.monotonic() - started)
        message = next(m for m in slack.messages() if m["channel"] == "C0ANALISTAS")
        students = [int(b["block_id"].rsplit(":", 1)[1]) for b in message["blocks"] if b.get("type") == "actions"][
            :SLACK_SAMPLES
        ]
        clicks = []
        for user_id in students:
            versions = next(m for m in slack.messages() if m["ts"] == message["ts"])["versions"]
            started = time.monotonic()
            url = stack.endpoints["functions"]["slack_actions"]
            click(url, secret, message, user_id, "contatado", LOCAL_SLACK_TEAM, "UBENCH01").raise_for_status()
            while next(m for m in slack.messages() if m["ts"] == message["ts"])["versions"] == versions:
                time.sleep(0.02)
            clicks.append(time.monotonic() - started)
        before, now = _record_timings(week, 5001, students)
    ack, answer = _median(acks), _median(answers)
    return {
        "channels": len(digests),
        "reports_to_digests_s": round(to_digests, 2),
        "alunos_ack_s": ack,
        "alunos_answer_s": answer,
        "answer_over_ack": round(answer / ack, 1) if ack else None,
        "click_to_update_s": _median(clicks),
        "record_before_s": _median(before),
        "record_now_s": _median(now),
        "record_now_over_before": round(_median(now) / _median(before), 1),
        "samples": SLACK_SAMPLES,
    }


def _record_timings(week: date, tag_id: int, students: list[int]) -> tuple[list[float], list[float]]:
    """A click's record alone, the two ways, alternating (side by side on the same BigQuery): one MERGE with
    the id among its parameters (before), and today's staging table, load job and MERGE (tutors/records.py)."""
    from devstack.here import services_here
    from progress_monitor.platform import warehouse
    from progress_monitor.tutors import records

    svc = services_here()
    before, now = [], []
    for i, user_id in enumerate(students):
        row = {"snapshot_date": week, "tag_id": tag_id, "user_id": user_id, "action": "sem_resposta"}
        started = time.monotonic()
        warehouse.query(
            svc,
            CLICK_MERGE_BEFORE,
            week=week,
            tag_id=tag_id,
            user_id=user_id,
            action="sem_resposta",
            tutor=f"slack:UBEFORE{i}",
            channel="C0ANALISTAS",
            now=svc.now(),
        )
        before.append(time.monotonic() - started)
        started = time.monotonic()
        records.record_action(
            svc, {**row, "tutor": f"slack:UNOW{i}", "channel_id": "C0ANALISTAS", "acted_at": svc.now()}
        )
        now.append(time.monotonic() - started)
    return before, now


PROJECTED_TAGS, PROJECTED_STUDENTS, PROJECTED_PRODUCTS = 60, 300, 15


def projection(per_student: float, utilisation: float) -> dict[str, Any]:
    """60 tags x 300 students x 15 products at Cademi's 2 req/s, from the measured calls per student (for that
    track) and utilisation."""
    tags, students, products, rate = PROJECTED_TAGS, PROJECTED_STUDENTS, PROJECTED_PRODUCTS, 2.0
    calls = math.ceil(tags * students * per_student)
    effective = rate * min(utilisation, 1.0)
    hours = calls / effective / 3600
    calls_per_piece = effective * PIECE_BUDGET_S
    pieces_per_tag = math.ceil(students * per_student / calls_per_piece)
    pieces = tags * pieces_per_tag
    load_jobs = pieces + tags  # one per shard, one per tag's contacts
    load_jobs_per_day = load_jobs / max(hours / 24, 1.0)
    return {
        "school": f"{tags} tags x {students} students x {products} products at {rate:g} req/s",
        "calls": calls,
        "hours": round(hours, 1),
        "pieces": pieces,
        "piece_minutes": round(PIECE_BUDGET_S / 60, 1),
        "bigquery_load_jobs": load_jobs,
        "load_jobs_per_table_per_day": round(load_jobs_per_day),
        "binding_limit": "API rate (2 req/s for the whole school)",
        "fits_in_a_week": hours < 24 * 7,
    }
