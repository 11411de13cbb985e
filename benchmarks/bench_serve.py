"""Bounded load test of ``kgglm serve`` on loopback, next to the offline decoding speed of the same model.

1. Offline: one ``recommend`` over ``--offline-users`` users with the checkpoint's beams and batch
   size (users/s), in this process, before the server starts.
2. The server runs as ``python -m kgglm.serve`` in a subprocess on 127.0.0.1 (a free port).
3. Load phases, each for a fixed time and then stopped: 1 client, then ``--clients`` concurrent
   clients; every client loops ``GET /users/{random user}/recommendations?k=K`` (one user per
   request). Reported per phase: requests/s, users/s, p50/p90/p99/max latency, errors.

Only 127.0.0.1 is contacted; every loop is bounded by ``--duration`` seconds.

    python benchmarks/bench_serve.py --checkpoint DIR [--clients 32] [--duration 60] [--k 10] [--md FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shlex
import socket
import subprocess
import sys
import time

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline(checkpoint: str, n_users: int, k: int, seed: int, threads: int | None) -> tuple[dict, list[str]]:
    """Users/s of the offline batched decode (with the server's thread count, and with torch's
    default one as ``kgglm evaluate`` runs), and the user ids the load will draw from."""
    import torch

    from kgglm.serve.engine import Engine

    default_threads = torch.get_num_threads()
    eng = Engine(checkpoint, threads=threads)
    data = eng.data
    pool = np.unique(data.splits["test"].users)
    rng = np.random.default_rng(seed)
    users = rng.choice(pool, size=min(n_users, len(pool)), replace=False)
    eng.offline_users_per_second(users[:8], k)  # warm-up
    ups = eng.offline_users_per_second(users, k)
    server_threads, eng.threads = eng.threads, default_threads
    ups_default = eng.offline_users_per_second(users, k) if default_threads != server_threads else ups
    eng.threads = server_threads
    info = {"users_per_s": round(ups, 1), "threads": server_threads,
            "users_per_s_default_threads": round(ups_default, 1),
            "default_threads": default_threads, "n_users": len(users), "batch_size": eng.batch_size,
            "num_beams": eng.info.num_beams, "hop_length": eng.hop_length, "load_seconds": eng.info.load_seconds,
            "model": eng.info.model, "dataset": eng.info.dataset, "checkpoint": eng.checkpoint}
    return info, [str(data.user_tokens[u]) for u in pool]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        fields = open(f"/proc/{pid}/stat", encoding="ascii").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def load_phase(url: str, users: list[str], clients: int, duration: float, k: int, seed: int,
                     server_pid: int | None = None) -> dict:
    """``clients`` loops of single-user requests for ``duration`` seconds; latency stats, and the CPU
    the load generator (this process) and the server spent per request."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + duration

    async def client(i: int, c: httpx.AsyncClient) -> None:
        rng = random.Random(seed + i)
        while time.perf_counter() < stop:
            user = rng.choice(users)
            t0 = time.perf_counter()
            try:
                r = await c.get(f"/users/{user}/recommendations", params={"k": k})
                ok = r.status_code == 200 and len(r.json()["recommendations"]) > 0
                key = None if ok else f"HTTP {r.status_code}"
            except Exception as exc:  # noqa: BLE001 (a benchmark counts errors, it does not stop on them)
                key = type(exc).__name__
            if key is None:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[key] = errors.get(key, 0) + 1

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    load_before = os.getloadavg()[0]
    t0, cpu0 = time.perf_counter(), time.process_time()
    srv0 = process_cpu_seconds(server_pid) if server_pid else None
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        h0 = (await c.get("/health")).json()
        await asyncio.gather(*(client(i, c) for i in range(clients)))
        h1 = (await c.get("/health")).json()
    wall, client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    srv1 = process_cpu_seconds(server_pid) if server_pid else None
    before, after = h0["batching"], h1["batching"]
    n_batches = after["batches"] - before["batches"]
    batching = {"batches": n_batches, "largest_batch": after["largest_batch"],
                "mean_batch": round((after["users_decoded"] - before["users_decoded"]) / max(n_batches, 1), 2)}
    n_req = max(after["requests"] - before["requests"], 1)
    # server time per request: the batched search and the explanation dicts (both in the decode thread,
    # shared by a batch's requests); the rest of a request's latency is queueing, HTTP and JSON
    timing = {f"{k.removesuffix('_seconds')}_ms_per_request":
              round(1000 * (h1["timing"][k] - h0["timing"][k]) / n_req, 2)
              for k in ("search_seconds", "explain_seconds")}
    timing["decode_thread_busy"] = round((after["decode_seconds"] - before["decode_seconds"]) / wall, 2)
    timing["client_cpu_ms_per_request"] = round(1000 * client_cpu / n_req, 2)
    timing["server_cpu_ms_per_request"] = round(1000 * (srv1 - srv0) / n_req, 2) if None not in (srv0, srv1) else None
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(latencies),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "server_timing": timing,
            "errors": sum(errors.values()), "error_kinds": errors, "requests_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p90_ms": round(float(np.percentile(lat, 90)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "max_ms": round(float(lat.max()), 1),
            "batching": batching}


def start_server(checkpoint: str, port: int, max_batch: int, max_wait_ms: float,
                 threads: int | None) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "kgglm.serve", "--checkpoint", checkpoint, "--port", str(port),
                             "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
                             "--log-level", "warning", *(["--threads", str(threads)] if threads else [])])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit("server did not start in 300 s")


def markdown(args: argparse.Namespace, off: dict, phases: list[dict], others: str) -> str:
    cmd = "python benchmarks/bench_serve.py " + shlex.join(sys.argv[1:])
    lines = [
        "# kgglm serve: load on loopback", "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- command: `{cmd}`",
        (f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"),
        (f"- model: {off['model']} on {off['dataset']} ({off['checkpoint']}); {off['num_beams']} beams, "
        f"{off['hop_length']} hops, k={args.k}; server max batch {args.max_batch}, wait {args.max_wait_ms} ms"),
        (f"- load: each client loops single-user `GET /users/{{user}}/recommendations?k={args.k}` "
        f"(random users with test items) for {args.duration:g} s per phase, then stops"),
        f"- also running on the machine: {others}", "",
        (f"Offline `recommend` (same model and beams, batch {off['batch_size']}, {off['n_users']} users): "
        f"**{off['users_per_s']} users/s** with the server's {off['threads']} thread(s), "
        f"{off['users_per_s_default_threads']} users/s with torch's default {off['default_threads']}. "
        f"Server start-up (checkpoint load): {off['load_seconds']} s."), "",
        "| clients | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | mean batch | largest batch so far "
        "| search ms/req | explain ms/req | decode thread busy | server CPU ms/req | client CPU ms/req "
        "| load avg (start, end) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in phases:
        b, t = p["batching"], p["server_timing"]
        lines.append(f"| {p['clients']} | {p['requests_per_s']} | {p['p50_ms']} | {p['p90_ms']} | {p['p99_ms']} | "
                     f"{p['max_ms']} | {p['errors']} | {b['mean_batch']} | {b['largest_batch']} | "
                     f"{t['search_ms_per_request']} | {t['explain_ms_per_request']} | {t['decode_thread_busy']:.0%} | "
                     f"{t.get('server_cpu_ms_per_request')} | {t.get('client_cpu_ms_per_request')} | "
                     f"{p['load_avg_1min'][0]}, {p['load_avg_1min'][1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per load phase")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--offline-users", type=int, default=256)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="server's --threads (default: the server's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--others", default="not recorded", help="what else ran on the machine (for the report)")
    ap.add_argument("--md", default=None, help="write the markdown report here")
    ap.add_argument("--json", default=None, help="write the raw numbers here")
    args = ap.parse_args(argv)

    off, users = offline(args.checkpoint, args.offline_users, args.k, args.seed, args.threads)
    print(f"offline: {off['users_per_s']} users/s ({off['n_users']} users, batch {off['batch_size']})", flush=True)
    port = free_port()
    proc = start_server(args.checkpoint, port, args.max_batch, args.max_wait_ms, args.threads)
    url = f"http://127.0.0.1:{port}"
    phases = []
    try:
        asyncio.run(load_phase(url, users, 2, 3.0, args.k, args.seed))  # warm-up, not reported
        for clients in sorted({1, args.clients}):
            res = asyncio.run(load_phase(url, users, clients, args.duration, args.k, args.seed + clients,
                                         server_pid=proc.pid))
            print(json.dumps(res), flush=True)
            phases.append(res)
    finally:
        proc.terminate()
        proc.wait(30)
    report = markdown(args, off, phases, args.others)
    print(report)
    if args.md:
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"offline": off, "phases": phases}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
