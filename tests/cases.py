"""Shared test set-up (in the spirit of PyKEEN's ``tests/cases.py``): one tiny-model factory, the
decoding and evaluation settings of the package defaults, and one independent reference
implementation of the ranking metrics that tests compare the vectorised code against."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from kgglm.baselines.base import BaselineSettings
from kgglm.config import Config
from kgglm.decode.generation import PathGenerationConfig
from kgglm.evaluate.evaluator import EvalConfig
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import Vocabulary
from kgglm.settings import resolve


def is_symmetric(graph) -> bool:
    """Every edge of a CollaborativeGraph has its reverse (true by construction; checked by tests)."""
    src = np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
    return bool(graph.has_edge(graph.neighbor, graph.relation, src).all())


def make_model(vocab: Vocabulary, *, n_positions: int = 9, embedding_size: int = 32, num_heads: int = 2,
               num_layers: int = 2, dropout: float = 0.0, use_kg_token_types: bool = True,
               initializer_range: float = 0.02, seed: int = 0) -> KGGLM:
    """A small KGGLM over ``vocab`` (seeded, so two calls with the same arguments are identical)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab.size, n_positions=n_positions, embedding_size=embedding_size,
                      num_heads=num_heads, num_layers=num_layers, dropout=dropout,
                      use_kg_token_types=use_kg_token_types, initializer_range=initializer_range)
    return KGGLM(cfg, torch.as_tensor(vocab.token_types()))


DEFAULT_SETTINGS = resolve(Config())  # the package defaults, resolved once


def baseline_settings(name: str = "Pop", dataset: str = "synthetic", **over) -> BaselineSettings:
    """What a run gives baseline ``name``: its section of the layered config (its model YAML
    included) with ``over`` as the top layer."""
    return resolve(Config(name, dataset, config_dict=over)).baseline


def generation(**overrides) -> PathGenerationConfig:
    """The package's default decoding settings with ``overrides`` (e.g. ``num_beams=6``), ranking items
    by their best path (``ranking='logprob'``: scores are then path log-probabilities, which the search
    tests recompute); the default ``marginal`` ranking has tests of its own."""
    overrides = {"ranking": "logprob", **overrides}
    if "avoid_relations" in overrides:
        overrides["avoid_relations"] = tuple(overrides["avoid_relations"])
    return DEFAULT_SETTINGS.generation.replace(**overrides)


def eval_settings(topk: Sequence[int] = (10,), metrics: Sequence[str] = ("Recall", "MRR", "NDCG", "Hit", "Precision"),
                  eval_batch_size: int = 16) -> EvalConfig:
    """Evaluation settings with NDCG@max(topk) as the validation metric."""
    return EvalConfig(topk=tuple(sorted(topk)), metrics=tuple(metrics), valid_metric=f"NDCG@{max(topk)}",
                      eval_batch_size=eval_batch_size)


def reference_metrics(ranked: Iterable[Sequence[int]], relevant: Iterable[set], k: int) -> dict[str, float]:
    """Recall/Precision/Hit/MRR/NDCG@k averaged over users, written plainly (one user at a time)."""
    sums = dict.fromkeys(("recall", "precision", "hit", "mrr", "ndcg"), 0.0)
    n = 0
    for items, rel in zip(ranked, relevant):
        top = list(items)[:k]
        hits = [r for r, i in enumerate(top) if i in rel]  # -1 (no item) is never relevant
        sums["recall"] += len(hits) / len(rel)
        sums["precision"] += len(hits) / k
        sums["hit"] += 1.0 if hits else 0.0
        sums["mrr"] += 1.0 / (hits[0] + 1) if hits else 0.0
        dcg = sum(1.0 / math.log2(r + 2) for r in hits)
        idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(rel), k)))
        sums["ndcg"] += dcg / idcg
        n += 1
    return {f"{name}@{k}": value / max(n, 1) for name, value in sums.items()}
