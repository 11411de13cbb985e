"""The training loop: loss falls, memorisation, determinism, resume, two stages, early stopping."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kgglm.config import Config
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import BOS, Vocabulary
from kgglm.settings import resolve
from kgglm.synthetic.small import make_synthetic_dataset
from kgglm.train import checkpoint as ckpt
from kgglm.train.checkpoint import load_checkpoint, load_pretrained_for_finetune
from kgglm.train.state import TrainProgress
from kgglm.train.trainer import TrainConfig, Trainer, lr_at, train, validation_loss


def user_paths(ds, seed: int = 0, per_pair: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """U -ui-> I -r-> E -r-> I' paths over training items, walked with plain loops (test-only)."""
    rng = np.random.default_rng(seed)
    g = ds.graph
    kg = {}
    for h, r, t in zip(ds.kg_heads.tolist(), ds.kg_relations.tolist(), ds.kg_tails.tolist()):
        kg.setdefault(h, []).append((r, t))
    by_entity = {}
    for h, r, t in zip(ds.kg_heads.tolist(), ds.kg_relations.tolist(), ds.kg_tails.tolist()):
        by_entity.setdefault((t, r), []).append(h)
    nodes, rels = [], []
    tr = ds.splits["train"]
    for u, i in zip(tr.users.tolist(), tr.items.tolist()):
        item = g.n_users + i
        for _ in range(per_pair):
            r, e = kg[item][rng.integers(len(kg[item]))]
            others = [j for j in by_entity[(e, r)] if j != item]
            nodes.append([u, item, e, others[rng.integers(len(others))]])
            rels.append([0, r, r])
    return np.array(nodes), np.array(rels)


def tiny_model(vocab: Vocabulary, seed: int = 0, dropout: float = 0.0, size: int = 32, layers: int = 1) -> KGGLM:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab.size, n_positions=9, embedding_size=size, num_heads=4,
                      num_layers=layers, dropout=dropout, use_kg_token_types=True)
    return KGGLM(cfg, torch.from_numpy(vocab.token_types()))


DEFAULTS = Config()  # overall.yaml: the only place the defaults live
RESOLVED = resolve(DEFAULTS)


def config(stage: str = "pretrain", **kw) -> TrainConfig:
    """The package defaults for ``stage`` with test-sized overrides (fields are config key names)."""
    base = {"learning_rate": 5e-3, "warmup_steps": 10, "train_batch_size": 32, "epochs": 1, "save_step": 1000,
            "seed": 7, "device": "cpu", "show_progress": False, "log_step": 5}
    return dataclasses.replace(RESOLVED.train["finetune"], **{**base, "stage": stage, **kw})  # stages differ in these


@pytest.fixture(scope="module")
def corpus():
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    tokens = vocab.encode_paths(*user_paths(ds, per_pair=2))
    return ds, vocab, tokens


LATE_KEYS = ("micro_batch_size", "compile")  # config keys with a (matching) default in TrainConfig


def test_config_takes_every_value_from_the_resolved_config():
    changed = {"learning_rate": 0.5, "weight_decay": 0.2, "warmup_steps": 3, "clip_grad_norm": 0.0,
               "train_batch_size": 5, "eval_batch_size": 6, "pretrain_epochs": 7, "epochs": 8, "save_step": 9,
               "eval_step": 2, "stopping_step": 0, "seed": 11, "typed_output": False, "show_progress": False,
               "resume": True, "device": "cpu", "micro_batch_size": 2, "compile": True}
    cfg = Config(config_dict=changed)
    pre, fine = resolve(cfg).train["pretrain"], resolve(cfg).train["finetune"]
    assert (pre.stage, pre.epochs, fine.stage, fine.epochs) == ("pretrain", 7, "finetune", 8)
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("epochs", "stage"):
            continue
        if f.default is dataclasses.MISSING:
            assert f.name in DEFAULTS, f"{f.name} is not a config key"
            assert getattr(fine, f.name) == changed[f.name], f.name
        elif f.name in LATE_KEYS:  # config keys added later: a default for by-hand TrainConfigs, the same
            assert f.default == DEFAULTS[f.name], f"TrainConfig.{f.name} default differs from overall.yaml"
            assert getattr(fine, f.name) == changed[f.name], f.name
        elif f.name != "device":  # device: the resolved torch device, not the raw key
            assert f.name not in DEFAULTS, f"config key {f.name} has a second default in TrainConfig"
    assert fine.device == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        fine.epochs = 1


@pytest.mark.parametrize("key, value, message", [
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("clip_grad_norm", -1.0, "clip_grad_norm must be >= 0"),
    ("stopping_step", -1, "stopping_step must be >= 0"),
    ("epochs", 0, "pretrain_epochs must be > 0"),
    ("stage", "serve", "train_stage must be one of"),
    ("mixed_precision", "fp8", "mixed_precision must be one of"),
])
def test_config_rejects_invalid_values_by_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        config(**{key: value})


def test_lr_schedule_warmup_then_linear_decay():
    c = config(learning_rate=1.0, warmup_steps=4)
    lrs = [lr_at(s, c, 12) for s in range(12)]
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(lrs[4:], [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_loss_falls_well_below_start(corpus, tmp_path):
    _, vocab, tokens = corpus
    model = tiny_model(vocab)
    start = validation_loss(model, tokens, batch_size=256)
    res = train(model, tokens, config(epochs=30), checkpoint_dir=tmp_path, vocab=vocab)
    assert res.step == 30 * int(np.ceil(len(tokens) / 32))
    end = validation_loss(model, tokens, batch_size=256)
    assert start > 4.0  # ~ln(vocab size) at initialisation
    assert end < 0.5 * start, (start, end)
    assert res.losses[-1][1] < 0.5 * res.losses[0][1]
    assert res.last_checkpoint.name == f"step-{res.step:07d}" and res.best_checkpoint is None


def test_memorised_corpus_is_generated_with_the_kv_cache(tmp_path):
    ds = make_synthetic_dataset(n_users=9, n_items=9, items_per_user=3)
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    nodes, rels = user_paths(ds)
    first = np.unique(nodes[:, 0], return_index=True)[1]  # one path per user: the prefix decides it
    tokens = vocab.encode_paths(nodes[first], rels[first])
    model = tiny_model(vocab, size=64, layers=2)
    train(model, tokens, config(epochs=150, train_batch_size=9, learning_rate=1e-2, warmup_steps=20),
          checkpoint_dir=tmp_path, vocab=vocab)
    model.eval()
    # typed_output trains each position's softmax over the token kind its grammar allows, so greedy
    # decoding looks within that range (the graph-constrained decoder restricts further)
    slices = vocab.output_slices(tokens.shape[1], "finetune")
    seq = torch.from_numpy(tokens[:, :2])  # [BOS] U
    with torch.no_grad():
        logits, cache = model(seq, use_cache=True)
        while seq.shape[1] < tokens.shape[1]:
            lo, hi = slices[seq.shape[1] - 1]
            nxt = logits[:, -1, lo:hi].argmax(-1, keepdim=True) + int(lo)
            seq = torch.cat([seq, nxt], 1)
            if seq.shape[1] < tokens.shape[1]:
                logits, cache = model(nxt, past_key_values=cache)
        full, _ = model(seq[:, :-1])
    assert tokens[0, 0] == BOS
    np.testing.assert_array_equal(seq.numpy(), tokens)
    # the cached decode produced the same last-step logits as a full forward
    torch.testing.assert_close(logits[:, -1], full[:, -1], rtol=1e-4, atol=1e-4)


def test_same_seed_same_weights_on_cpu(corpus, tmp_path):
    _, vocab, tokens = corpus
    a, b = tiny_model(vocab, dropout=0.1), tiny_model(vocab, dropout=0.1)
    train(a, tokens, config(max_steps=8), checkpoint_dir=tmp_path / "a", vocab=vocab)
    train(b, tokens, config(max_steps=8), checkpoint_dir=tmp_path / "b", vocab=vocab)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


RESUME_CONFIG = {"epochs": 3, "save_step": 5, "keep_checkpoints": 1, "log_step": 3}  # step 10: mid log window

KILLED_RUN = """
import os, signal, sys
import torch
sys.path.insert(0, sys.argv[2])
import test_trainer as t
from kgglm.synthetic.small import make_synthetic_dataset
from kgglm.paths.vocab import Vocabulary
from kgglm.train import checkpoint as ckpt

torch.set_num_threads(1)
ds = make_synthetic_dataset()
vocab = Vocabulary.from_graph(ds.graph, ds.name)
tokens = vocab.encode_paths(*t.user_paths(ds, per_pair=2))
real_save = ckpt.save_checkpoint

def die(*args, **kw):
    os.kill(os.getpid(), signal.SIGKILL)  # no exception handler, no finally, no atexit

def save_then_die(path, *args, **kw):
    out = real_save(path, *args, **kw)
    if path.name == "step-0000010":  # die in the middle of the next save: its temporary folder stays
        ckpt.save_file = die
        real_save(path.with_name("step-0000015"), *args, **kw)
    return out

ckpt.save_checkpoint = save_then_die
t.train(t.tiny_model(vocab, dropout=0.1), tokens, t.config(**t.RESUME_CONFIG), checkpoint_dir=sys.argv[1],
        vocab=vocab)
"""


@pytest.mark.parametrize("interruption", ["exception", "kill -9"])
def test_resume_after_interruption_matches_uninterrupted_run(corpus, tmp_path, monkeypatch, interruption):
    _, vocab, tokens = corpus
    steps_per_epoch = int(np.ceil(len(tokens) / 32))
    cfg = config(**RESUME_CONFIG)
    total = 3 * steps_per_epoch
    assert 10 < steps_per_epoch * 2  # the interruption lands mid-epoch on purpose
    full = tiny_model(vocab, dropout=0.1)
    full_res = train(full, tokens, cfg, checkpoint_dir=tmp_path / "full", vocab=vocab)

    if interruption == "kill -9":
        done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "run"), str(Path(__file__).parent)],
                              check=False, capture_output=True, text=True, timeout=300)
        assert done.returncode == -signal.SIGKILL, done.stderr
    else:
        real_save = ckpt.save_checkpoint

        def crash_after_step_10(path, *args, **kw):
            out = real_save(path, *args, **kw)
            if path.name == "step-0000010":
                raise KeyboardInterrupt("simulated interruption")
            return out

        monkeypatch.setattr(ckpt, "save_checkpoint", crash_after_step_10)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_model(vocab, dropout=0.1), tokens, cfg, checkpoint_dir=tmp_path / "run", vocab=vocab)
        monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-0000005", "step-0000010"]
    run_id = ckpt.read_info(tmp_path / "run" / "step-0000010")["meta"]["run_id"]
    left = sorted(p.name for p in (tmp_path / "run").glob(".*"))
    if interruption == "kill -9":  # the killed save's folder, named after the run
        assert len(left) == 1 and left[0].startswith(f".step-0000015.tmp-{run_id}-"), left
    else:
        assert left == []  # an exception cleans up on the spot
    other = tmp_path / "run" / ".step-0000003.tmp-another-run-x1y2"  # another run's save in progress
    other.mkdir()

    resumed = tiny_model(vocab, dropout=0.1, seed=99)  # different init: weights must come from the checkpoint
    calls = []
    real_loss = resumed.loss
    monkeypatch.setattr(resumed, "loss", lambda *a, **k: calls.append(1) or real_loss(*a, **k))
    res = train(resumed, tokens, dataclasses.replace(cfg, resume=True), checkpoint_dir=tmp_path / "run", vocab=vocab)
    assert len(calls) == total - 10  # continued from the saved step
    assert res.step == total
    for pa, pb in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert res.losses == full_res.losses  # the loss log, partial windows included, continues unchanged
    assert [p.name for p in (tmp_path / "run").glob("step-*")] == [f"step-{total:07d}"]
    assert sorted(p.name for p in (tmp_path / "run").glob(".*")) == [other.name]  # only this run's leftovers went


def test_pretrain_then_finetune_starts_from_pretrained_weights(tmp_path):
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    # pre-training corpus: KG walks I -r-> E -r-> I' -r'-> E'
    nodes, rels = user_paths(ds, seed=1)
    kg_nodes = np.concatenate([nodes[:, 1:], nodes[:, 2:3]], axis=1)
    kg_rels = np.concatenate([rels[:, 1:], rels[:, 1:2]], axis=1)
    pre_tokens = vocab.encode_paths(kg_nodes, kg_rels)
    pre = tiny_model(vocab)
    pre_res = train(pre, pre_tokens, config("pretrain", epochs=2, save_step=3),
                    checkpoint_dir=tmp_path / "KGGLM-pretrain", vocab=vocab, extra_meta={"dataset": ds.name})
    assert pre_res.last_checkpoint.exists()

    ft, meta = load_pretrained_for_finetune(tmp_path / "KGGLM-pretrain", vocab, pre.config)
    assert meta["stage"] == "pretrain" and meta["step"] == pre_res.step
    for (name, a), b in zip(pre.state_dict().items(), ft.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    fresh = tiny_model(vocab, seed=3)
    assert not torch.equal(fresh.wte.weight, ft.wte.weight)

    ft_tokens = vocab.encode_paths(*user_paths(ds, seed=2))
    valid = vocab.encode_paths(*user_paths(ds, seed=3))
    res = train(ft, ft_tokens, config("finetune", epochs=4, eval_step=2, stopping_step=3),
                checkpoint_dir=tmp_path / "KGGLM-finetune", vocab=vocab, valid_tokens=valid)
    assert [h["epoch"] for h in res.history] == [2, 4]
    assert res.best_checkpoint is not None and res.best_metrics["valid_loss"] > 0
    best, _, best_meta = load_checkpoint(res.best_checkpoint)
    assert best_meta["stage"] == "finetune" and best_meta["step"] in (h["step"] for h in res.history)
    slices = torch.as_tensor(vocab.output_slices(valid.shape[1], "finetune"))
    loss = validation_loss(best, valid, batch_size=64, output_slices=slices)
    assert loss == pytest.approx(res.best_metrics["valid_loss"], rel=1e-5)


def test_early_stopping_as_recbole_ties_do_not_improve_and_stop_after_more_than_stopping_step(corpus, tmp_path):
    _, vocab, tokens = corpus
    steps_per_epoch = int(np.ceil(len(tokens) / 32))
    # best, tie, worse (2 without improvement: not yet more than stopping_step=2), best, then 3 worse: stop
    scores = iter([0.5, 0.5, 0.4, 0.6, 0.1, 0.6, 0.2, 0.9])
    model = tiny_model(vocab)
    cfg = config("finetune", epochs=8, stopping_step=2)
    res = train(model, tokens, cfg, checkpoint_dir=tmp_path, vocab=vocab, evaluate_fn=lambda m: (next(scores), {}))
    assert [h["best"] for h in res.history] == [True, False, False, True, False, False, False]
    assert res.stopped_early and res.step == 7 * steps_per_epoch and res.epochs_completed == 7
    assert res.best_score == 0.6
    _, _, meta = load_checkpoint(tmp_path / "best")
    assert meta["step"] == 4 * steps_per_epoch
    again = train(model, tokens, dataclasses.replace(cfg, resume=True), checkpoint_dir=tmp_path, vocab=vocab,
                  evaluate_fn=lambda m: (next(scores), {}))
    assert again.stopped_early and again.step == res.step  # an early-stopped run is not restarted
    assert again.last_checkpoint == res.last_checkpoint and again.last_checkpoint.exists()


def test_nan_score_never_becomes_the_best():
    p = TrainProgress(run_id="r")
    assert p.record_evaluation(1, float("nan"), {}, stopping_step=5) is False
    assert p.record_evaluation(2, 0.1, {}, stopping_step=5) is True and p.best_score == 0.1


def test_runs_sharing_a_pretrain_folder_keep_their_checkpoints(corpus, tmp_path):
    """Defect 1: a short second run in KGGLM-pretrain/ must not prune its own checkpoints because a
    longer first run left higher step numbers there, and the folder must resolve to the second run."""
    _, vocab, tokens = corpus
    shared = tmp_path / "KGGLM-pretrain"
    first = train(tiny_model(vocab), tokens, config(epochs=5, save_step=3), checkpoint_dir=shared, vocab=vocab)
    second_model = tiny_model(vocab, seed=1)
    second = train(second_model, tokens, config(epochs=1, save_step=3), checkpoint_dir=shared, vocab=vocab)
    assert second.step < first.step and second.run_id != first.run_id
    assert second.last_checkpoint.exists() and first.last_checkpoint.exists()
    assert ckpt.resolve_checkpoint(shared) == second.last_checkpoint
    own = [p for p in shared.glob("step-*") if ckpt.read_info(p)["meta"]["run_id"] == second.run_id]
    assert len(own) == 2  # keep_checkpoints of its own
    model, _ = load_pretrained_for_finetune(shared, vocab, second_model.config)
    for a, b in zip(second_model.parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_state_dict_round_trips_through_a_checkpoint(corpus, tmp_path):
    _, vocab, tokens = corpus
    trainer = Trainer(tiny_model(vocab, dropout=0.1), tokens, config(max_steps=3, save_step=3),
                      checkpoint_dir=tmp_path, vocab=vocab)
    res = trainer.fit()
    state = ckpt.load_training_state(res.last_checkpoint)
    state["model"] = ckpt.read_weights(res.last_checkpoint)
    other = Trainer(tiny_model(vocab, seed=5, dropout=0.1), tokens, config(max_steps=3, save_step=3),
                    checkpoint_dir=tmp_path / "other", vocab=vocab)
    other.load_state_dict(state)
    mine, theirs = trainer.state_dict(), other.state_dict()
    assert theirs["progress"] == mine["progress"] and theirs["corpus"] == mine["corpus"]
    for k, v in mine["model"].items():
        assert torch.equal(theirs["model"][k], v), k
    assert torch.equal(theirs["rng"]["cpu"], mine["rng"]["cpu"])
    for k, s in mine["optimizer"]["state"].items():
        for name, v in s.items():
            assert torch.equal(theirs["optimizer"]["state"][k][name], v), (k, name)
    with pytest.raises(ckpt.CheckpointError, match="different corpus"):
        Trainer(tiny_model(vocab), tokens[:100], config(), checkpoint_dir=tmp_path, vocab=vocab).load_state_dict(state)


def test_corpus_errors_are_clear(corpus, tmp_path):
    _, vocab, tokens = corpus
    model = tiny_model(vocab)
    with pytest.raises(ValueError, match="outside"):
        train(model, tokens + vocab.size, config(), checkpoint_dir=tmp_path, vocab=vocab)
    with pytest.raises(ValueError, match="n_positions"):
        train(model, np.concatenate([tokens, tokens], 1), config(), checkpoint_dir=tmp_path, vocab=vocab)


def test_typed_output_rejects_a_corpus_of_another_shape(tmp_path):
    """A pre-training corpus trained as 'finetune' would put non-items where items must be: clear error."""
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    nodes, rels = user_paths(ds)
    tokens = vocab.encode_paths(nodes[:, ::-1].copy(), rels[:, ::-1].copy())  # item first: not a user path
    with pytest.raises(ValueError, match="typed_output.*finetune"):
        train(tiny_model(vocab), tokens, config("finetune"), checkpoint_dir=tmp_path, vocab=vocab)
    res = train(tiny_model(vocab), tokens, config("finetune", typed_output=False, max_steps=2),
                checkpoint_dir=tmp_path / "untyped", vocab=vocab)
    assert res.step == 2



def test_micro_batches_accumulate_to_the_same_step(corpus, tmp_path):
    """micro_batch_size splits a batch into passes whose gradients add up to the whole batch's (the
    loss of each pass is weighted by its share of the rows), so training follows the same path."""
    _, vocab, tokens = corpus
    whole, split = tiny_model(vocab), tiny_model(vocab)
    train(whole, tokens, config(max_steps=6), checkpoint_dir=tmp_path / "whole", vocab=vocab)
    train(split, tokens, config(max_steps=6, micro_batch_size=5), checkpoint_dir=tmp_path / "split", vocab=vocab)
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # equal but for the order of float sums
    moved = tiny_model(vocab)
    assert any(not torch.equal(a, b) for a, b in zip(moved.parameters(), split.parameters()))
