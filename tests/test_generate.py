"""python -m src.generate composed by Hydra (conf/generate.yaml): a run dir or a checkpoint, num_samples, top_p
(nucleus sampling), device, --help, and bad values as one line with exit code 2. (test_sequence_tasks checks
that a trained language model generates; test_untrusted_files that a crafted checkpoint builds nothing.)"""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from src.generate import OPTIONS, generate, load_language_model
from src.generate import main as generate_main
from src.tasks.language_model import nucleus
from src.train import train
from tests.conftest import QUIET, make_cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small word-level language model trained by src.train, with its checkpoints."""
    folder = tmp_path_factory.mktemp("lm")
    corpus = folder / "corpus.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log\n" * 40)
    out = folder / "run"
    cfg = make_cfg(
        out,
        [
            *QUIET,
            "callbacks=default",
            "dataset=lm_text",
            f"dataset.path={corpus}",
            "dataset.level=word",
            "dataset.batch_size=8",
            "dataset.eval_batch_size=2",
            "dataset.bptt=12",
            "cell.hidden_size=16",
            "task.embedding_dim=16",
            "trainer.max_epochs=2",
            "optimizer.lr=0.01",
        ],
    )
    assert train(cfg)["status"] == "ok"
    return out


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m src.generate <args>`, run in this process."""
    code = 0
    try:
        generate_main(list(args))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_run_dir_reads_its_best_checkpoint_else_its_last(run_dir, tmp_path, capsys):
    args = ("prompt=the cat", "length=8", "seed=3", "temperature=1.5")
    code, from_dir, err = cli(capsys, f"ckpt={run_dir}", *args)
    assert code == 0, err
    code, from_file, _ = cli(capsys, f"ckpt={run_dir}/checkpoints/best.ckpt", *args)
    assert from_dir == from_file and from_dir.startswith("the cat ")
    only_last = tmp_path / "only_last"
    (only_last / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "checkpoints" / "best.ckpt", only_last / "checkpoints" / "last.ckpt")
    assert cli(capsys, f"ckpt={only_last}", *args)[1] == from_dir
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, f"ckpt={tmp_path / 'empty'}", *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ckpt=") and "no checkpoints/best.ckpt or checkpoints/last.ckpt" in err


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    logits = torch.tensor([0.05, 0.5, 0.15, 0.3]).log()
    kept = {p: torch.isfinite(nucleus(logits, p)).nonzero().flatten().tolist() for p in (0.3, 0.7, 0.9, 1.0)}
    assert kept == {0.3: [1], 0.7: [1, 3], 0.9: [1, 2, 3], 1.0: [0, 1, 2, 3]}
    # the kept tokens keep their logits: the draw is among them in their old proportions
    assert torch.equal(nucleus(logits, 0.7)[[1, 3]], logits[[1, 3]])


def test_top_p_limits_the_draws(run_dir):
    model = load_language_model(run_dir)
    greedy = generate(model, prompt="the", length=12, temperature=0)
    # a nucleus so small it holds only the most likely token: sampling becomes greedy, whatever the seed
    assert {generate(model, prompt="the", length=12, temperature=2.0, top_p=1e-6, seed=s) for s in range(4)} == {greedy}
    wide = {generate(model, prompt="the", length=12, temperature=2.0, seed=s) for s in range(4)}
    assert len(wide) > 1  # without it the same temperature draws different texts
    assert generate(model, prompt="the", length=12, temperature=2.0, top_p=1.0, seed=1) == generate(
        model, prompt="the", length=12, temperature=2.0, seed=1
    )


def test_num_samples_are_the_texts_of_consecutive_seeds(run_dir, capsys):
    code, out, err = cli(
        capsys, f"ckpt={run_dir}", "prompt=the", "length=6", "temperature=2.0", "seed=5", "num_samples=3"
    )
    assert code == 0, err
    model = load_language_model(run_dir)
    alone = [generate(model, prompt="the", length=6, temperature=2.0, seed=s) for s in (5, 6, 7)]
    headers = [line for line in out.splitlines() if line.startswith("--- sample")]
    assert headers == [f"--- sample {i} of 3 (seed {4 + i}) ---" for i in (1, 2, 3)]
    texts = [part.strip("\n") for part in re.split(r"^--- sample .*---$", out, flags=re.M)[1:]]
    assert texts == alone


def test_device_cpu_and_auto(run_dir, capsys):
    args = (f"ckpt={run_dir}", "prompt=the", "length=5", "seed=2")
    code, on_cpu, err = cli(capsys, *args, "device=cpu")
    assert code == 0, err
    if not torch.cuda.is_available():
        assert cli(capsys, *args, "device=auto")[1] == on_cpu


@pytest.mark.parametrize(
    "override, named",
    [
        ("top_p=0", "top_p=0"),
        ("top_p=1.5", "top_p=1.5"),
        ("top_p=nan", "top_p=nan"),
        ("num_samples=0", "num_samples=0"),
        ("num_samples=two", "num_samples='two'"),
        ("length=-1", "length=-1"),
        ("top_k=1.5", "top_k=1.5"),
        ("temperature=inf", "temperature=inf"),
        ("device=tpu", "device='tpu'"),
        ("device=cuda:99", "device=cuda:99"),
        ("lenght=5", "unknown argument 'lenght=5'"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(run_dir, capsys, override, named):
    code, out, err = cli(capsys, f"ckpt={run_dir}", override)
    assert code == 2 and out == "", (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and named in err, err


def test_ckpt_is_required_and_help_lists_every_option(capsys):
    code, _, err = cli(capsys, "prompt=x")
    assert code == 2 and "ckpt=<run dir or checkpoint" in err
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    listed = out.split("== Options ==")[1].split("== Defaults ==")[0]
    assert set(OPTIONS) == {
        "ckpt",
        "prompt",
        "length",
        "num_samples",
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "device",
    }
    for option in OPTIONS:
        assert f"  {option}=" in listed, option
