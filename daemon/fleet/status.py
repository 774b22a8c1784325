"""The retained status message of one daemon (`<prefix>/status/<daemon id>`), and the fleet view.

One JSON object per daemon, retained at the broker, so that anyone who subscribes to
`<prefix>/status/+` learns every daemon's latest state at once (`skeletond fleet`). Its last will is the
same object with `"state": "offline"`. Older daemons published the bare words `online` / `offline`;
those still parse (with the other fields unknown).

States: `online` (taking work), `busy` (queue full: not taking work for now), `unhealthy` (its analyses
fail: not taking work), `draining` (shutting down: finishing what it holds), `offline`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass, fields

import orjson

STATES = ("online", "busy", "unhealthy", "draining", "offline")
# States in which a daemon takes new requests from the broker.
TAKING_WORK = ("online",)


@dataclass
class DaemonStatus:
    daemon_id: str
    state: str
    backend: str | None = None
    version: str | None = None
    queue_depth: int | None = None
    queue_size: int | None = None
    # Requests answered (results and errors) since the daemon started.
    served: int | None = None
    # The shared subscription group it belongs to (None: it reads the request topics alone).
    shared_group: str | None = None
    started_at: str | None = None
    updated_at: str | None = None


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def status_json(status: DaemonStatus) -> bytes:
    return orjson.dumps({key: value for key, value in asdict(status).items() if value is not None})


def parse_status(daemon_id: str, payload: bytes) -> DaemonStatus:
    """A status from its payload; tolerant: an unreadable payload gives state `unknown`."""
    text = payload.strip()
    if text in (b"online", b"offline"):
        return DaemonStatus(daemon_id=daemon_id, state=text.decode())
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return DaemonStatus(daemon_id=daemon_id, state="unknown")
    known = {f.name for f in fields(DaemonStatus)}
    values = {key: value for key, value in data.items() if key in known}
    values["daemon_id"] = daemon_id  # the topic names the daemon; the payload cannot claim another
    values["state"] = str(values.get("state") or "unknown")
    for name in ("queue_depth", "queue_size", "served"):
        if not isinstance(values.get(name), int) or isinstance(values.get(name), bool):
            values.pop(name, None)
    return DaemonStatus(**values)


def collect_statuses(
    url: str,
    prefix: str,
    wait_s: float = 2.0,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
) -> list[DaemonStatus]:
    """Every retained status under `<prefix>/status/+`, read for `wait_s` seconds after the SUBACK.

    Retained messages arrive right after the subscription is acknowledged; the wait also catches
    updates published meanwhile.
    """
    from daemon.fleet.client import broker_client

    topic_head = f"{prefix.rstrip('/')}/status/"
    found: dict[str, DaemonStatus] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    refused: list[str] = []
    client, host, port = broker_client(
        url, f"skeletond-fleet-{uuidlib.uuid4().hex[:10]}", username, password, ca_file
    )

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
            subscribed.set()
            return
        client.subscribe(topic_head + "+", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        refused.extend(str(code) for code in reason_codes if code.is_failure)
        subscribed.set()

    def on_message(client, userdata, message) -> None:
        daemon_id = message.topic[len(topic_head):]
        if not message.payload:  # a cleared retained status: that daemon was removed
            with lock:
                found.pop(daemon_id, None)
            return
        with lock:
            found[daemon_id] = parse_status(daemon_id, message.payload)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect_async(host, port, keepalive=30)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise ConnectionError(f"no answer from the broker at {host}:{port} within 10 s")
        if refused:
            raise ConnectionError(f"the broker refused: {', '.join(refused)}")
        time.sleep(max(0.0, wait_s))
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return sorted(found.values(), key=lambda status: status.daemon_id)


_COLUMNS = (
    ("daemon", "daemon_id"), ("state", "state"), ("backend", "backend"), ("queue", "queue"),
    ("served", "served"), ("version", "version"), ("group", "shared_group"), ("updated", "updated_at"),
)


def format_table(statuses: list[DaemonStatus]) -> str:
    """A plain-text table, one daemon a line, then a one-line summary."""
    rows = []
    for status in statuses:
        cells = asdict(status)
        if status.queue_depth is not None:
            cells["queue"] = f"{status.queue_depth}/{status.queue_size}" if status.queue_size else status.queue_depth
        rows.append(["-" if cells.get(key) is None else str(cells.get(key)) for _, key in _COLUMNS])
    header = [title for title, _ in _COLUMNS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    taking = sum(1 for status in statuses if status.state in TAKING_WORK)
    lines.append(f"{len(statuses)} daemon(s), {taking} taking work")
    return "\n".join(lines)
