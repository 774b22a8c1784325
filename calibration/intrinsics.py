"""Camera intrinsics: checkerboard calibration of a kiosk camera, EXIF focal length, or a typical phone.

Pixel coordinates are those of the upright photo (EXIF orientation applied), x right, y down. The
camera model is OpenCV's pinhole + distortion (k1, k2, p1, p2, k3).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Checkerboard detection runs on a copy whose long side is at most this (12 MP phone photos take
# seconds at full size); the corners are then refined at full resolution.
DETECT_MAX_SIDE = 1600
# Warn when the reprojection RMS exceeds this (px): a sharp, flat board gives 0.2-0.6 px.
RMS_WARN_PX = 1.0
# Coverage: the image is cut into COVERAGE_GRID x COVERAGE_GRID cells; warn when fewer than this
# fraction of them hold a corner in some view (distortion is only learned where corners were seen).
COVERAGE_GRID = 6
COVERAGE_WARN = 0.6
MIN_VIEWS = 3
FEW_VIEWS_WARN = 10
# 36 x 24 mm film diagonal, for the 35 mm-equivalent focal length.
FILM_35MM_DIAGONAL_MM = math.hypot(36.0, 24.0)

EXIF_IFD = 0x8769
TAG_FOCAL_LENGTH = 0x920A
TAG_FOCAL_LENGTH_35MM = 0xA405
TAG_FOCAL_PLANE_X_RES = 0xA20E
TAG_FOCAL_PLANE_RES_UNIT = 0xA210
TAG_PIXEL_X_DIMENSION = 0xA002
TAG_PIXEL_Y_DIMENSION = 0xA003
# FocalPlaneResolutionUnit: 2 = inch, 3 = cm, 4 = mm, 5 = um (1 = none, read as inch by most readers).
RESOLUTION_UNIT_MM = {1: 25.4, 2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}


class CalibrationError(ValueError):
    """Calibration could not produce a usable result (too few boards found, bad input)."""


@dataclass
class Intrinsics:
    """Pinhole camera for one photo size; `source` says where the numbers came from."""

    fx: float
    fy: float
    cx: float
    cy: float
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    source: str = "default"  # "kiosk" | "exif" | "default"
    image_size: tuple[int, int] | None = None  # (width, height) the numbers belong to

    @property
    def camera_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(np.asarray(self.dist, dtype=np.float64) != 0.0))

    def scaled_to(self, image_size: tuple[int, int]) -> Intrinsics:
        """The same camera for a photo resized to image_size (same aspect ratio, same orientation).

        A kiosk calibrated at full resolution still serves a photo the kiosk app downscaled. A photo
        rotated against the calibration (portrait vs landscape) is refused: that is another camera
        matrix, and a kiosk camera does not turn.
        """
        if self.image_size is None or tuple(self.image_size) == tuple(image_size):
            return self
        width0, height0 = self.image_size
        width, height = image_size
        sx, sy = width / width0, height / height0
        if abs(sx / sy - 1.0) > 0.01:
            raise CalibrationError(
                f"photo is {width}x{height} but the camera was calibrated at {width0}x{height0}: "
                "not the same aspect ratio or orientation"
            )
        # Pixel centres: x_new + 0.5 = s * (x_old + 0.5).
        return Intrinsics(
            fx=self.fx * sx, fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5,
            dist=np.array(self.dist, dtype=np.float64), source=self.source, image_size=(width, height),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "dist": [float(v) for v in np.ravel(self.dist)], "source": self.source,
            "image_size": list(self.image_size) if self.image_size else None,
        }


def undistort_normalized(points: np.ndarray, camera_matrix: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Pixels -> normalized ideal coordinates, iterated to convergence (OpenCV's default stops at 5)."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
    camera_matrix = np.asarray(camera_matrix, dtype=np.float64)
    dist = np.asarray(dist, dtype=np.float64).ravel()
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x
        out = cv2.undistortPointsIter(points, camera_matrix, dist, np.eye(3), np.eye(3), criteria)
    else:  # OpenCV 5: undistortPoints takes the criteria
        out = cv2.undistortPoints(points, camera_matrix, dist, R=np.eye(3), P=np.eye(3), criteria=criteria)
    return out.reshape(-1, 2)


def parse_board(text: str) -> tuple[int, int]:
    """'9x6' -> (9, 6): inner corners per row (columns) and per column (rows)."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2:
        raise ValueError(f"board {text!r}: expected COLSxROWS inner corners, e.g. 9x6")
    try:
        cols, rows = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"board {text!r}: expected COLSxROWS inner corners, e.g. 9x6") from None
    if cols < 3 or rows < 3:
        raise ValueError(f"board {text!r}: at least 3x3 inner corners")
    if cols == rows:
        # A square board's corner order is ambiguous under rotation; OpenCV's docs advise against it.
        logger.warning("board %s is square: its orientation is ambiguous, prefer e.g. 9x6", text)
    return cols, rows


def board_object_points(board: tuple[int, int], square_mm: float, centred: bool = False) -> np.ndarray:
    """(cols*rows, 3) corner positions on the board plane (z = 0), mm, in OpenCV's corner order."""
    cols, rows = board
    grid = np.zeros((rows * cols, 3), np.float32)
    grid[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * float(square_mm)
    if centred:
        grid[:, 0] -= (cols - 1) * square_mm / 2.0
        grid[:, 1] -= (rows - 1) * square_mm / 2.0
    return grid


def find_board_corners(gray: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner corners (N, 2) of the board in a grayscale image, or None when not found."""
    height, width = gray.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(small, board, flags=flags)
    if not found:
        found, corners = cv2.findChessboardCornersSB(small, board, flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
        if not found:
            return None
    corners = corners.reshape(-1, 1, 2).astype(np.float32)
    if scale != 1.0:
        corners = (corners + 0.5) / scale - 0.5
    # The refinement window: about a third of the smallest corner spacing, at full resolution.
    grid = corners.reshape(board[1], board[0], 2)
    spacing = min(
        float(np.min(np.linalg.norm(np.diff(grid, axis=1), axis=2))),
        float(np.min(np.linalg.norm(np.diff(grid, axis=0), axis=2))),
    )
    half = int(max(2, min(15, spacing / 3)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.001)
    corners = cv2.cornerSubPix(gray, corners, (half, half), (-1, -1), criteria)
    return corners.reshape(-1, 2)


def corner_coverage(corner_sets: list[np.ndarray], image_size: tuple[int, int], grid: int = COVERAGE_GRID) -> float:
    """Fraction of a grid x grid tiling of the image that holds at least one corner in some view."""
    width, height = image_size
    hit = np.zeros((grid, grid), bool)
    for corners in corner_sets:
        col = np.clip((corners[:, 0] / width * grid).astype(int), 0, grid - 1)
        row = np.clip((corners[:, 1] / height * grid).astype(int), 0, grid - 1)
        hit[row, col] = True
    return float(hit.mean())


def _read_gray(path: Path) -> np.ndarray | None:
    # cv2.imread applies the EXIF orientation, so corners are in the upright photo's pixels, as the
    # daemon's keypoints are.
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def calibrate_intrinsics(
    images: list[Path] | Path, board: tuple[int, int], square_mm: float, fix_aspect: bool = False
) -> dict[str, Any]:
    """Checkerboard calibration from photos (a directory or a list of files).

    Returns camera_matrix (3x3 list), dist_coeffs (k1, k2, p1, p2, k3), image_size [w, h], rms (px),
    views_used, per_view_rms, coverage, board, rejected ([{"file", "reason"}]) and warnings.
    Raises CalibrationError when fewer than MIN_VIEWS photos show the board.
    """
    if square_mm <= 0:
        raise CalibrationError(f"square size must be positive, got {square_mm}")
    if isinstance(images, Path):
        if not images.is_dir():
            raise CalibrationError(f"{images} is not a directory")
        paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        paths = sorted(Path(p) for p in images)
    if not paths:
        raise CalibrationError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) in {images}")

    rejected: list[dict[str, str]] = []
    found: list[tuple[Path, np.ndarray, tuple[int, int]]] = []
    for path in paths:
        gray = _read_gray(path)
        if gray is None:
            rejected.append({"file": path.name, "reason": "cannot be read as an image"})
            continue
        corners = find_board_corners(gray, board)
        if corners is None:
            rejected.append({"file": path.name, "reason": f"{board[0]}x{board[1]} board not found"})
            continue
        found.append((path, corners, (gray.shape[1], gray.shape[0])))
        logger.debug("board found in %s", path.name)

    if found:
        # All views must share one size and orientation; keep the most common one.
        sizes = [size for _, _, size in found]
        image_size = max(set(sizes), key=sizes.count)
        for path, _, size in found:
            if size != image_size:
                rejected.append({
                    "file": path.name,
                    "reason": f"size {size[0]}x{size[1]} differs from {image_size[0]}x{image_size[1]}",
                })
        found = [item for item in found if item[2] == image_size]
    if len(found) < MIN_VIEWS:
        listing = "; ".join(f"{r['file']}: {r['reason']}" for r in rejected)
        raise CalibrationError(
            f"the board was found in {len(found)} photo(s), at least {MIN_VIEWS} are needed "
            f"(15-20 advised). Rejected: {listing or 'none'}"
        )

    object_points = board_object_points(board, square_mm)
    corner_sets = [corners for _, corners, _ in found]
    flags = cv2.CALIB_FIX_ASPECT_RATIO if fix_aspect else 0
    camera_matrix = np.eye(3)
    if fix_aspect:
        camera_matrix[0, 0] = camera_matrix[1, 1] = 1.0
    rms, camera_matrix, dist, rvecs, tvecs = cv2.calibrateCamera(
        [object_points] * len(corner_sets),
        [c.reshape(-1, 1, 2).astype(np.float32) for c in corner_sets],
        image_size, camera_matrix, np.zeros(5), flags=flags,
    )
    per_view = []
    for corners, rvec, tvec in zip(corner_sets, rvecs, tvecs):
        projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera_matrix, dist)
        per_view.append(float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - corners) ** 2, axis=1)))))

    coverage = corner_coverage(corner_sets, image_size)
    warnings: list[str] = []
    if rms > RMS_WARN_PX:
        worst = sorted(zip(per_view, (p.name for p, _, _ in found)), reverse=True)[:3]
        warnings.append(
            f"reprojection RMS {rms:.2f} px is above {RMS_WARN_PX:.1f} px: blurred photos or a board that "
            f"is not flat; worst photos: {', '.join(f'{name} ({err:.2f} px)' for err, name in worst)}"
        )
    if coverage < COVERAGE_WARN:
        warnings.append(
            f"the corners cover {coverage:.0%} of the image (under {COVERAGE_WARN:.0%}): take more photos "
            "with the board near the edges and corners of the picture"
        )
    if len(found) < FEW_VIEWS_WARN:
        warnings.append(f"only {len(found)} photos show the board; 15-20 give a steadier calibration")
    for warning in warnings:
        logger.warning("calibration: %s", warning)

    return {
        "camera_matrix": np.asarray(camera_matrix, dtype=float).tolist(),
        "dist_coeffs": [float(v) for v in np.ravel(dist)[:5]],
        "image_size": [int(image_size[0]), int(image_size[1])],
        "rms": float(rms),
        "views_used": len(found),
        "per_view_rms": {path.name: round(err, 4) for (path, _, _), err in zip(found, per_view)},
        "coverage": round(coverage, 3),
        "board": {"cols": board[0], "rows": board[1], "square_mm": float(square_mm)},
        "rejected": rejected,
        "warnings": warnings,
    }


def intrinsics_from_calibration(result: dict[str, Any], source: str = "kiosk") -> Intrinsics:
    """An Intrinsics from calibrate_intrinsics' result (or a kiosk file's same fields)."""
    matrix = np.asarray(result["camera_matrix"], dtype=np.float64)
    width, height = result["image_size"]
    return Intrinsics(
        fx=float(matrix[0, 0]), fy=float(matrix[1, 1]), cx=float(matrix[0, 2]), cy=float(matrix[1, 2]),
        dist=np.asarray(result.get("dist_coeffs", [0.0] * 5), dtype=np.float64),
        source=source, image_size=(int(width), int(height)),
    )


def default_intrinsics(image_size: tuple[int, int], vfov_deg: float) -> Intrinsics:
    """A typical phone camera: square pixels, centred principal point, no distortion.

    vfov_deg is the field of view along the photo's long side, which is the vertical one in the
    portrait photos of a standing person (a phone's main camera: about 26 mm equivalent, 4:3 sensor,
    65-70 degrees along the long side). Along the long side rather than the height, so that a
    landscape photo from the same phone gets the same focal length.
    """
    if not 10.0 <= vfov_deg <= 150.0:
        raise ValueError(f"field of view {vfov_deg} degrees is outside 10-150")
    width, height = image_size
    focal = (max(width, height) / 2.0) / math.tan(math.radians(vfov_deg) / 2.0)
    return Intrinsics(
        fx=focal, fy=focal, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0,
        dist=np.zeros(5), source="default", image_size=(int(width), int(height)),
    )


def exif_tags(exif_source: Any) -> dict[int, Any]:
    """Flatten the EXIF sub-IFD and IFD0 of bytes / a PIL image / a PIL Exif / a dict into tag -> value.

    The pipeline reads them once, from the photo's header (daemon/imageio.probe: `Decoded.exif`), for the
    focal length here and the phone's gravity (calibration/gravity.py)."""
    from PIL import Image

    if exif_source is None:
        return {}
    if isinstance(exif_source, dict):
        return dict(exif_source)
    if isinstance(exif_source, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(exif_source))) as image:
                exif = image.getexif()
        except Exception:  # noqa: BLE001 - any undecodable photo just has no usable EXIF here
            return {}
    elif isinstance(exif_source, Image.Image):
        exif = exif_source.getexif()
    else:
        exif = exif_source
    tags: dict[int, Any] = dict(exif.items())
    try:
        tags.update(exif.get_ifd(EXIF_IFD))
    except Exception as exc:  # noqa: BLE001 - a broken sub-IFD means no focal length, not a failed request
        logger.debug("EXIF sub-IFD unreadable: %s", exc)
    return tags


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def intrinsics_from_exif(exif_source: Any, image_size: tuple[int, int]) -> Intrinsics | None:
    """Intrinsics from a photo's EXIF focal length, or None when it carries none usable.

    exif_source: the photo's bytes, a PIL Image, a PIL Exif, or a {tag: value} dict. image_size is the
    upright photo's (width, height). FocalLengthIn35mmFilm is read against the 35 mm film diagonal
    (43.27 mm) and the photo's diagonal, which holds whatever the aspect ratio and orientation;
    otherwise FocalLength (mm) with FocalPlaneXResolution (pixels per unit of the sensor, at
    PixelXDimension width) gives pixels directly. Principal point centred, no distortion.
    """
    tags = exif_tags(exif_source)
    width, height = image_size
    focal_px: float | None = None
    focal_35 = _positive_float(tags.get(TAG_FOCAL_LENGTH_35MM))
    if focal_35 is not None:
        focal_px = focal_35 / FILM_35MM_DIAGONAL_MM * math.hypot(width, height)
    else:
        focal_mm = _positive_float(tags.get(TAG_FOCAL_LENGTH))
        plane_res = _positive_float(tags.get(TAG_FOCAL_PLANE_X_RES))
        unit_mm = RESOLUTION_UNIT_MM.get(int(tags.get(TAG_FOCAL_PLANE_RES_UNIT, 2) or 2))
        if focal_mm is not None and plane_res is not None and unit_mm is not None:
            focal_px = focal_mm * plane_res / unit_mm
            # The plane resolution refers to the sensor image (PixelX/YDimension); the photo may have been
            # resized since. Compare long sides so a rotated photo needs no special case.
            stored = [_positive_float(tags.get(TAG_PIXEL_X_DIMENSION)), _positive_float(tags.get(TAG_PIXEL_Y_DIMENSION))]
            if all(stored):
                focal_px *= max(width, height) / max(stored)  # type: ignore[type-var]
    if focal_px is None:
        return None
    # Anything outside 15-150 degrees of diagonal view is a broken tag, not a lens.
    diagonal_fov = 2.0 * math.degrees(math.atan(math.hypot(width, height) / 2.0 / focal_px))
    if not 15.0 <= diagonal_fov <= 150.0:
        logger.warning("EXIF focal length gives a %.0f degree field of view; ignored", diagonal_fov)
        return None
    return Intrinsics(
        fx=focal_px, fy=focal_px, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0,
        dist=np.zeros(5), source="exif", image_size=(int(width), int(height)),
    )
