"""kgglm: explainable recommendation with a generative language model over a knowledge graph.

Commands: run (pretrain + finetune + test, the main job), train (one stage), evaluate and
recommend (from a checkpoint), tune (hyper-parameter search), data and paths (inspection).
Any config key can be overridden with --key=value (values read as YAML), e.g.
--learning_rate=1e-3 --topk=[10,20] --path_generation_args.num_beams=10.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

logger = logging.getLogger("kgglm.cli")

EPILOG = "Config keys and their defaults: README.md, or `python -m kgglm.config --markdown`."


def _add_run_options(p: argparse.ArgumentParser, model_default: str = "KGGLM") -> None:
    p.add_argument("--model", "-m", default=model_default, help=f"KGGLM or Pop (default {model_default})")
    p.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default ml-100k)")
    p.add_argument("--config-files", nargs="+", default=None, metavar="YAML",
                   help="YAML config files, applied in order over the defaults")
    p.add_argument("--preset", default=None, help="a named preset, e.g. quick (small model, fast)")
    p.add_argument("--data-path", default=None, help="folder holding DATASET/ (same as --data_path=DIR)")


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
    p = add("train", "one training stage (train_stage pretrain or finetune), or evaluate Pop", _cmd_train)
    _add_run_options(p)
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
    p = add("tune", "hyper-parameter search with Optuna over a params file", _cmd_tune)
    _add_run_options(p)
    p.add_argument("--params-file", required=True, help="one parameter per line: name choice [a,b] | "
                                                        "uniform a,b | loguniform a,b | quniform a,b,q")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: full grid, or 10)")
    p.add_argument("--storage", default=None, help="Optuna storage URL shared by processes, e.g. "
                                                   "sqlite:///study.db")
    p.add_argument("--study-name", default=None, help="study name (default kgglm-MODEL-DATASET)")
    p.add_argument("--out-dir", default=None, help="where trials.csv/json and best_params.yaml go")

    # Inspection commands owned by the data and path modules.
    for module in ("kgglm.data.commands", "kgglm.paths.commands"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        p = mod.add_parser(sub)
        p.set_defaults(accepts_overrides=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = list(extra)
    if getattr(args, "data_path", None) and getattr(args, "accepts_overrides", False):
        args.extra.insert(0, f"--data_path={args.data_path}")
    from kgglm.config import ConfigError
    from kgglm.data.atomic import DatasetError
    from kgglm.train.checkpoint import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, DatasetError, CheckpointError) as exc:
        print(f"kgglm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kgglm {args.command}: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------- commands
def _cmd_run(args: argparse.Namespace) -> int:
    from kgglm.quick_start import format_examples, format_metrics, run_pipeline

    res = run_pipeline(model=args.model, dataset=args.dataset, config_file_list=args.config_files,
                       cmd_args=args.extra, preset=args.preset)
    print(format_metrics(res.metrics_table()))
    if res.examples:
        print()
        print(format_examples(res.examples))
    print(f"\nrun directory: {res.run_dir}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from kgglm.quick_start import format_metrics, run_kgglm

    res = run_kgglm(model=args.model, dataset=args.dataset, config_file_list=args.config_files,
                    cmd_args=args.extra, preset=args.preset)
    table = res.metrics_table()
    if table:
        print(format_metrics(table))
    if res.checkpoint:
        print(f"checkpoint: {res.checkpoint}")
    print(f"run directory: {res.run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from kgglm.quick_start import evaluate_checkpoint, format_metrics

    result = evaluate_checkpoint(args.checkpoint, split=args.split, data_path=args.data_path,
                                 cmd_args=args.extra)
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(format_metrics({f"KGGLM {args.split}": result}))
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    from kgglm.quick_start import format_examples, recommend_from_checkpoint

    recs = recommend_from_checkpoint(args.checkpoint, args.user, k=args.k, data_path=args.data_path,
                                     cmd_args=args.extra)
    if args.format == "json":
        print(json.dumps(recs, indent=2))
    else:
        print(format_examples(recs))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from kgglm.config import parse_cmd_args
    from kgglm.tune import format_trials, parse_params_file, tune

    params = parse_params_file(args.params_file)
    result = tune(params, model=args.model, dataset=args.dataset, config_file_list=args.config_files,
                  config_dict=parse_cmd_args(args.extra), n_trials=args.trials, storage=args.storage,
                  study_name=args.study_name, out_dir=args.out_dir, preset=args.preset)
    print(format_trials(result.trials))
    print(f"\nbest {result.best_value}: {result.best_params}")
    print(f"trials: {result.files['trials_csv']}, best parameters: {result.files['best_params']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
