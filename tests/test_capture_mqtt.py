"""Live capture over MQTT against the real Mosquitto on 127.0.0.1:1883 (own topic prefix and client ids),
with the real models, on frames made at test time from the shared photos."""

from __future__ import annotations

import json
import queue
import socket
import time
import uuid as uuidlib

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from capture_frames import compose, jpeg, load_photo
from conftest import testdata_path
from paho.mqtt.enums import CallbackAPIVersion

from daemon.capture.mqtt import CaptureMqtt
from daemon.config import load_config
from daemon.service import Service

BROKER = ("127.0.0.1", 1883)
EVENT_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 180.0
MAX_SETTLE_FRAMES = 150


def broker_running() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(BROKER) == 0


pytestmark = [pytest.mark.broker, pytest.mark.skipif(not broker_running(), reason="no Mosquitto on 127.0.0.1:1883")]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tag = uuidlib.uuid4().hex[:10]
    prefix = f"test-capture-{tag}/v2"
    config = load_config(overrides={
        "store": {"path": str(tmp_path_factory.mktemp("capture-mqtt") / "results.sqlite3")},
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "topic_prefix": prefix, "client_id": f"skeletond-test-{tag}"},
        "capture": {"hold_s": 0.6, "max_sessions": 2},
    })
    service = Service(config)
    service.start()
    bridge = CaptureMqtt(service, config)
    bridge.start()
    assert bridge.connected.wait(20), "the capture connection did not reach the broker"
    yield prefix, service, bridge
    bridge.stop()
    service.stop(30)


class Kiosk:
    """A kiosk speaking only MQTT, user `kiosk-7`, on its own tree."""

    def __init__(self, prefix: str, uuid: str, kiosk: str = "kiosk-7"):
        self.tree = f"{prefix}/capture/{kiosk}/{uuid}"
        self.result_topic = f"{prefix}/result/{kiosk}/{uuid}"
        self.messages: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.events: list[dict] = []
        self.sent = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"kiosk-test-{uuid}", protocol=mqtt.MQTTv5)
        subscribed = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, json.loads(m.payload)))
        self.client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(codes)
        self.client.connect(*BROKER)
        self.client.loop_start()
        self.client.subscribe([(f"{self.tree}/guide", 0), (f"{self.tree}/event", 1), (self.result_topic, 1)])
        subscribed.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, leaf: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(f"{self.tree}/{leaf}", payload, qos=qos).wait_for_publish(10)

    def next(self, timeout: float = EVENT_TIMEOUT_S) -> tuple[str, dict]:
        topic, message = self.messages.get(timeout=timeout)
        if topic != self.result_topic:
            self.events.append(message)
        return topic, message

    def step(self, frame: bytes) -> list[dict]:
        """One frame (QoS 0, as a camera stream is sent), then events until its guide."""
        index = self.sent
        self.publish("frame", frame, qos=0)
        self.sent += 1
        received = []
        while True:
            _, event = self.next()
            received.append(event)
            if event.get("event") == "guide" and event["frame"] >= index:
                return received
            if event.get("event") == "captured" and event["next"] is None:
                return received

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == kind]


def settle(kiosk: Kiosk, photo, view: str, seed0: int) -> dict:
    for index in range(MAX_SETTLE_FRAMES):
        for event in kiosk.step(jpeg(compose(photo, 0.95, 0.0, seed=seed0 + index))):
            if event.get("event") == "captured" and event["view"] == view:
                return event
    raise AssertionError(f"{view} was not captured over MQTT")


def test_mqtt_kiosk_is_guided_captured_and_answered_on_its_result_topic(daemon):
    prefix, service, bridge = daemon
    uuid = str(uuidlib.uuid4())
    front, side = load_photo("front", "fitlens_p1_front.jpg"), load_photo("side", "fitlens_p1_side.jpg")
    schema = json.loads(testdata_path("..", "spec", "skeleton-v2.answer.schema.json").read_text())
    kiosk = Kiosk(prefix, uuid)
    try:
        kiosk.publish("start", json.dumps({"id": "member-9", "height": 178, "lang": "en"}).encode())
        _, opening = kiosk.next()
        assert opening["event"] == "session" and opening["uuid"] == uuid
        for index in range(5):
            kiosk.step(jpeg(compose(front, 0.45 + 0.08 * index, -0.3 + 0.05 * index, seed=index)))
        assert settle(kiosk, front, "front", 100)["next"] == "side"
        assert settle(kiosk, side, "side", 300)["next"] is None
        answer = None
        while answer is None:
            topic, message = kiosk.next(RESULT_TIMEOUT_S)
            if topic == kiosk.result_topic:
                answer = message
        closed = None
        while closed is None:
            _, message = kiosk.next()
            closed = message if message.get("event") == "closed" else None
    finally:
        kiosk.close()
    codes = {m["code"] for e in kiosk.of("guide") for m in e["messages"]}
    assert {"come_closer", "move_left", "hold_still"} <= codes, codes
    jsonschema.validate(answer, schema)
    assert answer["uuid"] == uuid and answer["state"] == 0
    assert not kiosk.of("result")  # the answer comes once, on the result topic
    assert closed == {"event": "closed", "code": 1000, "reason": "done"}
    assert bridge.session_count() == 0 and service.capture.count() == 0


def test_mqtt_bad_start_stop_and_frames_without_a_session(daemon):
    prefix, service, bridge = daemon
    bad = Kiosk(prefix, str(uuidlib.uuid4()))
    try:
        bad.publish("start", json.dumps({"height": 178}).encode())  # no id
        _, error = bad.next()
        _, closed = bad.next()
        # A frame for a session that never started is ignored (no event, nothing kept).
        bad.publish("frame", jpeg(compose(load_photo("front", "fitlens_p1_front.jpg"), 0.9)), qos=0)
    finally:
        bad.close()
    assert error["event"] == "error" and error["fatal"] is True
    assert error["error"]["data"]["errors"] == "missing field: id"
    assert closed["event"] == "closed" and closed["code"] == 1008

    kiosk = Kiosk(prefix, str(uuidlib.uuid4()))
    try:
        kiosk.publish("start", json.dumps({"id": "member-10"}).encode())
        assert kiosk.next()[1]["event"] == "session"
        assert bridge.session_count() == 1
        kiosk.publish("command", json.dumps({"command": "stop"}).encode())
        _, closed = kiosk.next()
    finally:
        kiosk.close()
    assert closed == {"event": "closed", "code": 1000, "reason": "stopped"}
    assert bridge.session_count() == 0 and service.capture.count() == 0
    assert service.worker.live_pending() == 0


def test_mqtt_topic_parsing(daemon):
    _, _, bridge = daemon
    p = bridge.prefix
    assert bridge.parse_topic(f"{p}/capture/kiosk-1/u-1/frame") == (("kiosk-1", "u-1"), "frame")
    assert bridge.parse_topic(f"{p}/capture/u-1/start") == ((None, "u-1"), "start")
    assert bridge.parse_topic(f"{p}/capture/kiosk-1/u-1/guide") is None  # the daemon's own output
    assert bridge.parse_topic(f"{p}/capture/a/b/c/frame") is None
    assert bridge.parse_topic(f"{p}/request") is None
    assert bridge.result_topic("kiosk-1", "u-1") == f"{p}/result/kiosk-1/u-1"


def test_the_example_acl_keeps_each_kiosk_in_its_own_capture_tree(daemon, tmp_path):
    """deploy/mosquitto.acl on a broker of its own: kiosk-01 streams in its tree and is guided; kiosk-02 can
    neither read kiosk-01's frames and guides nor start a session in kiosk-01's tree."""
    import dataclasses
    import shutil
    import subprocess

    from conftest import REPO_ROOT
    from test_mqtt import Broker, wait_until

    _, service, _ = daemon
    passwords = tmp_path / "passwd"
    passwords.touch()
    for user in ("skeletond", "kiosk-01", "kiosk-02"):
        subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(passwords),
                        user, f"{user}-secret"], check=True, capture_output=True)
    broker = Broker(tmp_path / "broker",
                    extra_config=f"password_file {passwords}\nacl_file {REPO_ROOT / 'deploy' / 'mosquitto.acl'}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    prefix = "skeleton/v2"  # the example ACL is written for the default prefix
    config = dataclasses.replace(service.config, mqtt=dataclasses.replace(
        service.config.mqtt, url=f"mqtt://127.0.0.1:{broker.port}", topic_prefix=prefix, username="skeletond",
        password="skeletond-secret", client_id=f"skeletond-acl-{uuidlib.uuid4().hex[:8]}"))
    bridge = CaptureMqtt(service, config)
    seen_by_02: list[str] = []
    clients = []
    try:
        bridge.start()
        assert bridge.connected.wait(20)

        def client(user: str) -> mqtt.Client:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuidlib.uuid4().hex[:6]}",
                            protocol=mqtt.MQTTv5)
            c.username_pw_set(user, f"{user}-secret")
            c.connect("127.0.0.1", broker.port)
            c.loop_start()
            clients.append(c)
            return c

        own, other = client("kiosk-01"), client("kiosk-02")
        events: queue.Queue = queue.Queue()
        own.on_message = lambda c, u, m: events.put((m.topic, json.loads(m.payload)))
        other.on_message = lambda c, u, m: seen_by_02.append(m.topic)
        uuid = str(uuidlib.uuid4())
        tree = f"{prefix}/capture/kiosk-01/{uuid}"
        own.subscribe([(f"{tree}/guide", 0), (f"{tree}/event", 1)])
        other.subscribe(f"{prefix}/capture/#", qos=1)
        time.sleep(0.5)  # both SUBACKs in
        own.publish(f"{tree}/start", json.dumps({"id": "member-11"}).encode(), qos=1).wait_for_publish(10)
        topic, opening = events.get(timeout=EVENT_TIMEOUT_S)
        assert topic == f"{tree}/event" and opening["event"] == "session"
        frame = jpeg(compose(load_photo("front", "fitlens_p1_front.jpg"), 0.9))
        own.publish(f"{tree}/frame", frame, qos=0)
        guide = None
        while guide is None:
            topic, message = events.get(timeout=EVENT_TIMEOUT_S)
            guide = message if message.get("event") == "guide" else None
        # kiosk-02 tries to start a session in kiosk-01's tree: the broker drops it.
        other.publish(f"{prefix}/capture/kiosk-01/{uuidlib.uuid4()}/start", b'{"id": "x"}', qos=1).wait_for_publish(10)
        time.sleep(1.0)
        assert bridge.session_count() == 1
        own.publish(f"{tree}/command", b'{"command": "stop"}', qos=1).wait_for_publish(10)
        wait_until(lambda: bridge.session_count() == 0, 20, "the stopped session to end")
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        bridge.stop()
        service.capture.result_listeners.remove(bridge._publish_result)
        broker.stop()
    assert guide["frame"] == 0
    assert seen_by_02 == [], "a kiosk must not read another kiosk's frames or guides"
