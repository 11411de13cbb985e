"""Data parallelism on CPU (gloo, 2 processes, 127.0.0.1): sharding, DDP training, resume, evaluation.

* the sampler: over an epoch every path is trained on exactly once across ranks;
* 2-process training (``torch.multiprocessing.spawn``): every path once per epoch (the rows each
  rank really trained on are recorded), only rank 0 writes checkpoints, every rank ends with the
  same weights, the validation loss matches one process within noise, and a run interrupted and
  resumed under 2 processes ends bit for bit where an uninterrupted 2-process run ends;
* the real launch path (``python -m torch.distributed.run ... -m kgglm``): ``kgglm run`` writes one
  run directory from rank 0 and reaches the validation NDCG of one process within noise, and
  ``kgglm evaluate`` of a saved checkpoint reports exactly the metrics of one process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from atomic_helpers import TINY, write_atomic_dataset
from kgglm import distributed
from kgglm.config import Config
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.corpus import stage_corpus
from kgglm.paths.vocab import Vocabulary
from kgglm.quick_start import RunResult, evaluate_checkpoint, run_pipeline
from kgglm.settings import resolve
from kgglm.synthetic.small import make_synthetic_dataset
from kgglm.train import checkpoint as ckpt
from kgglm.train.trainer import TrainConfig, Trainer, validation_loss

WORLD = 2
# eval_batch_size 8: 45 users make 6 decoding batches, so both ranks decode several
RUN_CONFIG = {**TINY, "eval_batch_size": 8, "baselines": ["Pop"], "show_examples": 0, "pretrain_epochs": 1,
              "epochs": 2, "MAX_PATHS_PER_USER": 10, "path_sample_args": {"pretrain_max_paths": 2000}}
TIMING_KEYS = {"seconds", "users_per_second"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize(("n", "batch", "world"), [(37, 8, 2), (37, 8, 3), (10, 4, 4), (5, 2, 3), (64, 64, 2)])
def test_every_path_once_per_epoch_across_ranks(n, batch, world):
    for epoch in range(3):
        batches = distributed.epoch_batches(n, batch, epoch, seed=7)
        shares = [[distributed.rank_rows(b, r, world) for r in range(world)] for b in batches]
        seen = torch.cat([s for per_batch in shares for s in per_batch])
        assert sorted(seen.tolist()) == list(range(n))
        assert all(max(map(len, s)) - min(map(len, s)) <= 1 for s in shares)  # balanced shares
    assert not torch.equal(torch.cat(distributed.epoch_batches(n, batch, 0, 7)),
                           torch.cat(distributed.epoch_batches(n, batch, 1, 7)))  # reshuffled per epoch


@pytest.mark.parametrize(("n", "batch", "world"), [(45, 8, 2), (45, 8, 4), (3, 8, 2), (0, 8, 2), (16, 8, 3)])
def test_evaluation_shards_whole_batches_in_order(n, batch, world):
    ranges = [distributed.shard_batches(n, batch, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous: rank order = user order
    # each user stays in its single-process batch (an empty share may start anywhere)
    assert all(start % batch == 0 for start, stop in ranges if stop > start)


def test_helpers_answer_for_one_process_without_torchrun():
    assert not distributed.is_initialized() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.all_gather_object(3) == [3]
    assert distributed.init() is False  # no torchrun variables: nothing to join


# ---------------------------------------------------------------------------------- DDP training
def _corpus():
    ds = make_synthetic_dataset(n_users=24, n_items=24)
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    sampling = resolve(Config(config_dict={"MAX_PATHS_PER_USER": 10})).sampling
    tokens = stage_corpus(ds, vocab, sampling, "finetune")[:150]  # 5 steps of 32 per epoch, the last short
    return vocab, tokens


def _model(vocab: Vocabulary, n_positions: int) -> KGGLM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab.size, n_positions=n_positions, embedding_size=32, num_heads=2, num_layers=1,
                      use_kg_token_types=True, dropout=0.1)  # dropout: the per-rank RNG streams must resume too
    return KGGLM(cfg, torch.from_numpy(vocab.token_types()))


def _train_config(**kw) -> TrainConfig:
    base = Config(config_dict={"learning_rate": 5e-3, "warmup_steps": 2, "train_batch_size": 32, "epochs": 3,
                               "seed": 7, "device": "cpu", "show_progress": False})
    return dataclasses.replace(resolve(base).train["finetune"], log_step=1, **kw)


class Interrupted(Exception):
    pass


class RecordingTrainer(Trainer):
    """Records the corpus rows this rank trains on; raises after ``stop_after`` steps (a crash)."""

    stop_after: int | None = None

    def rank_rows(self, batch):
        rows = super().rank_rows(batch)
        self.seen = getattr(self, "seen", []) + [(self.progress.step // self.steps_per_epoch, rows.tolist())]
        return rows

    def _after_step(self, epoch, end_of_epoch):
        super()._after_step(epoch, end_of_epoch)
        if self.stop_after is not None and self.progress.step >= self.stop_after:
            raise Interrupted


def _weights_digest(model: KGGLM) -> str:
    return hashlib.sha1(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()


def _train_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    writes = []
    save = ckpt.save_checkpoint
    ckpt.save_checkpoint = lambda path, *a, **k: (writes.append(str(path)), save(path, *a, **k))[1]
    with distributed.process_group("gloo"):
        vocab, tokens = _corpus()
        out = Path(out)
        report = {}
        for name, stop in (("whole", None), ("crashed", 12), ("resumed", None)):
            config = _train_config(save_step=6, resume=name == "resumed", keep_checkpoints=0)
            tr = RecordingTrainer(_model(vocab, tokens.shape[1]), tokens, config, vocab=vocab,
                                  checkpoint_dir=out / ("whole" if name == "whole" else "resume"),
                                  valid_tokens=tokens[:40])
            tr.stop_after = stop
            try:
                res = tr.fit()
            except Interrupted:
                res = None
            report[name] = {"seen": tr.seen, "run_id": tr.progress.run_id, "step": tr.progress.step,
                            "digest": _weights_digest(tr.model),
                            "valid_loss": res and validation_loss(tr.model, tokens[:40], batch_size=64)}
        report["writes"] = writes
        (out / f"rank{rank}.json").write_text(json.dumps(report))


@pytest.fixture(scope="module")
def two_process_training(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_train_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_two_process_training_sees_every_path_once_per_epoch(two_process_training):
    _, reports = two_process_training
    _, tokens = _corpus()
    epochs = {e for e, _ in reports[0]["whole"]["seen"]}
    assert epochs == {0, 1, 2}
    for epoch in epochs:
        rows = [i for rep in reports for e, rows in rep["whole"]["seen"] if e == epoch for i in rows]
        assert sorted(rows) == list(range(len(tokens)))


def test_only_rank_zero_writes_and_ranks_agree(two_process_training):
    out, (r0, r1) = two_process_training
    assert r1["writes"] == [] and len(r0["writes"]) > 0
    for name in ("whole", "crashed", "resumed"):
        assert r0[name]["digest"] == r1[name]["digest"]  # DDP kept the replicas identical
        assert r0[name]["run_id"] == r1[name]["run_id"]  # broadcast from rank 0
    assert not [p for p in (out / "whole").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_two_processes_reach_the_one_process_validation_loss(two_process_training):
    _, (r0, _) = two_process_training
    vocab, tokens = _corpus()
    torch.set_num_threads(1)
    model = _model(vocab, tokens.shape[1])
    Trainer(model, tokens, _train_config(save_step=10**6), vocab=vocab, checkpoint_dir=two_process_training[0] / "one",
            valid_tokens=tokens[:40]).fit()
    one = validation_loss(model, tokens[:40], batch_size=64)
    assert r0["whole"]["valid_loss"] == pytest.approx(one, rel=0.05)
    assert one < validation_loss(_model(vocab, tokens.shape[1]), tokens[:40], batch_size=64) * 0.9  # it learned


def test_resume_under_two_processes_continues_exactly(two_process_training):
    _, reports = two_process_training
    for rep in reports:
        crashed, resumed, whole = rep["crashed"], rep["resumed"], rep["whole"]
        assert crashed["step"] == 12 and resumed["step"] == whole["step"]
        assert resumed["run_id"] == crashed["run_id"]  # the same run continued
        assert {e for e, _ in resumed["seen"]} == {2}  # only what was left: epoch 3 of 3 (5 steps/epoch)
        assert resumed["seen"] == whole["seen"][-len(resumed["seen"]):]  # the same rows on this rank
        assert resumed["digest"] == whole["digest"]  # weights, optimizer and per-rank dropout RNG all resumed


# ---------------------------------------------------------------------------------- torchrun -m kgglm
def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "kgglm", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The same tiny ``kgglm run`` in one process (in-process) and under 2-process torchrun."""
    root = tmp_path_factory.mktemp("run")
    data = write_atomic_dataset(root / "data")
    config = {**RUN_CONFIG, "data_path": str(data)}
    torch.set_num_threads(1)
    one = run_pipeline("KGGLM", "toy", config_dict={**config, "checkpoint_dir": str(root / "one")})
    (root / "run.yaml").write_text(yaml.safe_dump({**config, "checkpoint_dir": str(root / "two")}))
    torchrun(["run", "--dataset", "toy", "--config-files", str(root / "run.yaml")], cwd=root)
    return root, one


def test_torchrun_run_writes_one_run_directory_and_matches_one_process(launched):
    root, one = launched
    runs = [p for p in (root / "two").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # rank 1 made no run directory of its own
    run_dir = runs[0]
    names = sorted(p.name for p in run_dir.iterdir() if p.is_file())
    report = [n for n in names if n == "report.html" or n.endswith(".png")]  # the run report (rank 0 alone)
    assert "report.html" in report
    assert [n for n in names if n not in report] == ["config.yaml", "recommendations.jsonl", "result.json", "run.log"]
    assert ckpt.read_info(run_dir / "checkpoint" / "best")["meta"]["world_size"] == WORLD  # really 2 processes
    two = RunResult.load(run_dir)
    assert two.test_result["n_users"] == one.test_result["n_users"]
    assert [h["epoch"] for h in two.history] == [h["epoch"] for h in one.history]
    assert two.best_valid_score == pytest.approx(one.best_valid_score, abs=0.1)  # ndcg@5 within noise
    pop_one, pop_two = ({k: v for k, v in r.baselines["Pop"]["test"].items() if k not in TIMING_KEYS}
                        for r in (one, two))
    assert pop_two == pop_one  # deterministic model: sharded evaluation changes nothing
    assert not list(run_dir.rglob(".*tmp*"))


def test_torchrun_evaluate_equals_one_process_exactly(launched):
    root, one = launched
    run_dir = Path(one.run_dir)
    single = evaluate_checkpoint(run_dir, split="test")
    proc = torchrun(["evaluate", "--checkpoint", str(run_dir), "--split", "test", "--format", "json"], cwd=root)
    double = json.loads(proc.stdout)  # rank 0 alone printed
    assert {k: v for k, v in double.items() if k not in TIMING_KEYS} == \
        {k: v for k, v in single.items() if k not in TIMING_KEYS}
    assert double["n_users"] == 45
