"""One daemon's place in a fleet: whether it takes work from the broker, and its retained status.

The broker hands each request of a shared subscription (`$share/<group>/<filter>`) to one member. A
daemon that cannot take work must leave the group, or the broker keeps handing it its turn (Mosquitto
assigns round robin whether or not the member keeps up, and queues what it cannot send yet):
- shutting down (`draining`): leaves for good; what it holds is finished, what the broker still sends it
  is handed back (mqtt.py);
- overloaded (`busy`: its worker queue is full while another member has room): leaves until its queue
  is down to half. Only when another member has room: when every member is full, leaving helps nobody and
  would herd new requests onto the last member online, and when none other is online the broker would
  drop requests that match no subscription;
- unhealthy (its last analyses all failed unexpectedly, or the worker thread died): leaves, and tries
  again after a pause.
Without a shared group the daemon is alone on its topics: it never leaves (its persistent session keeps
the requests for it), and the status is published all the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from daemon.fleet.status import STATES, TAKING_WORK, DaemonStatus, now_iso, parse_status, status_json

log = logging.getLogger(__name__)

# Consecutive unexpected analysis failures that make a daemon unhealthy, and how long it stays out.
UNHEALTHY_AFTER_FAILURES = 3
UNHEALTHY_PAUSE_S = 30.0
# How often the state is re-evaluated (cheap: a few attribute reads).
TICK_S = 0.2


def shared_filters(filters: Sequence[str], group: str | None) -> list[str]:
    """The subscription filters: each through `$share/<group>/` when a group is set."""
    return [f"$share/{group}/{topic}" if group else topic for topic in filters]


def next_state(
    *,
    stopping: bool,
    worker_alive: bool,
    failures: int,
    unhealthy_until: float,
    now: float,
    queue_depth: int,
    queue_size: int,
    was_busy: bool,
    peers_with_room: int,
    shared: bool,
) -> str:
    """The daemon's state from what it knows (a plain function: the rules, testable alone).

    `peers_with_room`: other members online whose last status showed room in their queue.
    """
    if stopping:
        return "draining"
    if not worker_alive or failures >= UNHEALTHY_AFTER_FAILURES or now < unhealthy_until:
        return "unhealthy"
    # Hysteresis: busy when the queue is full, back when it is down to half.
    full = queue_depth >= queue_size or (was_busy and queue_depth > queue_size // 2)
    if shared and peers_with_room > 0 and full:
        return "busy"
    return "online"


def has_room(status: DaemonStatus) -> bool:
    """A peer that takes work and whose queue was not full at its last status."""
    if status.state not in TAKING_WORK:
        return False
    return status.queue_depth is None or status.queue_size is None or status.queue_depth < status.queue_size


class Membership:
    """Subscribes, unsubscribes and publishes the status through callables given by the MQTT bridge."""

    def __init__(
        self,
        *,
        daemon_id: str,
        group: str | None,
        request_filters: Sequence[str],
        status_topic: str,
        status_interval_s: float,
        describe: Callable[[], dict],
        subscribe: Callable[[list[str], int], None],
        unsubscribe: Callable[[list[str]], None],
        publish_status: Callable[[bytes], None],
        version: str,
    ):
        self.daemon_id = daemon_id
        self.group = group
        self.filters = shared_filters(request_filters, group)
        self.status_topic = status_topic
        self.peers_filter = status_topic.rsplit("/", 1)[0] + "/+"
        self._interval_s = status_interval_s
        self._describe = describe
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._publish_status = publish_status
        self._version = version
        self._started_at = now_iso()
        self._lock = threading.Lock()
        # One evaluation at a time (paho's thread on connect, the status thread otherwise), so that the
        # SUBSCRIBE / UNSUBSCRIBE packets go out in the order the decisions were taken.
        self._evaluate_lock = threading.Lock()
        self._state = "online"
        self._subscribed = False
        self._connected = False
        self._stopping = False
        self._failures = 0
        self._unhealthy_until = 0.0
        self.served = 0
        self._peers: dict[str, DaemonStatus] = {}
        self._last_full: bool | None = None
        self._last_published = 0.0
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fleet-status", daemon=True)

    @property
    def shared(self) -> bool:
        return self.group is not None

    @property
    def state(self) -> str:
        return self._state

    # -- what the bridge reports ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def connected(self) -> None:
        """On every CONNACK: subscribe again (the broker may have lost the session), publish the status."""
        with self._lock:
            self._connected = True
            self._subscribed = False
            self._peers.clear()
        if self.shared:
            # QoS 0 and not our own: peers' statuses take no ack and no slot of the Receive Maximum.
            self._subscribe([self.peers_filter], 0)
        self._evaluate(force_publish=True)

    def disconnected(self) -> None:
        with self._lock:
            self._connected = False
            self._subscribed = False

    def peer_status(self, topic: str, payload: bytes) -> bool:
        """A message on status/+; True when it was one (the bridge then ignores it)."""
        head = self.peers_filter[:-1]
        if not topic.startswith(head):
            return False
        daemon_id = topic[len(head):]
        if daemon_id != self.daemon_id:
            with self._lock:
                if payload:
                    self._peers[daemon_id] = parse_status(daemon_id, payload)
                else:
                    self._peers.pop(daemon_id, None)
            # Decide again now: two members that left at once see each other leave and come back.
            self._wake.set()
        return True

    def peers_offline(self) -> list[str]:
        """The other daemons whose last status says they are not connected (`offline`, or unreadable): a
        fleet erasure published now does not reach them (clean sessions keep nothing for them)."""
        with self._lock:
            return sorted(daemon_id for daemon_id, status in self._peers.items() if status.state not in STATES
                          or status.state == "offline")

    def answered(self, error_kind: str | None) -> None:
        """One request answered (a result or an error)."""
        with self._lock:
            self.served += 1
            if error_kind == "internal":
                self._failures += 1
                if self._failures >= UNHEALTHY_AFTER_FAILURES:
                    self._unhealthy_until = time.monotonic() + UNHEALTHY_PAUSE_S
            else:
                self._failures = 0
        self._wake.set()

    def leave(self) -> None:
        """Shutting down: take no new work from now on (unsubscribe at once, status `draining`)."""
        with self._lock:
            self._stopping = True
        self._evaluate(force_publish=True)

    def offline_payload(self) -> bytes:
        return status_json(self._status("offline"))

    # -- the state machine ------------------------------------------------------------------------

    def _status(self, state: str, description: dict | None = None) -> DaemonStatus:
        if description is None:
            description = self._describe()
        return DaemonStatus(
            daemon_id=self.daemon_id,
            state=state,
            backend=description.get("analyzer", {}).get("backend"),
            version=self._version,
            queue_depth=description.get("queue_depth"),
            queue_size=description.get("queue_size"),
            served=self.served,
            shared_group=self.group,
            started_at=self._started_at,
            updated_at=now_iso(),
        )

    def _evaluate(self, force_publish: bool = False) -> None:
        with self._evaluate_lock:
            self._evaluate_locked(force_publish)

    def _evaluate_locked(self, force_publish: bool) -> None:
        description = self._describe()
        queue_depth = int(description.get("queue_depth") or 0)
        queue_size = int(description.get("queue_size") or 1)
        now = time.monotonic()
        with self._lock:
            if self._failures >= UNHEALTHY_AFTER_FAILURES and now >= self._unhealthy_until:
                self._failures = 0  # the pause is over: try again
            peers = sum(1 for status in self._peers.values() if has_room(status))
            state = next_state(
                stopping=self._stopping,
                worker_alive=description.get("worker_alive", True),
                failures=self._failures,
                unhealthy_until=self._unhealthy_until,
                now=now,
                queue_depth=queue_depth,
                queue_size=queue_size,
                was_busy=self._state == "busy",
                peers_with_room=peers,
                shared=self.shared,
            )
            changed = state != self._state
            self._state = state
            connected = self._connected
            want = state in TAKING_WORK or not self.shared
            subscribe = connected and want and not self._subscribed
            unsubscribe = connected and not want and self._subscribed
            if subscribe or unsubscribe:
                self._subscribed = want
        if changed:
            log.info("fleet state: %s", state)
        if unsubscribe:
            log.info("leaving %s (%s): the broker gives new requests to the others", self.filters, state)
            self._unsubscribe(self.filters)
        if subscribe:
            self._subscribe(self.filters, 1)
        # Peers decide whether to leave from this daemon's room: say so soon when it fills up or empties
        # (at most twice a second, so that a queue hovering at full does not flood the broker).
        full = queue_depth >= queue_size
        room_changed = full != self._last_full and now - self._last_published >= 0.5
        if connected and (changed or force_publish or room_changed or now - self._last_published >= self._interval_s):
            self._last_full = full
            self._last_published = now
            self._publish_status(status_json(self._status(state, description)))

    def _loop(self) -> None:
        while True:
            self._wake.wait(TICK_S)
            self._wake.clear()
            try:
                self._evaluate()
            except Exception:  # the status must never stop the daemon
                log.exception("evaluating the fleet state failed")
