"""Operator commands, run as `python -m progress_monitor <command>` with the functions' settings."""
