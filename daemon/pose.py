"""BlazePose GHUM 3D on the project's own pre/post-processing, following MediaPipe's pose graph.

photo -> letterboxed 224 px detector input -> SSD anchors, sigmoid scores, weighted NMS, letterbox
removal -> rotated square ROI from the hip-centre and scale keypoints -> 256 px crop (and its mirror,
for flip testing) -> 39 landmarks, heatmap refinement, projection back to photo pixels, world landmarks,
segmentation mask.

The settings are MediaPipe's (mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt,
pose_landmark/pose_detection_to_roi.pbtxt, tensors_to_pose_landmarks_and_segmentation.pbtxt); each is
named here once. Everything is plain numpy over arrays; the backend only runs the two models.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from daemon.views import BLAZEPOSE_MIRROR, PhotoPoses, ViewPose, pixel_index_affine
from engines.base import Backend

DETECTOR_SIZE = 224
LANDMARK_SIZE = 256
HEATMAP_KERNEL = 7  # RefineLandmarksFromHeatmapCalculator kernel_size in the pose graph
HEATMAP_MIN_CONFIDENCE = 0.5  # its default min_confidence_to_refine
NMS_IOU = 0.3
ROI_SCALE = 1.25
SCORE_CLIP = 100.0
NUM_LANDMARKS = 39  # 33 pose points + 6 auxiliary (33-34 drive the next frame's ROI in video)
# How many people a crowded photo gets landmarks for: the main subject and a few bystanders.
MAX_PEOPLE = 4
# A second, closer look when the whole photo shows nobody: the detector sees the photo shrunk to 224 px,
# where a person filling a quarter of its height is 40-60 px tall and often missed (MediaPipe's own
# runtime misses them too). Tiles of FAR_TILE_FRACTION of each side, FAR_TILE_STEPS per side evenly
# spread, overlap so that anyone up to 0.4 of the photo's height lies whole inside one tile, where they
# are 2/3 of its height. Only run when the first look found nobody: a kiosk photo never pays for it.
FAR_TILE_FRACTION = 0.6
FAR_TILE_STEPS = 3
# The landmark crop is sampled from the photo area-averaged to at most this many photo pixels per crop
# pixel (prefiltered_source): a bilinear tap then reads every pixel nearby, not a sparse grid.
PREFILTER_PX_PER_CROP_PX = 2.0

# Mirror partner of each of the 39 model outputs; the auxiliary points lie on the body's midline.
_MIRROR39 = np.concatenate([BLAZEPOSE_MIRROR, np.arange(33, NUM_LANDMARKS)])


def ssd_anchor_centers() -> np.ndarray:
    """The detector's 2254 anchor centres (x, y), normalised, in MediaPipe's order.

    SsdAnchorsCalculator with strides [8, 16, 32, 32, 32], aspect ratio 1 plus one interpolated scale per
    layer, fixed anchor size: 2 anchors a cell on the 28 and 14 grids, 6 on the 7 grid (the three
    stride-32 layers merge). With fixed_anchor_size only the centres matter (w = h = 1).
    """
    centers = []
    for grid, per_cell in ((28, 2), (14, 2), (7, 6)):
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        cell = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        centers.append(np.repeat(cell, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centers).astype(np.float32)


ANCHORS = ssd_anchor_centers()


def _sigmoid(values: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warning for large negative logits.
    return 0.5 * (1.0 + np.tanh(0.5 * values))


def _rect_to_crop(cx: float, cy: float, width: float, height: float, rotation: float, size: int) -> np.ndarray:
    """2x3 affine taking photo pixels to a size x size crop of a rotated rectangle.

    Corner to corner, as ImageToTensorCalculator maps the rectangle's corners onto (0, size) .. (size, 0).
    Both sides are continuous coordinates (pixel j covers [j, j+1]), the convention the landmark model's
    outputs follow (its mirror is x -> 256 - x); the warps convert with pixel_index_affine. MediaPipe's
    own warp skips that half-pixel conversion: our landmarks sit up to half a crop pixel from its own,
    and in exchange a mirrored or halved photo gives exactly the mirrored or same crop.
    """
    cos, sin = math.cos(rotation), math.sin(rotation)

    def corner(dx: float, dy: float) -> tuple[float, float]:
        return cx + cos * dx - sin * dy, cy + sin * dx + cos * dy

    src = np.float32([corner(-width / 2, height / 2), corner(-width / 2, -height / 2), corner(width / 2, -height / 2)])
    dst = np.float32([[0, size], [0, 0], [size, 0]])
    return cv2.getAffineTransform(src, dst)


def _apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


@dataclass
class Detection:
    score: float
    box_px: np.ndarray  # (4,) xmin, ymin, xmax, ymax in photo pixels
    keypoints_px: np.ndarray  # (4, 2): hip centre, scale point (full body), shoulder centre, scale point


def detector_input(image_bgr: np.ndarray, roll_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The whole photo letterboxed into 224 x 224 RGB in [-1, 1], and the 2x3 affine tensor px -> photo px.

    roll_deg: the camera's roll (calibration/roll.py's sign: > 0 when the world's up leans toward the
    image's right). The detector then sees the photo turned level about its centre, in a square large
    enough to hold all of it: the detector is not rotation-equivariant, and its keypoints set the
    landmark crop's rotation, so a rolled photo seen level gets the crop the level photo gets.
    """
    height, width = image_bgr.shape[:2]
    rotation = math.radians(roll_deg)
    cos, sin = abs(math.cos(rotation)), abs(math.sin(rotation))
    side = float(max(width * cos + height * sin, width * sin + height * cos))
    # A square turned by the roll, in photo pixels: its up is the world's up.
    to_tensor = _rect_to_crop(width / 2, height / 2, side, side, rotation, DETECTOR_SIZE)
    # Sampling straight from the full photo is what MediaPipe's CPU graph does; it costs no more than
    # the 224 x 224 output and keeps our detections identical to its own.
    crop = cv2.warpAffine(
        image_bgr, pixel_index_affine(to_tensor), (DETECTOR_SIZE, DETECTOR_SIZE), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )
    tensor = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)
    tensor *= 2.0 / 255.0
    tensor -= 1.0
    return tensor, cv2.invertAffineTransform(to_tensor)


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchors + raw outputs -> (scores (n,), boxes (n, 4) xmin ymin xmax ymax, keypoints (n, 4, 2)), tensor px."""
    scores = _sigmoid(np.clip(raw_scores.reshape(-1), -SCORE_CLIP, SCORE_CLIP))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes.reshape(-1, 12)[keep]
    anchors = ANCHORS[keep] * DETECTOR_SIZE
    centers = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centers - half, centers + half], axis=1)
    keypoints = raw[:, 4:12].reshape(-1, 4, 2) + anchors[:, None, :]
    valid = (raw[:, 2] > 0) & (raw[:, 3] > 0)
    return scores[keep][valid], boxes[valid], keypoints[valid]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou_threshold: float = NMS_IOU):
    """MediaPipe's WEIGHTED non-maximum suppression: each kept detection is the score-weighted mean of
    the detections that overlap it (itself included); its score stays the best one."""
    order = np.argsort(-scores, kind="stable")
    remaining = order
    kept = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining]) > iou_threshold
        group = remaining[overlap]
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        points = (keypoints[group] * weights[:, :, None]).sum(0) / weights.sum()
        kept.append((float(scores[best]), box, points))
        remaining = remaining[~overlap]
    return kept


def _mirror_tensor_detections(kept):
    """Detections made on the mirrored detector input, mirrored back (x -> 224 - x; the letterbox is
    centred, so it is its own mirror). The detector's keypoints lie on the body's midline: no swap."""
    last = DETECTOR_SIZE
    back = []
    for score, box, points in kept:
        box = np.array([last - box[2], box[1], last - box[0], box[3]])
        points = points.copy()
        points[:, 0] = last - points[:, 0]
        back.append((score, box, points))
    return back


def detect(backend: Backend, image_bgr: np.ndarray, min_score: float, symmetric: bool = False,
           roll_deg: float = 0.0) -> list[Detection]:
    """People found in the photo, best score first, in photo pixels.

    symmetric: also detect on the mirrored input and average each detection with its mirror twin, so that
    a mirrored photo gets exactly the mirrored ROI (the detector alone is not mirror-symmetric; with flip
    testing of the landmarks this makes the whole pose stage mirror-equivariant). A mirrored photo's roll
    is the negated roll, and the mirror of the level view is the level view of the mirror: still exact.
    roll_deg: look at the photo turned level (detector_input); the results stay in photo pixels.
    """
    tensor, to_photo = detector_input(image_bgr, roll_deg)
    batch = np.stack([tensor, tensor[:, ::-1]]) if symmetric else tensor[None]
    outputs = backend.run("detector", {"input_1": batch})
    per_input = [
        weighted_nms(*decode_detections(outputs["Identity"][index], outputs["Identity_1"][index], min_score))
        for index in range(batch.shape[0])
    ]
    kept = per_input[0]
    if symmetric:
        twins = _mirror_tensor_detections(per_input[1])
        merged = []
        for score, box, points in kept:
            overlaps = [float(_iou(box, twin[1][None])[0]) for twin in twins]
            if overlaps and max(overlaps) > 0.5:
                twin = twins[int(np.argmax(overlaps))]
                score, box, points = (score + twin[0]) / 2, (box + twin[1]) / 2, (points + twin[2]) / 2
            merged.append((score, box, points))
        kept = merged
    detections = []
    for score, box, points in kept:
        (x0, y0), (x1, y1) = box.reshape(2, 2)
        # All four corners: seen level, the box is turned in the photo (its bounding box is kept).
        corners = _apply_affine(to_photo, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        box_px = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
        detections.append(Detection(float(score), box_px, _apply_affine(to_photo, points)))
    return detections


def detect_tiles(backend: Backend, image_bgr: np.ndarray, min_score: float, symmetric: bool = False,
                 roll_deg: float = 0.0) -> list[Detection]:
    """People found by looking at overlapping tiles of the photo (FAR_TILE_*), in photo pixels, best score
    first; a person seen in several tiles is kept once (the best-scoring sighting). roll_deg: each tile
    seen level, as in detect."""
    height, width = image_bgr.shape[:2]
    tile_w, tile_h = round(width * FAR_TILE_FRACTION), round(height * FAR_TILE_FRACTION)
    found: list[Detection] = []
    for y0 in np.linspace(0, height - tile_h, FAR_TILE_STEPS).round().astype(int):
        for x0 in np.linspace(0, width - tile_w, FAR_TILE_STEPS).round().astype(int):
            tile = image_bgr[y0:y0 + tile_h, x0:x0 + tile_w]
            offset = np.array([x0, y0], np.float64)
            for detection in detect(backend, tile, min_score, symmetric, roll_deg):
                found.append(Detection(
                    detection.score, detection.box_px + np.tile(offset, 2), detection.keypoints_px + offset,
                ))
    found.sort(key=lambda d: -d.score)
    kept: list[Detection] = []
    for detection in found:
        if not kept or float(_iou(detection.box_px, np.stack([k.box_px for k in kept])).max()) <= NMS_IOU:
            kept.append(detection)
    return kept


@dataclass(frozen=True)
class Roi:
    """A rotated square in photo pixels (centre, side, rotation in radians, clockwise on screen)."""

    cx: float
    cy: float
    side: float
    rotation: float

    def to_crop(self) -> np.ndarray:
        return _rect_to_crop(self.cx, self.cy, self.side, self.side, self.rotation, LANDMARK_SIZE)


def detection_roi(detection: Detection) -> Roi:
    """AlignmentPointsRectsCalculator (hip centre -> scale point, target angle 90 deg), then x1.25, square."""
    return alignment_roi(detection.keypoints_px[0], detection.keypoints_px[1])


def landmarks_roi(crop: CropLandmarks, roi: Roi) -> Roi:
    """The next frame's ROI from this frame's landmarks (video mode's loopback, pose_landmarks_to_roi.pbtxt):
    the auxiliary hip-centre and scale points (33, 34), projected from the crop to the analysed pixels,
    through the same alignment as a detection's."""
    points = _apply_affine(cv2.invertAffineTransform(roi.to_crop()), crop.xy[33:35].astype(np.float64))
    return alignment_roi(points[0], points[1])


def alignment_roi(center: np.ndarray, scale_point: np.ndarray) -> Roi:
    """A square ROI centred on `center`, rotated so that `scale_point` lies straight above it, side
    2 x their distance x 1.25 (MediaPipe's alignment-points rect and its RectTransformation)."""
    (x0, y0), (x1, y1) = center, scale_point
    side = 2.0 * math.hypot(x1 - x0, y1 - y0) * ROI_SCALE
    rotation = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
    rotation = rotation - 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))
    return Roi(float(x0), float(y0), side, rotation)


def prefiltered_source(image_bgr: np.ndarray, to_crop: np.ndarray, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of the photo a crop samples, area-averaged down to PREFILTER_PX_PER_CROP_PX photo pixels
    a crop pixel when the crop would skip more, and the affine from it to the crop.

    A bilinear warp straight from a 12 MP photo into 256 px reads 4 of every 150-200 photo pixels: the
    crop then depends on where the grid happens to fall (aliasing), so the same person half a pixel
    to the side, at half the size or turned by a degree gets visibly different crops, and the landmark
    model answers a few pixels differently. Averaging the pixels first (INTER_AREA, exact on continuous
    coordinates) makes the crop nearly independent of the photo's size and grid. Mirror-exact: the
    region is whole pixels placed symmetrically, and INTER_AREA's cells map one to one under mirroring.
    """
    linear = to_crop[:, :2]
    photo_px_per_crop_px = 1.0 / math.sqrt(abs(float(np.linalg.det(linear))))
    if photo_px_per_crop_px <= PREFILTER_PX_PER_CROP_PX:
        return image_bgr, to_crop
    height, width = image_bgr.shape[:2]
    inverse = cv2.invertAffineTransform(to_crop)
    edge = float(crop_size)
    corners = _apply_affine(inverse, np.array([[0, 0], [edge, 0], [0, edge], [edge, edge]], np.float64))
    # Whole pixels, a few crop pixels of margin for the bilinear taps; clipped to the photo (the warp's
    # replicated border then repeats the photo's own edge, as it does without the prefilter).
    margin = 2 * photo_px_per_crop_px
    x0 = max(0, math.floor(corners[:, 0].min() - margin))
    y0 = max(0, math.floor(corners[:, 1].min() - margin))
    x1 = min(width, math.ceil(corners[:, 0].max() + margin))
    y1 = min(height, math.ceil(corners[:, 1].max() + margin))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image_bgr, to_crop
    factor = PREFILTER_PX_PER_CROP_PX / photo_px_per_crop_px
    out_w, out_h = max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))
    region = cv2.resize(image_bgr[y0:y1, x0:x1], (out_w, out_h), interpolation=cv2.INTER_AREA)
    # Continuous coordinates: region px -> photo px is x * (w / out_w) + x0 exactly.
    to_photo = np.array([[(x1 - x0) / out_w, 0.0, x0], [0.0, (y1 - y0) / out_h, y0], [0.0, 0.0, 1.0]])
    return region, to_crop @ to_photo


def landmark_input(image_bgr: np.ndarray, roi: Roi, with_mirror: bool) -> np.ndarray:
    """The 256 px RGB crop in [0, 1] (and its horizontal mirror): (1 or 2, 256, 256, 3) float32."""
    source, to_crop = prefiltered_source(image_bgr, roi.to_crop(), LANDMARK_SIZE)
    crop = cv2.warpAffine(
        source, pixel_index_affine(to_crop), (LANDMARK_SIZE, LANDMARK_SIZE), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    batch = np.stack([crop, crop[:, ::-1]]) if with_mirror else crop[None]
    return batch.astype(np.float32) * (1.0 / 255.0)




def refine_from_heatmap(xy_norm: np.ndarray, heatmap_logits: np.ndarray) -> np.ndarray:
    """RefineLandmarksFromHeatmapCalculator: replace each point by the confidence-weighted mean position
    inside a 7x7 window of its heatmap, where the heatmap is confident (max >= 0.5).

    xy_norm: (39, 2) in [0, 1] of the crop; heatmap_logits: (64, 64, 39). Returns refined (39, 2).
    All points at once: windows gathered from a heatmap padded with zero confidence, which is what the
    calculator's shrinking of the window at the border amounts to.
    """
    rows, cols, channels = heatmap_logits.shape
    offset = (HEATMAP_KERNEL - 1) // 2
    # int() truncates toward zero, as the C++ cast does.
    col = np.trunc(xy_norm[:, 0] * cols).astype(int)
    row = np.trunc(xy_norm[:, 1] * rows).astype(int)
    # MediaPipe's check compares the column against the height too (square heatmap: same thing).
    valid = (col >= 0) & (col < cols) & (row >= 0) & (col < rows)
    col, row = np.where(valid, col, 0), np.where(valid, row, 0)
    padded = np.pad(heatmap_logits, ((offset, offset), (offset, offset), (0, 0)), constant_values=-1e4)
    steps = np.arange(HEATMAP_KERNEL)
    # Padded coordinates (heatmap row = value - offset). The row is not range-checked (see above): a row
    # past the bottom reads padding, i.e. zero confidence, as the calculator's empty window does.
    window_rows = np.minimum(row[:, None] + steps[None, :], rows + 2 * offset - 1)
    window_cols = col[:, None] + steps[None, :]
    logits = padded[window_rows[:, :, None], window_cols[:, None, :], np.arange(channels)[:, None, None]]
    confidence = _sigmoid(logits.astype(np.float64))
    total = confidence.sum(axis=(1, 2))
    refine = valid & (confidence.max(axis=(1, 2)) >= HEATMAP_MIN_CONFIDENCE) & (total > 0)
    safe_total = np.where(total > 0, total, 1.0)
    mean_row = (confidence.sum(axis=2) * (window_rows - offset)).sum(axis=1) / safe_total
    mean_col = (confidence.sum(axis=1) * (window_cols - offset)).sum(axis=1) / safe_total
    refined = xy_norm.copy()
    refined[refine, 0] = mean_col[refine] / cols
    refined[refine, 1] = mean_row[refine] / rows
    return refined


@dataclass
class CropLandmarks:
    """One landmark pass, in crop coordinates (256 px), before projection to the photo."""

    xy: np.ndarray  # (39, 2) crop px
    z: np.ndarray  # (39,) crop px scale
    visibility: np.ndarray  # (39,)
    presence: np.ndarray  # (39,)
    world: np.ndarray  # (39, 3) metres, in the crop's orientation
    mask: np.ndarray  # (256, 256) probability
    pose_flag: float


def decode_crop(outputs: dict[str, np.ndarray], index: int) -> CropLandmarks:
    raw = outputs["Identity"][index].reshape(NUM_LANDMARKS, 5)
    xy_norm = raw[:, :2] / LANDMARK_SIZE
    xy_norm = refine_from_heatmap(xy_norm, outputs["Identity_3"][index])
    return CropLandmarks(
        xy=xy_norm * LANDMARK_SIZE,
        z=raw[:, 2].astype(np.float64),
        visibility=_sigmoid(raw[:, 3].astype(np.float64)),
        presence=_sigmoid(raw[:, 4].astype(np.float64)),
        world=outputs["Identity_4"][index].reshape(NUM_LANDMARKS, 3).astype(np.float64),
        mask=_sigmoid(outputs["Identity_2"][index, :, :, 0]),
        pose_flag=float(outputs["Identity_1"][index].reshape(-1)[0]),
    )


def unmirror(mirrored: CropLandmarks) -> CropLandmarks:
    """Landmarks found on the mirrored crop, expressed on the original crop (x mirrored, left <-> right)."""
    xy = mirrored.xy[_MIRROR39].copy()
    # Continuous crop coordinates: the mirror of x is 256 - x.
    xy[:, 0] = LANDMARK_SIZE - xy[:, 0]
    world = mirrored.world[_MIRROR39].copy()
    world[:, 0] = -world[:, 0]
    return CropLandmarks(
        xy=xy, z=mirrored.z[_MIRROR39], visibility=mirrored.visibility[_MIRROR39],
        presence=mirrored.presence[_MIRROR39], world=world, mask=mirrored.mask[:, ::-1],
        pose_flag=mirrored.pose_flag,
    )


def average(first: CropLandmarks, second: CropLandmarks) -> CropLandmarks:
    """Flip testing: the mean of the two passes cancels the model's left/right asymmetry."""
    return CropLandmarks(
        xy=(first.xy + second.xy) / 2, z=(first.z + second.z) / 2,
        visibility=(first.visibility + second.visibility) / 2, presence=(first.presence + second.presence) / 2,
        world=(first.world + second.world) / 2, mask=(first.mask + second.mask) / 2,
        pose_flag=(first.pose_flag + second.pose_flag) / 2,
    )


def _mask_box(mask: np.ndarray, crop_to_photo: np.ndarray, width: int, height: int) -> tuple[float, float, float, float] | None:
    rows, cols = np.nonzero(mask > 0.5)
    if rows.size == 0:
        return None
    # Continuous crop coordinates: mask pixel j covers [j, j+1]; take the pixels' outer edges.
    x0, x1, y0, y1 = cols.min(), cols.max() + 1.0, rows.min(), rows.max() + 1.0
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)
    points = _apply_affine(crop_to_photo, corners)
    x0, y0 = np.clip(points.min(0), 0, [width, height])
    x1, y1 = np.clip(points.max(0), 0, [width, height])
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def to_view(crop: CropLandmarks, roi: Roi, image_size: tuple[int, int], score: float,
            pixel_scale: tuple[float, float] = (1.0, 1.0)) -> ViewPose:
    """Project crop landmarks into photo pixels (LandmarkProjectionCalculator) and world landmarks into the
    photo's orientation (WorldLandmarkProjectionCalculator).

    pixel_scale: photo px per analysed px (x, y), when the photo was decoded at a reduced scale.
    """
    # Continuous coordinates scale exactly with a reduced decode (x -> k x).
    crop_to_photo = np.diag(pixel_scale) @ cv2.invertAffineTransform(roi.to_crop())
    keypoints = _apply_affine(crop_to_photo, crop.xy[:33].astype(np.float64))
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
    world = crop.world[:33].copy()
    world[:, 0], world[:, 1] = cos * crop.world[:33, 0] - sin * crop.world[:33, 1], sin * crop.world[:33, 0] + cos * crop.world[:33, 1]
    width, height = image_size
    box = _mask_box(crop.mask, crop_to_photo, width, height)
    if box is None:
        low, high = keypoints.min(0), keypoints.max(0)
        box = (float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1]))
    return ViewPose(
        image_size=image_size,
        keypoints_px=keypoints,
        depth_px=crop.z[:33] / LANDMARK_SIZE * roi.side * pixel_scale[0],
        visibility=crop.visibility[:33],
        presence=crop.presence[:33],
        world_m=world,
        box=box,
        score=score,
        pose_flag=crop.pose_flag,
        mask_roi=crop.mask.astype(np.float32),
        roi_to_image=crop_to_photo,
    )


def model_passes(backend: Backend, flip_test: bool) -> None:
    """The model work `estimate` does for one person, on blank inputs: the benchmarks' bare model time.

    With flip testing the detector also sees the mirrored photo and the landmark model the mirrored
    crop (batch 2 each), as in `detect(symmetric=True)` and `landmark_input(with_mirror=True)`.
    """
    batch = 2 if flip_test else 1
    backend.run("detector", {"input_1": np.zeros((batch, DETECTOR_SIZE, DETECTOR_SIZE, 3), np.float32)})
    backend.run("landmark", {"input_1": np.zeros((batch, LANDMARK_SIZE, LANDMARK_SIZE, 3), np.float32)})


def main_subject_order(people: list[ViewPose]) -> list[ViewPose]:
    """Main subject first: the largest person, discounted by distance from the photo's centre.

    rank = box area x (1 - d), d = distance of the box centre from the photo centre over half the diagonal:
    a kiosk user stands large and central; bystanders are smaller or off to the side.
    """
    def rank(person: ViewPose) -> float:
        width, height = person.image_size
        x, y, w, h = person.box
        d = math.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2) / (math.hypot(width, height) / 2)
        return w * h * max(0.0, 1.0 - d)

    return sorted(people, key=rank, reverse=True)


def estimate(backend: Backend, image_bgr: np.ndarray, *, min_score: float = 0.5, min_presence: float = 0.5,
             flip_test: bool = True, photo_size: tuple[int, int] | None = None,
             timings: dict[str, float] | None = None, roll_deg: float | None = None) -> PhotoPoses:
    """Every person in an upright BGR photo, main subject first.

    When the whole-photo look finds nobody, a second looks tile by tile (detect_tiles): someone standing
    far off. photo_size: the photo's full (width, height) when image_bgr is a reduced decode of it; the results
    are in the full photo's pixels either way. timings, when given, receives "detect" and "landmarks"
    (seconds). roll_deg: the camera's roll when known; the detector then sees the photo level (see
    detector_input), so a rolled photo gets the landmarks the level one would, turned by the roll. The
    results are in the photo's own pixels either way; taking the roll out of the measures is
    daemon/leveling.py's job.
    """
    height, width = image_bgr.shape[:2]
    if photo_size is None:
        photo_size = (width, height)
    pixel_scale = (photo_size[0] / width, photo_size[1] / height)
    roll = roll_deg or 0.0
    started = time.perf_counter()
    detections = detect(backend, image_bgr, min_score, symmetric=flip_test, roll_deg=roll)
    detect_seconds = time.perf_counter() - started
    people = _landmarks(backend, image_bgr, detections, min_presence, flip_test, photo_size, pixel_scale)
    landmark_seconds = time.perf_counter() - started - detect_seconds
    if not people:
        # Nobody at the first look: a closer look, tile by tile, for someone standing far off.
        tiles_started = time.perf_counter()
        detections = detect_tiles(backend, image_bgr, min_score, symmetric=flip_test, roll_deg=roll)
        detect_seconds += time.perf_counter() - tiles_started
        landmarks_started = time.perf_counter()
        people = _landmarks(backend, image_bgr, detections, min_presence, flip_test, photo_size, pixel_scale)
        landmark_seconds += time.perf_counter() - landmarks_started
    if timings is not None:
        timings["detect"] = detect_seconds
        timings["landmarks"] = landmark_seconds
    return PhotoPoses(image_size=photo_size, people=main_subject_order(people), detections=len(detections))


def _landmarks(backend: Backend, image_bgr: np.ndarray, detections: list[Detection], min_presence: float,
               flip_test: bool, photo_size: tuple[int, int], pixel_scale: tuple[float, float]) -> list[ViewPose]:
    """Landmarks for each detection (up to MAX_PEOPLE) that the landmark model agrees is a person."""
    people = []
    for detection in detections[:MAX_PEOPLE]:
        roi = detection_roi(detection)
        batch = landmark_input(image_bgr, roi, flip_test)
        outputs = backend.run("landmark", {"input_1": batch})
        crop = decode_crop(outputs, 0)
        if flip_test:
            crop = average(crop, unmirror(decode_crop(outputs, 1)))
        if crop.pose_flag < min_presence:
            continue
        people.append(to_view(crop, roi, photo_size, detection.score, pixel_scale))
    return people
