"""The daemon's capture sessions: the session limit shared by every transport, the live frames handed to
the inference worker (below analyses), and the final analysis of each completed session through the
Service (store, idempotency by uuid), its answer published to the result listeners (MQTT) too.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from daemon import metrics
from daemon.capture.session import CaptureSession, SessionOutput, SessionParams
from daemon.config import Config
from daemon.errors import AnalysisError
from daemon.request import AnalyzeRequest

if TYPE_CHECKING:
    from daemon.service import Service

log = logging.getLogger(__name__)

# How often a captured pair retries a full analysis queue.
QUEUE_RETRY_S = 0.5

# WebSocket close codes (RFC 6455), also carried in MQTT `closed` events.
CLOSE_DONE = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013


class CaptureRefused(Exception):
    """A session that cannot start: the error for the client, and the close code and reason."""

    def __init__(self, error: AnalysisError, code: int, reason: str):
        super().__init__(reason)
        self.error, self.code, self.reason = error, code, reason


class CaptureManager:
    """Opens and closes sessions (up to capture.max_sessions), schedules their frames, runs their analysis."""

    def __init__(self, service: Service, config: Config):
        self.service = service
        self.config = config
        self.settings = config.capture
        self._lock = threading.Lock()
        self._sessions: dict[int, CaptureSession] = {}
        self._keys = itertools.count(1)
        self._accepting = True
        # Called with (uuid, answer-or-error dict) when a session's analysis ends (the MQTT result topic).
        self.result_listeners: list[Callable[[str, dict], None]] = []

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def stop_intake(self) -> None:
        """Refuse new sessions and end the open ones (their analyses already queued still finish)."""
        self._accepting = False
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            if not session.complete:
                session.output.close(CLOSE_GOING_AWAY, "daemon shutting down")

    def open(self, params: SessionParams, output: SessionOutput) -> CaptureSession:
        """A new session; raises CaptureRefused when capture is off, the daemon stops, or the limit is reached."""
        if not self.settings.enabled:
            raise CaptureRefused(AnalysisError("validation", "live capture is disabled (capture.enabled = false)",
                                               text="capture disabled"), CLOSE_POLICY, "live capture is disabled")
        kiosk = params.request.kiosk
        if kiosk is not None and kiosk not in self.config.calibration.kiosks:
            error = AnalysisError("validation", f"unknown kiosk {kiosk!r}", text="invalid field: kiosk")
            raise CaptureRefused(error, CLOSE_POLICY, "invalid request: invalid field: kiosk")
        if not self._accepting or not self.service.worker.accepting:
            raise CaptureRefused(AnalysisError("overload", "the daemon is shutting down"), CLOSE_GOING_AWAY,
                                 "daemon shutting down")
        with self._lock:
            running = len(self._sessions)
            if running >= self.settings.max_sessions:
                reason = (f"too many capture sessions ({running} running, limit capture.max_sessions = "
                          f"{self.settings.max_sessions}); retry later")
                raise CaptureRefused(AnalysisError("overload", reason), CLOSE_TRY_LATER, reason)
            session = CaptureSession(next(self._keys), params, self.config, output, self._complete)
            self._sessions[session.key] = session
            metrics.set_capture_sessions(len(self._sessions))
        log.info("capture session %d opened", session.key)
        return session

    def close(self, session: CaptureSession) -> None:
        """Forget the session: its pending frames, its place in the worker, its slot in the limit."""
        session.close()
        self.service.worker.cancel_live(session.key)
        with self._lock:
            removed = self._sessions.pop(session.key, None)
            metrics.set_capture_sessions(len(self._sessions))
        if removed is not None:
            log.info("capture session %d closed (%d frames, %d processed, %d dropped)", session.key,
                     session.frames_received, session.processed, session.dropped)

    def frame(self, session: CaptureSession, data: bytes, received_at: float | None = None) -> None:
        if session.add_frame(data, received_at):
            self.service.worker.schedule_live(session.key, session.run_pending)

    def command(self, session: CaptureSession, payload: Any) -> None:
        session.command(payload)

    # -- the final analysis -----------------------------------------------------------------------

    def _complete(self, session: CaptureSession, request: AnalyzeRequest) -> None:
        """Both views are taken (called with the session's lock held): submit off this thread."""
        session.output.send({"event": "analysing", "uuid": session.uuid})
        deadline = time.monotonic() + self.settings.analysis_wait_s
        threading.Thread(target=self._submit, args=(session, request, deadline), name="capture-submit",
                         daemon=True).start()

    def _submit(self, session: CaptureSession, request: AnalyzeRequest, deadline: float) -> None:
        metrics.count_request("capture")
        while True:
            try:
                future = self.service.submit(request)
                break
            except AnalysisError as exc:
                if exc.kind == "overload" and time.monotonic() < deadline and self.service.worker.accepting:
                    time.sleep(QUEUE_RETRY_S)
                    continue
                self._deliver(session, request.uuid, None, exc)
                return
        future.add_done_callback(lambda done: self._finished(session, request.uuid, done))

    def _finished(self, session: CaptureSession, uuid: str, done: Future) -> None:
        error = done.exception()
        self._deliver(session, uuid, None if error is not None else done.result(), error)

    def _deliver(self, session: CaptureSession, uuid: str, answer: dict | None, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, AnalysisError):
            log.error("capture analysis failed unexpectedly: %r", error)
            error = AnalysisError("internal", f"unexpected {type(error).__name__} during analysis")
        payload = answer if error is None else error.to_answer(uuid)  # type: ignore[union-attr]
        for listener in list(self.result_listeners):
            try:
                listener(uuid, payload)
            except Exception:  # a transport's listener must not lose the session's own answer
                log.exception("capture result listener failed")
        if error is None:
            session.output.send({"event": "result", "answer": answer})
        else:
            metrics.count_error(error.kind)  # type: ignore[union-attr]
            session.output.send({"event": "error", "fatal": True, "error": payload})
        session.output.close(CLOSE_DONE, "done")
