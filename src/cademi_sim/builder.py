"""A school built up piece by piece: the one way tests and benchmarks write their scenarios.

`School(...).build()` is a scenario dict in the shared contract (scenario-format.md): products, tags, tracks,
students with their memberships and hand-written progress, faults and the registry. Only what a caller gives is
written: a student without `last_access` has no `ultimo_acesso_em`, a school without `access` entries lets the
simulator derive access from progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Span = tuple[int, int, int | None]  # (tag, from_week, to_week or None: still holds it)


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


def rising_progress(user: int, product: int, totals: Sequence[float]) -> dict[str, Any]:
    """A `progress` entry from computed totals per week: a lesson watched per 5 %, completed per 6 %."""
    return {
        "user": user,
        "product": product,
        "total": [f"{t:.1f}%" for t in totals],
        "assistidas": [int(t // 5) for t in totals],
        "completas": [int(t // 6) for t in totals],
    }


@dataclass
class School:
    """A scenario under construction; every method appends in call order and returns nothing but an id."""

    weeks: Sequence[str]
    api_key: str = "test-key"
    rate: tuple[float, float] = (200, 12000)
    breach: str | None = None
    latency_ms: int = 0
    products: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    memberships: list[dict[str, Any]] = field(default_factory=list)
    access: list[dict[str, Any]] | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] | None = None
    tracks: list[dict[str, Any]] = field(default_factory=list)
    registered: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # optional scenario extensions (quirks, staff_actions, v3)

    def product(self, product_id: int, nome: str | None = None, aulas: int | None = None) -> int:
        entry: dict[str, Any] = {"id": product_id, "nome": nome or f"Curso {product_id}"}
        if aulas is not None:
            entry["aulas"] = aulas
        self.products.append(entry)
        return product_id

    def track(self, track_id: str, nome: str, due_weeks: dict[int, int], slack_channel: str | None = None) -> str:
        """A track with each product's due week (weeks after a class's start by which it should be done)."""
        entry: dict[str, Any] = {"id": track_id, "nome": nome}
        if slack_channel is not None:
            entry["slack_channel"] = slack_channel
        entry["products"] = [{"product": p, "due_week": w} for p, w in due_weeks.items()]
        self.tracks.append(entry)
        return track_id

    def tag(
        self,
        tag_id: int,
        nome: str,
        *,
        track: str | None = None,
        turma: str | None = None,
        start_date: str | None = None,
        slack_channel: str | None = None,
    ) -> int:
        """A Cademi tag; with a `track`, also registered (monitored) as that class."""
        self.tags.append({"id": tag_id, "nome": nome})
        if track is not None:
            entry: dict[str, Any] = {
                "tag_id": tag_id,
                "track": track,
                "turma": turma,
                "start_date": start_date or self.weeks[0],
            }
            if slack_channel is not None:
                entry["slack_channel"] = slack_channel
            self.registered.append(entry)
        return tag_id

    def student(
        self,
        user_id: int,
        spans: Sequence[Span] | int,
        *,
        nome: str | None = None,
        email: str | None = None,
        doc: str | None = None,
        celular: str | None = None,
        criado_em: str | None = None,
        last_access: Sequence[str | None] | None = None,
        totals: dict[int, list[float]] | None = None,
        progress: Sequence[dict[str, Any]] = (),
    ) -> int:
        """A user, their memberships (a tag id alone: from the first week on) and their progress, given as
        hand-written `totals` per product and week, or as ready `progress` entries."""
        user: dict[str, Any] = {
            "id": user_id,
            "nome": nome if nome is not None else f"Aluna {user_id}",
            "email": email if email is not None else f"aluna{user_id}@example.com",
            "doc": doc,
            "celular": celular,
            "criado_em": criado_em,
        }
        if last_access is not None:
            user["ultimo_acesso_em"] = list(last_access)
        self.users.append(user)
        for tag, from_week, to_week in [(spans, 0, None)] if isinstance(spans, int) else spans:
            self.memberships.append({"user": user_id, "tag": tag, "from_week": from_week, "to_week": to_week})
        self.progress += hand_progress(user_id, totals or {})
        self.progress += list(progress)
        return user_id

    def grant(self, user_id: int, product_id: int) -> None:
        """An explicit `access` entry (a school that lists access instead of deriving it from progress)."""
        if self.access is None:
            self.access = []
        self.access.append({"user": user_id, "product": product_id})

    def fault(self, **fault: Any) -> None:
        """A fault as scenario-format.md describes it (path or path_prefix, week, status/body/delay_ms, times)."""
        if self.faults is None:
            self.faults = []
        self.faults.append(fault)

    def build(self) -> dict[str, Any]:
        rate_limit: dict[str, Any] = {"per_second": self.rate[0], "per_minute": self.rate[1]}
        if self.breach is not None:
            rate_limit["breach"] = self.breach
        scenario: dict[str, Any] = {
            "api_key": self.api_key,
            "rate_limit": rate_limit,
            "latency_ms": self.latency_ms,
            "weeks": list(self.weeks),
            "products": self.products,
            "tags": self.tags,
            "users": self.users,
            "memberships": self.memberships,
        }
        if self.access is not None:
            scenario["access"] = self.access
        scenario["progress"] = self.progress
        if self.faults is not None:
            scenario["faults"] = self.faults
        scenario.update(self.extra)
        scenario["registry"] = {"tracks": self.tracks, "tags": self.registered}
        return scenario
