"""Micro-batching of concurrent recommendation requests.

Requests wait in an asyncio queue; a single worker takes the first one, collects more for up to
``max_wait_ms`` (or until ``max_batch`` distinct users), groups them by ``(k, explanation)`` and
runs one batched decode per group in a worker thread, then answers every waiting future. While a
batch decodes, new requests queue up and form the next batch, so under load batches fill by
themselves and the wait only matters for a lone request.

Grouping by ``k`` keeps the ranking identical to a one-user decode: the beam search widens its
beams for users with fewer than ``k`` reachable items, so a user decoded for a larger ``k`` could
differ. Within a group, a user's items, their order, paths and explanations are the same whoever
else is in the batch; the scores agree to float32 rounding only (up to a few 1e-6: the batched
matrix products sum in another order), which is the guarantee, not bit-identical scores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

DecodeFn = Callable[[Sequence[int], int, str], list[dict]]


@dataclass
class _Request:
    user: int
    k: int
    explanation: str
    future: asyncio.Future


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    users_decoded: int = 0
    largest_batch: int = 0
    decode_seconds: float = 0.0
    errors: int = 0
    sizes: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        mean = self.requests / self.batches if self.batches else 0.0
        return {"batches": self.batches, "requests": self.requests, "users_decoded": self.users_decoded,
                "largest_batch": self.largest_batch, "mean_batch": round(mean, 2),
                "decode_seconds": round(self.decode_seconds, 3), "errors": self.errors}


class Batcher:
    """Collects ``submit`` calls from many coroutines and decodes them together."""

    def __init__(self, decode: DecodeFn, *, max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.decode = decode
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="kgglm-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue is not None and not self._queue.empty():
            req = self._queue.get_nowait()
            if not req.future.done():
                req.future.set_exception(RuntimeError("server shutting down"))

    async def submit(self, user: int, k: int, explanation: str = "best") -> dict:
        """The explained recommendations of one user index (decoded with whoever else is waiting)."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(int(user), int(k), str(explanation), fut))
        return await fut

    async def submit_many(self, users: Sequence[int], k: int, explanation: str = "best") -> list[dict]:
        return list(await asyncio.gather(*(self.submit(u, k, explanation) for u in users)))

    async def _collect(self) -> list[_Request]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        users = {batch[0].user}
        deadline = time.perf_counter() + self.max_wait
        while len(users) < self.max_batch:
            timeout = deadline - time.perf_counter()
            if timeout <= 0:
                break
            try:
                req = await asyncio.wait_for(self._queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            batch.append(req)
            users.add(req.user)
        while len(users) < self.max_batch and not self._queue.empty():  # already waiting: take them too
            req = self._queue.get_nowait()
            batch.append(req)
            users.add(req.user)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            groups: dict[tuple[int, str], list[_Request]] = {}
            for req in batch:
                groups.setdefault((req.k, req.explanation), []).append(req)
            for (k, mode), reqs in groups.items():
                users = list(dict.fromkeys(r.user for r in reqs))  # distinct, first-seen order
                t0 = time.perf_counter()
                try:
                    results = await asyncio.to_thread(self.decode, users, k, mode)
                except Exception as exc:  # answer every waiter; the worker keeps running
                    logger.exception("decode failed for %d users", len(users))
                    self.stats.errors += 1
                    for r in reqs:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    continue
                self.stats.decode_seconds += time.perf_counter() - t0
                self.stats.batches += 1
                self.stats.requests += len(reqs)
                self.stats.users_decoded += len(users)
                self.stats.largest_batch = max(self.stats.largest_batch, len(users))
                by_user = dict(zip(users, results))
                for r in reqs:
                    if not r.future.done():  # a client that went away cancelled its future
                        r.future.set_result(by_user[r.user])
