"""Load test for ``clipmath serve``: N concurrent clients on loopback; requests/s, p50/p99 latency and errors.

By default it indexes the shipped example photos into a temporary store, starts ``clipmath serve`` on a free
loopback port in a child process (so clients and server do not share one interpreter), runs the clients, and
prints a Markdown table per request kind. ``--url`` targets a server that is already running (loopback only).

    python bench/serve_load.py --clients 8 --requests 600
    python bench/serve_load.py --model offline-imagenet-minilm --clients 16 --duration 60 --out bench/results/serve.md

Bounded: at most 64 clients, 20,000 requests and 300 seconds, whichever ends first.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "gallery"
MAX_CLIENTS, MAX_REQUESTS, MAX_SECONDS = 64, 20_000, 300.0

TEXTS = [
    "a dog on the grass",
    "at night",
    "in the snow",
    "a red car",
    "two people",
    "a cup of coffee",
    "on a wooden table",
    "with a hat",
    "a city street",
    "a plate of food",
    "black and white",
    "a cat",
]
WORD_PAIRS = [("cat", "dog"), ("day", "night"), ("man", "woman"), ("summer", "winter"), ("red", "blue")]
#: Request kinds and their share of the traffic.
MIX = {"text": 3, "sum": 3, "delta": 2, "thumbnail": 4, "upload": 1}


@dataclass
class Record:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)


def main() -> None:
    args = parse_args()
    if args.url:
        check_loopback(args.url)
        run_against(args.url.rstrip("/") + "/", args, started_here=None)
        return
    with tempfile.TemporaryDirectory(prefix="clipmath-load-") as scratch:
        store = Path(args.store) if args.store else build_store(Path(scratch) / "store", args.model)
        port = free_port()
        server = start_server(store, port, args)
        try:
            run_against(f"http://127.0.0.1:{port}/", args, started_here=server)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help=f"concurrent clients (≤ {MAX_CLIENTS})")
    parser.add_argument("--requests", type=int, default=600, help=f"total requests (≤ {MAX_REQUESTS})")
    parser.add_argument("--duration", type=float, default=60.0, help=f"seconds at most (≤ {MAX_SECONDS:.0f})")
    parser.add_argument("--model", default="tiny-random-clip", help="model for the temporary store")
    parser.add_argument("--store", help="serve this existing store instead of indexing the example photos")
    parser.add_argument("--url", help="a running server on loopback, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--token", default=os.environ.get("CLIPMATH_TOKEN"), help="token of that server")
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    if not (
        1 <= args.clients <= MAX_CLIENTS and 1 <= args.requests <= MAX_REQUESTS and 0 < args.duration <= MAX_SECONDS
    ):
        parser.error(f"bounds: 1..{MAX_CLIENTS} clients, 1..{MAX_REQUESTS} requests, 0..{MAX_SECONDS:.0f} s")
    return args


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        sys.exit(f"refusing to load-test {host!r}: this script only targets loopback servers")


def build_store(store: Path, model: str) -> Path:
    sys.path.insert(0, str(REPO / "src"))
    from clipmath.encoders import load_encoder
    from clipmath.store import index_folder

    encoder = load_encoder(model)
    index_folder(store, EXAMPLES, encoder, progress=False)
    return store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(store: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    command = [
        sys.executable,
        "-m",
        "clipmath.cli",
        "serve",
        str(store),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--k",
        str(args.k),
    ]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.kill()
    sys.exit("the server did not answer within 120 s")


def small_jpegs(count: int, rng: np.random.Generator) -> list[bytes]:
    out = []
    for _ in range(count):
        pixels = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def run_against(base: str, args: argparse.Namespace, started_here: subprocess.Popen | None) -> None:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as probe:
        health = probe.get("/api/health").raise_for_status().json()
        ids = [item["id"] for item in probe.get("/api/items", params={"limit": 500}).raise_for_status().json()["items"]]
    if not ids:
        sys.exit("the store is empty")
    uploads = small_jpegs(16, np.random.default_rng(args.seed))
    records: dict[str, Record] = defaultdict(Record)
    lock = threading.Lock()
    budget = iter(range(args.requests))
    budget_lock = threading.Lock()
    stop_at = time.monotonic() + args.duration
    kinds = [kind for kind, weight in MIX.items() for _ in range(weight)]

    def client(number: int) -> None:
        rng = random.Random(args.seed * 1000 + number)
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            while time.monotonic() < stop_at:
                with budget_lock:
                    if next(budget, None) is None:
                        return
                kind = rng.choice(kinds)
                started = time.perf_counter()
                try:
                    response = send(http, kind, rng, ids, uploads, args.k)
                    failed = None if response.status_code < 400 else f"{response.status_code} {response.text[:120]}"
                except httpx.HTTPError as exc:
                    failed = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - started
                with lock:
                    record = records[kind]
                    if failed:
                        record.errors += 1
                        if len(record.error_samples) < 3:
                            record.error_samples.append(failed)
                    else:
                        record.latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    wall_start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall_start
    report = format_report(records, wall, args, health, base, started_here is not None)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n")


def send(http: httpx.Client, kind: str, rng: random.Random, ids: list[str], uploads: list[bytes], k: int):
    if kind == "text":
        return http.post("/api/search", json={"text": rng.choice(TEXTS), "k": k})
    if kind == "sum":
        return http.post(
            "/api/search", json={"reference": {"gallery_id": rng.choice(ids)}, "text": rng.choice(TEXTS), "k": k}
        )
    if kind == "delta":
        source, target = rng.choice(WORD_PAIRS)
        return http.post(
            "/api/search",
            json={"reference": {"gallery_id": rng.choice(ids)}, "source": source, "target": target, "lam": 1.0, "k": k},
        )
    if kind == "thumbnail":
        return http.get(f"/api/thumbnail/{quote(rng.choice(ids), safe='/')}", params={"size": 256})
    if kind == "upload":
        data = rng.choice(uploads)
        return http.post(
            "/api/search/upload",
            files={"image": ("u.jpg", data, "image/jpeg")},
            data={"text": rng.choice(TEXTS), "k": str(k)},
        )
    raise ValueError(kind)


def format_report(
    records: dict[str, Record], wall: float, args: argparse.Namespace, health: dict, base: str, spawned: bool
) -> str:
    total = sum(len(r.latencies) + r.errors for r in records.values())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"clipmath serve load test: {args.clients} clients, {total} requests in {wall:.1f} s against {base} "
        f"({'spawned here' if spawned else 'external server'})",
        f"model: {health['model']}; store: {health['store_items']} images; k={args.k}",
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average {load:.1f} at the end, "
        f"Python {platform.python_version()}",
        "",
        "| request | count | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    all_latencies: list[float] = []
    for kind in MIX:
        record = records.get(kind, Record())
        all_latencies += record.latencies
        lines.append(row(kind, record.latencies, record.errors, wall))
    lines.append(row("**all**", all_latencies, sum(r.errors for r in records.values()), wall))
    for kind, record in records.items():
        for sample in record.error_samples:
            lines.append(f"\nerror ({kind}): {sample}")
    return "\n".join(lines)


def row(name: str, latencies: list[float], errors: int, wall: float) -> str:
    count = len(latencies) + errors
    if latencies:
        p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99])
        timing = f"{p50:.1f} | {p99:.1f}"
    else:
        timing = "– | –"
    return f"| {name} | {count} | {count / wall:.1f} | {timing} | {errors} |"


if __name__ == "__main__":
    main()
