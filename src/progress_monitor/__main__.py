"""`python -m progress_monitor <command> ...`: the operator's one entry point (docs/operations.md).

privacy       export or erase one student (LGPD, docs/privacy.md)
replay        rebuild history from the shards, re-extract one tag's week, resume a run
reporting     the Looker Studio link, rebuild the reports, the tutors' list as CSV
carrying      status of carrying's switch, or turn it back on
cademi-check  the v3 client's mapping against Cademi's live contract

Every command takes `--settings FILE`: the deployment's settings, written by
`terraform -chdir=infra/terraform output -json functions_settings > FILE` (default: the environment).
"""

from __future__ import annotations

import importlib
import sys

from progress_monitor.settings import SettingsError

COMMANDS = {
    "privacy": "progress_monitor.commands.privacy",
    "replay": "progress_monitor.commands.replay",
    "reporting": "progress_monitor.commands.reporting",
    "carrying": "progress_monitor.commands.carrying",
    "cademi-check": "progress_monitor.commands.cademi_check",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        command: int = importlib.import_module(COMMANDS[args[0]]).main(args[1:])
    except SettingsError as exc:  # missing or contradictory settings: a refusal that says what, not a traceback
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    return command


if __name__ == "__main__":
    raise SystemExit(main())
