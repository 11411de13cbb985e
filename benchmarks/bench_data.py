"""Load-time benchmark of the data layer: atomic files -> splits -> CSR graph (RS split, default eval_args).

Usage: python benchmarks/bench_data.py [--data-path DIR] [--repeat N]
Targets on the 2-core dev machine: ml-100k < 2 s, ml1m < 10 s. Prints the best and median of N runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from kgglm.data import load_dataset

TARGETS = {"ml-100k": 2.0, "ml1m": 10.0}


def main() -> int:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-path", default=str(default))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(TARGETS))
    args = parser.parse_args()
    ok = True
    for name in args.datasets:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ds = load_dataset(name, data_path=args.data_path)
            times.append(time.perf_counter() - t0)
        target = TARGETS.get(name)
        status = "" if target is None else ("OK" if min(times) < target else "SLOW")
        ok &= status != "SLOW"
        print(f"{name:8s} best {min(times):6.2f}s  median {statistics.median(times):6.2f}s  "
              f"(target < {target}s) {status}  | {ds.stats['interactions']:,} interactions, "
              f"{ds.stats['triples']:,} triples, {ds.stats['csr_edges']:,} CSR edges")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
