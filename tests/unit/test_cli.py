"""The operator's one entry point: `python -m progress_monitor <command>` dispatches to each command's parser."""

from __future__ import annotations

import pytest

from progress_monitor.__main__ import COMMANDS, main


def test_no_command_or_an_unknown_one_prints_the_list_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["apagar-tudo"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in COMMANDS), err


def test_help_lists_the_commands_and_each_command_has_its_own_parser(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exited:
            main([name, "--help"])
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: python -m progress_monitor {name}")
