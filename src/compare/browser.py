"""Open an HTML file (the comparison's dashboard) in headless chromium, as a user's browser would.

    python -m src.compare.browser outputs/sweeps/quick/dashboard.html --screenshot docs/dashboard.png

It uses the system's chromium (Debian: `apt-get install -y chromium`; RNN_BENCH_CHROMIUM names another binary),
driven by Playwright's Python package: no browser is downloaded. Any request for something other than a file or
inline data is refused and reported (the dashboard must open offline), and so is every console error and
uncaught exception. Prints what it found as JSON; exits 1 when the page has errors or made requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from src.common.errors import UserError

INSTALL = (
    "install Debian's chromium (as root: apt-get update && apt-get install -y chromium; .ci/run does this "
    "in CI) or set RNN_BENCH_CHROMIUM to a chromium binary"
)


class BrowserMissing(UserError):
    """No chromium binary, or no Playwright to drive it."""


def find_chromium() -> str:
    named = os.environ.get("RNN_BENCH_CHROMIUM")
    if named:
        if not (Path(named).is_file() and os.access(named, os.X_OK)):
            raise BrowserMissing(f"RNN_BENCH_CHROMIUM={named} is not an executable file")
        return named
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(f"no chromium on PATH: {INSTALL}")


@dataclass
class PageLog:
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    requests: list[str] = field(default_factory=list)  # refused: anything not file:, data: or about:


@contextlib.contextmanager
def open_page(path: Path, width: int = 1400, height: int = 1000, timeout_s: float = 60) -> Iterator[tuple]:
    """(page, PageLog) for the file at `path`, loaded in headless chromium and ready: the dashboard sets
    window.dashboardReady once its charts are drawn."""
    chromium = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserMissing("Playwright's Python package is missing: pip install -e '.[test]'") from None
    log = PageLog()

    def route(r):
        if r.request.url.startswith(("file:", "data:", "about:", "blob:")):
            r.continue_()
        else:
            log.requests.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_s * 1000)
            page.on("console", lambda m: log.errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: log.errors.append(f"exception: {e}"))
            page.route("**/*", route)
            page.goto(Path(path).resolve().as_uri())
            page.wait_for_function("window.dashboardReady === true")
            yield page, log
        finally:
            browser.close()


@dataclass
class Report:
    errors: list[str]
    requests: list[str]
    tables: int
    rows: int  # model rows (tr.run) in the leaderboards and the summary
    baseline_rows: int
    charts: int  # Plotly charts drawn (an SVG inside each chart div)
    bars: int  # bar shapes drawn
    lines: int  # curve paths drawn
    screenshot: str | None = None


INSPECT = """() => ({
  tables: document.querySelectorAll('table').length,
  rows: document.querySelectorAll('table tr.run').length,
  baseline_rows: document.querySelectorAll('table tr.baseline').length,
  charts: document.querySelectorAll('.chart.js-plotly-plot .main-svg').length ?
          document.querySelectorAll('.chart.js-plotly-plot').length : 0,
  bars: document.querySelectorAll('.chart .barlayer .point path').length,
  lines: document.querySelectorAll('.chart .scatterlayer .js-line').length,
})"""


def inspect(page) -> dict:
    return page.evaluate(INSPECT)


def check(path: Path, screenshot: Path | None = None, full_page: bool = False, **kw) -> Report:
    with open_page(path, **kw) as (page, log):
        found = inspect(page)
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=full_page)
    return Report(log.errors, log.requests, **found, screenshot=str(screenshot) if screenshot else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.compare.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshot", type=Path, help="write a PNG of the page here")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the first screen")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"error: no such file: {args.html}", file=sys.stderr)
        return 2
    try:
        report = check(args.html, args.screenshot, args.full_page, width=args.width, height=args.height)
    except BrowserMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), indent=2))
    return 1 if report.errors or report.requests else 0


if __name__ == "__main__":
    sys.exit(main())
