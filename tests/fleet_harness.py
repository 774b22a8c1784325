"""A fleet on this machine: N `skeletond serve` processes in one shared subscription group on a real
broker, and an observer that records every answer and status under the fleet's topic prefix.

Used by tests/test_fleet.py and bench/fleet.py (which puts this folder on sys.path). Settings keep each
request cheap (the lite landmark model, no flip test, small annotated photos): the machine is shared.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid as uuidlib
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from proc_helpers import SERVE, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = (REPO_ROOT / ".." / "shared" / "testdata" / "photos").resolve()
# Four real front/side pairs (read at run time from ../shared/testdata, never copied).
PAIRS = ("fitlens_p1", "fitlens_p2", "fitlens_p3", "fitlens_p4")


def photo_pairs() -> list[tuple[bytes, bytes]]:
    pairs = []
    for name in PAIRS:
        front, side = PHOTOS / "front" / f"{name}_front.jpg", PHOTOS / "side" / f"{name}_side.jpg"
        if not front.exists() or not side.exists():
            raise FileNotFoundError(f"test photos missing: {front} (they are read from ../shared/testdata)")
        pairs.append((front.read_bytes(), side.read_bytes()))
    return pairs


def member_visits(http_port: int, member: str) -> list[str]:
    """The uuids one daemon's own store holds for a member, read through its HTTP API (its own key)."""
    response = httpx.get(f"http://127.0.0.1:{http_port}/members/{quote(member, safe='')}/history",
                         headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 200, response.text
    return [visit["uuid"] for visit in response.json()["visits"]]


def analyse_until_every_daemon_holds(client, http_ports: list[int], member: str, tag: str,
                                     most: int = 8) -> None:
    """Analyses of `member` through the kiosk `client` (a daemon.fleet.client.KioskClient) until each
    daemon's store holds at least one (the broker's round robin: usually two requests)."""
    from daemon.fleet.client import request_payload

    pairs = photo_pairs()
    for index in range(most):
        front, side = pairs[index % len(pairs)]
        uuid = f"{tag}-{index}-{uuidlib.uuid4().hex[:6]}"
        answer = client.request(request_payload(front, side, user_id=member, uuid=uuid, height=170),
                                timeout_s=60, attempts=1)
        assert answer["state"] == 0, answer.get("data")
        if all(member_visits(port, member) for port in http_ports):
            return
    raise AssertionError(f"after {most} analyses not every daemon holds one of the member's results")


class FleetDaemon:
    """One `skeletond serve` process with its own store, HTTP port and daemon id."""

    def __init__(self, workdir: Path, url: str, prefix: str, group: str | None, name: str,
                 queue_size: int = 4, stop_timeout_s: float = 20.0):
        self.daemon_id = f"{name}-{uuidlib.uuid4().hex[:6]}"
        self.http_port = free_port()
        self.log_path = workdir / f"{self.daemon_id}.log"
        self.config_path = workdir / f"{self.daemon_id}.toml"
        group_line = f'shared_group = "{group}"\n' if group else ""
        self.config_path.write_text(
            '[models]\nlandmark = "lite"\n'
            '[pipeline]\nflip_test = false\nannotated_max_side = 320\nannotated_jpeg_quality = 70\n'
            f'[http]\nport = {self.http_port}\n'
            f'[mqtt]\nurl = "{url}"\ntopic_prefix = "{prefix}"\nclient_id = "skeletond-{self.daemon_id}"\n'
            f'daemon_id = "{self.daemon_id}"\nsession_expiry_s = 60\nstatus_interval_s = 1.0\n{group_line}'
            f'[worker]\nqueue_size = {queue_size}\nstop_timeout_s = {stop_timeout_s}\n'
            f'[store]\npath = "{workdir / (self.daemon_id + ".sqlite3")}"\n'
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [*SERVE, "--config", str(self.config_path), "serve"],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"daemon {self.daemon_id} exited:\n{self.log()[-3000:]}")
        try:
            health = httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).json()
        except (httpx.HTTPError, ValueError):
            return False
        return health.get("transports", {}).get("mqtt") == "connected"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Observer:
    """Records every answer on result/# and every status on status/+ under the prefix."""

    def __init__(self, host: str, port: int, prefix: str):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.answers: dict[str, list[dict]] = {}
        self.statuses: dict[str, list[dict]] = {}
        ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"observer-{uuidlib.uuid4().hex[:10]}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"{prefix}/result/#", 1), (f"{prefix}/status/+", 1)])
        self.client.on_subscribe = lambda c, u, mid, codes, p: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not ready.wait(10):
            raise AssertionError("the observer could not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        head_result, head_status = f"{self.prefix}/result/", f"{self.prefix}/status/"
        if not message.payload:
            return
        with self.lock:
            if message.topic.startswith(head_result):
                uuid = message.topic[len(head_result):].rsplit("/", 1)[-1]
                self.answers.setdefault(uuid, []).append(orjson.loads(message.payload))
            elif message.topic.startswith(head_status):
                status = orjson.loads(message.payload) if message.payload.startswith(b"{") else {}
                self.statuses.setdefault(message.topic[len(head_status):], []).append(status)

    def answered(self) -> int:
        with self.lock:
            return len(self.answers)

    def latest_status(self, daemon_id: str) -> dict:
        with self.lock:
            return (self.statuses.get(daemon_id) or [{}])[-1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Fleet:
    """N daemons in one shared group under a fresh prefix; clears their retained statuses on close."""

    def __init__(self, workdir: Path, host: str, port: int, size: int, group: str | None = "fleet",
                 prefix: str | None = None, **daemon_options):
        self.host, self.port = host, port
        self.url = f"mqtt://{host}:{port}"
        self.prefix = prefix or f"test/{uuidlib.uuid4().hex[:10]}/skeleton/v2"
        workdir.mkdir(parents=True, exist_ok=True)
        self.daemons = [FleetDaemon(workdir, self.url, self.prefix, group, f"d{index + 1}", **daemon_options)
                        for index in range(size)]
        self.observer: Observer | None = None

    def __enter__(self) -> Fleet:  # noqa: PYI034
        self.observer = Observer(self.host, self.port, self.prefix)
        try:
            for daemon in self.daemons:
                daemon.start()
            for daemon in self.daemons:
                wait_until(daemon.healthy, 120, f"daemon {daemon.daemon_id} to connect", interval=0.2)
            # Every member has subscribed once its status says online (published after the SUBSCRIBE).
            wait_until(lambda: all(self.observer.latest_status(d.daemon_id).get("state") == "online"
                                   for d in self.daemons), 30, "every daemon online")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.signal(signal.SIGTERM)
        for daemon in self.daemons:
            try:
                if daemon.process is not None:
                    daemon.process.wait(30)
            except subprocess.TimeoutExpired:
                pass
            daemon.close()
        if self.observer is not None:
            for daemon in self.daemons:  # leave no retained status behind on the shared broker
                self.observer.client.publish(f"{self.prefix}/status/{daemon.daemon_id}", b"", qos=1, retain=True)
            time.sleep(0.2)
            self.observer.close()
