"""One request, straight through: for each photo decode -> detect -> landmarks -> measures -> render ->
encode -> lift -> guidance, then grades and the answer. `Analyzer` owns the models; it is built in the
inference worker's own thread.

Each photo runs all of its steps in its own thread, side by side with the other (the JPEG decoder,
ONNX Runtime with spinning off, and OpenCV's drawing and encoding all release the GIL), so neither waits
for the other between steps.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
import pybase64

from calibration.gravity import exif_tilt
from calibration.intrinsics import Intrinsics
from calibration.kiosk import Kiosk, choose_intrinsics, load_kiosk
from calibration.roll import CameraTilt, LineSegments, line_segments, tilt_from_segments
from daemon import facing, grades, guidance, leveling, lift, measures, metrics, pose, render
from daemon.answer import ViewResult, build_answer
from daemon.config import Config
from daemon.errors import AnalysisError
from daemon.imageio import Decoded, decode_upright
from daemon.layouts import head_top_px, layout22
from daemon.request import AnalyzeRequest
from daemon.views import PhotoPoses, ViewPose
from engines.backends import open_backend, select_backend
from engines.models import model_paths, model_precision, model_sha256

log = logging.getLogger(__name__)

# Longest side of the reduced copy that the guidance checks (brightness, blur) look at.
GUIDANCE_SIDE = 512
# Smallest long side of a reduced-scale decode: the 256 px landmark crop then still samples a standing
# person's ROI (about 3/4 of the photo's height) at 3x or more.
MIN_DECODE_SIDE = 1024
# Off the kiosk's standing mark by more than this share of its distance: "too far" / "too close".
DISTANCE_TOLERANCE = 0.15


@dataclass
class _Photo:
    name: str  # "Front" / "Side", as the seed's messages say it
    kind: str  # "front" / "side"
    data: bytes
    decoded: Decoded | None = None
    poses: PhotoPoses | None = None
    measures: dict | None = None
    intrinsics: Intrinsics | None = None
    tilt: CameraTilt | None = None
    result: ViewResult | None = None
    messages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _stage(name: str, timings: dict[str, float]):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - start


class Analyzer:
    """Holds the backend and the settings; `analyze` turns one request into one answer."""

    def __init__(self, config: Config):
        self.config = config
        self.backend_name, self.backend_reason = select_backend(config.engine)
        # ONNX Runtime runs int8 from the int8 files; TensorRT quantizes the fp32 ones itself.
        self.model_precision = model_precision(self.backend_name, config.engine.precision)
        paths = model_paths(config.models.dir, config.models.landmark, self.model_precision)
        self.backend = open_backend({"detector": paths["detector"], "landmark": paths["landmark"]}, config.engine)
        # The answer's version names the files that ran: "_int8" marks the quantized ones.
        tag = "_int8" if self.model_precision == "int8" else ""
        self.model_versions = {
            f"detector{tag}": model_sha256(paths["detector"]),
            f"landmark_{config.models.landmark}{tag}": model_sha256(paths["landmark"]),
        }
        # Kiosk files are read once, at start: a broken one stops the daemon with the reason.
        self.kiosks: dict[str, Kiosk] = {name: load_kiosk(path) for name, path in config.calibration.kiosks.items()}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="view")
        self._live_backends: dict[str, object] = {}
        # Line finding for the camera's roll runs beside each photo's pose stage (it needs no landmarks).
        self._lines_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lines")
        # Timings of the last request, by stage (the benchmark prints them).
        self.last_timings: dict[str, float] = {}
        log.info("analyzer ready: %s (%s); models %s", self.backend.description, self.backend_reason, self.model_versions)

    def describe(self) -> dict:
        return {
            "backend": self.backend_name,
            "backend_reason": self.backend_reason,
            "backend_description": self.backend.description,
            "landmark_model": self.config.models.landmark,
            "precision": self.config.engine.precision,
            "model_files": self.model_precision,  # fp32 | int8: the ONNX files the backend opened
            "models": self.model_versions,
            "flip_test": self.config.pipeline.flip_test,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._lines_pool.shutdown(wait=True)
        self.backend.close()
        for backend in self._live_backends.values():
            backend.close()

    def live_backend(self, landmark: str, threads: int):
        """The live capture path's backend (detector + the `landmark` model), opened on first use in the
        worker thread: daemons that never see a capture session do not load the second model."""
        backend = self._live_backends.get(landmark)
        if backend is None:
            paths = model_paths(self.config.models.dir, landmark)
            engine = dataclasses.replace(self.config.engine, threads=threads)
            backend = open_backend({"detector": paths["detector"], "landmark": paths["landmark"]}, engine)
            self._live_backends[landmark] = backend
        return backend

    def estimate(self, decoded: Decoded, timings: dict[str, float] | None = None,
                 roll_deg: float | None = None) -> PhotoPoses:
        settings = self.config.pipeline
        return pose.estimate(
            self.backend, decoded.pixels, min_score=settings.min_detection_score,
            min_presence=settings.min_pose_presence, flip_test=settings.flip_test, photo_size=decoded.photo_size,
            timings=timings, roll_deg=roll_deg,
        )

    def bare_model_pass(self) -> None:
        """The model passes of a one-person pair and nothing around them, both photos side by side as
        `analyze` runs them (the yardstick of the benchmarks)."""
        flip_test = self.config.pipeline.flip_test
        list(self._pool.map(lambda _: pose.model_passes(self.backend, flip_test), range(2)))

    def decode_min_side(self) -> int:
        """How large a reduced JPEG decode must stay: the annotated photo's size, and enough for the
        landmark crop (a standing person fills most of a kiosk photo). 0 = always full size."""
        settings = self.config.pipeline
        if not settings.reduced_decode or settings.annotated_max_side <= 0:
            return 0
        return max(settings.annotated_max_side, MIN_DECODE_SIDE)

    def analyze(self, request: AnalyzeRequest) -> dict:
        total_start = time.perf_counter()
        kiosk_name = request.kiosk or self.config.calibration.default_kiosk
        if kiosk_name is not None and kiosk_name not in self.kiosks:
            raise AnalysisError("validation", f"unknown kiosk {kiosk_name!r}", text="invalid field: kiosk")
        kiosk = self.kiosks.get(kiosk_name) if kiosk_name else None
        front = _Photo("Front", "front", request.front_image)
        side = _Photo("Side", "side", request.side_image)

        # Each photo goes through all of its own steps in its own thread: no stage waits for the other
        # photo. The front photo's error, if any, is the one reported.
        futures = [self._pool.submit(self._analyze_photo, photo, request, kiosk) for photo in (front, side)]
        # Both finish before either error is raised, so no photo of this request is still being worked on
        # when the next request starts.
        errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error

        timings = {stage: max(front.timings.get(stage, 0.0), side.timings.get(stage, 0.0))
                   for stage in (*front.timings, *side.timings)}
        with _stage("answer", timings):
            answer = build_answer(
                uuid=request.uuid,
                front=front.result,
                side=side.result,
                front_measures=front.measures,
                side_measures=side.measures,
                far_grade=grades.grade(front.measures),
                sar_grade=grades.grade(side.measures),
                side_part=measures.side_part(side.poses.main),
                sar_fwd_head=measures.forward_head_flag(side.measures),
                message=self._messages(request, front, side),
                model_versions=self.model_versions,
            )
        timings["total"] = time.perf_counter() - total_start
        for stage, seconds in timings.items():
            metrics.observe_stage(stage, seconds)
        self.last_timings = timings
        return answer

    def _analyze_photo(self, photo: _Photo, request: AnalyzeRequest, kiosk: Kiosk | None) -> None:
        """decode -> pose -> measures -> render -> lift -> guidance for one photo, filling `photo`."""
        settings = self.config.pipeline
        timings = photo.timings
        with _stage("decode", timings):
            photo.decoded = decode_upright(photo.data, photo.kind, settings.max_pixels, self.decode_min_side())
        # A roll known before the photo is looked at (the kiosk's calibration, the phone's gravity) goes
        # to the first pose pass, the detector seeing the photo level; the lines are then not needed.
        known = known_tilt(kiosk, photo.decoded)
        known_roll = known.roll_deg if known is not None and known.applied else None
        lines = None
        if settings.level_from_lines and known_roll is None:
            lines = self._lines_pool.submit(line_segments, photo.decoded.pixels)
        try:
            photo.poses = self.estimate(photo.decoded, timings, known_roll)  # records "detect" and "landmarks"
        finally:
            # Wait for the lines even on an error: nothing of this photo may outlive its request. The
            # "lines" stage is the time line finding adds after the pose stage.
            with _stage("lines", timings):
                found = lines.result() if lines is not None else None
        if not photo.poses.people:
            raise AnalysisError("processing", f"no person found in the {photo.kind} image")
        with _stage("level", timings):
            # The camera: the kiosk's calibration, else the photo's EXIF focal length, else a typical phone.
            photo.intrinsics = choose_intrinsics(
                photo.decoded.photo_size, kiosk, exif_source=photo.decoded.exif,
                default_vfov_deg=self.config.calibration.default_vfov_deg,
            )
            photo.tilt = camera_tilt(photo.decoded, photo.poses, photo.intrinsics, known, found)
        second_look = relevel_roll(photo.tilt, settings.relevel_min_roll_deg)
        if second_look is not None:
            with _stage("relevel", timings):
                levelled = self.estimate(photo.decoded, roll_deg=second_look)
                if levelled.people:
                    photo.poses = levelled
        with _stage("measures", timings):
            # World landmarks carry a left/right bias that only flip averaging cancels (accuracy.md).
            photo.measures = measure_level(photo.poses.main, photo.kind, photo.intrinsics, photo.tilt,
                                           use_world=settings.flip_test)
            # A back view in the front slot (or a front or back view in the side slot) gives no measures
            # rather than ones read with left and right swapped.
            verdict = facing.facing(photo.poses.main)
            wrong_view = facing.wrong_view_reason(photo.kind, verdict)
            if wrong_view is not None:
                photo.measures = facing.withhold(photo.measures, wrong_view)
        with _stage("render", timings):
            # One reduced copy at the annotated size serves the drawing and the guidance checks.
            display, _ = render.fit_within(photo.decoded.pixels, settings.annotated_max_side)
            roll = photo.tilt.roll_deg if photo.tilt.applied and photo.tilt.roll_deg is not None else 0.0
            annotated, scale = render.render_annotated(
                display, photo.poses.main, photo.measures, photo.kind, settings.annotated_max_side, roll
            )
        with _stage("encode", timings):
            jpeg = self._encode(annotated, photo.kind)
        with _stage("lift", timings):
            photo.result = self._view_result(photo, request, kiosk, jpeg, scale)
        with _stage("guidance", timings):
            small, _ = render.fit_within(display, GUIDANCE_SIDE)
            small_scale = small.shape[1] / photo.decoded.photo_size[0]
            photo.messages = guidance.photo_guidance(photo.name, photo.poses, small, small_scale)
            photo.messages += guidance.tilt_guidance(photo.name, photo.tilt)
            facing_camera = photo.kind == "front" and verdict.direction == "toward"
            arms = facing.arms_posture(photo.poses.main) if facing_camera else None
            photo.messages += guidance.facing_guidance(photo.name, photo.kind, verdict, arms)
            if kiosk is not None and kiosk.placement is not None:
                photo.messages += distance_guidance(photo.name, photo.result.camera, kiosk.placement.standing_distance_mm)

    def _messages(self, request: AnalyzeRequest, front: _Photo, side: _Photo) -> list[str]:
        messages = front.messages + side.messages + guidance.pair_guidance(front.poses, side.poses)
        for name, measure in {**front.measures, **side.measures}.items():
            if measure.status == "not_measurable":
                messages.append(f"The measure {name} could not be taken: {measure.reason}.")
        messages += request.notes
        # Keep the order, drop repeats.
        return list(dict.fromkeys(messages))

    def _encode(self, image: np.ndarray, kind: str) -> str:
        """The annotated photo as base64 JPEG."""
        quality = self.config.pipeline.annotated_jpeg_quality
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise AnalysisError("internal", f"could not encode the annotated {kind} photo")
        return pybase64.b64encode(encoded).decode("ascii")

    def _view_result(self, photo: _Photo, request: AnalyzeRequest, kiosk: Kiosk | None, jpeg_b64: str,
                     scale: float) -> ViewResult:
        person = photo.poses.main
        top = head_top_px(person)
        points_mm, camera = lift.camera_frame_mm(
            person, photo.intrinsics, request.height_cm, None, self.config.pipeline.default_height_cm,
            placement=kiosk.placement if kiosk else None,
        )
        # The 22-point layout in 3D: derived points as in 2D; the vertex from the lift's height model.
        top3d = np.asarray(camera.pop("head_top_mm"), dtype=np.float64)
        camera["tilt"] = photo.tilt.to_dict()
        return ViewResult(
            poses=photo.poses,
            head_top_px=top,
            points3d_mm=layout22(person, points=points_mm, head_top=top3d),
            camera=camera,
            annotated_jpeg_b64=jpeg_b64,
            annotated_scale=scale,
        )


def known_tilt(kiosk: Kiosk | None, decoded: Decoded) -> CameraTilt | None:
    """How the camera was held, as known before the photo is looked at: a kiosk's calibrated placement,
    else the gravity the phone recorded in the photo's EXIF (calibration/gravity.py; read from the tags
    the decode already has), `applied` when it gives a roll. None when neither says anything; an EXIF
    gravity that cannot be used comes back unapplied, with its reason."""
    if kiosk is not None and kiosk.placement is not None:
        placement = kiosk.placement
        return CameraTilt(placement.roll_deg, placement.pitch_deg, "kiosk", 1.0, applied=True)
    recorded = exif_tilt(decoded.exif, decoded.image_format)
    if recorded is not None:
        recorded.applied = recorded.confident
    return recorded


def camera_tilt(decoded: Decoded, poses: PhotoPoses, intrinsics: Intrinsics, known: CameraTilt | None,
                lines: LineSegments | None) -> CameraTilt:
    """How the camera was held: the tilt known before the photo was looked at (known_tilt: a kiosk's
    placement, a phone's EXIF gravity) when it gives a roll, else the photo's own straight lines
    (calibration/roll.py; `lines`: the photo's segments, None when reading them is switched off), the
    people's boxes left out. Only a confident roll is applied; pitch read from EXIF or lines is reported
    (and warned about), not applied, since the correction rests on the photo's intrinsics, which for a
    phone are read from EXIF or assumed, not calibrated (a kiosk's placement pitch is applied)."""
    if known is not None and known.applied:
        return known
    if lines is None:
        # Gravity recorded but unusable says why; otherwise nothing was read.
        return known or CameraTilt(None, None, "none", 0.0, note="not read (pipeline.level_from_lines = false)")
    scale = decoded.scale
    boxes = [tuple(v * scale for v in person.box) for person in poses.people]
    tilt = tilt_from_segments(
        lines, intrinsics.fx * scale, (intrinsics.cx * scale, intrinsics.cy * scale), boxes,  # type: ignore[arg-type]
    )
    tilt.applied = tilt.confident
    return tilt


def relevel_roll(tilt: CameraTilt, min_roll_deg: float) -> float | None:
    """The roll to give a second pose pass, or None when the first pass stands.

    The detector is not rotation-equivariant and its keypoints set the landmark crop's rotation, so a
    rolled photo gets slightly other landmarks than the level one, beyond what taking the roll out of
    them (measure_level) can undo. A second pass with the detector seeing the photo level (pose.estimate
    roll_deg) brings the measures of photos turned by 1-4 degrees closer to the level photo's (median
    0.40 -> 0.30 degrees; docs/measures.md). Only for a confident roll read from the photo's lines of
    at least `min_roll_deg` (pipeline.relevel_min_roll_deg): a kiosk's roll is known before the photo
    is looked at and was given to the first pass already.
    """
    if tilt.source != "lines" or not tilt.applied or tilt.roll_deg is None:
        return None
    return tilt.roll_deg if abs(tilt.roll_deg) >= min_roll_deg else None


def measure_level(person: ViewPose, kind: str, intrinsics: Intrinsics, tilt: CameraTilt | None,
                  use_world: bool = True) -> dict[str, measures.Measure]:
    """The view's measures as a level camera would take them: the one place camera roll (and a kiosk's
    pitch) is corrected (daemon/leveling.py). An unconfident or absent estimate leaves them as taken."""
    measure = measures.front_measures if kind == "front" else measures.side_measures

    def run(view: ViewPose) -> dict[str, measures.Measure]:
        return measure(view, use_world=use_world)

    if tilt is None or not tilt.applied or tilt.roll_deg is None:
        return run(person)
    pitch = tilt.pitch_deg if (tilt.source == "kiosk" and tilt.pitch_deg is not None) else 0.0
    return leveling.leveled_measures(person, run, intrinsics.camera_matrix, pitch, tilt.roll_deg)


def distance_guidance(view: str, camera: dict, standing_distance_mm: float) -> list[str]:
    """"too far" / "too close" against the kiosk's standing mark, in metres.

    The measured distance is the heels' distance along the floor (calibrated camera height and pitch),
    else the hip depth that the pixels give for the subject's height; a step (DISTANCE_TOLERANCE of the
    mark's distance) off the mark is tolerated.
    """
    measured = camera.get("feet_floor_distance_mm")
    if measured is None and camera.get("scale_source") == "height":
        measured = camera.get("distance_from_height_mm")
    if measured is None:
        return []
    if measured > standing_distance_mm * (1 + DISTANCE_TOLERANCE):
        problem = "too far"
    elif measured < standing_distance_mm * (1 - DISTANCE_TOLERANCE):
        problem = "too close"
    else:
        return []
    text = (
        f"In the {view} image, The target is {problem} ({measured / 1000:.1f} m from the camera; "
        f"the standing mark is at {standing_distance_mm / 1000:.1f} m)."
    )
    return [text]
