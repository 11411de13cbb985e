"""The stages behind the quick start and the CLI, wired from a :class:`~kgglm.config.Config`.

``pretrain_stage`` and ``finetune_stage`` sample a corpus, train and (fine-tuning) evaluate;
``evaluate_checkpoint`` and ``recommend_from_checkpoint`` work from a checkpoint directory alone:
its ``config.json`` carries the resolved run config (``meta.kgglm_config``) and the dataset folder,
so the dataset, graph and seen items are rebuilt exactly (same files, same seeded split) without
sampling or training anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from kgglm.config import Config, ConfigError
from kgglm.data import Dataset, load_dataset_from_config
from kgglm.decode.recommend import Recommendations, explain, path_strings, recommend, users_with_items, \
    write_recommendations
from kgglm.evaluate.evaluator import PopBaseline, evaluate_topk, path_quality
from kgglm.evaluate.metrics import metric_value
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.corpus import build_corpus, corpus_args_from_config
from kgglm.paths.vocab import Vocabulary
from kgglm.train import checkpoint as ckpt
from kgglm.train.trainer import TrainConfig, train

logger = logging.getLogger(__name__)

PRETRAIN_DIR = "KGGLM-pretrain"  # CHECKPOINT_DIR/KGGLM-pretrain/, as in hopwise
CONFIG_META_KEY = "kgglm_config"
RECOMMENDATIONS_FILE = "recommendations.jsonl"


# ---------------------------------------------------------------------------------- building blocks
def load_dataset_for(config: Config) -> Dataset:
    logger.info("loading dataset %s", config.dataset)
    return load_dataset_from_config(config)


def model_config_for(config: Config, vocab: Vocabulary, n_positions: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab.size, n_positions=int(n_positions),
                       embedding_size=config["embedding_size"], num_heads=config["num_heads"],
                       num_layers=config["num_layers"], dropout=config["dropout"],
                       use_kg_token_types=config["use_kg_token_types"])


def train_config_for(config: Config, stage: str) -> TrainConfig:
    return TrainConfig(
        learning_rate=config["learning_rate"], weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_steps"], max_grad_norm=config["clip_grad_norm"],
        train_batch_size=config["train_batch_size"], eval_batch_size=config["eval_batch_size"],
        epochs=config["pretrain_epochs"] if stage == "pretrain" else config["epochs"],
        save_step=config["save_step"], seed=config["seed"], device=config.device,
        show_progress=config["show_progress"], stage=stage, typed_output=config["typed_output"])


def _meta(config: Config, data: Dataset) -> dict:
    return {CONFIG_META_KEY: config.to_dict(), "dataset_path": str(Path(data.stats.get("path", "")).resolve())
            if data.stats.get("path") else None}


def _context_length(config: Config) -> int:
    """Tokens of the longest path either stage uses: [BOS] + 2H+1 + [EOS]."""
    hops = max(int(config["path_hop_length"]), int(config["path_sample_args"]["pretrain_hop_length"][1]))
    return 2 * hops + 3


# ---------------------------------------------------------------------------------- stages
def pretrain_stage(config: Config, data: Dataset, ckpt_dir: Path, result) -> None:
    """Sample KG walks, train a fresh model on them, checkpoint into ``ckpt_dir``."""
    vocab = Vocabulary.from_graph(data.graph, data.name)
    args = corpus_args_from_config(config, "pretrain")
    args["include_users"] = bool(config["path_sample_args"]["pretrain_include_users"])
    tokens = build_corpus(data, vocab, stage="pretrain", **args)
    cap = config["path_sample_args"]["pretrain_max_paths"]
    if cap is not None and tokens.shape[0] > int(cap):
        keep = np.random.default_rng(config["seed"]).choice(tokens.shape[0], int(cap), replace=False)
        tokens = tokens[np.sort(keep)]
    logger.info("pretrain corpus: %d paths of up to %d tokens", tokens.shape[0], tokens.shape[1])
    model = KGGLM(model_config_for(config, vocab, _context_length(config)), torch.from_numpy(vocab.token_types()))
    logger.info("model: %.2fM parameters", model.num_parameters() / 1e6)
    tr = train(model, tokens, train_config_for(config, "pretrain"), checkpoint_dir=ckpt_dir, vocab=vocab,
               extra_meta=_meta(config, data), resume=config["resume"])
    result.checkpoint = str(tr.last_checkpoint)
    result.files["checkpoint"] = result.checkpoint
    result.train_stats = _train_stats(tr, tokens.shape[0])
    logger.info("pretrained checkpoint: %s (final loss %.4f)", result.checkpoint, tr.last_loss)


def finetune_stage(config: Config, data: Dataset, pre_model_path, run_dir: Path, result) -> None:
    """Fine-tune from ``pre_model_path`` on user paths with validation early stopping, then test."""
    vocab = Vocabulary.from_graph(data.graph, data.name)
    tokens = build_corpus(data, vocab, stage="finetune", **corpus_args_from_config(config, "finetune"))
    logger.info("finetune corpus: %d user paths", tokens.shape[0])
    model, _ = ckpt.load_pretrained_for_finetune(pre_model_path, vocab, model_config_for(config, vocab, tokens.shape[1]),
                                                 device=config.device)

    def evaluate_fn(m: KGGLM) -> tuple[float, dict]:
        metrics, _ = evaluate_split(m, data, vocab, config, "valid")
        return metrics["score"], metrics

    tr = train(model, tokens, train_config_for(config, "finetune"), checkpoint_dir=run_dir / "checkpoint",
               vocab=vocab, extra_meta=_meta(config, data), evaluate_fn=evaluate_fn,
               eval_step=config["eval_step"], stopping_step=config["stopping_step"], resume=config["resume"])
    best = tr.best_checkpoint or tr.last_checkpoint
    ckpt.load_weights(model, best)
    result.checkpoint = str(best)
    result.files["checkpoint"] = result.checkpoint
    result.best_valid_score = tr.best_score
    result.best_valid_result = tr.best_metrics
    result.history = tr.history
    result.train_stats = _train_stats(tr, tokens.shape[0])
    test, recs = evaluate_split(model, data, vocab, config, "test", export_k=_export_k(config))
    result.test_result = test
    if config["export_recommendations"]:
        path = write_recommendations(recs, data, vocab, run_dir / RECOMMENDATIONS_FILE)
        result.files["recommendations"] = str(path)
    result.examples = explained(recs, data, vocab, limit=config["show_examples"], k=min(5, max(config["topk"])))


def _train_stats(tr, n_paths: int) -> dict:
    return {"steps": tr.step, "epochs": tr.epochs_completed, "last_loss": tr.last_loss, "corpus_paths": n_paths,
            "paths_per_second": round(tr.paths_per_second, 1), "stopped_early": tr.stopped_early}


def _export_k(config: Config) -> int:
    ppu = config["path_generation_args"]["paths_per_user"] or 0
    return max(max(config["topk"]), int(config["export_topk"] or 0), int(ppu))


def evaluate_split(model: KGGLM, data: Dataset, vocab: Vocabulary, config: Config, split: str,
                   export_k: int | None = None) -> tuple[dict, Recommendations]:
    """Decode paths for every user with items in ``split``; metrics (with ``score`` = valid_metric)
    and the recommendations (``export_k`` items per user, metrics use the first max(topk))."""
    ks = sorted(set(config["topk"]))
    users = users_with_items(data, split)
    recs = _decode(model, data, vocab, config, users, split, max(ks[-1], export_k or 0),
                   show_progress=config["show_progress"])
    metrics = evaluate_topk(recs.items[:, :ks[-1]], users, data, split, ks, config["metrics"])
    metrics.update(path_quality(recs, data, vocab))
    metrics["n_users"] = int(len(users))
    metrics["score"] = metric_value(metrics, config["valid_metric"])
    logger.info("%s: %s", split, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return metrics, recs


def _decode(model: KGGLM, data: Dataset, vocab: Vocabulary, config: Config, users: np.ndarray, split: str,
            topk: int, show_progress: bool = False) -> Recommendations:
    """Constrained beam search for ``users`` with the config's ``path_generation_args``."""
    gen = dict(config["path_generation_args"])
    gen.pop("paths_per_user", None)  # already folded into topk by the callers
    return recommend(model, data, users, vocab=vocab, split=split, topk=topk, hop_length=config["path_hop_length"],
                     batch_size=config["eval_batch_size"], show_progress=show_progress, **gen)


def evaluate_pop(config: Config, data: Dataset, split: str) -> dict:
    metrics = PopBaseline(data).evaluate(split=split, topk=config["topk"], metrics=config["metrics"])
    metrics["score"] = metric_value(metrics, config["valid_metric"])
    logger.info("Pop %s: %s", split, {k: round(v, 4) for k, v in metrics.items()})
    return metrics


def explained(recs: Recommendations, data: Dataset, vocab: Vocabulary, limit: int | None = None,
              k: int | None = None) -> list[dict]:
    """Recommendations as plain dicts with readable explanations (the first ``limit`` users)."""
    out = []
    n = len(recs.users) if limit is None else min(limit, len(recs.users))
    for r in range(n):  # a handful of users for display/JSON: not a hot path
        u = int(recs.users[r])
        rows = []
        for rank in range(recs.items.shape[1] if k is None else min(k, recs.items.shape[1])):
            item = int(recs.items[r, rank])
            if item < 0:
                break
            toks = recs.paths[r, rank]
            rows.append({"rank": rank + 1, "item": str(data.item_tokens[item]), "item_name": str(data.item_names[item]),
                         "score": float(recs.scores[r, rank]), "path": path_strings(data, vocab, toks, readable=False),
                         "explanation": explain(data, vocab, toks)})
        out.append({"user": str(data.user_tokens[u]), "recommendations": rows})
    return out


# ---------------------------------------------------------------------------------- from a checkpoint
def resolve_model_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint to serve from ``path``: a checkpoint itself, a run directory (its best
    checkpoint), a fine-tuning checkpoint folder (``best/``), or the newest checkpoint inside."""
    p = Path(path)
    for candidate in (p, p / "checkpoint" / "best", p / "best"):
        if ckpt.is_checkpoint(candidate):
            return candidate
    if (p / "checkpoint").is_dir():
        return ckpt.resolve_checkpoint(p / "checkpoint")
    return ckpt.resolve_checkpoint(p)


def load_for_serving(path, *, data_path=None, cmd_args: Iterable[str] | Mapping | None = None):
    """``(model, vocab, data, config)`` rebuilt from a checkpoint directory alone."""
    where = resolve_model_checkpoint(path)
    info = ckpt.read_info(where)
    stored = dict(info["meta"].get(CONFIG_META_KEY) or {})
    if not stored:
        raise ckpt.CheckpointError(f"{where / ckpt.CONFIG_FILE}: no field meta.{CONFIG_META_KEY} (the run config); "
                                   "it was not written by kgglm train/run")
    model_name, dataset = stored.pop("model", "KGGLM"), stored.pop("dataset")
    stored.pop("preset", None)
    dataset_path = info["meta"].get("dataset_path")
    if data_path:
        stored["data_path"] = str(data_path)
    elif dataset_path and Path(dataset_path).is_dir():
        stored["data_path"] = str(Path(dataset_path).parent)  # the folder that holds DATASET/
    config = Config(model_name, dataset, config_dict=stored, cmd_args=cmd_args)
    data = load_dataset_for(config)
    model, vocab, _ = ckpt.load_checkpoint(where, device=config.device)
    try:
        vocab.check_dataset(data)
    except ValueError as exc:
        raise ckpt.CheckpointError(f"{where}: the dataset changed since training: {exc}") from None
    logger.info("loaded %s (dataset %s)", where, dataset)
    return model, vocab, data, config


def evaluate_checkpoint(path, split: str = "test", *, data_path=None, cmd_args=None) -> dict:
    """Metrics of a fine-tuned checkpoint on ``split`` (as in the run that trained it)."""
    model, vocab, data, config = load_for_serving(path, data_path=data_path, cmd_args=cmd_args)
    metrics, _ = evaluate_split(model, data, vocab, config, split)
    return metrics


def recommend_from_checkpoint(path, user_ids: Iterable[str], k: int = 10, *, data_path=None,
                              cmd_args=None) -> list[dict]:
    """Top-``k`` unseen items (not in train or valid) with explanation paths for original user ids."""
    model, vocab, data, config = load_for_serving(path, data_path=data_path, cmd_args=cmd_args)
    try:
        users = data.user_index(np.array([str(u) for u in user_ids], dtype=object))
    except KeyError as exc:
        raise ConfigError(f"{exc.args[0]} in dataset {data.name} (ids are the {config['USER_ID_FIELD']} values "
                          f"of its .inter file, e.g. {str(data.user_tokens[0])!r})") from None
    recs = _decode(model, data, vocab, config, users, "test", int(k))
    return explained(recs, data, vocab)
