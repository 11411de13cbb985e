"""The pre-training question at size: fine-tuning from a real pre-training against from scratch at equal CPU.

For one data set and preset:

1. pre-train on many KG walks (``--walks`` of them, ``--walks-per-node`` from each KG node, for
   ``--pretrain-epochs`` epochs; the loss at the end of each epoch is printed, to show it flattened),
2. fine-tune that checkpoint with the preset (``pre_model_path``),
3. fine-tune a fresh model with the preset (``pretrain_epochs: 0``) for as many more epochs as the
   pre-training's CPU seconds buy at the pre-trained fine-tuning's CPU seconds per epoch (early
   stopping on valid may end it sooner: that is its choice on valid, not a cut),

and writes one markdown table: valid/test NDCG@10, the epoch chosen on valid, walks, tokens, CPU
seconds of each part. Every run goes through the library's entry points (``run_kgglm`` for the
pre-training stage, ``run_pipeline`` for the fine-tuning and test), so the splits, masks and the
evaluator are the runs' own.

    python benchmarks/bench_pretraining.py --dataset ml-100k-dbpedia --preset quick \\
        --walks 200000 --walks-per-node 25 --pretrain-epochs 2 --set history_expert_args.dim=0 \\
        --out /tmp/pretraining-ml-100k-dbpedia.md
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_quality import emit, provenance

from kgglm.quick_start import run_kgglm, run_pipeline


def epoch_end_losses(stats: dict, n_epochs: int) -> list[float]:
    """The mean logged training loss over the last fifth of each epoch (steps split evenly by epoch)."""
    losses = stats.get("losses") or []
    steps = int(stats.get("steps") or 0)
    if not losses or steps == 0:
        return []
    per = steps / n_epochs
    out = []
    for e in range(1, n_epochs + 1):
        window = [v for s, v in losses if e * per - per / 5 <= s <= e * per]
        out.append(sum(window) / len(window) if window else float("nan"))
    return out


def timed(fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    res = fn(*args, **kwargs)
    return res, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k-dbpedia")
    p.add_argument("--data-path", default="../shared/data")
    p.add_argument("--preset", default="quick")
    p.add_argument("--walks", type=int, default=200_000, help="pre-training walks kept (a seeded subset)")
    p.add_argument("--walks-per-node", type=int, default=25, help="walks drawn from each KG node")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--hops", type=int, default=3, help="hops of every pre-training walk")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="a config override for every run (repeat)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kgglm-pretraining-") as work:
        common = [f"--data_path={args.data_path}", f"--checkpoint_dir={work}", "--show_progress=false",
                  "--state=WARNING"] + [f"--{kv}" for kv in args.set or []]
        walks = [f"--path_sample_args.pretrain_paths={args.walks_per_node}",
                 f"--path_sample_args.pretrain_max_paths={args.walks}", f"--pretrain_epochs={args.pretrain_epochs}",
                 f"--path_sample_args.pretrain_hop_length=[{args.hops},{args.hops}]"]
        t_start = time.perf_counter()
        pre, pre_wall, pre_cpu = timed(run_kgglm, "KGGLM", args.dataset, preset=args.preset, saved=False,
                                       cmd_args=common + walks + ["--train_stage=pretrain"])
        stats = pre.train_stats
        losses = epoch_end_losses(stats, args.pretrain_epochs)
        print(f"pre-training: {stats.get('corpus_paths')} walks, losses by epoch {losses}, {pre_cpu:.0f} CPU s",
              flush=True)
        tuned, ft_wall, ft_cpu = timed(run_pipeline, "KGGLM", args.dataset, preset=args.preset,
                                       cmd_args=common + ["--baselines=[]", f"--pre_model_path={pre.checkpoint}"])
        ft_epochs = int(tuned.train_stats.get("epochs") or 1)
        base_epochs = ft_epochs
        extra = math.ceil(pre_cpu / (ft_cpu / ft_epochs))
        scratch, sc_wall, sc_cpu = timed(run_pipeline, "KGGLM", args.dataset, preset=args.preset,
                                         cmd_args=common + ["--baselines=[]", "--pretrain_epochs=0",
                                                            f"--epochs={base_epochs + extra}"])
    tokens = int(stats.get("corpus_paths") or 0) * (2 * args.hops + 1)  # entity, relation, ..., entity
    rows = [
        ("pre-trained", tuned, ft_epochs, pre_cpu + ft_cpu, pre_wall + ft_wall),
        (f"from scratch, {base_epochs} + {extra} epochs (equal CPU)", scratch,
         int(scratch.train_stats.get("epochs") or 0), sc_cpu, sc_wall),
    ]
    lines = ["| fine-tuning | valid ndcg@10 | test ndcg@10 | test recall@10 | epochs run | best epoch | "
             "CPU s (all) | wall s |", "|---|---|---|---|---|---|---|---|"]
    for label, res, epochs, cpu, wall in rows:
        lines.append(f"| {label} | {res.best_valid_score:.4f} | {res.test_result['ndcg@10']:.4f} | "
                     f"{res.test_result['recall@10']:.4f} | {epochs} | {best_epoch(res)} | {cpu:.0f} | {wall:.0f} |")
    text = (f"### {args.dataset}, preset {args.preset}\n\n"
            f"Pre-training: {stats.get('corpus_paths')} KG walks ({args.walks_per_node} per node, capped at "
            f"{args.walks}){f', {tokens} tokens' if tokens else ''}, {args.pretrain_epochs} epochs, "
            f"{stats.get('steps')} steps, {pre_cpu:.0f} CPU s; training loss at the end of each epoch: "
            f"{', '.join(f'{v:.3f}' for v in losses)}.\n\n" + "\n".join(lines) + "\n\n"
            + provenance(__file__, t_start))
    emit(text, args.out)
    return 0


def best_epoch(res) -> str:
    """The fine-tuning epoch chosen on valid, from the run's valid history."""
    scores = [(h.get("epoch"), h.get("score")) for h in res.history or [] if isinstance(h, dict)]
    scores = [(e, s) for e, s in scores if s is not None]
    return str(max(scores, key=lambda es: es[1])[0]) if scores else "-"


if __name__ == "__main__":
    sys.exit(main())
