"""Operator command: the reporting layer of the configured project (the Looker Studio link, a rebuild of the
reports, the tutors' list as CSV)."""

from __future__ import annotations

import argparse
from pathlib import Path

from progress_monitor.commands import options
from progress_monitor.pipeline.reporting import export_tutors, looker_studio_url, refresh


def main(argv: list[str] | None = None) -> int:
    """`python -m progress_monitor reporting looker-url|refresh|export-tutors` for the configured project."""
    parser = argparse.ArgumentParser(prog="python -m progress_monitor reporting", description=main.__doc__)
    parser.add_argument("command", choices=("looker-url", "refresh", "export-tutors"))
    parser.add_argument("--out", type=Path, default=Path("lista-dos-tutores.csv"), help="export-tutors: the CSV")
    parser.add_argument("--tag", type=int, default=None, help="export-tutors: one class only")
    options.add_settings_option(parser)
    args = parser.parse_args(argv)
    # the link names only the project and the dataset
    svc = options.build(args, ("GCP_PROJECT", "BQ_DATASET")) if args.command == "looker-url" else options.build(args)
    if args.command == "looker-url":
        print(looker_studio_url(svc.cfg))
    elif args.command == "export-tutors":
        count = export_tutors(svc, args.out, args.tag)
        print(f"{count} students written to {args.out}")
    else:
        refresh(svc)
    return 0
