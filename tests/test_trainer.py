"""The training loop: loss falls, memorisation, determinism, resume, two stages, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgglm.data.synthetic import make_synthetic_dataset
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import BOS, Vocabulary
from kgglm.train import checkpoint as ckpt
from kgglm.train.checkpoint import load_checkpoint, load_pretrained_for_finetune
from kgglm.train.trainer import TrainConfig, lr_at, train, validation_loss


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
                      num_layers=layers, dropout=dropout)
    return KGGLM(cfg, torch.from_numpy(vocab.token_types()))


def config(**kw) -> TrainConfig:
    base = dict(learning_rate=5e-3, warmup_steps=10, train_batch_size=32, epochs=1, save_step=1000,
                seed=7, device="cpu", show_progress=False, log_step=5)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and the test machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus():
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    tokens = vocab.encode_paths(*user_paths(ds, per_pair=2))
    return ds, vocab, tokens


def test_lr_schedule_warmup_then_linear_decay():
    c = TrainConfig(learning_rate=1.0, warmup_steps=4)
    lrs = [lr_at(s, c, 12) for s in range(12)]
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(lrs[4:], [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_loss_falls_well_below_start(corpus, tmp_path):
    ds, vocab, tokens = corpus
    model = tiny_model(vocab)
    start = validation_loss(model, tokens)
    res = train(model, tokens, config(epochs=30), checkpoint_dir=tmp_path, vocab=vocab)
    assert res.step == 30 * int(np.ceil(len(tokens) / 32))
    end = validation_loss(model, tokens)
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
    ds, vocab, tokens = corpus
    a, b = tiny_model(vocab, dropout=0.1), tiny_model(vocab, dropout=0.1)
    train(a, tokens, config(max_steps=8), checkpoint_dir=tmp_path / "a", vocab=vocab)
    train(b, tokens, config(max_steps=8), checkpoint_dir=tmp_path / "b", vocab=vocab)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_resume_after_interruption_matches_uninterrupted_run(corpus, tmp_path, monkeypatch):
    ds, vocab, tokens = corpus
    steps_per_epoch = int(np.ceil(len(tokens) / 32))
    cfg = config(epochs=3, save_step=5, keep_checkpoints=1)
    total = 3 * steps_per_epoch
    assert 10 < steps_per_epoch * 2  # the interruption lands mid-epoch on purpose
    full = tiny_model(vocab, dropout=0.1)
    train(full, tokens, cfg, checkpoint_dir=tmp_path / "full", vocab=vocab)

    real_save = ckpt.save_checkpoint

    def crash_after_step_10(path, *args, **kw):
        out = real_save(path, *args, **kw)
        if path.name == "step-0000010":
            raise KeyboardInterrupt("simulated interruption")
        return out

    monkeypatch.setattr(ckpt, "save_checkpoint", crash_after_step_10)
    first = tiny_model(vocab, dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        train(first, tokens, cfg, checkpoint_dir=tmp_path / "run", vocab=vocab)
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)

    resumed = tiny_model(vocab, dropout=0.1, seed=99)  # different init: weights must come from the checkpoint
    calls = []
    real_loss = resumed.loss
    monkeypatch.setattr(resumed, "loss", lambda *a, **k: calls.append(1) or real_loss(*a, **k))
    res = train(resumed, tokens, cfg, checkpoint_dir=tmp_path / "run", vocab=vocab, resume=True)
    assert len(calls) == total - 10  # continued from the saved step
    assert res.step == total
    for pa, pb in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert [p.name for p in (tmp_path / "run").glob("step-*")] == [f"step-{total:07d}"]


def test_pretrain_then_finetune_starts_from_pretrained_weights(tmp_path):
    ds = make_synthetic_dataset()
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    # pre-training corpus: KG walks I -r-> E -r-> I' -r'-> E'
    nodes, rels = user_paths(ds, seed=1)
    kg_nodes = np.concatenate([nodes[:, 1:], nodes[:, 2:3]], axis=1)
    kg_rels = np.concatenate([rels[:, 1:], rels[:, 1:2]], axis=1)
    pre_tokens = vocab.encode_paths(kg_nodes, kg_rels)
    pre = tiny_model(vocab)
    pre_res = train(pre, pre_tokens, config(epochs=2, save_step=3, stage="pretrain"),
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
    res = train(ft, ft_tokens, config(epochs=4, stage="finetune"), checkpoint_dir=tmp_path / "KGGLM-finetune",
                vocab=vocab, valid_tokens=valid, eval_step=2, stopping_step=3)
    assert [h["epoch"] for h in res.history] == [2, 4]
    assert res.best_checkpoint is not None and res.best_metrics["valid_loss"] > 0
    best, _, best_meta = load_checkpoint(res.best_checkpoint)
    assert best_meta["stage"] == "finetune" and best_meta["step"] in (h["step"] for h in res.history)
    slices = torch.as_tensor(vocab.output_slices(valid.shape[1], "finetune"))
    assert validation_loss(best, valid, output_slices=slices) == pytest.approx(res.best_metrics["valid_loss"],
                                                                               rel=1e-5)


def test_early_stopping_keeps_best_checkpoint(corpus, tmp_path):
    ds, vocab, tokens = corpus
    scores = iter([0.3, 0.5, 0.4, 0.45, 0.2, 0.9, 0.9])
    model = tiny_model(vocab)
    res = train(model, tokens, config(epochs=7), checkpoint_dir=tmp_path, vocab=vocab,
                evaluate_fn=lambda m: (next(scores), {"NDCG@10": 0.0}), stopping_step=3)
    steps_per_epoch = int(np.ceil(len(tokens) / 32))
    assert res.stopped_early and len(res.history) == 5 and res.step == 5 * steps_per_epoch
    assert res.best_score == 0.5
    _, _, meta = load_checkpoint(tmp_path / "best")
    assert meta["step"] == 2 * steps_per_epoch
    again = train(model, tokens, config(epochs=7), checkpoint_dir=tmp_path, vocab=vocab, resume=True,
                  evaluate_fn=lambda m: (next(scores), {}), stopping_step=3)
    assert again.stopped_early and again.step == res.step  # an early-stopped run is not restarted


def test_corpus_errors_are_clear(corpus, tmp_path):
    ds, vocab, tokens = corpus
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
        train(tiny_model(vocab), tokens, config(stage="finetune"), checkpoint_dir=tmp_path, vocab=vocab)
    res = train(tiny_model(vocab), tokens, config(stage="finetune", typed_output=False, max_steps=2),
                checkpoint_dir=tmp_path / "untyped", vocab=vocab)
    assert res.step == 2
