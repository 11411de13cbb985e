"""kgglm.settings: the layered config resolved once into typed sections, and nothing below reads it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from kgglm.config import CONFIG_ROOT, Config, ConfigError, load_yaml_file
from kgglm.settings import RunSettings, as_settings, resolve

SRC = Path(__file__).resolve().parents[1] / "src" / "kgglm"
LOWER = ("data", "paths", "model", "train", "decode", "evaluate", "baselines")


def _same(a, b) -> bool:
    """Equal up to the list/tuple and mapping types the sections use."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "items") and hasattr(b, "items"):
        return dict(a).keys() == dict(b).keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_a_preset_and_a_command_line_key_land_in_their_sections():
    quick = load_yaml_file(CONFIG_ROOT / "preset" / "quick.yaml")
    s = resolve(Config("KGGLM", "ml-100k", preset="quick",
                       cmd_args=["--epochs=9", "--path_generation_args.num_beams=7",
                                 "--history_expert_args.weight_grid=[1, 3]", "--path_sample_args.last_hop=direct"]))
    assert s.train["finetune"].epochs == 9 and s.train["pretrain"].epochs == quick["pretrain_epochs"]
    assert s.train["pretrain"].stage == "pretrain" and s.train["finetune"].stage == "finetune"
    assert s.train["finetune"].learning_rate == quick["learning_rate"] == s.train["pretrain"].learning_rate
    assert (s.model.embedding_size, s.model.num_heads, s.model.num_layers) == (
        quick["embedding_size"], quick["num_heads"], quick["num_layers"])
    assert s.model.history_expert_dim == quick["history_expert_args"]["dim"]
    assert s.sampling.pretrain_max_paths == quick["path_sample_args"]["pretrain_max_paths"]
    assert s.sampling.MAX_PATHS_PER_USER == quick["MAX_PATHS_PER_USER"] and s.sampling.last_hop == "direct"
    assert s.generation.num_beams == 7 and s.eval.eval_batch_size == quick["eval_batch_size"]
    assert s.expert.weight_grid == (1.0, 3.0)
    assert (s.run.model, s.run.dataset, s.run.preset) == ("KGGLM", "ml-100k", "quick")


@pytest.mark.parametrize("args", [[], ["--seed=5", "--eval_batch_size=3", "--topk=[10, 5]", "--export_topk=20",
                                        "--path_sample_args.pretrain_hop_length=[1, 5]", "--reg_weight_grid=[2, 4]"]])
def test_every_field_named_after_a_key_has_the_resolved_value(args):
    """Each section's fields that are config keys (or sub-keys of its mapping) carry the config's value."""
    config = Config("KGGLM", "ml-100k", cmd_args=args)
    s = resolve(config)
    sections = {"data": (s.data, {}), "eval": (s.eval, {}), "train": (s.train["finetune"], {}),
                "sampling": (s.sampling, config["path_sample_args"]),
                "generation": (s.generation, config["path_generation_args"]), "baseline": (s.baseline, {}),
                "run": (s.run, {}), "output": (s.output, {}),
                "expert": (s.expert.fit, config["history_expert_args"])}
    checked = 0
    for name, (section, sub) in sections.items():
        for f in dataclasses.fields(section):
            if f.name in sub:
                expected = sub[f.name]
            elif f.name in config and f.name not in ("model", "device"):
                expected = config[f.name]
            else:
                continue
            if f.name == "topk":  # sorted, once each
                expected = sorted(set(expected))
            assert _same(getattr(section, f.name), expected), f"{name}.{f.name}"
            checked += 1
    assert checked > 60  # the comparison ran over the sections, not over nothing
    assert s.run.device == config.device and s.train["finetune"].device == config.device


@pytest.mark.parametrize("arg, message", [
    ("--path_generation_args.top_p=2", r"generation settings: path_generation_args\.top_p must be in \(0, 1\]"),
    ("--learning_rate=0", "train settings: learning_rate must be > 0"),
    ("--path_sample_args.pretrain_paths=0", r"sampling settings: path_sample_args\.pretrain_paths must be >= 1"),
    ("--history_expert_args.batch_size=0", r"expert settings: history_expert_args\.batch_size must be >= 1"),
    ("--item_name=label", "data settings: item_name must be 'title' or 'entity'"),
])
def test_a_bad_value_fails_naming_the_section_and_key(arg, message):
    with pytest.raises(ConfigError, match=message):
        resolve(Config(cmd_args=[arg]))


def test_no_pretraining_and_baseline_runs():
    assert "pretrain" not in resolve(Config(cmd_args=["--pretrain_epochs=0"])).train
    bpr = resolve(Config("BPR", "ml-100k"))
    bpr_yaml = load_yaml_file(CONFIG_ROOT / "model" / "BPR.yaml")
    assert bpr.model is None  # no KGGLM architecture (BPR's embedding_size need not divide num_heads)
    assert (bpr.baseline.embedding_size, bpr.baseline.epochs) == (bpr_yaml["embedding_size"], bpr_yaml["epochs"])


def test_a_plain_mapping_is_the_top_layer_and_settings_are_frozen():
    s = resolve({"model": "Pop", "dataset": "toy", "seed": 3, "preset": None})
    assert (s.run.model, s.run.dataset, s.run.seed, s.data.seed) == ("Pop", "toy", 3, 3)
    assert as_settings(s) is s and isinstance(as_settings(Config()), RunSettings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.run.seed = 4
    with pytest.raises(TypeError):
        s.output.relation_phrases["x"] = "y"  # read-only mapping


# ---------------------------------------------------------------------------------- nothing below reads it
def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_layer_below_tasks_reads_the_config():
    offenders = []
    for package in LOWER:
        for path in sorted((SRC / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            bad = {n for n in _imports(tree) if n in ("kgglm.config", "kgglm.settings", "kgglm.Config")
                   or n.startswith(("kgglm.config.", "kgglm.settings."))}
            readers = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "from_config"]
            if bad or readers:
                offenders.append(f"{path.relative_to(SRC)}: {sorted(bad)} {readers}")
    assert not offenders, offenders


def test_the_import_contract_forbids_the_config_below_tasks():
    """The same rule for import-linter (`lint-imports`), which also follows indirect imports."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    contracts = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    rule = next(c for c in contracts if c["type"] == "forbidden" and "kgglm.config" in c["forbidden_modules"])
    assert set(rule["forbidden_modules"]) >= {"kgglm.config", "kgglm.settings"}
    assert set(rule["source_modules"]) == {f"kgglm.{p}" for p in LOWER}
