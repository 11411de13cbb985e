"""Training throughput (paths/s, tokens/s) and MFU of the real training loop on a dataset's corpora.

    python benchmarks/bench_train.py --device cpu --steps 10
    python benchmarks/bench_train.py --device cuda --embedding-size 768 --num-heads 12 --num-layers 6 \
        --batch-size 1024 --steps 50 [--compile]
    torchrun --nproc_per_node=8 benchmarks/bench_train.py --device cuda ...   # data parallel: global figures

For each corpus (pretrain KG walks, finetune user paths) it runs ``--warmup`` steps through
:class:`kgglm.train.trainer.Trainer` (allocations, kernel selection, compilation), then resumes that
run for ``--steps`` more steps and reports the second run's throughput (checkpoint saving excluded).

MFU (model FLOPs utilisation, as nanoGPT/PaLM define it) = achieved model FLOP/s / peak FLOP/s:

    FLOPs per trained token = 6 * N_body                  (matmuls of the blocks, forward + backward)
                            + 6 * d * V_out               (output projection; V_out = vocabulary size, or with
                                                           typed_output the mean width of the softmax ranges)
                            + 12 * L * d * T              (attention scores and values, T = path length)

N_body excludes the embeddings (a lookup, not a matmul). Tokens are all positions of the trained
rows, padding included (the work is done on them). Peak: ``--peak-tflops``, or the dense bf16
Tensor Core figure of known GPUs (H100/H200 SXM: 989 TFLOP/s, A100: 312); on CPU there is no
standard figure, so MFU is only printed when ``--peak-tflops`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kgglm import distributed
from kgglm.config import Config
from kgglm.data import load_dataset
from kgglm.model.gpt import KGGLM
from kgglm.paths.corpus import PathSampleConfig, stage_corpus
from kgglm.paths.vocab import Vocabulary
from kgglm.tasks.models import ModelBuilder
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


def flops_per_token(model: KGGLM, vocab: Vocabulary, length: int, stage: str, typed: bool) -> float:
    """The formula of the module docstring, for rows of ``length`` tokens."""
    cfg = model.config
    embeddings = {id(p) for m in (model.wte, model.wpe, getattr(model, "wtt", None)) if m is not None
                  for p in m.parameters()}
    n_body = sum(p.numel() for p in model.parameters() if id(p) not in embeddings)
    if typed:
        s = vocab.output_slices(length, stage)
        v_out = float(np.mean(s[:, 1] - s[:, 0]))
    else:
        v_out = float(cfg.vocab_size)
    return 6 * n_body + 6 * cfg.embedding_size * v_out + 12 * cfg.num_layers * cfg.embedding_size * length


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
    ds = load_dataset(args.dataset, data_path=args.data_path, download=False)
    builder = ModelBuilder.for_dataset(ds, config)
    vocab = builder.vocab
    sampling = PathSampleConfig.from_config(config)
    stages = ["pretrain", "finetune"] if args.corpus == "both" else [args.corpus]
    corpora = {s: stage_corpus(ds, vocab, sampling, s) for s in stages}
    world = distributed.world_size()
    say = print if distributed.is_main() else (lambda *a, **k: None)
    for stage, tokens in corpora.items():
        torch.manual_seed(0)
        model = builder.fresh(tokens.shape[1])
        tc = dataclasses.replace(TrainConfig.from_config(config, stage), max_steps=args.warmup, log_step=10**9,
                                 mixed_precision=args.mixed_precision)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = distributed.broadcast_object(tmp)  # one folder (rank 0's) for every rank on this machine
            t0 = time.perf_counter()
            trainer = Trainer(model, tokens, tc, checkpoint_dir=tmp, vocab=vocab)
            trainer.fit()
            warm = time.perf_counter() - t0
            tc = dataclasses.replace(tc, max_steps=args.warmup + args.steps, resume=True)
            res = Trainer(model, tokens, tc, checkpoint_dir=tmp, vocab=vocab).fit()
        device = trainer.device
        if stage == stages[0]:
            say(f"device={device} x{world} threads={torch.get_num_threads()} torch={torch.__version__} "
                f"vocab={vocab.size} model={args.embedding_size}/{args.num_heads}h/{args.num_layers}L "
                f"({model.num_parameters() / 1e6:.2f}M params) batch={args.batch_size} "
                f"amp={trainer.amp_dtype or 'off'} "
                f"compile={args.compile} softmax={'full' if args.full_softmax else 'typed'}")
        fpt = flops_per_token(model, vocab, tokens.shape[1], stage, not args.full_softmax)
        achieved = fpt * res.tokens_per_second  # global tokens/s: FLOP/s of all processes
        peak = peak_tflops(device, args.peak_tflops)
        mfu = f"MFU {100 * achieved / (peak * 1e12 * world):5.2f}% of {peak:g} TFLOP/s x{world}" if peak else "MFU n/a"
        say(f"{stage:9s} paths={tokens.shape[0]} len={tokens.shape[1]}  {args.steps} steps: "
            f"{res.paths_per_second:9.1f} paths/s {res.tokens_per_second:11.0f} tokens/s  "
            f"{achieved / 1e9:8.2f} GFLOP/s ({fpt / 1e6:.2f} MFLOP/token)  {mfu}  "
            f"(loss {res.last_loss:.3f}, warmup {warm:.1f}s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
