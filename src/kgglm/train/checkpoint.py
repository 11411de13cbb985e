"""Checkpoint directories: safe to load, atomic to write.

A checkpoint is a directory holding

    config.json          {"format", "version", "model": ModelConfig, "training": TrainConfig,
                          "meta": {dataset, vocabulary sizes, stage, step, created, ...}}
    model.safetensors    the weights (the output layer is tied to the token embedding and is not
                         a separate tensor, so every tensor is stored once)
    vocab.json           the Vocabulary (see kgglm.paths.vocab)
    training_state.json  optional, for resuming: the trainer's state (step, history, optimizer
    training_state.safetensors   settings ...) as JSON, its tensors (optimizer moments, RNG
                         states) in safetensors, referenced by name; nothing is ever unpickled

It is written into a temporary sibling directory, fsync-ed and swapped into place
(:mod:`kgglm.durable`), so an interrupted save never leaves a half-written checkpoint under the final
name and a replaced one (``best/``) is never absent. ``config.json`` is written last and
stamps ``meta.completed``: the time the checkpoint became complete, which orders checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load_file, save_file

from kgglm import durable
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import VOCAB_FILE, Vocabulary

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.json"
STATE_TENSORS_FILE = "training_state.safetensors"
LEGACY_STATE_FILE = "training_state.pt"  # pickled by earlier kgglm versions; never loaded
_TENSOR = "__tensor__"  # {"__tensor__": name}: a tensor stored in STATE_TENSORS_FILE
_INT_KEYS = "__int_keys__"  # {"__int_keys__": [[k, v], ...]}: a dict with int keys (optimizer state)
_TUPLE = "__tuple__"  # {"__tuple__": [...]}: a tuple (AdamW's betas), so that state round-trips unchanged
FORMAT = "kgglm-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, broken, or does not fit what it is loaded for."""


def save_checkpoint(directory: str | os.PathLike, model: KGGLM, vocab: Vocabulary, *,
                    train_config: dict | None = None, meta: dict | None = None,
                    training_state: dict | None = None, tag: str = "") -> Path:
    """Write a checkpoint directory durably (replacing an existing one); return its path.

    It is filled in a temporary sibling ``.NAME.tmp-TAG-XXXXXXXX`` (see
    :func:`kgglm.durable.atomic_dir`; the trainer's ``tag`` is its run id, so that ``--resume``
    finds that run's leftovers), fsync-ed, and swapped into place: an existing checkpoint of that
    name (``best/``) stays complete until the new one has replaced it.
    """
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    if model.config.vocab_size != vocab.size:
        raise CheckpointError(f"model vocab_size {model.config.vocab_size} != vocabulary size {vocab.size}")
    with durable.atomic_dir(final, tag=tag) as tmp:
        full_meta = {
            "dataset": vocab.dataset,
            "n_users": vocab.n_users, "n_items": vocab.n_items,
            "n_entities": vocab.n_entities, "n_relations": vocab.n_relations,
            "vocab_size": vocab.size,
            "created": time.time(),
            "created_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(meta or {}),
        }
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        vocab.save(tmp)
        if training_state is not None:
            _write_state(tmp, training_state)
        # config.json last: its "completed" time is when every other file was in place
        info = {"format": FORMAT, "version": VERSION, "model": model.config.to_dict(),
                "training": dict(train_config or {}), "meta": {**full_meta, "completed": time.time()}}
        (tmp / CONFIG_FILE).write_text(json.dumps(info, indent=2, default=_json_default))
    return final


def _write_state(directory: Path, state: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode_state(state, tensors, "training_state")
    save_file(tensors, str(directory / STATE_TENSORS_FILE), metadata={"format": FORMAT})
    (directory / STATE_FILE).write_text(json.dumps(encoded))


def _encode_state(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """A JSON-able copy of ``value``; its tensors move to ``tensors`` and are referenced by name.

    Only tensors and plain values are accepted, so that loading needs no unpickler; floats are
    written with ``repr`` precision, so a resumed run continues bit for bit.
    """
    if torch.is_tensor(value):
        name = f"t{len(tensors)}"
        # a copy: safetensors refuses tensors that share storage, and the caller keeps training
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: name}
    if isinstance(value, dict):
        items = [(k, _encode_state(v, tensors, f"{where}.{k}")) for k, v in value.items()]
        if all(isinstance(k, str) for k in value):
            return dict(items)
        if all(isinstance(k, int) and not isinstance(k, bool) for k in value):  # optimizer state: param index
            return {_INT_KEYS: [list(kv) for kv in items]}
        raise TypeError(f"{where}: dict keys must all be str or all int")
    if isinstance(value, (list, tuple)):
        items = [_encode_state(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
        return {_TUPLE: items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: cannot store a {type(value).__name__} (tensors and plain values only)")


def _decode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            return tensors[value[_TENSOR]]
        if set(value) == {_INT_KEYS}:
            return {int(k): _decode_state(v, tensors) for k, v in value[_INT_KEYS]}
        if set(value) == {_TUPLE}:
            return tuple(_decode_state(v, tensors) for v in value[_TUPLE])
        return {k: _decode_state(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_state(v, tensors) for v in value]
    return value


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


def is_resumable(path: str | os.PathLike) -> bool:
    """A checkpoint with a training state (the trainer's ``step-N`` checkpoints)."""
    p = Path(path)
    return is_checkpoint(p) and (p / STATE_FILE).is_file() and (p / STATE_TENSORS_FILE).is_file()


def newest_checkpoint(directory: str | os.PathLike, *, require_state: bool = False) -> Path | None:
    """The newest checkpoint directly inside ``directory``, or None when it holds none.

    Newest = the most recently *completed* training checkpoint (latest ``meta.completed``, ties
    broken by ``meta.step``): when several runs share a folder (``KGGLM-pretrain/``) that is the
    last run's, whatever its step count. Weights-only checkpoints (``best/``, a copy of an earlier
    state kept for evaluation) are chosen only when there is no resumable one.
    """
    candidates = []
    for child in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else []:
        if child.name.startswith(".") or not is_checkpoint(child):
            continue
        resumable = is_resumable(child)
        if require_state and not resumable:
            continue
        meta = read_info(child)["meta"]
        completed = float(meta.get("completed", meta.get("created", 0.0)))
        candidates.append(((resumable, completed, int(meta.get("step", 0))), child))
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def resolve_checkpoint(path: str | os.PathLike, *, require_state: bool = False) -> Path:
    """A checkpoint directory itself, or the newest checkpoint directly inside ``path``
    (see :func:`newest_checkpoint`). With ``require_state`` only resumable checkpoints count."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path {p} does not exist")
    itself = is_resumable(p) if require_state else is_checkpoint(p)
    if itself:
        return p
    found = newest_checkpoint(p, require_state=require_state)
    if found is None:
        what = f"resumable checkpoint (with {STATE_FILE})" if require_state else "checkpoint"
        raise CheckpointError(f"no {what} found at {p} (expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                              f"in it or in one of its sub-directories)")
    return found


_FOREIGN_MAGIC = ((b"PK\x03\x04", "a zip archive (a torch.save file?)"), (b"\x80", "a pickle"),
                  (b"\x89HDF", "an HDF5 file"))


def read_safetensors(file: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors ``file``; a :class:`CheckpointError` naming the file and what it
    expected when the file is missing, empty, truncated or not safetensors at all (never unpickled)."""
    file = Path(file)
    shown = f"{file} (a link to {os.path.realpath(file)})" if file.is_symlink() else str(file)
    expected = "expected a safetensors file: an 8-byte header length, a JSON header, then the tensors"
    try:
        return load_file(str(file), device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"{shown}: not found") from None
    except (OSError, safetensors.SafetensorError, ValueError, RuntimeError) as e:
        try:
            with open(file, "rb") as f:
                head, size = f.read(8), os.fstat(f.fileno()).st_size
        except OSError:
            head, size = b"", -1
        what = next((name for magic, name in _FOREIGN_MAGIC if head.startswith(magic)), None)
        if size == 0:
            problem = "empty file"
        elif what is not None:
            problem = f"{what}, not safetensors; it is not loaded"
        else:
            problem = f"broken or truncated ({size:,} bytes: {e})"
        raise CheckpointError(f"{shown}: {problem}; {expected}") from None


def read_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` in checkpoint ``path`` (a :class:`CheckpointError` naming
    the file when it is broken)."""
    return read_safetensors(Path(path) / WEIGHTS_FILE, device)


def apply_weights(model: KGGLM, state: dict[str, torch.Tensor], where: str | os.PathLike,
                  may_miss: tuple[str, ...] = ()) -> None:
    """Copy ``state`` into ``model`` (strict but for ``may_miss``, tensors that keep their
    initialisation when absent), naming ``where`` when a tensor does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state) - set(may_miss))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{where}: tensors do not match the model (missing {missing}, unexpected {unexpected})")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{where}: tensor {k!r} has shape {tuple(v.shape)}, "
                                  f"model expects {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].device, own[k].dtype) for k, v in state.items()}, strict=not may_miss)


def load_weights(model: KGGLM, path: str | os.PathLike) -> None:
    """Load ``model.safetensors`` from checkpoint ``path`` into ``model`` (strict)."""
    apply_weights(model, read_weights(path, model.wte.weight.device), Path(path) / WEIGHTS_FILE)


def read_vocab(path: str | os.PathLike) -> Vocabulary:
    """The validated ``vocab.json`` of checkpoint ``path`` (a :class:`CheckpointError` naming the file)."""
    try:
        return Vocabulary.load(path)
    except (OSError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        file = str(Path(path) / VOCAB_FILE)
        raise CheckpointError(str(e) if str(e).startswith(file) else f"{file}: cannot read vocabulary ({e})") from None


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu"
                    ) -> tuple[KGGLM, Vocabulary, dict]:
    """Load ``(model, vocab, meta)`` from a checkpoint (or the newest in a directory of them).

    ``meta`` is the checkpoint's metadata plus ``model_config``, ``train_config`` and ``path``.
    The model is returned in eval mode.
    """
    ckpt = resolve_checkpoint(path)
    info = read_info(ckpt)
    vocab = read_vocab(ckpt)
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


def load_training_state(path: str | os.PathLike, fields: Mapping[str, tuple[type, tuple[str, ...]]] | None = None
                        ) -> dict:
    """The resumable training state of a checkpoint (JSON + safetensors: no unpickling); with
    ``fields`` (e.g. :data:`STATE_FIELDS`, the trainer's) a missing or mistyped field is named."""
    p = Path(path)
    file = p / STATE_FILE
    if not file.is_file():
        if (p / LEGACY_STATE_FILE).is_file():
            raise CheckpointError(f"{p / LEGACY_STATE_FILE}: a pickled training state from an older kgglm; it is "
                                  f"not loaded (unpickling can run code), so this checkpoint cannot be resumed")
        raise CheckpointError(f"{file}: not found; this checkpoint cannot be resumed")
    try:
        encoded = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}, line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(encoded, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(encoded).__name__}")
    check_state_fields(encoded, file, fields or {})
    tensors = read_safetensors(p / STATE_TENSORS_FILE)
    try:
        return _decode_state(encoded, tensors)
    except KeyError as e:
        raise CheckpointError(f"{file}: refers to tensor {e.args[0]!r}, missing from {STATE_TENSORS_FILE}") from None


# The trainer's state (kgglm.train.trainer.Trainer.state_dict): field -> (JSON type, required sub-fields).
STATE_FIELDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "corpus": (dict, ("fingerprint", "train_batch_size", "total_steps")),
    "optimizer": (dict, ("state", "param_groups")),
    "rng": (dict, ("cpu",)),
    "progress": (dict, ("step",)),
}


def check_state_fields(encoded: dict, file: str | os.PathLike,
                       fields: Mapping[str, tuple[type, tuple[str, ...]]] = STATE_FIELDS) -> None:
    """Raise a :class:`CheckpointError` naming the first missing or mistyped field of a training state."""
    for key, (kind, subfields) in fields.items():
        value = encoded.get(key)
        if not isinstance(value, kind):
            got = "missing" if key not in encoded else f"a {type(value).__name__}"
            raise CheckpointError(f"{file}: field {key!r} is {got}, expected an object with {', '.join(subfields)}")
        missing = [f for f in subfields if f not in value]
        if missing:
            raise CheckpointError(f"{file}: field {key!r} lacks {', '.join(repr(f) for f in missing)}")


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
    saved_vocab = read_vocab(ckpt)
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
    # training-only settings and the fine-tuning additions (the history layers and expert start fresh)
    finetune_keys = ("dropout", "user_history", "history_dropout", "history_loss_weight", "history_items",
                     "history_expert_dim", "history_expert_dropout")
    config = ModelConfig.from_dict({**saved.to_dict(), **{k: getattr(model_config, k) for k in finetune_keys}})
    model = KGGLM(config, torch.from_numpy(vocab.token_types())).to(device)
    fresh = tuple(k for k in model.state_dict() if k.startswith(("hproj.", "hhead.", "hout.", "expert.")))
    apply_weights(model, read_weights(ckpt, device), ckpt / WEIGHTS_FILE, may_miss=fresh)
    model.train()
    meta = dict(info["meta"], model_config=info["model"], train_config=info.get("training", {}), path=str(ckpt))
    logger.info("fine-tuning from %s (step %s)", ckpt, meta.get("step"))
    return model, meta
