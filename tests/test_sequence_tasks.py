"""Sequence tasks end to end through src.train, the head/loss protocol per time window, stream evaluation,
and generation from a language-model checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from src.common.errors import ConfigError, UserError, user_error
from src.generate import generate, load_language_model
from src.generate import main as generate_main
from src.train import train
from tests.conftest import ROOT

CORPUS = "\n".join(f"the cat sat on the mat number {i % 7} and the dog ran" for i in range(300))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


SMALL = {  # each data set shrunk to seconds
    "sine": ["dataset.length=400", "dataset.window=20", "dataset.rollout_steps=10"],
    "sin2cos": ["dataset.length=2000", "dataset.bptt=20"],
    "adding": ["dataset.seq_len=20", "dataset.n_train=200", "dataset.n_val=50", "dataset.n_test=50"],
    "copy": ["dataset.seq_len=5", "dataset.n_train=200", "dataset.n_val=50", "dataset.n_test=50"],
    "seq2seq": ["dataset.length=4", "dataset.n_train=200", "dataset.n_val=50", "dataset.n_test=50"],
    "air_passengers": [],
    "sunspots": [],
    "lm_tang": [],
}
METRICS = {
    "regress": {"test/mse", "test/mae", "test/loss"},
    "steps": {"test/loss", "test/acc", "test/exact_match"},
    "seq2seq": {"test/exact_match", "test/acc", "test/loss"},
    "language_model": {"test/loss", "test/acc", "test/bpc"},
}


@pytest.mark.parametrize("dataset", list(SMALL))
def test_every_sequence_data_set_runs_end_to_end(cfg_factory, tmp_path, dataset):
    record = train(cfg_factory(f"dataset={dataset}", *SMALL[dataset], "debug=limit", "cell.hidden_size=16"))
    assert record["status"] == "ok", record
    assert METRICS[record["task"]] <= set(record), set(record)
    if dataset in ("adding", "copy", "air_passengers", "sunspots"):
        assert any(k.startswith("test/baseline_") for k in record)  # the trivial baseline beside the model
    if dataset == "sine":
        assert record["test/rollout_mse"] >= 0 and (tmp_path / "rollout.png").stat().st_size > 1000


def test_sine_learns_and_rolls_out(cfg_factory):
    record = train(
        cfg_factory(
            "dataset=sine",
            "dataset.length=600",
            "dataset.window=20",
            "dataset.rollout_steps=20",
            "cell.hidden_size=32",
            "trainer.max_epochs=6",
            "optimizer.lr=0.01",
        )
    )
    assert record["test/mse"] < 0.01 and record["test/rollout_mse"] < 0.05, record


def test_language_model_learns_a_repetitive_corpus_and_generates(cfg_factory, tmp_path, corpus, capsys):
    out = tmp_path / "lm"
    record = train(
        cfg_factory(
            "dataset=lm_text",
            f"dataset.path={corpus}",
            "dataset.level=word",
            "dataset.batch_size=8",
            "dataset.eval_batch_size=2",
            "dataset.bptt=12",
            "cell.hidden_size=32",
            "task.embedding_dim=32",
            "task.tie_weights=true",
            "trainer.max_epochs=5",
            "optimizer.lr=0.01",
            "callbacks=default",
            out=out,
        )
    )
    assert record["status"] == "ok" and record["test/ppl"] < 3.0, record  # 11 of 13 words are certain
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["level"] == "word" and "cat" in vocab["vocab"]
    ckpt = out / "checkpoints" / "best.ckpt"
    model = load_language_model(ckpt)
    assert model.decoder.weight is model.encoder.weight  # tied
    text = generate(model, prompt="the cat", length=20, temperature=0.8, seed=3)
    assert text.startswith("the cat sat on") and text == generate(
        model, prompt="the cat", length=20, temperature=0.8, seed=3
    )
    assert len({generate(model, prompt="the", length=30, temperature=1.5, seed=s) for s in range(4)}) > 1
    with pytest.raises(UserError, match="none of its tokens is in the model's vocabulary"):
        generate(model, prompt="zebra quokka", length=5)

    # The command line, as a user types it.
    done = subprocess.run(
        [sys.executable, "-m", "src.generate", f"ckpt={ckpt}", "prompt=the dog", "length=5", "seed=1", "top_k=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stdout.startswith("the dog"), done.stderr

    def cli_error(*args) -> str:
        with pytest.raises(SystemExit) as exited:
            generate_main(list(args))
        assert exited.value.code == 2
        return capsys.readouterr().err

    assert "none of its tokens" in cli_error(f"ckpt={ckpt}", "prompt=quokka")
    assert "no such file" in cli_error("ckpt=/no/such.ckpt")
    assert "unknown argument 'lenght=5'" in cli_error(f"ckpt={ckpt}", "lenght=5")
    other = tmp_path / "other"  # a checkpoint of another task
    train(
        cfg_factory(
            "dataset=adding", *SMALL["adding"], "debug=limit", "callbacks=default", "cell.hidden_size=8", out=other
        )
    )
    message = cli_error(f"ckpt={other / 'checkpoints' / 'best.ckpt'}", "prompt=the")
    assert "'regress' task" in message and "language models only" in message


def test_stream_evaluation_carries_the_state_across_batches(cfg_factory, corpus):
    """Evaluating in windows of 5 steps with the state carried gives the loss of one pass over whole rows."""
    cfg = cfg_factory(
        "dataset=lm_text",
        f"dataset.path={corpus}",
        "dataset.bptt=5",
        "dataset.eval_batch_size=3",
        "cell.hidden_size=8",
        "trainer.max_epochs=0",
        "callbacks=none",
    )
    dm = instantiate(cfg.dataset)
    dm.setup()
    model = instantiate(cfg.task, spec=dm.spec, _convert_="object")
    trainer = instantiate(cfg.trainer, logger=False)
    windowed = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"]
    loader = dm.val_dataloader()
    x, y = loader.x, loader.y
    logits = model.head(model.encode(x)[0], None)
    whole = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    assert windowed == pytest.approx(float(whole.detach()), rel=1e-5)


@pytest.mark.parametrize("kind,dataset", [("language_model", "lm_text"), ("regress", "sin2cos")])
def test_loss_over_windows_adds_up_to_the_whole(cfg_factory, corpus, kind, dataset):
    """The protocol truncated BPTT relies on: the losses of windows [t0, t1), weighted by their counts, equal
    the loss of the whole sequence, with predictions made chunk by chunk from the carried state."""
    cfg = cfg_factory(
        f"dataset={dataset}",
        f"dataset.path={corpus}" if dataset == "lm_text" else "dataset.length=500",
        "dataset.bptt=12",
        "cell.hidden_size=8",
    )
    dm = instantiate(cfg.dataset)
    dm.setup()
    model = instantiate(cfg.task, spec=dm.spec, _convert_="object").eval()
    batch = next(iter(dm.train_dataloader()))
    whole, n = model.loss(model(batch.x), batch, 0, batch.x.shape[1])
    total, count, state = 0.0, 0, None
    for t0 in range(0, batch.x.shape[1], 5):
        outputs, state = model.encode(batch.x[:, t0 : t0 + 5], None, state)
        loss, k = model.loss(model.head(outputs, None), batch, t0, min(t0 + 5, batch.x.shape[1]))
        total, count = total + float(loss) * k, count + k
    assert count == n and total / count == pytest.approx(float(whole), rel=1e-5)


def test_many_to_one_loss_waits_for_the_last_step(cfg_factory):
    cfg = cfg_factory("dataset=adding", *SMALL["adding"], "cell.hidden_size=8")
    dm = instantiate(cfg.dataset)
    dm.setup()
    model = instantiate(cfg.task, spec=dm.spec, _convert_="object")
    batch = next(iter(dm.train_dataloader()))
    assert model.loss(model(batch.x[:, :10]), batch, 0, 10) is None
    assert model.loss(model(batch.x), batch, 0, 20) is not None


def test_bad_model_options_are_clear_errors(cfg_factory, corpus, tmp_path):
    for overrides, message in [
        (
            [
                "dataset=lm_text",
                f"dataset.path={corpus}",
                "task.tie_weights=true",
                "task.embedding_dim=16",
                "cell.hidden_size=8",
            ],
            "embedding_dim .* equal to the recurrent output size",
        ),
        (["dataset=seq2seq", *SMALL["seq2seq"], "direction=bi"], "direction=uni"),
    ]:
        with pytest.raises(Exception) as raised:  # Hydra's instantiate wraps what the constructor raises
            train(cfg_factory(*overrides, out=tmp_path / "run"))  # a run dir without the corpus in it
        assert isinstance(user_error(raised.value), ConfigError)
        assert re.search(message, str(user_error(raised.value)))


def test_seq2seq_learns_to_reverse_short_strings(cfg_factory):
    record = train(
        cfg_factory(
            "dataset=seq2seq",
            "dataset.length=3",
            "dataset.n_train=400",
            "dataset.n_val=50",
            "dataset.n_test=50",
            "dataset.batch_size=32",
            "cell.hidden_size=64",
            "trainer.max_epochs=15",
            "optimizer.lr=0.01",
        )
    )
    assert record["test/exact_match"] > 0.8, record


def test_tasks_read_their_data_only_through_the_spec():
    """No task reaches through the trainer into the data module: what it knows of the data is its DataSpec."""
    for path in sorted((ROOT / "src" / "tasks").glob("*.py")):
        assert "datamodule" not in path.read_text(encoding="utf-8"), path
