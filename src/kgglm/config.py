"""Layered configuration with RecBole/hopwise key names.

Layers, lowest first (a later layer overrides an earlier one)::

    configs/overall.yaml              package defaults, every key documented
    configs/model/<MODEL>.yaml        model defaults
    configs/dataset/<DATASET>.yaml    dataset defaults
    configs/preset/<PRESET>.yaml      a named preset (--preset quick); its section named after the
                                      run's task (``kg_completion:``), if any, overrides its top level
    the dataset file's ``presets:``   that preset sized for the dataset (``presets: {quick: {...}}``
                                      in ml1m.yaml: 6,040 users need fewer paths each to stay quick)
    config_file_list                  user YAML files, in order (--config-files a.yaml b.yaml)
    config_dict                       a Python dict (run_kgglm(config_dict=...))
    cmd_args                          command-line ``--key=value`` (values parsed as YAML)

Unknown keys are an error with a did-you-mean suggestion, so a typo never passes silently.
Mapping-valued keys (``eval_args``, ``path_sample_args``, ``path_generation_args``) merge key by
key, and their sub-keys are checked too. ``Config`` behaves like RecBole's: ``config['seed']``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kgglm import durable

logger = logging.getLogger(__name__)

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
OVERALL_FILE = CONFIG_ROOT / "overall.yaml"
# KGGLM and the baselines; each has configs/model/<NAME>.yaml
MODELS = ("KGGLM", "Pop", "BPR", "LightGCN", "EASE", "ItemKNN", "KGItemKNN")
TRAIN_STAGES = ("pretrain", "finetune")
TASKS = ("recommendation", "kg_completion")
KG_FINETUNE_LOSSES = ("one_to_n", "paths")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration problem: unknown key, wrong type, bad value or unreadable file."""


@dataclass(frozen=True)
class KeyDoc:
    """Documentation of one default key, parsed from the comments of overall.yaml."""

    key: str  # 'seed' or 'path_sample_args.pretrain_paths'
    section: str
    doc: str
    default: Any


# ---------------------------------------------------------------------------------- defaults
def parse_defaults_doc(path: Path = OVERALL_FILE) -> list[KeyDoc]:
    """Keys of the defaults file with their section and comment, in file order.

    Sections are ``# == Name ==`` lines; a key's doc is the comment block right above it (top-level
    keys at column 0, sub-keys of a mapping indented by two spaces).
    """
    defaults = yaml.safe_load(path.read_text())
    docs: list[KeyDoc] = []
    section, comment, parent = "General", [], None
    for line in path.read_text().splitlines():
        if m := re.match(r"^# == (.+) ==\s*$", line):
            section, comment = m.group(1), []
        elif m := re.match(r"^(\s*)# ?(.*)$", line):
            comment.append(m.group(2))
        elif m := re.match(r"^([A-Za-z_][\w]*):", line):
            parent = m.group(1)
            docs.append(KeyDoc(parent, section, " ".join(comment).strip(), defaults[parent]))
            comment = []
        elif (m := re.match(r"^  ([A-Za-z_][\w]*):", line)) and parent is not None:
            key = m.group(1)
            docs.append(KeyDoc(f"{parent}.{key}", section, " ".join(comment).strip(),
                               defaults[parent][key]))
            comment = []
        elif not line.strip():
            comment = []
    return docs


def load_yaml_file(path: str | os.PathLike, what: str = "config file") -> dict:
    """A YAML mapping from ``path``; ConfigError naming the file (and line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value lines, got {type(data).__name__}")
    return data


def _dataset_presets(section, path: Path) -> dict[str, dict]:
    """A dataset file's ``presets:`` section: per preset, the keys that size it for this dataset."""
    if section is None:
        return {}
    known = sorted(p.stem for p in (CONFIG_ROOT / "preset").glob("*.yaml"))
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise ConfigError(f"{path}{_key_line(path, 'presets')}: presets must map a preset name ({', '.join(known)}) "
                          f"to key: value lines")
    unknown = [name for name in section if name not in known]
    if unknown:
        raise ConfigError(f"{path}{_key_line(path, 'presets')}: unknown preset {unknown[0]!r}"
                          f"{_suggest(str(unknown[0]), known)} (known: {', '.join(known)})")
    return section


def _key_line(path: Path, key: str) -> str:
    """' (line N)' of a key in a YAML file, for error messages; '' when not found."""
    try:
        for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if re.match(rf"^\s*['\"]?{re.escape(key)}['\"]?\s*:", line):
                return f", line {i}"
    except OSError:
        pass
    return ""


def parse_cmd_args(args: Iterable[str]) -> dict:
    """``['--lr=0.1', '--path_sample_args.pretrain_paths=2', '--resume']`` -> nested dict.

    Values are read as YAML; a bare ``--flag`` means ``true`` (for boolean keys such as ``resume``).
    """
    out: dict = {}
    for arg in args:
        m = re.match(r"^--([A-Za-z_][\w.\-]*)(?:=(.*))?$", arg, re.S)
        if not m:
            raise ConfigError(f"cannot read command-line argument {arg!r}: expected --key=value or --flag")
        key, text = m.group(1).replace("-", "_"), m.group(2)
        try:
            value = True if text is None else yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text  # e.g. an unbalanced bracket: keep the raw string, type checks decide
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--{key}: {p} is given both as a value and as a mapping")
        node[leaf] = value
    return out


# ---------------------------------------------------------------------------------- checks
def _suggest(key: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:  # case-insensitive match (MAX_PATHS_PER_USER vs max_paths_per_user)
        lower = {k.lower(): k for k in known}
        close = [lower[key.lower()]] if key.lower() in lower else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """``value`` converted to the type of ``default`` where that is unambiguous, else ConfigError."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"config key {key!r} ({source}): expected {expected}, got {value!r}")

    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise bad("true or false")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad("an integer") from None
        if not number.is_integer():
            raise bad("an integer")
        return int(number)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise bad("a number")
        try:
            return float(value)  # YAML reads 2e-4 as a string: accept it as a number
        except (TypeError, ValueError):
            raise bad("a number") from None
    if isinstance(default, str):
        if isinstance(value, (dict, list)):
            raise bad("a string")
        return str(value)
    if isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
        if value is None or (isinstance(value, str) and value.strip(" '\"") == ""):
            return []  # --baselines= or --baselines='' (an empty list, as --baselines=[])
        if isinstance(value, dict):
            raise bad("a list")
        if isinstance(value, str) and "," in value:  # --baselines=Pop,BPR or "(3,5)" on a command line
            return [yaml.safe_load(v.strip()) for v in value.strip("()[] ").split(",") if v.strip()]
        return [value]  # RecBole accepts topk: 10 for [10]
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return value
    return value


# ---------------------------------------------------------------------------------- Config
class Config(Mapping):
    """The resolved configuration of one run (see module docstring for the layers).

    ``config['learning_rate']`` and ``config.get`` work as in RecBole; ``section('Model')`` returns
    the keys of one documented section, ``to_dict()`` a plain dict, ``save(dir)`` writes YAML.
    """

    def __init__(
        self,
        model: str = "KGGLM",
        dataset: str = "ml-100k",
        config_file_list: Iterable[str | os.PathLike] | None = None,
        config_dict: Mapping | None = None,
        cmd_args: Iterable[str] | Mapping | None = None,
        preset: str | None = None,
    ) -> None:
        if model not in MODELS:
            raise ConfigError(f"unknown model {model!r}{_suggest(model, MODELS)} (known: {', '.join(MODELS)})")
        self._docs = parse_defaults_doc()
        self._defaults: dict = yaml.safe_load(OVERALL_FILE.read_text())
        self._values: dict = _deep_copy(self._defaults)
        self.sources: dict[str, str] = {k: "defaults" for k in self._values}
        layers: list[tuple[dict, str, Path | None]] = [
            (load_yaml_file(CONFIG_ROOT / "model" / f"{model}.yaml"), f"model defaults {model}.yaml", None)]
        dataset_file = CONFIG_ROOT / "dataset" / f"{dataset}.yaml"
        dataset_presets: dict = {}
        if dataset_file.is_file():
            data = load_yaml_file(dataset_file)
            dataset_presets = _dataset_presets(data.pop("presets", None), dataset_file)
            layers.append((data, f"dataset defaults {dataset}.yaml", None))
        task_sections: dict = {}
        if preset:
            preset_file = CONFIG_ROOT / "preset" / f"{preset}.yaml"
            if not preset_file.is_file():
                known = sorted(p.stem for p in (CONFIG_ROOT / "preset").glob("*.yaml"))
                raise ConfigError(f"unknown preset {preset!r}{_suggest(preset, known)} (known: {', '.join(known)})")
            data = load_yaml_file(preset_file)
            # a preset's per-task section (e.g. `kg_completion: {epochs: 40}`) overrides its top level
            task_sections = {t: data.pop(t) for t in TASKS if t in data}
            layers.append((data, f"preset {preset}", preset_file))
            preset_at = len(layers)
        layers += [(load_yaml_file(path), f"config file {path}", Path(path)) for path in config_file_list or []]
        if config_dict:
            layers.append((dict(config_dict), "config_dict", None))
        if cmd_args:
            parsed = cmd_args if isinstance(cmd_args, Mapping) else parse_cmd_args(cmd_args)
            layers.append((dict(parsed), "command line", None))
        task = next((layer["task"] for layer, _, _ in reversed(layers) if "task" in layer), self._defaults["task"])
        if task in task_sections:
            section = task_sections[task]
            if not isinstance(section, dict):
                raise ConfigError(f"preset {preset}{_key_line(preset_file, task)}: the {task} section must be a "
                                  f"mapping of key: value lines, got {type(section).__name__}")
            layers.insert(preset_at, (section, f"preset {preset} ({task} section)", None))
            preset_at += 1
        if preset in dataset_presets:  # the dataset's own sizing of this preset (e.g. ML1M's quick)
            layers.insert(preset_at, (dataset_presets[preset], f"dataset {dataset}.yaml (presets: {preset})",
                                      dataset_file))
        for layer, source, path in layers:
            self._apply(layer, source, path=path)
        self._values["model"], self._values["dataset"], self._values["preset"] = model, dataset, preset
        self._check_values()

    # ------------------------------------------------------------------ layering
    def _apply(self, layer: dict, source: str, path: Path | None = None) -> None:
        for key, value in layer.items():
            where = f"{source}{_key_line(path, key) if path else ''}"
            if key in ("model", "dataset"):
                raise ConfigError(f"{where}: set {key!r} with the {key} argument "
                                  f"(--{key} on the command line), not as a config key")
            if key not in self._defaults:
                nested = [f"{k}.{key}" for k, v in self._defaults.items() if isinstance(v, dict) and key in v]
                hint = (f"; {key} belongs under {nested[0].split('.')[0]}: (write {nested[0]})" if nested
                        else _suggest(key, self._defaults))
                raise ConfigError(f"unknown config key {key!r} ({where}){hint}")
            default = self._defaults[key]
            value = _coerce(key, value, default, where)
            if isinstance(default, dict) and value is not None:
                merged = dict(self._values[key] or {})
                for sub, sub_value in value.items():
                    if not default:  # a free-form mapping (e.g. relation_phrases): any sub-key
                        merged[str(sub)] = sub_value
                        continue
                    if sub not in default:
                        raise ConfigError(f"unknown key {key}.{sub} ({where})"
                                          f"{_suggest(str(sub), default)} (known: {', '.join(default)})")
                    merged[sub] = _coerce(f"{key}.{sub}", sub_value, default[sub], where)
                value = merged
            self._values[key] = value
            self.sources[key] = source

    def _check_values(self) -> None:
        v = self._values
        if v["train_stage"] not in TRAIN_STAGES:
            raise ConfigError(f"train_stage ({self.sources['train_stage']}) must be one of "
                              f"{TRAIN_STAGES}, got {v['train_stage']!r}")
        if str(v["state"]).upper() not in LOG_LEVELS:
            raise ConfigError(f"state ({self.sources['state']}) must be a log level {LOG_LEVELS}, "
                              f"got {v['state']!r}")
        v["state"] = str(v["state"]).upper()
        for key in ("embedding_size", "num_heads", "num_layers", "train_batch_size", "eval_batch_size",
                    "path_hop_length", "MAX_PATHS_PER_USER", "save_step", "eval_step"):
            if v[key] <= 0:
                raise ConfigError(f"{key} ({self.sources[key]}) must be positive, got {v[key]}")
        if self._values["model"] == "KGGLM" and v["embedding_size"] % v["num_heads"]:
            raise ConfigError(f"embedding_size ({v['embedding_size']}) must be divisible by "
                              f"num_heads ({v['num_heads']})")
        if v["path_hop_length"] % 2 == 0:
            raise ConfigError(f"path_hop_length must be odd (a user path ends on an item), got {v['path_hop_length']}")
        v["topk"] = [int(k) for k in v["topk"]]
        m = re.match(r"^(\w+)@(\d+)$", str(v["valid_metric"]))
        if not m:
            raise ConfigError(f"valid_metric must look like NDCG@10, got {v['valid_metric']!r}")
        metrics_lower = {str(x).lower() for x in v["metrics"]}
        if m.group(1).lower() not in metrics_lower or int(m.group(2)) not in v["topk"]:
            raise ConfigError(f"valid_metric {v['valid_metric']!r} is not computed: metrics={v['metrics']}, "
                              f"topk={v['topk']}")
        if v["task"] not in TASKS:
            raise ConfigError(f"task ({self.sources['task']}) must be one of {TASKS}, got {v['task']!r}")
        if v["kg_finetune_loss"] not in KG_FINETUNE_LOSSES:
            raise ConfigError(f"kg_finetune_loss ({self.sources['kg_finetune_loss']}) must be one of "
                              f"{KG_FINETUNE_LOSSES}, got {v['kg_finetune_loss']!r}")
        unknown = [b for b in v["baselines"] if b not in MODELS or b == "KGGLM"]
        if unknown:
            raise ConfigError(f"baselines ({self.sources['baselines']}): unknown baseline(s) {unknown}; "
                              f"known: {', '.join(m for m in MODELS if m != 'KGGLM')}")
        hop = v["path_sample_args"]["pretrain_hop_length"]
        if isinstance(hop, int):
            v["path_sample_args"]["pretrain_hop_length"] = hop = [hop, hop]
        if len(hop) != 2 or not 1 <= int(hop[0]) <= int(hop[1]):
            raise ConfigError("path_sample_args.pretrain_hop_length must be [min, max] with 1 <= min <= max, "
                              f"got {hop}")

    # ------------------------------------------------------------------ mapping access
    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            raise KeyError(f"unknown config key {key!r}{_suggest(key, self._values)}")
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._values:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, self._values)}")
        self._apply({key: value}, "set in code") if key in self._defaults else self._values.__setitem__(key, value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config(model={self['model']!r}, dataset={self['dataset']!r})"

    # ------------------------------------------------------------------ views
    @property
    def model(self) -> str:
        return self._values["model"]

    @property
    def dataset(self) -> str:
        return self._values["dataset"]

    @property
    def device(self) -> str:
        """The torch device to use: ``device`` if set, else cuda when ``use_gpu`` and available."""
        from kgglm.distributed import resolve_device  # torch only when asked

        return str(resolve_device(self._values["device"], self._values["use_gpu"]))

    def sections(self) -> list[str]:
        return list(dict.fromkeys(d.section for d in self._docs))

    def section(self, name: str) -> dict:
        """Keys of one documented section (e.g. 'Model', 'Training') with their resolved values."""
        keys = [d.key for d in self._docs if d.section.lower() == name.lower() and "." not in d.key]
        if not keys:
            raise KeyError(f"unknown section {name!r}; sections: {', '.join(self.sections())}")
        return {k: _deep_copy(self._values[k]) for k in keys}

    def changed(self) -> dict:
        """Keys whose resolved value differs from the package default (plus model and dataset)."""
        out = {k: self._values[k] for k in ("model", "dataset", "preset") if self._values.get(k)}
        out.update({k: v for k, v in self._values.items() if k in self._defaults and v != self._defaults[k]})
        return _deep_copy(out)

    def to_dict(self) -> dict:
        return _deep_copy(self._values)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, directory: str | os.PathLike, name: str = "config.yaml") -> Path:
        """Write the resolved config as YAML (durably, :mod:`kgglm.durable`) and return its path."""
        path = Path(directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return durable.write_text(path, self.to_yaml(), encoding=None)

    def __str__(self) -> str:
        preset = f"  preset: {self['preset']}" if self["preset"] else ""
        lines = [f"model: {self.model}  dataset: {self.dataset}" + preset]
        for sec in self.sections():
            lines.append(f"[{sec}]")
            for key, value in self.section(sec).items():
                src = self.sources.get(key, "defaults")
                lines.append(f"  {key} = {value!r}" + ("" if src == "defaults" else f"   ({src})"))
        return "\n".join(lines)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def markdown_table() -> str:
    """The README's table of config keys: key, default and doc, grouped by section."""
    out, section = [], None
    for d in parse_defaults_doc():
        if d.section != section:
            section = d.section
            out += ["", f"**{section}**", "", "| key | default | meaning |", "|---|---|---|"]
        if isinstance(d.default, dict) and "." not in d.key:
            default = "mapping, below"
        else:
            default = yaml.safe_dump(d.default, default_flow_style=True, width=10_000, sort_keys=False)
            default = "`" + default.strip().removesuffix("...").strip() + "`"
        key = d.key if "." not in d.key else f"&nbsp;&nbsp;{d.key}"
        out.append(f"| `{key}` | {default} | {d.doc.replace('|', '/')} |")
    return "\n".join(out).strip() + "\n"


if __name__ == "__main__":  # python -m kgglm.config --markdown
    import sys

    if "--markdown" in sys.argv:
        sys.stdout.write(markdown_table())
    else:
        print(Config(cmd_args=sys.argv[1:]))
