"""Knowledge completion with KGGLM: predict the tail of ``(head, relation, ?)``.

Recipe (the paper's link-prediction setting, with a clean protocol):

1. **Split** the KG triples (:mod:`kgglm.data.kg_split`); every graph and corpus below is built from
   the *train* triples only.
2. **Pre-train** on random KG walks over the train graph (or load ``pre_model_path``).
3. **Zero-shot** evaluation of the pre-trained model ("gen-only" in the paper).
4. **Fine-tune** on the train triples written as paths ``[BOS] h r t [EOS]`` and, as the graph is
   undirected, ``[BOS] t r h [EOS]``; early stopping on the valid filtered MRR. Two losses
   (``kg_finetune_loss``): ``one_to_n`` (default, :class:`~kgglm.train.objectives.TailSetLoss`)
   groups the paths by their prompt ``[BOS] h r`` and scores each prompt once against all of its
   train tails, the tail tokens' part of the path loss (on ML1M 281,528 paths share 25,922 prompts: a quick-preset
   epoch takes about 20 CPU s instead of 350); ``paths`` trains every path with the next-token
   loss on all of its tokens (the paper's recipe).
5. **Test** the best fine-tuned checkpoint ("gen+spec").

Each stage returns a frozen result (:class:`KGPretrainResult`, :class:`KGFinetuneResult`);
:func:`run_kg_completion` assembles them into a :class:`KGCompletionResult`.

Prediction scores every candidate tail (all item and entity nodes) by the model's next-token
log-probability after the prompt ``[BOS] h r`` (:class:`~kgglm.evaluate.kg_ranking.TailScorer`):
one forward pass of 3 tokens per batch of queries, a full ranking, no beam search. Metrics:
:mod:`kgglm.evaluate.kg_ranking` (filtered, realistic ranks; test filters train + valid + test,
valid filters train + valid).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgglm.config import Config
from kgglm.data.dataset import Dataset
from kgglm.data.kg_split import KGSplit, load_kg_split
from kgglm.evaluate.kg_ranking import TailScorer, evaluate_tail_ranking
from kgglm.model.gpt import KGGLM
from kgglm.paths.corpus import stage_corpus
from kgglm.paths.vocab import Vocabulary
from kgglm.settings import RunSettings, resolve
from kgglm.tasks.models import ModelBuilder
from kgglm.train import checkpoint as ckpt
from kgglm.train.objectives import TailSetLoss
from kgglm.train.trainer import train

logger = logging.getLogger(__name__)

TASK = "kg_completion"
TRIPLE_PATH_LENGTH = 5  # [BOS] h r t [EOS]
VALID_METRIC = "mrr"  # early stopping: filtered per-triple MRR on valid (realistic ranks)


def resolved(config: RunSettings | Mapping, dataset: str = "kg") -> RunSettings:
    """``config``'s :class:`~kgglm.settings.RunSettings` (a plain dict becomes the top layer of a KGGLM
    config over the package defaults), so every default comes from ``configs/overall.yaml``."""
    if isinstance(config, RunSettings):
        return config
    return resolve(config if isinstance(config, Config) else Config("KGGLM", dataset, config_dict=dict(config)))


def split_from_config(settings: RunSettings, data: Dataset) -> KGSplit:
    """:func:`~kgglm.data.kg_split.load_kg_split` with the ``kg_eval_args``, ``seed`` and KG field names
    of the run's settings (the data layer gets the values, not the config)."""
    return load_kg_split(data, kg_eval_args=dict(settings.kg.kg_eval_args), seed=settings.run.seed,
                         fields=settings.kg.fields)


# ------------------------------------------------------------------------------------------ corpus
def triple_corpus(triples: np.ndarray, vocab: Vocabulary, both_directions: bool = True) -> np.ndarray:
    """Token rows ``[BOS] h r t [EOS]`` (and ``[BOS] t r h [EOS]``) of ``triples [N, 3]``, int64 ``[P, 5]``."""
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    if both_directions:
        t = np.concatenate([t, t[:, [2, 1, 0]]])
    return vocab.encode_paths(t[:, [0, 2]], t[:, 1:2])


def pretrain_corpus(dataset: Dataset, vocab: Vocabulary, settings: RunSettings) -> np.ndarray:
    """Random KG walks over ``dataset.graph`` (the train-only graph), capped to ``pretrain_max_paths``."""
    return stage_corpus(dataset, vocab, settings.sampling, "pretrain")


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class KGPretrainResult:
    """The pre-trained (or loaded) model, its vocabulary and the stage's statistics (``stats``:
    result.json's ``train_stats.pretrain``: walks, steps, loss, seconds, checkpoint, losses)."""

    model: KGGLM
    vocab: Vocabulary
    stats: dict

    @property
    def checkpoint(self) -> str:
        return str(self.stats["checkpoint"])


@dataclass(frozen=True)
class KGFinetuneResult:
    """The fine-tuned model (best valid weights reloaded), its best valid metrics and the stage's
    statistics (``stats``: result.json's ``train_stats.finetune``)."""

    model: KGGLM
    best_valid: dict | None
    stats: dict

    @property
    def checkpoint(self) -> str:
        return str(self.stats["checkpoint"])


@dataclass(frozen=True)
class KGCompletionResult:
    """What a knowledge-completion run produced: filtered tail-ranking metrics per part
    (``{'valid': ..., 'test': ...}``) of the pre-trained ("gen-only", :attr:`zero_shot`) and
    fine-tuned ("gen+spec", :attr:`finetuned`) model, the split's sizes, the stages' statistics."""

    dataset: str
    split: dict
    zero_shot: dict[str, dict]
    finetuned: dict[str, dict]
    pretrain: dict
    finetune: dict
    eval_seconds: float

    @property
    def checkpoint(self) -> str | None:
        """The fine-tuned model's checkpoint (the best valid one)."""
        return self.finetune.get("checkpoint")

    def to_dict(self) -> dict[str, Any]:
        """As JSON: ``task``, ``dataset``, ``split``, ``zero_shot``, ``finetuned``, ``pretrain``,
        ``finetune``, ``eval_seconds``."""
        return {"task": TASK, **dataclasses.asdict(self)}


# ------------------------------------------------------------------------------------------ evaluation
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
def _train(model: KGGLM, tokens: np.ndarray, settings: RunSettings, vocab: Vocabulary, checkpoint_dir: Path, *,
           epochs: int, evaluate_fn=None, meta: dict | None = None, max_steps: int | None = None,
           objective: TailSetLoss | None = None):
    """The one place that calls the trainer. Triple paths ``[BOS] h r t [EOS]`` follow the
    pre-training path grammar (node, relation, node, [EOS]), so both stages train with
    ``stage='pretrain'`` output slices (unless ``objective`` replaces the path loss); the task
    stage is recorded in the checkpoint meta."""
    tc = dataclasses.replace(settings.train["finetune"], stage="pretrain", epochs=int(epochs), max_steps=max_steps,
                             resume=False)
    return train(model, tokens, tc, checkpoint_dir=checkpoint_dir, vocab=vocab,
                 extra_meta={"task": TASK, **(meta or {})}, evaluate_fn=evaluate_fn, objective=objective)


def pretrain(split: KGSplit, config: RunSettings | Mapping, checkpoint_dir: str | Path) -> KGPretrainResult:
    """A fresh model trained on random walks over the train-only graph."""
    data = split.dataset
    settings = resolved(config, data.name)
    builder = ModelBuilder.for_dataset(data, settings.model)
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = pretrain_corpus(data, builder.vocab, settings)
    torch.manual_seed(settings.run.seed)
    model = builder.fresh(max(tokens.shape[1], TRIPLE_PATH_LENGTH))
    logger.info("kg pretrain: %d walks, model %.2fM parameters", tokens.shape[0], model.num_parameters() / 1e6)
    tr = _train(model, tokens, settings, builder.vocab, Path(checkpoint_dir), epochs=settings.run.pretrain_epochs,
                meta={"kg_stage": "pretrain", "kg_split": split.stats})
    stats = {"pretrain_paths": int(tokens.shape[0]), "pretrain_steps": tr.step, "pretrain_loss": tr.last_loss,
             "pretrain_seconds": round(time.perf_counter() - t0, 2),
             "pretrain_cpu_seconds": round(time.process_time() - c0, 2), "checkpoint": str(tr.last_checkpoint),
             "losses": [[int(s), float(v)] for s, v in tr.losses]}
    return KGPretrainResult(model, builder.vocab, stats)


def load_pretrained(split: KGSplit, config: RunSettings | Mapping, path: str | Path) -> KGPretrainResult:
    """The model at ``path``, which must have been pre-trained by this task on this very split: a
    model pre-trained on the full graph has seen the test triples (the vocabulary check alone cannot
    tell, node ids are the same)."""
    settings = resolved(config, split.dataset.name)
    builder = ModelBuilder.for_dataset(split.dataset, settings.model)
    model, meta = builder.pretrained(path, TRIPLE_PATH_LENGTH, device=settings.run.device)
    if meta.get("task") != TASK or meta.get("kg_split") != split.stats:
        raise ckpt.CheckpointError(f"pre_model_path {path}: not pre-trained by task {TASK!r} on this KG split "
                                   f"({meta.get('kg_split')} vs {split.stats}); its walks may include test triples")
    return KGPretrainResult(model, builder.vocab, {"checkpoint": str(meta.get("path", path)), "loaded": True})


def finetune(model: KGGLM, vocab: Vocabulary, split: KGSplit, config: RunSettings | Mapping, checkpoint_dir: str | Path,
             *, max_steps: int | None = None) -> KGFinetuneResult:
    """Fine-tune on train triple paths (with the ``kg_finetune_loss`` loss) with early stopping on
    valid MRR; reloads the best weights."""
    settings = resolved(config, split.dataset.name)
    loss = settings.kg.finetune_loss
    t0, c0 = time.perf_counter(), time.process_time()
    paths = triple_corpus(split.train, vocab)
    objective = TailSetLoss(paths, vocab) if loss == "one_to_n" else None
    tokens = objective.prompts if objective is not None else paths
    bs = settings.eval.eval_batch_size

    def evaluate_fn(m: KGGLM) -> tuple[float, dict]:
        metrics = evaluate_model(m, vocab, split, "valid", batch_size=bs)
        return metrics[VALID_METRIC], metrics

    tr = _train(model, tokens, settings, vocab, Path(checkpoint_dir), epochs=settings.train["finetune"].epochs,
                evaluate_fn=evaluate_fn, meta={"kg_stage": "finetune", "kg_finetune_loss": loss},
                max_steps=max_steps, objective=objective)
    if tr.best_checkpoint is not None:
        ckpt.load_weights(model, tr.best_checkpoint)
    stats = {"finetune_objective": loss, "finetune_rows": int(tokens.shape[0]),
             "finetune_paths": int(paths.shape[0]),
             "finetune_steps": tr.step, "finetune_loss": tr.last_loss,
             "stopped_early": tr.stopped_early, "finetune_seconds": round(time.perf_counter() - t0, 2),
             "finetune_cpu_seconds": round(time.process_time() - c0, 2),
             "history": [{k: h[k] for k in ("epoch", "step", "score", "best", "metrics")} for h in tr.history],
             "losses": [[int(s), float(v)] for s, v in tr.losses],
             "checkpoint": str(tr.best_checkpoint or tr.last_checkpoint)}
    return KGFinetuneResult(model, tr.best_metrics, stats)


# ------------------------------------------------------------------------------------------ the recipe
def run_kg_completion(config: RunSettings | Mapping, data: Dataset, *, run_dir: str | Path,
                      split: KGSplit | None = None, pre_model_path: str | Path | None = None,
                      finetune_max_steps: int | None = None) -> KGCompletionResult:
    """Split, pre-train (or load ``pre_model_path``), zero-shot test, fine-tune, test."""
    run_dir = Path(run_dir)
    settings = resolved(config, data.name)
    split = split or split_from_config(settings, data)
    bs = settings.eval.eval_batch_size
    pre = pre_model_path or settings.run.pre_model_path.strip()
    pretrained = load_pretrained(split, settings, pre) if pre else pretrain(split, settings, run_dir / "pretrain")
    model, vocab = pretrained.model, pretrained.vocab
    t0 = time.perf_counter()
    zero = {part: evaluate_model(model, vocab, split, part, batch_size=bs) for part in ("valid", "test")}
    eval_seconds = time.perf_counter() - t0
    logger.info("kg zero-shot test: %s", {k: round(v, 4) for k, v in zero["test"].items()})
    tuned = finetune(model, vocab, split, settings, run_dir / "finetune", max_steps=finetune_max_steps)
    t0 = time.perf_counter()
    test = evaluate_model(tuned.model, vocab, split, "test", batch_size=bs)
    eval_seconds += time.perf_counter() - t0
    logger.info("kg fine-tuned test: %s", {k: round(v, 4) for k, v in test.items()})
    return KGCompletionResult(dataset=data.name, split=split.stats, zero_shot=zero,
                              finetuned={"valid": tuned.best_valid, "test": test}, pretrain=pretrained.stats,
                              finetune=tuned.stats, eval_seconds=round(eval_seconds, 2))
