"""A real ``clipmath serve`` process survives ``clipmath check --repair`` run on its store while clients search.

Five rounds: a byte of the vector file is damaged (as a failing disk would), then the repair runs in its own
process while three clients search in a loop. The server never dies (it used to, of SIGBUS, when the repair
shortened the file it had mapped); every answer equals exact search over a committed state (the damaged one or the
repaired one); and after each repair the answers are the repaired store's.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from clipmath.compose import CompositionQuery
from clipmath.retrieval import Retriever
from clipmath.store import Gallery, IndexConfig, index_folder
from tests.conftest import write_images
from tests.test_cli import SRC_ENV

pytest.importorskip("fastapi")

REFERENCE = "img_0000.jpg"  # in the first commit, never damaged


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ask(url: str) -> tuple[str, ...]:
    body = json.dumps({"reference": {"gallery_id": REFERENCE}, "k": 100}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    return tuple(f"{hit['id']}:{hit['score']:.5f}" for hit in answer["results"])


def _expected(store: Path, encoder) -> tuple[str, ...]:
    """Exact search over the store's committed state, as the server runs it (the reference's stored vector)."""
    with Gallery.open(store) as gallery:
        hits = Retriever(gallery, encoder).search([CompositionQuery(reference=REFERENCE)], method="image", k=100)[0]
    return tuple(f"{hit.id}:{hit.score:.5f}" for hit in hits)


def test_serve_survives_five_repairs_and_answers_from_committed_states(tmp_path, tiny_encoder):
    folder = tmp_path / "images"
    write_images(folder, 40)
    store = tmp_path / "store"
    index_folder(store, folder, tiny_encoder, IndexConfig(commit_every=4), progress=False)  # 10 blocks of 4 rows
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "clipmath", "serve", str(store), "--port", str(port)],
        env=SRC_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/api/search"
    answers: list[tuple[float, tuple[str, ...]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                answers.append((started, _ask(url)))
            except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                failures.append(repr(exc))

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                before = _ask(url)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        assert before == _expected(store, tiny_encoder)
        clients = [threading.Thread(target=client) for _ in range(3)]
        for thread in clients:
            thread.start()
        for round_ in range(5):
            with Gallery.open(store) as gallery:  # damage the last block of the current generation
                vector_file = store / gallery.meta["vector_file"]
            with open(vector_file, "r+b") as fh:
                fh.seek(-4, 2)
                fh.write(struct.pack("<f", 0.25 + round_))  # a finite value: the damaged state still answers
            damaged_at = time.monotonic()
            damaged = _expected(store, tiny_encoder)
            repair = subprocess.run(
                [sys.executable, "-m", "clipmath", "check", str(store), "--repair"],
                env=SRC_ENV,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert repair.returncode == 0 and "dropped 4 items" in repair.stdout, repair.stdout + repair.stderr
            repaired = _expected(store, tiny_encoder)
            assert len(damaged) == 39 - 4 * round_ and len(repaired) == len(damaged) - 4
            deadline = time.monotonic() + 30
            while _ask(url) != repaired:  # the server follows the repair
                assert server.poll() is None, f"the server died in round {round_}: {server.stderr.read()[-2000:]}"
                assert time.monotonic() < deadline, f"round {round_}: the server still answers from the old state"
                time.sleep(0.05)
            after_at = time.monotonic()
            seen = [answer for started, answer in list(answers) if damaged_at < started]
            assert seen and all(answer in (damaged, repaired) for answer in seen), f"round {round_}"
            assert all(answer == repaired for started, answer in list(answers) if started > after_at)
            assert server.poll() is None
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
        assert not failures, failures[:3]
        assert len(answers) > 20
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
