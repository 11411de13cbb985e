"""Training corpora as token arrays, and paths written in original dataset tokens for inspection.

``build_corpus`` samples the paths of a training stage and encodes them with the vocabulary:
``pretrain`` gives random KG walks (:func:`sample_pretrain_paths`), ``finetune`` user paths
(:func:`sample_user_paths`). The result is one int64 array ``[P, 2H+3]``: ``[BOS] n0 r0 n1 ...
[EOS]`` padded with ``[PAD]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kgglm.paths.sampling import PathBatch, sample_pretrain_paths, sample_user_paths
from kgglm.paths.vocab import Vocabulary

STAGES = ("pretrain", "finetune")


def sample_stage_paths(dataset, *, stage: str, **path_args) -> PathBatch:
    """The paths of one training stage (``path_args`` go to the stage's sampler)."""
    if stage == "pretrain":
        return sample_pretrain_paths(dataset.graph, **path_args)
    if stage == "finetune":
        return sample_user_paths(dataset.graph, dataset.splits["train"], **path_args)
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")


def build_corpus(dataset, vocab: Vocabulary, *, stage: str, **path_args) -> np.ndarray:
    """Token corpus ``[P, T]`` (int64, padded with [PAD]) of the stage's sampled paths.

    ``path_args``: for ``pretrain`` ``paths_per_node``, ``hop_range``, ``include_users``, ``seed``;
    for ``finetune`` ``max_paths_per_user``, ``hop_length``, ``collaborative``, ``seed``.
    """
    vocab.check_dataset(dataset)
    return sample_stage_paths(dataset, stage=stage, **path_args).tokens(vocab)


def corpus_args_from_config(config: Mapping, stage: str) -> dict:
    """Sampler arguments from hopwise/RecBole-style config keys.

    Reads ``path_sample_args`` (``pretrain_paths``, ``pretrain_hop_length``, ``collaborative_path``),
    ``path_hop_length``, ``MAX_PATHS_PER_USER`` and ``seed``; missing keys keep sampler defaults.
    """
    psa = dict(config.get("path_sample_args") or {})
    args: dict = {}
    if "seed" in config:
        args["seed"] = int(config["seed"])
    if stage == "pretrain":
        if "pretrain_paths" in psa:
            args["paths_per_node"] = int(psa["pretrain_paths"])
        if "pretrain_hop_length" in psa:
            hop = psa["pretrain_hop_length"]
            if isinstance(hop, str):  # "(3,3)" or "3,5" as written in YAML or on a command line
                hop = [int(x) for x in hop.strip("()[] ").split(",")]
            hop = [int(hop)] * 2 if np.isscalar(hop) else [int(x) for x in hop]
            args["hop_range"] = (hop[0], hop[-1])
    elif stage == "finetune":
        if "MAX_PATHS_PER_USER" in config:
            args["max_paths_per_user"] = int(config["MAX_PATHS_PER_USER"])
        if "path_hop_length" in config:
            args["hop_length"] = int(config["path_hop_length"])
        if "collaborative_path" in psa:
            args["collaborative"] = bool(psa["collaborative_path"])
    else:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return args


def path_lines(batch: PathBatch, dataset) -> list[str]:
    """One tab-separated line per path: node, relation, node, ... in original dataset tokens.

    Users and items are their dataset ids, entities their KG tokens, relations their names (the
    user-item relation is the dataset's ui_relation name). Padding is left out.
    """
    node_tok = np.asarray(dataset.node_tokens(), dtype=object)
    rel_tok = np.asarray(dataset.relation_tokens, dtype=object)
    p, h1 = batch.nodes.shape
    cells = np.empty((p, 2 * h1 - 1), dtype=object)
    cells[:, 0::2] = np.where(batch.nodes >= 0, node_tok[np.maximum(batch.nodes, 0)], None)
    cells[:, 1::2] = np.where(batch.relations >= 0, rel_tok[np.maximum(batch.relations, 0)], None)
    length = 2 * batch.hops + 1
    return ["\t".join(row[:n]) for row, n in zip(cells.tolist(), length.tolist())]


def write_paths_tsv(path: str | os.PathLike, batch: PathBatch, dataset, limit: int | None = None) -> int:
    """Write ``batch`` (its first ``limit`` paths) with :func:`path_lines`; returns paths written.

    Written to a temporary name first, then moved into place.
    """
    if limit is not None:
        batch = batch[: max(int(limit), 0)]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    lines = path_lines(batch, dataset)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
        if lines:
            f.write("\n")
    os.replace(tmp, path)
    return len(lines)
