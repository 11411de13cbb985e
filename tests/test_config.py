"""Layered configuration: precedence of every layer, unknown keys, type checks, documentation."""

from __future__ import annotations

import re

import pytest
import yaml

from kgglm.config import (
    CONFIG_ROOT,
    OVERALL_FILE,
    TASKS,
    Config,
    ConfigError,
    markdown_table,
    parse_cmd_args,
    parse_defaults_doc,
)


def write(path, text: str):
    path.write_text(text)
    return path


def test_defaults_have_recbole_names_and_values():
    c = Config()
    expected = {"embedding_size": 768, "num_heads": 12, "num_layers": 6, "learning_rate": 2e-4,
                "weight_decay": 0.01, "warmup_steps": 250, "use_kg_token_types": True, "train_stage": "pretrain",
                "pre_model_path": "", "pretrain_epochs": 1, "save_step": 50, "path_hop_length": 3,
                "MAX_PATHS_PER_USER": 250, "topk": [10], "valid_metric": "NDCG@10", "seed": 2024,
                "checkpoint_dir": "saved", "ui_relation": "[UI-Relation]", "state": "INFO"}
    for key, value in expected.items():
        assert c[key] == value, key
    assert isinstance(c["learning_rate"], float)  # YAML's 2.0e-4, not the string '2e-4'
    assert c["path_sample_args"]["pretrain_hop_length"] == [3, 3]
    assert c["path_sample_args"]["collaborative_path"] is True
    assert c["path_generation_args"]["num_beams"] == 50  # hopwise KGGLM default
    assert c["eval_args"]["split"] == {"RS": [0.8, 0.1, 0.1]}
    assert c["model"] == "KGGLM" and c["dataset"] == "ml-100k"


def test_every_default_key_is_documented():
    docs = parse_defaults_doc()
    defaults = yaml.safe_load(OVERALL_FILE.read_text())
    documented = {d.key for d in docs}
    for key, value in defaults.items():
        assert key in documented
        if isinstance(value, dict):
            assert {f"{key}.{sub}" for sub in value} <= documented
    assert all(d.doc for d in docs), [d.key for d in docs if not d.doc]
    table = markdown_table()
    for key in defaults:
        assert f"`{key}`" in table


def test_layer_precedence(tmp_path):
    a = write(tmp_path / "a.yaml", "learning_rate: 1.0e-3\nepochs: 7\nnum_layers: 2\nseed: 1\n")
    b = write(tmp_path / "b.yaml", "epochs: 8\nseed: 2\n")
    c = Config("KGGLM", "ml1m", config_file_list=[a, b], config_dict={"seed": 3, "num_heads": 4},
               cmd_args=["--num_heads=2", "--embedding_size=64"], preset="quick")
    assert c["benchmark_filename"] == ["train", "valid", "test"]  # dataset layer (ml1m.yaml)
    assert c["warmup_steps"] == 50  # preset over model defaults (250)
    assert c["learning_rate"] == 1e-3 and c["num_layers"] == 2  # file a over preset
    assert c["epochs"] == 8  # file b over file a
    assert c["seed"] == 3  # config_dict over files
    assert c["num_heads"] == 2 and c["embedding_size"] == 64  # command line over everything
    assert c.sources["num_heads"] == "command line" and c.sources["epochs"].startswith("config file")
    # without the preset, the model layer's value shows through
    assert Config("KGGLM", "ml-100k")["warmup_steps"] == 250
    assert Config("KGGLM", "ml-100k")["benchmark_filename"] is None


def test_preset_task_section_applies_to_its_task_only():
    section = yaml.safe_load((CONFIG_ROOT / "preset" / "quick.yaml").read_text())["kg_completion"]
    key, value = next((k, v) for k, v in section.items() if Config(preset="quick")[k] != v)
    rec = Config(preset="quick")
    assert "kg_completion" not in rec.to_dict() and rec.sources[key] == "preset quick"
    # the task may come from any later layer; the section sits just above the preset's top level
    for kwargs in ({"cmd_args": ["--task=kg_completion"]}, {"config_dict": {"task": "kg_completion"}}):
        kg = Config(preset="quick", **kwargs)
        assert kg[key] == value and kg.sources[key] == "preset quick (kg_completion section)"
    kg = Config(preset="quick", config_dict={"task": "kg_completion", key: rec[key]})
    assert kg[key] == rec[key] and kg.sources[key] == "config_dict"  # a user's layer still wins


def test_a_dataset_sizes_a_preset_for_itself(tmp_path, monkeypatch):
    import shutil

    import kgglm.config as config_module

    root = tmp_path / "configs"
    shutil.copytree(CONFIG_ROOT, root)
    (root / "dataset" / "big.yaml").write_text("epochs: 7\npresets:\n  quick:\n    epochs: 2\n"
                                               "    path_generation_args: {num_beams: 9}\n")
    monkeypatch.setattr(config_module, "CONFIG_ROOT", root)
    quick = Config("KGGLM", "big", preset="quick")
    assert quick["epochs"] == 2 and quick.sources["epochs"] == "dataset big.yaml (presets: quick)"
    assert quick["path_generation_args"]["num_beams"] == 9  # merged key by key like any layer
    assert quick["embedding_size"] == Config(preset="quick")["embedding_size"]  # the rest is the preset's
    assert Config("KGGLM", "big", preset="cpu")["epochs"] == Config(preset="cpu")["epochs"]  # other presets: theirs
    assert Config("KGGLM", "big")["epochs"] == 7 and "presets" not in Config("KGGLM", "big").to_dict()
    assert Config("KGGLM", "big", preset="quick", cmd_args=["--epochs=5"])["epochs"] == 5  # the user still wins
    (root / "dataset" / "big.yaml").write_text("presets:\n  quik:\n    epochs: 2\n")
    with pytest.raises(ConfigError, match=r"big.yaml, line 1: unknown preset 'quik'.*quick"):
        Config("KGGLM", "big")
    (root / "dataset" / "big.yaml").write_text("presets:\n  quick: 3\n")
    with pytest.raises(ConfigError, match="presets must map a preset name"):
        Config("KGGLM", "big")


def test_mappings_merge_key_by_key(tmp_path):
    f = write(tmp_path / "a.yaml", "path_generation_args:\n  num_beams: 7\n")
    c = Config(config_file_list=[f], config_dict={"path_generation_args": {"top_k": 3}},
               cmd_args=["--path_sample_args.pretrain_paths=2"])
    assert c["path_generation_args"]["num_beams"] == 7 and c["path_generation_args"]["top_k"] == 3
    assert c["path_generation_args"]["top_p"] == 1.0  # untouched default kept
    assert c["path_sample_args"]["pretrain_paths"] == 2 and c["path_sample_args"]["collaborative_path"] is True
    # a leaf mapping such as eval_args.split is replaced, not merged (RS and LS would clash)
    c = Config(config_dict={"eval_args": {"split": {"LS": "valid_and_test"}}})
    assert c["eval_args"]["split"] == {"LS": "valid_and_test"} and c["eval_args"]["order"] == "RO"


def test_unknown_keys_suggest_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat'.*did you mean 'learning_rate'"):
        Config(config_dict={"learning_rat": 1e-3})
    with pytest.raises(ConfigError, match=r"'embeding_size' \(command line\).*did you mean 'embedding_size'"):
        Config(cmd_args=["--embeding_size=64"])
    f = write(tmp_path / "bad.yaml", "# comment\nepochs: 3\nnum_beams: 4\n")
    with pytest.raises(ConfigError, match=r"'num_beams' .*bad.yaml, line 3\).*under path_generation_args"):
        Config(config_file_list=[f])
    with pytest.raises(ConfigError, match=r"path_generation_args.num_beam .*did you mean 'num_beams'"):
        Config(config_dict={"path_generation_args": {"num_beam": 4}})
    with pytest.raises(ConfigError, match=r"did you mean 'MAX_PATHS_PER_USER'"):
        Config(config_dict={"max_paths_per_user": 10})
    with pytest.raises(ConfigError, match="unknown model 'KGLM'.*did you mean 'KGGLM'"):
        Config("KGLM")
    with pytest.raises(ConfigError, match="unknown preset 'quik'.*did you mean 'quick'"):
        Config(preset="quik")


def test_types_are_checked_and_coerced():
    c = Config(cmd_args=["--learning_rate=2e-4", "--topk=20", "--valid_metric=NDCG@20", "--state=debug",
                         "--epochs=3.0", "--pre_model_path=123"])
    assert c["learning_rate"] == 2e-4 and c["topk"] == [20] and c["epochs"] == 3 and c["state"] == "DEBUG"
    assert c["pre_model_path"] == "123"
    for bad, pattern in [({"epochs": "many"}, "'epochs'.*expected an integer"),
                         ({"epochs": 2.5}, "expected an integer"),
                         ({"use_kg_token_types": "maybe"}, "expected true or false"),
                         ({"learning_rate": "fast"}, "expected a number"),
                         ({"path_sample_args": 3}, "expected a mapping"),
                         ({"train_stage": "pretrian"}, "train_stage"),
                         ({"state": "LOUD"}, "log level"),
                         ({"num_heads": 5}, "divisible"),
                         ({"path_hop_length": 4}, "odd"),
                         ({"valid_metric": "NDCG@20"}, "not computed"),
                         ({"model": "Pop"}, "model argument")]:
        with pytest.raises(ConfigError, match=pattern):
            Config(config_dict=bad)


def test_parse_cmd_args():
    assert parse_cmd_args(["--a=1", "--b=[1, 2]", "--c.d=x y", "--e=", "--f={RS: [0.8,0.1,0.1]}"]) == {
        "a": 1, "b": [1, 2], "c": {"d": "x y"}, "e": "", "f": {"RS": [0.8, 0.1, 0.1]}}
    with pytest.raises(ConfigError, match="expected --key=value"):
        parse_cmd_args(["--epochs", "3"])
    assert parse_cmd_args(["--resume"]) == {"resume": True}  # a bare flag is true
    with pytest.raises(ConfigError, match="epochs.*expected an integer"):
        Config(cmd_args=["--epochs"])


def test_invalid_yaml_file_names_file_and_line(tmp_path):
    f = write(tmp_path / "broken.yaml", "epochs: 3\nseed: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml, line \d+: invalid YAML"):
        Config(config_file_list=[f])
    with pytest.raises(ConfigError, match="not found"):
        Config(config_file_list=[tmp_path / "missing.yaml"])
    f = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Config(config_file_list=[f])


def test_mapping_access_sections_and_save(tmp_path):
    c = Config(config_dict={"epochs": 4})
    assert "epochs" in c and c.get("epochs") == 4 and c.get("nope", 5) == 5
    assert set(c.section("Model")) == {"embedding_size", "num_heads", "num_layers", "dropout", "use_kg_token_types",
                                       "user_history", "history_dropout", "history_loss_weight", "history_expert_args"}
    c["epochs"] = 9
    assert c["epochs"] == 9
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        c["epoch"] = 1
    with pytest.raises(KeyError, match="did you mean"):
        c["epoch"]
    path = c.save(tmp_path)
    saved = yaml.safe_load(path.read_text())
    assert saved == c.to_dict() and saved["epochs"] == 9 and saved["model"] == "KGGLM"
    # the saved file can be fed back as a config file (model/dataset/preset are arguments, not keys)
    for k in ("model", "dataset", "preset"):
        saved.pop(k)
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(saved))
    assert Config(config_file_list=[tmp_path / "again.yaml"]).to_dict() == c.to_dict()


def test_shipped_yaml_files_only_use_known_keys():
    for folder in ("model", "dataset", "preset"):
        for f in (CONFIG_ROOT / folder).glob("*.yaml"):
            name = f.stem
            kwargs = {"model": name} if folder == "model" else {"dataset": name} if folder == "dataset" \
                else {"preset": name}
            Config(**kwargs)  # raises on any unknown key or bad value
            if folder == "preset":  # and its per-task sections
                for task in TASKS:
                    Config(**kwargs, config_dict={"task": task})
            if folder == "dataset":  # and its sizing of each preset
                for preset in (yaml.safe_load(f.read_text()) or {}).get("presets", {}):
                    Config(**kwargs, preset=preset)
    quick = Config(preset="quick")
    assert quick["embedding_size"] < 768 and quick["path_sample_args"]["pretrain_max_paths"]
    assert re.match(r"\w+@\d+", quick["valid_metric"])


def test_readme_key_table_is_current():
    readme = (CONFIG_ROOT.parents[2] / "README.md").read_text()
    start = readme.index("<!-- config-keys:start")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- config-keys:end -->")
    assert readme[start:end] == markdown_table(), "regenerate with: python -m kgglm.config --markdown"


def test_the_device_setting_is_resolved_by_one_function(monkeypatch):
    import torch

    from kgglm.distributed import resolve_device

    for available in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        auto = torch.device("cuda" if available else "cpu")
        assert resolve_device(None) == resolve_device("") == resolve_device("auto") == auto
        assert resolve_device(None, use_gpu=False) == torch.device("cpu")
        assert resolve_device("cuda:1") == torch.device("cuda", 1)
        assert Config(config_dict={"device": None}).device == str(auto)
        assert Config(config_dict={"device": None, "use_gpu": False}).device == "cpu"
        assert Config(config_dict={"device": "cpu"}).device == "cpu"


def test_train_stages_are_the_trainers():
    """The config checks train_stage against the trainer's stages (the trainer cannot import the config)."""
    from kgglm.config import TRAIN_STAGES
    from kgglm.train.state import TRAIN_STAGES as TRAINER_STAGES

    assert TRAIN_STAGES == TRAINER_STAGES
