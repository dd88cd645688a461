"""Where the suite's own files are, in a checkout and in an installed package alike.

conf/ is the config tree at the repository's top; src/conf is a link to it, which the wheel turns into a copy
(pyproject.toml's package-data), so an installed suite finds its configs inside its package, from any working
directory. REPO_ROOT is the checkout (None when the suite runs from an installed package).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = PACKAGE_DIR / "conf"
REPO_ROOT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None
