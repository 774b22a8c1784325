"""One inference worker thread that owns the Analyzer, fed by a bounded queue.

The Analyzer is constructed inside the worker thread: it owns the inference backend, and on a Jetson the
CUDA context must live in the thread that uses it. Transports only enqueue (`submit`) and wait on the
returned future; they never touch the backend.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon import metrics
from daemon.errors import AnalysisError

log = logging.getLogger(__name__)


class AnalyzerLike(Protocol):
    def analyze(self, request: Any) -> dict: ...

    def describe(self) -> dict: ...

    def close(self) -> None: ...


@dataclass
class _Job:
    request: Any
    future: Future
    enqueued_at: float = field(default_factory=time.monotonic)


class Worker:
    """A single thread draining a bounded queue of requests through one Analyzer."""

    def __init__(self, analyzer_factory: Callable[[], AnalyzerLike], queue_size: int, name: str = "inference"):
        self._factory = analyzer_factory
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self._name = name
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._accepting = False
        self._busy = 0
        self._room_listeners: list[Callable[[], None]] = []
        self._description: dict = {}
        # Live capture work (daemon/capture/): one task per session, newest replacing older, run only
        # when no analysis is queued. `_wake` is set whenever either kind of work arrives.
        self._live: OrderedDict[Hashable, Callable[[Any], None]] = OrderedDict()
        self._live_lock = threading.Lock()
        self._wake = threading.Event()

    # -- life cycle -------------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Start the thread and wait until the Analyzer is built; re-raises its construction error."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the analyzer was not ready within {timeout} s")
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        self._accepting = True

    def stop_intake(self) -> None:
        """Refuse new requests from now on; queued and running ones still finish."""
        self._accepting = False

    def stop(self, timeout: float) -> bool:
        """Stop intake, finish what was accepted within `timeout` seconds; True when all finished.

        Requests still queued at the deadline fail with an overload error (HTTP answers 503, MQTT
        leaves them unacknowledged so that the broker delivers them again after the restart).
        """
        self._accepting = False
        thread = self._thread
        if thread is None:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            # The sentinel queues behind every accepted request: they are all analysed first.
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        with self._live_lock:
            self._live.clear()
        self._wake.set()
        thread.join(max(0.0, deadline - time.monotonic()))
        abandoned = self._fail_queued("the daemon is shutting down; retry after it restarts")
        if abandoned:
            # The sentinel may not have fitted in the full queue: now there is room for it.
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._wake.set()
        finished = not thread.is_alive()
        if not finished:
            log.warning("inference worker still busy at the stop deadline (%d queued requests abandoned)", abandoned)
        return finished and abandoned == 0

    # -- intake -----------------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    def alive(self) -> bool:
        """The worker thread runs (False before start, and once it stopped or died)."""
        return self._thread is not None and self._thread.is_alive()

    def depth(self) -> int:
        return self._queue.qsize()

    def has_room(self) -> bool:
        return self._accepting and not self._queue.full()

    def describe(self) -> dict:
        """The Analyzer's own description (backend, models), captured in the worker thread at start."""
        return dict(self._description)

    def add_room_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (from the worker thread) each time a queue slot frees up."""
        self._room_listeners.append(listener)

    def submit(self, request: Any) -> Future:
        """Queue `request`; the future gives the answer dict or raises AnalysisError.

        Raises AnalysisError("overload") at once when the queue is full or the worker is stopping.
        """
        if not self._accepting:
            raise AnalysisError("overload", "the daemon is not accepting requests (starting or shutting down)")
        job = _Job(request, Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise AnalysisError(
                "overload", f"the analysis queue is full ({self.queue_size} requests waiting); retry shortly"
            ) from None
        metrics.set_queue_depth(self._queue.qsize())
        self._wake.set()
        return job.future

    def schedule_live(self, key: Hashable, task: Callable[[Any], None]) -> None:
        """Run `task(analyzer)` in the worker thread when no analysis is waiting (live capture frames).

        One task per key: scheduling again before it ran keeps one run (the task takes its newest frame
        itself). Analyses always go first, so live work slows down rather than delaying them.
        """
        if not self._accepting:
            return
        with self._live_lock:
            self._live[key] = task
        self._wake.set()

    def cancel_live(self, key: Hashable) -> None:
        with self._live_lock:
            self._live.pop(key, None)

    def live_pending(self) -> int:
        with self._live_lock:
            return len(self._live)

    def _next(self) -> _Job | None | Callable[[Any], None]:
        """The next job: a queued analysis (or the stop sentinel) first, else a live task, else wait."""
        while True:
            self._wake.clear()
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            with self._live_lock:
                if self._live:
                    return self._live.popitem(last=False)[1]
            self._wake.wait()

    # -- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            analyzer = self._factory()
            describe = getattr(analyzer, "describe", None)
            self._description = describe() if describe is not None else {}
        except Exception as exc:  # any construction failure is reported to start()
            # Missing models, a bad kiosk file, an unusable backend: start()'s caller states the reason in
            # one line; a traceback is for the unexpected.
            expected = isinstance(exc, (RuntimeError, ValueError, OSError))
            log.log(logging.DEBUG if expected else logging.ERROR, "the analyzer could not be started",
                    exc_info=True)
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        log.info("inference worker ready (%s)", self._description.get("backend", "unknown backend"))
        try:
            while True:
                job = self._next()
                if job is None:
                    break
                if not isinstance(job, _Job):
                    self._run_live(analyzer, job)
                    continue
                metrics.set_queue_depth(self._queue.qsize())
                self._notify_room()
                self._analyze(analyzer, job)
        finally:
            close = getattr(analyzer, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing must not mask the shutdown
                    log.exception("closing the analyzer failed")
            log.info("inference worker stopped")

    def _analyze(self, analyzer: AnalyzerLike, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        started = time.monotonic()
        metrics.observe_stage("queue_wait", started - job.enqueued_at)
        self._busy += 1
        metrics.set_in_flight(self._busy)
        try:
            answer = analyzer.analyze(job.request)
        except AnalysisError as exc:
            result: tuple[dict | None, BaseException | None] = (None, exc)
        except Exception as exc:  # one bad request must not stop the worker
            log.exception("analysis failed unexpectedly")
            result = (None, AnalysisError("internal", f"unexpected {type(exc).__name__} during analysis"))
        else:
            result = (answer, None)
        finally:
            self._busy -= 1
            metrics.set_in_flight(self._busy)
            metrics.observe_stage("analyze", time.monotonic() - started)
        answer, error = result
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(answer)

    def _run_live(self, analyzer: AnalyzerLike, task: Callable[[Any], None]) -> None:
        try:
            task(analyzer)
        except Exception:  # one session's bad frame must not stop the worker
            log.exception("live capture task failed")

    def _notify_room(self) -> None:
        for listener in list(self._room_listeners):
            try:
                listener()
            except Exception:  # a transport's listener must not stop the worker
                log.exception("room listener failed")

    def _fail_queued(self, detail: str) -> int:
        count = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(AnalysisError("overload", detail))
                count += 1
        metrics.set_queue_depth(self._queue.qsize())
        return count
