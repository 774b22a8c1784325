"""Synthetic ViewPose builders with known geometry, for measure, grade and render tests.

front_pose(): a person facing the camera (their left on image right) whose shoulder, pelvis, ear and
knee lines, lean and leg angles are set in degrees with the signs of daemon/measures.py. side_pose(): a
person in profile with a set craniovertebral angle, forward shoulder angle, sagittal lean, head angle and
body turn; it carries a segmentation mask whose neck contour puts C7 exactly where the angles need it.
mirror_view() and scale_view() change a ViewPose as mirroring or resizing the photo would.
"""

from __future__ import annotations

import math

import numpy as np

from daemon.measures import C7_ROW_FRACTION, FACE_POINTS, MASK_PIXEL_CENTER
from daemon.views import BLAZEPOSE_MIRROR, BP, ViewPose

PX_PER_M = 850.0


def _rot_line(center: np.ndarray, half: float, tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) points of a line facing the camera; positive tilt = the person's right lower."""
    t = math.radians(tilt_deg)
    offset = np.array([half * math.cos(t), -half * math.sin(t)])
    return center - offset, center + offset  # right is on image left


def _knee_on_line(hip, ankle, knee_center, knee_tilt_deg, other_sign):
    """Intersection of the hip-ankle line with the knee line through knee_center at knee_tilt_deg."""
    t = math.radians(knee_tilt_deg)
    direction = np.array([math.cos(t), -math.sin(t)])  # from right knee toward left knee
    axis = ankle - hip
    # hip + a*axis = knee_center + b*direction
    a, _b = np.linalg.solve(np.column_stack([axis, -direction]), knee_center - hip)
    return hip + a * axis


def _varus_knee(hip, knee_on_line, ankle, lateral, varus_deg):
    """Move the knee perpendicular to the hip-ankle line so the leg bends by varus_deg (+ = lateral)."""
    if varus_deg == 0:
        return knee_on_line
    axis = ankle - hip
    length = np.linalg.norm(axis)
    unit = axis / length
    normal = np.array([-unit[1], unit[0]])
    if normal @ lateral < 0:
        normal = -normal
    a = float((knee_on_line - hip) @ unit)
    b = length - a
    target = math.radians(abs(varus_deg))
    lo, hi = 0.0, length
    for _ in range(200):  # atan(d/a) + atan(d/b) is increasing in d
        mid = 0.5 * (lo + hi)
        if math.atan(mid / a) + math.atan(mid / b) < target:
            lo = mid
        else:
            hi = mid
    d = 0.5 * (lo + hi) * (1 if varus_deg > 0 else -1)
    return hip + a * unit + d * normal


def _finish(image_size, px: np.ndarray, world: np.ndarray, mask_roi=None, roi_to_image=None) -> ViewPose:
    lo = px.min(axis=0)
    hi = px.max(axis=0)
    return ViewPose(
        image_size=image_size,
        keypoints_px=px.astype(np.float64),
        depth_px=np.zeros(33),
        visibility=np.full(33, 0.99),
        presence=np.full(33, 0.99),
        world_m=world.astype(np.float64),
        box=(float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])),
        score=0.95,
        pose_flag=0.99,
        mask_roi=mask_roi,
        roi_to_image=roi_to_image,
    )


def front_pose(
    *,
    lean_deg: float = 0.0,
    shoulder_tilt_deg: float = 0.0,
    pelvic_tilt_deg: float = 0.0,
    head_tilt_deg: float = 0.0,
    knee_tilt_deg: float = 0.0,
    left_varus_deg: float = 0.0,
    right_varus_deg: float = 0.0,
    image_size: tuple[int, int] = (1000, 2000),
) -> ViewPose:
    """A person facing the camera. Positive tilts lower the person's right side; positive lean is toward
    the person's right (image left); positive varus bows that knee outward."""
    px = np.zeros((33, 2))
    ankle_mid = np.array([500.0, 1800.0])
    pelvis = np.array([500.0, 1050.0])
    height = 1200.0  # ankle midpoint to shoulder midpoint
    lean = math.radians(lean_deg)
    shoulder_mid = ankle_mid + height * np.array([-math.sin(lean), -math.cos(lean)])
    ear_mid = shoulder_mid + np.array([0.0, -230.0])

    r_sh, l_sh = _rot_line(shoulder_mid, 150.0, shoulder_tilt_deg)
    r_hip, l_hip = _rot_line(pelvis, 90.0, pelvic_tilt_deg)
    r_ear, l_ear = _rot_line(ear_mid, 55.0, head_tilt_deg)
    r_ank = ankle_mid + np.array([-100.0, 0.0])
    l_ank = ankle_mid + np.array([100.0, 0.0])
    knee_center = 0.5 * (0.5 * (r_hip + l_hip) + ankle_mid)
    r_knee = _knee_on_line(r_hip, r_ank, knee_center, knee_tilt_deg, -1)
    l_knee = _knee_on_line(l_hip, l_ank, knee_center, knee_tilt_deg, +1)
    r_knee = _varus_knee(r_hip, r_knee, r_ank, r_hip - l_hip, right_varus_deg)
    l_knee = _varus_knee(l_hip, l_knee, l_ank, l_hip - r_hip, left_varus_deg)

    def put(name, p):
        px[BP[name]] = p

    for side, sh, hip, knee, ank, ear, sgn in (
        ("right", r_sh, r_hip, r_knee, r_ank, r_ear, -1.0),
        ("left", l_sh, l_hip, l_knee, l_ank, l_ear, 1.0),
    ):
        put(f"{side}_shoulder", sh)
        put(f"{side}_hip", hip)
        put(f"{side}_knee", knee)
        # The ankle group averages to the ankle position given above (ankle, heel, toe).
        put(f"{side}_ankle", ank + [0.0, -12.0])
        put(f"{side}_heel", ank + [0.0, 2.0])
        put(f"{side}_foot_index", ank + [0.0, 10.0])
        put(f"{side}_ear", ear)
        put(f"{side}_elbow", sh + [sgn * 30.0, 260.0])
        put(f"{side}_wrist", sh + [sgn * 40.0, 500.0])
        for finger, dx in (("pinky", 8.0), ("index", 0.0), ("thumb", -8.0)):
            put(f"{side}_{finger}", sh + [sgn * (40.0 + dx), 560.0])
        put(f"{side}_eye_inner", ear_mid + [sgn * 12.0, -20.0])
        put(f"{side}_eye", ear_mid + [sgn * 22.0, -20.0])
        put(f"{side}_eye_outer", ear_mid + [sgn * 32.0, -20.0])
        put(f"mouth_{side}", ear_mid + [sgn * 15.0, 35.0])
    put("nose", ear_mid + [0.0, 5.0])
    hip_mid = 0.5 * (r_hip + l_hip)
    world = np.zeros((33, 3))
    world[:, :2] = (px - hip_mid) / PX_PER_M
    return _finish(image_size, px, world)


def side_pose(
    *,
    facing: int = 1,
    cva_deg: float = 50.0,
    forward_shoulder_deg: float = 55.0,
    tilt_deg: float = 0.0,
    head_deg: float = 0.0,
    yaw_deg: float = 90.0,
    image_size: tuple[int, int] = (1000, 2000),
    with_mask: bool = True,
) -> ViewPose:
    """A person in profile facing image right (facing=1) or left (-1).

    cva_deg: craniovertebral angle (ear midpoint vs the mask-found C7); forward_shoulder_deg: C7 to
    shoulder midpoint vs horizontal; tilt_deg: ankles-to-shoulders vs vertical, + = forward; head_deg:
    ear-to-face direction, + = face down; yaw_deg: turn from facing the camera (90 = profile).
    """
    f = float(facing)
    ear_mid = np.array([500.0, 400.0])
    shoulder_y = 600.0
    c7_y = ear_mid[1] + C7_ROW_FRACTION * (shoulder_y - ear_mid[1])
    c7_x = ear_mid[0] - f * (c7_y - ear_mid[1]) / math.tan(math.radians(cva_deg))
    shoulder_mid = np.array([c7_x + f * (shoulder_y - c7_y) / math.tan(math.radians(forward_shoulder_deg)),
                             shoulder_y])
    height = 1200.0
    tilt = math.radians(tilt_deg)
    ankle_mid = shoulder_mid + height * np.array([-f * math.sin(tilt), math.cos(tilt)])
    hip_mid = shoulder_mid + 0.45 * (ankle_mid - shoulder_mid)
    knee_mid = shoulder_mid + 0.75 * (ankle_mid - shoulder_mid)
    head = math.radians(head_deg)
    face = ear_mid + 60.0 * np.array([f * math.cos(head), math.sin(head)])

    # Left and right of each pair differ by the body's width turned by yaw: dx on the photo, dz in depth.
    half_width_m = 0.15
    yaw = math.radians(yaw_deg)
    half_dx_m = half_width_m * math.cos(yaw)
    half_dz_m = half_width_m * math.sin(yaw)

    px = np.zeros((33, 2))
    world = np.zeros((33, 3))
    mids = {
        "ear": ear_mid, "shoulder": shoulder_mid, "hip": hip_mid, "knee": knee_mid,
        "elbow": shoulder_mid + [f * 10.0, 260.0], "wrist": shoulder_mid + [f * 20.0, 500.0],
        "pinky": shoulder_mid + [f * 25.0, 560.0], "index": shoulder_mid + [f * 30.0, 560.0],
        "thumb": shoulder_mid + [f * 35.0, 550.0],
        "ankle": ankle_mid + [-f * 15.0, -20.0], "heel": ankle_mid + [-f * 35.0, 10.0],
        "foot_index": ankle_mid + [f * 50.0, 10.0],
    }
    for part, mid in mids.items():
        for side, sgn in (("left", 1.0), ("right", -1.0)):
            # Facing image right, the person's left is away from the camera (z > 0) and, turned toward
            # the camera, toward image left; mirrored for facing left.
            px[BP[f"{side}_{part}"]] = mid + [-f * sgn * half_dx_m * PX_PER_M, 0.0]
            world[BP[f"{side}_{part}"], 2] = sgn * half_dz_m
    for name in FACE_POINTS:
        px[BP[name]] = face
    world[:, :2] = (px - hip_mid) / PX_PER_M

    mask_roi = roi_to_image = None
    if with_mask:
        # A 256x256 ROI over a 2000-px square; the person is the half-plane in front of the neck's rear
        # contour, with a linear 0..1 ramp 4 ROI px wide so bilinear sampling crosses 0.5 exactly at C7.
        # Mask pixel j covers the crop interval [j, j + 1] (the landmarks' convention), so its value is
        # the ramp at its centre j + 0.5 (measures.MASK_PIXEL_CENTER).
        scale = 2000.0 / 256.0
        origin = np.array([0.0, 0.0])
        roi_to_image = np.array([[scale, 0.0, origin[0]], [0.0, scale, origin[1]]])
        u_edge = (c7_x - origin[0]) / scale
        u = (np.arange(256, dtype=np.float64) + MASK_PIXEL_CENTER)[None, :].repeat(256, axis=0)
        mask_roi = np.clip(0.5 + f * (u - u_edge) / 4.0, 0.0, 1.0).astype(np.float32)
    return _finish(image_size, px, world, mask_roi, roi_to_image)


def mirror_view(view: ViewPose) -> ViewPose:
    """The ViewPose a mirrored photo would give: x mirrored, left and right landmarks swapped."""
    width = view.image_size[0]
    px = view.keypoints_px[BLAZEPOSE_MIRROR].copy()
    px[:, 0] = width - px[:, 0]
    world = view.world_m[BLAZEPOSE_MIRROR].copy()
    world[:, 0] = -world[:, 0]
    roi = None
    if view.roi_to_image is not None:
        flip = np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        roi = (flip @ np.vstack([view.roi_to_image, [0, 0, 1]]))[:2]
    x, y, w, h = view.box
    return ViewPose(
        image_size=view.image_size, keypoints_px=px, depth_px=view.depth_px[BLAZEPOSE_MIRROR].copy(),
        visibility=view.visibility[BLAZEPOSE_MIRROR].copy(), presence=view.presence[BLAZEPOSE_MIRROR].copy(),
        world_m=world, box=(width - x - w, y, w, h), score=view.score, pose_flag=view.pose_flag,
        mask_roi=view.mask_roi, roi_to_image=roi,
    )


def scale_view(view: ViewPose, factor: float) -> ViewPose:
    """The ViewPose of the photo resized by factor (world landmarks and the ROI mask unchanged)."""
    roi = None if view.roi_to_image is None else np.asarray(view.roi_to_image) * factor
    x, y, w, h = view.box
    return ViewPose(
        image_size=(round(view.image_size[0] * factor), round(view.image_size[1] * factor)),
        keypoints_px=view.keypoints_px * factor, depth_px=view.depth_px * factor,
        visibility=view.visibility.copy(), presence=view.presence.copy(), world_m=view.world_m.copy(),
        box=(x * factor, y * factor, w * factor, h * factor), score=view.score, pose_flag=view.pose_flag,
        mask_roi=view.mask_roi, roi_to_image=roi,
    )


def hide(view: ViewPose, *names: str, visibility: float = 0.1, presence: float | None = None) -> ViewPose:
    """A copy with the named landmarks made invisible (and, if given, absent)."""
    out = ViewPose(**{k: getattr(view, k) for k in view.__dataclass_fields__})
    out.visibility = view.visibility.copy()
    out.presence = view.presence.copy()
    for name in names:
        out.visibility[BP[name]] = visibility
        if presence is not None:
            out.presence[BP[name]] = presence
    return out
