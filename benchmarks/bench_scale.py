"""Scale benchmark on an Amazon-book-sized synthetic data set (50x ml-100k): load, corpus, training, evaluation.

    python benchmarks/bench_scale.py [--data-path DIR] [--scale 1.0] [--cases load load-cached corpus train eval]
        [--eval-users 1000 4000] [--eval-batch 64 256] [--md benchmarks/results/scale.md] [--others TEXT]
        [--threads N] [--last-hop direct|walk] [--timeout S]

The data set comes from :mod:`kgglm.synthetic.large` (70k users, 25k items, 850k interactions,
89k KG entities, 2.5M triples, 39 relations at ``--scale 1``); it is generated into a temporary folder
unless ``--data-path`` already holds it. Every measurement runs in a fresh subprocess, so peaks are
separate; inside it the peak RSS is reset (``/proc/self/clear_refs``) after loading, so a step's peak
(``VmHWM``) is the step's own plus what was resident before it. Cases and targets (2 cores):

* ``load``: ``load_dataset(..., cache=False)`` time and peak RSS: parsing the atomic files (target
  < 30 s); ``load-cached``: the same from the parsed-dataset cache (:mod:`kgglm.data.cache`).
* ``corpus``: ``sample_user_paths(max_paths_per_user=250, hop_length=3, last_hop=--last-hop)`` +
  ``PathBatch.tokens`` (target < 5 min, peak < 8 GiB); ``direct`` enumerates most users exactly.
* ``train``: one AdamW step of KGGLM 256 wide, 4 heads, 3 layers, typed output slices, batch 256 (mean of
  3 steps after one warm-up).
* ``eval``: ``evaluate_model(model, dataset, 'test', ...)`` on the first N test users of an untrained model, for
  every N and eval batch size: users/s and peak RSS (target: the peak depends on the batch, not on N).

Wall times on a shared machine are inflated by other load; the process CPU time is reported too,
and the load average during each case. ``--threads`` sets the torch threads of every case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NAME = "amazon-book-synth"
GIB = 2**30


# ------------------------------------------------------------------------------------ in the child
def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _status_total() -> int:
    """Total memory in bytes (``/proc/meminfo``), 0 where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0


def _reset_peak() -> bool:
    """Reset the peak RSS (Linux >= 4.0); False when not allowed (then the peak includes loading)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn):
    """(result, wall seconds, cpu seconds, peak RSS bytes, RSS before) of ``fn()`` after a peak reset."""
    import gc

    gc.collect()
    before = _status("VmRSS")
    _reset_peak()
    t0, c0 = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - t0, _cpu() - c0, _status("VmHWM"), before


def untrained_model(vocab):
    """The benchmarks' model: KGGLM 256 wide, 4 heads, 3 layers, typed output, seeded init."""
    import torch

    from kgglm.model.gpt import KGGLM, ModelConfig

    torch.manual_seed(0)
    return KGGLM(ModelConfig(vocab_size=vocab.size, n_positions=9, embedding_size=256, num_heads=4, num_layers=3,
                             dropout=0.0, use_kg_token_types=True), torch.from_numpy(vocab.token_types()))


def timed_evaluate(ds, vocab, model, users, batch: int):
    """``evaluate`` on ``users`` of the test split with the default decoding, under :func:`_timed`.

    The decoding constraint is built (and cached on the data set) first, so it is not in the peak.
    Returns ``(evaluation, decoding settings, wall s, cpu s, peak RSS, RSS before)``."""
    from kgglm.config import Config
    from kgglm.decode.recommend import make_constraint
    from kgglm.evaluate.evaluator import EvalConfig
    from kgglm.settings import resolve
    from kgglm.tasks.ranking import evaluate_model

    gen = resolve(Config()).generation
    settings = EvalConfig(topk=(10,), metrics=("NDCG", "Recall"), valid_metric="NDCG@10", eval_batch_size=batch)
    make_constraint(ds, vocab, split="test", hop_length=gen.path_hop_length)
    ev, *timing = _timed(lambda: evaluate_model(model, ds, "test", settings, vocab=vocab, generation=gen, users=users))
    return (ev, gen, *timing)


def run_case(case: str, data_path: str, args: list[str]) -> dict:
    """One measurement (runs in its own process); returns a JSON-able row."""
    import numpy as np
    import torch

    from kgglm.data import load_dataset

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))  # the parent passes --threads here
    if case in ("load", "load-cached"):  # parsing the atomic files, or reading the parsed-dataset cache
        cache = case == "load-cached"
        if cache:  # make sure the cache entry exists (outside the measurement)
            load_dataset(NAME, data_path=data_path, download=False)
        ds, wall, cpu, peak, before = _timed(lambda: load_dataset(NAME, data_path=data_path, download=False,
                                                                  cache=cache))
        return {"case": "load (cache)" if cache else "load (parse)", "wall_s": wall, "cpu_s": cpu,
                "peak_rss": peak, "rss_before": before,
                "detail": f"{ds.n_users} users, {ds.n_items} items, {ds.stats['interactions']} inter., "
                          f"{ds.stats['triples']} triples, {ds.graph.n_edges} CSR edges"}
    ds = load_dataset(NAME, data_path=data_path, download=False)
    from kgglm.paths.vocab import Vocabulary

    vocab = Vocabulary.from_graph(ds.graph, NAME)
    if case == "corpus":
        from kgglm.paths.sampling import sample_user_paths

        def corpus():
            batch = sample_user_paths(ds.graph, ds.splits["train"], max_paths_per_user=250, hop_length=3, seed=0,
                                      last_hop=args[0] if args else "direct")
            return batch, batch.tokens(vocab)

        (batch, tokens), wall, cpu, peak, before = _timed(corpus)
        per_user = np.bincount(batch.nodes[:, 0], minlength=ds.n_users)
        name = f"corpus (last_hop={args[0] if args else 'direct'})"
        return {"case": name, "wall_s": wall, "cpu_s": cpu, "peak_rss": peak, "rss_before": before,
                "detail": f"{len(batch):,} paths for {(per_user > 0).sum():,} users ({(per_user >= 250).sum():,} "
                          f"with 250), tokens {tuple(tokens.shape)} ({tokens.nbytes / GIB:.2f} GiB)"}
    model = untrained_model(vocab)
    if case == "train":
        rng = np.random.default_rng(0)
        from kgglm.paths.sampling import PathBatch

        # valid-looking rows are enough for timing: user, ui, item, relation, node, relation, item
        n = 256
        nodes = np.stack([rng.integers(0, ds.n_users, n), ds.n_users + rng.integers(0, ds.n_items, n),
                          rng.integers(0, ds.graph.n_nodes, n), ds.n_users + rng.integers(0, ds.n_items, n)], 1)
        rels = np.stack([np.zeros(n, np.int64), rng.integers(0, ds.n_relations, n),
                         rng.integers(0, ds.n_relations, n)], 1)
        x = torch.as_tensor(PathBatch(nodes, rels).tokens(vocab))
        slices = torch.as_tensor(vocab.output_slices(x.shape[1], "finetune"))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            loss = model.loss(x, output_slices=slices)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss)

        step()  # warm-up: allocates Adam's state
        _, wall, cpu, peak, before = _timed(lambda: [step() for _ in range(3)])
        params = sum(p.numel() for p in model.parameters())
        return {"case": "train step", "wall_s": wall / 3, "cpu_s": cpu / 3, "peak_rss": peak, "rss_before": before,
                "detail": f"batch 256 x {x.shape[1]} tokens, vocab {vocab.size:,}, {params / 1e6:.1f}M parameters"}
    if case == "eval":
        n_users, batch = int(args[0]), int(args[1])
        users = ds.eval_users("test")[:n_users]
        ev, gen, wall, cpu, peak, before = timed_evaluate(ds, vocab, model, users, batch)
        return {"case": f"eval {n_users} users, batch {batch}", "wall_s": wall, "cpu_s": cpu, "peak_rss": peak,
                "rss_before": before, "detail": f"{len(users) / wall:.1f} users/s, "
                                               f"{gen.num_beams} beams, NDCG@10 {ev.metrics['ndcg@10']:.4f}"}
    raise ValueError(f"unknown case {case!r}")


# ------------------------------------------------------------------------------------ the parent
def child(case: str, data_path: str, extra: list[str], timeout: float) -> dict:
    """Run one case in a fresh process; the 1-minute load average is sampled every 5 s meanwhile."""
    import threading

    cmd = [sys.executable, __file__, "--child", case, "--data-path", data_path, "--child-args", *extra]
    loads, done = [], threading.Event()

    def sample():
        while not done.wait(5.0):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": " ".join([case, *extra]), "error": f"timed out after {timeout:.0f} s"}
    finally:
        done.set()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"case": " ".join([case, *extra]), "error": (proc.stderr or proc.stdout).strip()[-400:]}
    row = json.loads(lines[-1])
    row["process_s"] = time.perf_counter() - t0
    loads = loads or [os.getloadavg()[0]]
    row["load"] = f"{min(loads):.1f}-{max(loads):.1f}"
    return row


def table(rows: list[dict]) -> str:
    out = ["| case | wall s | CPU s | peak RSS GiB | RSS before GiB | load avg | detail |",
           "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        if "error" in r:
            last = r["error"].splitlines()[-1] if r["error"] else ""
            out.append(f"| {r['case']} | - | - | - | - | - | ERROR: {last} |")
            continue
        out.append(f"| {r['case']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss'] / GIB:.2f} | "
                   f"{r['rss_before'] / GIB:.2f} | {r.get('load', '')} | {r['detail']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-path", default=None, help="folder holding amazon-book-synth/ (default: generate)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--cases", nargs="+", default=["load", "load-cached", "corpus", "train", "eval"])
    ap.add_argument("--eval-users", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--eval-batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--last-hop", choices=("direct", "walk"), default="direct",
                    help="sample_user_paths(last_hop=...) of the corpus case (walk: the paper's rejection)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                    help="torch/BLAS threads of each case (default: $OMP_NUM_THREADS, else 2)")
    ap.add_argument("--md", default=None, help="write the results as markdown here")
    ap.add_argument("--others", default="", help="what else was running (for the record)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-args", nargs="*", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child, args.data_path, args.child_args)), flush=True)
        return 0
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the case subprocesses
    tmp = None
    data_path = args.data_path
    if data_path is None or not (Path(data_path) / NAME / f"{NAME}.inter").is_file():
        from kgglm.synthetic.large import write_large_synthetic

        if data_path is None:
            tmp = tempfile.TemporaryDirectory(prefix="kgglm-scale-")
            data_path = tmp.name
        t0 = time.perf_counter()
        write_large_synthetic(data_path, scale=args.scale, seed=0, name=NAME)
        print(f"generated {NAME} (scale {args.scale:g}) in {time.perf_counter() - t0:.1f} s -> {data_path}", flush=True)
    rows = []
    plan = [(c, [args.last_hop] if c == "corpus" else []) for c in args.cases if c != "eval"]
    if "eval" in args.cases:
        plan += [("eval", [str(n), str(b)]) for b in args.eval_batch for n in args.eval_users]
    for case, extra in plan:
        row = child(case, data_path, extra, args.timeout)
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.md:
        cmd = "python benchmarks/bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
        head = [f"# Scale: {NAME} (Amazon-book size, scale {args.scale:g})", "",
                f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                f"- command: `{cmd}`",
                f"- machine: {platform.machine()}, {os.cpu_count()} cores, {_status_total() / GIB:.0f} GiB, "
                f"Python {platform.python_version()}, "
                f"{platform.system()} {platform.release()}; {args.threads} torch thread(s) per case; "
                f"load average at the end {os.getloadavg()[0]:.1f} (per case: min-max of the 1-minute load "
                "average sampled every 5 s)",
                f"- also running: {args.others or 'not recorded'}", "", ""]
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text("\n".join(head) + text + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
