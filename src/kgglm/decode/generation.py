"""Decoding settings as one frozen, validated object (transformers' ``GenerationConfig`` style).

A :class:`PathGenerationConfig` is resolved once from the run config (its ``path_generation_args``
and ``path_hop_length``; :func:`kgglm.settings.resolve`) and passed down to :func:`recommend` and the
beam search, so no caller unpacks decoding keys by hand and no default is written twice: the
defaults live in ``configs/overall.yaml`` only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

RANKINGS = ("logprob", "cumulative", "marginal")
EXPLANATIONS = ("best", "knowledge", "post")
LAST_HOP_NORMS = ("legal", "items")


@dataclass(frozen=True)
class PathGenerationConfig:
    """How paths are decoded; field names are the config's key names (see ``overall.yaml``)."""

    path_hop_length: int
    num_beams: int
    paths_per_user: int | None
    length_penalty: float
    do_sample: bool
    top_k: int
    top_p: float
    temperature: float
    ranking: str
    last_hop_norm: str
    explanation: str
    explanation_num_beams: int
    explanation_alpha: float
    explanation_candidates: int
    knowledge_only: bool
    avoid_relations: tuple[str, ...]
    history_weight: float = 0.0  # weight of the model's history expert in item scores (0: off)
    max_num_beams: int | None = None  # not a config key: cap on widening, default max(64 * num_beams, 1024)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"path_generation_args.{name} must be {expected}, got {getattr(self, name)!r}")

        if self.path_hop_length < 1 or self.path_hop_length % 2 == 0:
            raise ValueError(f"path_hop_length must be odd and positive (a user path ends on an item), "
                             f"got {self.path_hop_length}")
        if self.num_beams < 1:
            raise bad("num_beams", "a positive integer")
        if self.paths_per_user is not None and self.paths_per_user < 1:
            raise bad("paths_per_user", "null or a positive integer")
        if self.top_k < 0:
            raise bad("top_k", ">= 0 (0 disables)")
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "in (0, 1]")
        if self.temperature <= 0:
            raise bad("temperature", "> 0")
        if self.ranking not in RANKINGS:
            raise bad("ranking", f"one of {RANKINGS}")
        if self.last_hop_norm not in LAST_HOP_NORMS:
            raise bad("last_hop_norm", f"one of {LAST_HOP_NORMS}")
        if self.explanation not in EXPLANATIONS:
            raise bad("explanation", f"one of {EXPLANATIONS}")
        if self.explanation_num_beams < 1:
            raise bad("explanation_num_beams", "a positive integer")
        if not 0.0 <= self.explanation_alpha <= 1.0:
            raise bad("explanation_alpha", "in [0, 1]")
        if self.explanation_candidates < 1:
            raise bad("explanation_candidates", "a positive integer")
        if not self.history_weight >= 0:
            raise bad("history_weight", ">= 0")
        if self.max_num_beams is not None and self.max_num_beams < self.num_beams:
            raise bad("max_num_beams", f">= num_beams ({self.num_beams})")

    def replace(self, **changes: Any) -> "PathGenerationConfig":
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def body_length(self) -> int:
        """Tokens of a complete path including the user: ``2 * path_hop_length + 1``."""
        return 2 * self.path_hop_length + 1
