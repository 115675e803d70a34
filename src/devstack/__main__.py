"""Local stack commands: run | up | trigger | down (see docs/development.md)."""

from devstack.cli import main

raise SystemExit(main())
