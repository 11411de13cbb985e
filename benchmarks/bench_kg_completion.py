"""Knowledge completion benchmark: KGGLM (small, zero-shot and fine-tuned) vs PyKEEN KGE baselines.

Same split, same filtered protocol (kgglm.evaluate.kg_ranking), CPU time per stage. Run with::

    nice -n 10 python benchmarks/bench_kg_completion.py --dataset ml-100k --part kgglm --out /tmp/kgc_kgglm.json
    nice -n 10 python benchmarks/bench_kg_completion.py --dataset ml-100k --part kge --kge-budget 600 \
        --out /tmp/kgc_kge.json
    python benchmarks/bench_kg_completion.py --table /tmp/kgc_kgglm.json /tmp/kgc_kge.json

``--threads 1`` (default) keeps timings comparable on a shared machine; CPU seconds are
``time.process_time`` (user + system of this process).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch

from kgglm.data import load_dataset
from kgglm.data.kg_split import load_kg_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KEYS = ("mrr", "hits@1", "hits@3", "hits@10", "mr")


def load(dataset: str, data_path: Path, seed: int):
    extra = {"benchmark_filename": ["train", "valid", "test"]} if dataset == "ml1m" else {}
    data = load_dataset(dataset, data_path=data_path, seed=seed, **extra)
    return load_kg_split(data, seed=seed)


def run_kgglm(split, args) -> dict:
    from kgglm.tasks.kg_completion import run_kg_completion

    config = {"seed": args.seed, "embedding_size": args.width, "num_heads": 4, "num_layers": args.layers,
              "dropout": 0.0, "learning_rate": args.lr, "warmup_steps": 100, "train_batch_size": args.batch,
              "eval_batch_size": 512, "pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs,
              "stopping_step": args.stopping_step, "kg_finetune_loss": args.kg_loss, "save_step": 100000,
              "device": "cpu", "show_progress": False,
              "path_sample_args": {"pretrain_paths": args.pretrain_paths, "pretrain_hop_length": [3, 3],
                                   "pretrain_max_paths": args.pretrain_max_paths}}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        res = run_kg_completion(config, split.dataset, run_dir=run_dir, split=split,
                                finetune_max_steps=args.finetune_max_steps).to_dict()
    res["cpu_seconds"] = round(time.process_time() - cpu0, 1)
    res["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    res["config"] = config
    return res


def run_kge(split, args) -> dict:
    from kgglm.baselines.kge import evaluate_kge, train_kge

    out = {}
    for name in args.kge_models:
        cpu0 = time.process_time()
        r = train_kge(name, split, embedding_dim=args.kge_dim, epochs=args.kge_epochs, batch_size=args.kge_batch,
                      learning_rate=args.kge_lr, seed=args.seed, time_budget_s=args.kge_budget, loop=args.kge_loop,
                      select_on_valid=args.kge_valid_every > 0, valid_every_s=args.kge_valid_every)
        test = evaluate_kge(r, split, "test", with_pykeen=not args.no_pykeen_eval)
        out[name] = {"test": test, "pykeen_test": r.pykeen_metrics.get("test"), "epochs": r.epochs,
                     "best_epoch": r.best_epoch, "valid_history": r.valid_history,
                     "train_cpu_seconds": r.train_cpu_seconds, "train_wall_seconds": r.train_wall_seconds,
                     "cpu_seconds": round(time.process_time() - cpu0, 1)}
        print(name, json.dumps(out[name]), flush=True)
    return out


def _row(name: str, m: dict, cpu: float | str, note: str = "") -> str:
    cells = [f"{m[k]:.4f}" if k != "mr" else f"{m[k]:.1f}" for k in KEYS]
    any_cells = [f"{m['anytail_mrr']:.4f}", f"{m['anytail_hits@10']:.4f}"] if "anytail_mrr" in m else ["", ""]
    type_cell = f"{m['type_mrr']:.4f}" if "type_mrr" in m else ""
    return f"| {name} | {' | '.join(cells)} | {type_cell} | {' | '.join(any_cells)} | {cpu} | {note} |"


def table(files: list[str]) -> str:
    header = ("| model | MRR | Hits@1 | Hits@3 | Hits@10 | MR | type-restricted MRR | any-tail MRR | any-tail Hits@10 "
              "| train CPU s | note |")
    lines = [header, "|" + "---|" * 11]
    for f in files:
        res = json.loads(Path(f).read_text())
        if "kgglm" in res:
            k = res["kgglm"]
            pre = k["pretrain"].get("pretrain_cpu_seconds", 0.0)
            lines.append(_row("KGGLM zero-shot (gen-only)", k["zero_shot"]["test"], f"{pre}",
                              f"{k['pretrain'].get('pretrain_paths', '')} walks"))
            ft = k["finetune"]
            lines.append(_row("KGGLM fine-tuned (gen+spec)", k["finetuned"]["test"],
                              f"{round(pre + ft['finetune_cpu_seconds'], 1)}",
                              f"{ft['finetune_steps']} steps, {len(ft['history'])} evals (incl.)"))
        for name, r in res.get("kge", {}).items():
            py = r.get("pykeen_test")
            note = f"{r['epochs']} ep" + (f", best on valid: ep {r['best_epoch']}" if r.get("best_epoch") else "") \
                + (f"; PyKEEN evaluator MRR {py['mrr']:.4f}" if py else "")
            lines.append(_row(f"{name} (PyKEEN)", r["test"], f"{r['train_cpu_seconds']}", note))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-path", type=Path, default=DATA)
    p.add_argument("--part", choices=["kgglm", "kge", "both"], default="both")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--pretrain-epochs", type=int, default=1)
    p.add_argument("--pretrain-paths", type=int, default=1)
    p.add_argument("--pretrain-max-paths", type=int, default=None)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--finetune-max-steps", type=int, default=None)
    p.add_argument("--stopping-step", type=int, default=2)
    p.add_argument("--kg-loss", choices=["one_to_n", "paths"], default="one_to_n",
                   help="kg_finetune_loss (rows before 2026-12-01 05:00 UTC were made with paths)")
    p.add_argument("--kge-models", nargs="+", default=["TransE", "DistMult", "RotatE", "ComplEx"])
    p.add_argument("--kge-dim", type=int, default=64)
    p.add_argument("--kge-epochs", type=int, default=200)
    p.add_argument("--kge-batch", type=int, default=1024)
    p.add_argument("--kge-loop", choices=["slcwa", "lcwa"], default="slcwa")
    p.add_argument("--kge-lr", type=float, default=1e-2)
    p.add_argument("--kge-budget", type=float, default=300.0, help="CPU seconds of training per KGE model")
    p.add_argument("--kge-valid-every", type=float, default=0.0,
                   help="CPU seconds between valid-MRR checks; the best check's weights are tested (0: last epoch)")
    p.add_argument("--no-pykeen-eval", action="store_true", help="skip PyKEEN's own evaluator (ours only)")
    p.add_argument("--out", type=Path)
    p.add_argument("--table", nargs="+", help="print the markdown table of these result files and exit")
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pykeen").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    split = load(args.dataset, args.data_path, args.seed)
    result = {"dataset": args.dataset, "split": split.stats, "args": {k: str(v) for k, v in vars(args).items()},
              "machine": f"{platform.machine()} {platform.processor()} torch {torch.__version__}, "
                         f"{args.threads} thread(s)", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.part in ("kgglm", "both"):
        result["kgglm"] = run_kgglm(split, args)
        print(json.dumps({k: result["kgglm"][k] for k in ("zero_shot", "finetuned")}, indent=1), flush=True)
    if args.part in ("kge", "both"):
        result["kge"] = run_kge(split, args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
