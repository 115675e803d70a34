"""Cademi simulator: a local stand-in for the Cademi REST API, driven by a scenario file."""
