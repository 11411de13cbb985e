"""User-history conditioning of KGGLM (model/gpt.py): checked against a loop over rows."""

import math

import torch

from kgglm.model.gpt import EOS_ID, KGGLM, ModelConfig, next_token_labels

N_USERS, N_ITEMS, OFFSET = 3, 4, 10  # user tokens 10..12, item tokens 13..16
VOCAB = 20


def _model(**kw) -> KGGLM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, n_positions=8, embedding_size=16, num_heads=2, num_layers=1,
                      dropout=0.0, use_kg_token_types=False, **kw)
    model = KGGLM(cfg, torch.zeros(VOCAB, dtype=torch.long))
    if cfg.user_history:
        indptr = torch.tensor([0, 2, 3, 3])  # user 0: items 0, 1; user 1: item 2; user 2: none
        tokens = torch.tensor([0, 1, 2]) + OFFSET + N_USERS
        model.set_user_history(indptr, tokens, (OFFSET, OFFSET + N_USERS),
                               (OFFSET + N_USERS, OFFSET + N_USERS + N_ITEMS))
    return model.eval()


def _rows() -> torch.Tensor:
    # [BOS] user rel item rel item [EOS] [PAD]; the target (last node) is item 1 for row 0, item 2 for row 1
    return torch.tensor([[1, 10, 5, 13, 5, 14, EOS_ID, 0],
                         [1, 11, 5, 15, 5, 15, EOS_ID, 0],
                         [1, 12, 5, 13, 5, 16, EOS_ID, 0]])


def test_history_embedding_matches_a_loop_and_hides_the_target():
    model = _model(user_history=True)
    ids = _rows()
    x, hist = model._embed(ids, 0, exclude=ids[torch.arange(3), torch.tensor([5, 5, 5])])
    base = model.wte(ids) + model.wpe(torch.arange(8))
    history = {0: [13, 14], 1: [15], 2: []}
    for r in range(3):
        shown = [t for t in history[r] if t != int(ids[r, 5])]
        want = base[r].clone()
        if shown:
            want[1] += model.hproj(model.wte.weight[shown].sum(0) / math.sqrt(len(shown)))
        torch.testing.assert_close(x[r], want)
    row, toks, hidden, _ = hist
    assert row.tolist() == [0, 0, 1] and hidden.tolist() == [False, True, True]


def test_model_without_history_is_unchanged():
    ids = _rows()
    plain, hist_off = _model(), _model(user_history=True)
    hist_off.load_state_dict(plain.state_dict(), strict=False)  # same weights but hproj
    hist_off.hist_tokens = torch.zeros(0, dtype=torch.long)  # history not attached: no offset
    assert not hasattr(plain, "hproj")
    torch.testing.assert_close(plain.hidden_states(ids), hist_off.hidden_states(ids))


def test_history_loss_is_the_mean_nll_of_hidden_items():
    model = _model(user_history=True, history_loss_weight=2.0)
    ids = _rows()
    total = model.loss(ids, next_token_labels(ids))
    x, _ = model._embed(ids, 0, exclude=ids[:, 5])  # training hides each row's target from its history
    h = model._blocks(x, None)
    path_only = model._path_loss(h[:, :-1], next_token_labels(ids)[:, :-1], None)
    summary = torch.stack([model.wte.weight[13], model.wte.weight[15] * 0])  # row 0 shows item 0 only
    summary = torch.cat([summary, torch.zeros(1, 16)])
    logp = torch.log_softmax(model.hhead(summary) @ model.wte.weight[13:17].T, -1)
    # row 0 hides item 1 (its target), row 1 hides item 2; row 2 has no history
    want = -(logp[0, 1] + logp[1, 2]) / 2
    torch.testing.assert_close(total, path_only + 2.0 * want, rtol=1e-5, atol=1e-6)
    full = model.history_log_probs(ids[:, 1])  # at decoding time the whole history is shown
    shown = torch.stack([model.wte.weight[[13, 14]].sum(0) / math.sqrt(2), model.wte.weight[15], torch.zeros(16)])
    torch.testing.assert_close(full, torch.log_softmax(model.hhead(shown) @ model.wte.weight[13:17].T, -1))


def test_checkpoint_round_trip_and_pretrained_start(tmp_path):
    from kgglm.paths.vocab import Vocabulary
    from kgglm.train import checkpoint as ckpt

    vocab = Vocabulary(N_USERS, N_ITEMS, 2, 2, "toy")
    cfg = dict(vocab_size=vocab.size, n_positions=8, embedding_size=16, num_heads=2, num_layers=1, dropout=0.0,
               use_kg_token_types=True)
    types = torch.from_numpy(vocab.token_types())
    users = (vocab.node_offset, vocab.node_offset + N_USERS)
    items = (users[1], users[1] + N_ITEMS)
    hist = (torch.tensor([0, 2, 3, 3]), torch.tensor([0, 1, 2]) + items[0])
    torch.manual_seed(1)
    model = KGGLM(ModelConfig(**cfg, user_history=True, history_loss_weight=1.0, history_items=N_ITEMS), types)
    model.set_user_history(*hist, users, items)
    saved = ckpt.save_checkpoint(tmp_path / "ft", model, vocab)
    loaded, _, _ = ckpt.load_checkpoint(saved)
    loaded.set_user_history(*hist, users, items)
    first = torch.arange(*users)
    torch.testing.assert_close(loaded.history_log_probs(first), model.eval().history_log_probs(first))
    # a plain pre-trained checkpoint starts a history model: path weights loaded, history layers fresh
    plain = KGGLM(ModelConfig(**cfg), types)
    pre = ckpt.save_checkpoint(tmp_path / "pre", plain, vocab)
    want = ModelConfig(**cfg, user_history=True, history_loss_weight=1.0, history_items=N_ITEMS)
    ft, _ = ckpt.load_pretrained_for_finetune(pre, vocab, want)
    assert ft.hout.out_features == N_ITEMS
    torch.testing.assert_close(ft.wte.weight, plain.wte.weight)


def test_history_run_end_to_end_and_reloaded_checkpoint_scores_the_same(tmp_path):
    """A history model through the pipeline; the saved checkpoint, reloaded (history re-attached from
    the train split), gives the run's test metrics; the expert changes the ranking scores."""
    from atomic_helpers import TINY, write_atomic_dataset
    from kgglm.quick_start import run_pipeline
    from kgglm.tasks.recommendation import evaluate_checkpoint

    root = write_atomic_dataset(tmp_path / "data")
    base = {**TINY, "data_path": str(root), "checkpoint_dir": str(tmp_path / "saved"), "baselines": [],
            "pretrain_epochs": 1, "user_history": True, "history_dropout": 0.5, "history_loss_weight": 1.0,
            "path_generation_args": {"history_weight": 1.0}}
    res = run_pipeline("KGGLM", "toy", config_dict=base)
    timing = {"seconds", "users_per_second"}
    again = evaluate_checkpoint(res.checkpoint, "test")
    assert {k: v for k, v in again.items() if k not in timing} == \
        {k: v for k, v in res.test_result.items() if k not in timing}
    off = evaluate_checkpoint(res.checkpoint, "test", cmd_args=["--path_generation_args.history_weight=0"])
    assert off["valid_paths"] == 1.0 and again["valid_paths"] == 1.0
