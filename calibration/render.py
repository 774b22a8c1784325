"""The project's own checkerboard renderer: photos of a flat board through a known camera, for tests.

The board is drawn once as a texture; each output pixel's ray (through the lens distortion, undone
exactly by iteration) is intersected with the board plane and the texture sampled there, so the
rendered corners sit where cv2.projectPoints puts them, distortion included.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from calibration.intrinsics import Intrinsics, board_object_points, undistort_normalized

# Texture resolution: pixels per board square. Rendered squares are kept smaller than this, so the
# texture is never magnified into visible steps.
TEXTURE_SQUARE_PX = 64
MARGIN_SQUARES = 1.0  # white border around the squares, as a printed board has


@dataclass
class BoardView:
    image: np.ndarray  # (height, width) uint8 grayscale
    corners_px: np.ndarray  # (cols*rows, 2) true inner-corner pixels, OpenCV's corner order
    rvec: np.ndarray
    tvec: np.ndarray


def draw_board(board: tuple[int, int], square_px: int = TEXTURE_SQUARE_PX) -> np.ndarray:
    """Texture of a board with `board` inner corners: (rows+1) x (cols+1) squares, white margin."""
    cols, rows = board
    margin = round(MARGIN_SQUARES * square_px)
    height = (rows + 1) * square_px + 2 * margin
    width = (cols + 1) * square_px + 2 * margin
    texture = np.full((height, width), 255, np.uint8)
    for row in range(rows + 1):
        for col in range(cols + 1):
            if (row + col) % 2 == 0:
                y0, x0 = margin + row * square_px, margin + col * square_px
                texture[y0:y0 + square_px, x0:x0 + square_px] = 0
    return texture


def pixel_rays(camera_matrix: np.ndarray, dist: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(height, width, 2) normalized undistorted coordinates (x/z, y/z) of each pixel centre."""
    width, height = image_size
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pixels = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
    dist = np.asarray(dist, dtype=np.float64).ravel()
    if not np.any(dist):
        fx, fy, cx, cy = camera_matrix[0, 0], camera_matrix[1, 1], camera_matrix[0, 2], camera_matrix[1, 2]
        return np.stack([(u - cx) / fx, (v - cy) / fy], axis=-1)
    rays = undistort_normalized(pixels, camera_matrix, dist)
    return rays.reshape(height, width, 2)


def render_board_view(
    camera_matrix: np.ndarray,
    dist: np.ndarray,
    image_size: tuple[int, int],
    board: tuple[int, int],
    square_mm: float,
    rvec: np.ndarray,
    tvec: np.ndarray,
    rays: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    background: int = 150,
    blur_sigma: float = 0.6,
    noise_sigma: float = 1.0,
    seed: int = 0,
    centred: bool = False,
) -> BoardView:
    """One grayscale photo of the board at pose (rvec, tvec): board mm -> camera mm.

    Board coordinates: the first inner corner at (0, 0), x along a row of corners, z = 0 on the board
    (or the board centre at the origin with centred=True), as board_object_points gives them.
    """
    camera_matrix = np.asarray(camera_matrix, dtype=np.float64)
    if rays is None:
        rays = pixel_rays(camera_matrix, dist, image_size)
    if texture is None:
        texture = draw_board(board)
    cols, rows = board
    square_px = (texture.shape[1] - 2 * round(MARGIN_SQUARES * TEXTURE_SQUARE_PX)) / (cols + 1)
    margin_px = (texture.shape[1] - (cols + 1) * square_px) / 2.0
    rotation, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))
    tvec = np.asarray(tvec, dtype=np.float64).reshape(3)
    # Board plane (X, Y, 1) -> normalized image coordinates, and back.
    homography = np.column_stack([rotation[:, 0], rotation[:, 1], tvec])
    inverse = np.linalg.inv(homography)
    height, width = rays.shape[:2]
    rays_h = np.concatenate([rays, np.ones((height, width, 1))], axis=-1)
    plane = rays_h @ inverse.T
    in_front = plane[..., 2] > 1e-12
    denom = np.where(in_front, plane[..., 2], 1.0)
    board_x, board_y = plane[..., 0] / denom, plane[..., 1] / denom
    if centred:
        board_x = board_x + (cols - 1) * square_mm / 2.0
        board_y = board_y + (rows - 1) * square_mm / 2.0
    # Board mm -> texture pixel (centre convention): first inner corner at margin + one square.
    map_x = (margin_px + square_px + board_x / square_mm * square_px - 0.5).astype(np.float32)
    map_y = (margin_px + square_px + board_y / square_mm * square_px - 0.5).astype(np.float32)
    map_x[~in_front] = -1e6
    image = cv2.remap(
        texture, map_x, map_y, interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=int(background),
    ).astype(np.float32)
    if blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma)
    if noise_sigma > 0:
        image += np.random.default_rng(seed).normal(0.0, noise_sigma, image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    corners, _ = cv2.projectPoints(
        board_object_points(board, square_mm, centred=centred).astype(np.float64),
        np.asarray(rvec, np.float64), tvec, camera_matrix, np.asarray(dist, np.float64),
    )
    return BoardView(image=image, corners_px=corners.reshape(-1, 2), rvec=np.asarray(rvec), tvec=tvec)


def board_poses(
    count: int,
    camera_matrix: np.ndarray,
    dist: np.ndarray,
    image_size: tuple[int, int],
    board: tuple[int, int],
    square_mm: float,
    distance_mm: tuple[float, float] = (400.0, 900.0),
    max_tilt_deg: float = 35.0,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` board poses (rvec, tvec) that keep the whole board in view and spread it over the image."""
    rng = np.random.default_rng(seed)
    width, height = image_size
    camera_matrix = np.asarray(camera_matrix, dtype=np.float64)
    object_points = board_object_points(board, square_mm).astype(np.float64)
    centre = object_points.mean(axis=0)
    # Aim the board centre at a spread of image positions: a 3x3 grid, then random ones.
    targets = [(width * fx, height * fy) for fy in (0.3, 0.5, 0.7) for fx in (0.3, 0.5, 0.7)]
    poses: list[tuple[np.ndarray, np.ndarray]] = []
    attempts = 0
    while len(poses) < count:
        attempts += 1
        if attempts > 200 * count:
            raise ValueError("cannot place the board in view: bring it closer or use a smaller board")
        index = len(poses)
        target = targets[index] if index < len(targets) else (rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height)
        angles = np.radians(rng.uniform(-max_tilt_deg, max_tilt_deg, 2))
        spin = np.radians(rng.uniform(-15.0, 15.0))
        rotation = (
            cv2.Rodrigues(np.array([angles[0], 0.0, 0.0]))[0]
            @ cv2.Rodrigues(np.array([0.0, angles[1], 0.0]))[0]
            @ cv2.Rodrigues(np.array([0.0, 0.0, spin]))[0]
        )
        depth = rng.uniform(*distance_mm)
        ray = np.linalg.inv(camera_matrix) @ np.array([target[0], target[1], 1.0])
        tvec = ray * depth - rotation @ centre
        rvec = cv2.Rodrigues(rotation)[0].ravel()
        projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera_matrix, np.asarray(dist, np.float64))
        projected = projected.reshape(-1, 2)
        margin = 0.03 * min(width, height)
        inside = (
            projected[:, 0].min() > margin and projected[:, 0].max() < width - margin
            and projected[:, 1].min() > margin and projected[:, 1].max() < height - margin
        )
        if inside and np.all((object_points @ rotation.T + tvec)[:, 2] > 0):
            poses.append((rvec, tvec))
    return poses


def render_calibration_set(
    intrinsics: Intrinsics,
    image_size: tuple[int, int],
    board: tuple[int, int],
    square_mm: float,
    count: int = 15,
    seed: int = 0,
    **pose_options: float,
) -> list[BoardView]:
    """`count` rendered views of the board through the camera, as a technician's photo set."""
    camera_matrix = intrinsics.camera_matrix
    rays = pixel_rays(camera_matrix, intrinsics.dist, image_size)
    texture = draw_board(board)
    poses = board_poses(count, camera_matrix, intrinsics.dist, image_size, board, square_mm, seed=seed, **pose_options)
    return [
        render_board_view(
            camera_matrix, intrinsics.dist, image_size, board, square_mm, rvec, tvec,
            rays=rays, texture=texture, seed=seed + index,
        )
        for index, (rvec, tvec) in enumerate(poses)
    ]
