"""Knowledge completion with KGGLM: predict the tail of ``(head, relation, ?)``.

Recipe (the paper's link-prediction setting, with a clean protocol):

1. **Split** the KG triples (:mod:`kgglm.data.kg_split`); every graph and corpus below is built from
   the *train* triples only.
2. **Pre-train** on random KG walks over the train graph (or load ``pre_model_path``).
3. **Zero-shot** evaluation of the pre-trained model ("gen-only" in the paper).
4. **Fine-tune** on the train triples written as paths ``[BOS] h r t [EOS]`` and, as the graph is
   undirected, ``[BOS] t r h [EOS]``; early stopping on the valid filtered MRR. Two losses
   (``kg_finetune_loss``): ``one_to_n`` (default, :class:`TailSetLoss`) groups the paths by their
   prompt ``[BOS] h r`` and scores each prompt once against all of its train tails, the tail
   tokens' part of the path loss (on ML1M 281,528 paths share 25,922 prompts: a quick-preset
   epoch takes about 20 CPU s instead of 350); ``paths`` trains every path with the next-token
   loss on all of its tokens (the paper's recipe).
5. **Test** the best fine-tuned checkpoint ("gen+spec").

Prediction scores every candidate tail (all item and entity nodes) by the model's next-token
log-probability after the prompt ``[BOS] h r``: one forward pass of 3 tokens per batch of queries,
a full ranking, no beam search. Metrics: :mod:`kgglm.evaluate.kg_ranking` (filtered, realistic
ranks; test filters train + valid + test, valid filters train + valid).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kgglm.config import Config
from kgglm.data.dataset import Dataset
from kgglm.data.kg_split import KGSplit, kg_split_from_config
from kgglm.evaluate.evaluator import EvalConfig
from kgglm.evaluate.kg_ranking import evaluate_tail_ranking
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.corpus import PathSampleConfig, stage_corpus
from kgglm.paths.vocab import BOS, Vocabulary
from kgglm.train import checkpoint as ckpt
from kgglm.train.trainer import TrainConfig, train

logger = logging.getLogger(__name__)

TASK = "kg_completion"
TRIPLE_PATH_LENGTH = 5  # [BOS] h r t [EOS]
VALID_METRIC = "mrr"  # early stopping: filtered per-triple MRR on valid (realistic ranks)


def resolved(config: Mapping, dataset: str = "kg") -> Config:
    """``config`` as a resolved :class:`~kgglm.config.Config` (a plain dict becomes the top layer over the
    package defaults), so every default comes from ``configs/overall.yaml``."""
    return config if isinstance(config, Config) else Config("KGGLM", dataset, config_dict=dict(config))


# ------------------------------------------------------------------------------------------ corpus
def triple_corpus(triples: np.ndarray, vocab: Vocabulary, both_directions: bool = True) -> np.ndarray:
    """Token rows ``[BOS] h r t [EOS]`` (and ``[BOS] t r h [EOS]``) of ``triples [N, 3]``, int64 ``[P, 5]``."""
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    if both_directions:
        t = np.concatenate([t, t[:, [2, 1, 0]]])
    return vocab.encode_paths(t[:, [0, 2]], t[:, 1:2])


def pretrain_corpus(dataset: Dataset, vocab: Vocabulary, config: Config) -> np.ndarray:
    """Random KG walks over ``dataset.graph`` (the train-only graph), capped to ``pretrain_max_paths``."""
    return stage_corpus(dataset, vocab, PathSampleConfig.from_config(config), "pretrain")


class TailSetLoss:
    """The 1-N fine-tuning loss: rows are the distinct prompts ``[BOS] h r`` of the train triple
    paths (:attr:`prompts`), and a row's loss is ``-sum_t log p(t | [BOS] h r)`` over all of its train
    tails ``t`` (the softmax over item and entity tokens, the candidates :class:`TailScorer` ranks).

    Summed, not averaged, over a prompt's tails: the loss is then exactly the tail tokens' share of
    the path corpus's loss (every triple weighs the same, as in the per-triple metrics), computed
    with one forward pass per prompt instead of one per triple; the batch loss is the mean over
    rows, as the trainer expects. This is the 1-N / "KvsAll" scoring of KG-embedding training
    (ConvE, TuckER) with the language model as the scorer. Tails are found from the rows
    themselves (sorted ``head token * V + relation token`` keys), so any batch of prompt rows works.
    Built from the triple paths of :func:`triple_corpus` (``[BOS] h r t [EOS]`` rows).
    """

    def __init__(self, paths: np.ndarray, vocab: Vocabulary) -> None:
        keys = paths[:, 1] * vocab.size + paths[:, 2]
        order = np.lexsort((paths[:, 3], keys))
        keys, first, count = np.unique(keys[order], return_index=True, return_counts=True)
        self.n_triples = len(paths)
        self.prompts = paths[order[first], :3]
        self.lo = candidate_offset(vocab)
        self.vocab_size = vocab.size
        self.keys = torch.from_numpy(keys)
        self.indptr = torch.from_numpy(np.concatenate([[0], np.cumsum(count)]))
        self.tails = torch.from_numpy(paths[order, 3] - self.lo)

    def __call__(self, model: KGGLM, x: torch.Tensor) -> torch.Tensor:
        if self.keys.device != x.device:
            self.keys, self.indptr, self.tails = (v.to(x.device) for v in (self.keys, self.indptr, self.tails))
        q = torch.searchsorted(self.keys, x[:, 1] * self.vocab_size + x[:, 2])
        start, count = self.indptr[q], self.indptr[q + 1] - self.indptr[q]
        rows = torch.repeat_interleave(torch.arange(len(q), device=x.device), count)
        # position of each (row, i-th tail) pair in self.tails: start[row] + i
        pos = torch.repeat_interleave(start - torch.cumsum(count, 0) + count, count)
        pos = pos + torch.arange(len(pos), device=x.device)
        logits = tail_logits(model, x, self.lo)
        log_p = logits[rows, self.tails[pos]] - torch.logsumexp(logits, dim=-1)[rows]
        return -log_p.sum() / x.shape[0]


# ------------------------------------------------------------------------------------------ scoring
def candidate_offset(vocab: Vocabulary) -> int:
    """The first item token: candidate tails are the item and entity tokens (users never are)."""
    return vocab.node_offset + vocab.n_users


def tail_logits(model: KGGLM, prompts: torch.Tensor, lo: int) -> torch.Tensor:
    """``[B, vocab - lo]`` float logits of the tokens from ``lo`` on, next after each prompt row."""
    h = model.hidden_states(prompts)[:, -1]  # only the last position's logits are needed
    return F.linear(h, model.wte.weight[lo:]).float()


class TailScorer:
    """``(heads, relations) -> [B, n_candidates]`` log-probabilities of every item/entity node as the
    next token after ``[BOS] h r`` (normalised over the candidate nodes; ranking is unaffected)."""

    def __init__(self, model: KGGLM, vocab: Vocabulary) -> None:
        self.model, self.vocab = model, vocab
        self.lo = candidate_offset(vocab)
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
        logits = tail_logits(self.model, x, self.lo)
        self.model.train(was_training)
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
def _train(model: KGGLM, tokens: np.ndarray, config: Config, vocab: Vocabulary, checkpoint_dir: Path, *,
           epochs: int, evaluate_fn=None, meta: dict | None = None, max_steps: int | None = None,
           objective: TailSetLoss | None = None):
    """The one place that calls the trainer. Triple paths ``[BOS] h r t [EOS]`` follow the
    pre-training path grammar (node, relation, node, [EOS]), so both stages train with
    ``stage='pretrain'`` output slices (unless ``objective`` replaces the path loss); the task
    stage is recorded in the checkpoint meta."""
    tc = dataclasses.replace(TrainConfig.from_config(config, "pretrain"), epochs=int(epochs), max_steps=max_steps,
                             resume=False)
    return train(model, tokens, tc, checkpoint_dir=checkpoint_dir, vocab=vocab,
                 extra_meta={"task": TASK, **(meta or {})}, evaluate_fn=evaluate_fn, objective=objective)


def pretrain(split: KGSplit, config: Mapping, checkpoint_dir: str | Path) -> tuple[KGGLM, Vocabulary, dict]:
    """A fresh model trained on random walks over the train-only graph; returns (model, vocab, stats)."""
    data = split.dataset
    config = resolved(config, data.name)
    vocab = Vocabulary.from_graph(data.graph, data.name)
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = pretrain_corpus(data, vocab, config)
    torch.manual_seed(int(config["seed"]))
    model_config = ModelConfig.from_config(config, vocab_size=vocab.size,
                                           n_positions=max(tokens.shape[1], TRIPLE_PATH_LENGTH))
    model = KGGLM(model_config, torch.from_numpy(vocab.token_types()))
    logger.info("kg pretrain: %d walks, model %.2fM parameters", tokens.shape[0], model.num_parameters() / 1e6)
    tr = _train(model, tokens, config, vocab, Path(checkpoint_dir), epochs=int(config["pretrain_epochs"]),
                meta={"kg_stage": "pretrain", "kg_split": split.stats})
    stats = {"pretrain_paths": int(tokens.shape[0]), "pretrain_steps": tr.step, "pretrain_loss": tr.last_loss,
             "pretrain_seconds": round(time.perf_counter() - t0, 2),
             "pretrain_cpu_seconds": round(time.process_time() - c0, 2), "checkpoint": str(tr.last_checkpoint)}
    return model, vocab, stats


def finetune(model: KGGLM, vocab: Vocabulary, split: KGSplit, config: Mapping, checkpoint_dir: str | Path,
             *, max_steps: int | None = None) -> tuple[KGGLM, dict]:
    """Fine-tune on train triple paths (with the ``kg_finetune_loss`` loss) with early stopping on
    valid MRR; reloads the best weights."""
    config = resolved(config, split.dataset.name)
    t0, c0 = time.perf_counter(), time.process_time()
    paths = triple_corpus(split.train, vocab)
    objective = TailSetLoss(paths, vocab) if config["kg_finetune_loss"] == "one_to_n" else None
    tokens = objective.prompts if objective is not None else paths
    bs = EvalConfig.from_config(config).eval_batch_size

    def evaluate_fn(m: KGGLM) -> tuple[float, dict]:
        metrics = evaluate_model(m, vocab, split, "valid", batch_size=bs)
        return metrics[VALID_METRIC], metrics

    tr = _train(model, tokens, config, vocab, Path(checkpoint_dir), epochs=int(config["epochs"]),
                evaluate_fn=evaluate_fn, meta={"kg_stage": "finetune", "kg_finetune_loss": config["kg_finetune_loss"]},
                max_steps=max_steps, objective=objective)
    if tr.best_checkpoint is not None:
        ckpt.load_weights(model, tr.best_checkpoint)
    stats = {"finetune_objective": config["kg_finetune_loss"], "finetune_rows": int(tokens.shape[0]),
             "finetune_paths": int(paths.shape[0]),
             "finetune_steps": tr.step, "finetune_loss": tr.last_loss,
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
    config = resolved(config, data.name)
    split = split or kg_split_from_config(config, data)
    bs = EvalConfig.from_config(config).eval_batch_size
    pre = pre_model_path or str(config["pre_model_path"]).strip()
    if pre:
        vocab = Vocabulary.from_graph(split.dataset.graph, data.name)
        model_config = ModelConfig.from_config(config, vocab_size=vocab.size, n_positions=TRIPLE_PATH_LENGTH)
        model, meta = ckpt.load_pretrained_for_finetune(pre, vocab, model_config, device=config.device)
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
