"""Files the suite reads are data, never code: checkpoints rebuild only the suite's classes; caches and
extracted data are verified before use; data outside what a data set declares is an error naming file and line."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from src.common.errors import ConfigError, DataError
from src.data.embeddings import prepare_vectors
from src.data.mnist import FashionMNIST
from src.data.sentiment import SentimentEn
from src.data.sources import PipArtifact, cached_arrays
from src.generate import main as generate_main
from src.records.rebuild import allowed_targets, check_stored_config
from tests.conftest import CONF, ROOT


class Touch:
    """Unpickling this creates the file `path`: what a malicious pickle does."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def lm_checkpoint(path: Path, task: dict) -> Path:
    """A file shaped like a language model's checkpoint of src.train, whose stored task config is `task`."""
    meta = {
        "config": {"task": task},
        "spec": {"task": "language_model", "input_kind": "tokens", "input_size": 5, "num_classes": 5, "seq_len": 8},
        "generation": {"vocab": ["<pad>", "<unk>", "<eos>", "a", "b"], "level": "char", "tokenizer": "none"},
    }
    torch.save({"rnn_bench": meta, "state_dict": {}}, path)
    return path


def generate_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.generate", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def legit_task() -> dict:
    return {
        "_target_": "src.tasks.language_model.LanguageModel",
        "stack": {
            "_target_": "src.models.stack.RecurrentStack",
            "_partial_": True,
            "cell": {
                "_target_": "src.models.cells.fused.FusedRNN",
                "_partial_": True,
                "mode": "lstm",
                "hidden_size": 8,
            },
        },
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001},
    }


def attacks(tmp_path: Path) -> dict[str, tuple[dict, Path]]:
    """Stored task configs that would create a file if instantiated, each with the file it would create."""
    pickled = tmp_path / "payload.pt"
    marker_pickle = tmp_path / "made-by-unpickling"
    with open(pickled, "wb") as f:
        pickle.dump(Touch(marker_pickle), f)
    made = {name: tmp_path / f"made-by-{name}" for name in ("open", "mkdir", "optimizer", "cell")}
    task = legit_task()
    return {
        # a builtin that writes a file, as the task itself
        "open": ({"_target_": "builtins.open", "_args_": [str(made["open"]), "w"]}, made["open"]),
        # a pathlib method, called on a Path the config builds too
        "mkdir": (
            {
                **task,
                "stack": {
                    "_target_": "pathlib.Path.mkdir",
                    "_args_": [{"_target_": "pathlib.Path", "_args_": [str(made["mkdir"])]}],
                },
            },
            made["mkdir"],
        ),
        # a loader that unpickles another file (torch.load without weights_only)
        "unpickle": (
            {**task, "optimizer": {"_target_": "torch.load", "f": str(pickled), "weights_only": False}},
            marker_pickle,
        ),
        # deep inside: the cell of the stack
        "cell": (
            {
                **task,
                "stack": {**task["stack"], "cell": {"_target_": "builtins.open", "_args_": [str(made["cell"]), "w"]}},
            },
            made["cell"],
        ),
    }


def generate_error(capsys, *args: str) -> str:
    """What `python -m src.generate <args>` prints to stderr, run in this process; it must exit 2."""
    with pytest.raises(SystemExit) as exited:
        generate_main(list(args))
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_generate_builds_nothing_outside_the_suite_from_a_checkpoint(tmp_path, capsys):
    for name, (task, marker) in attacks(tmp_path).items():
        ckpt = lm_checkpoint(tmp_path / f"{name}.ckpt", task)
        err = generate_error(capsys, f"ckpt={ckpt}", "length=3")
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (name, err)
        assert "is not one of the suite's classes" in err, (name, err)
        assert not marker.exists(), name
    ckpt = lm_checkpoint(tmp_path / "interpolation.ckpt", {**legit_task(), "embedding_dim": "${oc.env:HOME}"})
    assert "holds an interpolation" in generate_error(capsys, f"ckpt={ckpt}")
    # The command line as a user types it: one line, exit 2, no traceback, nothing created.
    task, marker = attacks(tmp_path)["unpickle"]
    done = generate_cli(f"ckpt={lm_checkpoint(tmp_path / 'cli.ckpt', task)}")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert not marker.exists()


def test_a_legitimate_stored_config_passes_and_every_configured_target_is_allowed():
    check_stored_config(legit_task(), "test")  # raises if refused
    allowed = allowed_targets()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        for group in ("cell", "task", "optimizer", "scheduler"):
            for path in sorted((CONF / group).glob("*.yaml")):
                cfg = compose("config", overrides=[f"{group}={path.stem}"])
                node = cfg[group]
                if node and "_target_" in node:
                    assert node._target_ in allowed, f"conf/{group}/{path.name}: {node._target_}"
    for target in (
        "builtins.open",
        "os.system",
        "pathlib.Path.mkdir",
        "torch.load",
        "numpy.load",
        "src.common.files.atomic_write_text",
        "src.data.sources.UrlArtifact",
        "subprocess.run",
    ):
        assert target not in allowed
        with pytest.raises(ConfigError, match="not one of the suite's classes"):
            check_stored_config({"x": [{"_target_": target}]}, "test")


def test_checkpoint_with_a_malformed_spec_or_generation_entry_is_one_message(tmp_path, capsys):
    ckpt = lm_checkpoint(tmp_path / "a.ckpt", legit_task())
    data = torch.load(ckpt, weights_only=True)
    data["rnn_bench"]["spec"]["input_size"] = "five"
    torch.save(data, ckpt)
    assert "spec.input_size='five'" in generate_error(capsys, f"ckpt={ckpt}")
    assert "is a directory" in generate_error(capsys, f"ckpt={tmp_path}")
    for temperature in ("nan", "inf", "-1"):
        assert "temperature=" in generate_error(capsys, f"ckpt={ckpt}", f"temperature={temperature}")


# -- data and caches ---------------------------------------------------------------------------------------------


def fake_wheel(folder: Path, content: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fakepkg/data.txt", content)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_extracted_file_that_changed_is_extracted_again_from_the_verified_archive(tmp_path, capsys):
    sha = fake_wheel(tmp_path / "archives", b"the true data\n")
    artifact = PipArtifact("fakepkg", "1.0", sha)
    path = artifact.member("fakepkg/data.txt", tmp_path)
    assert path.read_bytes() == b"the true data\n"
    path.write_bytes(b"the trUe data\n")  # a flipped byte
    again = artifact.member("fakepkg/data.txt", tmp_path)
    assert again.read_bytes() == b"the true data\n"
    assert "no longer matches" in capsys.readouterr().err


def test_a_damaged_parsed_cache_is_rebuilt_not_served(tmp_path, capsys):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(1000, dtype=np.int64)}

    first = cached_arrays(tmp_path, "demo", {"k": 1}, build)
    cache = next((tmp_path / "parsed").glob("demo-*.npz"))
    raw = bytearray(cache.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the array data: the zip's CRC no longer matches
    cache.write_bytes(bytes(raw))
    second = cached_arrays(tmp_path, "demo", {"k": 1}, build)
    assert len(calls) == 2 and (second["x"] == first["x"]).all()
    assert "rebuilt" in capsys.readouterr().err


def imdb(folder: Path) -> Path:
    for split in ("train", "test"):
        for label, words in (("pos", "great fun"), ("neg", "dull mess")):
            sub = folder / "aclImdb" / split / label
            sub.mkdir(parents=True, exist_ok=True)
            for i in range(6):
                (sub / f"{i}_7.txt").write_text(f"A {words} film {i}.", encoding="utf-8")
    return folder


def test_user_folder_cache_follows_content_and_empty_reviews_are_skipped_and_counted(tmp_path):
    folder = imdb(tmp_path / "data")
    dm = SentimentEn(data_dir=str(folder), cache_dir=str(tmp_path / "cache"), max_len=50)
    before = dm.source_key()
    review = folder / "aclImdb" / "train" / "pos" / "0_7.txt"
    text = review.read_text()
    review.write_text(text.replace("great", "grEAT"))  # same byte count, same name
    assert review.stat().st_size == len(text.encode())
    assert dm.source_key() != before  # the cache key follows the content
    dm.setup()
    assert "eat" in " ".join(dm.vocab)  # the edited review reached the vocabulary: "great" lower-cased
    (folder / "aclImdb" / "train" / "neg" / "9_1.txt").write_text("")  # an empty review
    dm = SentimentEn(data_dir=str(folder), cache_dir=str(tmp_path / "cache"), max_len=50)
    dm.setup()
    assert dm.stats["empty_reviews_skipped"] == 1


def idx(path: Path, data: np.ndarray) -> None:
    header = bytes([0, 0, 8, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + data.astype(np.uint8).tobytes())


def test_idx_label_outside_the_ten_classes_names_the_file_and_record(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        labels = np.arange(n) % 10
        if split == "train":
            labels[17] = 12
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    dm = FashionMNIST(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: record 17 has label 12, outside the 10"):
        dm.setup()


def test_vectors_file_in_another_encoding_names_the_line_and_a_directory_is_refused(tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_bytes(b"film 0.1 0.2\n" + "café 0.3 0.4\n".encode("latin-1"))
    vocab = ["<pad>", "<unk>", "film", "café"]
    x, lengths = np.array([[2, 3]]), np.array([2])
    cfg = {"kind": "pretrained", "dim": 2, "path": str(vectors)}
    with pytest.raises(DataError, match=r"vectors.txt:2: byte 0xe9 is not UTF-8"):
        prepare_vectors(cfg, vocab, x, lengths, tmp_path / "cache", {})
    with pytest.raises(ConfigError, match="is a directory"):
        prepare_vectors({**cfg, "path": str(tmp_path)}, vocab, x, lengths, tmp_path / "cache", {})
    vectors.write_text("film 0.1 0.2\ncafé 0.3 0.4\n", encoding="utf-8")
    path = prepare_vectors(cfg, vocab, x, lengths, tmp_path / "cache", {})
    first = np.load(path)["vectors"].copy()
    vectors.write_text("film 0.1 0.2\ncafé 0.3 0.5\n", encoding="utf-8")  # same size, new content
    assert not np.array_equal(
        np.load(prepare_vectors(cfg, vocab, x, lengths, tmp_path / "cache", {}))["vectors"], first
    )


def test_files_written_atomically_get_the_umask_permissions(tmp_path):
    from src.common.files import atomic_write_json

    old = os.umask(0o022)
    try:
        assert atomic_write_json(tmp_path / "a.json", {}).stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        assert atomic_write_json(tmp_path / "b.json", {}).stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
