"""A results page as a config (conf/results/<page>.yaml): its tables, each a task run by a roster of architectures
at one size, over a grid of settings (the learning rate) and seeds, with one budget; and the Hydra multirun that
runs each table into a fixed sweep dir (so a rerun skips the finished jobs).
"""

from __future__ import annotations

import itertools
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.common.errors import ConfigError
from src.common.paths import CONF_DIR

PAGES_DIR = CONF_DIR / "results"
PACKED_LAUNCHER = CONF_DIR / "hydra" / "launcher" / "packed.yaml"
PAGE_KEYS = {"title", "about", "common", "grid", "seeds", "seeds_as", "launcher", "roster", "test", "tables"}
TABLE_KEYS = {"name", "title", "about", "task", "size", "budget", "roster", "reference", "was"}
# seed=1,2,3: a Hydra job per seed, which the default launcher packs (a cell's lr x seed jobs train as one stacked
# job); seeds=[1,2,3]: one job per grid point, its seeds stacked.
SEEDS_AS = ("jobs", "stacked")
# What the page before said of a row (a table's `was:`, optionally `: a note`): in the winning group or not, or,
# against the table's reference, better / worse / no different (same); the reference itself.
WAS = ("winner", "not winner", "better", "worse", "same", "reference")


@dataclass
class Table:
    name: str
    title: str
    about: str
    task: list[str]  # overrides that choose and shape the task (dataset=mqar dataset.num_pairs=8)
    size: list[str]  # model.params=N (or model.state=N)
    budget: list[str]  # what every run trains for: the same for every architecture
    roster: dict[str, list[str]]  # key -> values swept (cell: [rnn, lstm, ...]; cell.variant: [V, NIG, ...])
    reference: str  # the row the others are tested against (src/compare/significance.py)
    was: dict[str, str] = field(default_factory=dict)  # cell (or variant) -> its verdict on the page before


@dataclass
class Page:
    name: str
    path: Path
    title: str
    about: str
    common: list[str]
    grid: dict[str, list[str]]  # the tuned settings: optimizer.lr -> its values
    seeds: list[int]
    seeds_as: str
    launcher: list[str]
    test: str  # welch | mannwhitney
    tables: list[Table]

    def tune_keys(self) -> list[str]:
        return list(self.grid)

    def seed_overrides(self) -> list[str]:
        seeds = ",".join(map(str, self.seeds))
        return [f"seeds=[{seeds}]"] if self.seeds_as == "stacked" else [f"seed={seeds}"]

    def overrides(self, table: Table, sweep_dir: Path) -> list[str]:
        """The multirun's overrides for `table`, its jobs going to `sweep_dir`."""
        swept = {**table.roster, **self.grid}
        return [
            *self.common,
            *table.task,
            *table.size,
            *table.budget,
            *(f"{key}={','.join(values)}" for key, values in swept.items()),
            *self.seed_overrides(),
            *self.launcher,
            f"hydra.sweep.dir={sweep_dir}",
        ]

    def command(self, table: Table, sweep_dir: Path) -> list[str]:
        return [sys.executable, "-m", "src.train", "-m", *self.overrides(table, sweep_dir)]

    def shown_command(self, table: Table, sweep_dir: Path) -> str:
        return shlex.join(["python", "-m", "src.train", "-m", *self.overrides(table, sweep_dir)])

    def counts(self, table: Table) -> tuple[int, int]:
        """(jobs, runs) of a table: a run per architecture x grid point x seed; a Hydra job per run, or per grid
        point with the seeds stacked (seeds=[...])."""
        points = len(list(itertools.product(*table.roster.values(), *self.grid.values())))
        return (points if self.seeds_as == "stacked" else points * len(self.seeds)), points * len(self.seeds)

    def packs(self, table: Table) -> int | None:
        """How many stacked jobs the default launcher (hydra/launcher=packed) trains a table's jobs as: one per
        architecture, its grid points x seeds as members, cut into packs of at most the launcher's max_members;
        None where the jobs do not pack (seeds already stacked, another launcher, or pack=false)."""
        launcher = [*self.common, *self.launcher]
        other = any(o.startswith("hydra/launcher=") and o != "hydra/launcher=packed" for o in launcher)
        if self.seeds_as == "stacked" or other or "hydra.launcher.pack=false" in launcher:
            return None
        cap = int(OmegaConf.load(PACKED_LAUNCHER).max_members)  # the launcher's own default, or the page's setting
        for o in launcher:
            if o.startswith("hydra.launcher.max_members=") and o.split("=", 1)[1].isdigit():
                cap = int(o.split("=", 1)[1])
        members = len(list(itertools.product(*self.grid.values()))) * len(self.seeds)
        architectures = len(list(itertools.product(*table.roster.values())))
        return architectures * -(-members // max(1, cap))


def page_names() -> list[str]:
    return sorted(p.stem for p in PAGES_DIR.glob("*.yaml"))


def find_page(name: str) -> Path:
    """conf/results/<name>.yaml, or `name` itself where it is a yaml file."""
    given = Path(name)
    if given.suffix in (".yaml", ".yml") and given.is_file():
        return given
    path = (PAGES_DIR / f"{name}.yaml").resolve()
    if not path.is_file():
        raise ConfigError(
            f"no results page named {name!r}; the pages are {', '.join(page_names())} (conf/results/), or give "
            f"a page config's path (<file>.yaml)"
        )
    return path


def _texts(value: Any, where: str) -> list[str]:
    """A list of strings (overrides, values), from a list or one string."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, ListConfig)) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{where} must be a list of strings (Hydra overrides or values), got {value!r}")


def _sweep(value: Any, where: str) -> dict[str, list[str]]:
    """key -> values: from a mapping of lists, or a bare list (the cells)."""
    if isinstance(value, (list, ListConfig, str)):
        return {"cell": _texts(value, where)}
    if isinstance(value, (dict, DictConfig)) and value:
        found = {str(k): _texts(v, f"{where}.{k}") for k, v in value.items()}
        empty = [k for k, v in found.items() if not v]
        if empty:
            raise ConfigError(f"{where}.{empty[0]} is empty: give at least one value")
        return found
    raise ConfigError(f"{where} must be a list of cells or a mapping of setting -> values, got {value!r}")


def _unknown(node: Any, allowed: set[str], where: str) -> None:
    extra = sorted(set(node) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r}; the keys are {', '.join(sorted(allowed))}")


def load_page(name: str) -> Page:
    """The page config, checked: ConfigError names the first thing wrong and where."""
    path = find_page(name)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # YAML syntax, a file that is not a mapping
        raise ConfigError(f"{path}: not a readable page config ({str(e).strip().splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a page config is a mapping (title, grid, seeds, tables, ...), got {raw!r}")
    where = path.name
    _unknown(raw, PAGE_KEYS, where)
    seeds = raw.get("seeds")
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ConfigError(f"{where}: seeds must be a list of integers (e.g. [1, 2, 3]), got {seeds!r}")
    seeds_as = raw.get("seeds_as", "jobs")
    if seeds_as not in SEEDS_AS:
        raise ConfigError(f"{where}: seeds_as={seeds_as!r}; use {' or '.join(SEEDS_AS)}")
    test = raw.get("test", "welch")
    if test not in ("welch", "mannwhitney"):
        raise ConfigError(f"{where}: test={test!r}; use welch or mannwhitney")
    grid = _sweep(raw.get("grid"), f"{where}: grid") if raw.get("grid") is not None else {}
    if not grid:
        raise ConfigError(
            f"{where}: grid is missing: the tuned setting and its values, e.g. optimizer.lr: [1e-3, 1e-2]"
        )
    tables_raw = raw.get("tables")
    if not isinstance(tables_raw, list) or not tables_raw:
        raise ConfigError(f"{where}: tables must be a non-empty list of tables (name, task, size, budget, ...)")
    default_roster = raw.get("roster")
    tables, names = [], set()
    for i, t in enumerate(tables_raw):
        at = f"{where}: tables[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(f"{at} must be a mapping (name, task, size, budget, ...), got {t!r}")
        _unknown(t, TABLE_KEYS, at)
        for key in ("name", "task", "size", "budget"):
            if not t.get(key):
                raise ConfigError(f"{at} has no {key}")
        table_name = str(t["name"])
        if not table_name.replace("_", "").isalnum() or table_name in names:
            raise ConfigError(f"{at}: name {table_name!r} must be unique and of letters, digits and _ (it names a dir)")
        names.add(table_name)
        roster = t.get("roster", default_roster)
        if roster is None:
            raise ConfigError(f"{at} has no roster, and the page none to share: list the cells")
        size = t["size"]
        size = (
            [f"model.params={size}"]
            if isinstance(size, int) and not isinstance(size, bool)
            else _texts(size, f"{at}.size")
        )
        was = t.get("was") or {}
        if not isinstance(was, dict):
            raise ConfigError(f"{at}.was must map a cell (or variant) to its verdict on the page before, got {was!r}")
        for key, before in was.items():
            if str(before).split(":", 1)[0].strip() not in WAS:
                raise ConfigError(f"{at}.was.{key}={before!r}: a verdict is one of {', '.join(WAS)}")
        tables.append(
            Table(
                name=table_name,
                title=str(t.get("title") or table_name),
                about=str(t.get("about") or ""),
                task=_texts(t["task"], f"{at}.task"),
                size=size,
                budget=_texts(t["budget"], f"{at}.budget"),
                roster=_sweep(roster, f"{at}.roster"),
                reference=str(t.get("reference") or ""),
                was={str(k): str(v) for k, v in was.items()},
            )
        )
    return Page(
        name=path.stem,
        path=path,
        title=str(raw.get("title") or path.stem),
        about=str(raw.get("about") or ""),
        common=_texts(raw.get("common") or [], f"{where}: common"),
        grid=grid,
        seeds=seeds,
        seeds_as=seeds_as,
        launcher=_texts(raw.get("launcher") or [], f"{where}: launcher"),
        test=test,
        tables=tables,
    )
