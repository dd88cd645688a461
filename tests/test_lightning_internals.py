"""Each function of src/common/lightning_internals.py against a real (tiny) Trainer run: a Lightning release that
moves one of the private names they use fails the test named after that function, not a training run."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from src.common import lightning_internals as internals


def loader(n: int = 6, batch_size: int = 1) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2), torch.randn(n, 1)), batch_size=batch_size)


def trainer(**kwargs) -> L.Trainer:
    settings = dict(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**settings, **kwargs})


class Probe(L.LightningModule):
    """Records, at every training step, what `look(trainer)` says."""

    def __init__(self, look=None):
        super().__init__()
        self.net, self.look, self.seen = nn.Linear(2, 1), look, []

    def training_step(self, batch, batch_idx):
        if self.look is not None:
            self.seen.append(self.look(self.trainer))
        return nn.functional.mse_loss(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_attached_trainer():
    probe = Probe(look=lambda t: None)
    assert internals.attached_trainer(probe) is None
    probe.look = lambda t: internals.attached_trainer(probe) is t
    trainer().fit(probe, loader(2))
    assert probe.seen == [True, True]


def test_should_update_logs():
    probe = Probe(look=internals.should_update_logs)
    trainer(log_every_n_steps=2).fit(probe, loader(6))
    assert probe.seen == [False, True, False, True, False, True]  # the steps whose logs the loggers write


def test_is_last_batch():
    probe = Probe(look=internals.is_last_batch)
    trainer(max_epochs=2).fit(probe, loader(3))
    assert probe.seen == [False, False, True] * 2


def test_trained_batches_this_epoch():
    probe = Probe(look=internals.trained_batches_this_epoch)
    trainer(max_epochs=2).fit(probe, loader(3))
    assert probe.seen == [0, 1, 2] * 2


class TwoPerStep(L.LightningModule):
    """Trains a group of batches per training step (as src/updates/grouped.py does) and steps its optimizer by
    hand, without LightningOptimizer, as a replayed CUDA graph does."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)
        self.automatic_optimization = False

    def training_step(self, group, batch_idx):
        optimizer = self.optimizers().optimizer
        for x, y in zip(*group):  # a batch of 2 samples, taken as two batches of one
            optimizer.zero_grad()
            nn.functional.mse_loss(self.net(x[None]), y[None]).backward()
            optimizer.step()
            internals.count_optimizer_step(self.trainer)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_count_optimizer_step():
    run = trainer()
    run.fit(TwoPerStep(), loader(12, batch_size=2))
    assert run.global_step == 12  # one per update, though LightningOptimizer.step never ran


def test_keeping_csv_writer_appends_under_the_files_columns_whatever_its_copy_saw(tmp_path):
    """Under ddp_spawn each phase logs from a copy of the writer made before metrics.csv existed (the parent's):
    the test phase's copy must still keep fit's rows and columns when it adds its own."""
    import copy
    import csv

    stale = internals.KeepingCSVWriter(log_dir=str(tmp_path))  # made before the file exists: no columns
    fit = copy.deepcopy(stale)
    for step in range(3):
        fit.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": 0}, step=step)
        fit.save()
    fit.log_metrics({"val/acc": 0.5, "epoch": 0}, step=2)  # a new column: the file rewritten under the wider header
    fit.save()
    test = copy.deepcopy(stale)
    test.log_metrics({"test/acc": 0.4, "epoch": 1}, step=3)
    test.save()
    test.log_metrics({"test/acc": 0.6, "epoch": 1}, step=4)  # no new column: appended under the file's
    test.save()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["train/loss"] for r in rows] == ["1.0", "0.5", str(1 / 3), "", "", ""]
    assert [r["val/acc"] for r in rows] == ["", "", "", "0.5", "", ""]
    assert [r["test/acc"] for r in rows] == ["", "", "", "", "0.4", "0.6"]
    assert [r["step"] for r in rows] == ["0", "1", "2", "2", "3", "4"]


def test_keeping_csv_writer_writes_lightnings_hparams_yaml(tmp_path):
    """hparams.yaml, written by libyaml, is byte for byte what Lightning's writer writes for the same settings,
    logged twice as a run logs them (a config's values resolved; a value OmegaConf cannot hold: Lightning's way)."""
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter
    from omegaconf import OmegaConf

    class Opaque:
        pass

    settings = [
        {"cell": {"_target_": "src.models.cells.fused.FusedRNN", "hidden_size": 32}, "lr": 1e-3, "seeds": None},
        {"run": {"setting": "cell.hidden_size=32", "tags": ["a", "数"], "flag": "true"}, "params": 10698},
        {"node": OmegaConf.create({"a": 1, "b": "${a}", "c": "1e-3"}), "empty": {}, "text": "x " * 60},
        {"opaque": Opaque()},
    ]
    for n in range(1, len(settings) + 1):
        ours, theirs = tmp_path / f"ours{n}", tmp_path / f"theirs{n}"
        mine, lightnings = internals.KeepingCSVWriter(str(ours)), ExperimentWriter(str(theirs))
        for params in settings[:n]:
            mine.log_hparams(params)
            lightnings.log_hparams(params)
        written = (ours / "hparams.yaml").read_text()
        assert written == (theirs / "hparams.yaml").read_text()
        assert "b: 1" in written or n < 3  # the config value resolved, as Lightning resolves it


class LoggedPerBatch(TwoPerStep):
    """TwoPerStep that counts each step's second batch in the loggers' step and logs, at its second batch."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def training_step(self, group, batch_idx):
        super().training_step(group, batch_idx)
        internals.count_batches(self.trainer, 1)
        self.steps.append(internals.logger_step(self.trainer))
        self.log("x", 1.0)


def test_logger_step_and_count_batches(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    module = LoggedPerBatch()
    run = trainer(max_epochs=2, logger=CSVLogger(tmp_path, name="", version=""), log_every_n_steps=1)
    run.fit(module, loader(6, batch_size=2))  # 3 steps of 2 batches an epoch
    assert module.steps == [1, 3, 5, 7, 9, 11]  # each step's last batch, counted from 0
    logged = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in logged[1:]] == ["1", "3", "5", "7", "9", "11"]  # the loggers' step
