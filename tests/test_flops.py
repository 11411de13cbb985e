"""Training FLOPs: a hand count for a tiny model, and torch's own count of the matmuls that ran."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kgglm.model.gpt import KGGLM, ModelConfig, next_token_labels
from kgglm.train.flops import body_parameters, train_flops

V, T, C, L = 30, 6, 8, 2
# rows of T tokens ([BOS]=1, [EOS]=2, relations 3-4, nodes 5-29), PAD (0) at the end of two of them:
# the next token is PAD at (row 1, p 4) and (row 2, p 2, 3, 4)
ROWS = torch.tensor([[1, 7, 3, 9, 4, 2], [1, 6, 4, 8, 2, 0], [1, 5, 2, 0, 0, 0]])
SLICES = torch.tensor([[5, 30], [0, 5], [5, 30], [0, 5], [0, 5]])  # [T-1, 2] ranges, widths 25 5 25 5 5


def tiny() -> KGGLM:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=V, n_positions=T, embedding_size=C, num_heads=2, num_layers=L, dropout=0.0, use_kg_token_types=True
    )
    return KGGLM(cfg, torch.arange(V) % 3)


def test_body_parameters_by_hand():
    # per block: 2 LayerNorms (2C each), qkv (3C^2 + 3C), attention out (C^2 + C), MLP (4C^2 + 4C, 4C^2 + C);
    # then the final LayerNorm (2C)
    assert body_parameters(tiny()) == L * (12 * C * C + 13 * C) + 2 * C


@pytest.mark.parametrize("project_all", [False, True])
def test_typed_flops_by_hand(project_all):
    f = train_flops(tiny(), ROWS, SLICES, project_all=project_all)
    n_body = L * (12 * C * C + 13 * C) + 2 * C
    assert (f.rows, f.positions, f.tokens) == (3, 18, 6 + 5 + 3)
    assert f.body == 6 * n_body * 18
    assert f.attention == 12 * L * T * C * 18
    # projected positions per p: all 3 rows, or the rows whose next token is not PAD: 3 3 2 2 1
    counts = [3] * 5 if project_all else [3, 3, 2, 2, 1]
    assert f.output == 6 * C * sum(n * w for n, w in zip(counts, [25, 5, 25, 5, 5]))
    assert f.total == f.body + f.attention + f.output


def test_full_softmax_flops_by_hand():
    f = train_flops(tiny(), ROWS, None)
    assert f.output == 6 * C * V * (3 + 3 + 2 + 2 + 1)
    g = train_flops(tiny(), ROWS[:1]) + train_flops(tiny(), ROWS[1:])
    assert g == f


@pytest.mark.parametrize("slices", [SLICES, None])
def test_matches_torch_flop_counter(slices):
    """torch counts the matmuls of the CPU training step as they run. The estimate differs by what
    the counter cannot see, added back here: the biases and LayerNorms (6 FLOPs per parameter and
    position, no matmuls) and the output layer's in-place ``grad_w.addmm_`` (one of its 3 matmuls;
    the counter registers addmm, not addmm_). Attention runs in the math kernel, whose bmm it counts."""
    model = tiny()
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model.loss(ROWS, next_token_labels(ROWS), slices).backward()
    f = train_flops(model, ROWS, slices)
    counts = counter.get_flop_counts()["Global"]
    assert counts[torch.ops.aten.bmm] == f.attention
    n_vector = sum(p.numel() for m in (model.h, model.ln_f) for p in m.parameters() if p.dim() == 1)
    assert counter.get_total_flops() == f.total - 6 * n_vector * f.positions - f.output / 3


def test_bad_slices():
    with pytest.raises(ValueError, match="output_slices"):
        train_flops(tiny(), ROWS, SLICES[:3])
