"""``kgglm data``: load a dataset and print its size (users, items, splits, KG, graph)."""

from __future__ import annotations

import argparse
import json
import sys

from kgglm.data.atomic import DatasetError

_ROWS = [
    ("users", "users"),
    ("items", "items"),
    ("interactions", "interactions"),
    ("  train", "train_interactions"),
    ("  valid", "valid_interactions"),
    ("  test", "test_interactions"),
    ("KG entities (linked items included)", "kg_entities"),
    ("entities (not items)", "entities"),
    ("linked items", "linked_items"),
    ("relations (KG + user-item)", "relations"),
    ("KG relations", "kg_relations"),
    ("triples", "triples"),
    ("graph nodes", "nodes"),
    ("CSR edges (both directions)", "csr_edges"),
]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``data`` sub-command to the ``kgglm`` parser."""
    p = subparsers.add_parser("data", help="load a dataset and print its statistics",
                              description=__doc__)
    p.add_argument("--dataset", required=True, help="dataset name, e.g. ml-100k (folder DATA_PATH/NAME/)")
    p.add_argument("--data-path", default=None, help="folder holding NAME/ (default: $KGGLM_DATA, then "
                                                     "~/.cache/kgglm)")
    p.add_argument("--benchmark-filename", nargs=3, default=None, metavar=("TRAIN", "VALID", "TEST"),
                   help="use pre-split files NAME.TRAIN.inter ... instead of a random split")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from kgglm.data.loader import load_dataset

    try:
        ds = load_dataset(args.dataset, data_path=args.data_path, seed=args.seed,
                          benchmark_filename=args.benchmark_filename, show_progress=True)
    except DatasetError as exc:
        print(f"kgglm data: error: {exc}", file=sys.stderr)
        return 2
    stats = ds.stats
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"dataset {stats['dataset']} ({stats['path']}), split: {stats['split']}")
    width = max(len(label) for label, _ in _ROWS)
    for label, key in _ROWS:
        print(f"{label:<{width}}  {stats[key]:>12,}")
    print(f"{'load time':<{width}}  {stats['load_seconds']:>11.2f}s")
    return 0
