"""model.params / model.state: the width chosen so that the model's size lands within 3% of the target, for every
cell of the roster; a target that cannot be met is refused with one line; metrics.json records both counts."""

from __future__ import annotations

import json

import pytest
import torch

from src.common.errors import ConfigError
from src.data.tensors import DataSpec
from src.models.sizing import TOLERANCE, count_floats, size_model, state_floats
from src.runs.build import make
from src.train import train
from tests.conftest import CONF

ROSTER = sorted(p.stem for p in (CONF / "cell").glob("*.yaml"))
SPEC = DataSpec(task="classify", input_kind="features", input_size=28, num_classes=10)  # smnist5k's shape
SIZES = (100_000, 300_000, 1_000_000)


def task_builder(spec: DataSpec = SPEC):
    def build_task(cfg):
        return make(cfg.task, "task", handed={"spec": spec, "run_config": {}}, _convert_="object")

    return build_task


@pytest.mark.parametrize("cell", ROSTER)
def test_every_cell_meets_three_parameter_targets(cfg_factory, cell):
    build_task = task_builder()
    for target in SIZES:
        sized = size_model(cfg_factory(f"cell={cell}", f"model.params={target}"), build_task, 28)
        got = build_task(sized).num_params
        assert abs(got - target) <= TOLERANCE * target, (cell, target, sized.cell.hidden_size, got)


def test_the_width_tied_settings_keep_their_ratio(cfg_factory):
    sized = size_model(cfg_factory("cell=lstmp", "model.params=30000"), task_builder(), 28)
    assert sized.cell.proj_size == round(64 * sized.cell.hidden_size / 128) < sized.cell.hidden_size


def test_state_targets(cfg_factory):
    """An LSTM layer holds h and c (2 x width); attention's key/value cache grows with the sequence."""
    build_task = task_builder()
    sized = size_model(cfg_factory("cell=lstm", "model.state=512"), build_task, 28)
    assert sized.cell.hidden_size == 256 and state_floats(build_task(sized), 28) == 512
    sized = size_model(cfg_factory("cell=attention", "model.state=7168"), build_task, 28)
    assert abs(state_floats(build_task(sized), 28) - 7168) <= TOLERANCE * 7168
    assert state_floats(build_task(sized), 56) == 2 * state_floats(build_task(sized), 28)


def test_count_floats_reads_nested_states():
    state = [(torch.zeros(1, 3), torch.zeros(1, 4)), [torch.zeros(2, 2, dtype=torch.long), None]]
    assert count_floats(state) == 7


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.params=100"], "model.params=100 (parameters, cell lstm) cannot be met: the smallest width"),
        (["model.params=0"], "model.params=0 must be a positive integer"),
        (
            ["model.params=100000", "model.state=64"],
            "model.state=64 cannot be met together with model.params=100000",
        ),
        (["cell=attention", "model.params=40000"], "cannot be met within 3%: the nearest widths give"),
    ],
)
def test_unmeetable_targets_are_refused_with_one_line(cfg_factory, overrides, message):
    with pytest.raises(ConfigError) as info:
        size_model(cfg_factory(*overrides), task_builder(), 28)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_sized_run_records_its_counts(cfg_factory, tmp_path):
    """Through src.train: the run's params within 3% of the target, its state and width in metrics.json, and the
    checkpointed config holding the chosen width (what src.generate and resuming rebuild from)."""
    record = train(cfg_factory("dataset=digits", "debug=fdr", "model.params=20000"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "ok" and abs(saved["params"] - 20000) <= 600
    assert saved["state_floats"] == 2 * saved["width"]  # one LSTM layer: h and c
    plain = train(cfg_factory("dataset=digits", "debug=fdr", f"cell.hidden_size={saved['width']}", out=tmp_path / "b"))
    assert plain["params"] == saved["params"]


def test_resuming_a_sized_run_compares_the_target_not_the_width_it_gave(tmp_path):
    """The checkpoint stores the chosen width; the resumed run's config still says the default width and the target,
    from which it derives the same width again. Another target is another architecture."""
    from src.records.checkpoints import check_compatible

    def config(params, width):
        return {
            "cell": {"_target_": "src.models.cells.fused.FusedRNN", "hidden_size": width},
            "model": {"params": params},
        }

    path = tmp_path / "last.ckpt"
    torch.save({"rnn_bench": {"config": config(20000, 61), "spec": SPEC.shape()}}, path)
    check_compatible(path, config(20000, 128))
    with pytest.raises(ConfigError, match="model.params: checkpoint 20000, this run 30000"):
        check_compatible(path, config(30000, 128))
    with pytest.raises(ConfigError, match="model.params: checkpoint 20000, this run None"):
        check_compatible(path, config(None, 128))
