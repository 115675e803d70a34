"""The pipeline's three stages, one module each, called by the thin adapters in functions/<fn>/main.py:

schedule.py (extract_tags) -> extract.py (extract_progress) -> load.py (load_history). The failure policy
they share with the tutors' worker is `progress_monitor.pipeline.failures`; their messages are `contracts.messages`.
"""
