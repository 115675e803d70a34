"""What every operator command takes: `--settings FILE`, the deployment's settings as Terraform outputs them,

    terraform -chdir=infra/terraform output -json functions_settings > settings.json
    python -m progress_monitor privacy erase --settings settings.json --student 123456 ...

and the one settings object built from it (settings.operator_settings: the file, the environment for the rest).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from progress_monitor import services
from progress_monitor.services import Services
from progress_monitor.settings import DEPLOYMENT_NAMES, operator_settings

HELP = (
    "the deployment's settings (`terraform -chdir=infra/terraform output -json functions_settings > FILE`); "
    "without it, the environment"
)


def add_settings_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", type=Path, metavar="FILE", default=None, help=HELP)


def build(
    args: argparse.Namespace, need: tuple[str, ...] = DEPLOYMENT_NAMES, environ: Mapping[str, str] | None = None
) -> Services:
    """The command's Services from its `--settings` file (or the environment alone)."""
    return services.build(operator_settings(args.settings, environ, need))
