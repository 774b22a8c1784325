"""`skeletond analyze` prints exactly what HTTP answers for the same photos (same code path)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import REPO_ROOT, testdata_path
from proc_helpers import free_port

SKELETOND = [sys.executable, "-m", "daemon.cli"]


def _env(tmp_path: Path, name: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SKELETON_STORE_PATH"] = str(tmp_path / f"{name}.sqlite3")
    return env


def _comparable(answer: dict) -> dict:
    return {key: value for key, value in answer.items() if key != "created_at"}


def test_analyze_prints_what_http_answers(tmp_path):
    front = testdata_path("photos", "front", "fitlens_p4_front.jpg")
    side = testdata_path("photos", "side", "fitlens_p4_side.jpg")
    cli = subprocess.run(
        [*SKELETOND, "analyze", "--front", str(front), "--side", str(side), "--uuid", "cli-vs-http",
         "--height", "172", "--id", "a@b.c", "--save-annotated", str(tmp_path / "out")],
        cwd=REPO_ROOT, env=_env(tmp_path, "cli"), capture_output=True, timeout=300, check=False,
    )
    assert cli.returncode == 0, cli.stderr.decode()[-2000:]
    from_cli = json.loads(cli.stdout)
    assert (tmp_path / "out" / "cli-vs-http_front.jpg").stat().st_size > 10_000

    port = free_port()
    server = subprocess.Popen(
        [*SKELETOND, "serve", "--port", str(port)], cwd=REPO_ROOT, env=_env(tmp_path, "http"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)
        body = {
            "id": "a@b.c", "uuid": "cli-vs-http", "height": 172,
            "forigimg": base64.b64encode(front.read_bytes()).decode(),
            "sorigimg": base64.b64encode(side.read_bytes()).decode(),
        }
        response = httpx.post(f"http://127.0.0.1:{port}/analyze/skeleton-v2", json=body, timeout=120)
        assert response.status_code == 200, response.text[:500]
        assert _comparable(response.json()) == _comparable(from_cli)
    finally:
        server.terminate()
        server.wait(timeout=60)
