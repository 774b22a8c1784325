"""The capture session over a WebSocket (`GET /capture`, docs/capture.md): receive frames and commands,
send the session's events; nothing else. One endpoint function, as Starlette's own examples have it.

Events come from the inference worker's thread; they are handed to this connection's event loop and sent
in order by one sender task. A client that reads too slowly loses guide events (never the others): the
outgoing queue stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from typing import Any

import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from daemon import metrics
from daemon.answer import answer_json
from daemon.capture.manager import CLOSE_DONE, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TOO_BIG, CaptureRefused
from daemon.capture.session import MAX_REASON_BYTES, parse_session_params
from daemon.config import Config
from daemon.errors import AnalysisError

log = logging.getLogger(__name__)

# Guide events waiting for a slow client beyond this are dropped (the newest guide is what matters).
MAX_QUEUED_GUIDES = 8


def _reason(text: str) -> str:
    encoded = text.encode()[:MAX_REASON_BYTES]
    return encoded.decode("utf-8", errors="ignore")


class _Connection:
    """Thread-safe SessionOutput onto one WebSocket's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._guides = 0

    def _put(self, item: tuple[str, Any]) -> None:  # on the loop
        if item[0] == "guide":
            if self._guides >= MAX_QUEUED_GUIDES:
                return
            self._guides += 1
        self.queue.put_nowait(item)

    def _post(self, item: tuple[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._put, item)
        except RuntimeError:  # the loop is closed: the connection is gone
            pass

    def send(self, event: dict) -> None:
        self._post(("guide" if event.get("event") == "guide" else "event", event))

    def close(self, code: int, reason: str) -> None:
        self._post(("close", (code, reason)))

    async def next(self) -> tuple[str, Any]:
        item = await self.queue.get()
        if item[0] == "guide":
            self._guides -= 1
        return item


async def _refuse(websocket: WebSocket, error: AnalysisError, code: int, reason: str, uuid: str | None = None) -> None:
    """Accepted first, so that a browser sees the error event and the close reason."""
    metrics.count_error(error.kind)
    await websocket.send_text(answer_json({"event": "error", "fatal": True, "error": error.to_answer(uuid)}).decode())
    await websocket.close(code, _reason(reason))


def same_origin(websocket: WebSocket) -> bool:
    """A browser's WebSocket carries its page's Origin, and no CORS check protects it: a page from
    anywhere could stream to a daemon on the kiosk's loopback. Only the daemon's own pages (same host and
    port as the request) may; clients that send no Origin (kiosk apps, scripts) are not browsers' pages."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    host = websocket.headers.get("host", "")
    scheme, _, rest = origin.partition("://")
    return scheme in ("http", "https") and rest.rstrip("/").lower() == host.lower()


def capture_route(service: Any, config: Config) -> WebSocketRoute:
    """The `/capture` WebSocket route for create_app."""
    token = config.http.token
    manager = service.capture

    def authorized(websocket: WebSocket) -> bool:
        if token is None:
            return True
        given = websocket.query_params.get("token")
        if given is None:
            scheme, _, given = websocket.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return False
        return hmac.compare_digest(given.strip().encode(), token.encode())

    async def capture(websocket: WebSocket) -> None:
        await websocket.accept()
        metrics.count_request("websocket")
        if not config.capture.allow_any_origin and not same_origin(websocket):
            error = AnalysisError("validation", "the page's origin may not open capture sessions "
                                  "(capture.allow_any_origin)", text="forbidden origin")
            await _refuse(websocket, error, CLOSE_POLICY, "forbidden origin")
            return
        if not authorized(websocket):
            error = AnalysisError("validation", "a valid token is required (query parameter token, or "
                                  "an Authorization: Bearer header)", text="unauthorized")
            await _refuse(websocket, error, CLOSE_POLICY, "unauthorized")
            return
        try:
            params = parse_session_params(dict(websocket.query_params))
        except AnalysisError as exc:
            await _refuse(websocket, exc, CLOSE_POLICY, f"invalid request: {exc.text or exc.detail}")
            return
        connection = _Connection(asyncio.get_running_loop())
        try:
            session = manager.open(params, connection)
        except CaptureRefused as refused:
            await _refuse(websocket, refused.error, refused.code, refused.reason, params.request.uuid)
            return
        try:
            await websocket.send_text(answer_json(session.opening_event()).decode())
            receiver = asyncio.ensure_future(_receive(websocket, manager, session, config))
            sender = asyncio.ensure_future(_send(websocket, connection))
            done, pending = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        except (WebSocketDisconnect, ConnectionError):
            pass
        except Exception:  # the session must end cleanly whatever failed
            log.exception("capture session %d failed", session.key)
            with contextlib.suppress(Exception):
                await websocket.close(CLOSE_INTERNAL, "internal error")
        finally:
            manager.close(session)

    return WebSocketRoute("/capture", capture)


async def _receive(websocket: WebSocket, manager: Any, session: Any, config: Config) -> None:
    """Frames and commands until the client goes, idles out, or breaks the rules."""
    settings = config.capture
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), settings.idle_timeout_s)
        except asyncio.TimeoutError:
            if session.complete:
                continue  # the kiosk has nothing more to send while its answer is being made
            await websocket.close(CLOSE_DONE, _reason(f"idle for {settings.idle_timeout_s:g} s"))
            return
        received_at = time.monotonic()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            if len(data) > settings.max_frame_bytes:
                await websocket.close(CLOSE_TOO_BIG, _reason(
                    f"frame too large: {len(data)} bytes, the limit is {settings.max_frame_bytes}"))
                return
            manager.frame(session, data, received_at)
            continue
        text = message.get("text")
        if text is None:
            continue
        try:
            payload = orjson.loads(text)
        except orjson.JSONDecodeError:
            payload = None
        manager.command(session, payload)


async def _send(websocket: WebSocket, connection: _Connection) -> None:
    """The session's events in order; returns after sending a close."""
    while True:
        kind, item = await connection.next()
        if kind == "close":
            code, reason = item
            await websocket.close(code, _reason(reason))
            return
        await websocket.send_text(answer_json(item).decode())
