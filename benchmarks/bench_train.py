"""Training throughput (paths/s, tokens/s) of the real training loop on the ml-100k corpora.

    python benchmarks/bench_train.py                       # 256 / 4 heads / 3 layers, batch 256
    python benchmarks/bench_train.py --device cuda --embedding-size 768 --num-heads 12 --num-layers 6

For each corpus (pretrain KG walks, finetune user paths) it runs ``--warmup`` steps through
``kgglm.train.trainer.train`` (allocations, kernel selection), then resumes that run for ``--steps``
more steps and reports the second run's throughput (checkpoint saving excluded).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from kgglm.data import load_dataset
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.sampling import sample_pretrain_paths, sample_user_paths
from kgglm.paths.vocab import Vocabulary
from kgglm.train.trainer import TrainConfig, resolve_device, train

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-path", default=str(DEFAULT_DATA))
    p.add_argument("--embedding-size", type=int, default=256)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "bf16", "fp16", "no"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--corpus", choices=["pretrain", "finetune", "both"], default="both")
    p.add_argument("--full-softmax", action="store_true",
                   help="softmax over the whole vocabulary at every position (typed_output: false), as hopwise")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    ds = load_dataset(args.dataset, data_path=args.data_path, download=False)
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    corpora = {}
    if args.corpus in ("pretrain", "both"):
        corpora["pretrain"] = sample_pretrain_paths(ds.graph, hop_range=(3, 3)).tokens(vocab)
    if args.corpus in ("finetune", "both"):
        corpora["finetune"] = sample_user_paths(ds.graph, ds.splits["train"], max_paths_per_user=250,
                                                hop_length=3).tokens(vocab)
    cfg = ModelConfig(vocab_size=vocab.size, n_positions=max(t.shape[1] for t in corpora.values()),
                      embedding_size=args.embedding_size, num_heads=args.num_heads,
                      num_layers=args.num_layers, dropout=0.1)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"vocab={vocab.size} model={args.embedding_size}/{args.num_heads}h/{args.num_layers}L "
          f"batch={args.batch_size} softmax={'full' if args.full_softmax else 'typed'}")
    for name, tokens in corpora.items():
        torch.manual_seed(0)
        model = KGGLM(cfg, torch.from_numpy(vocab.token_types()))
        with tempfile.TemporaryDirectory() as tmp:
            tc = TrainConfig(train_batch_size=args.batch_size, max_steps=args.warmup, save_step=10**9,
                             device=str(device), mixed_precision=args.mixed_precision, show_progress=False,
                             log_step=10**9, epochs=1, stage=name, typed_output=not args.full_softmax)
            t0 = time.perf_counter()
            train(model, tokens, tc, checkpoint_dir=tmp, vocab=vocab)
            warm = time.perf_counter() - t0
            tc.max_steps = args.warmup + args.steps
            res = train(model, tokens, tc, checkpoint_dir=tmp, vocab=vocab, resume=True)
        print(f"{name:9s} paths={tokens.shape[0]} len={tokens.shape[1]}  {args.steps} steps: "
              f"{res.paths_per_second:8.1f} paths/s  {res.tokens_per_second:10.0f} tokens/s  "
              f"(loss {res.last_loss:.3f}, warmup {warm:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
