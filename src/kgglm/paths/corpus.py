"""Training corpora as token arrays, and paths written in original dataset tokens for inspection.

``build_corpus`` samples the paths of a training stage and encodes them with the vocabulary:
``pretrain`` gives random KG walks (:func:`sample_pretrain_paths`), ``finetune`` user paths
(:func:`sample_user_paths`). The result is one int64 array ``[P, 2H+3]``: ``[BOS] n0 r0 n1 ...
[EOS]`` padded with ``[PAD]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kgglm import durable
from kgglm.paths.sampling import PathBatch, sample_pretrain_paths, sample_user_paths
from kgglm.paths.vocab import Vocabulary

STAGES = ("pretrain", "finetune")


@dataclass(frozen=True)
class PathSampleConfig:
    """How the training corpora are sampled; field names are the config's key names (the
    ``path_sample_args`` sub-keys, ``path_hop_length``, ``MAX_PATHS_PER_USER``, ``seed``).

    Resolved once by :func:`kgglm.settings.resolve`; :meth:`sampler_args` gives one stage's sampler
    arguments.
    """

    seed: int
    path_hop_length: int
    MAX_PATHS_PER_USER: int
    pretrain_paths: int
    pretrain_hop_length: tuple[int, int]
    pretrain_max_paths: int | None
    pretrain_include_users: bool
    collaborative_path: bool
    ui_share: float | None
    last_hop: str

    def __post_init__(self) -> None:
        lo, hi = self.pretrain_hop_length
        if not 1 <= lo <= hi:
            raise ValueError(f"path_sample_args.pretrain_hop_length must be [min, max] with 1 <= min <= max, "
                             f"got {list(self.pretrain_hop_length)}")
        if self.pretrain_paths < 1:
            raise ValueError(f"path_sample_args.pretrain_paths must be >= 1, got {self.pretrain_paths}")
        if self.pretrain_max_paths is not None and self.pretrain_max_paths < 1:
            raise ValueError(f"path_sample_args.pretrain_max_paths must be null or >= 1, got {self.pretrain_max_paths}")
        if self.MAX_PATHS_PER_USER < 1:
            raise ValueError(f"MAX_PATHS_PER_USER must be >= 1, got {self.MAX_PATHS_PER_USER}")

    def sampler_args(self, stage: str) -> dict:
        """Keyword arguments of the stage's sampler (:func:`sample_pretrain_paths` or
        :func:`sample_user_paths`)."""
        if stage == "pretrain":
            return dict(paths_per_node=self.pretrain_paths, hop_range=self.pretrain_hop_length,
                        include_users=self.pretrain_include_users, seed=self.seed, ui_share=self.ui_share)
        if stage == "finetune":
            return dict(max_paths_per_user=self.MAX_PATHS_PER_USER, hop_length=self.path_hop_length,
                        collaborative=self.collaborative_path, seed=self.seed, ui_share=self.ui_share,
                        last_hop=self.last_hop)
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")

    @property
    def context_length(self) -> int:
        """Tokens of the longest path either stage uses: [BOS] + 2H+1 + [EOS]."""
        return 2 * max(self.path_hop_length, self.pretrain_hop_length[1]) + 3


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


def stage_paths(dataset, sampling: PathSampleConfig, stage: str) -> PathBatch:
    """The paths of a training stage as the run config asks for them: the one corpus that training
    (:func:`stage_corpus`) and ``kgglm paths`` use. Pre-training walks are capped to a seeded random
    subset of ``pretrain_max_paths`` (kept in sampling order)."""
    batch = sample_stage_paths(dataset, stage=stage, **sampling.sampler_args(stage))
    cap = sampling.pretrain_max_paths
    if stage == "pretrain" and cap is not None and len(batch) > cap:
        keep = np.random.default_rng(sampling.seed).choice(len(batch), cap, replace=False)
        batch = batch[np.sort(keep)]
    return batch


def stage_corpus(dataset, vocab: Vocabulary, sampling: PathSampleConfig, stage: str) -> np.ndarray:
    """The token corpus ``[P, T]`` of a training stage: :func:`stage_paths` encoded with ``vocab``."""
    vocab.check_dataset(dataset)
    return stage_paths(dataset, sampling, stage).tokens(vocab)


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

    Written durably (:mod:`kgglm.durable`): a temporary name first, then moved into place.
    """
    if limit is not None:
        batch = batch[: max(int(limit), 0)]
    path = Path(path)
    lines = path_lines(batch, dataset)
    with durable.open_atomic(path, "w") as f:
        f.write("\n".join(lines))
        if lines:
            f.write("\n")
    return len(lines)
