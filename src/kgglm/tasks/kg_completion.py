"""Knowledge completion with KGGLM: predict the tail of ``(head, relation, ?)``.

Recipe (the paper's link-prediction setting, with a clean protocol):

1. **Split** the KG triples (:mod:`kgglm.data.kg_split`); every graph and corpus below is built from
   the *train* triples only.
2. **Pre-train** on random KG walks over the train graph (or load ``pre_model_path``).
3. **Zero-shot** evaluation of the pre-trained model ("gen-only" in the paper).
4. **Fine-tune** on the train triples written as paths ``[BOS] h r t [EOS]`` and, as the graph is
   undirected, ``[BOS] t r h [EOS]``; early stopping on the valid filtered MRR.
5. **Test** the best fine-tuned checkpoint ("gen+spec").

Prediction scores every candidate tail (all item and entity nodes) by the model's next-token
log-probability after the prompt ``[BOS] h r``: one forward pass of 3 tokens per batch of queries,
a full ranking, no beam search. Metrics: :mod:`kgglm.evaluate.kg_ranking` (filtered, realistic
ranks; test filters train + valid + test, valid filters train + valid).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kgglm.data.dataset import Dataset
from kgglm.data.kg_split import KGSplit, kg_split_from_config
from kgglm.evaluate.kg_ranking import evaluate_tail_ranking
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.sampling import sample_pretrain_paths
from kgglm.paths.vocab import BOS, Vocabulary
from kgglm.train import checkpoint as ckpt
from kgglm.train.trainer import TrainConfig, resolve_device, train

logger = logging.getLogger(__name__)

TASK = "kg_completion"
TRIPLE_PATH_LENGTH = 5  # [BOS] h r t [EOS]
VALID_METRIC = "mrr"  # early stopping: filtered per-triple MRR on valid (realistic ranks)
_DEFAULTS: dict[str, Any] = {  # used when a key is missing from a plain-dict config (tests, benchmarks)
    "seed": 2024, "embedding_size": 64, "num_heads": 4, "num_layers": 2, "dropout": 0.0, "use_kg_token_types": True,
    "learning_rate": 2e-3, "weight_decay": 0.01, "warmup_steps": 50, "clip_grad_norm": 1.0, "train_batch_size": 256,
    "eval_batch_size": 256, "pretrain_epochs": 1, "epochs": 3, "save_step": 1000, "show_progress": False,
    "typed_output": True, "eval_step": 1, "stopping_step": 2, "pre_model_path": "", "device": None, "use_gpu": True,
    "path_sample_args": {"pretrain_paths": 1, "pretrain_hop_length": [3, 3], "pretrain_max_paths": None,
                         "pretrain_include_users": False},
}


def _get(config: Mapping, key: str) -> Any:
    value = config.get(key) if key in config else None
    return _DEFAULTS.get(key) if value is None else value


def _device(config: Mapping) -> str:
    dev = getattr(config, "device", None)  # kgglm.config.Config resolves use_gpu/device into .device
    if isinstance(dev, str) and dev:
        return dev
    return str(_get(config, "device") or "auto")


# ------------------------------------------------------------------------------------------ corpus
def triple_corpus(triples: np.ndarray, vocab: Vocabulary, both_directions: bool = True) -> np.ndarray:
    """Token rows ``[BOS] h r t [EOS]`` (and ``[BOS] t r h [EOS]``) of ``triples [N, 3]``, int64 ``[P, 5]``."""
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    if both_directions:
        t = np.concatenate([t, t[:, [2, 1, 0]]])
    return vocab.encode_paths(t[:, [0, 2]], t[:, 1:2])


def pretrain_corpus(dataset: Dataset, vocab: Vocabulary, config: Mapping) -> np.ndarray:
    """Random KG walks over ``dataset.graph`` (the train-only graph), capped to ``pretrain_max_paths``."""
    psa = {**_DEFAULTS["path_sample_args"], **dict(_get(config, "path_sample_args") or {})}
    hop = psa["pretrain_hop_length"]
    hop = (int(hop), int(hop)) if np.isscalar(hop) else (int(hop[0]), int(hop[-1]))
    seed = int(_get(config, "seed"))
    batch = sample_pretrain_paths(dataset.graph, paths_per_node=int(psa["pretrain_paths"]), hop_range=hop,
                                  include_users=bool(psa["pretrain_include_users"]), seed=seed)
    tokens = batch.tokens(vocab)
    cap = psa.get("pretrain_max_paths")
    if cap is not None and tokens.shape[0] > int(cap):
        keep = np.random.default_rng(seed).choice(tokens.shape[0], int(cap), replace=False)
        tokens = tokens[np.sort(keep)]
    return tokens


# ------------------------------------------------------------------------------------------ scoring
class TailScorer:
    """``(heads, relations) -> [B, n_candidates]`` log-probabilities of every item/entity node as the
    next token after ``[BOS] h r`` (normalised over the candidate nodes; ranking is unaffected)."""

    def __init__(self, model: KGGLM, vocab: Vocabulary) -> None:
        self.model, self.vocab = model, vocab
        self.lo = vocab.node_offset + vocab.n_users  # first item token: users are never candidates
        self.device = model.wte.weight.device

    @property
    def n_candidates(self) -> int:
        return self.vocab.size - self.lo

    @torch.no_grad()
    def __call__(self, heads: np.ndarray, relations: np.ndarray) -> torch.Tensor:
        prompt = np.column_stack([np.full(len(heads), BOS), self.vocab.node_token(heads),
                                  self.vocab.relation_token(relations)])
        x = torch.from_numpy(prompt).to(self.device)
        was_training = self.model.training
        self.model.eval()
        h = self.model.hidden_states(x)[:, -1]  # only the last position's logits are needed
        self.model.train(was_training)
        logits = F.linear(h, self.model.wte.weight[self.lo:]).float()
        return torch.log_softmax(logits, dim=-1).cpu()


def evaluate_model(model: KGGLM, vocab: Vocabulary, split: KGSplit, part: str, *, batch_size: int = 256,
                   ks: tuple[int, ...] = (1, 3, 10)) -> dict[str, float]:
    """Filtered ranking metrics of ``model`` on ``part`` ('valid' or 'test') of ``split``.

    Filters: train (+ valid when testing) + the evaluated triples; type restriction from train.
    """
    if part not in ("valid", "test"):
        raise ValueError(f"part must be 'valid' or 'test', got {part!r}")
    scorer = TailScorer(model, vocab)
    filters = [split.train] if part == "valid" else [split.train, split.valid]
    return evaluate_tail_ranking(scorer, split.triples(part), filter_triples=filters, n_relations=vocab.n_relations,
                                 n_candidates=scorer.n_candidates, candidate_offset=vocab.n_users,
                                 type_triples=split.train, ks=ks, batch_size=batch_size)


# ------------------------------------------------------------------------------------------ training
def _model_config(config: Mapping, vocab: Vocabulary, n_positions: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab.size, n_positions=int(n_positions),
                       embedding_size=int(_get(config, "embedding_size")), num_heads=int(_get(config, "num_heads")),
                       num_layers=int(_get(config, "num_layers")), dropout=float(_get(config, "dropout")),
                       use_kg_token_types=bool(_get(config, "use_kg_token_types")))


def _train(model: KGGLM, tokens: np.ndarray, config: Mapping, vocab: Vocabulary, checkpoint_dir: Path, *,
           epochs: int, evaluate_fn=None, meta: dict | None = None, max_steps: int | None = None):
    """The one place that calls the trainer. Triple paths ``[BOS] h r t [EOS]`` follow the
    pre-training path grammar (node, relation, node, [EOS]), so both stages train with
    ``stage='pretrain'`` output slices; the task stage is recorded in the checkpoint meta.

    ``TrainConfig`` is built from the fields it declares (the trainer is being refactored: the
    clipping key is ``clip_grad_norm`` or ``max_grad_norm``; early stopping settings live in the
    config or in ``train``'s keywords), so this adapter works with either layout."""
    values = {"learning_rate": float(_get(config, "learning_rate")),
              "weight_decay": float(_get(config, "weight_decay")), "warmup_steps": int(_get(config, "warmup_steps")),
              "clip_grad_norm": float(_get(config, "clip_grad_norm")),
              "max_grad_norm": float(_get(config, "clip_grad_norm")),
              "train_batch_size": int(_get(config, "train_batch_size")),
              "eval_batch_size": int(_get(config, "eval_batch_size")), "epochs": int(epochs), "max_steps": max_steps,
              "save_step": int(_get(config, "save_step")), "eval_step": int(_get(config, "eval_step")),
              "stopping_step": int(_get(config, "stopping_step")), "seed": int(_get(config, "seed")),
              "device": _device(config), "show_progress": bool(_get(config, "show_progress")), "resume": False,
              "stage": "pretrain", "typed_output": bool(_get(config, "typed_output"))}
    declared = {f.name for f in dataclasses.fields(TrainConfig)}
    tc = TrainConfig(**{k: v for k, v in values.items() if k in declared})
    kwargs: dict[str, Any] = {"extra_meta": {"task": TASK, **(meta or {})}, "evaluate_fn": evaluate_fn}
    accepted = inspect.signature(train).parameters
    kwargs.update({k: values[k] for k in ("eval_step", "stopping_step") if k in accepted and k not in declared})
    return train(model, tokens, tc, checkpoint_dir=checkpoint_dir, vocab=vocab, **kwargs)


def pretrain(split: KGSplit, config: Mapping, checkpoint_dir: str | Path) -> tuple[KGGLM, Vocabulary, dict]:
    """A fresh model trained on random walks over the train-only graph; returns (model, vocab, stats)."""
    data = split.dataset
    vocab = Vocabulary.from_graph(data.graph, data.name)
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = pretrain_corpus(data, vocab, config)
    torch.manual_seed(int(_get(config, "seed")))
    model = KGGLM(_model_config(config, vocab, max(tokens.shape[1], TRIPLE_PATH_LENGTH)),
                  torch.from_numpy(vocab.token_types()))
    logger.info("kg pretrain: %d walks, model %.2fM parameters", tokens.shape[0], model.num_parameters() / 1e6)
    tr = _train(model, tokens, config, vocab, Path(checkpoint_dir), epochs=int(_get(config, "pretrain_epochs")),
                meta={"kg_stage": "pretrain", "kg_split": split.stats})
    stats = {"pretrain_paths": int(tokens.shape[0]), "pretrain_steps": tr.step, "pretrain_loss": tr.last_loss,
             "pretrain_seconds": round(time.perf_counter() - t0, 2),
             "pretrain_cpu_seconds": round(time.process_time() - c0, 2), "checkpoint": str(tr.last_checkpoint)}
    return model, vocab, stats


def finetune(model: KGGLM, vocab: Vocabulary, split: KGSplit, config: Mapping, checkpoint_dir: str | Path,
             *, max_steps: int | None = None) -> tuple[KGGLM, dict]:
    """Fine-tune on train triple paths with early stopping on valid MRR; reloads the best weights."""
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = triple_corpus(split.train, vocab)
    bs = int(_get(config, "eval_batch_size"))

    def evaluate_fn(m: KGGLM) -> tuple[float, dict]:
        metrics = evaluate_model(m, vocab, split, "valid", batch_size=bs)
        return metrics[VALID_METRIC], metrics

    tr = _train(model, tokens, config, vocab, Path(checkpoint_dir), epochs=int(_get(config, "epochs")),
                evaluate_fn=evaluate_fn, meta={"kg_stage": "finetune"}, max_steps=max_steps)
    if tr.best_checkpoint is not None:
        ckpt.load_weights(model, tr.best_checkpoint)
    stats = {"finetune_paths": int(tokens.shape[0]), "finetune_steps": tr.step, "finetune_loss": tr.last_loss,
             "stopped_early": tr.stopped_early, "finetune_seconds": round(time.perf_counter() - t0, 2),
             "finetune_cpu_seconds": round(time.process_time() - c0, 2),
             "best_valid": tr.best_metrics,
             "history": [{k: h[k] for k in ("epoch", "step", "score")} for h in tr.history],
             "checkpoint": str(tr.best_checkpoint or tr.last_checkpoint)}
    return model, stats


def run_kg_completion(config: Mapping, data: Dataset, *, run_dir: str | Path, split: KGSplit | None = None,
                      pre_model_path: str | Path | None = None, finetune_max_steps: int | None = None
                      ) -> dict[str, Any]:
    """Split, pre-train (or load ``pre_model_path``), zero-shot test, fine-tune, test. Returns a dict:

    ``split`` (sizes and source), ``zero_shot`` / ``finetuned`` (``{'valid': metrics, 'test': metrics}``;
    the paper's "gen-only" / "gen+spec"), ``pretrain`` / ``finetune`` (corpus sizes, steps, losses,
    seconds, checkpoints), ``eval_seconds``.
    """
    run_dir = Path(run_dir)
    split = split or kg_split_from_config(config, data)
    bs = int(_get(config, "eval_batch_size"))
    pre = pre_model_path or _get(config, "pre_model_path")
    if pre:
        vocab = Vocabulary.from_graph(split.dataset.graph, data.name)
        model, meta = ckpt.load_pretrained_for_finetune(pre, vocab, _model_config(config, vocab, TRIPLE_PATH_LENGTH),
                                                        device=resolve_device(_device(config)))
        # a model pre-trained on the full graph has seen the test triples: only accept one pre-trained
        # by this task on the same split (the vocabulary check alone cannot tell, node ids are the same)
        if meta.get("task") != TASK or meta.get("kg_split") != split.stats:
            raise ckpt.CheckpointError(f"pre_model_path {pre}: not pre-trained by task {TASK!r} on this KG split "
                                       f"({meta.get('kg_split')} vs {split.stats}); its walks may include test triples")
        pre_stats = {"checkpoint": str(meta.get("path", pre)), "loaded": True}
    else:
        model, vocab, pre_stats = pretrain(split, config, run_dir / "pretrain")
    t0 = time.perf_counter()
    zero = {part: evaluate_model(model, vocab, split, part, batch_size=bs) for part in ("valid", "test")}
    eval_seconds = time.perf_counter() - t0
    logger.info("kg zero-shot test: %s", {k: round(v, 4) for k, v in zero["test"].items()})
    model, ft_stats = finetune(model, vocab, split, config, run_dir / "finetune", max_steps=finetune_max_steps)
    t0 = time.perf_counter()
    test = evaluate_model(model, vocab, split, "test", batch_size=bs)
    eval_seconds += time.perf_counter() - t0
    logger.info("kg fine-tuned test: %s", {k: round(v, 4) for k, v in test.items()})
    return {"task": TASK, "dataset": data.name, "split": split.stats, "zero_shot": zero,
            "finetuned": {"valid": ft_stats.pop("best_valid"), "test": test}, "pretrain": pre_stats,
            "finetune": ft_stats, "eval_seconds": round(eval_seconds, 2)}
