"""Experiment trackers: a finished run's saved ``result.json`` logged to TensorBoard, MLflow,
Weights & Biases or a CSV file, through each tool's own client.

What is logged (PyKEEN's result trackers are the model): the resolved config as parameters, the
training loss per logged step and every evaluation's metrics of each stage (``STAGE/loss``,
``STAGE/valid/METRIC`` at the stage's own step), the final test metrics of the model and of every
baseline (``test/METRIC``, ``test/BASELINE/METRIC``), and the run directory as an artifact.

Nothing is imported unless its tracker is asked for: ``pip install kgglm[tensorboard]`` (or
``mlflow``, ``wandb``). Where runs go: TensorBoard ``CHECKPOINT_DIR/tensorboard/RUN``; MLflow the
``MLFLOW_TRACKING_URI`` (default ``file:CHECKPOINT_DIR/mlruns``), experiment = the study (``kgglm
tune``) or ``kgglm``; W&B project ``WANDB_PROJECT`` (default ``kgglm``), group = the study, offline
when ``WANDB_MODE=offline``; CSV ``RUN_DIR/tracker.csv``.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from pathlib import Path

from kgglm.report.saved import load_result, training_stages

TRACKERS = ("tensorboard", "mlflow", "wandb", "csv")
CSV_FILE = "tracker.csv"


class TrackerError(ValueError):
    """An unknown tracker, or a tracker whose package is not installed."""


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """The config as flat ``a.b`` keys with string values (what every tool takes as parameters)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, name + "."))
        else:
            out[name] = str(value)[:500]  # MLflow's limit on a parameter value
    return out


def scalars(result: dict) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of everything numeric a run logs: losses, evaluations, test metrics."""
    out = []
    for stage, losses, history in training_stages(result):
        out += [(f"{stage}/loss", float(v), int(s)) for s, v in losses]
        for h in history:
            metrics = h.get("metrics") or {"score": h["score"]}
            out += [(f"{stage}/valid/{k}", float(v), int(h["step"])) for k, v in metrics.items() if _num(v)]
    final = max((s for _, _, s in out), default=0)
    for k, v in (result.get("test_result") or {}).items():
        if _num(v):
            out.append((f"test/{k}", float(v), final))
    for name, res in (result.get("baselines") or {}).items():
        out += [(f"test/{name}/{k}", float(v), final) for k, v in (res.get("test") or {}).items() if _num(v)]
    return out


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _run_name(run_dir: Path) -> str:
    return run_dir.name


def log_tensorboard(result: dict, run_dir: Path, study: str | None = None) -> Path:
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

    root = Path(result.get("config", {}).get("checkpoint_dir") or run_dir.parent) / "tensorboard"
    logdir = root / (study or "") / _run_name(run_dir)
    writer = SummaryWriter(log_dir=str(logdir))
    for key, value, step in scalars(result):
        writer.add_scalar(key, value, step)
    params = flat_params(result.get("config") or {})
    writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(params.items())))
    writer.add_text("run_dir", str(run_dir))
    writer.close()
    return logdir


def mlflow_name(key: str) -> str:
    """``key`` in the characters MLflow allows in a metric name (``ndcg@10`` -> ``ndcg_at_10``)."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key.replace("@", "_at_"))


def log_mlflow(result: dict, run_dir: Path, study: str | None = None) -> str:
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        root = Path(result.get("config", {}).get("checkpoint_dir") or run_dir.parent).resolve() / "mlruns"
        uri = root.as_uri()
    if uri.startswith("file:"):  # MLflow 3 keeps the file store only on request
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=uri)
    name = study or "kgglm"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=_run_name(run_dir), tags={"kgglm.study": study or ""})
    rid = run.info.run_id
    params = [mlflow.entities.Param(k, v) for k, v in flat_params(result.get("config") or {}).items()]
    metrics = [mlflow.entities.Metric(mlflow_name(k), v, 0, s) for k, v, s in scalars(result)]
    for i in range(0, max(len(params), len(metrics)), 100):  # log_batch's limits per call
        client.log_batch(rid, metrics=metrics[i : i + 100], params=params[i : i + 100])
    client.log_artifacts(rid, str(run_dir), artifact_path="run")
    client.set_terminated(rid)
    return rid


def log_wandb(result: dict, run_dir: Path, study: str | None = None) -> str:
    import wandb

    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "kgglm"),
        name=_run_name(run_dir),
        group=study,
        config=flat_params(result.get("config") or {}),
        dir=str(run_dir),
        reinit=True,
    )
    for stage, *_ in training_stages(result):
        wandb.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
    for key, value, step in scalars(result):
        stage = key.split("/", 1)[0]
        run.log({key: value, f"{stage}/step": step} if stage != "test" else {key: value})
    artifact = wandb.Artifact(f"run-{_run_name(run_dir)}".replace(":", "-"), type="run")
    artifact.add_dir(str(run_dir))
    run.log_artifact(artifact)
    run.finish()
    return run.id


def log_csv(result: dict, run_dir: Path, study: str | None = None) -> Path:
    """``RUN_DIR/tracker.csv``: one row per logged value (``kind, key, step, value``)."""
    path = run_dir / CSV_FILE
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "key", "step", "value"])
        w.writerows(["param", k, "", v] for k, v in sorted(flat_params(result.get("config") or {}).items()))
        w.writerows(["metric", k, s, repr(v)] for k, v, s in scalars(result))
        w.writerow(["artifact", "run_dir", "", str(run_dir)])
    os.replace(tmp, path)
    return path


_LOGGERS = {"tensorboard": log_tensorboard, "mlflow": log_mlflow, "wandb": log_wandb, "csv": log_csv}
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def check_trackers(names: Iterable[str]) -> list[str]:
    """The tracker names, checked: known, and their package installed (before a run starts)."""
    import importlib.util

    names = list(dict.fromkeys(names or []))
    for name in names:
        if name not in TRACKERS:
            raise TrackerError(f"--tracker {name!r}: expected one of {', '.join(TRACKERS)}")
        pkg = _PACKAGES.get(name)
        if pkg and importlib.util.find_spec(pkg) is None:
            raise TrackerError(f"--tracker {name}: the {pkg} package is not installed (pip install 'kgglm[{name}]')")
    return names


def log_run(run_dir: str | os.PathLike, trackers: Iterable[str], study: str | None = None) -> dict[str, object]:
    """Log the run saved in ``run_dir`` to every tracker in ``trackers``; ``{tracker: where}``."""
    run_dir = Path(run_dir)
    result = load_result(run_dir)
    return {name: _LOGGERS[name](result, run_dir, study) for name in check_trackers(trackers)}
