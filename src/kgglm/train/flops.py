"""Model FLOPs of training steps, counted from the rows actually trained (for throughput and MFU).

The standard transformer estimate (Kaplan et al. 2020, PaLM appendix B), forward + backward, for
rows of ``T`` positions of a model of width ``d`` with ``L`` blocks, split by where the work runs:

    body      = 6 * N_body * B * T          every position of every row, padding included (the blocks
                                            run on it); N_body = the parameters of the blocks and the
                                            final LayerNorm (no embeddings: they are lookups)
    attention = 12 * L * T * d * B * T      scores q k^T and the weighted values, 2 + 4 matmuls of
                                            2 T d FLOPs per position and layer (causality not credited)
    output    = 6 * d * sum over projected (row, position p) of width_p
                                            the tied output projection, through the fused
                                            LinearCrossEntropy (logits, d h and d w: 3 matmuls)

``width_p`` is the number of tokens position ``p``'s softmax covers: the whole vocabulary, or with
``typed_output`` its range ``hi - lo`` from :meth:`kgglm.paths.vocab.Vocabulary.output_slices`. A
projected position is one of the ``T - 1`` predicting positions whose label counts; on CPU only
those are projected (``KGGLM._cross_entropy`` drops the PAD-labelled rows), on GPU every one of the
``T - 1`` positions is (ignored rows are masked, not dropped). The per-row work of ``user_history``
(off by default: one history projection per row, not per token) is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kgglm.model.gpt import KGGLM
from kgglm.paths.vocab import PAD

__all__ = ["TrainFlops", "body_parameters", "train_flops"]


@dataclass(frozen=True)
class TrainFlops:
    """FLOPs (forward + backward) of training on some rows, by part (see the module docstring)."""

    rows: int
    positions: int  # rows * T, padding included
    tokens: int  # non-PAD tokens of the rows ([BOS] ... [EOS])
    body: float
    attention: float
    output: float

    @property
    def total(self) -> float:
        return self.body + self.attention + self.output

    def __add__(self, other: "TrainFlops") -> "TrainFlops":
        return TrainFlops(
            *(
                getattr(self, f) + getattr(other, f)
                for f in ("rows", "positions", "tokens", "body", "attention", "output")
            )
        )


def body_parameters(model: KGGLM) -> int:
    """``N_body``: the parameters of the transformer blocks and the final LayerNorm."""
    return sum(p.numel() for m in (model.h, model.ln_f) for p in m.parameters())


def train_flops(model: KGGLM, rows: torch.Tensor, output_slices=None, *, project_all: bool = False) -> TrainFlops:
    """FLOPs of one forward + backward pass of next-token training on ``rows [B, T]``.

    ``output_slices`` (``[T-1, 2]`` token ranges, as the trainer passes them) for typed output,
    ``None`` for the whole-vocabulary softmax; ``project_all``: every predicting position is
    projected (the GPU path), else only those whose next token is not PAD (the CPU path).
    """
    rows = torch.as_tensor(rows)
    if rows.dim() != 2 or rows.shape[1] < 2:
        raise ValueError(f"rows must be [B, T] with T >= 2, got shape {tuple(rows.shape)}")
    b, t = rows.shape
    cfg = model.config
    d = cfg.embedding_size
    if output_slices is None:
        width = np.full(t - 1, cfg.vocab_size, dtype=np.float64)
    else:
        s = np.asarray(torch.as_tensor(output_slices).cpu(), dtype=np.int64)
        if s.shape[0] < t - 1 or s.shape[1:] != (2,):
            raise ValueError(f"output_slices must be [>= {t - 1}, 2] for rows of {t} tokens, got {s.shape}")
        width = (s[: t - 1, 1] - s[: t - 1, 0]).astype(np.float64)
    if project_all:
        projected = np.full(t - 1, b, dtype=np.float64)
    else:
        projected = (rows[:, 1:] != PAD).sum(0).cpu().numpy().astype(np.float64)
    positions = b * t
    return TrainFlops(
        rows=b,
        positions=positions,
        tokens=int((rows != PAD).sum()),
        body=6.0 * body_parameters(model) * positions,
        attention=12.0 * cfg.num_layers * t * d * positions,
        output=6.0 * d * float(projected @ width),
    )
