"""The report's figures, drawn with matplotlib (Agg backend) from a run's saved ``result.json``.

Every function takes the plain dicts of saved files and returns a ``Figure``, or None when the
run holds nothing to draw for it (e.g. a baseline-only run has no loss curve).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402

from kgglm.report.saved import metric_columns, training_stages  # noqa: E402

# metrics drawn as bars: ranking metrics at a cut-off, and the knowledge-completion ones
_BAR_KEYS = ("mrr", "hits@1", "hits@3", "hits@10")


def training_figure(result: dict, label: str | None = None, axes: list | None = None) -> Figure | None:
    """Loss per logged step and the validation score per evaluation of each stage; the chosen
    (best) evaluation is marked with a star and a dashed line. Given ``axes`` (one per stage),
    the curves are drawn into them (several runs overlaid) and the figure of those axes returned."""
    stages = training_stages(result)
    if not stages:
        return None
    if axes is None:
        fig = plt.figure(figsize=(5.5 * len(stages), 3.6))
        axes = fig.subplots(1, len(stages), squeeze=False)[0].tolist()
    fig = axes[0].figure
    for ax, (stage, losses, history) in zip(axes, stages):
        if losses:
            steps, values = zip(*losses)
            ax.plot(steps, values, marker=".", label=f"{label + ': ' if label else ''}train loss")
        ax.set_title(f"{stage}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if history and label is None:  # the valid score on a second axis (one run only)
            twin = ax.twinx()
            steps = [h["step"] for h in history]
            twin.plot(
                steps,
                [h["score"] for h in history],
                color="tab:orange",
                marker="o",
                label=f"{label + ': ' if label else ''}valid score",
            )
            best = [h for h in history if h.get("best")]
            if best:
                chosen = best[-1]
                twin.plot(
                    [chosen["step"]],
                    [chosen["score"]],
                    marker="*",
                    markersize=16,
                    color="tab:red",
                    linestyle="none",
                    label=f"chosen: epoch {chosen['epoch']}",
                )
                ax.axvline(chosen["step"], color="tab:red", linestyle="--", linewidth=1)
            twin.set_ylabel("valid score")
            twin.legend(loc="upper right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def bar_metrics(columns: dict[str, dict]) -> list[str]:
    """The metrics every column has that are drawn as bars: ``name@k`` ones and MRR/Hits."""
    keys = None
    for col in columns.values():
        ok = [
            k
            for k, v in col.items()
            if isinstance(v, (int, float)) and ("@" in k or k in _BAR_KEYS) and not k.startswith(("type_", "anytail_"))
        ]
        keys = ok if keys is None else [k for k in keys if k in ok]
    return keys or []


def comparison_columns(result: dict) -> dict[str, dict]:
    """Test metrics of the run's model and of every baseline (or zero-shot model) of the run."""
    return metric_columns(result, "test")


def bars_figure(columns: dict[str, dict], title: str) -> Figure | None:
    """Grouped bars, one group per metric and one bar per column, each with its value."""
    keys = bar_metrics(columns)
    if not columns or not keys:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(keys) * max(len(columns), 2) * 0.6), 3.8))
    width = 0.8 / len(columns)
    for i, (name, col) in enumerate(columns.items()):
        xs = [j + (i - (len(columns) - 1) / 2) * width for j in range(len(keys))]
        bars = ax.bar(xs, [float(col[k]) for k in keys], width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set_ylim(0, max(1e-9, max(float(c[k]) for c in columns.values() for k in keys)) * 1.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def explanation_figure(result: dict, patterns: dict[str, float]) -> Figure | None:
    """Relation shares, path-pattern shares and the knowledge share of the test explanations."""
    test = result.get("test_result") or {}
    shares = {k.split(":", 1)[1]: float(v) for k, v in test.items() if k.startswith("share:")}
    if not shares and not patterns:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [2, 3, 1]})
    for ax, data, title in (
        (axes[0], shares, "relation share (hops 1..H-1)"),
        (axes[1], patterns, "path pattern share"),
    ):
        names = list(data)[::-1]
        bars = ax.barh(range(len(names)), [data[n] for n in names])
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xlim(0, 1.15)
        ax.set_title(title)
    kg = float(test.get("kg_share", 0.0))
    axes[2].bar(["KG entity", "users, items"], [kg, 1 - kg], color=["tab:green", "tab:gray"])
    axes[2].set_ylim(0, 1.1)
    axes[2].set_title(f"knowledge share {kg:.2f}")
    axes[2].tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def paths_figure(examples: list[dict], n: int = 4) -> Figure | None:
    """A few explained recommendations drawn as paths: node boxes joined by labelled relation arrows."""
    rows = [(ex["user"], rec) for ex in examples for rec in ex.get("recommendations", [])[:1]][:n]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(13, 1.3 * len(rows) + 0.4))
    ax.set_axis_off()
    ax.set_xlim(-0.5, 7.5)
    ax.set_ylim(-len(rows) + 0.4, 0.8)
    for y, (user, rec) in enumerate(rows):
        names = rec.get("path_names") or rec.get("path") or []
        nodes, rels = names[0::2], names[1::2]
        for i, node in enumerate(nodes):
            ax.text(
                2 * i,
                -y,
                _short(node),
                ha="center",
                va="center",
                fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "tab:blue" if i == 0 else "white", "alpha": 0.3},
            )
        for i, rel in enumerate(rels):
            ax.annotate("", xy=(2 * i + 1.45, -y), xytext=(2 * i + 0.55, -y), arrowprops={"arrowstyle": "->"})
            ax.text(2 * i + 1, -y + 0.25, _short(rel, 18), ha="center", fontsize=7, color="tab:red")
        ax.text(
            -0.5,
            -y + 0.5,
            f"user {_short(user)}: #{rec.get('rank')} {_short(rec.get('title', rec.get('item_name', '')), 40)}",
            fontsize=8,
            weight="bold",
        )
    fig.tight_layout()
    return fig


def _short(text, n: int = 22) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
