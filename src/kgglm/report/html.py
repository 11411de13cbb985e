"""``report.html``: one self-contained page (figures inlined as base64 PNG, no script, no CDN) built
from a run directory's saved files, with the same figures as PNG files beside it.

:func:`write_report` does one run (what ``kgglm run`` calls at its end); :func:`write_comparison`
puts several runs side by side (``kgglm report RUN_DIR RUN_DIR ...``). Every string that comes from
the data or the config is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import matplotlib.pyplot as plt
import yaml
from matplotlib.figure import Figure

from kgglm.report import figures
from kgglm.report.saved import REPORT_FILE, ReportError, load_result, path_patterns

__all__ = ["REPORT_FILE", "ReportError", "load_result", "write_comparison", "write_report"]

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}"
    "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}"
    ".runs{display:flex;gap:1em}.runs>div{flex:1;min-width:0}"
)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _table(columns: dict[str, dict]) -> str:
    """Metrics as an HTML table: one row per metric, one column per run/model."""
    keys = [k for col in columns.values() for k in col if isinstance(col[k], (int, float))]
    keys = list(dict.fromkeys(keys))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    rows = []
    for k in keys:
        cells = "".join(f"<td>{_fmt(col.get(k))}</td>" for col in columns.values())
        rows.append(f"<tr><th>{html.escape(str(k))}</th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape("" if v is None else str(v))


def _timings(result: dict) -> dict[str, dict]:
    """Seconds and throughput figures of the run, flattened per stage."""
    stats = result.get("train_stats") or {}
    out = {"run": {"seconds": result.get("seconds")}}
    for name, value in [("train", stats), *((k, v) for k, v in stats.items() if isinstance(v, dict))]:
        row = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if row:
            out[name] = row
    return out


def run_sections(run_dir: Path, result: dict, out_dir: Path, prefix: str = "") -> tuple[str, list[Path]]:
    """The HTML of one run's sections and the PNG files written into ``out_dir``."""
    parts, pngs = [], []
    drawn = [
        ("training", "Training loss and validation score", figures.training_figure(result)),
        (
            "metrics",
            "Test metrics beside the baselines",
            figures.bars_figure(figures.comparison_columns(result), "test metrics"),
        ),
        ("explanations", "Explanations", figures.explanation_figure(result, path_patterns(run_dir))),
        ("paths", "Explained recommendations", figures.paths_figure(result.get("examples") or [])),
    ]
    for name, title, fig in drawn:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if fig is None:
            parts.append("<p>(nothing to draw in this run)</p>")
            continue
        data = _png(fig)
        png = out_dir / f"{prefix}{name}.png"
        _atomic_write(png, data)
        pngs.append(png)
        parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">')
        if name == "metrics":
            parts.append(_table(figures.comparison_columns(result)))
        if name == "paths":
            items = "".join(
                f"<li>user {html.escape(str(ex['user']))}, #{rec.get('rank')} "
                f"{html.escape(str(rec.get('title', rec.get('item_name', rec.get('item')))))}: "
                f"{html.escape(str(rec.get('explanation', '')))}</li>"
                for ex in result.get("examples") or []
                for rec in ex.get("recommendations", [])[:3]
            )
            parts.append(f"<ul>{items}</ul>")
    parts.append("<h2>Timings</h2>" + _table(_timings(result)))
    config = yaml.safe_dump(result.get("config") or {}, sort_keys=True, allow_unicode=True)
    parts.append(f"<h2>Resolved config</h2><pre>{html.escape(config)}</pre>")
    return "\n".join(parts), pngs


def _page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _title(result: dict) -> str:
    return f"{result.get('model')} on {result.get('dataset')} ({result.get('train_stage')})"


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``RUN_DIR/report.html`` and its PNG figures from the run's saved files; return its path."""
    run_dir = Path(run_dir)
    result = load_result(run_dir)
    with plt.rc_context({"text.parse_math": False}):  # a '$' in a dataset name is no formula
        body, _ = run_sections(run_dir, result, run_dir)
    path = run_dir / REPORT_FILE
    header = f"<p>run directory: <code>{html.escape(str(run_dir))}</code></p>"
    _atomic_write(path, _page(_title(result), header + body).encode())
    return path


def write_comparison(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """Several runs side by side in ``OUT_DIR/report.html``: one metrics table and bar chart of their
    test metrics, their training curves overlaid, then each run's own sections in a column."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(Path(d), load_result(d)) for d in run_dirs]
    labels = [f"{i + 1}: {d.name}" for i, (d, _) in enumerate(runs)]
    columns = {lab: r.get("test_result") or {} for lab, (_, r) in zip(labels, runs)}
    parts = ["<h2>Test metrics of the runs</h2>", _table(columns)]
    with plt.rc_context({"text.parse_math": False}):
        figs = [("compare-metrics", figures.bars_figure(columns, "test metrics per run"))]
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), squeeze=False)
        for lab, (_, r) in zip(labels, runs):
            figures.training_figure(r, label=lab.split(":")[0], axes=axes[0].tolist())
        figs.append(("compare-training", fig))
        for name, fig in figs:
            if fig is not None:
                data = _png(fig)
                _atomic_write(out_dir / f"{name}.png", data)
                parts.append(f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">')
        cols = []
        for i, (lab, (d, r)) in enumerate(zip(labels, runs)):
            body, _ = run_sections(d, r, out_dir, prefix=f"run{i + 1}-")
            cols.append(f"<div><h2>{html.escape(lab)}</h2><p>{html.escape(_title(r))}</p>{body}</div>")
    parts.append(f"<div class='runs'>{''.join(cols)}</div>")
    path = out_dir / REPORT_FILE
    _atomic_write(path, _page(f"{len(runs)} kgglm runs", "\n".join(parts)).encode())
    return path
