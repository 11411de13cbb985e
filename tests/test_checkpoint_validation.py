"""Broken checkpoint files get a clear answer naming the file and what was expected (exit status 2).

A tiny model is trained once on a small atomic-file dataset; each test breaks a copy of its
checkpoint (weights, vocabulary, training state, data folder) and checks the loaders' answer.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from atomic_helpers import TINY, write_atomic_dataset
from kgglm import cli
from kgglm.config import Config
from kgglm.quick_start import run_pipeline
from kgglm.tasks.recommendation import load_for_inference, resolve_model_checkpoint
from kgglm.train import checkpoint as ckpt
from kgglm.train.checkpoint import CheckpointError

_SHARED: dict = {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint, data_root)`` of a fine-tuned tiny model on the ``toy`` dataset."""
    if "ckpt" not in _SHARED:
        root = write_atomic_dataset(tmp_path_factory.mktemp("val-data"))
        saved = tmp_path_factory.mktemp("val-saved")
        res = run_pipeline("KGGLM", "toy", config_dict={**TINY, "data_path": str(root), "checkpoint_dir": str(saved),
                                                        "pretrain_epochs": 1, "epochs": 1, "baselines": []})
        _SHARED["ckpt"] = (resolve_model_checkpoint(res.run_dir), root)
        _SHARED["saved"] = saved
    return _SHARED["ckpt"]


@pytest.fixture()
def copy(trained, tmp_path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(trained[0], dst)
    return dst


def recommend(capsys, checkpoint: Path, *extra: str) -> tuple[int, str]:
    user = (_SHARED["ckpt"][1] / "toy" / "toy.inter").read_text().splitlines()[1].split("\t")[0]
    code = cli.main(["recommend", "--checkpoint", str(checkpoint), "--user", user, "-k", "2", *extra])
    return code, capsys.readouterr().err


def _truncate(f: Path, tmp: Path) -> None:
    f.write_bytes(f.read_bytes()[:100])


def _empty(f: Path, tmp: Path) -> None:
    f.write_bytes(b"")


def _pickle(f: Path, tmp: Path) -> None:
    f.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))


def _torch_zip(f: Path, tmp: Path) -> None:
    torch.save({"w": torch.zeros(3)}, f)
    assert zipfile.is_zipfile(f)


def _symlink(f: Path, tmp: Path) -> None:
    other = tmp / "other.txt"
    other.write_text("not weights at all\n" * 10)
    f.unlink()
    f.symlink_to(other)


@pytest.mark.parametrize("breaks", [_truncate, _empty, _pickle, _torch_zip, _symlink],
                         ids=["truncated", "empty", "pickle", "torch-zip", "symlink"])
def test_broken_weights_name_the_file_and_exit_2(copy, tmp_path, capsys, breaks):
    weights = copy / ckpt.WEIGHTS_FILE
    breaks(weights, tmp_path)
    with pytest.raises(CheckpointError, match="expected a safetensors file") as err:
        ckpt.read_weights(copy)
    assert str(weights) in str(err.value)
    code, message = recommend(capsys, copy)
    assert code == 2 and str(weights) in message and "Traceback" not in message


def test_foreign_formats_are_named_and_never_unpickled(copy, tmp_path, monkeypatch):
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    _pickle(copy / ckpt.WEIGHTS_FILE, tmp_path)
    with pytest.raises(CheckpointError, match="a pickle, not safetensors"):
        ckpt.read_weights(copy)
    _torch_zip(copy / ckpt.WEIGHTS_FILE, tmp_path)
    with pytest.raises(CheckpointError, match="a zip archive"):
        ckpt.read_weights(copy)
    link = copy / ckpt.WEIGHTS_FILE
    _symlink(link, tmp_path)
    with pytest.raises(CheckpointError, match="a link to .*other.txt"):
        ckpt.read_weights(copy)


@pytest.mark.parametrize("field, value, message", [
    ("n_users", "45", r"field 'n_users' is '45', expected a non-negative integer"),
    ("n_items", -1, r"field 'n_items' is -1"),
    ("n_entities", True, r"field 'n_entities' is True"),
    ("dataset", 3, r"field 'dataset' is 3, expected a string"),
    ("extra", 1, r"unknown field\(s\) \['extra'\]"),
])
def test_vocab_types_are_checked(copy, capsys, field, value, message):
    file = copy / "vocab.json"
    vocab = json.loads(file.read_text())
    file.write_text(json.dumps({**vocab, field: value}))
    with pytest.raises(CheckpointError, match=message) as err:
        ckpt.load_checkpoint(copy)
    assert str(file) in str(err.value)
    code, out = recommend(capsys, copy)
    assert code == 2 and "vocab.json" in out


def test_vocab_of_another_dataset_is_refused(copy, capsys):
    file = copy / "vocab.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "dataset": "ml1m"}))
    with pytest.raises(CheckpointError, match="belongs to dataset 'ml1m', but the checkpoint is used with 'toy'"):
        load_for_inference(copy)
    assert recommend(capsys, copy)[0] == 2


@pytest.mark.parametrize("state, message", [
    ({}, "field 'corpus' is missing"),
    ([], "expected a JSON object, got list"),
    ({"corpus": {"fingerprint": "x"}}, "field 'corpus' lacks 'train_batch_size', 'total_steps'"),
    ({"corpus": {"fingerprint": "x", "train_batch_size": 1, "total_steps": 2}, "optimizer": 3},
     "field 'optimizer' is a int"),
])
def test_training_state_fields_are_checked(trained, tmp_path, state, message):
    step = next(p for p in sorted(trained[0].parent.iterdir()) if ckpt.is_resumable(p))
    dst = tmp_path / "step"
    shutil.copytree(step, dst)
    assert ckpt.load_training_state(dst)["corpus"]  # the intact state loads
    (dst / ckpt.STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=message) as err:
        ckpt.load_training_state(dst, ckpt.STATE_FIELDS)
    assert str(dst / ckpt.STATE_FILE) in str(err.value)


def test_resume_from_an_empty_training_state_names_the_field(trained, tmp_path):
    saved = tmp_path / "saved"
    shutil.copytree(_SHARED["saved"], saved)
    states = list(saved.rglob(ckpt.STATE_FILE))
    assert states
    for f in states:
        f.write_text("{}")
    with pytest.raises(CheckpointError, match="training_state.json: field 'corpus' is missing"):
        run_pipeline("KGGLM", "toy", config_dict={**TINY, "data_path": str(trained[1]), "checkpoint_dir": str(saved),
                                                  "pretrain_epochs": 1, "epochs": 1, "baselines": [], "resume": True})


def test_broken_state_tensors_name_the_file(trained, tmp_path):
    step = next(p for p in sorted(trained[0].parent.iterdir()) if ckpt.is_resumable(p))
    dst = tmp_path / "step"
    shutil.copytree(step, dst)
    (dst / ckpt.STATE_TENSORS_FILE).write_bytes(b"\x01")
    with pytest.raises(CheckpointError, match=f"{ckpt.STATE_TENSORS_FILE}: broken or truncated"):
        ckpt.load_training_state(dst)


def test_missing_data_folder_is_reported_not_downloaded(copy, trained, tmp_path, capsys, monkeypatch):
    from kgglm.data import download

    calls = []
    monkeypatch.setattr(download, "KNOWN_DATASETS", {**download.KNOWN_DATASETS, "toy": None})
    monkeypatch.setattr(download, "download_dataset", lambda *a, **k: calls.append(a) or pytest.fail("download"))
    monkeypatch.setenv("KGGLM_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    info = json.loads((copy / ckpt.CONFIG_FILE).read_text())
    info["meta"]["dataset_path"] = str(tmp_path / "moved" / "toy")
    info["meta"]["kgglm_config"]["data_path"] = str(tmp_path / "moved")
    (copy / ckpt.CONFIG_FILE).write_text(json.dumps(info))
    code, message = recommend(capsys, copy)
    assert code == 2 and "is missing" in message and "--data-path" in message and not calls
    code, _ = recommend(capsys, copy, "--data-path", str(trained[1]))  # pointed at it: found, no download
    assert code == 0 and not calls


@pytest.mark.parametrize("value", ["", "''", '""', "[]"])
def test_empty_baselines_mean_none(value):
    assert Config("KGGLM", "ml-100k", cmd_args=[f"--baselines={value}"])["baselines"] == []
