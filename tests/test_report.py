"""report.html of a tiny run: written by every run, self-contained, figures that decode and are not
blank, dataset strings escaped, numbers that are the run's own, several runs side by side."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from atomic_helpers import TINY, write_atomic_dataset
from kgglm.cli import main
from kgglm.quick_start import run_pipeline
from kgglm.report.html import REPORT_FILE, write_report
from kgglm.report.saved import path_patterns

EVIL = '<script>alert("x")</script>'


def _images(page: str) -> list:
    blobs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [mpimg.imread(io.BytesIO(base64.b64decode(b)), format="png") for b in blobs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny recommendation run on a dataset whose item names hold a script tag, and a tiny
    knowledge-completion run."""
    tmp = tmp_path_factory.mktemp("report")
    root = write_atomic_dataset(tmp / "data")
    item = root / "toy" / "toy.item"
    lines = item.read_text().splitlines()
    item.write_text(
        "\n".join([lines[0]] + [f"{ln.split(chr(9))[0]}\t{EVIL} {i}" for i, ln in enumerate(lines[1:])]) + "\n"
    )
    base = {**TINY, "data_path": str(root), "checkpoint_dir": str(tmp / "saved"), "baselines": ["Pop", "BPR"]}
    rec = run_pipeline("KGGLM", "toy", config_dict=base)
    kgc = run_pipeline("KGGLM", "toy", config_dict={**base, "task": "kg_completion"})
    return tmp, Path(rec.run_dir), Path(kgc.run_dir)


def test_every_run_writes_a_self_contained_report(runs):
    _, rec, kgc = runs
    for run_dir, names in ((rec, ("training", "metrics", "explanations", "paths")), (kgc, ("training", "metrics"))):
        page = (run_dir / REPORT_FILE).read_text()
        assert "http://" not in page and "https://" not in page  # no CDN, no remote resource
        images = _images(page)
        assert len(images) == len(names)
        for img in images:
            assert img.ndim == 3 and img.shape[0] > 100 and img.var() > 0  # decodes, not blank
        for name in names:  # the same figures as files beside it
            png = mpimg.imread(run_dir / f"{name}.png")
            assert png.var() > 0
        assert json.loads((run_dir / "result.json").read_text())["files"]["report"] == str(run_dir / REPORT_FILE)


def test_dataset_strings_are_escaped(runs):
    _, rec, _ = runs
    result = json.loads((rec / "result.json").read_text())
    assert any(EVIL in r["title"] for ex in result["examples"] for r in ex["recommendations"])
    page = (rec / REPORT_FILE).read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_report_shows_the_runs_own_numbers(runs):
    """The metrics table holds result.json's test values; the saved loss curve ends on the run's
    last loss, and the chosen evaluation is the best-scoring one."""
    _, rec, kgc = runs
    result = json.loads((rec / "result.json").read_text())
    page = (rec / REPORT_FILE).read_text()
    for name, col in [("KGGLM", result["test_result"])] + [(n, b["test"]) for n, b in result["baselines"].items()]:
        assert f"<th>{name}</th>" in page
        assert f"<td>{col['ndcg@5']:.4f}</td>" in page
    stats = result["train_stats"]
    assert stats["losses"][-1][1] == pytest.approx(stats["last_loss"])
    assert stats["pretrain"]["losses"][-1][1] == pytest.approx(stats["pretrain"]["last_loss"])
    best = [h for h in result["history"] if h["best"]][-1]
    assert best["score"] == max(h["score"] for h in result["history"]) == pytest.approx(result["best_valid_score"])
    kg = json.loads((kgc / "result.json").read_text())["train_stats"]["finetune"]
    assert kg["losses"][-1][1] == pytest.approx(kg["finetune_loss"])
    # path patterns: shares of relation sequences over the export, counted here independently
    rows = [json.loads(line) for line in (rec / "recommendations.jsonl").read_text().splitlines()]
    seqs = [tuple(r["path"][1::2]) for r in rows]
    top, share = next(iter(path_patterns(rec).items()))
    assert share == pytest.approx(max(seqs.count(s) for s in set(seqs)) / len(seqs))
    assert seqs.count(tuple(top.split(" > "))) / len(seqs) == pytest.approx(share)


def test_report_command_rebuilds_and_compares(runs, capsys):
    tmp, rec, kgc = runs
    (rec / REPORT_FILE).unlink()
    assert main(["report", str(rec)]) == 0
    assert (rec / REPORT_FILE).is_file() and len(_images((rec / REPORT_FILE).read_text())) == 4
    out = tmp / "cmp"
    assert main(["report", str(rec), str(kgc), "--out", str(out)]) == 0
    page = (out / REPORT_FILE).read_text()
    assert rec.name in page and kgc.name in page and (out / "compare-training.png").is_file()
    assert all(img.var() > 0 for img in _images(page))
    assert main(["report", str(tmp / "nowhere")]) == 2
    assert "no result.json" in capsys.readouterr().err
    assert write_report(rec) == rec / REPORT_FILE
