"""Operator command: carrying's school-wide switch (carrying/store.py). A sample mismatch turns carrying off;

    python -m progress_monitor carrying status     # is carrying off, and since which mismatch
    python -m progress_monitor carrying on         # turn it back on (deletes the switch object)

with the functions' settings (`--settings FILE` from Terraform, or the environment).
"""

from __future__ import annotations

import argparse
import json

from progress_monitor.carrying.store import status, switch_on
from progress_monitor.commands import options
from progress_monitor.platform import logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m progress_monitor carrying", description=__doc__)
    parser.add_argument("command", choices=["status", "on"])
    options.add_settings_option(parser)
    args = parser.parse_args(argv)
    logs.configure()
    svc = options.build(args)
    if args.command == "on":
        print(json.dumps({"was_off": switch_on(svc), **status(svc)}))
    else:
        print(json.dumps(status(svc)))
    return 0
