"""A self-contained HTML preview of the dashboards (no CDN, charts as inline SVG), read from the same
reporting tables in the local BigQuery. Labels in Brazilian Portuguese."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from progress_monitor.platform import warehouse
from progress_monitor.platform.warehouse import Warehouse

STATUSES = ["adiantado", "no ritmo", "atrasado", "em risco", "concluído"]
COLORS = {
    "adiantado": "#2563eb",
    "no ritmo": "#16a34a",
    "atrasado": "#f59e0b",
    "em risco": "#dc2626",
    "concluído": "#7c3aed",
    "real": "#1d4ed8",
    "esperado": "#9ca3af",
}


def pct(value: Any, digits: int = 1) -> str:
    """41.7 -> '41,7%' (pt-BR); missing -> '—'."""
    if value is None:
        return "—"
    return f"{float(value):.{digits}f}%".replace(".", ",")


def signed(value: Any) -> str:
    if value is None:
        return "—"
    return ("+" if float(value) > 0 else "") + f"{float(value):.1f}".replace(".", ",") + " p.p."


def br_date(value: Any) -> str:
    return value.strftime("%d/%m/%Y") if isinstance(value, date) else "—"


def _svg_open(title: str, width: int, height: int) -> str:
    return (
        f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    )


def _legend(names: list[str], x: int, y: int, step: int) -> list[str]:
    """Colour swatch and name per series, left to right."""
    return [
        f'<rect x="{x + i * step}" y="{y}" width="10" height="10" fill="{COLORS.get(name, "#111")}"/>'
        f'<text x="{x + i * step + 14}" y="{y + 9}" font-size="11">{escape(name)}</text>'
        for i, name in enumerate(names)
    ]


def line_chart(title: str, labels: list[str], series: dict[str, list[float | None]]) -> Markup:
    """A small line chart (0-100 %) as inline SVG."""
    width, height, left, bottom, top = 560, 235, 40, 30, 25
    inner_w, inner_h = width - left - 40, height - bottom - top
    step = inner_w / max(len(labels) - 1, 1)
    parts = [_svg_open(title, width, height)]
    for tick in (0, 25, 50, 75, 100):
        y = top + inner_h * (1 - tick / 100)
        grid = f'<line x1="{left}" x2="{left + inner_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
        parts.append(grid + f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{tick}%</text>')
    for i, label in enumerate(labels):
        x = left + i * step
        text = escape(label)
        parts.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{text}</text>')
    for name, values in series.items():
        points = [(left + i * step, top + inner_h * (1 - v / 100)) for i, v in enumerate(values) if v is not None]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        dash = ' stroke-dasharray="5 4"' if name == "esperado" else ""
        parts.append(
            f'<polyline fill="none" stroke="{COLORS.get(name, "#111")}" stroke-width="2.5"{dash} points="{path}"/>'
        )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS.get(name, "#111")}"/>' for x, y in points]
    parts += _legend(list(series), left, 0, 90)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in the SVG went through escape()


def stacked_bars(title: str, labels: list[str], shares: list[dict[str, float]]) -> Markup:
    """Share of students per status, one stacked bar per week, as inline SVG."""
    width, height, left = 560, 230, 40
    bar_area = width - left - 10
    bar_w = bar_area / max(len(labels), 1) * 0.6
    parts = [_svg_open(title, width, height)]
    inner_h = height - 60
    for i, (label, share) in enumerate(zip(labels, shares, strict=True)):
        x = left + i * bar_area / max(len(labels), 1) + bar_w * 0.3
        y = 20.0
        for status in STATUSES:
            h = inner_h * share.get(status, 0.0)
            if h > 0:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                    f'fill="{COLORS[status]}"><title>{escape(status)}: {pct(100 * share[status], 0)}'
                    "</title></rect>"
                )
            y += h
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{height - 25}" font-size="10" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts += _legend(STATUSES, left, height - 12, 100)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in the SVG went through escape()


def _rows(svc: Warehouse, sql: str) -> list[dict[str, Any]]:
    return warehouse.query(svc, sql)


def gather(svc: Warehouse) -> dict[str, Any]:
    """Everything the pages show, read from the reporting tables and views."""
    return {
        "classes": _rows(svc, "SELECT * FROM `${report_class_week}` ORDER BY tag_id, snapshot_date"),
        "overall": _rows(
            svc,
            """SELECT snapshot_date, iso_week, COUNT(*) AS students, AVG(actual) AS mean_actual,
                      AVG(expected) AS mean_expected,
                      SAFE_DIVIDE(COUNTIF(status = 'adiantado'), COUNTIF(status IS NOT NULL)) AS adiantado,
                      SAFE_DIVIDE(COUNTIF(status = 'no ritmo'), COUNTIF(status IS NOT NULL)) AS no_ritmo,
                      SAFE_DIVIDE(COUNTIF(status = 'atrasado'), COUNTIF(status IS NOT NULL)) AS atrasado,
                      SAFE_DIVIDE(COUNTIF(status = 'em risco'), COUNTIF(status IS NOT NULL)) AS em_risco,
                      SAFE_DIVIDE(COUNTIF(status = 'concluído'), COUNTIF(status IS NOT NULL)) AS concluido
               FROM `${report_student_week}` GROUP BY snapshot_date, iso_week ORDER BY snapshot_date""",
        ),
        "tutors": _rows(svc, "SELECT * FROM `${tutor_list}` ORDER BY status DESC, weeks_behind DESC, gap"),
        "movements": _rows(svc, "SELECT * FROM `${report_movements}` ORDER BY snapshot_date, movement, user_id"),
        "outcomes": _rows(svc, "SELECT * FROM `${report_tutor_outcomes}` ORDER BY snapshot_date DESC, tag_id"),
        "timelines": _rows(
            svc,
            "SELECT * FROM `${report_risk_timeline}` WHERE first_flagged IS NOT NULL "
            "ORDER BY weeks_em_risco DESC, weeks_atrasado DESC, user_id LIMIT 50",
        ),
        "runs": _rows(svc, "SELECT * FROM `${report_run_health}` ORDER BY started_at DESC"),
    }


def render(data: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(pct=pct, signed=signed, br_date=br_date)
    overall = data["overall"]
    labels = [r["iso_week"] for r in overall]
    overview_line = line_chart(
        "Progresso médio: real e esperado",
        labels,
        {"real": [r["mean_actual"] for r in overall], "esperado": [r["mean_expected"] for r in overall]},
    )
    overview_bars = stacked_bars(
        "Alunos por situação, por semana",
        labels,
        [
            {
                "adiantado": r["adiantado"] or 0,
                "no ritmo": r["no_ritmo"] or 0,
                "atrasado": r["atrasado"] or 0,
                "em risco": r["em_risco"] or 0,
                "concluído": r["concluido"] or 0,
            }
            for r in overall
        ],
    )
    by_class: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in data["classes"]:
        by_class[row["tag_id"]].append(row)
    class_charts = {
        tag: line_chart(
            f"Turma {rows[-1]['turma']} (tag {tag})",
            [r["iso_week"] for r in rows],
            {"real": [r["mean_actual"] for r in rows], "esperado": [r["mean_expected"] for r in rows]},
        )
        for tag, rows in by_class.items()
    }
    latest = overall[-1] if overall else None
    template = resources.files("devstack").joinpath("report.html.j2").read_text(encoding="utf-8")
    return env.from_string(template).render(
        generated=datetime.now(UTC).strftime("%d/%m/%Y %H:%M UTC"),
        latest=latest,
        overview_line=overview_line,
        overview_bars=overview_bars,
        by_class=by_class,
        class_charts=class_charts,
        tutors=data["tutors"],
        movements=data["movements"],
        outcomes=data["outcomes"],
        timelines=data["timelines"],
        runs=data["runs"],
    )


def write_report(svc: Warehouse, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(gather(svc)), encoding="utf-8")
    return path
