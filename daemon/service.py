"""The glue between transports, the inference worker and the result store, and the server's main loop.

Every transport (HTTP, MQTT, the CLI's `analyze`) goes through `Service.submit`: a stored answer for the
same uuid and photos comes back without inference (idempotent redelivery); otherwise the request is
queued for the worker and its answer stored before it is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from daemon import metrics
from daemon.config import Config, ConfigError, redact_url
from daemon.errors import AnalysisError
from daemon.members import MemberKeys
from daemon.request import AnalyzeRequest
from daemon.store import ResultStore
from daemon.worker import Worker

log = logging.getLogger(__name__)

# How often expired results are purged while the daemon runs.
PURGE_INTERVAL_S = 3600.0


def _default_analyzer_factory(config: Config) -> Any:
    from daemon.pipeline import Analyzer  # imported late: it pulls in the inference backend

    return Analyzer(config)


class Service:
    """Store lookup, then the worker queue, then the store; used by every transport."""

    def __init__(
        self,
        config: Config,
        analyzer_factory: Callable[[Config], Any] | None = None,
        *,
        use_store: bool = True,
    ):
        self.config = config
        factory = analyzer_factory or _default_analyzer_factory
        self.worker = Worker(lambda: factory(config), config.worker.queue_size)
        self.store: ResultStore | None = None
        self.keys: MemberKeys | None = None
        if use_store:
            self.store = ResultStore(
                config.store.path, config.store.retention_days, keep_photos=config.store.keep_photos
            )
            key_dir = config.store.key_dir
            if key_dir is None and str(config.store.path) != ":memory:":
                key_dir = Path(config.store.path).expanduser().resolve().parent
            self.keys = MemberKeys(key_dir)
        self._lock = threading.Lock()
        # uuid -> (input hash, future) of requests queued or being analysed: a redelivery while the first
        # delivery is still in the queue shares its future instead of being analysed twice.
        self._in_flight: dict[str, tuple[str, Future]] = {}
        # Transport states for /healthz (e.g. {"mqtt": "connected"}), written by the transports.
        self.transport_status: dict[str, str] = {}
        # name -> a check that says why the daemon is degraded (None when it is not), for /healthz.
        self.health_checks: dict[str, Callable[[], str | None]] = {}
        # In a shared group, the MQTT bridge's fan-out of an erasure to the other daemons (docs/fleet.md).
        self.erasure_fan_out: Callable[[str], dict] | None = None
        self._purge_stop = threading.Event()
        self._purge_thread: threading.Thread | None = None
        from daemon.capture.manager import CaptureManager  # late: capture imports this module's types

        # Live capture sessions of every transport (docs/capture.md).
        self.capture = CaptureManager(self, config)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Build the Analyzer in the worker thread (raises what its construction raised)."""
        self.worker.start(timeout)
        if self.store is not None:
            self.store.purge()
            self._purge_thread = threading.Thread(target=self._purge_loop, name="store-purge", daemon=True)
            self._purge_thread.start()

    def stop_intake(self) -> None:
        self.worker.stop_intake()
        self.capture.stop_intake()

    def stop(self, timeout: float) -> bool:
        """Finish accepted requests within `timeout` seconds, then close the store."""
        finished = self.worker.stop(timeout)
        self._purge_stop.set()
        if self.store is not None:
            self.store.close()
        return finished

    def _purge_loop(self) -> None:
        while not self._purge_stop.wait(PURGE_INTERVAL_S):
            try:
                if self.store is not None:
                    self.store.purge()
            except Exception:  # a failed purge is retried next hour
                log.exception("purging expired results failed")

    # -- requests ---------------------------------------------------------------------------------

    def describe(self) -> dict:
        return {
            "analyzer": self.worker.describe(),
            "queue_depth": self.worker.depth(),
            "queue_size": self.worker.queue_size,
            "accepting": self.worker.accepting,
            "transports": dict(self.transport_status),
            "capture_sessions": self.capture.count(),
            "problems": self.problems(),
        }

    def problems(self) -> list[str]:
        """Why the daemon is degraded (e.g. its broker unreachable for too long); empty when it is not."""
        return [problem for check in list(self.health_checks.values()) if (problem := check())]

    def has_room(self) -> bool:
        return self.worker.has_room()

    def get_result_json(self, uuid: str) -> bytes | None:
        return self.store.get_json(uuid) if self.store is not None else None

    def member_history(self, member_id: str) -> list[dict]:
        """Every stored answer of one member (by id, hashed here), oldest first."""
        if self.store is None or self.keys is None:
            return []
        return self.store.member_history(self.keys.member_hash(member_id))

    def erase_member(self, member_id: str) -> int:
        """Erasure: every stored result of the member goes; how many there were."""
        if self.store is None or self.keys is None:
            return 0
        erased = self.store.erase_member(self.keys.member_hash(member_id))
        log.info("erased %d stored results of one member", erased)  # never the id: it is an e-mail
        return erased

    def erase_everywhere(self, member_id: str) -> dict:
        """An erasure asked of this daemon (HTTP DELETE /members/<id>, the kiosks' MQTT `erase`): here, and
        in a shared group on every other daemon too. `{"erased": N}` (this daemon's count), plus in a group
        what the fan-out did (`fleet`, `fleet_offline`: daemon/mqtt.py)."""
        result = {"erased": self.erase_member(member_id)}
        if self.erasure_fan_out is not None:
            result.update(self.erasure_fan_out(member_id))
        return result

    def submit(self, request: AnalyzeRequest) -> Future:
        """A future of the answer dict; it raises AnalysisError for a request that cannot be answered.

        Raises AnalysisError at once for a uuid conflict with a stored answer and for a full queue
        ("overload"). Blocking only on the store lookup (milliseconds): call it off the event loop.
        """
        kiosks = self.config.calibration.kiosks
        if request.kiosk is not None and request.kiosk not in kiosks:
            # Before the store: a stored uuid re-sent with an unknown kiosk is refused, not answered.
            raise AnalysisError("validation", f"unknown kiosk {request.kiosk!r}", text="invalid field: kiosk")
        input_hash = request.input_hash
        if self.store is not None:
            stored = self.store.lookup(request.uuid, input_hash)
            if stored is not None:
                metrics.count_store_hit()
                done: Future = Future()
                done.set_result(stored)
                return done
        with self._lock:
            current = self._in_flight.get(request.uuid)
            if current is not None and current[0] == input_hash:
                return current[1]
            inner = self.worker.submit(request)
            outer: Future = Future()
            if current is None:
                self._in_flight[request.uuid] = (input_hash, outer)
        inner.add_done_callback(lambda finished: self._finish(request, input_hash, finished, outer))
        return outer

    def analyze(self, request: AnalyzeRequest, timeout: float | None = None) -> dict:
        """Blocking `submit` (the CLI's path): the answer dict, or AnalysisError."""
        return self.submit(request).result(timeout)

    def _finish(self, request: AnalyzeRequest, input_hash: str, inner: Future, outer: Future) -> None:
        error = inner.exception()
        answer: dict | None = None
        if error is None:
            answer = inner.result()
            if self.store is not None:
                started = time.monotonic()
                photos = (request.front_image, request.side_image) if self.config.store.keep_photos else None
                member = self.keys.member_hash(request.id) if self.keys is not None else None
                try:
                    answer = self.store.put(request.uuid, input_hash, answer, photos, member=member)
                except AnalysisError as exc:
                    error = exc
                except Exception:  # an unwritable store must not lose the answer itself
                    log.exception("storing the result of %s failed", request.uuid)
                metrics.observe_stage("store", time.monotonic() - started)
        with self._lock:
            current = self._in_flight.get(request.uuid)
            if current is not None and current[1] is outer:
                del self._in_flight[request.uuid]
        if error is not None:
            outer.set_exception(error)
        else:
            outer.set_result(answer)


# -- the server -----------------------------------------------------------------------------------


def _make_uvicorn_server(app: Any, config: Config) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        # run_server owns SIGTERM/SIGINT: uvicorn must neither install handlers nor re-raise the signal
        # after shutting down (that would turn a clean stop into a death by signal, exit code != 0).
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[override]
            yield

    uv_config = uvicorn.Config(
        app,
        host=config.http.host,
        port=config.http.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(1, int(config.worker.stop_timeout_s)),
        server_header=False,
        # Live capture frames arrive as WebSocket messages (docs/capture.md). The session takes each as it
        # comes (newest wins); a few unread ones at most wait in uvicorn (its default 32 x 16 MB is half a
        # gigabyte per connection), and a client sending faster than it is read is slowed by TCP.
        ws_max_size=config.capture.max_frame_bytes,
        ws_max_queue=4,
    )
    return _Server(uv_config)


async def _serve(service: Service, config: Config, bridge: Any) -> int:
    from daemon.http import create_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    server = _make_uvicorn_server(create_app(service, config), config)

    async def serve_http() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits this way when it cannot bind; we still shut down cleanly
            raise RuntimeError(f"the HTTP server could not start (exit code {exc.code})") from None

    server_task = asyncio.ensure_future(serve_http())
    stop_task = asyncio.ensure_future(stop.wait())
    await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if server_task.done() and not stop.is_set():
        # uvicorn ended on its own: it could not bind, or it failed.
        exc = server_task.exception() if not server_task.cancelled() else None
        log.error("the HTTP server stopped unexpectedly%s", f": {exc!r}" if exc else "")
        exit_code = 1
    else:
        log.info("stopping: intake closed, finishing in-flight requests")
    deadline = time.monotonic() + config.worker.stop_timeout_s
    # Stop intake everywhere first, then let the worker drain what was accepted.
    if bridge is not None:
        bridge.stop_intake()
    service.stop_intake()
    server.should_exit = True
    # Keep a margin for publishing the last results and `offline`.
    margin = min(3.0, config.worker.stop_timeout_s / 4)
    finished = await asyncio.to_thread(service.worker.stop, max(0.0, deadline - time.monotonic() - margin))
    if not finished:
        log.warning("some requests were not finished before the stop deadline")
    await asyncio.wait({server_task}, timeout=max(0.1, deadline - time.monotonic() - margin / 2))
    if not server_task.done():
        server.force_exit = True
        await asyncio.wait({server_task}, timeout=1.0)
    if not server_task.done():
        server_task.cancel()
    stop_task.cancel()
    if bridge is not None:
        await asyncio.to_thread(bridge.stop, max(0.5, deadline - time.monotonic()))
    service.stop(0)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    return exit_code


def run_server(config: Config, analyzer_factory: Callable[[Config], Any] | None = None) -> int:
    """Worker, HTTP and (when configured) MQTT in one process until SIGTERM/SIGINT; the exit code.

    On SIGTERM: intake stops (HTTP refuses with 503, MQTT takes no new messages and leaves them with the
    broker), accepted requests finish, `offline` is published, and the process exits 0 within
    config.worker.stop_timeout_s.
    """
    _limit_malloc_arenas()
    service = Service(config, analyzer_factory)
    try:
        service.start()
    except Exception as exc:  # noqa: BLE001 - report any start failure as an exit code
        log.error("cannot start the analyzer: %s", exc)
        return 1
    bridge = None
    if config.mqtt.url:
        from daemon.mqtt import MqttBridge

        try:
            bridge = MqttBridge(service, config.mqtt)
        except ConfigError:
            service.stop(0)
            raise
        bridge.start()
    log.info(
        "serving HTTP on %s:%d%s", config.http.host, config.http.port,
        f" and MQTT {redact_url(config.mqtt.url or '')} under {config.mqtt.topic_prefix}" if bridge else "",
    )
    try:  # uvloop where it is installed (Linux): a faster event loop for the multi-megabyte bodies
        import uvloop

        return uvloop.run(_serve(service, config, bridge))
    except ImportError:
        return asyncio.run(_serve(service, config, bridge))


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each busy thread its own heap arena (up to 8 per core), and each keeps the megabytes of
    photos it once held: with HTTP threads, view threads and the worker, resident memory creeps up far
    beyond what is live. Two arenas keep it near the live size (as MALLOC_ARENA_MAX=2 would)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        if not os.environ.get("MALLOC_ARENA_MAX"):
            m_arena_max = -8  # from glibc's malloc.h
            libc.mallopt(m_arena_max, arenas)
        if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            # glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), so
            # after one big upload the next photo-sized buffers come from the heap and stay there. A
            # fixed threshold keeps every buffer over 1 MB in its own mapping, returned when freed.
            m_mmap_threshold = -3
            libc.mallopt(m_mmap_threshold, 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        pass


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc malloc_trim), after a burst of large uploads."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        if name:
            ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
