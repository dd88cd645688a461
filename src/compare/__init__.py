"""Comparing finished runs: the leaderboard (leaderboard.py), significance between rows (significance.py), the
written report (report.py, `python -m src.compare`), the offline HTML and the W&B dashboards and the headless
browser that checks the HTML one. It reads records only: no torch, no Lightning."""
