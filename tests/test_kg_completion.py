"""Knowledge completion task: triple paths, the one-pass tail scorer, an end-to-end run on a synthetic
KG that must beat random, and PyKEEN's evaluator agreeing with ours on the same scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgglm.data.kg_split import load_kg_split
from kgglm.evaluate.kg_ranking import TailScorer, evaluate_tail_ranking
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import BOS, EOS, Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset
from kgglm.tasks.kg_completion import evaluate_model, run_kg_completion, triple_corpus
from kgglm.train.objectives import TailSetLoss

# a small model and quiet runs over the package defaults (which are the paper's sizes)
SMALL = {"num_layers": 2, "dropout": 0.0, "eval_batch_size": 256, "save_step": 1000, "show_progress": False}


@pytest.fixture(scope="module")
def split():
    return load_kg_split(make_synthetic_dataset(n_items=60, n_clusters=3, entities_per_cluster=4), seed=2024)


def test_triple_corpus_both_directions(split):
    vocab = Vocabulary.from_graph(split.dataset.graph, "synthetic")
    t = split.train[:3]
    c = triple_corpus(t, vocab)
    assert c.shape == (6, 5)
    assert (c[:, 0] == BOS).all() and (c[:, 4] == EOS).all()
    np.testing.assert_array_equal(c[:3, 1], vocab.node_token(t[:, 0]))
    np.testing.assert_array_equal(c[:3, 2], vocab.relation_token(t[:, 1]))
    np.testing.assert_array_equal(c[3:, 1], vocab.node_token(t[:, 2]))
    np.testing.assert_array_equal(c[3:, 3], vocab.node_token(t[:, 0]))


def test_tail_scorer_is_the_next_token_log_prob_over_candidates(split):
    vocab = Vocabulary.from_graph(split.dataset.graph, "synthetic")
    torch.manual_seed(0)
    model = KGGLM(ModelConfig(vocab_size=vocab.size, n_positions=5, embedding_size=16, num_heads=2, num_layers=1,
                              dropout=0.0, use_kg_token_types=True), torch.from_numpy(vocab.token_types()))
    heads, rels = split.test[:4, 0], split.test[:4, 1]
    scores = TailScorer(model, vocab)(heads, rels)
    prompt = torch.tensor([[BOS, int(vocab.node_token(h)), int(vocab.relation_token(r))] for h, r in zip(heads, rels)])
    logits, _ = model(prompt)
    lo = vocab.node_offset + vocab.n_users
    expected = torch.log_softmax(logits[:, -1, lo:], dim=-1)
    assert scores.shape == (4, vocab.n_items + vocab.n_entities)
    torch.testing.assert_close(scores, expected)


def test_tail_set_loss_is_the_summed_tail_log_likelihood_of_the_triple_paths(split):
    vocab = Vocabulary.from_graph(split.dataset.graph, "synthetic")
    torch.manual_seed(0)
    model = KGGLM(ModelConfig(vocab_size=vocab.size, n_positions=5, embedding_size=16, num_heads=2, num_layers=1,
                              dropout=0.0, use_kg_token_types=True), torch.from_numpy(vocab.token_types()))
    paths = triple_corpus(split.train, vocab)  # [BOS] h r t [EOS], both directions
    loss = TailSetLoss(paths, vocab)
    assert loss.n_triples == len(paths)
    # one row per distinct prompt, and every path's prompt is a row
    assert len(np.unique(loss.prompts, axis=0)) == len(loss.prompts) < len(paths)
    assert {tuple(p) for p in paths[:, :3].tolist()} == {tuple(p) for p in loss.prompts.tolist()}
    # independent computation: for a shuffled subset of rows, sum -log p(tail) over the paths whose
    # prompt is one of them, with the scorer used for ranking, divided by the number of rows
    rows = np.random.default_rng(1).permutation(len(loss.prompts))[:7]
    chosen = {tuple(p) for p in loss.prompts[rows].tolist()}
    mine = paths[[tuple(p) in chosen for p in paths[:, :3].tolist()]]
    heads, rels = vocab.token_node(mine[:, 1]), vocab.token_relation(mine[:, 2])
    scores = TailScorer(model, vocab)(heads, rels)
    log_p = scores[torch.arange(len(mine)), torch.from_numpy(mine[:, 3] - (vocab.node_offset + vocab.n_users))]
    expected = -log_p.sum() / len(rows)
    model.eval()
    got = loss(model, torch.from_numpy(loss.prompts[rows]))
    torch.testing.assert_close(got, expected.to(got.dtype), rtol=1e-5, atol=1e-5)
    got.backward()  # it trains the model: gradients reach the output embeddings
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", ["one_to_n", "paths"])
def test_end_to_end_finetuned_model_beats_random(split, tmp_path, loss):
    config = {"kg_finetune_loss": loss, "epochs": 30, "stopping_step": 5, "pretrain_epochs": 5, "warmup_steps": 10,
              "train_batch_size": 32,
              "learning_rate": 3e-3, "embedding_size": 64, "num_heads": 4, "path_sample_args": {"pretrain_paths": 5},
              **SMALL}
    result = run_kg_completion(config, split.dataset, run_dir=tmp_path, split=split)
    data = split.dataset
    rng = np.random.default_rng(0)

    def random_scores(h, r):
        return torch.from_numpy(rng.random((len(h), data.n_items + data.n_entities)))

    rand = evaluate_tail_ranking(random_scores, split.test, filter_triples=[split.train, split.valid],
                                 n_relations=data.n_relations, n_candidates=data.n_items + data.n_entities,
                                 candidate_offset=data.n_users, type_triples=split.train)
    test = result.finetuned["test"]
    assert test["mrr"] > 3 * rand["mrr"]
    assert test["hits@3"] > 0.5
    assert test["type_mrr"] > rand["type_mrr"]
    assert set(result.to_dict()) >= {"task", "split", "zero_shot", "finetuned", "pretrain", "finetune"}
    assert result.finetune["finetune_paths"] == 2 * len(split.train)
    assert result.finetune["finetune_objective"] == loss
    assert (result.finetune["finetune_rows"] < result.finetune["finetune_paths"]) == (loss == "one_to_n")
    # the best checkpoint was reloaded: re-evaluating it from disk gives the reported test metrics
    from kgglm.train import checkpoint as ckpt

    model, vocab, _ = ckpt.load_checkpoint(result.checkpoint)
    again = evaluate_model(model, vocab, split, "test")
    assert again["mrr"] == pytest.approx(test["mrr"])


def test_pykeen_evaluator_agrees_with_ours(split):
    kge = pytest.importorskip("kgglm.baselines.kge")
    if not kge.pykeen_available():
        pytest.skip("pykeen not installed")
    res = kge.train_kge("DistMult", split, embedding_dim=8, epochs=2, batch_size=64, seed=1)
    ours = kge.evaluate_kge(res, split, "test")
    theirs = res.pykeen_metrics["test"]
    assert 0 < ours["mrr"] < 1  # a partly trained model: ranks are not trivial
    for key in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key


def test_pre_model_path_must_come_from_the_same_kg_split(split, tmp_path):
    from kgglm.tasks.kg_completion import pretrain
    from kgglm.train.checkpoint import CheckpointError

    config = {**SMALL, "epochs": 1, "pretrain_epochs": 1, "embedding_size": 16, "num_heads": 2, "num_layers": 1,
              "learning_rate": 2e-3, "warmup_steps": 50, "train_batch_size": 256, "stopping_step": 2}
    pre = pretrain(split, config, tmp_path / "pre")
    res = run_kg_completion(config, split.dataset, run_dir=tmp_path / "run", split=split,
                            pre_model_path=pre.checkpoint)
    assert res.pretrain["loaded"] and "mrr" in res.finetuned["test"]
    other = load_kg_split(make_synthetic_dataset(n_items=60, n_clusters=3, entities_per_cluster=4), seed=1)
    with pytest.raises(CheckpointError, match="not pre-trained by task"):
        run_kg_completion(config, other.dataset, run_dir=tmp_path / "other", split=other,
                          pre_model_path=pre.checkpoint)


def test_kge_selection_on_valid_keeps_the_best_checked_weights(split):
    kge = pytest.importorskip("kgglm.baselines.kge")
    if not kge.pykeen_available():
        pytest.skip("pykeen not installed")
    # valid_every_s=0: a check after every epoch; a high learning rate makes valid MRR move around
    res = kge.train_kge("DistMult", split, embedding_dim=8, epochs=8, batch_size=64, seed=1, learning_rate=1.0,
                        select_on_valid=True, valid_every_s=0.0)
    assert [h["epoch"] for h in res.valid_history] == list(range(1, 9))
    best = max(res.valid_history, key=lambda h: h["mrr"])  # first of ties, as the strict ">" keeps
    assert res.best_epoch == best["epoch"] < 8, res.valid_history  # this run peaks before its last epoch
    # the returned model is the best check's, not the last epoch's: recomputing valid gives its MRR
    assert kge.tail_metrics(res.model, split, "valid", ks=(10,))["mrr"] == pytest.approx(best["mrr"], rel=1e-6)
