"""One capture session: frames in (newest wins), guide events out, front then side captured, then the
request for the full analysis. Knows no transport: events go to a `SessionOutput`, frames come from
whichever transport holds the session (daemon/capture/websocket.py, daemon/capture/mqtt.py).

Threads: `add_frame`, `command` and `close` run on the transport's side; `run_pending` runs in the
inference worker (the only thread that touches the models and the tracker). One lock guards the state
both sides touch.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from calibration.kiosk import choose_intrinsics
from daemon import guidance, lift, metrics, render
from daemon.capture import texts
from daemon.capture.guide import VIEWS, Candidate, FrameStats, GuideSettings, Hold, conditions
from daemon.capture.tracker import PoseTracker, TrackedFrame
from daemon.config import CaptureConfig, Config
from daemon.errors import AnalysisError
from daemon.imageio import decode_upright
from daemon.request import AnalyzeRequest, parse_request

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
# A one-byte stand-in for the photos while the session's fields are validated: the request's own parser
# then checks id, uuid, height, ... exactly as for POST /analyze (the real photos replace it later).
_PLACEHOLDER_PHOTO = "AA=="
# Reasons (WebSocket close reasons, MQTT `closed` events) are short: a close frame holds 123 bytes.
MAX_REASON_BYTES = 123


class SessionOutput(Protocol):
    """Where a session's events go; both methods may be called from any thread."""

    def send(self, event: dict) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


@dataclass
class SessionParams:
    request: AnalyzeRequest  # the fields of the final request, photos still placeholders
    lang: str = "en"
    still: bool = False


def parse_session_params(values: Mapping[str, Any]) -> SessionParams:
    """The session's fields (query parameters or the MQTT start message); AnalysisError(validation) says
    what is wrong, in the request's own words."""
    fields = {key: value for key, value in values.items() if key not in ("forigimg", "sorigimg")}
    request = parse_request({**fields, "forigimg": _PLACEHOLDER_PHOTO, "sorigimg": _PLACEHOLDER_PHOTO})
    lang = str(values.get("lang") or "en").lower()
    if lang not in texts.LANGUAGES:
        raise AnalysisError("validation", f"lang must be one of {', '.join(texts.LANGUAGES)}, got {lang!r}",
                            text="invalid field: lang")
    still = str(values.get("still") or "0").lower() in ("1", "true", "yes", "on")
    return SessionParams(request=request, lang=lang, still=still)


def guide_settings(settings: CaptureConfig) -> GuideSettings:
    return GuideSettings(
        min_height_fraction=settings.min_height_fraction, max_offset_fraction=settings.max_offset_fraction,
        still_tolerance=settings.still_tolerance, hold_s=settings.hold_s,
    )


@dataclass
class _Frame:
    index: int
    data: bytes
    received_at: float  # time.monotonic()
    still_view: str | None = None  # set when this binary message is a still for that view


def _round_points(points, visibility) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1), round(float(v), 2)] for (x, y), v in zip(points, visibility)]


class CaptureSession:
    """The state of one kiosk's capture; see docs/capture.md for the events."""

    def __init__(self, key: int, params: SessionParams, config: Config, output: SessionOutput,
                 on_complete: Callable[[CaptureSession, AnalyzeRequest], None]):
        self.key = key
        self.params = params
        self.config = config
        self.settings = config.capture
        self.output = output
        self._on_complete = on_complete
        self._lock = threading.Lock()
        self._pending: _Frame | None = None
        self._pending_still: _Frame | None = None
        self._expect_still: str | None = None
        self.frames_received = 0
        self.dropped = 0
        self.processed = 0
        self._view_index = 0
        self._photos: dict[str, Candidate] = {}
        self._latest: Candidate | None = None  # the newest processed frame (for the capture command)
        self._still_requested = False
        self.closed = False
        self.complete = False
        self._hold = Hold(guide_settings(self.settings))
        self._tracker = PoseTracker(
            min_score=config.pipeline.min_detection_score, min_presence=config.pipeline.min_pose_presence,
            detect_every=self.settings.detect_every,
        )

    @property
    def uuid(self) -> str:
        return self.params.request.uuid

    @property
    def view(self) -> str | None:
        return VIEWS[self._view_index] if self._view_index < len(VIEWS) else None

    def opening_event(self) -> dict:
        return {
            "event": "session", "protocol": PROTOCOL_VERSION, "uuid": self.uuid, "views": list(VIEWS),
            "view": self.view, "lang": self.params.lang, "still": self.params.still,
            "hold_s": self.settings.hold_s, "max_sessions": self.settings.max_sessions,
        }

    # -- the transport's side ---------------------------------------------------------------------

    def add_frame(self, data: bytes, received_at: float | None = None) -> bool:
        """Take one binary message; True when the worker has something new to do for this session.

        Newest wins: a live frame still waiting when the next arrives is dropped (and counted).
        """
        received_at = time.monotonic() if received_at is None else received_at
        with self._lock:
            index = self.frames_received
            self.frames_received += 1
            if self.closed or self.complete:
                return False
            if self._expect_still is not None:
                self._pending_still = _Frame(index, data, received_at, self._expect_still)
                self._expect_still = None
                return True
            if self._pending is not None:
                self.dropped += 1
                metrics.count_capture_frame("dropped")
            self._pending = _Frame(index, data, received_at)
            return True

    def command(self, payload: Any) -> None:
        """A kiosk command (a parsed JSON value); unknown or malformed ones get a non-fatal error event.

        Commands only change the state: none needs the models, so none waits for the worker."""
        name = payload.get("command") if isinstance(payload, dict) else None
        if name == "restart":
            with self._lock:
                if self.complete:
                    self.send_error(AnalysisError("validation", "the session is complete: open a new one with a new uuid"))
                    return
                self._view_index = 0
                self._photos.clear()
                self._hold.reset()
                self._still_requested = False
                view = self.view
            self.output.send({"event": "restarted", "view": view})
            return
        if name == "capture":
            with self._lock:
                candidate, view = self._latest, self.view
                if candidate is None or view is None:
                    reason = "no frame has been processed yet" if view is not None else "both views are taken"
                    self.send_error(AnalysisError("validation", f"cannot capture now: {reason}"))
                    return
                self._capture(view, candidate, "command")
            return
        if name == "still":
            view = payload.get("view")
            if view not in VIEWS:
                self.send_error(AnalysisError("validation", "the still command needs \"view\": \"front\" or \"side\""))
                return
            with self._lock:
                self._expect_still = view
            return
        self.send_error(AnalysisError(
            "validation", "unknown command: send {\"command\": \"restart\" | \"capture\" | \"still\"}",
            text="invalid command",
        ))

    def close(self) -> None:
        """The transport is gone: drop the pending frames, free the tracker's state."""
        with self._lock:
            self.closed = True
            self._pending = self._pending_still = None
            self._latest = None
            self._photos.clear()
            self._hold.reset()

    def send_error(self, error: AnalysisError, frame: int | None = None, fatal: bool = False) -> None:
        metrics.count_error(error.kind)
        event: dict = {"event": "error", "fatal": fatal, "error": error.to_answer(self.uuid)}
        if frame is not None:
            event["frame"] = frame
        self.output.send(event)

    # -- the worker's side ------------------------------------------------------------------------

    def run_pending(self, analyzer: Any) -> None:
        """Process this session's newest still and newest frame (called in the inference worker)."""
        with self._lock:
            still, frame = self._pending_still, self._pending
            self._pending_still = self._pending = None
            if self.closed:
                return
        backend = analyzer.live_backend(self.settings.landmark, self.settings.threads)
        if still is not None:
            self._process_still(backend, still)
        if frame is not None:
            self._process_frame(backend, analyzer, frame)

    def _decode(self, frame: _Frame, what: str):
        decoded = decode_upright(frame.data, f"{what} {frame.index}", self.config.pipeline.max_pixels,
                                 self.settings.decode_max_side)
        pixels, _ = render.fit_within(decoded.pixels, self.settings.decode_max_side)
        return pixels, decoded.photo_size

    def _stats(self, tracked: TrackedFrame, pixels) -> FrameStats:
        person = tracked.person
        if person is None:
            return FrameStats(None, None)
        gray = guidance.person_gray(person, pixels, pixels.shape[1] / person.image_size[0])
        if gray is None:
            return FrameStats(None, None)
        return FrameStats(guidance.brightness(gray), guidance.sharpness(gray))

    def _distance(self, analyzer: Any, tracked: TrackedFrame) -> tuple[float | None, float | None]:
        """The person's distance and the standing mark's (mm) when the session's kiosk is calibrated."""
        kiosk_name = self.params.request.kiosk or self.config.calibration.default_kiosk
        kiosk = analyzer.kiosks.get(kiosk_name) if kiosk_name else None
        if kiosk is None or kiosk.placement is None or tracked.person is None:
            return None, None
        intrinsics = choose_intrinsics(tracked.person.image_size, kiosk,
                                       default_vfov_deg=self.config.calibration.default_vfov_deg)
        try:
            _, camera = lift.camera_frame_mm(
                tracked.person, intrinsics, self.params.request.height_cm, None,
                self.config.pipeline.default_height_cm, placement=kiosk.placement,
            )
        except (ValueError, ArithmeticError):
            return None, None
        measured = camera.get("feet_floor_distance_mm")
        if measured is None and camera.get("scale_source") == "height":
            measured = camera.get("distance_from_height_mm")
        return measured, kiosk.placement.standing_distance_mm

    def _process_frame(self, backend: Any, analyzer: Any, frame: _Frame) -> None:
        try:
            pixels, photo_size = self._decode(frame, "frame")
        except AnalysisError as exc:
            self.send_error(exc, frame.index)
            return
        now = time.monotonic()
        tracked = self._tracker.step(backend, pixels, photo_size, now)
        stats = self._stats(tracked, pixels)
        distance_mm, mark_mm = self._distance(analyzer, tracked)
        with self._lock:
            view = self.view
            if self.closed or view is None:
                return
            codes = conditions(view, tracked.person, tracked.other_boxes, stats, self._hold.settings,
                               distance_mm, mark_mm)
            ready = not codes
            candidate = Candidate(frame.index, frame.data, stats.sharpness or 0.0)
            self._latest = candidate
            previous_start = self._hold.started_at
            countdown = self._hold.update(ready, tracked.person, frame.received_at, candidate)
            if self._hold.started_at != previous_start:
                self._still_requested = False
            if ready:
                codes = ["hold_still"]
            self.processed += 1
            event = self._guide_event(frame, view, ready, codes, countdown, tracked, photo_size)
            self.output.send(event)
            metrics.count_capture_frame("processed")
            metrics.observe_guide_latency(event["latency_ms"] / 1000)
            if countdown == 0.0 and self._hold.best is not None:
                if self.params.still:
                    if not self._still_requested:
                        self._still_requested = True
                        self.output.send({"event": "take_still", "view": view, "frame": frame.index})
                else:
                    self._capture(view, self._hold.best, "auto")

    def _guide_event(self, frame: _Frame, view: str, ready: bool, codes: list[str], countdown: float | None,
                     tracked: TrackedFrame, photo_size: tuple[int, int]) -> dict:
        person = None
        if tracked.person is not None:
            points = tracked.smoothed_px if tracked.smoothed_px is not None else tracked.person.keypoints_px
            person = {
                "box": [round(float(v), 1) for v in tracked.person.box],
                "keypoints": _round_points(points, tracked.person.visibility),
                "score": round(float(tracked.person.pose_flag), 3),
            }
        return {
            "event": "guide", "frame": frame.index, "view": view, "ready": ready,
            "messages": [texts.message(code, self.params.lang) for code in codes],
            "countdown": None if countdown is None else round(countdown, 2),
            "dropped": self.dropped,
            "latency_ms": round((time.monotonic() - frame.received_at) * 1000, 1),
            "image_size": list(photo_size),
            "person": person,
            "people": tracked.people,
        }

    def _process_still(self, backend: Any, still: _Frame) -> None:
        try:
            pixels, photo_size = self._decode(still, "still")
        except AnalysisError as exc:
            self.send_error(exc, still.index)
            return
        # A still comes from another camera: a fresh detection, not the preview's tracked ROI.
        probe = PoseTracker(min_score=self._tracker.min_score, min_presence=self._tracker.min_presence,
                            detect_every=1)
        tracked = probe.step(backend, pixels, photo_size, time.monotonic())
        if tracked.person is None:
            self.send_error(AnalysisError("processing", f"no person found in the {still.still_view} still"), still.index)
            return
        stats = self._stats(tracked, pixels)
        with self._lock:
            if self.closed or self.complete or still.still_view is None:
                return
            self._capture(still.still_view, Candidate(still.index, still.data, stats.sharpness or 0.0), "still")

    def _capture(self, view: str, candidate: Candidate, source: str) -> None:
        """Take `candidate` as `view`'s photo (lock held); after the last view, hand over the request."""
        self._photos[view] = candidate
        self._hold.reset()
        self._still_requested = False
        while self.view is not None and self.view in self._photos:
            self._view_index += 1
        next_view = self.view
        metrics.count_capture_view(view, source)
        self.output.send({
            "event": "captured", "view": view, "frame": candidate.frame, "source": source,
            "sharpness": round(candidate.sharpness, 1), "next": next_view,
        })
        if next_view is None and not self.complete:
            self.complete = True
            self._pending = self._pending_still = None
            request = dataclasses.replace(
                self.params.request, front_image=self._photos["front"].data, side_image=self._photos["side"].data,
            )
            self._on_complete(self, request)
