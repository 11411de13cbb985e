"""Params-file parsing (every form, malformed lines) and the Optuna search around it.

The search tests use a cheap objective with a known optimum; the CLI test (tests/test_cli.py)
runs a real 2-trial tuning of a tiny model end to end.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from kgglm.config import ConfigError
from kgglm.tune import ParamsFileError, check_params, params_to_config_dict, parse_params_file, \
    parse_params_text, tune

FT = {"train_stage": "finetune", "pre_model_path": "unused-by-these-objectives"}

GOOD = """
# hopwise-style params file
learning_rate loguniform -9,-6     # e^-9 .. e^-6
embedding_size choice [64,128]
dropout uniform 0.0,0.3
warmup_steps quniform 50,250,50
path_generation_args.num_beams choice [10, 20]
path_sample_args.pretrain_hop_length choice [[3,3],[1,3]]
train_stage choice ['finetune']
"""


def test_parse_every_form():
    params = {p.name: p for p in parse_params_text(GOOD, "hyper.test")}
    assert list(params) == ["learning_rate", "embedding_size", "dropout", "warmup_steps",
                            "path_generation_args.num_beams", "path_sample_args.pretrain_hop_length", "train_stage"]
    lr = params["learning_rate"]
    assert (lr.kind, lr.low, lr.high, lr.line) == ("loguniform", -9.0, -6.0, 3)
    assert params["embedding_size"].values == (64, 128)
    assert (params["dropout"].low, params["dropout"].high) == (0.0, 0.3)
    assert (params["warmup_steps"].low, params["warmup_steps"].high, params["warmup_steps"].q) == (50, 250, 50)
    assert params["path_sample_args.pretrain_hop_length"].values == ([3, 3], [1, 3])
    assert params["train_stage"].values == ("finetune",)
    check_params(params.values())  # all names are config keys with fitting values


@pytest.mark.parametrize("line, message", [
    ("learning_rate", "expected 'name type values'"),
    ("learning_rate loguniform", "expected 'name type values'"),
    ("learning_rate unifrm 0,1", "unknown search type 'unifrm'.*did you mean 'uniform'"),
    ("dropout uniform 0.3", "uniform needs 2 comma-separated numbers"),
    ("dropout uniform a,b", "uniform needs 2 comma-separated numbers"),
    ("dropout uniform 0.5,0.1", "needs a < b"),
    ("warmup_steps quniform 50,250", "quniform needs 3 comma-separated numbers"),
    ("warmup_steps quniform 50,250,0", "step q"),
    ("embedding_size choice 64", "non-empty list"),
    ("embedding_size choice []", "non-empty list"),
    ("embedding_size choice [64,64]", "distinct"),
    ("embedding_size choice [64,", "list"),
    ("9lives choice [1]", "bad parameter name"),
])
def test_malformed_lines_name_file_and_line(line, message):
    text = "epochs choice [1,2]\n\n" + line + "\n"
    with pytest.raises(ParamsFileError, match=rf"hyper.test, line 3: .*{message}"):
        parse_params_text(text, "hyper.test")


def test_duplicates_empty_files_and_unknown_keys(tmp_path):
    with pytest.raises(ParamsFileError, match="line 2: parameter 'epochs' already given on line 1"):
        parse_params_text("epochs choice [1]\nepochs choice [2]\n", "f")
    with pytest.raises(ParamsFileError, match="no parameters"):
        parse_params_text("# nothing\n\n", "f")
    with pytest.raises(ParamsFileError, match="not found"):
        parse_params_file(tmp_path / "missing.test")
    with pytest.raises(ParamsFileError, match="line 1: unknown config key 'learning_rat'.*'learning_rate'"):
        check_params(parse_params_text("learning_rat loguniform -9,-6\n"))
    with pytest.raises(ParamsFileError, match="line 1: unknown key 'path_generation_args.num_beam'.*'num_beams'"):
        check_params(parse_params_text("path_generation_args.num_beam choice [1]\n"))
    with pytest.raises(ParamsFileError, match="line 2:.*'epochs'.*expected an integer"):
        check_params(parse_params_text("dropout uniform 0,0.1\nepochs choice [a,b]\n"))
    f = tmp_path / "h.test"
    f.write_text("epochs choice [1,2]\n")
    assert parse_params_file(f)[0].values == (1, 2)


def test_params_to_config_dict():
    assert params_to_config_dict({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}


def test_grid_search_covers_the_grid_and_finds_the_best(tmp_path):
    params = parse_params_text("embedding_size choice [32,64,128]\npath_generation_args.num_beams choice [5,10]\n")
    seen = []

    def objective(cfg):
        seen.append((cfg["embedding_size"], cfg["path_generation_args"]["num_beams"]))
        assert cfg["epochs"] == 2  # fixed config_dict values reach every trial
        return -abs(cfg["embedding_size"] - 64) + cfg["path_generation_args"]["num_beams"], {"extra": 1}

    res = tune(params, config_dict={**FT, "epochs": 2}, out_dir=tmp_path / "out", objective_fn=objective)
    assert sorted(seen) == sorted((e, b) for e in (32, 64, 128) for b in (5, 10))  # the full grid, once each
    assert res.best_params == {"embedding_size": 64, "path_generation_args.num_beams": 10}
    assert res.best_value == 10
    rows = list(csv.DictReader(open(res.files["trials_csv"])))
    assert len(rows) == 6 and {r["state"] for r in rows} == {"COMPLETE"}
    assert json.loads(open(res.files["trials_json"]).read())[0]["extra"] == 1
    assert yaml.safe_load(open(res.files["best_params"]))["best_params"]["embedding_size"] == 64


def test_tpe_respects_bounds_and_log_scale(tmp_path):
    params = parse_params_text("learning_rate loguniform -9,-6\nwarmup_steps quniform 50,250,50\n"
                               "dropout uniform 0.1,0.2\nnum_layers choice [1,2]\n")
    values = []

    def objective(cfg):
        values.append(cfg)
        return -abs(math.log(cfg["learning_rate"]) + 7), {}

    res = tune(params, n_trials=12, config_dict=FT, out_dir=tmp_path, objective_fn=objective)
    assert len(values) == 12
    for v in values:
        assert math.exp(-9) <= v["learning_rate"] <= math.exp(-6)  # RecBole/hopwise: bounds are exponents
        assert v["warmup_steps"] in (50, 100, 150, 200, 250) and isinstance(v["warmup_steps"], int)
        assert 0.1 <= v["dropout"] <= 0.2 and v["num_layers"] in (1, 2)
    assert res.best_value == max(-abs(math.log(v["learning_rate"]) + 7) for v in values)


def test_shared_storage_continues_a_study(tmp_path):
    params = parse_params_text("dropout uniform 0.0,0.3\n")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    objective = lambda cfg: (cfg["dropout"], {})  # noqa: E731
    first = tune(params, n_trials=2, config_dict=FT, storage=url, study_name="s", out_dir=tmp_path / "a", objective_fn=objective)
    second = tune(params, n_trials=2, config_dict=FT, storage=url, study_name="s", out_dir=tmp_path / "b", objective_fn=objective)
    assert len(first.trials) == 2 and len(second.trials) == 4  # the second process sees the first's trials
    assert second.best_value == max(t["NDCG@10"] for t in second.trials)


def test_tuning_needs_a_validation_score(tmp_path):
    with pytest.raises(ConfigError, match="only fine-tuning computes"):
        tune(parse_params_text("dropout uniform 0,0.1\n"), out_dir=tmp_path, objective_fn=lambda c: (0.0, {}))
