"""The MQTT transport (paho-mqtt 2.x, MQTT 5): requests in, results out, acknowledged only once answered.

Topics under `topic_prefix` (default skeleton/v2), one tree per kiosk (daemon/topics.py):
  request/<kiosk>           requests, the same JSON as HTTP (QoS 1); <kiosk> is the kiosk's broker username
  result/<kiosk>/<uuid>     each answer or error (QoS 1); MQTT 5 requests with a ResponseTopic inside
                            reply/<kiosk>/ get it there too, with their CorrelationData
  error/<kiosk>             errors for requests without a usable uuid (not JSON, no uuid, bad uuid)
  request, result/<uuid>, error, reply/...   the same without <kiosk>: the plain single-kiosk tree
  status/<daemon id>        retained JSON status (daemon/fleet/status.py); last will: the same, `offline`

Refused before analysis, each with an error on the requesting kiosk's tree: a payload over the HTTP body
limit, a retained request (the daemon subscribes with retain handling 2 and retain-as-published, so a
retained publish is seen as one), and a ResponseTopic outside the kiosk's own reply tree.

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

Erasure in a fleet (docs/fleet.md "Erasure"): each daemon has its own store and its own member key, so a
member's erasure asked of one daemon (the kiosks' `erase` command, HTTP DELETE /members/<id>) is published
to the others on `fleet/erase` (QoS 1, not retained, carrying the member id and this daemon's id); every
member of a group reads that topic with a plain subscription (noLocal: not its own) and erases locally.
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
from daemon.config import ConfigError, MqttConfig, redact_url
from daemon.errors import AnalysisError
from daemon.fleet.membership import Membership
from daemon.members import ERASE_COMMAND, erase_answer, member_problem
from daemon.request import parse_request, uuid_problem
from daemon.service import Service
from daemon.topics import Topics

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
# PUBACK reason code: the broker took the message but no subscription matched it.
NO_MATCHING_SUBSCRIBERS = 16
# The largest Maximum Packet Size MQTT 5 can express (a Four Byte Integer).
MAX_PACKET_SIZE = 2**32 - 1
# How long an erasure waits for the broker to acknowledge its fan-out to the fleet before answering
# `"fleet": "pending"` (paho keeps the message and sends it once connected again).
FLEET_ERASE_WAIT_S = 5.0


@dataclass
class _Delivery:
    """What answering one request needs, copied off paho's message so that its payload can be dropped."""

    mid: int
    qos: int
    topic: str
    # The kiosk tree the request arrived on (None: the plain single-kiosk tree).
    kiosk: str | None
    retained: bool
    # Only a ResponseTopic inside the kiosk's own reply tree is kept; another is kept aside, to be refused.
    response_topic: str | None
    correlation: bytes | None
    refused_response_topic: str | None = None
    uuid: str | None = None
    answered: bool = False


@dataclass
class _Reply:
    """The publishes answering one request; the request is acked when the last one is acknowledged."""

    request_mid: int
    request_qos: int
    remaining: int
    # A hand-back (fleet): publish it again when the broker answered "No matching subscribers".
    resend: Any = None
    # Set once every publish is done (acknowledged or given up): a fleet erasure waits on it.
    done: threading.Event | None = None
    # The broker refused a publish (a PUBACK failure code, e.g. the ACL), or paho did not take it.
    refused: bool = False


def broker_address(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """(host, port, tls, username, password) from mqtt://[user:pass@]host[:port] or mqtts://..."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"MQTT url must be mqtt://host:port or mqtts://host:port, got {redact_url(url)!r}")
    port = parts.port or (8883 if tls else 1883)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, port, tls, username, password


def make_client(config: MqttConfig, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A paho MQTT 5 client for the daemon's broker: `config`'s credentials (else the URL's), its TLS
    files (TLS also for mqtts://) and the reconnect backoff; the request bridge and the capture topics'
    connection both use it."""
    _, _, tls, url_user, url_password = broker_address(config.url or "")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    client.enable_logger(logging.getLogger("paho.mqtt"))
    username = config.username or url_user
    password = config.password if config.username else url_password
    if username:
        client.username_pw_set(username, password)
    if tls or config.ca_file or config.cert_file:
        try:
            client.tls_set(
                ca_certs=str(config.ca_file) if config.ca_file else None,
                certfile=str(config.cert_file) if config.cert_file else None,
                keyfile=str(config.key_file) if config.key_file else None,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; its text names no key material
            raise ConfigError(
                f"mqtt.ca_file / cert_file / key_file: the TLS files cannot be loaded ({type(exc).__name__}: "
                f"{getattr(exc, 'reason', None) or getattr(exc, 'strerror', None) or 'unreadable'})"
            ) from None
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    return client


class MqttBridge:
    """Feeds MQTT requests to the Service and publishes each answer; one per daemon process."""

    def __init__(self, service: Service, config: MqttConfig):
        if not config.url:
            raise ValueError("mqtt.url is not set")
        self.service = service
        self.config = config
        self.topics = Topics.under(config.topic_prefix)
        self.status_topic = self.topics.status(config.daemon_id)
        # MQTT payloads get the same limit as HTTP bodies, checked before parsing.
        self.max_payload_bytes = service.config.http.max_body_bytes
        self._host, self._port = broker_address(config.url)[:2]

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
        # mid -> whether the broker refused it, for PUBACKs that came before their publisher registered.
        self._early: dict[int, bool] = {}
        self._open_replies = 0

        client = make_client(config, config.client_id, manual_ack=True)
        self.membership = Membership(
            daemon_id=config.daemon_id,
            group=config.shared_group,
            request_filters=self.topics.request_filters(),
            status_topic=self.status_topic,
            status_interval_s=config.status_interval_s,
            describe=lambda: {**service.describe(), "worker_alive": service.worker.alive()},
            subscribe=self._subscribe,
            unsubscribe=lambda topics: client.unsubscribe(topics),
            publish_status=lambda body: self._publish(self.status_topic, body, None, None, retain=True),
            version=SOFTWARE_VERSION,
        )
        self._last_message_at = time.monotonic()
        self._nobody: set[int] = set()
        self._resend_until = float("inf")
        client.will_set(self.status_topic, self.membership.offline_payload(), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client
        self.connected = threading.Event()
        self.capture: Any = None  # the capture topics' connection, started with this one
        # Since when the broker has been unreachable or refusing us (None while connected); /healthz says
        # `degraded` once that lasts longer than config.degraded_after_s.
        self._down_since: float | None = time.monotonic()
        self._state_lock = threading.Lock()
        service.health_checks["mqtt"] = self.problem
        # SUBSCRIBE mid -> its topics, so that a refusal names the right ones.
        self._subscribing: dict[int, list[str]] = {}
        self._fleet_erase_refused: str | None = None
        if self.membership.shared:
            service.erasure_fan_out = self._fan_out_erasure

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying with backoff until the broker answers)."""
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.session_expiry_s
        # The broker sends at most this many unacknowledged requests: the queue plus the one in the
        # worker, plus one waiting in the intake thread.
        properties.ReceiveMaximum = max(1, min(65535, self.service.worker.queue_size + 2))
        # Memory stays bounded whatever the broker allows: it must not send this client a packet over twice
        # the payload limit (it drops it instead). Between the limit and that, the kiosk is told
        # "request too large"; Mosquitto's message_size_limit refuses such payloads at the door.
        properties.MaximumPacketSize = min(MAX_PACKET_SIZE, 2 * self.max_payload_bytes + 65536)
        if self.membership.shared:
            # A member's persistent session keeps its turn while it is away (Mosquitto queues its share
            # there until it returns): a clean session leaves the group the moment the daemon is gone.
            properties.SessionExpiryInterval = 0
            # The group's share fills at most half the queue: a full queue then means more than that share
            # (local HTTP requests, a stall), and the daemon leaves the group (`busy`). A window as large as
            # the queue would fill it in every burst, and busy members would herd new requests onto the
            # last one online instead of the broker's even round robin. (Mosquitto 2.0.11 does not honour
            # it: membership.py's `busy` rule does not rely on it; docs/fleet.md.)
            properties.ReceiveMaximum = max(1, self.service.worker.queue_size // 2)
        self._set_state("connecting")
        self._intake_thread.start()
        self._client.connect_async(
            self._host, self._port, keepalive=self.config.keepalive_s, clean_start=self.membership.shared,
            properties=properties,
        )
        self._client.loop_start()
        self.membership.start()
        if self.service.config.capture.enabled and self.membership.shared:
            # Every member would read every session's frames (a plain subscription) and answer the same
            # uuid from other frames: in a group, live capture is over WebSocket only (docs/fleet.md).
            log.warning("capture over MQTT is off in the shared group %s; WebSocket capture still works",
                        self.config.shared_group)
        elif self.service.config.capture.enabled:
            from daemon.capture.mqtt import CaptureMqtt  # live capture topics (docs/capture.md)

            self.capture = CaptureMqtt(self.service, self.service.config)
            self.capture.start()

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
        self._resend_until = deadline - 1.5
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
        if self.capture is not None:
            self.capture.stop()
        self._set_state("stopped")
        self._intake_thread.join(1.0)

    # -- connection state (for /healthz) -----------------------------------------------------------

    def _set_state(self, state: str) -> None:
        with self._state_lock:
            self.service.transport_status["mqtt"] = state
            if state in ("connected", "stopped"):
                self._down_since = None
            elif self._down_since is None:
                self._down_since = time.monotonic()

    def problem(self) -> str | None:
        """Why MQTT is degraded (None when it is not): the broker unreachable or refusing for too long, or
        refusing this group member the fleet erasure topic (deploy/mosquitto.acl)."""
        if self._fleet_erase_refused:
            return self._fleet_erase_refused
        with self._state_lock:
            since = self._down_since
            state = self.service.transport_status.get("mqtt", "")
        if since is None:
            return None
        down_s = time.monotonic() - since
        if down_s <= self.config.degraded_after_s:
            return None
        return f"MQTT broker {self._host}:{self._port} {state} for {down_s:.0f} s"

    # -- paho callbacks (paho's network thread: never block here) ---------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s:%d refused the connection: %s", self._host, self._port, reason_code)
            self._set_state(f"refused: {reason_code}")
            return
        filters = self.topics.request_filters()
        log.info(
            "MQTT connected to %s:%d (session present: %s); subscribing to %s",
            self._host, self._port, flags.session_present, " and ".join(filters),
        )
        self.connected.set()
        self._set_state("connected")
        # Resubscribe on every connect: a broker that lost its state has lost the subscription too (through
        # the fleet membership: `$share/<group>/...` in a group, and not while the daemon must take no work).
        self.membership.connected()
        if self.membership.shared:
            # Plain, not shared: every member must erase. noLocal: not our own erasures. A retained
            # publish there (none should exist: the daemon never retains one) is never replayed.
            options = SubscribeOptions(qos=1, noLocal=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            self._subscribe_with([self.topics.fleet_erase()], options)

    def _subscribe_with(self, topics: list[str], options: SubscribeOptions) -> None:
        _, mid = self._client.subscribe([(topic, options) for topic in topics])
        self._subscribing[mid] = topics

    def _subscribe(self, topics: list[str], qos: int) -> None:
        """QoS 1: request filters. Retain handling 2: the broker never replays retained requests;
        retain-as-published: a request published with the retain flag arrives with it, so that it can be
        refused. QoS 0: the peers' statuses (no ack, no slot of the Receive Maximum, not our own)."""
        if qos == 0:
            options = SubscribeOptions(qos=0, noLocal=True)
        else:
            options = SubscribeOptions(
                qos=1, retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND
            )
        self._subscribe_with(topics, options)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("MQTT broker %s:%d unreachable; retrying", self._host, self._port)
        self._set_state("unreachable")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.connected.clear()
        self.membership.disconnected()
        if self.service.transport_status.get("mqtt") == "connected":
            self._set_state("disconnected")
        if reason_code.is_failure or reason_code.value != 0:
            log.warning("MQTT disconnected (%s); reconnecting with backoff", reason_code)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any], properties: Any
    ) -> None:
        topics = self._subscribing.pop(mid, None) or list(self.membership.filters)
        for topic, code in zip(topics, reason_codes):
            if not code.is_failure:
                continue
            log.error("the broker refused the subscription to %s: %s", topic, code)
            if topic == self.topics.fleet_erase():
                # Requests are still answered, but erasures asked of other daemons do not reach this one.
                self._fleet_erase_refused = f"the broker refused the fleet erasure topic {topic}: {code}"
            else:
                self._set_state(f"subscription refused: {code}")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.membership.peer_status(message.topic, message.payload):
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        if message.topic == self.topics.fleet_erase():
            # Off paho's thread (the store's delete takes a moment); also while stopping: erasure is due.
            threading.Thread(target=self._erase_for_peer, args=(message,), name="fleet-erase", daemon=True).start()
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
        refused = bool(reason_code.is_failure)
        if refused:
            # A refused publish (e.g. the ACL) will not succeed on redelivery either: ack the request.
            log.error("the broker refused a publish (mid %d): %s", mid, reason_code)
        with self._pub_lock:
            if getattr(reason_code, "value", 0) == NO_MATCHING_SUBSCRIBERS:
                self._nobody.add(mid)
            if mid not in self._pending:
                self._early[mid] = refused
                return
            reply = self._pending.pop(mid)
            if reply is not None and refused:
                reply.refused = True
        self._acknowledged(mid, reply)

    def _acknowledged(self, mid: int, reply: _Reply | None) -> None:
        """The broker acknowledged publish `mid`. A hand-back that reached nobody (every member had just
        left the group, e.g. all busy at once) is published again shortly, until the stop deadline."""
        with self._pub_lock:
            nobody = mid in self._nobody
            self._nobody.discard(mid)
        if nobody and reply is not None and reply.resend is not None and time.monotonic() < self._resend_until:
            timer = threading.Timer(0.2, reply.resend)
            timer.daemon = True
            timer.start()
            return
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
            if self.membership.shared and not self._wait_for_room():
                self._hand_back(message)  # stopping: another member answers it
                continue
            try:
                delivery = self._delivery(message)
            except Exception:  # an unreadable topic: nothing to answer, but the slot is freed
                log.exception("an MQTT message could not be read")
                if message.qos > 0:
                    self._client.ack(message.mid, message.qos)
                continue
            try:
                self._handle(delivery, message)
            except Exception:  # one bad message must not stop the intake, nor keep its slot for good
                log.exception("handling MQTT request %s failed", delivery.uuid or "without a usable uuid")
                self._answer_unexpected(delivery)
            del message

    def _wait_for_room(self) -> bool:
        """In a group: wait for a queue slot before parsing (parsing drops the raw payload, and only a raw
        request can be handed back). False when the daemon stops meanwhile."""
        while self._accepting and not self.service.has_room():
            self._room.clear()
            if not self.service.has_room():
                self._room.wait(1.0)
        return self._accepting

    def _delivery(self, message: mqtt.MQTTMessage) -> _Delivery:
        properties = getattr(message, "properties", None)
        try:
            kiosk = self.topics.kiosk_of(message.topic)
        except ValueError:  # not one of our request topics (cannot happen with our subscriptions)
            kiosk = None
        response_topic = getattr(properties, "ResponseTopic", None) or None
        refused = None
        if response_topic is not None and not self.topics.response_topic_allowed(kiosk, response_topic):
            refused, response_topic = response_topic, None
        return _Delivery(
            mid=message.mid,
            qos=message.qos,
            topic=message.topic,
            kiosk=kiosk,
            retained=bool(message.retain),
            response_topic=response_topic,
            correlation=getattr(properties, "CorrelationData", None),
            refused_response_topic=refused,
        )

    def _handle(self, delivery: _Delivery, message: mqtt.MQTTMessage) -> None:
        metrics.count_request("mqtt")
        if delivery.retained and not message.payload:
            # A zero-length retained publish deletes a retained message: nothing to answer.
            self._ack(delivery)
            return
        if len(message.payload) > self.max_payload_bytes:
            size = len(message.payload)
            message.payload = b""
            self._answer_error(delivery, AnalysisError(
                "too_large", f"the payload is {size} bytes; the limit is {self.max_payload_bytes} bytes",
            ))
            return
        try:
            payload: Any = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and uuid_problem(payload.get("uuid")) is None:
            delivery.uuid = payload["uuid"]
        if delivery.retained:
            message.payload = b""
            self._refuse_retained(delivery)
            return
        if delivery.refused_response_topic is not None:
            message.payload = b""
            self._answer_error(delivery, AnalysisError(
                "validation",
                f"ResponseTopic {delivery.refused_response_topic!r} is outside this kiosk's reply tree "
                f"{self.topics.reply_tree(delivery.kiosk)}; the request was not analysed",
                text="invalid ResponseTopic",
            ))
            return
        if isinstance(payload, dict) and payload.get("command") == ERASE_COMMAND:
            # A kiosk's erasure of a member (docs/web.md): arrives on its own request topic, answered
            # on its own result topic, like any request of that tree; in a group, fanned out to the others.
            message.payload = b""
            self._reply(delivery, answer_json(erase_answer(payload, self.service.erase_everywhere)))
            return
        try:
            request = parse_request(payload if isinstance(payload, dict) else message.payload)
        except AnalysisError as exc:
            self._answer_error(delivery, exc)
            return
        finally:
            # The raw payload and its JSON are as large as the photos again: drop them before the queue.
            message.payload = b""
            del payload
        request.topic_tree = delivery.kiosk  # part of the input hash: a uuid is not shared across trees
        while True:
            self._room.clear()
            try:
                future = self.service.submit(request)
                break
            except AnalysisError as exc:
                if exc.kind != "overload":
                    self._answer_error(delivery, exc)
                    return
            # Queue full: take no more messages until the worker frees a slot.
            if not self._accepting:
                return
            self._room.wait(1.0)
            if not self._accepting:
                return
        future.add_done_callback(lambda done: self._on_answer(delivery, done))

    def _refuse_retained(self, delivery: _Delivery) -> None:
        self._answer_error(delivery, AnalysisError(
            "validation",
            "requests must be published with the retain flag off: a retained request would be answered "
            "again on every reconnect and its photos would stay on the broker; the request was not analysed",
            text="retained request refused",
        ))
        # Take the photos off the broker (the ACL lets the daemon write request topics for this).
        self._publish(delivery.topic, b"", None, None, retain=True)

    def _on_answer(self, delivery: _Delivery, future: Any) -> None:
        try:
            error = future.exception()
            if error is None:
                self._reply(delivery, answer_json(future.result()))
                self.membership.answered(None)
            elif isinstance(error, AnalysisError) and error.kind == "overload":
                # Abandoned at shutdown: left unacknowledged, the broker redelivers it after the restart.
                log.info("request %s left with the broker for after the restart", delivery.uuid)
            elif isinstance(error, AnalysisError):
                self._answer_error(delivery, error)
            else:
                log.error("MQTT request %s: unexpected %s", delivery.uuid, type(error).__name__)
                self._answer_unexpected(delivery)
        except Exception:  # a done callback's exception would only be logged by concurrent.futures
            log.exception("answering MQTT request %s failed", delivery.uuid)
            self._answer_unexpected(delivery)

    def _answer_unexpected(self, delivery: _Delivery) -> None:
        """An `internal` error as the answer, and the ack: an unexpected failure must not keep the slot."""
        try:
            if not delivery.answered:
                self._answer_error(delivery, AnalysisError("internal", "unexpected error while handling the request"))
                return
        except Exception:
            log.exception("publishing the internal error for %s failed", delivery.uuid)
        self._ack(delivery)

    def _answer_error(self, delivery: _Delivery, error: AnalysisError) -> None:
        metrics.count_error(error.kind)
        log.info("MQTT request %s: %s (%s)", delivery.uuid or "without a usable uuid", error.kind, error.detail)
        self._reply(delivery, answer_json(error.to_answer(delivery.uuid)))
        self.membership.answered(error.kind)

    def _hand_back(self, message: mqtt.MQTTMessage) -> None:
        """Republish a request this daemon will not answer, unchanged, to the topic it came on (the group,
        which this daemon has left, gives it to another member); acknowledged once the broker has it.
        Only a request not yet parsed can be handed back (parsing drops the raw payload); one abandoned
        in the worker queue at the stop deadline is left to the kiosk's retry."""
        received = getattr(message, "properties", None)
        properties = Properties(PacketTypes.PUBLISH)
        for name in ("PayloadFormatIndicator", "MessageExpiryInterval", "ContentType", "ResponseTopic",
                     "CorrelationData", "UserProperty"):
            value = getattr(received, name, None)
            if value is not None:
                setattr(properties, name, value)
        reply = self._open_reply(message.mid, message.qos, 1)
        topic, payload = message.topic, message.payload
        reply.resend = lambda: self._publish(topic, payload, properties, reply)
        log.info("handing a request back to the group (%d bytes)", len(payload))
        self._publish(topic, payload, properties, reply)

    # -- erasure in a fleet (docs/fleet.md "Erasure") ---------------------------------------------

    def _fan_out_erasure(self, member_id: str) -> dict:
        """Publish a member's erasure to every other daemon of the group (Service.erase_everywhere calls
        this after erasing here). The id itself travels: each daemon hashes it with its own key. It goes
        over the same broker connection (TLS, ACL) as the kiosk's own erase command came.

        `fleet`: `sent` (the broker took it for every daemon subscribed now), `pending` (not acknowledged
        within FLEET_ERASE_WAIT_S, e.g. the broker is away: paho sends it once connected again, while this
        daemon runs), `refused` (the broker refused it: the ACL). `fleet_offline`: the daemons whose last
        status says offline, which do not get it (no session keeps it for them)."""
        body = orjson.dumps({"command": ERASE_COMMAND, "id": member_id, "daemon_id": self.config.daemon_id})
        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = "application/json"
        reply = self._open_reply(0, 0, 1, done=threading.Event())
        self._publish(self.topics.fleet_erase(), body, properties, reply)
        del body
        assert reply.done is not None
        if not reply.done.wait(FLEET_ERASE_WAIT_S):
            outcome = "pending"
        else:
            outcome = "refused" if reply.refused else "sent"
        offline = self.membership.peers_offline()
        metrics.count_fleet_erasure("sent", outcome)
        log_level = logging.INFO if outcome == "sent" else logging.WARNING
        log.log(log_level, "fleet erasure of one member %s to the group %s (%d daemon(s) known offline)",
                outcome, self.config.shared_group, len(offline))
        return {"fleet": outcome, "fleet_offline": offline}

    def _erase_for_peer(self, message: mqtt.MQTTMessage) -> None:
        """Another daemon's fan-out: erase the member here too (idempotent). Never logs the id."""
        try:
            try:
                payload: Any = orjson.loads(message.payload)
            except orjson.JSONDecodeError:
                payload = None
            member_id = payload.get("id") if isinstance(payload, dict) else None
            sender = payload.get("daemon_id") if isinstance(payload, dict) else None
            if member_problem(member_id) is not None or not isinstance(sender, str) or message.retain:
                metrics.count_fleet_erasure("received", "unreadable")
                log.warning("ignored a fleet erasure that is not one (%d bytes)", len(message.payload))
            elif sender != self.config.daemon_id:  # our own (noLocal keeps it away already)
                erased = self.service.erase_member(member_id)
                metrics.count_fleet_erasure("received", "erased")
                log.info("fleet erasure from daemon %r: %d stored results of one member erased here", sender, erased)
        except Exception:  # e.g. the store already closed at shutdown; the traceback holds no id
            metrics.count_fleet_erasure("received", "failed")
            log.exception("a fleet erasure from another daemon failed here")
        finally:
            message.payload = b""
            if message.qos > 0:
                self._client.ack(message.mid, message.qos)

    def _ack(self, delivery: _Delivery) -> None:
        if delivery.qos > 0:
            self._client.ack(delivery.mid, delivery.qos)

    # -- publishing -------------------------------------------------------------------------------

    def _reply(self, delivery: _Delivery, body: bytes) -> None:
        delivery.answered = True
        targets: list[tuple[str, Properties]] = []
        main = Properties(PacketTypes.PUBLISH)
        main.ContentType = "application/json"
        targets.append((self.topics.answer(delivery.kiosk, delivery.uuid), main))
        # Only a ResponseTopic inside the kiosk's own reply tree is kept (_delivery sets the others aside).
        if delivery.response_topic:
            extra = Properties(PacketTypes.PUBLISH)
            extra.ContentType = "application/json"
            if delivery.correlation is not None:
                extra.CorrelationData = delivery.correlation
            targets.append((delivery.response_topic, extra))
        reply = self._open_reply(delivery.mid, delivery.qos, len(targets))
        for topic, properties in targets:
            self._publish(topic, body, properties, reply)

    def _open_reply(self, request_mid: int, request_qos: int, parts: int, done: threading.Event | None = None) -> _Reply:
        """A reply of `parts` publishes, counted open (the stop waits for it) until the last is done; the
        request (mid, qos; 0 for none) is acknowledged then."""
        reply = _Reply(request_mid, request_qos, parts, done=done)
        with self._pub_lock:
            self._open_replies += 1
        return reply

    def _publish(
        self, topic: str, body: bytes, properties: Properties | None, reply: _Reply | None, retain: bool = False
    ) -> None:
        try:
            info = self._client.publish(topic, body, qos=1, retain=retain, properties=properties)
        except ValueError as exc:  # an invalid ResponseTopic (wildcards) or an oversized payload
            log.warning("cannot publish to %r: %s", topic, exc)
            if reply is not None:
                reply.refused = True
            self._reply_part_done(reply)
            return
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # Not queued by paho: leave the request unacknowledged so that it comes again.
            log.error("publishing to %s failed: %s", topic, mqtt.error_string(info.rc))
            if reply is not None:
                with self._pub_lock:
                    reply.request_qos = 0
                    reply.refused = True
            self._reply_part_done(reply)
            return
        # NO_CONN: paho keeps QoS 1 messages and sends them after the reconnect.
        with self._pub_lock:
            if info.mid in self._early:
                if self._early.pop(info.mid) and reply is not None:
                    reply.refused = True
                done = True
            else:
                self._pending[info.mid] = reply
                done = False
        if done:
            self._acknowledged(info.mid, reply)

    def _reply_part_done(self, reply: _Reply | None) -> None:
        if reply is None:
            return
        with self._pub_lock:
            reply.remaining -= 1
            if reply.remaining > 0:
                return
            self._open_replies -= 1
            self._pub_lock.notify_all()
        if reply.done is not None:
            reply.done.set()
        if reply.request_qos > 0:
            self._client.ack(reply.request_mid, reply.request_qos)
