"""What the pipeline asks of Cademi and what it reads back, whichever API answers (v1 `cademi.CademiClient`,
v3 `cademi_v3.CademiV3Client`): the `CademiSource` protocol, its answers and the call counters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from progress_monitor.errors import CademiError


@dataclass(frozen=True)
class Student:
    """A student as listed by a tag. CPF (`doc`) and `login_auto` are never copied here."""

    user_id: int
    nome: str
    email: str
    celular: str | None
    criado_em: str | None
    ultimo_acesso_em: str | None


@dataclass(frozen=True)
class Progress:
    """One user's progress in one product."""

    total: float
    assistidas: int
    completas: int


@dataclass(frozen=True)
class Tag:
    """A Cademi tag (one class cohort)."""

    tag_id: int
    nome: str


class CademiSource(Protocol):
    """What extraction and the registry ask of Cademi, whichever API answers (v1: `CademiClient`, v3:
    `cademi_v3.CademiV3Client`). Ids are the numeric ids of the history on both."""

    stats: CallStats

    def iter_tag_students(self, tag_id: int, stats: CallStats | None = None) -> Iterator[Student]: ...

    def progress_units(self, product_ids: tuple[int, ...]) -> list[tuple[int, ...]]:
        """How a student's products split into calls: one call per product (v1), one for all (v3)."""
        ...

    def student_progress(
        self, user_id: int, product_ids: tuple[int, ...], stats: CallStats | None = None
    ) -> dict[int, Progress | CademiError]:
        """Per product: its progress, CademiBusinessError (no access) or the error that made it fail.
        CademiConfigError propagates (a wrong key or URL fails the whole piece)."""
        ...

    def list_tags(self) -> list[Tag]: ...


class CallStats:
    """Thread-safe counters of HTTP attempts, retries and breaches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
