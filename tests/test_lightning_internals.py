"""Each function of src/common/lightning_internals.py against a real (tiny) Trainer run: a Lightning release that
moves one of the private names they use fails the test named after that function, not a training run."""

from __future__ import annotations

import csv

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from src.common import lightning_internals as internals


def loader(n: int = 6) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2), torch.randn(n, 1)), batch_size=1)


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
    """Takes two batches per training step (as src/updates/grouped.py does) and steps its optimizer by hand,
    without LightningOptimizer, as a replayed CUDA graph does."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)
        self.automatic_optimization = False

    def training_step(self, dataloader_iter):
        optimizer, taken = self.optimizers().optimizer, 0
        for _ in range(2):
            try:
                batch, _, _ = next(dataloader_iter)
            except StopIteration:
                break
            optimizer.zero_grad()
            nn.functional.mse_loss(self.net(batch[0]), batch[1]).backward()
            optimizer.step()
            internals.count_optimizer_step(self.trainer)
            taken += 1
        if taken > 1:
            internals.count_extra_batches(self.trainer, taken - 1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_count_optimizer_step():
    run = trainer()
    run.fit(TwoPerStep(), loader(6))
    assert run.global_step == 6  # one per update, though LightningOptimizer.step never ran


def test_count_extra_batches():
    run = trainer(max_epochs=2)
    run.fit(TwoPerStep(), loader(6))
    loop = run.fit_loop.epoch_loop
    assert loop.batch_progress.total.completed == 12 and loop._batches_that_stepped == 12
    assert run.current_epoch == 2


class Shifted(Probe):
    def on_before_batch_transfer(self, batch, dataloader_idx):
        return [t + 1 for t in batch]


def test_preparation_changes_batches():
    for module, settings, changes in (
        (Probe(), {}, False),
        (Shifted(), {}, True),
        (Probe(), {"precision": "64-true"}, True),
    ):
        module.look = lambda t: internals.preparation_changes_batches(t.lightning_module)
        trainer(max_steps=1, **settings).fit(module, loader(2))
        assert module.seen == [changes], (type(module).__name__, settings)


def test_prepare_batch():
    batch = [torch.zeros(1, 2), torch.zeros(1, 1)]
    shifted = Shifted(look=lambda t: internals.prepare_batch(t.lightning_module, batch))
    trainer(max_steps=1).fit(shifted, loader(2))
    assert all(torch.equal(t, torch.ones_like(t)) for t in shifted.seen[0])  # the module's transfer hook ran
    double = Probe(look=lambda t: internals.prepare_batch(t.lightning_module, batch))
    trainer(max_steps=1, precision="64-true").fit(double, loader(2))
    assert all(t.dtype == torch.float64 for t in double.seen[0])  # the precision plugin converted the inputs


def test_keeping_csv_writer(tmp_path):
    """KeepingCSVLogger (with its KeepingCSVWriter): a second run into the same CSV log dir (a resumed run) keeps
    the first run's rows."""

    class Logging(Probe):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss", loss)
            return loss

    for _ in range(2):
        logger = internals.KeepingCSVLogger(tmp_path, name="", version="")
        trainer(logger=logger, log_every_n_steps=1).fit(Logging(), loader(3))
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(row["loss"] for row in rows)


def test_quiet_wandb_logger(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    from src.common.lightning_internals import QuietWandbLogger

    assert "anonymous" not in QuietWandbLogger(save_dir=str(tmp_path), project="p")._wandb_init
    assert QuietWandbLogger(save_dir=str(tmp_path), project="p", anonymous=True)._wandb_init["anonymous"] == "allow"
