"""Checkpoint directories: safe to load, atomic to write.

A checkpoint is a directory holding

    config.json          {"format", "version", "model": ModelConfig, "training": TrainConfig,
                          "meta": {dataset, vocabulary sizes, stage, step, created, ...}}
    model.safetensors    the weights (the output layer is tied to the token embedding and is not
                         a separate tensor, so every tensor is stored once)
    vocab.json           the Vocabulary (see kgglm.paths.vocab)
    training_state.pt    optional, for resuming: optimizer state, step, RNG states; only tensors and
                         plain Python values, read with ``torch.load(weights_only=True)``

It is written into a temporary sibling directory and renamed into place, so an interrupted save
never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import VOCAB_FILE, Vocabulary

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
FORMAT = "kgglm-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, broken, or does not fit what it is loaded for."""


def save_checkpoint(directory: str | os.PathLike, model: KGGLM, vocab: Vocabulary, *,
                    train_config: dict | None = None, meta: dict | None = None,
                    training_state: dict | None = None) -> Path:
    """Write a checkpoint directory atomically (replacing an existing one); return its path."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    if model.config.vocab_size != vocab.size:
        raise CheckpointError(f"model vocab_size {model.config.vocab_size} != vocabulary size {vocab.size}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        info = {
            "format": FORMAT,
            "version": VERSION,
            "model": model.config.to_dict(),
            "training": dict(train_config or {}),
            "meta": {
                "dataset": vocab.dataset,
                "n_users": vocab.n_users, "n_items": vocab.n_items,
                "n_entities": vocab.n_entities, "n_relations": vocab.n_relations,
                "vocab_size": vocab.size,
                "created": time.time(),
                "created_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(meta or {}),
            },
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(info, indent=2, default=_json_default))
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        vocab.save(tmp)
        if training_state is not None:
            torch.save(training_state, tmp / STATE_FILE)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first, then removed."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def is_checkpoint(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def read_info(path: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a checkpoint directory (validated)."""
    file = Path(path) / CONFIG_FILE
    try:
        info = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{file}: not found (is {path} a checkpoint directory?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}, line {e.lineno}: invalid JSON ({e.msg})") from None
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{file}: field 'format' is {info.get('format')!r}, expected {FORMAT!r}")
    for key in ("model", "meta"):
        if not isinstance(info.get(key), dict):
            raise CheckpointError(f"{file}: field {key!r} missing or not an object")
    return info


def resolve_checkpoint(path: str | os.PathLike, *, require_state: bool = False) -> Path:
    """A checkpoint directory itself, or the newest checkpoint directly inside ``path``.

    Newest = latest ``meta.created`` (ties broken by ``meta.step``). With ``require_state`` only
    checkpoints that can be resumed (with a training state) are considered.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path {p} does not exist")
    if is_checkpoint(p) and (not require_state or (p / STATE_FILE).is_file()):
        return p
    candidates = []
    for child in p.iterdir() if p.is_dir() else []:
        if child.name.startswith(".") or not is_checkpoint(child):
            continue
        if require_state and not (child / STATE_FILE).is_file():
            continue
        meta = read_info(child)["meta"]
        candidates.append((float(meta.get("created", 0.0)), int(meta.get("step", 0)), child))
    if not candidates:
        what = "resumable checkpoint (with training_state.pt)" if require_state else "checkpoint"
        raise CheckpointError(f"no {what} found at {p} (expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                              f"in it or in one of its sub-directories)")
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


def load_weights(model: KGGLM, path: str | os.PathLike) -> None:
    """Load ``model.safetensors`` from checkpoint ``path`` into ``model`` (strict)."""
    file = Path(path) / WEIGHTS_FILE
    state = load_file(str(file), device=str(model.wte.weight.device))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{file}: tensors do not match the model (missing {missing}, unexpected {unexpected})")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{file}: tensor {k!r} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu"
                    ) -> tuple[KGGLM, Vocabulary, dict]:
    """Load ``(model, vocab, meta)`` from a checkpoint (or the newest in a directory of them).

    ``meta`` is the checkpoint's metadata plus ``model_config``, ``train_config`` and ``path``.
    The model is returned in eval mode.
    """
    ckpt = resolve_checkpoint(path)
    info = read_info(ckpt)
    try:
        vocab = Vocabulary.load(ckpt)
    except (FileNotFoundError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{ckpt / VOCAB_FILE}: cannot read vocabulary ({e})") from None
    try:
        config = ModelConfig.from_dict(info["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt / CONFIG_FILE}: field 'model' is invalid ({e})") from None
    if config.vocab_size != vocab.size:
        raise CheckpointError(f"{ckpt}: model vocab_size {config.vocab_size} != vocabulary size {vocab.size}")
    model = KGGLM(config, torch.from_numpy(vocab.token_types())).to(device)
    load_weights(model, ckpt)
    model.eval()
    meta = dict(info["meta"], model_config=info["model"], train_config=info.get("training", {}), path=str(ckpt))
    return model, vocab, meta


def load_training_state(path: str | os.PathLike) -> dict:
    """The resumable training state of a checkpoint (safe load: tensors and plain values only)."""
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: not found; this checkpoint cannot be resumed")
    return torch.load(file, map_location="cpu", weights_only=True)


def load_pretrained_for_finetune(path: str | os.PathLike, vocab: Vocabulary, model_config: ModelConfig,
                                 *, device: str | torch.device = "cpu") -> tuple[KGGLM, dict]:
    """Load a pre-trained model to fine-tune with ``vocab`` and ``model_config``.

    The checkpoint must come from the same dataset, with the same vocabulary and model size;
    otherwise a :class:`CheckpointError` says what differs. Training-only settings (dropout) are
    taken from ``model_config``. Returns ``(model, meta)`` with the model in train mode.
    """
    if not str(path):
        raise CheckpointError("train_stage 'finetune' needs pre_model_path (a pretrain checkpoint directory)")
    ckpt = resolve_checkpoint(path)
    info = read_info(ckpt)
    saved_vocab = Vocabulary.load(ckpt)
    where = f"pre_model_path {ckpt}"
    if saved_vocab.dataset != vocab.dataset:
        raise CheckpointError(f"{where} was pre-trained on dataset {saved_vocab.dataset!r}, "
                              f"but fine-tuning uses {vocab.dataset!r}")
    sizes = ("n_users", "n_items", "n_entities", "n_relations")
    diff = [f"{k} {getattr(saved_vocab, k)} != {getattr(vocab, k)}" for k in sizes
            if getattr(saved_vocab, k) != getattr(vocab, k)]
    if diff:
        raise CheckpointError(f"{where} has a different vocabulary (checkpoint vs now): {', '.join(diff)}")
    saved = ModelConfig.from_dict(info["model"])
    keys = ("embedding_size", "num_layers", "num_heads", "use_kg_token_types", "n_token_types", "vocab_size")
    diff = [f"{k} {getattr(saved, k)} != {getattr(model_config, k)}" for k in keys
            if getattr(saved, k) != getattr(model_config, k)]
    if diff:
        raise CheckpointError(f"{where} has a different model size (checkpoint vs config): {', '.join(diff)}")
    if saved.n_positions < model_config.n_positions:
        raise CheckpointError(f"{where} was trained with n_positions={saved.n_positions}, fine-tuning needs "
                              f"{model_config.n_positions} (longer paths than pre-training)")
    config = ModelConfig.from_dict({**saved.to_dict(), "dropout": model_config.dropout})
    model = KGGLM(config, torch.from_numpy(vocab.token_types())).to(device)
    load_weights(model, ckpt)
    model.train()
    meta = dict(info["meta"], model_config=info["model"], train_config=info.get("training", {}), path=str(ckpt))
    logger.info("fine-tuning from %s (step %s)", ckpt, meta.get("step"))
    return model, meta
