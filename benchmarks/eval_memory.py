"""Peak memory of one ``evaluate`` call on N users: does it grow with the number of users?

Loads a data set written by ``python -m kgglm.synthetic.large --out DIR [--scale S]`` and runs
``bench_scale.py``'s evaluation case (untrained 256-wide, 3-layer KGGLM, default decoding, the
constraint built outside the measurement, peak RSS reset before ``evaluate``) on either the first N
test users (``distinct``) or the first ``--batch`` test users repeated (``repeat``: every batch decodes
the same users, so any growth is not the batches' content). Prints one line; run it in a fresh process
per measurement (Linux: peak from ``/proc/self/status``)::

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
from bench_scale import GIB, NAME, timed_evaluate, untrained_model  # noqa: E402 (benchmarks is not a package)

from kgglm.data import load_dataset  # noqa: E402
from kgglm.paths.vocab import Vocabulary  # noqa: E402


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
    test_users = ds.eval_users("test")
    users = np.tile(test_users[:args.batch], args.n_users // args.batch) if args.mode == "repeat" \
        else test_users[:args.n_users]
    _, _, wall, cpu, peak, before = timed_evaluate(ds, vocab, untrained_model(vocab), users, args.batch)
    print(f"{args.mode} {len(users)} users, batch {args.batch}: RSS before {before / GIB:.3f} GiB, "
          f"peak {peak / GIB:.3f} GiB (+{(peak - before) / GIB:.3f}), {cpu:.0f} s CPU, {wall:.0f} s wall", flush=True)


if __name__ == "__main__":
    main()
