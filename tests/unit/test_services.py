"""The Services the adapters build once per instance: the Cademi client made once, an unreadable key read again."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from progress_monitor import services
from progress_monitor.errors import SecretUnavailableError
from progress_monitor.settings import Settings
from tests.unit.offline import offline_services


def test_the_cademi_client_is_made_once_and_an_unreadable_key_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[str | Exception] = [SecretUnavailableError("Secret Manager down"), "ck_key"]

    def get_secret(cfg: Settings, name: str, fresh: bool = False) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(services, "get_secret", get_secret)
    svc = offline_services(Settings())
    with pytest.raises(SecretUnavailableError):
        svc.cademi()
    client = svc.cademi()  # the failure was not kept: the key is read again
    assert svc.cademi() is client and answers == []  # and then the one client is kept


def test_the_clock_is_aware_utc_and_a_test_can_pin_it() -> None:
    svc = offline_services(Settings())
    assert svc.now().tzinfo is UTC
    pinned = datetime(2026, 11, 23, 12, tzinfo=UTC)
    later = replace(svc, clock=lambda: pinned)
    assert later.now() == pinned and later.cfg is svc.cfg
