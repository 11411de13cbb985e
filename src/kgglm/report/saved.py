"""Reading a run directory's saved files (no plotting library): what the report and the trackers share."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

RESULT_FILE = "result.json"
REPORT_FILE = "report.html"
RECOMMENDATIONS_FILE = "recommendations.jsonl"


class ReportError(ValueError):
    """A run directory that cannot be reported (no or unreadable ``result.json``)."""


def load_result(run_dir: str | os.PathLike) -> dict:
    """The run's ``result.json`` as a dict (a clear error when it is missing or not JSON)."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise ReportError(f"{path}: no result.json (not a finished kgglm run directory)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def metric_columns(result: dict, split: str = "test") -> dict[str, dict]:
    """Metrics of ``split`` (``test`` or ``valid``) of the run's model and of every baseline (or
    zero-shot model) of the run, one column each; the model's ``valid`` column is its best validation."""
    own = result.get("test_result" if split == "test" else "best_valid_result")
    cols = {result.get("model", "model"): own} if own else {}
    for name, res in (result.get("baselines") or {}).items():
        if res.get(split):
            cols[name] = res[split]
    return cols


def training_stages(result: dict) -> list[tuple[str, list, list]]:
    """``[(stage, [(step, loss)], [evaluation])]`` of a saved result, for both tasks."""
    stats = result.get("train_stats") or {}
    pre = stats.get("pretrain") or {}
    if result.get("train_stage") == "kg_completion":
        fin = stats.get("finetune") or {}
        stages = [
            ("pretrain", pre.get("losses") or [], []),
            ("finetune", fin.get("losses") or [], fin.get("history") or []),
        ]
    else:
        stages = [
            ("pretrain", pre.get("losses") or [], []),
            ("finetune", stats.get("losses") or [], result.get("history") or []),
        ]
    return [s for s in stages if s[1] or s[2]]


def path_patterns(run_dir: str | Path, top: int = 8) -> dict[str, float]:
    """Share of each relation sequence among the exported explanation paths (``recommendations.jsonl``)."""
    path = Path(run_dir) / RECOMMENDATIONS_FILE
    if not path.is_file():
        return {}
    counts: Counter[str] = Counter()
    with path.open() as f:
        for line in f:
            if line.strip():
                toks = json.loads(line).get("path") or []
                counts[" > ".join(toks[1::2])] += 1
    total = sum(counts.values())
    return {k: v / total for k, v in counts.most_common(top)} if total else {}
