"""The one model builder (kgglm.tasks.models): the vocabulary of a dataset, fresh and pre-trained models."""

from __future__ import annotations

import pytest
import torch

from kgglm.config import Config
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import Vocabulary
from kgglm.settings import resolve
from kgglm.synthetic.small import make_synthetic_dataset
from kgglm.tasks.models import ModelBuilder
from kgglm.train.checkpoint import CheckpointError, save_checkpoint

MODEL = {"embedding_size": 16, "num_heads": 2, "num_layers": 1, "dropout": 0.0}


@pytest.fixture(scope="module")
def data():
    return make_synthetic_dataset(n_items=30, n_clusters=3, entities_per_cluster=3)


def test_fresh_model_is_the_hand_built_one(data):
    builder = ModelBuilder.for_dataset(data, resolve(Config("KGGLM", "toy", config_dict=MODEL)).model)
    vocab = Vocabulary.from_graph(data.graph, data.name)
    assert (builder.vocab.size, builder.vocab.dataset) == (vocab.size, data.name)
    torch.manual_seed(3)
    built = builder.fresh(9)
    torch.manual_seed(3)
    by_hand = KGGLM(ModelConfig(vocab_size=vocab.size, n_positions=9, use_kg_token_types=True, **MODEL),
                    torch.from_numpy(vocab.token_types()))
    assert built.config == by_hand.config
    mine, theirs = built.state_dict(), by_hand.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_history_output_layer_only_when_asked_and_weighted(data):
    layer = {**MODEL, "user_history": True, "history_loss_weight": 0.5}
    builder = ModelBuilder.for_dataset(data, resolve(Config("KGGLM", "toy", config_dict=layer)).model)
    assert builder.model_config(9).history_items == 0  # pre-training: no history expert's own layer
    assert builder.model_config(9, history=True).history_items == data.graph.n_items
    unweighted = ModelBuilder.for_dataset(
        data, resolve(Config("KGGLM", "toy", config_dict={**layer, "history_loss_weight": 0})).model)
    assert unweighted.model_config(9, history=True).history_items == 0


def test_pretrained_loads_the_weights_and_checks_the_size(data, tmp_path):
    builder = ModelBuilder.for_dataset(data, resolve(Config("KGGLM", "toy", config_dict=MODEL)).model)
    model = builder.fresh(9)
    where = save_checkpoint(tmp_path / "pre", model, builder.vocab)
    loaded, meta = builder.pretrained(where, 7)
    assert meta["path"] == str(where) and loaded.config.n_positions == 9  # its own context, long enough
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    wider = ModelBuilder.for_dataset(
        data, resolve(Config("KGGLM", "toy", config_dict={**MODEL, "embedding_size": 32})).model)
    with pytest.raises(CheckpointError, match="embedding_size 16 != 32"):
        wider.pretrained(where, 9)
    with pytest.raises(CheckpointError, match="n_positions=9"):
        builder.pretrained(where, 11)
