"""The documentation: README.md stays the short front door, every page of the site (mkdocs.yml) exists, nothing
in the repository points outside it, and the README's command-line contract names exactly the options in conf/.

(`make test` also builds the site with `mkdocs build --strict`, which fails on a broken link or anchor.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 260
# Written in two parts so that this file does not hold the string it looks for.
OUTSIDE = ".." + "/shared"


def test_readme_is_the_short_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, at most {MAX_README_LINES}: move reference material into docs/ "
        f"(a page listed in mkdocs.yml's nav)"
    )
    assert any(line.startswith("make train") for line in lines[:6]) and any(
        line.startswith("make test") for line in lines[:6]
    ), "the README starts with its two commands"


def nav_pages(nav) -> list[str]:
    """The page files in an mkdocs nav: strings, {title: page} and {section: [entries]}, nested."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for entry in nav for page in nav_pages(entry)]


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = ROOT / config.get("docs_dir", "docs")
    pages = nav_pages(config["nav"])
    assert "index.md" in pages
    missing = [page for page in pages if not (docs / page).is_file()]
    assert not missing, f"mkdocs.yml's nav lists pages that are not in {docs.name}/: {missing}"
    unlisted = sorted({p.relative_to(docs).as_posix() for p in docs.rglob("*.md")} - set(pages))
    assert not unlisted, f"pages in {docs.name}/ that mkdocs.yml's nav does not list: {unlisted}"


def tracked_files(*paths: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *paths], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


def test_nothing_points_outside_the_repository():
    files = tracked_files(
        "src", "conf", "tests", "docs", "README.md", "mkdocs.yml", "Makefile", "pyproject.toml", "sweeps", "benchmarks"
    )
    assert README in files and ROOT / "src" / "train.py" in files
    found = []
    for path in files:
        if not path.is_file():  # deleted in the working tree, not yet in the index
            continue
        data = path.read_bytes()
        if OUTSIDE.encode() in data:
            text = data.decode("utf-8", errors="replace").splitlines()
            found += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(text, 1) if OUTSIDE in line]
    assert not found, (
        f"{OUTSIDE}/... is not in the repository; state the fact and name its public source instead: {found}"
    )


def test_no_file_holds_a_merge_conflict_left_unresolved():
    files = tracked_files(
        "src", "conf", "tests", "docs", "README.md", "mkdocs.yml", "Makefile", "pyproject.toml", "sweeps", "benchmarks"
    )
    marker = re.compile(r"^(<{7} |={7}$|>{7} )", re.MULTILINE)
    found = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}"
        for path in files
        if path.is_file()
        for text in [path.read_text(encoding="utf-8", errors="replace")]
        for m in marker.finditer(text)
    ]
    assert not found, f"merge conflict markers left in: {found}"


def contract_rows() -> dict[tuple[str, ...], str]:
    """The README's contract table: (the config groups a row is about) -> the row's values."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == 2:
            groups = tuple(re.findall(r"`([a-z_]+)=`", cells[0]))
            if groups and all((ROOT / "conf" / group).is_dir() for group in groups):
                rows[groups] = cells[1]
    return rows


def test_the_readme_contract_names_every_option_in_conf_and_no_other():
    rows = contract_rows()
    for group in (
        "dataset",
        "cell",
        "sweep",
        "direction",
        "truncation",
        "trainer",
        "logger",
        "callbacks",
        "optimizer",
        "scheduler",
        "embedding",
        "diagnostics",
        "progress",
    ):
        assert any(group in groups for groups in rows), f"the README's contract has no row for {group}="
    for groups, values in rows.items():
        # `name` or `name more words`; settings (`cell.hidden_size=<int>`) and variants (`NIG`) are not options
        named = {token.split()[0] for token in re.findall(r"`([^`]+)`", values)}
        named = {name for name in named if re.fullmatch(r"[a-z][a-z0-9_]*", name)}
        have = {path.stem for group in groups for path in (ROOT / "conf" / group).glob("*.yaml")}
        assert named - have == set(), f"README names {sorted(named - have)} for {'/'.join(groups)}= (not in conf/)"
        assert have - named == set(), (
            f"conf/ has {sorted(have - named)} for {'/'.join(groups)}=: add them to the README's command-line contract"
        )


def test_the_readme_commands_are_modules_of_the_suite():
    text = README.read_text(encoding="utf-8")
    modules = set(re.findall(r"python -m (src(?:\.\w+)+)", text))
    assert {"src.train", "src.compare", "src.generate", "src.bench"} <= modules
    for module in modules:
        path = ROOT / Path(*module.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), f"no module {module}"
