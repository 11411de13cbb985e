"""Peak memory of one ``evaluate`` call on N users: does it grow with the number of users?

Loads a data set written by ``python -m kgglm.data.large_synthetic --out DIR [--scale S]``, builds an
untrained 256-wide, 3-layer KGGLM and the test-split constraint (outside the measurement), resets the
peak RSS, and runs ``evaluate`` with the default decoding (``eval_batch_size`` 256) on either the first
N test users (``distinct``) or the first 256 test users repeated N/256 times (``repeat``: every batch
decodes the same users, so any growth is not the batches' content). Prints one line; run it in a fresh
process per measurement (Linux: peak from ``/proc/self/status``)::

    OMP_NUM_THREADS=1 python benchmarks/eval_memory.py DIR 1024 distinct
    MALLOC_MMAP_THRESHOLD_=131072 OMP_NUM_THREADS=1 python benchmarks/eval_memory.py DIR 4096 repeat

Results: ``benchmarks/results/scale.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import NAME, _timed  # noqa: E402 (the benchmark folder is not a package)

from kgglm.config import Config  # noqa: E402
from kgglm.data import load_dataset  # noqa: E402
from kgglm.decode.generation import PathGenerationConfig  # noqa: E402
from kgglm.decode.recommend import make_constraint  # noqa: E402
from kgglm.evaluate.evaluator import EvalConfig, evaluate  # noqa: E402
from kgglm.model.gpt import KGGLM, ModelConfig  # noqa: E402
from kgglm.paths.vocab import Vocabulary  # noqa: E402

GIB = 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_path")
    ap.add_argument("n_users", type=int)
    ap.add_argument("mode", choices=["distinct", "repeat"])
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(NAME, data_path=args.data_path, download=False)
    vocab = Vocabulary.from_graph(ds.graph, NAME)
    torch.manual_seed(0)
    model = KGGLM(ModelConfig(vocab_size=vocab.size, n_positions=9, embedding_size=256, num_heads=4, num_layers=3,
                              dropout=0.0, use_kg_token_types=True), torch.from_numpy(vocab.token_types()))
    gen = PathGenerationConfig.from_config(Config())
    make_constraint(ds, vocab, split="test", hop_length=gen.path_hop_length)  # cached; not in the peak
    test_users = ds.eval_users("test")
    users = np.tile(test_users[:args.batch], args.n_users // args.batch) if args.mode == "repeat" \
        else test_users[:args.n_users]
    settings = EvalConfig(topk=(10,), metrics=("NDCG", "Recall"), valid_metric="NDCG@10", eval_batch_size=args.batch)
    _, wall, cpu, peak, before = _timed(lambda: evaluate(model, ds, "test", settings, vocab=vocab, generation=gen,
                                                         users=users))
    print(f"{args.mode} {len(users)} users, batch {args.batch}: RSS before {before / GIB:.3f} GiB, "
          f"peak {peak / GIB:.3f} GiB (+{(peak - before) / GIB:.3f}), {cpu:.0f} s CPU, {wall:.0f} s wall", flush=True)


if __name__ == "__main__":
    main()
