"""``kgglm paths``: sample a training corpus and write it in original dataset tokens (TSV)."""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``paths`` sub-command to the ``kgglm`` parser."""
    p = subparsers.add_parser("paths", help="sample pre-training or fine-tuning paths and write them as TSV",
                              description=__doc__)
    p.add_argument("--dataset", required=True, help="dataset name, e.g. ml-100k (folder DATA_PATH/NAME/)")
    p.add_argument("--data-path", default=None, help="folder holding NAME/")
    p.add_argument("--benchmark-filename", nargs=3, default=None, metavar=("TRAIN", "VALID", "TEST"),
                   help="use pre-split files NAME.TRAIN.inter ... instead of a random split")
    p.add_argument("--stage", required=True, choices=("pretrain", "finetune"))
    p.add_argument("--limit", type=int, default=None, help="write at most N paths")
    p.add_argument("--seed", type=int, default=2024, help="seed of the split and of the sampling")
    p.add_argument("--hop-length", type=int, default=None,
                   help="finetune: path_hop_length (odd, default 3); pretrain: fixed walk length")
    p.add_argument("--max-paths-per-user", type=int, default=250, help="finetune: MAX_PATHS_PER_USER")
    p.add_argument("--no-collaborative", action="store_true",
                   help="finetune: KG paths only (collaborative_path False)")
    p.add_argument("--paths-per-node", type=int, default=1, help="pretrain: walks per KG node")
    p.add_argument("--include-users", action="store_true", help="pretrain: also walk user-item edges")
    p.add_argument("--out", required=True, help="output TSV file (one path per line)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from kgglm.data.atomic import DatasetError
    from kgglm.data.loader import load_dataset
    from kgglm.paths.corpus import sample_stage_paths, write_paths_tsv

    try:
        ds = load_dataset(args.dataset, data_path=args.data_path, seed=args.seed,
                          benchmark_filename=args.benchmark_filename)
    except DatasetError as exc:
        print(f"kgglm paths: error: {exc}", file=sys.stderr)
        return 2
    if args.stage == "pretrain":
        path_args = dict(paths_per_node=args.paths_per_node, include_users=args.include_users)
        if args.hop_length is not None:
            path_args["hop_range"] = (args.hop_length, args.hop_length)
    else:
        path_args = dict(max_paths_per_user=args.max_paths_per_user, collaborative=not args.no_collaborative)
        if args.hop_length is not None:
            path_args["hop_length"] = args.hop_length
    t0 = time.perf_counter()
    try:
        batch = sample_stage_paths(ds, stage=args.stage, seed=args.seed, **path_args)
    except ValueError as exc:
        print(f"kgglm paths: error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    n = write_paths_tsv(args.out, batch, ds, limit=args.limit)
    print(f"{len(batch):,} {args.stage} paths sampled in {seconds:.2f}s; wrote {n:,} to {args.out}")
    return 0
