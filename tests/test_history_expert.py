"""The Mult-DAE history expert (model/expert.py, train/expert.py, tasks/history_expert.py): against a
dense computation, learning a structure it can only see through the history, and through the run."""

import math

import numpy as np
import pytest
import torch

from kgglm.model.expert import HistoryExpert
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.train.expert import ExpertFitConfig, fit_history_expert


def test_forward_matches_the_dense_autoencoder():
    torch.manual_seed(0)
    expert = HistoryExpert(n_items=6, dim=4, dropout=0.5).eval()
    row = torch.tensor([0, 0, 0, 2])  # user 0: items 1, 3, 4; user 1: none; user 2: item 5
    items = torch.tensor([1, 3, 4, 5])
    x = torch.zeros(3, 6)
    x[row, items] = 1.0
    x = x / x.sum(1, keepdim=True).clamp_min(1).sqrt()
    want = torch.tanh(x @ expert.enc.weight + expert.enc_bias) @ expert.dec.weight.T + expert.dec.bias
    torch.testing.assert_close(expert(3, row, items), want)
    logp = expert.log_probs(3, row, items)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(3))
    # the loss: mean over the users with a history of the summed NLL of all their items
    want_loss = -(logp[0, [1, 3, 4]].sum() + logp[2, 5]) / 2
    torch.testing.assert_close(expert.loss(3, row, items), want_loss)


def test_training_dropout_scales_the_survivors():
    torch.manual_seed(1)
    expert = HistoryExpert(n_items=50, dim=3, dropout=0.5).train()
    row, items = torch.zeros(40, dtype=torch.long), torch.arange(40)
    outs = torch.stack([expert(1, row, items) for _ in range(4)])
    assert not torch.allclose(outs[0], outs[1])  # a different mask each pass
    expert.eval()
    torch.testing.assert_close(expert(1, row, items), expert(1, row, items))


def _cluster_model(n_users=120, n_items=40, seed=0):
    """Users of two tastes: items 0-19 or 20-39, each user holding 8 of their half. Only the history
    tells the tastes apart (user tokens carry no information)."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    hist = [np.sort(rng.choice(half, 8, replace=False) + (u % 2) * half) for u in range(n_users)]
    indptr = np.concatenate([[0], np.cumsum([len(h) for h in hist])])
    offset = 5
    users = (offset, offset + n_users)
    items = (users[1], users[1] + n_items)
    vocab = items[1] + 2
    cfg = ModelConfig(vocab_size=vocab, n_positions=8, embedding_size=8, num_heads=2, num_layers=1, dropout=0.0,
                      use_kg_token_types=False, history_items=n_items, history_expert_dim=16,
                      history_expert_dropout=0.3)
    torch.manual_seed(seed)
    model = KGGLM(cfg, torch.zeros(vocab, dtype=torch.long))
    model.set_user_history(torch.from_numpy(indptr), torch.from_numpy(np.concatenate(hist)) + items[0], users, items)
    return model, hist, torch.arange(*users)


def test_fit_learns_what_only_the_history_shows_and_keeps_the_best_epoch():
    model, hist, users = _cluster_model()
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("expert.")}
    scores = []

    def evaluate(m) -> float:  # the share of probability on the user's own half
        with torch.no_grad():
            logp = m.history_log_probs(users)
        own = torch.stack([logp[u, (u % 2) * 20:(u % 2) * 20 + 20].exp().sum() for u in range(len(users))])
        scores.append(float(own.mean()))
        return scores[-1]

    res = fit_history_expert(model, users, ExpertFitConfig(epochs=60, learning_rate=1e-2, weight_decay=0.0,
                                                           batch_size=32, eval_step=5, stopping_step=100), evaluate)
    assert res.epochs == 60 and len(res.history) == 12
    assert max(scores) > 0.9 and scores[0] < max(scores)  # it learned the tastes (random: 0.5)
    assert res.best_score == max(scores) and res.best_epoch == 5 * (int(np.argmax(scores)) + 1)
    assert math.isclose(evaluate(model), res.best_score, rel_tol=1e-6)  # the best epoch's weights are kept
    after = {k: v for k, v in model.state_dict().items() if not k.startswith("expert.")}
    assert all(torch.equal(before[k], after[k]) for k in before)  # the path model is untouched


def test_path_optimizer_leaves_the_expert_alone():
    from kgglm.train.state import TrainConfig
    from kgglm.train.trainer import make_optimizer

    model, _, _ = _cluster_model()
    cfg = TrainConfig(learning_rate=1e-3, weight_decay=0.1, warmup_steps=0, clip_grad_norm=0, train_batch_size=4,
                      eval_batch_size=4, epochs=1, save_step=1, eval_step=1, stopping_step=1, seed=0,
                      typed_output=False, show_progress=False, resume=False, stage="finetune")
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in model.expert.parameters())
    assert id(model.wte.weight) in in_opt


def test_expert_checkpoint_round_trip_and_fresh_from_pretrained(tmp_path):
    from kgglm.paths.vocab import Vocabulary
    from kgglm.train import checkpoint as ckpt

    vocab = Vocabulary(3, 4, 2, 2, "toy")
    base = dict(vocab_size=vocab.size, n_positions=8, embedding_size=16, num_heads=2, num_layers=1, dropout=0.0,
                use_kg_token_types=True)
    types = torch.from_numpy(vocab.token_types())
    users = (vocab.node_offset, vocab.node_offset + 3)
    items = (users[1], users[1] + 4)
    hist = (torch.tensor([0, 2, 3, 3]), torch.tensor([0, 1, 2]) + items[0])
    want = ModelConfig(**base, history_items=4, history_expert_dim=5)
    model = KGGLM(want, types)
    model.set_user_history(*hist, users, items)
    loaded, _, _ = ckpt.load_checkpoint(ckpt.save_checkpoint(tmp_path / "ft", model, vocab))
    loaded.set_user_history(*hist, users, items)
    first = torch.arange(*users)
    torch.testing.assert_close(loaded.history_log_probs(first), model.eval().history_log_probs(first))
    plain = KGGLM(ModelConfig(**base), types)
    ft, _ = ckpt.load_pretrained_for_finetune(ckpt.save_checkpoint(tmp_path / "pre", plain, vocab), vocab, want)
    assert ft.expert is not None and ft.expert.n_items == 4
    torch.testing.assert_close(ft.wte.weight, plain.wte.weight)


def test_run_fits_the_expert_chooses_the_weight_on_valid_and_the_checkpoint_ranks_the_same(tmp_path):
    from atomic_helpers import TINY, write_atomic_dataset
    from kgglm.quick_start import run_pipeline
    from kgglm.tasks.recommendation import evaluate_checkpoint

    root = write_atomic_dataset(tmp_path / "data")
    grid = [0.0, 1.0, 5.0]
    cfg = {**TINY, "data_path": str(root), "checkpoint_dir": str(tmp_path / "saved"), "baselines": [],
           "pretrain_epochs": 1,
           "history_expert_args": {"dim": 8, "epochs": 20, "eval_step": 5, "weight_grid": grid}}
    res = run_pipeline("KGGLM", "toy", config_dict=cfg)
    stats = res.train_stats["history_expert"]
    assert stats["history_weight"] in grid and stats["best_epoch"] in (5, 10, 15, 20)
    timing = {"seconds", "users_per_second"}
    again = evaluate_checkpoint(res.checkpoint, "test")  # the chosen weight travels with the checkpoint
    assert {k: v for k, v in again.items() if k not in timing} == \
        {k: v for k, v in res.test_result.items() if k not in timing}
    valid = {w: evaluate_checkpoint(res.checkpoint, "valid", cmd_args=[f"--path_generation_args.history_weight={w}"])
             for w in grid}
    best = max(valid[w]["score"] for w in grid)
    # chosen on valid, and reported as the run's valid score
    assert valid[stats["history_weight"]]["score"] == best == pytest.approx(res.best_valid_score, abs=1e-9)
    assert again["valid_paths"] == 1.0
    _weighted_lists_are_the_decoders(res.checkpoint, grid + [0.3])


def _weighted_lists_are_the_decoders(checkpoint, weights):
    """One decode re-ranked per weight (how the grid is searched) gives the lists and scores a full
    decode with that ``history_weight`` gives."""
    from kgglm.tasks.history_expert import weighted_lists
    from kgglm.tasks.ranking import rank
    from kgglm.tasks.recommendation import load_for_inference

    model, vocab, data, run = load_for_inference(checkpoint, cmd_args=["--eval_batch_size=7"])
    settings, generation = run.eval, run.generation
    lists = weighted_lists(model, data, vocab, settings, generation, weights)
    for w, got in zip(weights, lists):
        want, _ = rank(model, data, "valid", settings, vocab=vocab, generation=generation.replace(history_weight=w))
        np.testing.assert_array_equal(got.users, want.users)
        np.testing.assert_array_equal(got.items, want.items)
        np.testing.assert_array_equal(got.scores, want.scores)
    assert not np.array_equal(lists[0].items, lists[-1].items)  # the weights do change the lists


def test_expert_is_frozen_outside_its_own_fit():
    """Frozen, the path trainer's DDP does not wait for gradients the path loss never gives it (a
    2-process `kgglm run` with the expert failed before)."""
    model, _, users = _cluster_model()
    assert not any(p.requires_grad for p in model.expert.parameters())
    fit_history_expert(model, users, ExpertFitConfig(epochs=1, learning_rate=1e-2, weight_decay=0.0, batch_size=32,
                                                     eval_step=1, stopping_step=0))
    assert not any(p.requires_grad for p in model.expert.parameters())
    assert any(p.requires_grad for p in model.parameters())  # the path model trains as before


def _with_features(n_items=6, n_features=3, dim=4, seed=0):
    torch.manual_seed(seed)
    expert = HistoryExpert(n_items=n_items, dim=dim, dropout=0.5, n_features=n_features).eval()
    pairs = torch.tensor([[0, 0], [1, 0], [1, 2], [3, 1], [4, 1], [4, 2], [5, 0]])  # item 2 has none
    expert.set_features(pairs[:, 0], pairs[:, 1])
    a = torch.zeros(n_items, n_features)
    a[pairs[:, 0], pairs[:, 1]] = 1.0
    return expert, a / a.sum(1, keepdim=True).clamp_min(1).sqrt()


def test_kg_features_add_their_vectors_to_the_items_as_a_dense_computation():
    expert, a = _with_features()
    torch.nn.init.normal_(expert.enc_bias)
    row, items = torch.tensor([0, 0, 0, 2]), torch.tensor([1, 2, 4, 5])
    x = torch.zeros(3, 6)
    x[row, items] = 1.0
    x = x / x.sum(1, keepdim=True).clamp_min(1).sqrt()
    enc = expert.enc.weight + a @ expert.feat_enc
    dec = expert.dec.weight + a @ expert.feat_dec
    want = torch.tanh(x @ enc + expert.enc_bias) @ dec.T + expert.dec.bias
    torch.testing.assert_close(expert(3, row, items), want)
    # the feature vectors learn: a loss step moves them
    expert.train().requires_grad_(True)
    expert.loss(3, row, items).backward()
    assert expert.feat_enc.grad.abs().sum() > 0 and expert.feat_dec.grad.abs().sum() > 0


def test_kg_features_are_checked_against_the_expert():
    expert, _ = _with_features()
    with pytest.raises(ValueError, match=r"\[0, 6\) x \[0, 3\)"):
        expert.set_features(torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="without KG features"):
        HistoryExpert(n_items=6, dim=4, dropout=0.5).set_features(torch.tensor([0]), torch.tensor([0]))


def test_kg_features_reach_an_item_no_history_holds():
    """Two tastes, each a KG feature: items 0-19 have feature 0, items 20-39 feature 1; users hold 8
    items of their half but never item 19 or 39. Only through the feature can the expert tell which
    of the two unseen items a user's taste reaches."""
    rng = np.random.default_rng(0)
    n_users, n_items = 120, 40
    hist = [np.sort(rng.choice(19, 8, replace=False) + (u % 2) * 20) for u in range(n_users)]
    indptr = np.concatenate([[0], np.cumsum([len(h) for h in hist])])
    users, items = (5, 5 + n_users), (5 + n_users, 5 + n_users + n_items)
    cfg = ModelConfig(vocab_size=items[1] + 2, n_positions=8, embedding_size=8, num_heads=2, num_layers=1,
                      dropout=0.0, use_kg_token_types=False, history_items=n_items, history_expert_dim=16,
                      history_expert_dropout=0.3, history_expert_kg=True, history_expert_features=2)
    torch.manual_seed(0)
    model = KGGLM(cfg, torch.zeros(cfg.vocab_size, dtype=torch.long))
    model.set_user_history(torch.from_numpy(indptr), torch.from_numpy(np.concatenate(hist)) + items[0], users, items)
    model.expert.set_features(torch.arange(n_items), (torch.arange(n_items) >= 20).long())
    first = torch.arange(*users)
    fit_history_expert(model, first, ExpertFitConfig(epochs=60, learning_rate=1e-2, weight_decay=0.0,
                                                     batch_size=32, eval_step=5, stopping_step=100))
    with torch.no_grad():
        logp = model.history_log_probs(first)
    taste = torch.arange(n_users) % 2
    own = torch.where(taste == 0, logp[:, 19] > logp[:, 39], logp[:, 39] > logp[:, 19])
    assert bool(own.all())


def test_run_with_kg_features_reloads_and_ranks_the_same(tmp_path):
    from atomic_helpers import TINY, write_atomic_dataset
    from kgglm.quick_start import run_pipeline
    from kgglm.tasks.recommendation import evaluate_checkpoint, load_for_inference

    root = write_atomic_dataset(tmp_path / "data")
    cfg = {**TINY, "data_path": str(root), "checkpoint_dir": str(tmp_path / "saved"), "baselines": [],
           "pretrain_epochs": 0,
           "history_expert_args": {"dim": 8, "epochs": 10, "eval_step": 5, "weight_grid": [1.0],
                                   "kg_features": True}}
    res = run_pipeline("KGGLM", "toy", config_dict=cfg)
    model, _, data, _ = load_for_inference(res.checkpoint)
    n_features = len(np.unique(data.item_features()[1]))
    assert model.expert.n_features == n_features > 0
    assert model.expert.feat_index.shape[1] == len(data.item_features()[0])
    timing = {"seconds", "users_per_second"}
    again = evaluate_checkpoint(res.checkpoint, "test")
    assert {k: v for k, v in again.items() if k not in timing} == \
        {k: v for k, v in res.test_result.items() if k not in timing}
