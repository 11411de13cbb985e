"""--tracker: a tiny `kgglm run` logged to CSV (always), TensorBoard and MLflow (when installed),
read back with each tool's own reader and compared with the run's result.json."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atomic_helpers import TINY, write_atomic_dataset
from kgglm.cli import main
from kgglm.report.trackers import TrackerError, check_trackers, mlflow_name, scalars

HAVE = {name: importlib.util.find_spec(name) is not None for name in ("tensorboard", "mlflow", "wandb")}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """`kgglm run --tracker csv [--tracker tensorboard] [--tracker mlflow]` on the tiny dataset."""
    tmp = tmp_path_factory.mktemp("trackers")
    root = write_atomic_dataset(tmp / "data")
    conf = tmp / "tiny.yaml"
    conf.write_text(
        yaml.safe_dump({**TINY, "data_path": str(root), "checkpoint_dir": str(tmp / "saved"), "baselines": ["Pop"]})
    )
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["run", "-d", "toy", "--config-files", str(conf), "--tracker", "csv"]
    args += [a for name in ("tensorboard", "mlflow") if HAVE[name] for a in ("--tracker", name)]
    assert main(args) == 0
    mp.undo()
    run_dir = next((tmp / "saved").glob("KGGLM-toy-run-*"))
    return tmp, run_dir, json.loads((run_dir / "result.json").read_text())


def test_csv_tracker_holds_config_losses_evaluations_and_test(tracked):
    _, run_dir, result = tracked
    rows = list(csv.DictReader((run_dir / "tracker.csv").open()))
    params = {r["key"]: r["value"] for r in rows if r["kind"] == "param"}
    assert params["embedding_size"] == str(TINY["embedding_size"]) and params["eval_args.order"]
    metric = [(r["key"], int(r["step"]), float(r["value"])) for r in rows if r["kind"] == "metric"]
    losses = [(s, v) for k, s, v in metric if k == "finetune/loss"]
    assert losses == [tuple(x) for x in result["train_stats"]["losses"]]
    assert [(s, v) for k, s, v in metric if k == "pretrain/loss"] == [
        tuple(x) for x in result["train_stats"]["pretrain"]["losses"]
    ]
    evals = [(s, v) for k, s, v in metric if k == "finetune/valid/ndcg@5"]
    assert evals == [(h["step"], h["metrics"]["ndcg@5"]) for h in result["history"]]
    test = {k: v for k, _, v in metric if k.startswith("test/")}
    assert test["test/ndcg@5"] == result["test_result"]["ndcg@5"]
    assert test["test/Pop/ndcg@5"] == result["baselines"]["Pop"]["test"]["ndcg@5"]
    assert [r["value"] for r in rows if r["kind"] == "artifact"] == [str(run_dir)]


@pytest.mark.skipif(not HAVE["tensorboard"], reason="tensorboard not installed")
def test_tensorboard_event_files_read_back(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, run_dir, result = tracked
    acc = EventAccumulator(str(tmp / "saved" / "tensorboard" / run_dir.name))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("finetune/loss")]
    want = result["train_stats"]["losses"]
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    assert acc.Scalars("test/ndcg@5")[0].value == pytest.approx(result["test_result"]["ndcg@5"], rel=1e-6)
    assert len(acc.Scalars("finetune/valid/ndcg@5")) == len(result["history"])


@pytest.mark.skipif(not HAVE["mlflow"], reason="mlflow not installed")
def test_mlflow_file_store_reads_back(tracked, monkeypatch):
    import mlflow

    tmp, run_dir, result = tracked
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=(tmp / "saved" / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("kgglm")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == run_dir.name and run.data.params["embedding_size"] == str(TINY["embedding_size"])
    hist = client.get_metric_history(run.info.run_id, "finetune/loss")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [
        tuple(x) for x in result["train_stats"]["losses"]
    ]
    assert run.data.metrics[mlflow_name("test/ndcg@5")] == result["test_result"]["ndcg@5"]
    names = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/result.json", "run/report.html"} <= names


def _wandb_records(path: Path) -> list:
    """The records of an offline ``.wandb`` file, parsed with wandb's own protobuf classes.

    wandb >= 0.19 ships no Python reader (its Go core writes the file): the container is a 7-byte
    header (``:W&B``, magic, version) and LevelDB-log framing (32 KiB blocks; per chunk a CRC32C,
    a 2-byte length and a type: 1 full, 2 first, 3 middle, 4 last), each payload a ``Record``."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, partial = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(payload)
        elif kind in (2, 3):
            partial = (partial if kind == 3 else b"") + payload
        elif kind == 4:
            chunks.append(partial + payload)
    return [pb.Record.FromString(c) for c in chunks]


@pytest.mark.skipif(not HAVE["wandb"], reason="wandb not installed")
def test_wandb_offline_run(tracked, monkeypatch):
    from kgglm.report.trackers import log_run

    _, run_dir, result = tracked
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_id = log_run(run_dir, ["wandb"])["wandb"]
    (found,) = run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    records = _wandb_records(found)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == run_id and run.display_name == run_dir.name
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["embedding_size"] == str(TINY["embedding_size"])  # flat_params: strings, as MLflow params
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    losses = [(h["finetune/step"], h["finetune/loss"]) for h in history if "finetune/loss" in h]
    assert losses == [tuple(x) for x in result["train_stats"]["losses"]]
    evals = [h["finetune/valid/ndcg@5"] for h in history if "finetune/valid/ndcg@5" in h]
    assert evals == [h["metrics"]["ndcg@5"] for h in result["history"]]
    (test,) = [h["test/ndcg@5"] for h in history if "test/ndcg@5" in h]
    assert test == result["test_result"]["ndcg@5"]


def test_scalars_and_errors(tracked):
    _, _, result = tracked
    keys = {k for k, _, _ in scalars(result)}
    assert {"pretrain/loss", "finetune/loss", "finetune/valid/score", "test/ndcg@5", "test/Pop/ndcg@5"} <= keys
    with pytest.raises(TrackerError, match="expected one of"):
        check_trackers(["nope"])
    for name, installed in HAVE.items():
        if not installed:
            with pytest.raises(TrackerError, match=f"kgglm\\[{name}\\]"):
                check_trackers([name])
    assert mlflow_name("finetune/valid/share:[UI-Relation]@5") == "finetune/valid/share:_UI-Relation__at_5"


def test_nothing_imported_unless_asked():
    code = (
        "import sys, kgglm.cli, kgglm.report.trackers, kgglm.quick_start; "
        "print(sorted(m for m in ('mlflow', 'wandb', 'tensorboard', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    assert out.stdout.strip() == "[]"
