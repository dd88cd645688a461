# Set-up is two commands: `make train` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first, pinned, so the project's `torch>=2.3` is already satisfied. CPU default; for CUDA e.g.
#   make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
ARGS ?=
TEST_WORKERS ?= 2
SWEEP ?= quick
SWEEP_DIR ?=
BENCH ?= overhead
PAGE ?= cpu
SITE_DIR ?= outputs/site

.PHONY: install train test docs sweep bench results data format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,sweeps,docs]"
	touch $@

train: install
	$(BIN)/python -m src.train $(ARGS)

# The tests also run sweeps through Hydra's Ray launcher, so `make test` adds the ray extra (about 1 minute and
# 340 MB on top of `make install`; `make train` does without it).
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test,sweeps,docs,ray]"
	touch $@

# Lint and format are checked first (ruff, configured in pyproject.toml; `make format` fixes what it can), then
# the docs site is built with --strict: a broken link or a missing page fails the tests. The tests run in
# TEST_WORKERS processes (pytest-xdist; TEST_WORKERS=0: one process), a test file to a process (--dist loadfile), so a
# file's module fixtures (a job its tests read) are built once.
test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE_DIR)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# make docs: serve the documentation site (mkdocs.yml, docs/) at http://127.0.0.1:8000, rebuilt on every edit.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# make sweep SWEEP=<quick|cells|odyssey|lm|optuna|memory> [SWEEP_DIR=<dir>] [ARGS="<more overrides>"]: the sweep
# conf/sweep/<SWEEP>.yaml (outputs under SWEEP_DIR, default outputs/sweeps/<SWEEP>), then its leaderboard.
sweep: install
	$(BIN)/python -m src.train -m sweep=$(SWEEP) $(if $(SWEEP_DIR),hydra.sweep.dir=$(SWEEP_DIR)) $(ARGS)
	$(BIN)/python -m src.compare $(or $(SWEEP_DIR),$${RNN_BENCH_ROOT:-.}/outputs/sweeps/$(SWEEP))

# make bench [BENCH=<overhead|cells|sweep|diagnostics|stacked|stacked_kernels|packed>] [ARGS="<its arguments>"]: python -m src.bench; results
# under benchmarks/ (JSON + markdown, with device, library versions and date).
bench: install
	$(BIN)/python -m src.bench $(BENCH) $(ARGS)

# make results [PAGE=<cpu|tiny>] [ARGS="--dry-run"]: the results page conf/results/<PAGE>.yaml regenerated, each table a
# multirun into outputs/results/<PAGE>/<table> (run again, it skips the jobs that finished), then docs/results/<PAGE>.md.
results: install
	$(BIN)/python -m src.results $(PAGE) $(ARGS)

# make data [ARGS="<data set names>"]: download and verify (sha256) the pinned offline data sets into the cache
# ($RNN_BENCH_CACHE, default .cache/ here), then list what is cached and its size. `python -m src.data list` shows
# every data set.
data: install
	$(BIN)/python -m src.data fetch $(ARGS)

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) outputs .pytest_cache
