"""The one model builder of both tasks: a dataset's vocabulary, a fresh KGGLM, or a pre-trained one.

Every stage that needs a model (recommendation pre-training and fine-tuning, knowledge-completion
pre-training and fine-tuning, the training benchmark) builds it here, in two steps because the
context length comes from the training corpus, which needs the vocabulary first::

    builder = ModelBuilder.for_dataset(data, settings.model)  # the vocabulary, the architecture
    tokens = stage_corpus(data, builder.vocab, sampling, "finetune")
    model = builder.fresh(n_positions=tokens.shape[1])       # or builder.pretrained(path, ...)

``settings.model`` is the resolved model section (:func:`kgglm.settings.resolve`), a
:class:`~kgglm.model.gpt.ModelConfig` whose ``vocab_size`` the builder sets for the dataset.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch

from kgglm.data.dataset import Dataset
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import Vocabulary
from kgglm.train import checkpoint as ckpt


@dataclass(frozen=True)
class ModelBuilder:
    """Builds KGGLM models for one dataset's vocabulary with one architecture (``settings``: a
    :class:`ModelConfig` whose ``n_positions`` each build replaces)."""

    vocab: Vocabulary
    settings: ModelConfig

    @classmethod
    def for_dataset(cls, data: Dataset, model: ModelConfig) -> "ModelBuilder":
        """The builder for ``data``'s collaborative graph (users, items, entities, relations) with the
        architecture ``model`` (the resolved model section; its ``vocab_size`` becomes the graph's)."""
        vocab = Vocabulary.from_graph(data.graph, data.name)
        features = len(np.unique(data.item_features()[1])) if model.history_expert_kg else 0
        return cls(vocab, dataclasses.replace(model, vocab_size=vocab.size, n_positions=1,
                                              history_expert_features=features))

    def model_config(self, n_positions: int, *, history: bool = False) -> ModelConfig:
        """The architecture for paths of ``n_positions`` tokens. ``history``: a history-conditioned
        model with a hidden-items loss gets its own output layer over the items (fine-tuning only)."""
        config = dataclasses.replace(self.settings, n_positions=int(n_positions))
        if not history:  # the history expert reads users' items: not a pre-training part
            config = dataclasses.replace(config, history_expert_dim=0)
        elif (config.user_history and config.history_loss_weight > 0) or config.history_expert_dim:
            config = dataclasses.replace(config, history_items=self.vocab.n_items)
        return config

    def fresh(self, n_positions: int, *, history: bool = False,
              device: str | torch.device | None = None) -> KGGLM:
        """A randomly initialised model (from the torch generator's current state)."""
        model = KGGLM(self.model_config(n_positions, history=history), torch.from_numpy(self.vocab.token_types()))
        return model if device is None else model.to(device)

    def pretrained(self, path: str | os.PathLike, n_positions: int, *, history: bool = False,
                   device: str | torch.device = "cpu") -> tuple[KGGLM, dict]:
        """``(model, meta)``: the checkpoint at ``path`` to fine-tune, checked against this
        vocabulary and architecture (:func:`kgglm.train.checkpoint.load_pretrained_for_finetune`)."""
        return ckpt.load_pretrained_for_finetune(path, self.vocab, self.model_config(n_positions, history=history),
                                                 device=device)
