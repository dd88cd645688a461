"""The records a run leaves and reading them back: metrics.json (record.py), the run dir's claim and lock
(rundir.py), checkpoints (checkpoints.py), rebuilding the suite's objects from a stored config (rebuild.py) and
what identifies a run (identity.py)."""
