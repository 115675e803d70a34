"""Local stack commands: run | up | trigger | down (see the README)."""

from devstack.cli import main

raise SystemExit(main())
