"""The MQTT transport (paho-mqtt 2.x, MQTT 5): requests in, results out, acknowledged only once answered.

Topics under `topic_prefix` (default skeleton/v2):
  request              requests, the same JSON as HTTP (QoS 1)
  result/<uuid>        each answer or error (QoS 1); MQTT 5 requests with a ResponseTopic get it there too,
                       with their CorrelationData
  error                errors for requests without a usable uuid (not JSON, no uuid, bad uuid)
  status/<daemon id>   retained JSON status (daemon/fleet/status.py); last will: the same, `offline`

Delivery: a fixed client id, clean start off and a session expiry keep the subscription and the queued
requests at the broker while the daemon is away. Acks are manual: a request is acknowledged only after
the broker acknowledged its result, so a daemon killed mid-request gets the request again (and answers it
from the result store if the answer had been stored). Flow control: the CONNECT's Receive Maximum bounds
the unacknowledged requests the broker sends; when the worker queue is full the intake thread waits for
room and takes no further messages, which stay with the broker.

Fleet (`mqtt.shared_group`, docs/fleet.md): the request topics are read through `$share/<group>/...`,
so the broker hands each request to one daemon of the group; the session is clean (expiry 0) so that a
dead daemon's turn is not kept; daemon/fleet/membership.py unsubscribes a daemon that is shutting down,
busy or unhealthy; at shutdown, requests it has not started are handed back (republished unchanged to
the topic they came on, then acknowledged) so that the others answer them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from daemon import metrics
from daemon.answer import SOFTWARE_VERSION, answer_json
from daemon.config import MqttConfig
from daemon.errors import AnalysisError
from daemon.fleet.membership import Membership
from daemon.request import parse_request, uuid_problem
from daemon.service import Service

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


@dataclass
class _Reply:
    """The publishes answering one request; the request is acked when the last one is acknowledged."""

    request_mid: int
    request_qos: int
    remaining: int


def broker_address(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """(host, port, tls, username, password) from mqtt://[user:pass@]host[:port] or mqtts://..."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"MQTT url must be mqtt://host:port or mqtts://host:port, got {url!r}")
    port = parts.port or (8883 if tls else 1883)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, port, tls, username, password


class MqttBridge:
    """Feeds MQTT requests to the Service and publishes each answer; one per daemon process."""

    def __init__(self, service: Service, config: MqttConfig):
        if not config.url:
            raise ValueError("mqtt.url is not set")
        self.service = service
        self.config = config
        prefix = config.topic_prefix.rstrip("/")
        self.request_topic = f"{prefix}/request"
        self.result_prefix = f"{prefix}/result/"
        self.error_topic = f"{prefix}/error"
        self.status_topic = f"{prefix}/status/{config.daemon_id}"
        self._host, self._port, tls, url_user, url_password = broker_address(config.url)

        self._accepting = True
        self._intake: deque[mqtt.MQTTMessage] = deque()
        self._intake_cond = threading.Condition()
        self._room = threading.Event()
        service.worker.add_room_listener(self._room.set)
        self._intake_thread = threading.Thread(target=self._intake_loop, name="mqtt-intake", daemon=True)

        # Publishes waiting for the broker's PUBACK. on_publish may run before publish() returns (it runs
        # in paho's thread), so a mid acknowledged "early" is remembered until its publisher registers it.
        self._pub_lock = threading.Condition()
        self._pending: dict[int, _Reply | None] = {}
        self._early: set[int] = set()
        self._open_replies = 0

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.enable_logger(logging.getLogger("paho.mqtt"))
        username = config.username or url_user
        password = config.password if config.username else url_password
        if username:
            client.username_pw_set(username, password)
        if tls or config.ca_file or config.cert_file:
            client.tls_set(
                ca_certs=str(config.ca_file) if config.ca_file else None,
                certfile=str(config.cert_file) if config.cert_file else None,
                keyfile=str(config.key_file) if config.key_file else None,
            )
        self.membership = Membership(
            daemon_id=config.daemon_id,
            group=config.shared_group,
            request_filters=[self.request_topic],
            status_topic=self.status_topic,
            status_interval_s=config.status_interval_s,
            describe=lambda: {**service.describe(), "worker_alive": service.worker.alive()},
            subscribe=lambda topics, qos: client.subscribe(
                [(topic, SubscribeOptions(qos=qos, noLocal=qos == 0)) for topic in topics]
            ),
            unsubscribe=lambda topics: client.unsubscribe(topics),
            publish_status=lambda body: self._publish(self.status_topic, body, None, None, retain=True),
            version=SOFTWARE_VERSION,
        )
        self._last_message_at = time.monotonic()
        client.will_set(self.status_topic, self.membership.offline_payload(), qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client
        self.connected = threading.Event()

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying with backoff until the broker answers)."""
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.session_expiry_s
        # The broker sends at most this many unacknowledged requests: the queue plus the one in the
        # worker, plus one waiting in the intake thread.
        properties.ReceiveMaximum = max(1, min(65535, self.service.worker.queue_size + 2))
        if self.membership.shared:
            # A member's persistent session keeps its turn while it is away (Mosquitto queues its share
            # there until it returns): a clean session leaves the group the moment the daemon is gone.
            properties.SessionExpiryInterval = 0
            # The group's share fills at most half the queue: a full queue then means more than that share
            # (local HTTP requests, a stall), and the daemon leaves the group (`busy`). A window as large as
            # the queue would fill it in every burst, and busy members would herd new requests onto the
            # last one online instead of the broker's even round robin.
            properties.ReceiveMaximum = max(1, self.service.worker.queue_size // 2)
        self.service.transport_status["mqtt"] = "connecting"
        self._intake_thread.start()
        self._client.connect_async(
            self._host, self._port, keepalive=self.config.keepalive_s, clean_start=self.membership.shared,
            properties=properties
        )
        self._client.loop_start()
        self.membership.start()

    def stop_intake(self) -> None:
        """Take no new requests; those not yet queued stay unacknowledged, so the broker keeps them.

        In a shared group the daemon leaves the group and hands back what it has not started: its clean
        session would drop unacknowledged requests (Mosquitto gives them to no other member).
        """
        self._accepting = False
        self.membership.leave()
        with self._intake_cond:
            waiting = list(self._intake)
            self._intake.clear()
            self._intake_cond.notify_all()
        self._room.set()
        if self.membership.shared:
            for message in waiting:
                self._hand_back(message)

    def stop(self, timeout: float) -> None:
        """Publish the answers still due (within `timeout`), then `offline`, then disconnect."""
        self.stop_intake()
        deadline = time.monotonic() + timeout
        if self.membership.shared:
            # Requests the broker had already queued for this daemon still arrive after it left the
            # group: each is handed back as it comes; wait for a quiet moment.
            quiet_s = min(1.0, max(0.1, (deadline - time.monotonic()) / 4))
            while time.monotonic() - self._last_message_at < quiet_s and time.monotonic() < deadline - 1.0:
                time.sleep(0.05)
        with self._pub_lock:
            while self._open_replies > 0 and time.monotonic() < deadline - 1.0:
                self._pub_lock.wait(min(0.2, max(0.01, deadline - 1.0 - time.monotonic())))
            if self._open_replies:
                log.warning("%d answers were not acknowledged by the broker before the deadline", self._open_replies)
        info = self._client.publish(self.status_topic, self.membership.offline_payload(), qos=1, retain=True)
        try:
            info.wait_for_publish(max(0.1, min(2.0, deadline - time.monotonic())))
        except (RuntimeError, ValueError) as exc:
            log.warning("could not publish offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self.service.transport_status["mqtt"] = "stopped"
        self._intake_thread.join(1.0)

    # -- paho callbacks (paho's network thread: never block here) ---------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s:%d refused the connection: %s", self._host, self._port, reason_code)
            self.service.transport_status["mqtt"] = f"refused: {reason_code}"
            return
        log.info(
            "MQTT connected to %s:%d (session present: %s); subscribing to %s",
            self._host, self._port, flags.session_present, self.request_topic,
        )
        self.connected.set()
        self.service.transport_status["mqtt"] = "connected"
        # Resubscribe on every connect: a broker that lost its state has lost the subscription too.
        self.membership.connected()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("MQTT broker %s:%d unreachable; retrying", self._host, self._port)
        self.service.transport_status["mqtt"] = "unreachable"

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.connected.clear()
        self.membership.disconnected()
        if self.service.transport_status.get("mqtt") != "stopped":
            self.service.transport_status["mqtt"] = "disconnected"
        if reason_code.is_failure or reason_code.value != 0:
            log.warning("MQTT disconnected (%s); reconnecting with backoff", reason_code)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any], properties: Any
    ) -> None:
        for code in reason_codes:
            if code.is_failure:
                log.error("the broker refused the subscription to %s: %s", self.request_topic, code)
                self.service.transport_status["mqtt"] = f"subscription refused: {code}"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.membership.peer_status(message.topic, message.payload):
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        self._last_message_at = time.monotonic()
        if not self._accepting:
            if self.membership.shared:
                self._hand_back(message)
            return  # unacknowledged: the broker delivers it again after the restart
        with self._intake_cond:
            self._intake.append(message)
            self._intake_cond.notify()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            # A refused publish (e.g. the ACL) will not succeed on redelivery either: ack the request.
            log.error("the broker refused a publish (mid %d): %s", mid, reason_code)
        with self._pub_lock:
            if mid not in self._pending:
                self._early.add(mid)
                return
            reply = self._pending.pop(mid)
        self._reply_part_done(reply)

    # -- intake -----------------------------------------------------------------------------------

    def _intake_loop(self) -> None:
        while True:
            with self._intake_cond:
                while not self._intake and self._accepting:
                    self._intake_cond.wait()
                if not self._accepting:
                    return
                message = self._intake.popleft()
            try:
                self._handle(message)
            except Exception:  # one bad message must not stop the intake
                log.exception("handling an MQTT request failed")

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        metrics.count_request("mqtt")
        uuid: str | None = None
        try:
            payload: Any = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and uuid_problem(payload.get("uuid")) is None:
            uuid = payload["uuid"]
        try:
            request = parse_request(payload if isinstance(payload, dict) else message.payload)
        except AnalysisError as exc:
            self._answer_error(message, uuid, exc)
            return
        while True:
            self._room.clear()
            try:
                future = self.service.submit(request)
                break
            except AnalysisError as exc:
                if exc.kind != "overload":
                    self._answer_error(message, uuid, exc)
                    return
            # Queue full: take no more messages until the worker frees a slot.
            if self._accepting:
                self._room.wait(1.0)
            if not self._accepting:
                if self.membership.shared:
                    self._hand_back(message)
                return
        future.add_done_callback(lambda done: self._on_answer(message, request.uuid, done))

    def _on_answer(self, message: mqtt.MQTTMessage, uuid: str, future: Any) -> None:
        error = future.exception()
        if error is None:
            self._reply(message, uuid, answer_json(future.result()))
            self.membership.answered(None)
        elif isinstance(error, AnalysisError) and error.kind == "overload":
            # Abandoned at shutdown: left unacknowledged, the broker redelivers it after the restart
            # (in a shared group: handed back to the others).
            log.info("request %s left with the broker for after the restart", uuid)
            if self.membership.shared:
                self._hand_back(message)
        elif isinstance(error, AnalysisError):
            self._answer_error(message, uuid, error)
        else:
            self._answer_error(message, uuid, AnalysisError("internal", f"unexpected {type(error).__name__}"))

    def _answer_error(self, message: mqtt.MQTTMessage, uuid: str | None, error: AnalysisError) -> None:
        metrics.count_error(error.kind)
        log.info("MQTT request %s: %s (%s)", uuid or "without a usable uuid", error.kind, error.detail)
        self._reply(message, uuid, answer_json(error.to_answer(uuid)))
        self.membership.answered(error.kind)

    def _hand_back(self, message: mqtt.MQTTMessage) -> None:
        """Republish a request this daemon will not answer, unchanged, to the topic it came on (the group,
        which this daemon has left, gives it to another member); acknowledged once the broker has it."""
        received = getattr(message, "properties", None)
        properties = Properties(PacketTypes.PUBLISH)
        for name in ("PayloadFormatIndicator", "MessageExpiryInterval", "ContentType", "ResponseTopic",
                     "CorrelationData", "UserProperty"):
            value = getattr(received, name, None)
            if value is not None:
                setattr(properties, name, value)
        reply = _Reply(message.mid, message.qos, 1)
        with self._pub_lock:
            self._open_replies += 1
        log.info("handing a request back to the group (%d bytes)", len(message.payload))
        self._publish(message.topic, message.payload, properties, reply)

    # -- publishing -------------------------------------------------------------------------------

    def _reply(self, message: mqtt.MQTTMessage, uuid: str | None, body: bytes) -> None:
        targets: list[tuple[str, Properties]] = []
        main = Properties(PacketTypes.PUBLISH)
        main.ContentType = "application/json"
        targets.append((self.result_prefix + uuid if uuid else self.error_topic, main))
        request_properties = getattr(message, "properties", None)
        response_topic = getattr(request_properties, "ResponseTopic", None)
        if response_topic:
            extra = Properties(PacketTypes.PUBLISH)
            extra.ContentType = "application/json"
            correlation = getattr(request_properties, "CorrelationData", None)
            if correlation is not None:
                extra.CorrelationData = correlation
            targets.append((response_topic, extra))
        reply = _Reply(message.mid, message.qos, len(targets))
        with self._pub_lock:
            self._open_replies += 1
        for topic, properties in targets:
            self._publish(topic, body, properties, reply)

    def _publish(
        self, topic: str, body: bytes, properties: Properties | None, reply: _Reply | None, retain: bool = False
    ) -> None:
        try:
            info = self._client.publish(topic, body, qos=1, retain=retain, properties=properties)
        except ValueError as exc:  # an invalid ResponseTopic (wildcards) or an oversized payload
            log.warning("cannot publish to %r: %s", topic, exc)
            self._reply_part_done(reply)
            return
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # Not queued by paho: leave the request unacknowledged so that it comes again.
            log.error("publishing to %s failed: %s", topic, mqtt.error_string(info.rc))
            if reply is not None:
                with self._pub_lock:
                    reply.request_qos = 0
            self._reply_part_done(reply)
            return
        # NO_CONN: paho keeps QoS 1 messages and sends them after the reconnect.
        with self._pub_lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                done = True
            else:
                self._pending[info.mid] = reply
                done = False
        if done:
            self._reply_part_done(reply)

    def _reply_part_done(self, reply: _Reply | None) -> None:
        if reply is None:
            return
        with self._pub_lock:
            reply.remaining -= 1
            if reply.remaining > 0:
                return
            self._open_replies -= 1
            self._pub_lock.notify_all()
        if reply.request_qos > 0:
            self._client.ack(reply.request_mid, reply.request_qos)
