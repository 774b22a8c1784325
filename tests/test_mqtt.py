"""MQTT against a real Mosquitto, with the daemon as a real process (`skeletond serve`) and the real
Analyzer on real photos: results on result/<uuid>, MQTT 5 request/response, bursts, SIGKILL and broker
restarts mid-burst, malformed payloads, SIGTERM during a burst.

Each test uses its own topic prefix and client ids, so parallel runs on the shared broker do not collide.
Tests that stop the broker start their own Mosquitto on a free port.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid as uuidlib
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from conftest import REPO_ROOT, testdata_path
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from proc_helpers import SERVE, free_port, wait_until

pytestmark = pytest.mark.broker

SHARED_BROKER = ("127.0.0.1", 1883)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


PHOTOS = {}


def request_payload(uuid: str, **extra) -> bytes:
    if not PHOTOS:
        PHOTOS["front"] = b64(testdata_path("photos", "front", "fitlens_p1_front.jpg").read_bytes())
        PHOTOS["side"] = b64(testdata_path("photos", "side", "fitlens_p1_side.jpg").read_bytes())
    payload = {"id": "someone@example.com", "uuid": uuid, "forigimg": PHOTOS["front"], "sorigimg": PHOTOS["side"]}
    payload.update(extra)
    return orjson.dumps(payload)


# -- a broker of our own (for the tests that stop it) ---------------------------------------------


class Broker:
    def __init__(self, directory: Path, extra_config: str = ""):
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Started as root, mosquitto would drop to the `mosquitto` user and not write its files here.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            f"log_dest file {directory}/mosquitto.log\n"
            + extra_config
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([mosquitto, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 10, "mosquitto to listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # mosquitto saves its persistence file on SIGTERM
            self.process.wait(10)
        self.process = None


@pytest.fixture
def own_broker(tmp_path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


# -- the kiosk side -------------------------------------------------------------------------------


class Kiosk:
    """Publishes requests and collects everything under the prefix (persistent session, MQTT 5)."""

    def __init__(self, host: str, port: int, prefix: str, extra_topics: tuple[str, ...] = (),
                 username: str | None = None, password: str | None = None, tls: dict | None = None):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.messages: list[mqtt.MQTTMessage] = []
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"kiosk-{uuidlib.uuid4().hex[:12]}", protocol=mqtt.MQTTv5
        )
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
        self.subscribe_codes: list = []
        topics = (f"{prefix}/result/#", f"{prefix}/error", f"{prefix}/status/#", *extra_topics)

        def on_connect(client, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                return
            client.subscribe([(topic, 1) for topic in topics])

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            self.subscribe_codes.append(reason_codes)
            self.connected.set()

        def on_message(client, userdata, message):
            with self.lock:
                self.messages.append(message)

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        connect_properties = Properties(PacketTypes.CONNECT)
        connect_properties.SessionExpiryInterval = 600
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async(host, port, clean_start=False, properties=connect_properties)
        self.client.loop_start()
        assert self.connected.wait(10), "the kiosk could not connect to the broker"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, payload: bytes, properties: Properties | None = None, topic: str | None = None,
                retain: bool = False) -> None:
        """On the plain request topic unless `topic` names another (e.g. a kiosk tree's request/<kiosk>)."""
        self.client.publish(topic or f"{self.prefix}/request", payload, qos=1, properties=properties, retain=retain)

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def results(self) -> dict[str, list[dict]]:
        """uuid -> every answer received on result/<uuid>."""
        found: dict[str, list[dict]] = {}
        head = f"{self.prefix}/result/"
        with self.lock:
            messages = list(self.messages)
        for message in messages:
            if message.topic.startswith(head):
                found.setdefault(message.topic[len(head):], []).append(orjson.loads(message.payload))
        return found

    def status(self, daemon_id: str) -> list[bytes]:
        return [m.payload for m in self.on(f"{self.prefix}/status/{daemon_id}")]

    def states(self, daemon_id: str) -> list[bytes]:
        """The states (b"online", b"offline", ...) of the daemon's retained JSON status messages."""
        from daemon.fleet.status import parse_status

        return [parse_status(daemon_id, payload).state.encode() for payload in self.status(daemon_id)]


# -- the daemon as a process ----------------------------------------------------------------------


class Daemon:
    def __init__(self, tmp_path: Path, host: str, port: int, prefix: str, stop_timeout_s: float = 30,
                 queue_size: int = 4, mqtt_extra: str = "", scheme: str = "mqtt", url: str | None = None,
                 extra_sections: str = ""):
        self.tmp_path = tmp_path
        self.prefix = prefix
        self.daemon_id = f"test-{uuidlib.uuid4().hex[:8]}"
        self.http_port = free_port()
        self.log_path = tmp_path / f"{self.daemon_id}.log"
        self.config_path = tmp_path / f"{self.daemon_id}.toml"
        self.config_path.write_text(
            f'[http]\nport = {self.http_port}\n'
            f'[mqtt]\nurl = "{url or f"{scheme}://{host}:{port}"}"\ntopic_prefix = "{prefix}"\n'
            f'client_id = "skeletond-{self.daemon_id}"\ndaemon_id = "{self.daemon_id}"\n'
            f'session_expiry_s = 600\n{mqtt_extra}'
            f'[worker]\nqueue_size = {queue_size}\nstop_timeout_s = {stop_timeout_s}\n'
            f'[store]\npath = "{tmp_path / "results.sqlite3"}"\n{extra_sections}'
        )
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [*SERVE, "--config", str(self.config_path), "serve"],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        wait_until(self.healthy, 60, f"the daemon to start (log: {self.log_path})", interval=0.1)

    def healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log()
        try:
            health = httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).json()
        except httpx.HTTPError:
            return False
        return health.get("transports", {}).get("mqtt") == "connected"

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def prefix() -> str:
    return f"test/{uuidlib.uuid4().hex[:10]}/skeleton/v2"


@contextlib.contextmanager
def daemon_and_kiosk(tmp_path, host, port, prefix, **daemon_options):
    kiosk = Kiosk(host, port, prefix)
    daemon = Daemon(tmp_path, host, port, prefix, **daemon_options)
    try:
        daemon.start()
        yield daemon, kiosk
    finally:
        daemon.close()
        kiosk.close()


def assert_answer(answer: dict, uuid: str) -> None:
    assert answer["uuid"] == uuid
    assert answer["state"] == 0, answer.get("data")
    assert answer["command"] == "keypoint"
    assert isinstance(answer["far_coords"], str)


# -- the tests ------------------------------------------------------------------------------------


def test_result_topic_and_mqtt5_response_topic(tmp_path, prefix):
    with daemon_and_kiosk(tmp_path, *SHARED_BROKER, prefix) as (daemon, kiosk):
        wait_until(lambda: b"online" in kiosk.states(daemon.daemon_id), 10, "the retained online status")
        kiosk.publish(request_payload("plain-1"))
        reply_topic = f"{prefix}/reply/kiosk-7"  # a plain request's ResponseTopic lies under reply/
        kiosk.client.subscribe(reply_topic, qos=1)
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = reply_topic
        properties.CorrelationData = b"correlation-42"
        kiosk.publish(request_payload("rpc-1"), properties)

        wait_until(lambda: {"plain-1", "rpc-1"} <= set(kiosk.results()), 60, "both results")
        assert_answer(kiosk.results()["plain-1"][0], "plain-1")
        assert_answer(kiosk.results()["rpc-1"][0], "rpc-1")
        wait_until(lambda: kiosk.on(reply_topic), 10, "the answer on the ResponseTopic")
        reply = kiosk.on(reply_topic)[0]
        assert reply.properties.CorrelationData == b"correlation-42"
        assert reply.payload == kiosk.on(f"{prefix}/result/rpc-1")[0].payload
        assert reply.qos == 1

        # The answer is stored: HTTP serves it by uuid (the daemon listens on loopback).
        stored = httpx.get(f"http://127.0.0.1:{daemon.http_port}/results/plain-1", timeout=5)
        assert stored.status_code == 200
        assert stored.content == kiosk.on(f"{prefix}/result/plain-1")[0].payload
        assert 'skeleton_requests_total{transport="mqtt"}' in daemon.metrics()


def test_malformed_payloads_get_error_results_and_the_daemon_stays_up(tmp_path, prefix):
    with daemon_and_kiosk(tmp_path, *SHARED_BROKER, prefix) as (daemon, kiosk):
        broken_front = testdata_path("photos", "front", "fitlens_p1_front.jpg").read_bytes()[:30_000]
        kiosk.publish(b"definitely { not json")
        kiosk.publish(orjson.dumps({"id": "x@example.com", "forigimg": "", "sorigimg": ""}))  # no uuid
        kiosk.publish(request_payload("bad+uuid"))
        kiosk.publish(orjson.dumps([1, 2, 3]))
        kiosk.publish(orjson.dumps({"id": "x@example.com", "uuid": "no-side", "forigimg": "aGVsbG8="}))
        kiosk.publish(request_payload("broken-image", forigimg=b64(broken_front)))
        kiosk.publish(request_payload("text-image", sorigimg=b64(b"just some text, not a photo " * 10)))
        kiosk.publish(request_payload("bad-height", height="very tall"))
        kiosk.publish(request_payload("fine-after"))

        error_topic = f"{prefix}/error"
        wait_until(lambda: len(kiosk.on(error_topic)) >= 4, 30, "four answers on the error topic")
        for message in kiosk.on(error_topic):
            data = orjson.loads(message.payload)["data"]
            assert data["state"] == -1 and data["errors"] and data["detail"]
        texts = sorted(orjson.loads(m.payload)["data"]["errors"] for m in kiosk.on(error_topic))
        assert texts == ["invalid JSON", "invalid JSON", "invalid field: uuid", "missing field: uuid"]

        expected = {
            "no-side": "missing field: sorigimg",
            "broken-image": "image load error",
            "text-image": "image load error",
            "bad-height": "invalid field: height",
        }
        wait_until(lambda: set(expected) | {"fine-after"} <= set(kiosk.results()), 60, "every answer")
        results = kiosk.results()
        for uuid, text in expected.items():
            answer = results[uuid][0]
            assert answer["uuid"] == uuid
            assert answer["data"]["state"] == -1 and answer["data"]["errors"] == text, answer
        assert_answer(results["fine-after"][0], "fine-after")
        assert daemon.process.poll() is None
        # Errors are not stored: a kiosk may retry the uuid.
        assert httpx.get(f"http://127.0.0.1:{daemon.http_port}/results/broken-image").status_code == 404
        assert 'skeleton_errors_total{kind="image_load"} 2.0' in daemon.metrics()


def test_burst_of_fifty(tmp_path, prefix):
    with daemon_and_kiosk(tmp_path, *SHARED_BROKER, prefix) as (daemon, kiosk):
        uuids = [f"burst-{index:02d}" for index in range(50)]
        for uuid in uuids:
            kiosk.publish(request_payload(uuid))
        wait_until(lambda: set(uuids) <= set(kiosk.results()), 180, "50 results", interval=0.2)
        results = kiosk.results()
        for uuid in uuids:
            assert_answer(results[uuid][0], uuid)
        assert "Traceback" not in daemon.log()


def test_sigkill_mid_burst_then_restart_answers_everything(tmp_path, prefix):
    with daemon_and_kiosk(tmp_path, *SHARED_BROKER, prefix) as (daemon, kiosk):
        uuids = [f"kill-{index:02d}" for index in range(30)]
        for uuid in uuids:
            kiosk.publish(request_payload(uuid))
        wait_until(lambda: len(kiosk.results()) >= 8, 120, "the first results")
        daemon.signal(signal.SIGKILL)
        daemon.wait(10)
        answered_before = set(kiosk.results())
        assert answered_before < set(uuids), "the burst finished before the kill; nothing was tested"

        daemon.start()
        wait_until(lambda: set(uuids) <= set(kiosk.results()), 180, "every request answered after the restart",
                   interval=0.2)
        results = kiosk.results()
        for uuid in uuids:
            assert_answer(results[uuid][0], uuid)
            # A uuid answered twice (redelivered after the kill) carries the same answer.
            assert all(answer == results[uuid][0] for answer in results[uuid]), uuid


def test_broker_restart_mid_burst(tmp_path, prefix, own_broker):
    with daemon_and_kiosk(tmp_path, "127.0.0.1", own_broker.port, prefix) as (daemon, kiosk):
        uuids = [f"broker-{index:02d}" for index in range(30)]
        for uuid in uuids:
            kiosk.publish(request_payload(uuid))
        wait_until(lambda: len(kiosk.results()) >= 5, 120, "the first results")
        own_broker.stop()
        time.sleep(1.5)
        own_broker.start()
        wait_until(lambda: set(uuids) <= set(kiosk.results()), 180, "every request answered after the broker restart",
                   interval=0.2)
        results = kiosk.results()
        for uuid in uuids:
            assert_answer(results[uuid][0], uuid)
        assert daemon.process.poll() is None
        assert daemon.healthy()
        assert "MQTT connected" in daemon.log() and "session present: True" in daemon.log()


def test_sigterm_during_burst_finishes_in_flight_and_publishes_offline(tmp_path, prefix):
    stop_timeout = 20
    with daemon_and_kiosk(tmp_path, *SHARED_BROKER, prefix, stop_timeout_s=stop_timeout) as (daemon, kiosk):
        wait_until(lambda: b"online" in kiosk.states(daemon.daemon_id), 10, "the online status")
        uuids = [f"term-{index:02d}" for index in range(30)]
        for uuid in uuids:
            kiosk.publish(request_payload(uuid))
        wait_until(lambda: len(kiosk.results()) >= 3, 120, "the first results")
        answered_at_signal = len(kiosk.results())
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(stop_timeout + 5) == 0, daemon.log()
        assert time.monotonic() - started < stop_timeout
        wait_until(lambda: kiosk.states(daemon.daemon_id)[-1:] == [b"offline"], 10, "the offline status")
        assert "stopping: intake closed" in daemon.log()
        answered_at_stop = set(kiosk.results())
        assert answered_at_stop < set(uuids), "the burst finished before SIGTERM; nothing was tested"
        # What was queued or running at the signal was finished and published before the exit.
        assert len(answered_at_stop) > answered_at_signal
        # Nothing accepted was dropped: the rest, never acknowledged, comes back after a restart.
        daemon.start()
        wait_until(lambda: set(uuids) <= set(kiosk.results()), 180, "the rest after the restart", interval=0.2)
        for uuid in uuids:
            assert_answer(kiosk.results()[uuid][0], uuid)


def test_credentials_and_the_example_acl(tmp_path):
    """deploy/mosquitto.acl on a real broker: the daemon (user skeletond) reads requests and writes results;
    a kiosk publishes requests on its own tree, reads its own results and replies, and cannot read requests
    (tests/test_mqtt_privacy.py: nor another kiosk's results)."""
    passwords = tmp_path / "passwd"
    passwords.touch()
    for user, secret in (("skeletond", "daemon-secret"), ("kiosk-01", "kiosk-secret")):
        subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(passwords),
                        user, secret], check=True, capture_output=True)
    broker = Broker(
        tmp_path / "broker",
        extra_config=f"password_file {passwords}\nacl_file {REPO_ROOT / 'deploy' / 'mosquitto.acl'}\n",
    )
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    prefix = "skeleton/v2"  # the example ACL is written for the default prefix
    kiosk = Kiosk("127.0.0.1", broker.port, prefix, username="kiosk-01", password="kiosk-secret")
    daemon = Daemon(tmp_path, "127.0.0.1", broker.port, prefix,
                    mqtt_extra='username = "skeletond"\npassword = "daemon-secret"\n')
    try:
        daemon.start()
        kiosk.client.subscribe(f"{prefix}/request/#", qos=1)
        wait_until(lambda: len(kiosk.subscribe_codes) >= 2, 10, "the kiosk's second SUBACK")
        # Mosquitto 2.0 grants the subscription and filters each message by the ACL's read rules.
        reply_topic = f"{prefix}/reply/kiosk-01/screen"
        kiosk.client.subscribe(reply_topic, qos=1)
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = reply_topic
        properties.CorrelationData = b"acl-corr"
        kiosk.publish(request_payload("acl-1"), properties, topic=f"{prefix}/request/kiosk-01")
        result_topic = f"{prefix}/result/kiosk-01/acl-1"
        wait_until(lambda: kiosk.on(result_topic), 60, "the result through the ACL")
        wait_until(lambda: kiosk.on(reply_topic), 10, "the reply in the kiosk's own reply tree")
        assert kiosk.on(reply_topic)[0].properties.CorrelationData == b"acl-corr"
        assert_answer(orjson.loads(kiosk.on(result_topic)[0].payload), "acl-1")
        assert not [m for m in kiosk.messages if "/request" in m.topic], \
            "a kiosk must not read requests (photos, e-mail addresses)"
        wait_until(lambda: b"online" in kiosk.states(daemon.daemon_id), 10, "the daemon's status")
    finally:
        daemon.close()
        kiosk.close()
        broker.stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([shutil.which("openssl") or "/usr/bin/openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(directory: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=skeleton-test-ca", cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ("-extfile", "server.ext")), ("client", ())):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *extra, cwd=directory)


def test_tls_with_client_certificates(tmp_path, prefix):
    """mqtts:// with a CA file and a client certificate, against a broker that requires one."""
    certs = tmp_path / "certs"
    _certificates(certs)
    broker = Broker(
        tmp_path / "broker",
        extra_config=f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n"
                     "require_certificate true\n",
    )
    broker.start()
    client_tls = {"ca_certs": str(certs / "ca.crt"), "certfile": str(certs / "client.crt"),
                  "keyfile": str(certs / "client.key")}
    kiosk = Kiosk("127.0.0.1", broker.port, prefix, tls=client_tls)
    daemon = Daemon(
        tmp_path, "127.0.0.1", broker.port, prefix, scheme="mqtts",
        mqtt_extra=f'ca_file = "{certs / "ca.crt"}"\ncert_file = "{certs / "client.crt"}"\n'
                   f'key_file = "{certs / "client.key"}"\n',
    )
    try:
        daemon.start()
        kiosk.publish(request_payload("tls-1"))
        wait_until(lambda: "tls-1" in kiosk.results(), 60, "the result over TLS")
        assert_answer(kiosk.results()["tls-1"][0], "tls-1")
    finally:
        daemon.close()
        kiosk.close()
        broker.stop()
