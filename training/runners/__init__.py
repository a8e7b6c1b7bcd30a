"""Runners: plain functions that train or generate from a snapshot file, a config dataclass and an
output directory, knowing nothing of Django (the kinds in training/kinds wrap them in jobs)."""
