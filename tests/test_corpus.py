"""Corpora as token arrays, TSV output in original tokens (checked against the raw files), CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atomic_helpers import write_atomic_dataset
from kgglm.cli import main
from kgglm.config import Config
from kgglm.paths.corpus import (
    build_corpus,
    path_lines,
    sample_stage_paths,
    stage_corpus,
    write_paths_tsv,
)
from kgglm.paths.sampling import PathBatch, sample_pretrain_paths, sample_user_paths
from kgglm.paths.vocab import BOS, EOS, PAD, Vocabulary
from kgglm.settings import resolve
from kgglm.tasks.recommendation import load_dataset_for


def test_build_corpus_matches_sampler(toy_dataset):
    ds = toy_dataset
    v = Vocabulary.from_graph(ds.graph, ds.name)
    tok = build_corpus(ds, v, stage="pretrain", paths_per_node=2, hop_range=(2, 3), seed=4)
    b = sample_pretrain_paths(ds.graph, paths_per_node=2, hop_range=(2, 3), seed=4)
    assert tok.dtype == np.int64 and tok.shape == (len(b), 9)
    assert np.array_equal(tok, v.encode_paths(b.nodes, b.relations))
    tok = build_corpus(ds, v, stage="finetune", max_paths_per_user=5, hop_length=5, seed=4)
    b = sample_user_paths(ds.graph, ds.splits["train"], max_paths_per_user=5, hop_length=5, seed=4)
    assert tok.shape == (len(b), 13) and (tok[:, 0] == BOS).all() and (tok[:, -1] == EOS).all()
    assert not (tok == PAD).any()
    with pytest.raises(ValueError, match="stage"):
        build_corpus(ds, v, stage="other")


def test_path_sample_config_resolved():
    from kgglm.config import Config

    cfg = Config(config_dict={"seed": 7, "MAX_PATHS_PER_USER": 30, "path_hop_length": 5,
                              "path_sample_args": {"pretrain_paths": 2, "pretrain_hop_length": "(3,5)",
                                                   "collaborative_path": False}})
    sc = resolve(cfg).sampling
    assert sc.sampler_args("pretrain") == {"seed": 7, "paths_per_node": 2, "hop_range": (3, 5), "include_users": False,
                                           "ui_share": 0.5}
    assert sc.sampler_args("finetune") == {"seed": 7, "max_paths_per_user": 30, "hop_length": 5,
                                           "collaborative": False, "ui_share": 0.5, "last_hop": "walk"}
    uniform = Config(config_dict={"path_sample_args": {"ui_share": None}})
    assert resolve(uniform).sampling.sampler_args("finetune")["ui_share"] is None
    assert sc.context_length == 2 * 5 + 3
    with pytest.raises(ValueError, match="stage"):
        sc.sampler_args("nope")
    with pytest.raises(ValueError, match="pretrain_hop_length"):
        resolve(Config(config_dict={"path_sample_args": {"pretrain_hop_length": [4, 2]}}))


def test_stage_corpus_caps_pretraining_walks(toy_dataset):
    from kgglm.config import Config

    v = Vocabulary.from_graph(toy_dataset.graph, toy_dataset.name)
    full = stage_corpus(toy_dataset, v, resolve(Config()).sampling, "pretrain")
    capped = stage_corpus(toy_dataset, v, resolve(
        Config(config_dict={"path_sample_args": {"pretrain_max_paths": 5}})).sampling, "pretrain")
    assert len(capped) == 5 and len(full) > 5
    assert {tuple(r) for r in capped.tolist()} <= {tuple(r) for r in full.tolist()}


def test_tsv_lines_in_original_tokens(toy_dataset, tmp_path):
    ds = toy_dataset
    b = sample_pretrain_paths(ds.graph, paths_per_node=1, hop_range=(1, 3), seed=0)
    lines = path_lines(b, ds)
    node_tok, rel_tok = ds.node_tokens(), ds.relation_tokens
    for line, n, r, h in zip(lines, b.nodes.tolist(), b.relations.tolist(), b.hops.tolist()):
        fields = line.split("\t")
        assert len(fields) == 2 * h + 1
        assert fields[0::2] == [node_tok[x] for x in n[: h + 1]]
        assert fields[1::2] == [rel_tok[x] for x in r[:h]]
    out = tmp_path / "p.tsv"
    assert write_paths_tsv(out, b, ds, limit=4) == 4
    assert out.read_text().splitlines() == lines[:4]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_cli_paths_writes_the_training_corpus(tmp_path, stage):
    """`kgglm paths` writes the very paths training encodes: the same walk cap, the same order."""
    root = write_atomic_dataset(tmp_path / "data")
    out = tmp_path / "paths.tsv"
    opts = ["--dataset", "toy", "--data-path", str(root)]
    cap = {"path_sample_args": {"pretrain_max_paths": 37}}
    assert main(["paths", *opts, "--stage", stage, "--path_sample_args.pretrain_max_paths=37", "--out", str(out)]) == 0
    config = Config("KGGLM", "toy", config_dict={"data_path": str(root), **cap})
    data = load_dataset_for(config)
    vocab = Vocabulary.from_graph(data.graph, data.name)
    tokens = stage_corpus(data, vocab, resolve(config).sampling, stage)
    lines = out.read_text().splitlines()
    assert lines == path_lines(PathBatch(*vocab.decode_paths(tokens)), data)
    uncapped = sample_stage_paths(data, stage=stage, **resolve(config).sampling.sampler_args(stage))
    assert len(lines) == (37 if stage == "pretrain" else len(uncapped)) and len(uncapped) > 37


def _raw(shared_data, name, ext):
    frame = pd.read_csv(shared_data / name / f"{name}.{ext}", sep="\t", dtype=str)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def test_cli_paths_checked_against_raw_files(shared_data, tmp_path):
    """Every hop of the written paths is a line of the raw .inter (user-item) or .kg file."""
    out = tmp_path / "ft.tsv"
    rc = main(["paths", "--dataset", "ml-100k", "--data-path", str(shared_data), "--stage", "finetune",
               "--MAX_PATHS_PER_USER=5", "--limit", "2000", "--out", str(out)])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2000
    inter = _raw(shared_data, "ml-100k", "inter")
    kg = _raw(shared_data, "ml-100k", "kg")
    link = _raw(shared_data, "ml-100k", "link")
    ui = set(zip(inter.user_id, inter.item_id))
    triples = set(zip(kg.head_id, kg.relation_id, kg.tail_id))
    item_entity = dict(zip(link.item_id, link.entity_id))
    entity_item = {e: i for i, e in item_entity.items()}
    n_ui = n_kg = 0
    for line in lines:
        f = line.split("\t")
        assert len(f) == 7 and f[1] == "[UI-Relation]"
        assert (f[0], f[2]) in ui and (f[0], f[6]) in ui and f[2] != f[6]
        for k in (1, 3, 5):
            a, r, b = f[k - 1], f[k], f[k + 1]
            if r == "[UI-Relation]":
                assert (a, b) in ui or (b, a) in ui
                n_ui += 1
            else:  # KG hop: items appear by their item id, the KG uses their linked entity
                ea, eb = item_entity.get(a, a), item_entity.get(b, b)
                assert (ea, r, eb) in triples or (eb, r, ea) in triples, line
                n_kg += 1
        # the first item of a KG hop is an item, not an entity that looks like one
        assert f[2] not in entity_item
    assert n_kg > 0 and n_ui > 2000


def test_cli_pretrain_and_bad_args(shared_data, tmp_path, capsys):
    out = tmp_path / "pt.tsv"
    assert main(["paths", "--dataset", "ml-100k", "--data-path", str(shared_data), "--stage", "pretrain",
                 "--limit", "10", "--seed=3", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 10 and all(len(x.split("\t")) == 7 for x in lines)
    assert "[UI-Relation]" not in out.read_text()
    assert main(["paths", "--dataset", "ml-100k", "--data-path", str(shared_data), "--stage", "finetune",
                 "--path_hop_length=4", "--out", str(out)]) == 2
    assert "odd" in capsys.readouterr().err
