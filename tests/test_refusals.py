"""Issue 25, classes 4-7: values outside the documented ranges are refused before anything runs (4), the last
tracebacks become one line (5), a refusal names the real cause and fix (6), and a refusal has no side effects on
what is not the run's own (7). The bad inputs are made here; each test fails on the code before the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.common.errors import ConfigError
from src.train import train
from tests.conftest import run_cli

QUICK = ["dataset=digits", "debug=limit"]


# Class 4's refusals are rows of tests/test_bad_values.py's REFUSED table (the documented ranges, checked
# before the run dir is claimed); here, that the edges of those ranges still run.
@pytest.mark.parametrize(
    "override", ["trainer.max_epochs=1", "truncation=tbptt truncation.steps=8", "stack.dropout=0.5 depth=2"]
)
def test_the_edges_of_the_ranges_still_run(cfg_factory, override):
    assert train(cfg_factory(*QUICK, *override.split()))["status"] == "ok"


def test_seeds_and_seed_together_is_refused_on_the_command_line(tmp_path):
    done = run_cli(*QUICK, "logger=csv", "seeds=[1,2]", "seed=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.startswith("error: seeds=[1, 2] and seed=3 were both given") and done.stderr.count("\n") == 1


# Class 7: a refused run leaves nothing in a dir that is not its own.


def test_a_run_refused_a_dir_of_unknown_files_leaves_no_lock_and_no_log(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    done = run_cli(*QUICK, "logger=csv", f"hydra.run.dir={foreign}")
    assert done.returncode == 2 and "already holds files of an unknown run (notes.txt)" in done.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_a_refused_sweep_job_does_not_write_into_a_finished_runs_log(tmp_path):
    args = ["-m", *QUICK, "logger=csv", "callbacks=none", "seed=1", f"hydra.sweep.dir={tmp_path}"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    (job,) = [p for p in tmp_path.iterdir() if (p / "metrics.json").exists()]
    record = json.loads((job / "metrics.json").read_text())
    record["config_hash"] = "0123456789abcdef"  # a finished run of another config in the job's dir
    (job / "metrics.json").write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    again = run_cli(*args)
    assert again.returncode == 1 and "holds a run of another config" in again.stderr, again.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in job.iterdir() if p.is_file() and p.name != ".rnn_bench.lock"} == {
        k: v for k, v in before.items() if k != ".rnn_bench.lock"
    }


# Class 5: what was a traceback is one line. Class 6: a refusal names the key at fault.


def stored_task(tmp_path: Path, name: str, change) -> Path:
    from tests.test_untrusted_files import legit_task, lm_checkpoint

    task = legit_task()
    change(task)
    return lm_checkpoint(tmp_path / f"{name}.ckpt", task)


@pytest.mark.parametrize(
    "name, change, expected",
    [
        (
            "target-list",
            lambda t: t["stack"]["cell"].update(_target_=["src.models.cells.fused.FusedRNN"]),
            "stack.cell._target_ holds a list where a class name belongs",
        ),
        ("target-dict", lambda t: t["stack"].update(_target_={"a": 1}), "stack._target_ holds a dict where a class"),
        ("target-int", lambda t: t.update(_target_=3), "_target_ holds a int where a class name belongs"),
        (
            "hidden-abc",
            lambda t: t["stack"]["cell"].update(hidden_size="abc"),
            "stack.cell.hidden_size='abc' does not fit src.models.cells.fused.FusedRNN's hidden_size (int)",
        ),
        (
            "stack-str",
            lambda t: t.update(stack="x"),
            "stack='x' does not fit src.tasks.language_model.LanguageModel's stack (a config node with a _target_)",
        ),
        (
            "mode-banana",
            lambda t: t["stack"]["cell"].update(mode="banana"),
            "the stored config does not build: Error in call to target 'src.tasks.language_model.LanguageModel': "
            "ConfigError: cell.mode='banana' is not one of",
        ),
    ],
)
def test_a_stored_config_of_the_wrong_type_is_one_line_naming_the_key(tmp_path, name, change, expected):
    from tests.test_untrusted_files import generate_cli

    done = generate_cli(f"ckpt={stored_task(tmp_path, name, change)}", "length=3")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr


@pytest.mark.parametrize(
    "override, expected",
    [
        # Hydra fails on these with a stack trace (an assertion, a ValueError inside its defaults list)
        ("+=gru", "error: the override '+=gru' names no key before '='; write key=value"),
        ("=2", "error: the override '=2' names no key before '='"),
        ("~=2", "error: the override '~=2' names no key before '='"),
        ("cell+=gru", "error: the override 'cell+=gru': '+=' is no operator; write cell=gru to set cell, or +cell=gru"),
        # Hydra's grammar errors: now with the quoting that works, as it can be typed in a shell
        ("tags=[naïve]", """; quote the value, typed as shown: 'tags=["naïve"]'"""),
        ("+tags=é", """; quote the value, typed as shown: '+tags="é"'"""),
        ("hydra.run.dir=/tmp/x=y", """; quote the value, typed as shown: 'hydra.run.dir="/tmp/x=y"'"""),
    ],
)
def test_a_malformed_override_is_one_line_with_the_fix(override, expected):
    done = run_cli(override)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr


def test_the_quoting_the_hint_suggests_reads_as_meant():
    done = run_cli('hydra.run.dir="/tmp/x=y"', 'tags=["naïve"]', "--cfg", "all")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dir: /tmp/x=y" in done.stdout and "- naïve" in done.stdout


# Class 6: a folder where a file belongs, a device (/dev/null) or a file where a folder belongs, named as such.


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["dataset=lm_text", "dataset.path={dir}"], "dataset.path={dir} is a folder, not a file"),
        (["dataset=lm_text", "dataset.path=/dev/null"], "dataset.path=/dev/null is a character device, not a regular"),
        (["dataset=lm_text", "dataset.data_dir={file}"], "dataset.data_dir={file} is a file, not a folder"),
        (["dataset=smnist", "dataset.data_dir=/dev/null"], "dataset.data_dir=/dev/null is a character device, not a"),
        (["dataset=smnist", "dataset.data_dir={file}"], "dataset.data_dir={file} is a file, not a folder"),
        (
            ["dataset=sentiment_en", "embedding=pretrained", "embedding.path=/dev/null"],
            "embedding.path=/dev/null is a character device, not a regular file",
        ),
    ],
)
def test_what_is_there_instead_of_a_file_or_folder_is_named(cfg_factory, tmp_path, overrides, expected):
    from src.common.errors import UserError
    from src.runs.build import build

    folder, a_file = tmp_path / "a-folder", tmp_path / "a-file.txt"
    folder.mkdir()
    a_file.write_text("some text\n")
    fill = {"dir": folder, "file": a_file}
    with pytest.raises(UserError) as refused:
        build(cfg_factory(*QUICK, *(o.format(**fill) for o in overrides), out=tmp_path / "run"))
    assert expected.format(**fill) in str(refused.value) and "does not exist" not in str(refused.value)


def test_a_checkpoint_path_that_is_a_device_is_named_as_such(cfg_factory, tmp_path):
    from src.runs.build import resume_checkpoint
    from tests.test_untrusted_files import generate_cli

    with pytest.raises(ConfigError, match=r"ckpt_path=/dev/null is a character device, not a regular file"):
        resume_checkpoint(cfg_factory(*QUICK, "ckpt_path=/dev/null"))
    done = generate_cli("ckpt=/dev/null")
    assert done.returncode == 2 and done.stderr.startswith("error: ckpt=/dev/null is a character device"), done.stderr


GREEK = ["Η ταινία ήταν υπέροχη", "Δεν μου άρεσε καθόλου", "Πολύ καλή ερμηνεία των ηθοποιών", "Βαρετή και μεγάλη"]


def test_the_encoding_hint_names_the_files_real_encoding(tmp_path):
    """A Greek file in ISO-8859-7: the hint was a fixed `iconv -f GBK`, which turns it into Chinese mojibake."""
    from src.common.errors import DataError
    from src.data.text import read_labelled

    path = tmp_path / "reviews.txt"
    path.write_bytes("".join(f"{i % 2}\t{t}\n" for i, t in enumerate(GREEK * 3)).encode("iso-8859-7"))
    with pytest.raises(DataError) as refused:
        read_labelled(path)
    message = str(refused.value)
    assert message.startswith(f"{path}:1: byte 0xc7 at column 3 is not UTF-8; it reads as Greek in "), message
    command = message.split("`")[1]
    assert command.split()[:2] == ["iconv", "-f"] and command.split()[2] in ("CP1253", "ISO8859-7"), command
    assert "GBK" not in message and "GB18030" not in message


def test_a_vectors_file_in_another_encoding_gets_the_same_hint(tmp_path):
    from src.common.errors import DataError
    from src.data.embeddings import read_keyed_vectors

    path = tmp_path / "vectors.txt"
    path.write_bytes("".join(f"{w} 0.1 0.2\n" for t in GREEK for w in t.split()).encode("iso-8859-7"))
    with pytest.raises(DataError, match=r"vectors\.txt:1: byte 0x\w\w is not UTF-8; it reads as Greek in CP1253"):
        read_keyed_vectors(path, None, None)


@pytest.mark.parametrize(
    "content", ["2 3\ngood 0.1 0.2 0.3\nbad 0.1 0.2\n", "good 0.1 0.2 0.3\nok 0.1 0.2 0.3\nbad 0.1\n"]
)
def test_a_vectors_line_with_missing_values_is_named_not_taken_for_binary(tmp_path, content):
    """gensim refused the first (and the advice was to set embedding.binary=true) and silently filled the second
    (GloVe, no header) with values of its own."""
    from src.common.errors import DataError
    from src.data.embeddings import read_keyed_vectors

    path = tmp_path / "vectors.txt"
    path.write_text(content)
    with pytest.raises(DataError) as refused:
        read_keyed_vectors(path, None, None)
    message = str(refused.value)
    assert message.startswith(f"{path}:3: the word 'bad' has ") and "where the file's vectors have 3" in message
    assert "binary" not in message


def test_a_divergence_names_only_checkpoints_that_exist(cfg_factory, tmp_path):
    """In the first epoch no checkpoint exists: the message pointed at a checkpoints folder never created."""
    from src.runs.callbacks import TrainingDiverged

    with pytest.raises(TrainingDiverged) as diverged:
        train(cfg_factory(*QUICK, "callbacks=default", "optimizer=sgd", "optimizer.lr=1e30"))
    message = str(diverged.value)
    assert "no checkpoint was saved before it diverged" in message and "checkpoints" not in message, message
    assert not (tmp_path / "checkpoints").exists()


def test_the_leaderboard_writes_a_hostile_records_strings_as_plain_text(tmp_path):
    """Strings from a metrics.json (a cell name, a data set, an error) become markup no more: no HTML, no link, no
    extra table cell or line."""
    from src.compare.report import main as compare
    from tests.test_compare import make_run

    script = "<script>alert(1)</script>"
    link = "[click](javascript:alert(1))"
    hostile = dict(task="classify", monitor="val/acc", monitor_mode="max")
    make_run(
        tmp_path,
        "ok",
        ["cell=gru"],
        dataset=f"digits{script}",
        cell=f"gru|{link}",
        seed=1,
        **{"test/acc": 0.9},
        **hostile,
    )
    make_run(
        tmp_path,
        "failed",
        ["cell=lstm"],
        dataset="digits",
        cell="lstm",
        seed=1,
        status="failed",
        error=f"boom\n## Owned | {script} ![x](http://evil/x.png)",
        **hostile,
    )
    assert compare([str(tmp_path), "--no-plots"]) == 0
    board = (tmp_path / "leaderboard.md").read_text()
    assert "<script" not in board and "&lt;script&gt;" in board  # no HTML
    assert "[click]" not in board and "\\[click\\](javascript" in board  # no link
    assert "![x](" not in board and "!\\[x\\](" in board  # no image
    assert not any(line.startswith("## Owned") for line in board.splitlines())  # the error's line break is a space
    header = next(line for line in board.splitlines() if line.startswith("| cell"))
    row = next(line for line in board.splitlines() if line.startswith("| gru"))
    assert row.replace("\\|", "").count("|") == header.count("|")  # the | in the name made no cell


def test_a_home_that_cannot_be_written_does_not_flood_the_console(tmp_path):
    """W&B's service printed ~20 lines of its own log (it could not create its log folder under ~/.cache) and
    matplotlib two warnings. A path under a file stands for a read-only home (root can write any folder)."""
    from tests.conftest import QUIET, ROOT

    (tmp_path / "a-file").write_text("")
    unset = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")
    env = {"HOME": str(tmp_path / "a-file" / "home"), "PYTHONPATH": str(ROOT), **dict.fromkeys(unset)}
    quiet = [o for o in QUIET if not o.startswith("logger=")]
    done = run_cli(*QUICK, *quiet, "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    noise = [line for line in done.stderr.splitlines() if "INFO" in line or "ERROR" in line or "matplotlib" in line]
    assert noise == [], done.stderr[-3000:]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))  # the run was still logged
