"""Capture sessions over MQTT, for kiosks that speak only MQTT (docs/capture.md, "Over MQTT").

Topics under `mqtt.topic_prefix`, one tree per session, inside the kiosk's own tree:
  capture/<kiosk>/<uuid>/start     JSON: the session's fields (id, height, kiosk, lang, still ...)  (in)
  capture/<kiosk>/<uuid>/frame     binary camera frame, QoS 0                                       (in)
  capture/<kiosk>/<uuid>/command   JSON command: restart, capture, stop                             (in)
  capture/<kiosk>/<uuid>/still     binary still for the view the session wants now                  (in)
  capture/<kiosk>/<uuid>/guide     guide events, QoS 0                                              (out)
  capture/<kiosk>/<uuid>/event     session, captured, analysing, take_still, error, closed, QoS 1  (out)
and the answer on the kiosk's usual result topic, result/<kiosk>/<uuid>. `capture/<uuid>/...` (no kiosk
level) is the plain single-kiosk tree, answered on result/<uuid>.

Its own MQTT connection (client id `<mqtt.client_id>-capture`, clean start, automatic acks): a stream of
QoS 0 frames never mixes with the request connection's manual acknowledgements and flow control, and a
session is transient, so nothing is kept at the broker while the daemon is away.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from daemon.answer import answer_json
from daemon.capture.manager import CLOSE_DONE, CLOSE_POLICY, CaptureRefused
from daemon.capture.session import CaptureSession, parse_session_params
from daemon.config import Config
from daemon.errors import AnalysisError
from daemon.request import uuid_problem
from daemon.topics import Topics

log = logging.getLogger(__name__)

# How often idle sessions are looked for.
REAP_INTERVAL_S = 1.0
_LEAVES_IN = ("start", "frame", "command", "still")


class _MqttOutput:
    """A session's events onto its MQTT tree (paho's publish is thread-safe)."""

    def __init__(self, owner: CaptureMqtt, key: tuple[str | None, str]):
        self._owner = owner
        self._key = key

    def send(self, event: dict) -> None:
        if event.get("event") == "result":
            return  # the answer goes on the kiosk's result topic (CaptureMqtt._publish_result), not twice
        guide = event.get("event") == "guide"
        self._owner._publish(self._key, "guide" if guide else "event", answer_json(event), 0 if guide else 1)

    def close(self, code: int, reason: str) -> None:
        self._owner._end(self._key, code, reason)


class CaptureMqtt:
    """Feeds MQTT capture topics to the CaptureManager and publishes the sessions' events."""

    def __init__(self, service: Any, config: Config):
        from daemon.mqtt import broker_address, make_client  # the request bridge's URL rules and client

        self.service = service
        self.manager = service.capture
        self.config = config
        mqtt_config = config.mqtt
        self.topics = Topics.under(mqtt_config.topic_prefix)
        self.prefix = self.topics.prefix
        self._host, self._port = broker_address(mqtt_config.url or "")[:2]
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str | None, str], CaptureSession] = {}
        self._last_seen: dict[tuple[str | None, str], float] = {}
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle, name="capture-mqtt-reaper", daemon=True)
        self.connected = threading.Event()
        self.manager.result_listeners.append(self._publish_result)

        # The same broker, credentials and TLS as the request connection (daemon/mqtt.py).
        client = make_client(mqtt_config, f"{mqtt_config.client_id}-capture")
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # -- topics -----------------------------------------------------------------------------------

    def _tree(self, key: tuple[str | None, str]) -> str:
        return self.topics.capture(*key)

    def result_topic(self, kiosk: str | None, uuid: str) -> str:
        """The kiosk's usual result topic, as the request bridge answers it."""
        return self.topics.result(kiosk, uuid)

    def parse_topic(self, topic: str) -> tuple[tuple[str | None, str], str] | None:
        """((kiosk, uuid), leaf) of an incoming capture topic; None for anything else."""
        head = f"{self.prefix}/capture/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head):].split("/")
        if len(levels) == 2:
            kiosk, uuid, leaf = None, levels[0], levels[1]
        elif len(levels) == 3:
            kiosk, uuid, leaf = levels
        else:
            return None
        if leaf not in _LEAVES_IN or uuid_problem(uuid) or (kiosk is not None and (not kiosk or "+" in kiosk or "#" in kiosk)):
            return None
        return (kiosk, uuid), leaf

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._reaper.start()
        self._client.connect_async(self._host, self._port, keepalive=self.config.mqtt.keepalive_s, clean_start=True)
        self._client.loop_start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            keys = list(self._sessions)
        for key in keys:
            self._end(key, 1001, "daemon shutting down")
        self._client.disconnect()
        self._client.loop_stop()
        self._reaper.join(2.0)

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # -- paho callbacks (paho's network thread: quick work only) ----------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker refused the capture connection: %s", reason_code)
            return
        # No-local: the daemon's own guide and event publishes never come back to it.
        options = SubscribeOptions(qos=1, noLocal=True)
        client.subscribe([(f"{self.prefix}/capture/+/+", options), (f"{self.prefix}/capture/+/+/+", options)])
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parsed = self.parse_topic(message.topic)
        if parsed is None:
            return
        key, leaf = parsed
        try:
            self._handle(key, leaf, message.payload)
        except Exception:  # one kiosk's bad message must not stop the connection
            log.exception("capture message on %s failed", leaf)

    def _handle(self, key: tuple[str | None, str], leaf: str, payload: bytes) -> None:
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._last_seen[key] = time.monotonic()
        if leaf == "start":
            self._open(key, payload, session)
            return
        if session is None:
            log.debug("capture %s for a session that was not started", leaf)
            return
        if leaf in ("frame", "still"):
            if len(payload) > self.config.capture.max_frame_bytes:
                session.send_error(AnalysisError("too_large", f"{leaf} of {len(payload)} bytes; the limit is "
                                             f"capture.max_frame_bytes = {self.config.capture.max_frame_bytes}"))
                return
            if leaf == "still" and session.view is not None:
                session.command({"command": "still", "view": session.view})
            self.manager.frame(session, payload, time.monotonic())
            return
        try:
            command = orjson.loads(payload)
        except orjson.JSONDecodeError:
            command = None
        if isinstance(command, dict) and command.get("command") == "stop":
            self._end(key, CLOSE_DONE, "stopped")
            return
        self.manager.command(session, command)

    def _open(self, key: tuple[str | None, str], payload: bytes, existing: CaptureSession | None) -> None:
        output = _MqttOutput(self, key)
        if existing is not None:
            error = AnalysisError("validation", "this session is already running", text="invalid field: uuid")
            output.send({"event": "error", "fatal": False, "error": error.to_answer(key[1])})
            return
        try:
            fields = orjson.loads(payload) if payload else {}
            if not isinstance(fields, dict):
                raise AnalysisError("validation", "the start message must be a JSON object", text="invalid JSON")
            fields.pop("uuid", None)  # the topic's uuid is the session's
            params = parse_session_params({**fields, "uuid": key[1]})
        except orjson.JSONDecodeError as exc:
            self._refuse(key, AnalysisError("validation", f"start is not JSON: {exc}", text="invalid JSON"), CLOSE_POLICY)
            return
        except AnalysisError as exc:
            self._refuse(key, exc, CLOSE_POLICY)
            return
        try:
            session = self.manager.open(params, output)
        except CaptureRefused as refused:
            self._refuse(key, refused.error, refused.code, refused.reason)
            return
        with self._lock:
            self._sessions[key] = session
            self._last_seen[key] = time.monotonic()
        output.send(session.opening_event())

    def _refuse(self, key: tuple[str | None, str], error: AnalysisError, code: int, reason: str | None = None) -> None:
        event = {"event": "error", "fatal": True, "error": error.to_answer(key[1])}
        self._publish(key, "event", answer_json(event), 1)
        self._publish(key, "event", answer_json({"event": "closed", "code": code,
                                                 "reason": reason or error.text or error.detail}), 1)

    # -- out --------------------------------------------------------------------------------------

    def _publish(self, key: tuple[str | None, str], leaf: str, body: bytes, qos: int) -> None:
        self._client.publish(f"{self._tree(key)}/{leaf}", body, qos=qos)

    def _end(self, key: tuple[str | None, str], code: int, reason: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
            self._last_seen.pop(key, None)
        if session is None:
            return
        self.manager.close(session)
        self._publish(key, "event", answer_json({"event": "closed", "code": code, "reason": reason}), 1)

    def _publish_result(self, uuid: str, payload: dict) -> None:
        """Every capture session's answer (or error) on its result topic: an MQTT session's kiosk tree,
        or the plain tree for a WebSocket session."""
        with self._lock:
            kiosk = next((k for k, u in self._sessions if u == uuid), None)
        self._client.publish(self.result_topic(kiosk, uuid), answer_json(payload), qos=1)

    def _reap_idle(self) -> None:
        limit = self.config.capture.idle_timeout_s
        while not self._stop.wait(REAP_INTERVAL_S):
            now = time.monotonic()
            with self._lock:
                # A complete session waits for its answer without frames: not idle.
                idle = [key for key, seen in self._last_seen.items()
                        if now - seen > limit and not self._sessions[key].complete]
            for key in idle:
                self._end(key, CLOSE_DONE, f"idle for {limit:g} s")
