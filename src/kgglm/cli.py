"""kgglm: explainable recommendation with a generative language model over a knowledge graph.

Commands: run (pretrain + finetune + test, the main job), train (one stage), evaluate and
recommend (from a checkpoint), tune (hyper-parameter search), data and paths (inspection).
Any config key can be overridden with --key=value (values read as YAML), e.g.
--learning_rate=1e-3 --topk=[10,20] --path_generation_args.num_beams=10.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from kgglm.errors import user_errors

logger = logging.getLogger(__name__)

DISTRIBUTED_COMMANDS = ("run", "train", "evaluate")  # the ones `torchrun -m kgglm` spreads over processes
EPILOG = "Config keys and their defaults: README.md, or `python -m kgglm.config --markdown`."


def _add_run_options(p: argparse.ArgumentParser, model_default: str = "KGGLM") -> None:
    p.add_argument("--model", "-m", default=model_default,
                   help=f"KGGLM, or a baseline: Pop, BPR, LightGCN, EASE, ItemKNN, KGItemKNN (default {model_default})")
    p.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default ml-100k)")
    p.add_argument("--config-files", nargs="+", default=None, metavar="YAML",
                   help="YAML config files, applied in order over the defaults")
    p.add_argument("--preset", default=None, help="a named preset, e.g. quick (small model, fast)")
    p.add_argument("--data-path", default=None, help="folder holding DATASET/ (same as --data_path=DIR)")


def _add_tracker_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracker", action="append", default=[], choices=("tensorboard", "mlflow", "wandb", "csv"),
                   help="also log the run to this tracker (repeatable; optional extras, see the README)")


def _track(args: argparse.Namespace, run_dir) -> None:
    """Log a finished run to the ``--tracker`` tools (checked before the run by :func:`_check_trackers`)."""
    if args.tracker and run_dir:
        from kgglm.report.trackers import log_run

        for name, where in log_run(run_dir, args.tracker).items():
            print(f"{name}: {where}")


def _check_trackers(args: argparse.Namespace) -> None:
    if args.tracker:  # a missing package is an error before hours of training, not after
        from kgglm.report.trackers import check_trackers

        check_trackers(args.tracker)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgglm", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    from kgglm import __version__

    parser.add_argument("--version", action="version", version=f"kgglm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, func, overrides: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_ + (
            "\nOverride any config key with --key=value." if overrides else ""),
            epilog=EPILOG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func, accepts_overrides=overrides)
        return p

    p = add("run", "the main job: pretrain, finetune, evaluate on test, print metrics and explained "
                   "recommendations (one run directory)", _cmd_run)
    _add_run_options(p)
    _add_tracker_option(p)
    p = add("train", "one training stage (train_stage pretrain or finetune), or fit and evaluate a baseline "
            "(--model Pop, BPR, LightGCN, EASE, ItemKNN or KGItemKNN)", _cmd_train)
    _add_run_options(p)
    _add_tracker_option(p)
    p = add("evaluate", "evaluate a fine-tuned checkpoint on a split", _cmd_evaluate)
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint (or run) directory")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--data-path", default=None, help="folder holding the dataset (if it moved)")
    p = add("recommend", "top-k items with explanation paths for users, from a checkpoint", _cmd_recommend)
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint (or run) directory")
    p.add_argument("--user", action="append", required=True, metavar="ID",
                   help="original user id (repeat for several users)")
    p.add_argument("-k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--data-path", default=None, help="folder holding the dataset (if it moved)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="intra-op threads of the search (default 1: a few users' search is too small to "
                        "gain from more; raise it for many users with a large model)")
    p = add("tune", "hyper-parameter search with Optuna over a params file", _cmd_tune)
    _add_run_options(p)
    p.add_argument("--params-file", required=True, help="one parameter per line: name choice [a,b] | "
                                                        "uniform a,b | loguniform a,b | quniform a,b,q")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: full grid, or 10)")
    p.add_argument("--storage", default=None, help="Optuna storage URL shared by processes, e.g. "
                                                   "sqlite:///study.db")
    p.add_argument("--study-name", default=None, help="study name (default kgglm-MODEL-DATASET)")
    p.add_argument("--out-dir", default=None, help="where trials.csv/json and best_params.yaml go")
    _add_tracker_option(p)

    p = add("data", "load a dataset as the config says (files, split) and print its statistics", _cmd_data)
    _add_run_options(p)
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--audit", action="store_true", help="audit the KG: co-interaction lift of item pairs "
                                                        "sharing an entity, per relation, and a verdict")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output of --audit")
    p = add("paths", "sample the pre-training or fine-tuning corpus of the config and write it as TSV in "
                     "dataset tokens", _cmd_paths)
    _add_run_options(p)
    p.add_argument("--stage", required=True, choices=("pretrain", "finetune"))
    p.add_argument("--limit", type=int, default=None, help="write at most N paths")
    p.add_argument("--out", required=True, help="output TSV file (one path per line)")

    p = add("report", "rebuild a run's report.html (and PNG figures) from its saved files; several runs: "
                      "side by side in --out", _cmd_report, overrides=False)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (holding result.json)")
    p.add_argument("--out", default="kgglm-report", metavar="DIR",
                   help="where the side-by-side report of several runs goes (default ./kgglm-report)")

    from kgglm.serve.commands import add_parser as add_serve_parser  # light: imports no web framework

    add_serve_parser(sub).set_defaults(accepts_overrides=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = list(extra)
    if getattr(args, "data_path", None) and getattr(args, "accepts_overrides", False):
        args.extra.insert(0, f"--data_path={args.data_path}")
    try:
        # [distributed] under torchrun these commands join the process group (kgglm.distributed);
        # rank 0 alone prints. Without torchrun's variables this is a no-op.
        if args.command in DISTRIBUTED_COMMANDS:
            from kgglm import distributed

            with distributed.process_group(), contextlib.ExitStack() as quiet:
                if not distributed.is_main():
                    quiet.enter_context(contextlib.redirect_stdout(open(os.devnull, "w")))  # noqa: SIM115
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"kgglm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"kgglm {args.command}: error: {exc}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------- commands
def _cmd_run(args: argparse.Namespace) -> int:
    from kgglm.quick_start import run_pipeline

    _check_trackers(args)
    res = run_pipeline(model=args.model, dataset=args.dataset, config_file_list=args.config_files,
                       cmd_args=args.extra, preset=args.preset)
    print(format_metrics(res.metrics_table()))
    if res.examples:
        print()
        print(format_examples(res.examples))
    print(f"\nrun directory: {res.run_dir}")
    _track(args, res.run_dir)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from kgglm.quick_start import run_kgglm

    _check_trackers(args)
    res = run_kgglm(model=args.model, dataset=args.dataset, config_file_list=args.config_files,
                    cmd_args=args.extra, preset=args.preset)
    table = res.metrics_table()
    if table:
        print(format_metrics(table))
    if res.checkpoint:
        print(f"checkpoint: {res.checkpoint}")
    print(f"run directory: {res.run_dir}")
    _track(args, res.run_dir)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from kgglm.quick_start import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, split=args.split, data_path=args.data_path,
                                 cmd_args=args.extra)
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(format_metrics({f"KGGLM {args.split}": result}))
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    # Startup is most of this command's time: the dataset comes from the parsed-dataset cache
    # (kgglm.data.cache), the model skips its random initialisation (the checkpoint overwrites every
    # weight), and the search runs in --threads threads (OpenMP threads spinning on a busy machine
    # cost 10-30x the time of one thread for a search this small; results are the same).
    import torch

    from kgglm.quick_start import recommend_from_checkpoint

    torch.set_num_threads(max(1, args.threads))
    recs = recommend_from_checkpoint(args.checkpoint, args.user, k=args.k, data_path=args.data_path,
                                     cmd_args=args.extra, skip_weight_init=True)
    if args.format == "json":
        print(json.dumps(recs, indent=2))
    else:
        print(format_examples(recs))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from kgglm.config import parse_cmd_args
    from kgglm.tune import format_trials, parse_params_file, tune

    params = parse_params_file(args.params_file)
    _check_trackers(args)
    result = tune(params, model=args.model, dataset=args.dataset, config_file_list=args.config_files,
                  config_dict=parse_cmd_args(args.extra), n_trials=args.trials, storage=args.storage,
                  study_name=args.study_name, out_dir=args.out_dir, preset=args.preset)
    print(format_trials(result.trials))
    print(f"\nbest {result.best_value}: {result.best_params}")
    print(f"trials: {result.files['trials_csv']}, best parameters: {result.files['best_params']}")
    if args.tracker:  # one tracked run per completed trial, grouped by the study
        from kgglm.report.trackers import log_run

        study = args.study_name or f"kgglm-{args.model}-{args.dataset}"
        for trial in result.trials:
            if trial.get("run_dir") and trial["state"] == "COMPLETE":
                log_run(trial["run_dir"], args.tracker, study=study)
        print(f"trials logged to {', '.join(args.tracker)} (study {study})")
    return 0


def _config_from_args(args: argparse.Namespace):
    from kgglm.config import Config

    return Config(args.model, args.dataset, config_file_list=args.config_files, cmd_args=args.extra,
                  preset=args.preset)


def _cmd_report(args: argparse.Namespace) -> int:
    from kgglm.report.html import write_comparison, write_report

    if len(args.run_dirs) == 1:
        print(write_report(args.run_dirs[0]))
    else:
        print(write_comparison(args.run_dirs, args.out))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from kgglm.tasks.recommendation import load_dataset_for

    data = load_dataset_for(_config_from_args(args))
    if args.audit:
        from kgglm.data.audit import audit_dataset, format_audit

        report = audit_dataset(data)
        print(json.dumps(report, indent=2) if args.format == "json" or args.json else format_audit(report))
        return 0
    stats = data.stats
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"dataset {stats['dataset']} ({stats['path']}), split: {stats['split']}")
    width = max(len(label) for label, _ in DATA_ROWS)
    for label, key in DATA_ROWS:
        print(f"{label:<{width}}  {stats[key]:>12,}")
    print(f"{'load time':<{width}}  {stats['load_seconds']:>11.2f}s")
    return 0


def _cmd_paths(args: argparse.Namespace) -> int:
    import time

    from kgglm.paths.corpus import stage_paths, write_paths_tsv
    from kgglm.settings import resolve
    from kgglm.tasks.recommendation import load_dataset_for

    settings = resolve(_config_from_args(args))
    data = load_dataset_for(settings)
    t0 = time.perf_counter()
    batch = stage_paths(data, settings.sampling, args.stage)  # the corpus training uses
    seconds = time.perf_counter() - t0
    n = write_paths_tsv(args.out, batch, data, limit=args.limit)
    print(f"{len(batch):,} {args.stage} paths sampled in {seconds:.2f}s; wrote {n:,} to {args.out}")
    return 0


# ---------------------------------------------------------------------------------- text output
DATA_ROWS = [
    ("users", "users"), ("items", "items"), ("interactions", "interactions"),
    ("  train", "train_interactions"), ("  valid", "valid_interactions"), ("  test", "test_interactions"),
    ("KG entities (linked items included)", "kg_entities"), ("entities (not items)", "entities"),
    ("linked items", "linked_items"), ("relations (KG + user-item)", "relations"), ("KG relations", "kg_relations"),
    ("triples", "triples"), ("graph nodes", "nodes"), ("CSR edges (both directions)", "csr_edges"),
]
SHARE_KEYS = ("path_coverage", "valid_paths", "score")


def format_metrics(columns: Mapping[str, Mapping[str, Any]]) -> str:
    """A text table: one row per metric, one column per result (e.g. valid, test, Pop test)."""
    if not columns:
        return "(no metrics)"
    names = list(dict.fromkeys(k for col in columns.values() for k in col if not isinstance(col[k], (dict, list))))
    width = max(len(n) for n in names)
    heads = list(columns)
    widths = [max(len(h), 8) for h in heads]

    def cell(name: str, v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float) and ("@" in name or name in SHARE_KEYS or name.endswith("_share")):
            return f"{v:.4f}"  # metrics and shares
        if isinstance(v, float) and v.is_integer():
            return str(int(v))  # counts (the trainer's history stores every value as a float)
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = [" " * width + "  " + "  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    for n in names:
        lines.append(n.ljust(width) + "  " + "  ".join(cell(n, columns[h].get(n)).rjust(w)
                                                       for h, w in zip(heads, widths)))
    return "\n".join(lines)


def format_examples(examples: list[dict]) -> str:
    """Explained recommendations as text: a block per user, one line per item with its path."""
    lines = []
    for ex in examples:
        lines.append(f"user {ex['user']}:")
        for rec in ex["recommendations"]:
            path_score = rec.get("path_score")
            differs = path_score is not None and abs(path_score - rec["score"]) > 1e-6
            shown = f"; path {path_score:.3f}" if differs else ""
            lines.append(f"  {rec['rank']:>2}. {rec['title']}  (score {rec['score']:.3f}{shown})")
            if rec.get("explanation"):
                lines.append(f"      {rec['explanation']}")
        if not ex["recommendations"]:
            lines.append("  (no item reachable)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
