"""Gradient diagnostics: the callback that measures (measure.py) and the reading and plotting of what it wrote
(report.py, `python -m src.diagnostics`)."""
