"""The kiosk file: one JSON per camera, written by `skeletond calibrate`, read by the daemon.

Layout (version 1): the intrinsics at the top level, as `calibrate intrinsics` writes them
(camera_matrix 3x3, dist_coeffs, image_size [w, h], rms, views_used, ...), and a `placement` object
written by `calibrate placement` (standing_distance_mm, camera_height_mm, pitch_deg, roll_deg,
method). Either part may be missing, not both. Unknown keys are kept on rewrite.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calibration.intrinsics import Intrinsics, default_intrinsics, intrinsics_from_exif, undistort_normalized
from calibration.placement import Placement, validate_placement
from engines.files import atomic_write_bytes

KIOSK_FORMAT = "skeleton-v2 kiosk"
KIOSK_VERSION = 1
DIST_LENGTHS = (4, 5, 8, 12, 14)

logger = logging.getLogger(__name__)


class KioskError(ValueError):
    """A kiosk file is missing, unreadable or holds implausible values; the message names the key."""


@dataclass
class Kiosk:
    path: Path
    intrinsics: Intrinsics | None
    placement: Placement | None
    rms: float | None = None
    views_used: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _number(data: dict[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise KioskError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def _parse_intrinsics(data: dict[str, Any], where: str) -> Intrinsics:
    size = data.get("image_size")
    if (
        not isinstance(size, list) or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise KioskError(f"{where}: image_size must be [width, height] in pixels, got {size!r}")
    matrix = data.get("camera_matrix")
    try:
        camera_matrix = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise KioskError(f"{where}: camera_matrix must be a 3x3 list of numbers") from None
    if camera_matrix.shape != (3, 3) or not np.all(np.isfinite(camera_matrix)):
        raise KioskError(f"{where}: camera_matrix must be a 3x3 list of numbers, got shape {camera_matrix.shape}")
    fx, fy, cx, cy = camera_matrix[0, 0], camera_matrix[1, 1], camera_matrix[0, 2], camera_matrix[1, 2]
    if fx <= 0 or fy <= 0:
        raise KioskError(f"{where}: camera_matrix focal lengths must be positive, got fx={fx:g} fy={fy:g}")
    if not np.allclose(camera_matrix[2], [0.0, 0.0, 1.0]) or camera_matrix[1, 0] != 0:
        raise KioskError(f"{where}: camera_matrix must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    if not (0 <= cx <= size[0] and 0 <= cy <= size[1]):
        raise KioskError(f"{where}: principal point ({cx:g}, {cy:g}) lies outside the {size[0]}x{size[1]} image")
    dist = data.get("dist_coeffs", [0.0] * 5)
    try:
        dist_array = np.asarray(dist, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise KioskError(f"{where}: dist_coeffs must be a list of numbers") from None
    if dist_array.size not in DIST_LENGTHS or not np.all(np.isfinite(dist_array)):
        raise KioskError(f"{where}: dist_coeffs must hold 4, 5, 8, 12 or 14 finite numbers, got {dist!r}")
    return Intrinsics(
        fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy), dist=dist_array,
        source="kiosk", image_size=(size[0], size[1]),
    )


def _parse_placement(data: Any, where: str) -> Placement:
    where = f"{where}: placement"
    if not isinstance(data, dict):
        raise KioskError(f"{where} must be an object")
    camera_height = data.get("camera_height_mm")
    placement = Placement(
        standing_distance_mm=_number(data, "standing_distance_mm", where),
        camera_height_mm=None if camera_height is None else _number(data, "camera_height_mm", where),
        pitch_deg=_number(data, "pitch_deg", where) if data.get("pitch_deg") is not None else 0.0,
        roll_deg=_number(data, "roll_deg", where) if data.get("roll_deg") is not None else 0.0,
        method=str(data.get("method", "manual")),
        marker_rms_px=data.get("marker_rms_px"),
    )
    try:
        validate_placement(placement)
    except ValueError as exc:
        raise KioskError(f"{where}.{exc}") from None
    return placement


def kiosk_from_dict(data: Any, path: Path) -> Kiosk:
    """Validate a kiosk file's parsed JSON; KioskError names the file and the key."""
    where = str(path)
    if not isinstance(data, dict):
        raise KioskError(f"{where}: expected a JSON object")
    version = data.get("version", KIOSK_VERSION)
    if version != KIOSK_VERSION:
        raise KioskError(f"{where}: version {version!r} is not supported (this daemon reads {KIOSK_VERSION})")
    has_intrinsics = "camera_matrix" in data
    if not has_intrinsics and "placement" not in data:
        raise KioskError(f"{where}: neither intrinsics (camera_matrix) nor placement: run `skeletond calibrate`")
    intrinsics = _parse_intrinsics(data, where) if has_intrinsics else None
    placement = _parse_placement(data["placement"], where) if data.get("placement") is not None else None
    rms = data.get("rms")
    views = data.get("views_used")
    return Kiosk(
        path=path, intrinsics=intrinsics, placement=placement,
        rms=float(rms) if isinstance(rms, (int, float)) else None,
        views_used=int(views) if isinstance(views, int) else None, data=data,
    )


def load_kiosk(path: Path | str) -> Kiosk:
    """Read and validate a kiosk file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KioskError(f"kiosk file {path} does not exist (make it with `skeletond calibrate intrinsics`)") from None
    except OSError as exc:
        raise KioskError(f"kiosk file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KioskError(f"kiosk file {path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return kiosk_from_dict(data, path)


def write_json_atomic(path: Path | str, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file in the same directory and a rename: never a half file."""
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def read_kiosk_data(path: Path | str) -> dict[str, Any]:
    """The raw JSON of an existing kiosk file (validated), or an empty file's header when absent."""
    path = Path(path)
    if not path.exists():
        return {"format": KIOSK_FORMAT, "version": KIOSK_VERSION}
    return dict(load_kiosk(path).data)


def save_intrinsics(path: Path | str, result: dict[str, Any]) -> dict[str, Any]:
    """Write calibrate_intrinsics' result into the kiosk file, keeping its placement. Returns the data."""
    data = read_kiosk_data(path)
    data.update({k: v for k, v in result.items()})
    data["format"], data["version"] = KIOSK_FORMAT, KIOSK_VERSION
    data["calibrated_at"] = _now()
    kiosk_from_dict(data, Path(path))
    write_json_atomic(path, data)
    return data


def save_placement(path: Path | str, placement: Placement) -> dict[str, Any]:
    """Write the placement into the kiosk file, keeping its intrinsics. Returns the data."""
    data = read_kiosk_data(path)
    data["format"], data["version"] = KIOSK_FORMAT, KIOSK_VERSION
    data["placement"] = {**placement.to_dict(), "measured_at": _now()}
    kiosk_from_dict(data, Path(path))
    write_json_atomic(path, data)
    return data


def choose_intrinsics(
    image_size: tuple[int, int],
    kiosk: Kiosk | None = None,
    exif_source: Any = None,
    default_vfov_deg: float = 65.0,
) -> Intrinsics:
    """The camera for one photo: the kiosk's calibration, else the photo's EXIF, else a typical phone.

    `source` on the result says which ("kiosk" | "exif" | "default"). A kiosk calibrated at another
    aspect ratio or orientation than the photo is skipped (the photo cannot be from that camera).
    """
    if kiosk is not None and kiosk.intrinsics is not None:
        try:
            return kiosk.intrinsics.scaled_to(image_size)
        except ValueError as exc:
            logger.warning("kiosk %s not used for this photo: %s", kiosk.path, exc)
    from_exif = intrinsics_from_exif(exif_source, image_size) if exif_source is not None else None
    if from_exif is not None:
        return from_exif
    return default_intrinsics(image_size, default_vfov_deg)


def undistort_points(points_px: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """(N, 2) photo pixels -> the pixels an ideal pinhole with the same fx, fy, cx, cy would see.

    NaN rows stay NaN. Without distortion coefficients the points come back unchanged (a copy).
    """
    points = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    out = points.copy()
    if not intrinsics.has_distortion:
        return out
    finite = np.all(np.isfinite(points), axis=1)
    if np.any(finite):
        normalized = undistort_normalized(points[finite], intrinsics.camera_matrix, intrinsics.dist)
        out[finite, 0] = normalized[:, 0] * intrinsics.fx + intrinsics.cx
        out[finite, 1] = normalized[:, 1] * intrinsics.fy + intrinsics.cy
    return out


def back_project_mm(points_px: np.ndarray, depth_mm: np.ndarray | float, intrinsics: Intrinsics) -> np.ndarray:
    """(N, 2) photo pixels at known camera depths z (mm) -> (N, 3) camera-frame points (mm)."""
    ideal = undistort_points(points_px, intrinsics)
    depth = np.broadcast_to(np.asarray(depth_mm, dtype=np.float64), (ideal.shape[0],))
    return np.column_stack([
        (ideal[:, 0] - intrinsics.cx) / intrinsics.fx * depth,
        (ideal[:, 1] - intrinsics.cy) / intrinsics.fy * depth,
        depth,
    ])
