"""Checkpoints: identical logits after a round trip, atomic writes, clear errors on mismatches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cases import make_model
from kgglm import durable
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset
from kgglm.train import checkpoint as ckpt
from kgglm.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_pretrained_for_finetune,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
)


@pytest.fixture()
def vocab() -> Vocabulary:
    ds = make_synthetic_dataset(n_users=10, n_items=9)
    return Vocabulary.from_graph(ds.graph, ds.name)


def model_for(vocab: Vocabulary, size: int = 32, layers: int = 1, heads: int = 4, seed: int = 0) -> KGGLM:
    return make_model(vocab, embedding_size=size, num_layers=layers, num_heads=heads, seed=seed).eval()


def test_save_load_gives_identical_logits(vocab, tmp_path):
    model = model_for(vocab, layers=2)
    state = {"step": 7, "rng_cpu": torch.get_rng_state(), "history": [{"score": 0.5, "metrics": {"a": 1.0}}]}
    out = save_checkpoint(tmp_path / "ck", model, vocab, train_config={"learning_rate": 2e-4},
                          meta={"stage": "pretrain", "step": 7}, training_state=state)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "training_state.json",
                                       "training_state.safetensors", "vocab.json"]
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no temporary directory left behind
    loaded, v2, meta = load_checkpoint(out)
    assert v2 == vocab and meta["stage"] == "pretrain" and meta["step"] == 7
    assert meta["dataset"] == vocab.dataset and meta["vocab_size"] == vocab.size
    assert meta["train_config"]["learning_rate"] == 2e-4
    assert ModelConfig.from_dict(meta["model_config"]) == model.config
    x = torch.randint(0, vocab.size, (4, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)
    st = load_training_state(out)
    assert st["step"] == 7 and torch.equal(st["rng_cpu"], state["rng_cpu"])


def test_overwrite_and_interrupted_save_keep_a_valid_checkpoint(vocab, tmp_path, monkeypatch):
    a, b = model_for(vocab, seed=1), model_for(vocab, seed=2)
    save_checkpoint(tmp_path / "ck", a, vocab)

    def broken(*args, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", b, vocab)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    loaded, _, _ = load_checkpoint(tmp_path / "ck")
    assert torch.equal(loaded.wte.weight, a.wte.weight)
    save_checkpoint(tmp_path / "ck", b, vocab)  # replacing an existing checkpoint works
    loaded, _, _ = load_checkpoint(tmp_path / "ck")
    assert torch.equal(loaded.wte.weight, b.wte.weight)
    assert sorted(os.listdir(tmp_path)) == ["ck"]


def test_training_state_round_trips_exactly_without_pickle(vocab, tmp_path):
    model = model_for(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, vocab.size, (2, 9)))[0].float().mean().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": {"cpu": torch.get_rng_state()}, "losses": [(1, 0.1 + 0.2)],
             "best": None, "flag": True, "name": "run", "nested": {"scalar": torch.tensor(3.5)}}
    out = save_checkpoint(tmp_path / "ck", model, vocab, training_state=state)
    back = load_training_state(out)
    assert back["losses"] == [(1, 0.1 + 0.2)] and back["best"] is None and back["flag"] is True
    assert torch.equal(back["rng"]["cpu"], state["rng"]["cpu"]) and back["nested"]["scalar"].item() == 3.5
    saved_opt = opt.state_dict()
    assert set(back["optimizer"]["state"]) == set(saved_opt["state"])  # int parameter keys stay ints
    for k, s in saved_opt["state"].items():
        for name, v in s.items():
            assert torch.equal(back["optimizer"]["state"][k][name], v), (k, name)
    fresh = torch.optim.AdamW(model_for(vocab).parameters(), lr=1e-3)
    fresh.load_state_dict(back["optimizer"])
    assert fresh.state_dict()["param_groups"] == saved_opt["param_groups"]
    assert "pickle" not in (out / "training_state.json").read_text()


def test_training_state_refuses_what_it_cannot_store_safely(vocab, tmp_path):
    with pytest.raises(TypeError, match=r"training_state\.when: cannot store a object"):
        save_checkpoint(tmp_path / "ck", model_for(vocab), vocab, training_state={"when": object()})
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_pickled_training_state_is_never_loaded(vocab, tmp_path, monkeypatch):
    out = save_checkpoint(tmp_path / "ck", model_for(vocab), vocab)
    torch.save({"step": 1}, out / ckpt.LEGACY_STATE_FILE)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called on a user file"))
    with pytest.raises(CheckpointError, match="pickled training state"):
        load_training_state(out)
    with pytest.raises(CheckpointError, match="resumable"):
        resolve_checkpoint(tmp_path, require_state=True)


def test_resolve_picks_the_most_recently_completed_and_explains_missing(vocab, tmp_path):
    model = model_for(vocab)
    # a later run with fewer steps (a shared KGGLM-pretrain/ folder): completion time, not step, decides
    for run, step in (("a", 50), ("a", 60), ("b", 10)):
        save_checkpoint(tmp_path / f"step-{step:07d}", model, vocab, meta={"step": step, "run_id": run},
                        training_state={"step": step})
    assert resolve_checkpoint(tmp_path) == tmp_path / "step-0000010"
    assert resolve_checkpoint(tmp_path, require_state=True) == tmp_path / "step-0000010"
    # best/ (weights only, a copy of an earlier state) written last is still not "the newest"
    save_checkpoint(tmp_path / "best", model, vocab, meta={"step": 8})
    assert resolve_checkpoint(tmp_path) == tmp_path / "step-0000010"
    assert resolve_checkpoint(tmp_path / "best") == tmp_path / "best"
    _, _, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 10 and meta["completed"] >= meta["created"]
    (tmp_path / "only-best").mkdir()
    save_checkpoint(tmp_path / "only-best" / "best", model, vocab)
    assert resolve_checkpoint(tmp_path / "only-best") == tmp_path / "only-best" / "best"
    with pytest.raises(CheckpointError, match="resumable"):
        resolve_checkpoint(tmp_path / "only-best", require_state=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")


def test_broken_config_names_file_and_line(vocab, tmp_path):
    out = save_checkpoint(tmp_path / "ck", model_for(vocab), vocab)
    (out / "config.json").write_text('{"format": "kgglm-checkpoint",\n "model": }')
    with pytest.raises(CheckpointError, match=r"config\.json, line 2"):
        load_checkpoint(out)
    (out / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="'format'"):
        load_checkpoint(out)


def test_finetune_loads_matching_pretrained_model(vocab, tmp_path):
    pre = model_for(vocab)
    save_checkpoint(tmp_path / "pre" / "step-0000001", pre, vocab, meta={"stage": "pretrain", "step": 1})
    cfg = ModelConfig.from_dict({**pre.config.to_dict(), "dropout": 0.3})
    model, meta = load_pretrained_for_finetune(tmp_path / "pre", vocab, cfg)
    assert model.training and model.config.dropout == 0.3 and meta["step"] == 1
    for a, b in zip(pre.parameters(), model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("change, message", [
    ("dataset", "pre-trained on dataset 'other'"),
    ("vocab", "different vocabulary.*n_users 10 != 11"),
    ("size", "different model size.*embedding_size 32 != 64"),
    ("layers", "different model size.*num_layers 1 != 2"),
])
def test_mismatched_pre_model_path_gives_clear_error(vocab, tmp_path, change, message):
    pre = model_for(vocab)
    save_checkpoint(tmp_path / "pre", pre, vocab)
    now, cfg = vocab, pre.config
    if change == "dataset":  # same sizes, pre-trained on another dataset
        other = Vocabulary(vocab.n_users, vocab.n_items, vocab.n_entities, vocab.n_relations, "other")
        save_checkpoint(tmp_path / "pre", pre, other)
    elif change == "vocab":
        now = Vocabulary(vocab.n_users + 1, vocab.n_items, vocab.n_entities, vocab.n_relations, vocab.dataset)
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "vocab_size": now.size})
    elif change == "size":
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "embedding_size": 64})
    else:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "num_layers": 2})
    with pytest.raises(CheckpointError, match=message):
        load_pretrained_for_finetune(tmp_path / "pre", now, cfg)
    with pytest.raises(CheckpointError, match="needs pre_model_path"):
        load_pretrained_for_finetune("", vocab, pre.config)


def test_replacing_best_never_leaves_it_absent_or_half_written(vocab, tmp_path, monkeypatch):
    a, b = model_for(vocab, seed=1), model_for(vocab, seed=2)
    best = tmp_path / "best"
    save_checkpoint(best, a, vocab)
    if durable._renameat2 is None:
        pytest.skip("no renameat2 here: the fallback moves the old best/ aside first")
    seen = []

    def checked(real):
        def call(*args):
            out = real(*args)
            if args and Path(args[-1]).parent == tmp_path:  # renames inside the temporary folder do not count
                seen.append(load_checkpoint(best)[0].wte.weight.detach().clone())  # complete, or it raises
            return out
        return call

    monkeypatch.setattr(os, "replace", checked(os.replace))
    monkeypatch.setattr(durable, "exchange", checked(durable.exchange))
    save_checkpoint(best, b, vocab)
    monkeypatch.undo()
    assert len(seen) == 1 and torch.equal(seen[0], b.wte.weight)  # one step from the old best to the new
    assert sorted(os.listdir(tmp_path)) == ["best"]
