"""Training throughput (paths/s, tokens/s), model FLOP/s and its share of sgemm, and MFU, of the real
training loop on a dataset's corpora.

    python benchmarks/bench_train.py --device cpu --steps 10
    python benchmarks/bench_train.py --device cuda --embedding-size 768 --num-heads 12 --num-layers 6 \
        --batch-size 1024 --steps 50 [--compile]
    torchrun --nproc_per_node=8 benchmarks/bench_train.py --device cuda ...   # data parallel: global figures

For each corpus (pretrain KG walks, finetune user paths) it runs ``--warmup`` steps through
:class:`kgglm.train.trainer.Trainer` (allocations, kernel selection, compilation), then resumes that
run for ``--steps`` more steps and reports the second run's throughput (checkpoint saving excluded).

Figures per corpus: paths/s; tokens/s, the non-PAD tokens (``[BOS] ... [EOS]``) of the rows the
timed steps trained, per second; positions/s, the same with padding (every position goes through the
blocks); the model FLOP/s this implies; and its share of the machine's float32 matmul rate (sgemm,
timed before training with ``torch.matmul`` of square float32 matrices of ``--sgemm-sizes``, the same
torch thread count, best of ``--sgemm-repeats``; the best size is the reference).

Model FLOPs (:mod:`kgglm.train.flops`), forward + backward, summed over the rows the timed steps
trained (the trainer's seeded batches, replayed), for rows of T positions, width d, L blocks:

    6 * N_body * positions                   N_body = block and final-LayerNorm parameters (no
                                             embeddings: lookups); every position, padding included
  + 12 * L * T * d * positions               attention scores and values
  + 6 * d * sum_(row, p projected) width_p   tied output layer (fused LinearCrossEntropy: 3 matmuls);
                                             width_p = the vocabulary, or with typed_output position
                                             p's softmax range (Vocabulary.output_slices); projected:
                                             on CPU the positions whose next token is not PAD, on
                                             GPU all T-1 predicting positions (masked, not dropped)

MFU (model FLOPs utilisation, as nanoGPT/PaLM define it) = achieved model FLOP/s / peak FLOP/s. Peak:
``--peak-tflops``, or the dense bf16 Tensor Core figure of known GPUs (H100/H200 SXM: 989 TFLOP/s,
A100: 312); on CPU there is no standard figure, so MFU is only printed when ``--peak-tflops`` is given
(the sgemm share is the CPU's counterpart). ``--json PATH`` writes the figures as one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from kgglm import distributed, durable
from kgglm.config import Config
from kgglm.data import load_dataset
from kgglm.distributed import resolve_device
from kgglm.model.gpt import KGGLM
from kgglm.paths.corpus import stage_corpus
from kgglm.paths.vocab import Vocabulary
from kgglm.settings import resolve
from kgglm.tasks.models import ModelBuilder
from kgglm.train.flops import train_flops
from kgglm.train.trainer import TrainConfig, Trainer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense, no sparsity


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return None


def sgemm_gflops(device: torch.device, sizes: list[int], repeats: int) -> dict[int, float]:
    """GFLOP/s of ``torch.matmul`` of two float32 ``n x n`` matrices (2 n^3 FLOPs), best of ``repeats``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    rates = {}
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, generator=gen) for _ in range(2))
        torch.matmul(a, b)  # untimed: allocation, kernel selection
        best = math.inf
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            torch.matmul(a, b)
            sync()
            best = min(best, time.perf_counter() - t0)
        rates[n] = 2 * n**3 / best / 1e9
    return rates


def timed_rows(data: torch.Tensor, batch_size: int, seed: int, first: int, last: int) -> torch.Tensor:
    """The corpus rows that the trainer's steps ``[first, last)`` trained (its seeded batches, replayed)."""
    per_epoch = math.ceil(data.shape[0] / batch_size)
    epochs = {}
    picked = []
    for step in range(first, last):
        epoch, b = divmod(step, per_epoch)
        if epoch not in epochs:
            epochs[epoch] = distributed.epoch_batches(data.shape[0], batch_size, epoch, seed)
        picked.append(epochs[epoch][b])
    return data[torch.cat(picked)] if picked else data[:0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-path", default=str(DEFAULT_DATA))
    p.add_argument("--embedding-size", type=int, default=256)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256, help="global batch (train_batch_size)")
    p.add_argument("--micro-batch-size", type=int, default=0, help="per-process rows per pass (0: all)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "bf16", "fp16", "no"])
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--corpus", choices=["pretrain", "finetune", "both"], default="both")
    p.add_argument("--max-paths-per-user", type=int, default=250)
    p.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s of one device, in TFLOP/s")
    p.add_argument("--full-softmax", action="store_true",
                   help="softmax over the whole vocabulary at every position (typed_output: false), as hopwise")
    p.add_argument("--sgemm-sizes", type=int, nargs="+", default=[1024, 2048], help="float32 matmul sizes timed")
    p.add_argument("--sgemm-repeats", type=int, default=5, help="timed repeats of each matmul (best kept)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    with distributed.process_group():  # a no-op without torchrun
        return bench(args)


def bench(args: argparse.Namespace) -> int:
    config = Config("KGGLM", args.dataset, config_dict={
        "data_path": args.data_path, "device": None if args.device == "auto" else args.device,
        "train_batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size, "compile": args.compile,
        "typed_output": not args.full_softmax, "show_progress": False, "save_step": 10**9, "pretrain_epochs": 1,
        "epochs": 1, "MAX_PATHS_PER_USER": args.max_paths_per_user, "embedding_size": args.embedding_size,
        "num_heads": args.num_heads, "num_layers": args.num_layers, "dropout": 0.1})
    settings = resolve(config)
    ds = load_dataset(args.dataset, data_path=args.data_path, download=False)
    builder = ModelBuilder.for_dataset(ds, settings.model)
    vocab = builder.vocab
    sampling = settings.sampling
    stages = ["pretrain", "finetune"] if args.corpus == "both" else [args.corpus]
    corpora = {s: stage_corpus(ds, vocab, sampling, s) for s in stages}
    world = distributed.world_size()
    say = print if distributed.is_main() else (lambda *a, **k: None)
    device = distributed.device_for_rank(resolve_device(settings.train[stages[0]].device))
    sgemm = sgemm_gflops(device, args.sgemm_sizes, args.sgemm_repeats)
    sgemm_best = max(sgemm.values())
    report: dict = {"device": str(device), "world": world, "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "dataset": args.dataset, "vocab": vocab.size,
                    "model": [args.embedding_size, args.num_heads, args.num_layers], "batch": args.batch_size,
                    "softmax": "full" if args.full_softmax else "typed", "sgemm_gflops": sgemm, "stages": {}}
    for stage, tokens in corpora.items():
        torch.manual_seed(0)
        model = builder.fresh(tokens.shape[1])
        trainer, fig = run_stage(model, tokens, vocab, settings.train[stage], args, sgemm_best * 1e9 * world)
        if stage == stages[0]:
            say(f"device={trainer.device} x{world} threads={torch.get_num_threads()} torch={torch.__version__} "
                f"vocab={vocab.size} model={args.embedding_size}/{args.num_heads}h/{args.num_layers}L "
                f"({model.num_parameters() / 1e6:.2f}M params) batch={args.batch_size} "
                f"amp={trainer.amp_dtype or 'off'} "
                f"compile={args.compile} softmax={'full' if args.full_softmax else 'typed'}")
            say("sgemm float32 (torch.matmul, best of {}): {}".format(
                args.sgemm_repeats, ", ".join(f"{n}: {r:.1f} GFLOP/s" for n, r in sgemm.items())))
        f, peak = fig["flops"], fig["peak_tflops"]
        mfu = f"MFU {100 * fig['mfu']:5.2f}% of {peak:g} TFLOP/s x{world}" if peak else "MFU n/a"
        say(f"{stage:9s} paths={fig['paths']} len={fig['length']}  {fig['steps']} steps: "
            f"{fig['paths_per_second']:9.1f} paths/s {fig['tokens_per_second']:11.0f} tokens/s "
            f"({fig['positions_per_second']:.0f} positions/s with padding)  {fig['gflops_per_second']:8.2f} GFLOP/s "
            f"({f['total'] / f['tokens'] / 1e6:.2f} MFLOP/token: body {f['body'] / f['total']:.0%}, "
            f"attention {f['attention'] / f['total']:.0%}, output {f['output'] / f['total']:.0%})  "
            f"{100 * fig['sgemm_share']:5.1f}% of sgemm x{world}  {mfu}  "
            f"(loss {fig['loss']:.3f}, warmup {fig['warmup_seconds']:.1f}s)")
        report["stages"][stage] = fig
    if args.json and distributed.is_main():
        durable.write_json(args.json, report, indent=1)
    return 0


def run_stage(model: KGGLM, tokens, vocab: Vocabulary, stage_config: TrainConfig, args: argparse.Namespace,
              sgemm_flops: float) -> tuple[Trainer, dict]:
    """``--warmup`` steps, then ``--steps`` more (a resumed run) timed: the figures of the timed run.
    ``sgemm_flops``: the sgemm FLOP/s of all processes together."""
    tc = dataclasses.replace(stage_config, max_steps=args.warmup, log_step=10**9,
                             mixed_precision=args.mixed_precision)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = distributed.broadcast_object(tmp)  # one folder (rank 0's) for every rank on this machine
        t0 = time.perf_counter()
        trainer = Trainer(model, tokens, tc, checkpoint_dir=tmp, vocab=vocab)
        trainer.fit()
        warm = time.perf_counter() - t0
        tc = dataclasses.replace(tc, max_steps=args.warmup + args.steps, resume=True)
        timed = Trainer(model, tokens, tc, checkpoint_dir=tmp, vocab=vocab)
        res = timed.fit()
    device = timed.device
    rows = timed_rows(timed.data.cpu(), tc.train_batch_size, tc.seed, trainer.progress.step, res.step)
    flops = train_flops(model, rows, timed.slices, project_all=device.type != "cpu")
    elapsed = rows.shape[0] / res.paths_per_second  # the timed run's seconds (saving excluded)
    achieved = flops.total / elapsed  # global: FLOP/s of all processes
    peak = peak_tflops(device, args.peak_tflops)
    return trainer, {
        "paths": int(tokens.shape[0]), "length": int(tokens.shape[1]), "steps": res.step - trainer.progress.step,
        "seconds": elapsed, "paths_per_second": res.paths_per_second, "tokens_per_second": flops.tokens / elapsed,
        "positions_per_second": res.tokens_per_second, "gflops_per_second": achieved / 1e9,
        "flops": {**dataclasses.asdict(flops), "total": flops.total}, "sgemm_share": achieved / sgemm_flops,
        "peak_tflops": peak, "mfu": achieved / (peak * 1e12 * distributed.world_size()) if peak else None,
        "loss": res.last_loss, "warmup_seconds": warm}

if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
