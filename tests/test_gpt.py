"""The GPT model: KV cache equals a full forward, causality, token types, tied embeddings."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from kgglm.model.gpt import IGNORE_INDEX, KGGLM, LinearCrossEntropy, ModelConfig, next_token_labels

V, T = 40, 9


def tiny(use_types: bool = True, seed: int = 0, dropout: float = 0.0) -> KGGLM:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, n_positions=T, embedding_size=32, num_heads=4, num_layers=2,
                      dropout=dropout, use_kg_token_types=use_types)
    types = torch.arange(V) % 3
    model = KGGLM(cfg, types).eval()
    # the default init is tiny (std 0.02): give the weights some size so differences show clearly
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def test_cache_decoding_matches_full_forward():
    model = tiny()
    x = torch.randint(0, V, (3, T))
    with torch.no_grad():
        full, none = model(x)
        assert none is None and full.shape == (3, T, V)
        parts, cache = [], None
        for lo, hi in ((0, 3), (3, 4), (4, 7), (7, 8), (8, 9)):  # prefill, single, multi with cache
            logits, cache = model(x[:, lo:hi], past_key_values=cache, use_cache=True)
            parts.append(logits)
            assert cache.length == hi
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)


def test_cache_reorder_selects_and_duplicates_rows():
    model = tiny()
    x = torch.randint(0, V, (3, T))
    index = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        _, cache = model(x[:, :5], use_cache=True)
        cache.reorder(index)
        assert cache.batch_size == 4 and cache.length == 5
        step, cache = model(x[index, 5:], past_key_values=cache)
        full, _ = model(x[index])
    torch.testing.assert_close(step, full[:, 5:], rtol=1e-4, atol=1e-5)


def test_causal_future_tokens_do_not_change_past_logits():
    model = tiny()
    x = torch.randint(0, V, (2, T))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % V
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(y)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_token_types_change_output_when_enabled():
    x = torch.randint(0, V, (2, T))
    with_types = tiny(use_types=True)
    with torch.no_grad():
        base, _ = with_types(x)
        with_types.token_types.zero_()  # same weights, every token typed "special"
        changed, _ = with_types(x)
    assert (base - changed).abs().max() > 1e-2
    without = tiny(use_types=False)
    assert without.wtt is None
    with torch.no_grad():
        a, _ = without(x)
        without.token_types.zero_()
        b, _ = without(x)
    torch.testing.assert_close(a, b)


def test_output_is_tied_to_token_embedding():
    model = tiny()
    assert not any("lm_head" in k for k in model.state_dict())
    assert "token_types" not in model.state_dict()
    x = torch.randint(0, V, (2, T))
    with torch.no_grad():
        h = model.hidden_states(x)
        logits, _ = model(x)
    torch.testing.assert_close(logits, h @ model.wte.weight.T)


def test_loss_ignores_padding_and_matches_independent_computation():
    model = tiny()
    x = torch.randint(5, V, (3, T))
    x[0, 6:] = 0  # PAD after the end
    x[2, 4:] = 0
    labels = next_token_labels(x)
    assert labels[0, 5:].eq(IGNORE_INDEX).all() and labels[:, -1].eq(IGNORE_INDEX).all()
    with torch.no_grad():
        logits, _ = model(x)
        terms = [F.cross_entropy(logits[b, t], x[b, t + 1], reduction="sum")
                 for b in range(3) for t in range(T - 1) if x[b, t + 1] != 0]
        expected = torch.stack(terms).mean()
        got = model.loss(x)
    torch.testing.assert_close(got, expected)


def test_config_errors_and_round_trip():
    from kgglm.config import Config
    from kgglm.settings import resolve

    small = dict(num_layers=1, dropout=0.0, use_kg_token_types=True)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(vocab_size=10, n_positions=5, embedding_size=30, num_heads=4, **small)
    cfg = ModelConfig(vocab_size=10, n_positions=5, embedding_size=32, num_heads=4, **small)
    # the resolver takes every size from the resolved config (defaults live in overall.yaml only)
    c = Config(config_dict={"embedding_size": 48, "num_heads": 3, "num_layers": 2, "dropout": 0.2})
    mc = dataclasses.replace(resolve(c).model, vocab_size=11, n_positions=7)
    assert (mc.embedding_size, mc.num_heads, mc.num_layers, mc.dropout, mc.vocab_size, mc.n_positions) == (
        48, 3, 2, 0.2, 11, 7)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_embd": 3})
    with pytest.raises(ValueError, match="token_types"):
        KGGLM(cfg, torch.zeros(9, dtype=torch.long))
    model = KGGLM(cfg, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="n_positions"):
        model(torch.zeros(1, 6, dtype=torch.long))


@pytest.mark.parametrize("chunk", [4096, 7])
def test_fused_linear_cross_entropy_matches_autograd(chunk, monkeypatch):
    monkeypatch.setattr(LinearCrossEntropy, "CHUNK", chunk)
    torch.manual_seed(0)
    h = torch.randn(20, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 30, (20,))
    y[[3, 9, 15]] = IGNORE_INDEX  # the GPU path passes ignored rows through
    fused = LinearCrossEntropy.apply(h, w, y)
    (3 * fused).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(h @ w.T, y, ignore_index=IGNORE_INDEX)
    (3 * ref).backward()
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gh, h.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, w.grad, rtol=1e-10, atol=1e-12)
    assert gh[[3, 9, 15]].abs().max() == 0


def test_model_loss_gradients_match_plain_cross_entropy():
    model = tiny()
    x = torch.randint(5, V, (3, T))
    x[1, 5:] = 0
    model.loss(x).backward()
    fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits, _ = model(x)
    F.cross_entropy(logits.flatten(0, 1), next_token_labels(x).flatten(), ignore_index=IGNORE_INDEX).backward()
    for a, p in zip(fused, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_typed_output_loss_normalises_each_position_over_its_range():
    """loss(output_slices) == mean over targets of -log softmax(logits[lo:hi])[target - lo], with grads."""
    model = tiny(dropout=0.0).train()
    torch.manual_seed(1)
    slices = torch.tensor([[10, 20], [0, 10], [20, 40], [0, 10], [20, 40], [0, 10], [10, 40], [0, 10]])
    x = torch.zeros(4, T, dtype=torch.long)
    x[:, 0] = 1
    for p in range(T - 1):
        lo, hi = slices[p].tolist()
        x[:, p + 1] = torch.randint(lo, hi, (4,))
    x[3, 7:] = 0  # a shorter row: PAD targets are ignored
    labels = next_token_labels(x)
    typed = model.loss(x, labels, slices)
    typed.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    logits, _ = model(x)
    terms = []
    for p in range(T - 1):
        lo, hi = slices[p].tolist()
        keep = labels[:, p] != IGNORE_INDEX
        logp = F.log_softmax(logits[keep, p, lo:hi].double(), dim=-1)
        terms.append(-logp.gather(1, (labels[keep, p] - lo)[:, None]).squeeze(1))
    manual = torch.cat(terms).mean()
    manual.backward()
    torch.testing.assert_close(typed.double(), manual, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-5, msg=n)
    # and it is a different objective from the whole-vocabulary softmax
    with torch.no_grad():
        assert abs(float(model.loss(x, labels)) - float(typed)) > 1e-3
