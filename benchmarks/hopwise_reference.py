"""Optional reference benchmark: time hopwise's own KGGLM on the same data as our benchmarks.

This script is NOT part of the kgglm package and is never imported by the tests. It drives the
public API of the reference implementation, hopwise (a RecBole extension that ships KGGLM), so
that our figures can be put side by side with hopwise's. hopwise has heavy dependencies
(transformers, igraph, numba, ...), so install it in a separate virtual environment, e.g.

    python3 -m venv /work/hopwise-venv
    /work/hopwise-venv/bin/pip install torch==2.13.0            # pin: keep the CPU wheel
    /work/hopwise-venv/bin/pip install "hopwise[pathlm]==0.9.1" "transformers==4.55.4" "pandas<3" \
        -c <(echo torch==2.13.0)

transformers 4.55.x is needed: from 4.56 on, the group (diverse) beam search that hopwise's
KGGLM uses by default (num_beam_groups 5) is downloaded from the Hub at run time.
hopwise reads `<data-path>/ml-100k/ml-100k.{inter,kg,link,...}`; symlink the shared files there.

Runs used for the figures in the project notes (one at a time; each prints one RESULT JSON line):

    python hopwise_reference.py pretrain --data-path /work/hopwise-data --workdir /tmp/hw --train-seconds 60
    python hopwise_reference.py sample-users --data-path /work/hopwise-data --workdir /tmp/hw --sample-users 8
    python hopwise_reference.py sample-users --data-path /work/hopwise-data --workdir /tmp/hw \
        --strategy constrained-rw --sample-users 30
    python hopwise_reference.py finetune --data-path /work/hopwise-data --workdir /tmp/hw \
        --pre-model-path /tmp/hw/pretrained --strategy constrained-rw --max-paths-per-user 1 \
        --parallel-max-workers 0 --eval-batches 2 --eval-batch-size 16

`pretrain` builds hopwise's pre-training corpus (one random walk per KG node), reports its wall
time and peak RSS, then trains for --train-seconds and saves the weights to <workdir>/pretrained.
`finetune` builds the fine-tuning corpus (user paths), optionally trains, then runs hopwise's
evaluation step (constrained group beam search + sequence scoring + metric collection) on the
first --eval-batches batches of test users. `sample-users` times hopwise's per-user path sampler on
a few users (KGGLM's default 'simple-ui' corpus is far too large to build here) and extrapolates.
The process aborts itself when its RSS passes
--max-rss-gib (hopwise allocates a dense nodes x nodes relation map).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time


def _require_hopwise():
    try:
        import hopwise  # noqa: F401
    except ImportError:
        sys.exit("hopwise is not importable: this optional benchmark needs hopwise==0.9.1 in its own "
                 "virtual environment (see the module docstring). Nothing was run.")
    return sys.modules["hopwise"]


def _rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class RssWatchdog(threading.Thread):
    """Samples RSS; exits the process (code 3) when it passes the limit, instead of thrashing."""

    def __init__(self, limit_gib: float, interval: float = 0.2):
        super().__init__(daemon=True)
        self.limit_gib, self.interval, self.peak = limit_gib, interval, 0.0

    def run(self):
        while True:
            rss = _rss_gib()
            self.peak = max(self.peak, rss)
            if rss > self.limit_gib:
                print(f"ABORT: RSS {rss:.2f} GiB passed --max-rss-gib {self.limit_gib}", flush=True)
                os._exit(3)
            time.sleep(self.interval)


def _patch_offline_base_model():
    """hopwise builds its GPT-2 config with AutoConfig.from_pretrained('distilgpt2'), a Hub download.
    Offline, build the same config locally: distilgpt2 is GPT2Config's defaults with n_layer=6, and
    hopwise overrides vocab/context/size/heads/layers anyway. No weights are involved."""
    import transformers
    from hopwise.model.path_language_modeling_recommender import pearlm

    class _OfflineAutoConfig:
        @staticmethod
        def from_pretrained(name, **kwargs):
            try:
                return transformers.AutoConfig.from_pretrained(name, local_files_only=True, **kwargs)
            except OSError:
                return transformers.GPT2Config(**{"n_layer": 6, **kwargs})

    pearlm.AutoConfig = _OfflineAutoConfig


def _timed(cls, name: str, timings: dict):
    """Wrap cls.name so each call adds its wall and this process's CPU seconds to timings[name]
    (CPU time of worker processes, e.g. joblib's loky pool, is not included)."""
    original = getattr(cls, name)

    def wrapper(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            wall_s, cpu_s = timings.get(name, (0.0, 0.0))
            timings[name] = (wall_s + time.perf_counter() - start, cpu_s + time.process_time() - cpu)

    setattr(cls, name, wrapper)


def _config(args, stage: str):
    from hopwise.config import Config

    cfg = {
        "data_path": args.data_path, "use_gpu": False, "show_progress": False, "state": "INFO",
        "checkpoint_dir": os.path.join(args.workdir, "saved"), "save_dataset": False,
        "save_dataloaders": False, "log_wandb": False, "seed": args.seed,
        "train_stage": stage, "pre_model_path": args.pre_model_path or "",
        "embedding_size": args.embedding_size, "num_heads": args.num_heads, "num_layers": args.num_layers,
        "train_batch_size": args.train_batch_size, "eval_batch_size": args.eval_batch_size,
        "MAX_PATHS_PER_USER": args.max_paths_per_user, "path_hop_length": args.path_hop_length,
    }
    sample_args = {}
    if args.strategy:
        sample_args["strategy"] = args.strategy
    if args.parallel_max_workers is not None:
        sample_args["parallel_max_workers"] = args.parallel_max_workers
    if sample_args:
        cfg["path_sample_args"] = sample_args
    return Config(model="KGGLM", dataset=args.dataset, config_dict=cfg)


def _build_corpus(args, stage: str, out: dict):
    """create_dataset + data_preparation (which samples and tokenizes the paths), timed by phase."""
    from hopwise.data import create_dataset, data_preparation
    from hopwise.data.dataset import KGGLMDataset, KnowledgePathDataset

    timings: dict = {}
    _timed(KGGLMDataset, "generate_user_path_dataset", timings)  # pretrain or user paths
    _timed(KnowledgePathDataset, "_add_paths_relations", timings)  # dense relation map lives here
    _timed(KnowledgePathDataset, "tokenize_path_dataset", timings)
    config = _config(args, stage)
    out["config"] = {k: config[k] for k in ("path_sample_args", "MAX_PATHS_PER_USER", "path_hop_length",
                                            "context_length", "path_generation_args",
                                            "sequence_postprocessor", "eval_batch_size")}
    out["load_avg_before"] = os.getloadavg()
    start = time.perf_counter()
    dataset = create_dataset(config)
    out["load_dataset_s"] = time.perf_counter() - start
    start = time.perf_counter()
    train_data, valid_data, test_data = data_preparation(config, dataset)
    out["data_preparation_s"] = time.perf_counter() - start
    out["corpus_phases_wall_cpu_s"] = timings
    ds = train_data.dataset
    out["raw_paths"] = ds.path_dataset.count("\n")
    out["tokenized_paths"] = len(ds)
    out["graph_nodes"] = ds.user_num + ds.entity_num
    out["peak_rss_after_corpus_gib"] = _peak_rss_gib()
    out["load_avg_after_corpus"] = os.getloadavg()
    return config, train_data, valid_data, test_data


def _train(args, config, trainer, train_data, out: dict):
    """Train through hopwise's HuggingFace Trainer for ~--train-seconds of steady state."""
    from transformers import TrainerCallback

    class Throughput(TrainerCallback):
        def __init__(self):
            self.step_ends, self.cpu_ends = [], []

        def on_step_end(self, targs, state, control, **kwargs):
            self.step_ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())
            steady = self.step_ends[args.warmup_steps:]
            if len(steady) > 1 and steady[-1] - steady[0] >= args.train_seconds:
                control.should_training_stop = True
            return control

    meter = Throughput()
    trainer.init_hf_trainer(
        train_data, valid_data=None, verbose=False, saved=False, show_progress=False,
        hf_callbacks=[meter],
        training_args=dict(output_dir=os.path.join(args.workdir, "hf_out"), num_train_epochs=1,
                           eval_strategy="no", save_strategy="no", load_best_model_at_end=False),
    )
    start = time.perf_counter()
    trainer.hf_trainer.train()
    out["train_wall_s"] = time.perf_counter() - start
    steady = meter.step_ends[args.warmup_steps:]
    steps = len(steady) - 1
    if steps > 0:
        secs = steady[-1] - steady[0]
        out["train_steady_steps"], out["train_steady_s"] = steps, secs
        out["train_paths_per_s"] = steps * config["train_batch_size"] / secs
        out["train_steady_cpu_s"] = meter.cpu_ends[-1] - meter.cpu_ends[args.warmup_steps]
    out["load_avg_after_train"] = os.getloadavg()


def cmd_pretrain(args, out):
    from hopwise.model.path_language_modeling_recommender.kgglm import KGGLM
    from hopwise.trainer.trainer import KGGLMTrainer

    config, train_data, _, _ = _build_corpus(args, "pretrain", out)
    if args.train_seconds > 0:
        model = KGGLM(config, train_data.dataset).to(config["device"])
        out["n_params"] = sum(p.numel() for p in model.parameters())
        trainer = KGGLMTrainer(config, model)
        _train(args, config, trainer, train_data, out)
        save_dir = os.path.join(args.workdir, "pretrained")
        trainer.hf_trainer.save_model(save_dir)  # model.safetensors + config.json, what finetune loads
        out["saved_to"] = save_dir


def cmd_finetune(args, out):
    import torch
    from hopwise.model.path_language_modeling_recommender.kgglm import KGGLM
    from hopwise.trainer.trainer import KGGLMTrainer

    if not args.pre_model_path:
        sys.exit("finetune needs --pre-model-path (a folder with model.safetensors, from `pretrain`)")
    config, train_data, _, test_data = _build_corpus(args, "finetune", out)
    model = KGGLM(config, train_data.dataset).to(config["device"])
    trainer = KGGLMTrainer(config, model)
    if args.train_seconds > 0:
        _train(args, config, trainer, train_data, out)
    if args.eval_batches <= 0:
        return
    # hopwise's evaluate() loop, cut after --eval-batches batches of test users
    gen_time = {"s": 0.0}
    original_generate = model.generate

    def generate(*a, **kw):
        start = time.perf_counter()
        try:
            return original_generate(*a, **kw)
        finally:
            gen_time["s"] += time.perf_counter() - start

    model.generate = generate
    trainer.eval_collector.train_data_collect(train_data)
    model.eval()
    tot_item_num = test_data._dataset.item_num
    item_tensor = test_data._dataset.get_item_feature().to(config["device"])
    users, batch_times = 0, []
    out["eval_test_users_total"] = len(test_data._source_list) if hasattr(test_data, "_source_list") else None
    out["load_avg_before_eval"] = os.getloadavg()
    with torch.no_grad():
        start, cpu = time.perf_counter(), time.process_time()
        for i, batched in enumerate(test_data):
            if i >= args.eval_batches:
                break
            interaction, scores, pos_u, pos_i = trainer._batch_eval(batched, tot_item_num, item_tensor=item_tensor)
            trainer.eval_collector.eval_batch_collect(scores, interaction, pos_u, pos_i)
            users += len(batched[0])
            batch_times.append(time.perf_counter() - start)
            print(f"eval batch {i}: {users} users, {batch_times[-1]:.1f} s", flush=True)
    total = batch_times[-1]
    out.update(eval_users=users, eval_s=total, eval_users_per_s=users / total,
               eval_cpu_s=time.process_time() - cpu,
               eval_generate_s=gen_time["s"], eval_batch_cumulative_s=batch_times,
               load_avg_after_eval=os.getloadavg())


def cmd_sample_users(args, out):
    """Time hopwise's per-user path sampler (KGGLM's default 'simple-ui', or 'constrained-rw') on a
    random subset of users, in this process, and extrapolate to all users (single core)."""
    import numpy as np
    from hopwise.data import create_dataset
    from hopwise.data.dataset import KGGLMDataset
    from hopwise.data.dataset import kg_path_dataset as kpd

    KGGLMDataset.generate_user_path_dataset = lambda self: None  # split only, sample below
    KGGLMDataset.tokenize_path_dataset = lambda self: None
    config = _config(args, "finetune")
    out["strategy"] = config["path_sample_args"]["strategy"]
    train = create_dataset(config).build()[0]
    graph = train._create_ckg_igraph(show_relation=True, directed=False)
    used_ids = train.get_user_used_ids()
    strategy = config["path_sample_args"]["strategy"]
    common = dict(temporal_matrix=None, path_hop_length=train.path_hop_length - 1, user_num=train.user_num,
                  max_paths_per_user=train.max_paths_per_user, collaborative_path=train.collaborative_path)
    if strategy == "simple-ui":
        wrapper, fargs = kpd._generate_user_paths_all_simple_per_user_and_positive, (graph, used_ids)
        common["item_num"] = train.item_num
    elif strategy == "constrained-rw":
        wrapper = kpd._generate_user_paths_constrained_random_walk_per_user
        fargs = (graph, used_ids, train.iid_field, train.entity_field)
        common.update(paths_per_hop=config["path_sample_args"]["MAX_RW_PATHS_PER_HOP"],
                      max_consecutive_invalid=train.max_consecutive_invalid, restrict_by_phase=train.restrict_by_phase)
    else:
        sys.exit(f"sample-users supports simple-ui and constrained-rw, not {strategy}")
    # the module-level sampler is a decorator's wrapper; its closure holds the per-user factory
    factory = wrapper.__closure__[wrapper.__code__.co_freevars.index("sampling_func_factory")].cell_contents
    process_user = factory(*fargs, **common)
    users = np.random.default_rng(args.seed).choice(np.arange(1, train.user_num), args.sample_users, replace=False)
    n_paths, start, cpu = [], time.perf_counter(), time.process_time()
    for u in users:
        n_paths.append(len(process_user(int(u))))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    n_users = train.user_num - 1
    out.update(sampled_users=len(users), sample_wall_s=wall, sample_cpu_s=cpu,
               paths_per_user_mean=float(np.mean(n_paths)), train_positives_per_user=float(
                   np.mean([len(used_ids[u]) for u in users])),
               est_total_paths=float(np.mean(n_paths)) * n_users,
               est_sampling_cpu_s_all_users=cpu / len(users) * n_users)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["pretrain", "finetune", "sample-users"])
    p.add_argument("--data-path", required=True, help="folder holding <dataset>/<dataset>.inter etc.")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--workdir", default=".", help="hopwise writes saved/, log/, log_tensorboard/ here")
    p.add_argument("--pre-model-path", default="")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--embedding-size", type=int, default=256)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--train-batch-size", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=16, help="users per eval batch (hopwise: 4096)")
    p.add_argument("--max-paths-per-user", type=int, default=250)
    p.add_argument("--path-hop-length", type=int, default=3)
    p.add_argument("--strategy", default="", help="path_sample_args.strategy (KGGLM default: simple-ui)")
    p.add_argument("--parallel-max-workers", type=int, default=None,
                   help="path_sample_args.parallel_max_workers (hopwise default -1: joblib, all cores; "
                        "0: sequential, user paths only)")
    p.add_argument("--train-seconds", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=3, help="steps excluded from the throughput")
    p.add_argument("--eval-batches", type=int, default=0)
    p.add_argument("--sample-users", type=int, default=8, help="sample-users: how many users to time")
    p.add_argument("--max-rss-gib", type=float, default=14.0)
    args = p.parse_args(argv)

    hopwise = _require_hopwise()
    import torch
    import transformers

    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)
    os.chdir(args.workdir)  # hopwise writes log/ and log_tensorboard/ into the working directory
    watchdog = RssWatchdog(args.max_rss_gib)
    watchdog.start()
    _patch_offline_base_model()
    out = {"command": args.command, "hopwise": hopwise.__version__, "transformers": transformers.__version__,
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    start = time.perf_counter()
    commands = {"pretrain": cmd_pretrain, "finetune": cmd_finetune, "sample-users": cmd_sample_users}
    commands[args.command](args, out)
    out["total_s"] = time.perf_counter() - start
    out["peak_rss_gib"] = max(_peak_rss_gib(), watchdog.peak)
    print("RESULT " + json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
