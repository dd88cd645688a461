"""The layout shows the design: src/ is grouped into packages, each allowed to import only the ones below it
(docs/extending.md draws the layers). A module-level import or a function-level one both count: a deferred
import is still a dependency."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. Entry points (src/train.py, src/generate.py and every __main__.py) sit above all of them.
LAYERS = [
    "common",
    "data",
    "models",
    "updates",
    "tasks",
    "records",
    "diagnostics",
    "runs",
    "compare",
    "results",
    "bench",
]
ENTRY = len(LAYERS)


def layer_of(module: str) -> int | None:
    """The layer of `src.<package>...`; None for the src package itself."""
    parts = module.split(".")
    if parts[0] != "src" or len(parts) == 1:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else ENTRY


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a src module in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("src.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("src"):
            if node.module == "src":  # from src import <package>
                found += [(node.lineno, f"src.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        name = module_name(path)
        own = ENTRY if path.name == "__main__.py" else layer_of(name)
        if own is None:  # src/__init__.py registers the config resolvers of the lower layers
            continue
        for line, target in imports(path):
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                bad.append(
                    f"{path.relative_to(SRC.parent)}:{line} ({LAYERS[own] if own < ENTRY else 'entry'}) "
                    f"imports {target} ({LAYERS[theirs] if theirs < ENTRY else 'entry'})"
                )
    return bad


def test_src_holds_only_packages_and_entry_points():
    modules = sorted(p.name for p in SRC.glob("*.py") if p.name != "__init__.py")
    assert modules == ["generate.py", "train.py"], modules
    packages = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(LAYERS), packages


def test_no_package_imports_a_higher_one():
    assert upward_imports() == []


def test_the_check_finds_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a data module importing from runs is reported."""
    fake = tmp_path / "src"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("from src.runs.build import build\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    assert upward_imports() == ["src/data/bad.py:1 (data) imports src.runs.build (runs)"]
