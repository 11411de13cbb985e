"""Data parallelism under ``torchrun``: the process group, rank helpers and object collectives.

    torchrun --nproc_per_node=4 -m kgglm run --dataset ml-100k          # one machine, 4 GPUs
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \
             --nproc_per_node=8 -m kgglm run ...                          # on each of 2 machines

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`process_group` reads them and joins the group (NCCL on CUDA, gloo on CPU). Without them
(a plain ``kgglm`` or ``python -m kgglm``) nothing is initialised and every helper here answers as
for a single process (rank 0 of 1), so the rest of the code calls them unconditionally.

Conventions the rest of kgglm follows:

* every rank builds the dataset and samples the path corpora itself from the shared seed (the
  sampling is deterministic), so no corpus is shipped between processes;
* rank 0 alone writes files (run directory, checkpoints, logs, ``result.json``, exports) and
  decides what must be the same everywhere (run id, run directory, early stopping), broadcasting it;
* other ranks log at WARNING only.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

T = TypeVar("T")
ENV_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when the torchrun rendezvous variables are set (even for a 1-process launch)."""
    return all(k in os.environ for k in ENV_KEYS)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes files and makes decisions."""
    return rank() == 0


def is_distributed() -> bool:
    """More than one process takes part."""
    return world_size() > 1


def init(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the torchrun process group; False (and nothing done) when not launched by torchrun.

    The backend is NCCL when CUDA is available and ``device`` would be a GPU, else gloo; each
    process then owns GPU ``LOCAL_RANK``. Idempotent.
    """
    if is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        # before init: NCCL binds its communicator to the current device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    quiet_other_ranks()
    logger.info("process group: %s, world size %d", backend, world_size())
    return True


def teardown() -> None:
    """Leave the process group (after a final barrier, so no rank exits while another still talks)."""
    if is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


@contextmanager
def process_group(backend: str | None = None) -> Iterator[bool]:
    """``init()`` … ``teardown()`` around a command; yields whether a group was joined."""
    joined = init(backend)
    try:
        yield joined
    finally:
        if joined:
            teardown()


def quiet_other_ranks() -> None:
    """Ranks other than 0 log at WARNING: N copies of every INFO line help nobody."""
    if not is_main():
        logging.getLogger("kgglm").setLevel(logging.WARNING)
        os.environ.setdefault("TQDM_DISABLE", "1")


def resolve_device(device: str | torch.device | None = None, use_gpu: bool = True) -> torch.device:
    """The torch device a setting names: ``device`` itself; None, '' or 'auto': cuda when ``use_gpu``
    and one is available, else cpu. The one place the ``device``/``use_gpu`` settings are read."""
    if device is None or str(device) in ("", "auto"):
        return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_for_rank(device: torch.device) -> torch.device:
    """The device this rank works on: ``cuda`` (no index) becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if device.type == "cuda" and device.index is None and is_initialized():
        return torch.device("cuda", local_rank())
    return device


# ---------------------------------------------------------------------------------- collectives
def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; the identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (in place; the tensor itself in one process)."""
    if is_distributed():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world_size()
    return value


def check_same(value: Any, what: str) -> None:
    """Raise unless ``value`` is equal on every rank (a cheap guard for things assumed identical)."""
    values = all_gather_object(value)
    if any(v != values[0] for v in values):
        raise RuntimeError(f"{what} differs between ranks: {values}")


# ---------------------------------------------------------------------------------- sharding
def shard_range(n_chunks: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of this rank's contiguous share of ``n_chunks`` chunks (sizes differ by ≤ 1).

    Contiguous, so concatenating the shares in rank order restores the original order.
    """
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    base, extra = divmod(n_chunks, world)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


def shard_batches(n: int, batch_size: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """This rank's ``[start, stop)`` of ``n`` rows split into whole batches of ``batch_size``.

    Whole batches (not rows) are dealt out so that every row is processed in exactly the batch it
    would be in a single process: results (beam search, scores) are then bit-identical to it.
    """
    n_batches = -(-n // batch_size) if n else 0
    b0, b1 = shard_range(n_batches, rank_, world)
    return min(b0 * batch_size, n), min(b1 * batch_size, n)


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """The global batches of ``epoch``: a permutation of ``range(n)`` seeded by ``seed + epoch``,
    cut into ``batch_size`` rows (the last one may be shorter). The same on every rank."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return list(order.split(batch_size))


def rank_rows(batch: torch.Tensor, rank_: int | None = None, world: int | None = None) -> torch.Tensor:
    """This rank's rows of a global batch: a contiguous share (sizes differ by at most one row).

    Across ranks the shares partition the batch, so over an epoch every path is seen exactly once.
    """
    start, stop = shard_range(len(batch), rank_, world)
    return batch[start:stop]


def split_micro(rows: torch.Tensor, micro_batch_size: int) -> Sequence[torch.Tensor]:
    """``rows`` in micro-batches of ``micro_batch_size`` (0: one micro-batch) for accumulation."""
    if micro_batch_size <= 0 or len(rows) <= micro_batch_size:
        return [rows]
    return list(rows.split(micro_batch_size))


def gather_recommendations(recs):
    """Every rank's :class:`~kgglm.decode.recommend.Recommendations` (contiguous user shares),
    concatenated in rank order on every rank: the lists one process would have produced."""
    if not is_distributed():
        return recs
    import dataclasses

    import numpy as np

    parts = all_gather_object(recs)

    def cat(name: str):
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    return dataclasses.replace(recs, **{f.name: cat(f.name) for f in dataclasses.fields(recs)
                                        if f.name != "split"})


def rank_in_shards(rank_fn, users, batch_size: int):
    """``rank_fn(users)`` (ranked lists, :class:`~kgglm.evaluate.ranked.Recommendations`) with the
    work spread over the ranks and the wall time it took: ``(lists of every user, seconds)``.

    Each rank ranks a contiguous share of whole batches (so each user is in the same batch as in one
    process) and the lists are gathered in rank order: the same lists as one process would produce.
    """
    import time

    start, stop = shard_batches(len(users), batch_size)
    t0 = time.perf_counter()
    recs = gather_recommendations(rank_fn(users[start:stop]))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return recs, time.perf_counter() - t0
