"""Quality table: KGGLM at chosen presets beside Pop, BPR, LightGCN, EASE, ItemKNN and KGItemKNN, on one split.

For each data set every model is trained and evaluated by the library's own entry points
(``run_pipeline`` for KGGLM, ``run_kgglm`` for a baseline), so they share the split, the seen-item
masks and the evaluator; the model is chosen on valid, the table shows test. Columns:
NDCG/Recall/MRR/Hit@10, the share of explanations through a KG entity, ETD, wall time and CPU
seconds (this process's, all threads). ``--kgglm none`` runs the baselines only.

    python benchmarks/bench_quality.py --dataset ml-100k --data-path ../shared/data \
        --kgglm quick --kgglm "quick+marginal:--path_generation_args.ranking=marginal" \
        --baselines Pop,BPR,LightGCN,EASE,ItemKNN,KGItemKNN --out benchmarks/results/quality-ml-100k.md

``--set KEY=VALUE`` overrides a config key for every model (``--set paper_ndcg=true`` adds the paper
code's ``ndcg_paper@10`` column).

A ``--kgglm`` variant is ``NAME[:--key=value ...]``: NAME is a preset (``quick``, ``cpu``, ``paper``)
or ``NAME+label``; what follows the colon are config overrides. A ``--decode`` variant
``LABEL:--path_generation_args.KEY=VALUE ...`` re-evaluates the first KGGLM variant's chosen checkpoint
(valid and test) with other decoding settings: the decoding ablation, on one trained model. The
synthetic knowledge-signal data set is written to a temporary folder first with ``--dataset
synthetic-kg`` (its generator's defaults).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kgglm.quick_start import evaluate_checkpoint, run_kgglm, run_pipeline

COLUMNS = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "kg_share", "etd", "coverage@10")


def parse_variant(text: str) -> tuple[str, str | None, list[str]]:
    """``quick+marginal:--a=1 --b=2`` -> (label, preset, overrides)."""
    name, _, rest = text.partition(":")
    preset = name.split("+")[0] or None
    return name, (None if preset == "default" else preset), shlex.split(rest)


def run_all(args: argparse.Namespace, data_path: str, workdir: str) -> list[dict]:
    rows = []
    common = [f"--data_path={data_path}", f"--checkpoint_dir={workdir}", "--show_progress=false", "--state=WARNING",
              f"--seed={args.seed}"] + [f"--{kv}" for kv in args.set or []]
    for variant in args.kgglm:
        label, preset, overrides = parse_variant(variant)
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_pipeline("KGGLM", args.dataset, cmd_args=common + ["--baselines=[]"] + overrides, preset=preset)
        rows.append({"model": f"KGGLM {label}", "valid": res.best_valid_score, **res.test_result,
                     "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                     "epochs": res.train_stats.get("epochs")})
        print(f"  KGGLM {label}: test ndcg@10 {res.test_result['ndcg@10']:.4f}", flush=True)
        if variant == args.kgglm[0]:
            rows += decode_ablation(args, res.checkpoint, label, data_path)
    for name in [b for b in args.baselines.split(",") if b]:
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_kgglm(name, args.dataset, cmd_args=common, saved=False)
        rows.append({"model": name, "valid": res.best_valid_score, **res.test_result,
                     "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                     "epochs": res.train_stats.get("epochs"), "chosen": chosen_value(res.train_stats)})
        print(f"  {name}: test ndcg@10 {res.test_result['ndcg@10']:.4f}", flush=True)
    return rows


def decode_ablation(args: argparse.Namespace, checkpoint: str, label: str, data_path: str) -> list[dict]:
    """Rows of the ``--decode`` variants: the same checkpoint evaluated on valid and test."""
    rows = []
    for variant in args.decode or []:
        name, _, rest = variant.partition(":")
        t0, c0 = time.perf_counter(), time.process_time()
        over = shlex.split(rest) + ["--show_progress=false", "--state=WARNING"]
        valid = evaluate_checkpoint(checkpoint, "valid", data_path=data_path, cmd_args=over)
        test = evaluate_checkpoint(checkpoint, "test", data_path=data_path, cmd_args=over)
        rows.append({"model": f"KGGLM {label}, decode {name}", "valid": valid["ndcg@10"], **test,
                     "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                     "epochs": "(same)"})
        print(f"  decode {name}: valid ndcg@10 {valid['ndcg@10']:.4f} test {test['ndcg@10']:.4f}", flush=True)
    return rows


def chosen_value(stats: dict) -> str | None:
    """The grid value a baseline chose on valid (EASE's ``reg_weight``, ItemKNN's ``k``), as ``key=value``."""
    key = next((k for k in ("reg_weight", "k") if stats.get(k) is not None), None)
    return f"{key}={stats[key]:g}" if key else None


def table(rows: list[dict]) -> str:
    columns = COLUMNS + tuple(c for c in ("ndcg_paper@10",) if any(c in r for r in rows))
    head = ("| model | valid ndcg@10 | " + " | ".join(f"test {c}" for c in columns)
            + " | epochs | seconds | CPU seconds |")
    lines = [head, "|" + "---|" * (len(columns) + 5)]
    for r in rows:
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), float) else "-" for c in columns]
        valid = f"{r['valid']:.4f}" if isinstance(r.get("valid"), float) else "-"
        model = f"{r['model']} ({r['chosen']})" if r.get("chosen") else r["model"]
        lines.append(f"| {model} | {valid} | " + " | ".join(cells) + f" | {r.get('epochs') or '-'} | "
                     f"{r['seconds']:.0f} | {r['cpu_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k", help="ml-100k, ml1m, or synthetic-kg (generated)")
    p.add_argument("--data-path", default="../shared/data")
    p.add_argument("--kgglm", action="append", default=None,
                   help="a KGGLM variant (repeat); default quick; 'none': baselines only")
    p.add_argument("--decode", action="append", default=None,
                   help="decoding variant LABEL:--path_generation_args.KEY=VALUE ... of the first KGGLM (repeat)")
    p.add_argument("--baselines", default="Pop,BPR,LightGCN,EASE,ItemKNN,KGItemKNN")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="a config override for every model (repeat), e.g. paper_ndcg=true")
    p.add_argument("--out", default=None, help="write the table (markdown) here")
    args = p.parse_args(argv)
    args.kgglm = [v for v in args.kgglm or ["quick"] if v.lower() != "none"]
    with tempfile.TemporaryDirectory(prefix="kgglm-quality-") as work:
        data_path = args.data_path
        if args.dataset == "synthetic-kg":
            from kgglm.synthetic.small import make_knowledge_dataset, write_atomic

            data_path = str(Path(work) / "data")
            write_atomic(make_knowledge_dataset(name="synthetic-kg"), data_path)  # -> DATA_PATH/synthetic-kg/
        t0 = time.perf_counter()
        rows = run_all(args, data_path, work)
    emit(f"### {args.dataset}\n\n{table(rows)}\n\n{provenance(__file__, t0)}", args.out)
    return 0


def provenance(script: str, t0: float) -> str:
    """The line under a results table: the command that made it, the machine, the date, the total time."""
    return (f"Command: `python benchmarks/{Path(script).name} {' '.join(shlex.quote(a) for a in sys.argv[1:])}`; "
            f"{platform.node()} ({platform.processor() or platform.machine()}), "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, total {time.perf_counter() - t0:.0f} s.\n")


def emit(text: str, out: str | None) -> None:
    """Print a results table and write it to ``out`` when given."""
    print(text)
    if out:
        Path(out).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
