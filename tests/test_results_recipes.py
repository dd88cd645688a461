"""The recipes behind docs/results.md: experiment=fashion_mnist_gru is the GRU row by row on the whole Fashion-MNIST
(60k training images less a 10% validation split, the full 10k test set), and the sweeps the page runs
(odyssey_cpu, mqar, seqmnist, seqmnist_permuted) hold the grids the page describes."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from tests.test_sweeps import grid


def test_fashion_mnist_gru_recipe_composes_to_the_full_data_set(cfg_factory):
    cfg = cfg_factory("experiment=fashion_mnist_gru", quiet=False)
    assert cfg.dataset._target_ == "src.data.mnist.FashionMNIST"
    assert cfg.task._target_ == "src.tasks.classify.SequenceClassifier"
    assert cfg.cell.mode == "gru" and cfg.cell.hidden_size == 128 and cfg.depth == 1
    assert not cfg.direction.bidirectional
    assert not cfg.dataset.pixelwise and not cfg.dataset.permute  # row by row: 28 steps of 28 pixels
    assert cfg.trainer.limit_train_batches is None and cfg.trainer.max_epochs == 20  # every batch, every epoch
    assert cfg.task.head_dropout > 0  # the benchmark table's better GRU figure is the one with dropout

    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    dm.setup("fit")
    sizes = {name: len(y) for name, (_, _, y) in dm.splits.items()}
    assert sizes == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert tuple(dm.splits["train"][0].shape[1:]) == (28, 28)


@pytest.mark.parametrize(
    "name,expected",
    [
        (
            "odyssey_cpu",
            {
                "dataset": ["digits", "smnist5k", "parity"],
                "cell.variant": ["V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR"],
                "seed": ["1", "2", "3", "4", "5"],
            },
        ),
        (
            "mqar",
            {
                "cell": ["attention", "lstm", "lru", "mlstm"],
                "dataset.num_pairs": ["2", "4", "8"],
                "cell.hidden_size": ["16", "64"],
            },
        ),
        ("seqmnist", {"cell": ["rnn", "rnn_relu", "lstm", "gru", "indrnn"], "seed": ["1", "2"]}),
        ("seqmnist_permuted", {"cell": ["lstm", "indrnn"], "dataset.permute": ["True"]}),
    ],
)
def test_results_sweeps_hold_their_grids(cfg_factory, name, expected):
    values = grid(cfg_factory(f"sweep={name}", quiet=False))
    for key, options in expected.items():
        assert values[key] == options, key


def test_mqar_sweep_fits_its_largest_setting(cfg_factory):
    # 8 pairs: 16 context steps, then 8 queries within the 32 steps; 16 keys + 16 values within the vocabulary.
    cfg = cfg_factory(
        "sweep=mqar",
        "dataset=mqar",
        "dataset.num_pairs=8",
        "depth=2",
        "cell=attention",
        "cell.hidden_size=16",
        quiet=False,
    )
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    dm.setup("fit")
    assert cfg.task.monitor == "val/acc" and cfg.depth == 2
    assert len(dm.splits["train"][2]) == 3000
