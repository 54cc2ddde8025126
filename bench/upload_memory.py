"""Server memory under large uploads: N concurrent uploads of small PNGs that decode to W×H pixels.

Starts a server (tiny-random-clip over a 3-image store) in a child process, samples the child's resident memory
(VmRSS) every 10 ms while the uploads run, and prints baseline, peak and after-RSS (2 s after the last answer)
with the status codes. ``--src`` runs another checkout's ``src`` folder (to measure code before a change).

    python bench/upload_memory.py --uploads 8 --side 7000
    python bench/upload_memory.py --src /tmp/old/src        # the same against older code
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

_SERVER = """
import sys, time
from clipmath.encoders import load_encoder
from clipmath.retrieval import Retriever
from clipmath.serve import BackgroundServer, ServeConfig, create_app
from clipmath.store import Gallery, index_folder
encoder = load_encoder("tiny-random-clip")
index_folder(sys.argv[1], sys.argv[2], encoder, progress=False)
app = create_app(Retriever(Gallery.open(sys.argv[1]), encoder), ServeConfig(max_pixels=89_000_000))
with BackgroundServer(app) as server:
    print(server.port, flush=True)
    while True:
        time.sleep(1)
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def png_of(side: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (shade, 255 - shade, 90)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--side", type=int, default=7000)
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the clipmath source folder to run")
    args = parser.parse_args()
    uploads = [png_of(args.side, 20 + 25 * i) for i in range(min(args.uploads, 9))]
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for i in range(3):
            Image.new("RGB", (32, 32), (80 * i, 40, 40)).save(images / f"{i}.png")
        env = dict(os.environ, PYTHONPATH=str(args.src), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(Path(tmp) / "store"), str(images)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            port = int(server.stdout.readline())
            time.sleep(1.0)
            baseline = rss_mb(server.pid)
            peak, statuses, done = baseline, [], threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, rss_mb(server.pid))
                    time.sleep(0.01)

            def send(data: bytes) -> None:
                with httpx.Client(timeout=300) as client:
                    files = {"image": ("big.png", data, "image/png")}
                    statuses.append(client.post(f"http://127.0.0.1:{port}/api/uploads", files=files).status_code)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.monotonic()
            senders = [threading.Thread(target=send, args=(data,)) for data in uploads]
            for thread in senders:
                thread.start()
            for thread in senders:
                thread.join()
            seconds = time.monotonic() - started
            time.sleep(2.0)
            done.set()
            sampler.join()
            after = rss_mb(server.pid)
        finally:
            server.kill()
            server.wait()
    print(f"| source | uploads | pixels each | upload bytes | baseline MB | peak MB | after MB | seconds | statuses |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.src} | {len(uploads)} | {args.side}x{args.side} | {len(uploads[0]):,} | {baseline:.0f} | "
        f"{peak:.0f} | {after:.0f} | {seconds:.1f} | {sorted(statuses)} |"
    )


if __name__ == "__main__":
    main()
