"""Shared package of the learning-progress monitor: every function imports its logic from here."""
