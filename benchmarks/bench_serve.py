"""Load, ingestion and durability benchmark of ``polyrec serve`` on the loopback address only.

1. Trains BPR-MF on an ml-1m-sized synthetic catalogue (6,040 users, 3,706 items) and starts
   ``polyrec serve`` (the CLI function, one uvicorn process) on 127.0.0.1 with a fresh SQLite
   store.
2. Load: an open-loop asyncio driver (raw HTTP/1.1 keep-alive connections) sends
   ``GET /recommendations/{user}?k=10`` at a fixed rate for a fixed duration (default 200
   req/s for 50 s, at most 50 s plus 10 s to drain; 5% of the users are unknown, i.e. cold
   start). Latency is measured from the scheduled send time, so a slow server is not hidden
   by a slowed-down driver; errors are non-200 answers and timeouts.
3. Ingestion: ``POST /events`` batches of 1,000 events from 2 concurrent senders for a fixed
   count; the store's count must equal the number sent.
4. Durability: batches with idempotency keys are sent while the server is killed (SIGKILL)
   mid-ingestion; after a restart every acknowledged event must be in the store, and re-sending
   everything must leave exactly one copy of each event.

Bounded: every loop has a fixed count and duration and stops by itself. Writes
``benchmarks/results/serve_load.json`` and ``benchmarks/results/serve_ingest.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py [--rate 200] [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd
import torch

from polyrec.data.synthetic import make_synthetic
from polyrec.models.classic.bpr import BPRMF
from polyrec.record import versions
from polyrec.serve.store import Store

RESULTS = Path(__file__).parent / "results"
KEY = "bench-key-0123456789abcdef"
HOST = "127.0.0.1"  # loopback only, never another address
MAX_DURATION = 50.0  # plus at most 10 s to drain: the load test ends within 60 s


def train_run(root: Path, seed: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """BPR-MF on an ml-1m-sized synthetic set, saved as a run directory."""
    data = make_synthetic(6040, 3706, 300_000, seed=seed, reviews=False)
    start = time.perf_counter()
    model = BPRMF(factors=64, epochs=3, batch_size=4096, lr=5e-3).fit(data)
    print(f"trained BPR-MF on {data} in {time.perf_counter() - start:.1f}s", flush=True)
    run = root / "run"
    model.save(run / "model")
    assert data.item_data is not None
    pd.DataFrame({"item": data.item_ids.external, "title": data.item_data["title"]}).to_parquet(
        run / "items.parquet", index=False
    )
    return run, data.user_ids.external.astype(str), data.item_ids.external.astype(str)


class Server:
    """``polyrec serve`` in a child process on the loopback address."""

    def __init__(self, run: Path, db: str) -> None:
        self.run, self.db = run, db
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        code = "import typer; from polyrec.serve.cli import serve; typer.run(serve)"
        args = [str(self.run), "--db", self.db, "--host", HOST, "--port", str(self.port)]
        env = dict(os.environ, OMP_NUM_THREADS="1", POLYREC_API_KEY=KEY)
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
        raise RuntimeError("server did not start within 120 s")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


async def load_test(
    server: Server, users: np.ndarray, rate: float, duration: float, connections: int = 64
) -> dict:
    """Open-loop GETs at ``rate`` per second for ``duration`` seconds.

    The driver is plain asyncio streams speaking HTTP/1.1 over ``connections`` keep-alive
    connections (httpx's AsyncClient costs about a millisecond of CPU per request and degrades
    under concurrency, encode/httpx#3215; on two cores that is the server's CPU). A scheduler
    releases request ``i`` at ``start + i / rate`` into a queue the connections serve; a
    request that waits for a free connection has that wait in its latency (measured from its
    scheduled time). Requests unfinished ``duration + 10`` s after the start are cancelled and
    counted as errors, so the test always ends (within ``duration + 10`` s).
    """
    rng = np.random.default_rng(1)
    n = int(rate * duration)
    picks = users[rng.integers(0, len(users), n)].astype(object)
    cold = rng.random(n) < 0.05
    picks[cold] = [f"new-user-{i}" for i in range(int(cold.sum()))]
    requests = [
        f"GET /recommendations/{quote(str(u))}?k=10 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        for u in picks
    ]
    latencies = np.full(n, np.nan)
    statuses = np.zeros(n, np.int64)  # 0: cancelled at the deadline, -1: transport error
    queue: asyncio.Queue[int] = asyncio.Queue()
    start = time.perf_counter()

    async def schedule() -> None:
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(i)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            while True:
                i = await queue.get()
                try:
                    writer.write(requests[i])
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                    await reader.readexactly(int(length[1]) if length else 0)
                    statuses[i] = int(head[9:12])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    statuses[i] = -1
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, server.port)
                latencies[i] = time.perf_counter() - (start + i / rate)
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(schedule())]
    tasks += [asyncio.ensure_future(connection()) for _ in range(connections)]
    remaining = start + duration + 10.0 - time.perf_counter()
    while remaining > 0 and not np.isfinite(latencies).all():
        await asyncio.sleep(min(0.1, remaining))
        remaining = start + duration + 10.0 - time.perf_counter()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.perf_counter() - start
    unfinished = np.isnan(latencies)
    # a cancelled request waited at least until the deadline: a lower bound on its latency
    latencies[unfinished] = wall - np.arange(n)[unfinished] / rate
    ok = statuses == 200
    lat_ms = latencies * 1000
    return {
        "requests": n,
        "target_rate": rate,
        "duration_s": duration,
        "wall_s": wall,
        "completed_rate": int((~unfinished).sum()) / wall,
        "errors": int((~ok).sum()),
        "unfinished_at_deadline": int(unfinished.sum()),
        "error_rate": float((~ok).mean()),
        "connections": connections,
        "driver": "asyncio streams, HTTP/1.1 keep-alive",
        "cold_start_share": float(cold.mean()),
        "latency_ms": {
            "p50": float(np.percentile(lat_ms, 50)),
            "p90": float(np.percentile(lat_ms, 90)),
            "p99": float(np.percentile(lat_ms, 99)),
            "max": float(lat_ms.max()),
            "mean": float(lat_ms.mean()),
        },
    }


def event_batches(users: np.ndarray, items: np.ndarray, n_batches: int, size: int, tag: str):
    rng = np.random.default_rng(2)
    for b in range(n_batches):
        u = users[rng.integers(0, len(users), size)]
        i = items[rng.integers(0, len(items), size)]
        yield [
            {"user_id": uu, "item_id": ii, "type": "view", "idempotency_key": f"{tag}-{b}-{j}"}
            for j, (uu, ii) in enumerate(zip(u, i, strict=True))
        ]


async def ingest(url: str, batches: list[list[dict]], senders: int = 2) -> tuple[float, int]:
    """Send the batches with ``senders`` concurrent clients; returns (seconds, events stored)."""
    queue: asyncio.Queue[list[dict]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    stored = 0

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal stored
        while not queue.empty():
            batch = queue.get_nowait()
            r = await client.post("/events", json={"events": batch}, headers={"X-API-Key": KEY})
            r.raise_for_status()
            stored += r.json()["stored"]

    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        start = time.perf_counter()
        await asyncio.gather(*(sender(client) for _ in range(senders)))
        return time.perf_counter() - start, stored


async def ingest_until_killed(
    server: Server, batches: list[list[dict]], kill_after: float
) -> tuple[set[str], int]:
    """Send batches one after another; kill the server after ``kill_after`` seconds. Returns
    the acknowledged idempotency keys and how many batches were acknowledged."""
    acked: set[str] = set()
    n_acked = 0
    killer = asyncio.get_running_loop().call_later(kill_after, server.kill)
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
        for batch in batches:
            try:
                r = await client.post("/events", json={"events": batch}, headers={"X-API-Key": KEY})
            except httpx.HTTPError:
                break  # the server is gone: this batch was not acknowledged
            if r.status_code == 200:
                acked.update(ev["idempotency_key"] for ev in batch)
                n_acked += 1
    killer.cancel()
    return acked, n_acked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=50.0)
    parser.add_argument("--ingest-events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--label", default="", help="suffix of the result files: serve_load_LABEL.json, ..."
    )
    args = parser.parse_args()
    duration = min(args.duration, MAX_DURATION)
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run, users, items = train_run(root, args.seed)
        db = f"sqlite:///{root / 'serve.db'}"
        server = Server(run, db)
        server.start()
        print(f"server up at {server.url}", flush=True)
        try:
            health = httpx.get(f"{server.url}/health").json()
            # warm-up: first requests pay lazy imports and allocations
            asyncio.run(load_test(server, users, 50.0, 2.0))
            load_avg = os.getloadavg()
            print(f"load test: {args.rate:g} req/s for {duration:g} s", flush=True)
            cpu_before = server.cpu_seconds()
            load = asyncio.run(load_test(server, users, args.rate, duration))
            server_cpu = server.cpu_seconds() - cpu_before
            completed = load["requests"] - load["unfinished_at_deadline"]
            load.update(
                server_cpu_ms_per_completed_request=server_cpu / max(completed, 1) * 1000,
                # the share of one core the server got: low when other work holds the cores
                server_cpu_share=server_cpu / load["wall_s"],
                load_avg_after=os.getloadavg(),
                catalogue={"users": len(users), "items": len(items), "model": "bpr (64 factors)"},
                retrieval=health["models"][0],
                endpoint="GET /recommendations/{user_id}?k=10",
                load_avg_before=load_avg,
                cpu_count=os.cpu_count(),
                versions=versions(),
            )
            print(json.dumps(load, indent=1), flush=True)
            suffix = f"_{args.label}" if args.label else ""
            (RESULTS / f"serve_load{suffix}.json").write_text(json.dumps(load, indent=2))

            size = 1000
            print("ingestion", flush=True)
            batches = list(event_batches(users, items, args.ingest_events // size, size, "ing"))
            seconds, stored = asyncio.run(ingest(server.url, batches))
            store = Store(db)
            in_store = store.count_events()
            sent = len(batches) * size
            ingest_result = {
                "events_sent": sent,
                "batch_size": size,
                "senders": 2,
                "seconds": seconds,
                "events_per_s": sent / seconds,
                "acknowledged_stored": stored,
                "count_in_store": in_store,
                "count_matches": in_store == sent,
            }

            before = in_store
            print("kill and restart", flush=True)
            crash = list(event_batches(users, items, 100, size, "crash"))
            acked, n_acked = asyncio.run(ingest_until_killed(server, crash, kill_after=3.0))
            server.start()  # same database: the restart must find every acknowledged event
            found = store.count_keys(acked)
            resend_seconds, _ = asyncio.run(ingest(server.url, crash))
            total = store.count_events()
            ingest_result["kill_restart"] = {
                "batches_acknowledged_before_kill": n_acked,
                "events_acknowledged": len(acked),
                "acknowledged_found_after_restart": found,
                "all_acknowledged_present": found == len(acked),
                "after_resending_all": total - before,
                "events_sent_unique": len(crash) * size,
                "no_duplicates_no_loss": total - before == len(crash) * size,
                "resend_seconds": resend_seconds,
            }
            store.close()
            ingest_result.update(cpu_count=os.cpu_count(), versions=versions())
            print(json.dumps(ingest_result, indent=1), flush=True)
            (RESULTS / f"serve_ingest{suffix}.json").write_text(json.dumps(ingest_result, indent=2))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
