"""MQTT privacy and robustness against a real Mosquitto (issue 10): per-kiosk topic trees enforced by the
broker's ACL, ResponseTopic confined to the kiosk's reply tree, retained requests refused, the payload
limit, the raw payload released once parsed, an unexpected exception answered and acked, /healthz
`degraded` while the broker is away, and no secret in any log line or error text.

The daemon runs as a real process (`skeletond serve`) with the real Analyzer on real photos. Two tests
(the payload released, the unexpected exception) run the bridge in this process beside a fake analyzer,
because they look inside the process or need a fault there; the real path is tested above them.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import threading
import time
import uuid as uuidlib
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from conftest import REPO_ROOT
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_mqtt import (
    SERVE,
    SHARED_BROKER,
    Broker,
    Daemon,
    Kiosk,
    assert_answer,
    free_port,
    request_payload,
    wait_until,
)

from daemon.config import load_config
from daemon.mqtt import MqttBridge
from daemon.service import Service

pytestmark = pytest.mark.broker

ACL = REPO_ROOT / "deploy" / "mosquitto.acl"
PREFIX = "skeleton/v2"  # the example ACL is written for the default prefix


@pytest.fixture
def prefix() -> str:
    return f"test/{uuidlib.uuid4().hex[:10]}/skeleton/v2"


def _answers(kiosk: Kiosk, topic: str) -> list[dict]:
    return [orjson.loads(m.payload) for m in kiosk.on(topic)]


def _error_of(answer: dict) -> str:
    data = answer["data"]
    assert data["state"] == -1 and data["detail"], answer
    return data.get("errors") or data.get("message")


def _passwords(directory: Path, users: dict[str, str]) -> Path:
    passwords = directory / "passwd"
    passwords.touch()
    for user, secret in users.items():
        subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(passwords),
                        user, secret], check=True, capture_output=True)
    return passwords


def _acl_broker(tmp_path: Path, users: dict[str, str]) -> Broker:
    passwords = _passwords(tmp_path, users)
    broker = Broker(tmp_path / "broker", extra_config=f"password_file {passwords}\nacl_file {ACL}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    return broker


def _rpc(response_topic: str) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = response_topic
    properties.CorrelationData = b"corr"
    return properties


# -- per-kiosk trees, enforced by the broker --------------------------------------------------------


def test_each_kiosk_reads_only_its_own_results_broker_enforced(tmp_path):
    """kiosk-a and kiosk-b on deploy/mosquitto.acl, each subscribed to everything it may try (result/#,
    error/#, reply/#): each gets its own answers only, whatever it subscribes to; a stored uuid re-sent from
    another tree or with another kiosk is not answered with the stored answer; a ResponseTopic outside the
    kiosk's reply tree is refused with an error on its own tree."""
    broker = _acl_broker(tmp_path, {"skeletond": "daemon-secret", "kiosk-a": "secret-a", "kiosk-b": "secret-b"})
    spy_topics = (f"{PREFIX}/error/#", f"{PREFIX}/reply/#", f"{PREFIX}/request/#")
    kiosk_a = Kiosk("127.0.0.1", broker.port, PREFIX, spy_topics, username="kiosk-a", password="secret-a")
    kiosk_b = Kiosk("127.0.0.1", broker.port, PREFIX, spy_topics, username="kiosk-b", password="secret-b")
    daemon = Daemon(tmp_path, "127.0.0.1", broker.port, PREFIX,
                    mqtt_extra='username = "skeletond"\npassword = "daemon-secret"\n')
    try:
        daemon.start()
        kiosk_a.publish(request_payload("a-1"), topic=f"{PREFIX}/request/kiosk-a")
        kiosk_b.publish(request_payload("b-1"), topic=f"{PREFIX}/request/kiosk-b")
        kiosk_a.publish(b"not json", topic=f"{PREFIX}/request/kiosk-a")
        # A ResponseTopic pointing anywhere but the kiosk's own reply tree is refused, without analysis.
        refused = {
            "a-other-reply": f"{PREFIX}/reply/kiosk-b/screen",
            "a-other-result": f"{PREFIX}/result/kiosk-b/b-1",
            "a-status": f"{PREFIX}/status/{daemon.daemon_id}",
        }
        for uuid, response_topic in refused.items():
            kiosk_a.publish(request_payload(uuid), _rpc(response_topic), topic=f"{PREFIX}/request/kiosk-a")
        # kiosk-b cannot publish into kiosk-a's tree (the broker refuses it; the daemon never sees it).
        kiosk_b.publish(request_payload("b-forged"), topic=f"{PREFIX}/request/kiosk-a")

        result_a, result_b = f"{PREFIX}/result/kiosk-a/a-1", f"{PREFIX}/result/kiosk-b/b-1"
        wait_until(lambda: kiosk_a.on(result_a) and kiosk_b.on(result_b), 90, "both kiosks' results")
        assert_answer(_answers(kiosk_a, result_a)[0], "a-1")
        assert_answer(_answers(kiosk_b, result_b)[0], "b-1")
        for uuid in refused:
            topic = f"{PREFIX}/result/kiosk-a/{uuid}"
            wait_until(lambda topic=topic: kiosk_a.on(topic), 30, f"the refusal of {uuid}")
            answer = _answers(kiosk_a, topic)[0]
            assert _error_of(answer) == "invalid ResponseTopic" and "reply/kiosk-a/" in answer["data"]["detail"]
        wait_until(lambda: kiosk_a.on(f"{PREFIX}/error/kiosk-a"), 10, "kiosk-a's error without a uuid")
        assert _error_of(_answers(kiosk_a, f"{PREFIX}/error/kiosk-a")[0]) == "invalid JSON"

        # The same uuid from the other tree (same photos) is a conflict there, never kiosk-a's answer;
        # re-sent by kiosk-a naming an unknown kiosk, it is refused, not answered from the store.
        kiosk_b.publish(request_payload("a-1"), topic=f"{PREFIX}/request/kiosk-b")
        kiosk_a.publish(request_payload("a-1", kiosk="nowhere"), topic=f"{PREFIX}/request/kiosk-a")
        stolen = f"{PREFIX}/result/kiosk-b/a-1"
        wait_until(lambda: kiosk_b.on(stolen) and len(kiosk_a.on(result_a)) >= 2, 30, "the re-sent uuid's answers")
        assert _error_of(_answers(kiosk_b, stolen)[0]) == "uuid conflict"
        assert _error_of(_answers(kiosk_a, result_a)[1]) == "invalid field: kiosk"

        time.sleep(1.0)  # let anything misrouted arrive
        for kiosk, own, other in ((kiosk_a, "kiosk-a", "kiosk-b"), (kiosk_b, "kiosk-b", "kiosk-a")):
            with kiosk.lock:
                topics = {m.topic for m in kiosk.messages}
            assert not {t for t in topics if f"/{other}" in t}, f"{own} read {other}'s messages: {topics}"
            assert not {t for t in topics if "/request" in t}, f"{own} read requests: {topics}"
        assert not kiosk_a.on(f"{PREFIX}/result/kiosk-a/b-forged")
        assert "b-forged" not in daemon.log()
    finally:
        daemon.close()
        kiosk_a.close()
        kiosk_b.close()
        broker.stop()


# -- retained requests ----------------------------------------------------------------------------


def test_retained_requests_are_refused_and_never_replayed(tmp_path):
    prefix = f"test/{uuidlib.uuid4().hex[:10]}/skeleton/v2"
    kiosk = Kiosk(*SHARED_BROKER, prefix)
    request_topic = f"{prefix}/request"  # the plain tree (the kiosk trees take the same path)
    # Retained before the daemon ever subscribed: retain handling 2, so it is never delivered.
    kiosk.publish(request_payload("retained-early"), topic=request_topic, retain=True)
    daemon = Daemon(tmp_path, *SHARED_BROKER, prefix)
    try:
        daemon.start()
        # Retained while the daemon listens: refused with a reason, not analysed, and taken off the broker.
        kiosk.publish(request_payload("retained-live"), topic=request_topic, retain=True)
        live = f"{prefix}/result/retained-live"
        wait_until(lambda: kiosk.on(live), 30, "the refusal of the retained request")
        answer = _answers(kiosk, live)[0]
        assert _error_of(answer) == "retained request refused"
        assert "retain flag" in answer["data"]["detail"]
        # Refused before its ResponseTopic is looked at: an answer never lands outside the reply tree.
        kiosk.publish(request_payload("retained-rpc"), _rpc(f"{prefix}/status/{daemon.daemon_id}"),
                      topic=request_topic, retain=True)
        wait_until(lambda: kiosk.on(f"{prefix}/result/retained-rpc"), 30, "the refusal of the retained RPC")
        assert _error_of(_answers(kiosk, f"{prefix}/result/retained-rpc")[0]) == "retained request refused"
        kiosk.publish(request_payload("plain-after"), topic=request_topic)
        wait_until(lambda: kiosk.on(f"{prefix}/result/plain-after"), 90, "the ordinary request's answer")
        assert_answer(_answers(kiosk, f"{prefix}/result/plain-after")[0], "plain-after")

        # A restart (reconnect, session present) replays nothing.
        daemon.signal(15)
        daemon.wait(30)
        daemon.start()
        time.sleep(2.0)
        assert not kiosk.on(f"{prefix}/result/retained-early")
        assert len(kiosk.on(live)) == 1
        assert not [p for p in kiosk.status(daemon.daemon_id) if b"retained-rpc" in p], "an answer on the status topic"
        # The live one's photos were deleted from the broker: a new subscriber gets no retained request.
        seen: list[mqtt.MQTTMessage] = []
        spy = Kiosk(*SHARED_BROKER, f"{prefix}/none")
        spy.client.on_message = lambda client, userdata, message: seen.append(message)
        spy.client.subscribe(request_topic, qos=1)
        time.sleep(1.0)
        spy.close()
        assert all(b"retained-" not in m.payload for m in seen), "a refused request is still retained"
    finally:
        daemon.close()
        # Clear what the test left retained on the shared broker.
        kiosk.publish(b"", topic=request_topic, retain=True)
        time.sleep(0.2)
        kiosk.close()


# -- the payload limit ----------------------------------------------------------------------------


def test_payload_over_the_http_body_limit_is_refused_before_parsing(tmp_path):
    prefix = f"test/{uuidlib.uuid4().hex[:10]}/skeleton/v2"
    kiosk = Kiosk(*SHARED_BROKER, prefix)
    limit = 200_000
    daemon = Daemon(tmp_path, *SHARED_BROKER, prefix)
    daemon.config_path.write_text(daemon.config_path.read_text().replace(
        "[http]\n", f"[http]\nmax_body_bytes = {limit}\n", 1))
    try:
        daemon.start()
        big = request_payload("too-big")
        assert len(big) > limit
        kiosk.publish(big, topic=f"{prefix}/request")
        small = orjson.dumps({"id": "x@example.com", "uuid": "small", "forigimg": "aGVsbG8=", "sorigimg": "aGVsbG8="})
        kiosk.publish(small, topic=f"{prefix}/request")
        wait_until(lambda: kiosk.on(f"{prefix}/error"), 30, "the refusal of the large payload")
        answer = _answers(kiosk, f"{prefix}/error")[0]
        assert _error_of(answer) == "request too large" and answer["data"]["kind"] == "too_large"
        assert str(limit) in answer["data"]["detail"]
        # Not parsed: its uuid is never answered; the next request is.
        wait_until(lambda: kiosk.on(f"{prefix}/result/small"), 30, "the small request's answer")
        assert not kiosk.on(f"{prefix}/result/too-big")
        # Over twice the limit, the broker does not even deliver it (the daemon's MQTT 5 Maximum Packet
        # Size): the daemon never holds it, and goes on answering.
        kiosk.publish(request_payload("far-too-big", pad="x" * (3 * limit)), topic=f"{prefix}/request")
        kiosk.publish(small.replace(b'"small"', b'"small-2"'), topic=f"{prefix}/request")
        wait_until(lambda: kiosk.on(f"{prefix}/result/small-2"), 30, "the answer after the oversized payload")
        assert len(kiosk.on(f"{prefix}/error")) == 1, _answers(kiosk, f"{prefix}/error")
    finally:
        daemon.close()
        kiosk.close()


# -- in this process, beside a fake analyzer ------------------------------------------------------


class QuickAnalyzer:
    """Answers at once, or holds still until released (to look at memory while a request waits)."""

    def __init__(self, release: threading.Event):
        self.release = release
        self.started = threading.Semaphore(0)

    def analyze(self, request) -> dict:
        self.started.release()
        assert self.release.wait(30), "the test never released the analyzer"
        return {"uuid": request.uuid, "state": 0, "command": "keypoint", "far_coords": ""}

    def describe(self) -> dict:
        return {"backend": "quick-fake"}

    def close(self) -> None:
        pass


def _bridge(tmp_path: Path, prefix: str, release: threading.Event, service_class=Service):
    config = load_config(overrides={
        "worker": {"queue_size": 1},
        "store": {"path": str(tmp_path / "bridge.sqlite3")},
        "mqtt": {"url": f"mqtt://{SHARED_BROKER[0]}:{SHARED_BROKER[1]}", "topic_prefix": prefix,
                 "client_id": f"skeletond-test-{uuidlib.uuid4().hex[:8]}", "session_expiry_s": 0},
    })
    analyzers: list[QuickAnalyzer] = []

    def factory(cfg):
        analyzers.append(QuickAnalyzer(release))
        return analyzers[-1]

    service = service_class(config, factory)
    service.start()
    bridge = MqttBridge(service, config.mqtt)
    bridge.start()
    assert bridge.connected.wait(10)
    return service, bridge, analyzers[0]


def test_raw_payload_is_released_once_parsed(tmp_path, prefix):
    release = threading.Event()
    service, bridge, analyzer = _bridge(tmp_path, prefix, release)
    kiosk = Kiosk(*SHARED_BROKER, prefix)
    try:
        time.sleep(0.3)  # the daemon's SUBACK
        kiosk.publish(request_payload("held-1"), topic=f"{prefix}/request")
        assert analyzer.started.acquire(timeout=30), "the request never reached the analyzer"
        gc.collect()
        # While the request waits for its answer, neither paho's message with the raw payload nor the
        # parsed JSON (base64 photos) is alive any more: only the decoded photos are.
        big_messages = [o for o in gc.get_objects() if isinstance(o, mqtt.MQTTMessage) and len(o.payload) > 10_000]
        big_json = [o for o in gc.get_objects()
                    if isinstance(o, dict) and isinstance(o.get("forigimg"), str) and len(o["forigimg"]) > 10_000]
        assert not big_messages, "the raw MQTT payload is still held while the request is analysed"
        assert not big_json, "the parsed request JSON is still held while the request is analysed"
        release.set()
        wait_until(lambda: kiosk.on(f"{prefix}/result/held-1"), 10, "the answer")
    finally:
        release.set()
        bridge.stop(5)
        service.stop(5)
        kiosk.close()


class FaultyService(Service):
    """A fault that no input can provoke today: submit raises something unexpected for uuids 'boom-*'."""

    def submit(self, request):
        if request.uuid.startswith("boom-"):
            raise RuntimeError("a bug")
        return super().submit(request)


def test_an_unexpected_exception_is_answered_acked_and_costs_no_slot(tmp_path, prefix):
    release = threading.Event()
    release.set()
    service, bridge, _ = _bridge(tmp_path, prefix, release, FaultyService)
    kiosk = Kiosk(*SHARED_BROKER, prefix)
    try:
        time.sleep(0.3)
        # Queue size 1: the broker sends at most 3 unacknowledged requests. Six faults, then a good one.
        booms = [f"boom-{index}" for index in range(6)]
        for uuid in [*booms, "good-1"]:
            kiosk.publish(request_payload(uuid), topic=f"{prefix}/request")
        wait_until(lambda: kiosk.on(f"{prefix}/result/good-1"), 30, "the request after the faults")
        for uuid in booms:
            answers = _answers(kiosk, f"{prefix}/result/{uuid}")
            assert answers and answers[0]["data"]["kind"] == "internal", uuid
        assert _answers(kiosk, f"{prefix}/result/good-1")[0]["state"] == 0
    finally:
        bridge.stop(5)
        service.stop(5)
        kiosk.close()


# -- /healthz while the broker is away ------------------------------------------------------------


def _health(daemon: Daemon) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{daemon.http_port}/healthz", timeout=2)
    except httpx.HTTPError:
        return None


def _start_without_broker(daemon: Daemon) -> None:
    log = open(daemon.log_path, "ab")  # noqa: SIM115 - handed to the child process
    daemon.process = subprocess.Popen(
        [*SERVE, "--config", str(daemon.config_path), "serve"],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()


def test_healthz_degraded_when_the_broker_is_unreachable_or_refuses(tmp_path, prefix):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    unreachable = Daemon(tmp_path / "a", "127.0.0.1", free_port(), prefix, mqtt_extra="degraded_after_s = 2\n")
    broker = _acl_broker(tmp_path, {"skeletond": "right-password"})
    refused = Daemon(tmp_path / "b", "127.0.0.1", broker.port, PREFIX,
                     mqtt_extra='username = "skeletond"\npassword = "wrong-password"\ndegraded_after_s = 2\n')
    try:
        for daemon in (unreachable, refused):
            _start_without_broker(daemon)
        for daemon, state in ((unreachable, "unreachable"), (refused, "refused")):
            wait_until(lambda d=daemon: (r := _health(d)) is not None and r.status_code == 503, 60,
                       f"/healthz to say degraded ({state}); log: {daemon.log_path}", interval=0.2)
            health = _health(daemon).json()
            assert health["status"] == "degraded"
            assert health["transports"]["mqtt"].startswith(state), health
            assert any("MQTT broker" in problem for problem in health["problems"]), health
    finally:
        unreachable.close()
        refused.close()
        broker.stop()


# -- secrets ----------------------------------------------------------------------------------------


def _run_cli(tmp_path: Path, config_text: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    config = tmp_path / f"config-{uuidlib.uuid4().hex[:6]}.toml"
    config.write_text(config_text)
    return subprocess.run([*SERVE, "--config", str(config), *args], check=False, cwd=REPO_ROOT,
                          capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("mqtt_section", [
    'url = "mqttx://skeletond:pw-SECRET-1@broker:1883"',        # wrong scheme
    'url = "mqtt://skeletond:pw-SECRET-1@broker:99999"',        # port out of range
    'url = "mqtt://skeletond:pw-SECRET-1@:1883"',               # no host
    'url = "mqtt://broker:1883"\nusername = "u"\npassword = ["pw-SECRET-1"]',  # mistyped password
    'url = ["mqtt://skeletond:pw-SECRET-1@broker:1883"]',     # mistyped url
])
def test_config_errors_never_echo_the_mqtt_password(tmp_path, mqtt_section):
    result = _run_cli(tmp_path, f"[mqtt]\n{mqtt_section}\n", "serve")
    assert result.returncode == 2, result.stderr
    assert "configuration error" in result.stderr and "mqtt." in result.stderr
    assert "pw-SECRET-1" not in result.stderr + result.stdout


def test_config_errors_never_echo_the_bearer_token(tmp_path):
    result = _run_cli(tmp_path, '[http]\ntoken = ["tok-SECRET-2"]\n', "serve")
    assert result.returncode == 2 and "http.token" in result.stderr
    assert "tok-SECRET-2" not in result.stderr + result.stdout


def test_tls_key_contents_never_reach_the_output(tmp_path, prefix):
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nKEY-MATERIAL-SECRET-3\n-----END PRIVATE KEY-----\n")
    cert = tmp_path / "client.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nCERT-MATERIAL-4\n-----END CERTIFICATE-----\n")
    result = _run_cli(
        tmp_path,
        f'[http]\nport = {free_port()}\n[mqtt]\nurl = "mqtts://127.0.0.1:{free_port()}"\ntopic_prefix = "{prefix}"\n'
        f'cert_file = "{cert}"\nkey_file = "{key}"\n[store]\npath = "{tmp_path / "r.sqlite3"}"\n',
        "serve", timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "mqtt.ca_file / cert_file / key_file" in result.stderr
    assert "Traceback" not in result.stderr
    assert "KEY-MATERIAL-SECRET-3" not in result.stderr + result.stdout


def test_the_mqtt_password_and_the_token_never_reach_the_log(tmp_path):
    broker = _acl_broker(tmp_path, {"skeletond": "pw-SECRET-5"})
    daemon = Daemon(tmp_path, "127.0.0.1", broker.port, PREFIX,
                    url=f"mqtt://skeletond:pw-SECRET-5@127.0.0.1:{broker.port}")
    daemon.config_path.write_text(daemon.config_path.read_text().replace(
        "[http]\n", '[http]\ntoken = "tok-SECRET-6"\n', 1))
    try:
        daemon.start()  # connected with the password from the URL
        response = httpx.get(f"http://127.0.0.1:{daemon.http_port}/metrics",
                             headers={"Authorization": "Bearer tok-SECRET-6"}, timeout=5)
        assert response.status_code == 200
        log = daemon.log()
        assert "pw-SECRET-5" not in log and "tok-SECRET-6" not in log
        assert "serving HTTP" in log and "mqtt://skeletond:***@127.0.0.1" in log
    finally:
        daemon.close()
        broker.stop()


def test_redact_url():
    from daemon.config import redact_url

    assert redact_url("mqtt://u:p@host:1883") == "mqtt://u:***@host:1883"
    assert redact_url("mqtts://u:p%40ss/w@host") == "mqtts://u:***@host"
    assert redact_url("mqtt://u:p@ss@host") == "mqtt://u:***@host"
    assert redact_url("mqtt://user@host") == "mqtt://user@host"
    assert redact_url("mqtt://host:1883") == "mqtt://host:1883"
    assert redact_url("u:p@host") == "***"



# -- the compose file's broker: TLS for the gym network, plaintext on loopback --------------------


def test_compose_broker_publishes_only_tls_and_the_documented_certificates_work(tmp_path):
    import ssl

    import yaml

    compose = yaml.safe_load((REPO_ROOT / "deploy" / "compose.yaml").read_text())
    ports = [str(port) for port in compose["services"]["mosquitto"]["ports"]]
    beyond_loopback = [port for port in ports if not port.startswith("127.0.0.1:")]
    assert beyond_loopback == ["8883:8883"], f"only the TLS port may be published beyond loopback: {ports}"
    assert "127.0.0.1:1883:1883" in ports

    # The documented script makes the certificates; the compose broker's own config serves them.
    certs = tmp_path / "certs"
    subprocess.run(["sh", str(REPO_ROOT / "deploy" / "make-certs.sh"), str(certs)], check=True, capture_output=True)
    passwords = _passwords(tmp_path, {"skeletond": "daemon-secret", "kiosk-01": "kiosk-secret"})
    plain_port, tls_port = free_port(), free_port()
    conf = (REPO_ROOT / "deploy" / "mosquitto" / "compose.conf").read_text()
    assert "\nlistener 8883\n" in conf and "\nlistener 1883\n" in conf
    for container_path, here in (
        ("/mosquitto/config/certs/", f"{certs}/"), ("/mosquitto/config/passwd", str(passwords)),
        ("/mosquitto/config/mosquitto.acl", str(ACL)), ("/mosquitto/data/", f"{tmp_path}/"),
        # The test binds loopback only (the container binds its own interfaces).
        ("\nlistener 1883\n", f"\nlistener {plain_port} 127.0.0.1\n"),
        ("\nlistener 8883\n", f"\nlistener {tls_port} 127.0.0.1\n"),
    ):
        conf = conf.replace(container_path, here)
    broker = Broker(tmp_path / "broker")
    broker.port = tls_port
    broker.conf.write_text(conf + f"user {os.environ.get('USER') or __import__('getpass').getuser()}\n")
    broker.start()
    daemon_side = Kiosk("127.0.0.1", plain_port, PREFIX, (f"{PREFIX}/request/+",),
                        username="skeletond", password="daemon-secret")
    kiosk = Kiosk("127.0.0.1", tls_port, PREFIX, username="kiosk-01", password="kiosk-secret",
                  tls={"ca_certs": str(certs / "ca.crt")})  # verifies the certificate and its name
    try:
        kiosk.publish(b"over TLS", topic=f"{PREFIX}/request/kiosk-01")
        wait_until(lambda: daemon_side.on(f"{PREFIX}/request/kiosk-01"), 10, "the request over TLS")
        # Plaintext MQTT on the TLS port gets nowhere; a client that does not trust the CA is refused.
        plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"plain-{uuidlib.uuid4().hex[:8]}",
                            protocol=mqtt.MQTTv5)
        plain.username_pw_set("kiosk-01", "kiosk-secret")
        with contextlib.suppress(OSError):
            plain.connect("127.0.0.1", tls_port, keepalive=5)
            for _ in range(6):
                plain.loop(timeout=0.5)
        assert not plain.is_connected(), "a plaintext client connected to the TLS port"
        plain.disconnect()
        untrusting = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"nt-{uuidlib.uuid4().hex[:8]}",
                                 protocol=mqtt.MQTTv5)
        untrusting.tls_set()  # the system's CAs, not ours
        with pytest.raises(ssl.SSLError):
            untrusting.connect("127.0.0.1", tls_port, keepalive=5)
    finally:
        kiosk.close()
        daemon_side.close()
        broker.stop()


# -- erasure in a fleet: daemons only on fleet/erase ------------------------------------------------


def test_only_daemons_use_the_fleet_erase_topic_broker_enforced(tmp_path):
    """deploy/mosquitto.acl with two daemons (user skeletond) in one group and kiosk-a: kiosk-a's publish on
    fleet/erase is refused by the broker and erases nothing; its own erase command through its request
    tree erases the member on both daemons, and the fan-out (the member id in clear) never reaches the
    kiosk, though it subscribed to fleet/#."""
    from fleet_harness import analyse_until_every_daemon_holds, member_visits

    from daemon.fleet.client import KioskClient

    broker = _acl_broker(tmp_path, {"skeletond": "daemon-secret", "kiosk-a": "secret-a"})
    fleet_topic = f"{PREFIX}/fleet/erase"
    spy = Kiosk("127.0.0.1", broker.port, PREFIX, (f"{PREFIX}/fleet/#",), username="kiosk-a", password="secret-a")
    pubacks: dict[int, object] = {}
    spy.client.on_publish = lambda client, userdata, mid, reason_code, properties: pubacks.update({mid: reason_code})
    daemons = []
    for name in ("d1", "d2"):
        (tmp_path / name).mkdir()
        daemons.append(Daemon(
            tmp_path / name, "127.0.0.1", broker.port, PREFIX,
            mqtt_extra='username = "skeletond"\npassword = "daemon-secret"\nshared_group = "acl-fleet"\n',
            extra_sections='[models]\nlandmark = "lite"\n[pipeline]\nflip_test = false\nannotated_max_side = 320\n',
        ))
    member = "acl.member@example.com"
    try:
        for daemon in daemons:
            daemon.start()
        ports = [daemon.http_port for daemon in daemons]
        with KioskClient(f"mqtt://127.0.0.1:{broker.port}", PREFIX, kiosk="kiosk-a", username="kiosk-a",
                         password="secret-a") as client:
            analyse_until_every_daemon_holds(client, ports, member, "acl")
            held = [member_visits(port, member) for port in ports]

            # Forged: a kiosk publishing the daemons' fan-out itself. Mosquitto answers MQTT 5 with
            # "Not authorized" and delivers it to nobody.
            forged = orjson.dumps({"command": "erase", "id": member, "daemon_id": "forged"})
            info = spy.client.publish(fleet_topic, forged, qos=1)
            wait_until(lambda: info.mid in pubacks, 10, "the broker's answer to the forged fan-out")
            assert pubacks[info.mid].is_failure and pubacks[info.mid].value == 135, pubacks[info.mid]
            time.sleep(1.0)
            assert [member_visits(port, member) for port in ports] == held, "a kiosk erased through fleet/"

            answer = client.request({"command": "erase", "uuid": f"acl-erase-{uuidlib.uuid4().hex[:6]}",
                                     "id": member}, timeout_s=30, attempts=1)
            assert answer["state"] == 0 and answer["fleet"] == "sent", answer
            wait_until(lambda: not any(member_visits(port, member) for port in ports), 10,
                       "both daemons to erase the member")
        time.sleep(0.5)
        assert not [m for m in spy.messages if "/fleet/" in m.topic], "a kiosk read the fleet erasure topic"
        for daemon in daemons:
            health = httpx.get(f"http://127.0.0.1:{daemon.http_port}/healthz", timeout=5).json()
            assert health["status"] == "ok", health  # the daemons' subscription to fleet/erase was granted
    finally:
        for daemon in daemons:
            daemon.close()
        spy.close()
        broker.stop()
    for daemon in daemons:
        assert member not in daemon.log().lower()
