"""The kiosk's side of the MQTT contract: a reference client (paho-mqtt 2.x, MQTT 5).

The contract (docs/asyncapi.yaml, docs/fleet.md): publish the request (QoS 1) on the request topic, read
its answer on `result/<uuid>`; when no answer came within a timeout, publish the SAME request again
(same uuid, same photos); after a bounded number of attempts, give up with a clear error. No broker alone
guarantees that a request reaches a live daemon (Mosquitto drops a dead member's in-flight messages), so
the retry is what makes delivery end to end. A retry is safe: a daemon that already answered the uuid
answers again from its store, any other daemon computes the same answer from the same photos, and the
client keeps the first answer it gets.

Topics, with `prefix` (default skeleton/v2):
  one kiosk tree per kiosk (`kiosk` set):  request/<kiosk>   result/<kiosk>/<uuid>
  single-kiosk layout (`kiosk` None):      request           result/<uuid>
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

# Per attempt: a daemon answers a pair in 0.1-0.5 s, but a burst queues requests at the broker and in
# the daemons; 15 s covers a queue of a few dozen on one Jetson. Four attempts: a bound of one minute.
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_ATTEMPTS = 4
# Error kinds worth another attempt (the daemon was busy or failed unexpectedly); every other error
# (bad photo, no person, bad field, uuid conflict) would come back the same.
RETRYABLE_KINDS = ("overload", "internal")


class KioskRequestError(Exception):
    """The request got no usable answer."""


class KioskGaveUp(KioskRequestError):
    """No answer within the retry bound (attempts x timeout)."""


class KioskConnectError(KioskRequestError):
    """The broker could not be reached or refused the kiosk."""


def broker_client(
    url: str, client_id: str, username: str | None, password: str | None, ca_file: str | None
) -> tuple[mqtt.Client, str, int]:
    """(paho MQTT 5 client, host, port) for a broker URL: the given credentials (else the URL's), TLS for
    mqtts:// or a CA file. The kiosk client and `skeletond fleet` connect this way."""
    from daemon.mqtt import broker_address

    host, port, tls, url_user, url_password = broker_address(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username or url_user:
        client.username_pw_set(username or url_user, password if username else url_password)
    if tls or ca_file:
        client.tls_set(ca_certs=ca_file)
    return client, host, port


def request_payload(
    front: bytes,
    side: bytes,
    *,
    user_id: str,
    uuid: str | None = None,
    **optional: Any,
) -> dict:
    """The request JSON (the same as HTTP's) from two photos' bytes; `optional`: height, weight, ..."""
    payload = {
        "id": user_id,
        "uuid": uuid or str(uuidlib.uuid4()),
        "forigimg": base64.b64encode(front).decode("ascii"),
        "sorigimg": base64.b64encode(side).decode("ascii"),
    }
    payload.update({key: value for key, value in optional.items() if value is not None})
    return payload


def answer_kind(answer: dict) -> str | None:
    """None for a successful answer; else the error's kind (`unknown` when the daemon named none)."""
    if answer.get("state") == 0:
        return None
    data = answer.get("data")
    return str(data.get("kind") or "unknown") if isinstance(data, dict) else "unknown"


@dataclass
class Outcome:
    """What happened to one request: its answer (None when the client gave up), attempts, and the seconds
    from the first publish to the answer (to giving up)."""

    uuid: str
    answer: dict | None = None
    attempts: int = 0
    elapsed_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.answer is not None and answer_kind(self.answer) is None


@dataclass
class _Pending:
    uuid: str
    body: bytes
    started: float
    deadline: float = 0.0
    attempts: int = 0
    answer: dict | None = None
    answered_at: float | None = None
    last_error: dict | None = None
    done: threading.Event = field(default_factory=threading.Event)


class KioskClient:
    """One MQTT connection for a kiosk; `request` for one analysis, `request_many` for a batch."""

    def __init__(
        self,
        url: str,
        prefix: str = "skeleton/v2",
        *,
        kiosk: str | None = None,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        session_expiry_s: int = 300,
        connect_timeout_s: float = 10.0,
    ):
        from daemon.topics import Topics

        self.prefix = prefix.rstrip("/")
        self.kiosk = kiosk
        if kiosk is not None and (not kiosk or any(ch in kiosk for ch in "/+#")):
            raise ValueError(f"kiosk name must be one topic level without wildcards, got {kiosk!r}")
        topics = Topics.under(self.prefix)
        self.request_topic = topics.request(kiosk)
        self.result_head = topics.result(kiosk, "")
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._suback: dict[int, threading.Event] = {}
        self._connected = threading.Event()
        self._refused: str | None = None
        client, self._host, self._port = broker_client(
            url, client_id or f"kiosk-{kiosk or 'client'}-{uuidlib.uuid4().hex[:8]}", username, password, ca_file
        )
        # Requests of a batch go out together: let paho keep them all in flight.
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(0.5, 5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        # A session that outlives a short network drop: answers published meanwhile wait at the broker.
        self._connect_properties = Properties(PacketTypes.CONNECT)
        self._connect_properties.SessionExpiryInterval = max(0, int(session_expiry_s))

    # -- connection -------------------------------------------------------------------------------

    def connect(self) -> KioskClient:
        self._client.connect_async(self._host, self._port, keepalive=30, properties=self._connect_properties)
        self._client.loop_start()
        if not self._connected.wait(self._connect_timeout_s) or self._refused:
            self.close()
            reason = self._refused or f"no answer within {self._connect_timeout_s:g} s"
            raise KioskConnectError(f"cannot connect to the broker at {self._host}:{self._port}: {reason}")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> KioskClient:  # noqa: PYI034 - a final class
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.value != 0:
            log.warning("kiosk client disconnected (%s); paho reconnects", reason_code)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        failed = [str(code) for code in reason_codes if code.is_failure]
        if failed:
            log.error("the broker refused the result subscription: %s", ", ".join(failed))
        with self._lock:
            event = self._suback.pop(mid, None)
        if event is not None:
            event.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not message.topic.startswith(self.result_head):
            return
        uuid = message.topic[len(self.result_head):]
        try:
            answer = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            log.warning("unreadable answer on %s", message.topic)
            return
        if not isinstance(answer, dict):
            return
        with self._lock:
            pending = self._pending.get(uuid)
            if pending is None or pending.answer is not None:
                return  # a late duplicate (a retry answered twice): the first answer stands
            if answer_kind(answer) in RETRYABLE_KINDS:
                pending.last_error = answer  # retried when its attempt times out
                pending.deadline = min(pending.deadline, time.monotonic() + 1.0)
                return
            pending.answer = answer
            pending.answered_at = time.monotonic()
        pending.done.set()

    # -- requests ---------------------------------------------------------------------------------

    def request(self, payload: dict, timeout_s: float = DEFAULT_TIMEOUT_S, attempts: int = DEFAULT_ATTEMPTS) -> dict:
        """The answer to one request (success, or an error that a retry would not change).

        Raises KioskGaveUp after `attempts` attempts of `timeout_s` each without an answer.
        """
        outcome = self.request_many([payload], timeout_s, attempts)[payload["uuid"]]
        if outcome.answer is None:
            raise KioskGaveUp(outcome.error or "no answer")
        return outcome.answer

    def request_many(
        self, payloads: Iterable[dict], timeout_s: float = DEFAULT_TIMEOUT_S, attempts: int = DEFAULT_ATTEMPTS
    ) -> dict[str, Outcome]:
        """Publish every request at once, retry each on its own timer; uuid -> Outcome (never raises
        for a request without an answer: its Outcome says so)."""
        if timeout_s <= 0 or attempts < 1:
            raise ValueError("timeout_s must be > 0 and attempts >= 1")
        started = time.monotonic()
        batch: list[_Pending] = []
        for payload in payloads:
            uuid = payload.get("uuid")
            if not isinstance(uuid, str) or not uuid or any(ch in uuid for ch in "/+#"):
                raise ValueError(f"every request needs a uuid usable as a topic level, got {uuid!r}")
            batch.append(_Pending(uuid, orjson.dumps(payload), started))
        if len({pending.uuid for pending in batch}) != len(batch):
            raise ValueError("two requests of one batch share a uuid")
        with self._lock:
            for pending in batch:
                self._pending[pending.uuid] = pending
        topics = [self.result_head + pending.uuid for pending in batch]
        try:
            self._subscribe(topics)
            for pending in batch:
                self._publish(pending, timeout_s)
            self._drive(batch, timeout_s, attempts)
        finally:
            with self._lock:
                for pending in batch:
                    self._pending.pop(pending.uuid, None)
            self._client.unsubscribe(topics)
        outcomes: dict[str, Outcome] = {}
        for pending in batch:
            finished = pending.answered_at if pending.answered_at is not None else time.monotonic()
            outcome = Outcome(pending.uuid, pending.answer, pending.attempts, finished - pending.started)
            if pending.answer is None:
                outcome.answer = pending.last_error  # a retryable error, still an answer to show
                outcome.error = (
                    f"no answer for uuid {pending.uuid} after {pending.attempts} attempts of {timeout_s:g} s"
                    f" ({attempts * timeout_s:g} s in all) on {self.request_topic}: are the daemons running"
                    " and subscribed? (`skeletond fleet` lists them)"
                )
            outcomes[pending.uuid] = outcome
        return outcomes

    def _subscribe(self, topics: list[str]) -> None:
        """Subscribe to the answers before publishing the requests, and wait for the SUBACK."""
        event = threading.Event()
        with self._lock:
            result, mid = self._client.subscribe([(topic, 1) for topic in topics])
            if result == mqtt.MQTT_ERR_SUCCESS:
                self._suback[mid] = event
        if result != mqtt.MQTT_ERR_SUCCESS or not event.wait(self._connect_timeout_s):
            raise KioskConnectError(f"could not subscribe to the answers ({mqtt.error_string(result)})")

    def _publish(self, pending: _Pending, timeout_s: float) -> None:
        with self._lock:
            pending.attempts += 1
            pending.deadline = time.monotonic() + timeout_s
        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = "application/json"
        info = self._client.publish(self.request_topic, pending.body, qos=1, properties=properties)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho sends it later
            log.warning("publishing request %s failed: %s", pending.uuid, mqtt.error_string(info.rc))

    def _drive(self, batch: list[_Pending], timeout_s: float, attempts: int) -> None:
        """Wait for the answers; republish each request whose attempt timed out, up to `attempts`."""
        open_requests = list(batch)
        while open_requests:
            now = time.monotonic()
            still_open = []
            for pending in open_requests:
                if pending.done.is_set():
                    continue
                if now >= pending.deadline:
                    if pending.attempts >= attempts:
                        continue  # gave up
                    log.info("no answer for %s within %g s: attempt %d", pending.uuid, timeout_s,
                             pending.attempts + 1)
                    self._publish(pending, timeout_s)
                still_open.append(pending)
            open_requests = still_open
            if open_requests:
                next_deadline = min(pending.deadline for pending in open_requests)
                open_requests[0].done.wait(max(0.01, min(0.2, next_deadline - time.monotonic())))
