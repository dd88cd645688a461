"""python -m src.compare: the comparison of finished runs (src/compare/report.py)."""

import sys

from src.compare.report import main

sys.exit(main())
