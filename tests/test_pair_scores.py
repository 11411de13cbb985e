"""The decoder's per-pair scoring: legal-pair logits equal the dot products they stand for."""

from __future__ import annotations

import pytest
import torch

from kgglm.decode.pair_scores import pair_logits


@pytest.mark.parametrize("block", [1 << 18, 7, 1])
@pytest.mark.parametrize("distinct", [5, 400])
def test_pair_logits_equal_per_pair_dot_products(block, distinct):
    """The blocked matmul-and-gather (several blocks when ``block`` is small) and the per-pair
    fallback (400 distinct tokens for few pairs) both equal ``h[row] . w[token]`` computed pair by pair,
    including rows without any pair."""
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(200, 16, generator=g), torch.randn(500, 16, generator=g)
    counts = torch.randint(0, 2, (200,), generator=g)
    counts[[0, 7, 199]] = 0  # rows with nothing legal
    rows = torch.repeat_interleave(torch.arange(200), counts)
    toks = torch.randint(0, distinct, (rows.shape[0],), generator=g) * (500 // distinct)
    got = pair_logits(h, w, rows, toks, block=block)
    want = torch.tensor([float(h[r] @ w[t]) for r, t in zip(rows.tolist(), toks.tolist())])
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
