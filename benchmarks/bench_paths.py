"""Path sampling benchmark: paths/s, seconds and peak memory of the corpora of issue 3.

    python benchmarks/bench_paths.py [--data-path ../shared/data] [--repeat 3] [--only ml-100k]

Cases (targets on a 2-core machine):
    ml-100k pretrain   one 3-hop walk per KG node (~34.6k paths)   < 2 s, < 1 GiB peak
    ml-100k finetune   250 paths per user, 3 hops                   < 10 s
    ml1m finetune      250 paths per user, 3 hops (~1.5M paths)     < 60 s

Dataset loading is not timed. Peak memory is the tracemalloc peak of the sampling call (NumPy
reports its buffers to tracemalloc), plus the process's max RSS at the end (includes the datasets).
Timings are the best of ``--repeat`` runs (same seed, so the same paths every time).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

from kgglm.data import load_dataset
from kgglm.paths.sampling import sample_pretrain_paths, sample_user_paths

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def measure(fn, repeat: int):
    best, batch = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        batch = fn()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return batch, best, peak


def report(name: str, batch, seconds: float, peak: int, target_s: float) -> bool:
    ok = seconds < target_s
    print(f"{name:<20} {len(batch):>10,} paths  {seconds:8.2f} s  {len(batch) / seconds:>12,.0f} paths/s  "
          f"peak {peak / 2**20:8.1f} MiB  target < {target_s:g} s: {'OK' if ok else 'MISSED'}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-path", default=str(DEFAULT_DATA))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", choices=("ml-100k", "ml1m"), default=None)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    ok = True
    if args.only in (None, "ml-100k"):
        ds = load_dataset("ml-100k", data_path=args.data_path, seed=args.seed)
        b, s, peak = measure(lambda: sample_pretrain_paths(ds.graph, seed=args.seed), args.repeat)
        ok &= report("ml-100k pretrain", b, s, peak, 2.0)
        if peak >= 2**30:
            print("  peak memory target (< 1 GiB) MISSED")
            ok = False
        b, s, peak = measure(lambda: sample_user_paths(ds.graph, ds.splits["train"], max_paths_per_user=250,
                                                       seed=args.seed), args.repeat)
        ok &= report("ml-100k finetune", b, s, peak, 10.0)
        del ds, b
    if args.only in (None, "ml1m"):
        ds = load_dataset("ml1m", data_path=args.data_path, seed=args.seed,
                          benchmark_filename=["train", "valid", "test"])
        b, s, peak = measure(lambda: sample_user_paths(ds.graph, ds.splits["train"], max_paths_per_user=250,
                                                       seed=args.seed), args.repeat)
        ok &= report("ml1m finetune", b, s, peak, 60.0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    print(f"process max RSS {rss:,.0f} MiB (datasets included)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
