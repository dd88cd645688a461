"""python -m src.diagnostics: gradient-flow curves of finished runs (src/diagnostics/report.py)."""

import sys

from src.diagnostics.report import main

sys.exit(main(sys.argv[1:]))
