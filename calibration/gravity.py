"""The camera's roll and pitch from the gravity a phone records in a JPEG's EXIF (Apple's maker note).

An iPhone writes its accelerometer's reading at the shot into the maker note of the EXIF sub-IFD: the
maker note starts "Apple iOS\\0", a 2-byte version, "MM", then a TIFF IFD whose offsets count from the
maker note's first byte; tag 0x0008 AccelerationVector holds three signed rationals in g.

Axes (what this module relies on, docs/measures.md "Camera roll and pitch"):
- ExifTool's Apple tag table: "As viewed from the front of the phone, positive X is toward the left side,
  positive Y is toward the bottom, and positive Z points into the face of the phone". Its Apple.pm notes
  that these are Apple's Core Motion axes (X toward the right edge, Y toward the top, Z out of the screen)
  with every sign reversed, the stored numbers being Core Motion's. So the stored vector is the direction
  of gravity in Core Motion's axes (a phone held upright in portrait reads about (0, -1, 0), one lying
  screen up (0, 0, -1)), which is the same as the world's up in ExifTool's axes.
- The back camera's sensor is stored (EXIF Orientation 1) as a landscape photo taken with the phone's
  top edge to the left (home button or USB port on the right): stored x right = -Y, stored y down = -X,
  the camera's forward = -Z (into the screen's face, away from the person holding the phone).
- The daemon decodes photos upright (daemon/imageio.decode_upright), so the up vector is turned from the
  stored frame into the upright one with the EXIF Orientation; mirrored orientations (2, 4, 5, 7) are
  refused (they come from a front camera or an edit, whose axes are not verified), and so is a photo
  whose LensModel names the front camera.

Conventions as calibration/placement.py: roll > 0 when the world's up leans toward the upright image's
right; pitch > 0 when the camera looks down.

Bad, truncated or hostile EXIF never raises: it gives None, like a file that records no gravity.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from calibration.intrinsics import exif_tags
from calibration.roll import CameraTilt

SOURCE = "exif"
TAG_ORIENTATION = 0x0112
TAG_MAKER_NOTE = 0x927C
TAG_LENS_MODEL = 0xA434
APPLE_SIGNATURE = b"Apple iOS\x00"
# Signature (10 bytes), version (2), byte order "MM" (2); the IFD follows.
APPLE_IFD_START = 14
APPLE_TAG_ACCELERATION = 0x0008
TIFF_SRATIONAL = 10
# A maker note's IFD with more entries than this is garbage, not a phone's (Apple's hold about 40-70).
MAX_IFD_ENTRIES = 1000
# An accelerometer reading more than this far from 1 g was taken with the phone moving (or is garbage):
# its direction is not gravity's.
MAX_G_DEVIATION = 0.15
# Gravity's share in the image plane below which the roll is not told (|pitch| above 60 degrees: the
# phone nearly flat, pointing at the floor or the ceiling). The roll's error grows as 1 / that share
# (about 0.6 degrees / share for the accelerometer's ~0.01 g), and no standing person is photographed
# that way.
MIN_IN_PLANE = 0.5
# The accelerometer measures gravity's direction directly (to about half a degree on a still phone),
# unlike the photo's lines: full confidence.
CONFIDENCE = 1.0

# EXIF orientation -> the turn of a direction (x right, y down) in the stored pixels into the upright
# photo's, matching the turn daemon/imageio.py applies to the pixels.
_TO_UPRIGHT = {
    1: lambda x, y: (x, y),
    3: lambda x, y: (-x, -y),  # rotated 180
    6: lambda x, y: (-y, x),  # stored turned 90 degrees clockwise to be upright
    8: lambda x, y: (y, -x),  # stored turned 90 degrees counter-clockwise to be upright
}


def apple_acceleration(maker_note: bytes) -> tuple[float, float, float] | None:
    """The AccelerationVector (g, as stored) of an Apple maker note, or None when absent or unreadable."""
    try:
        if not maker_note.startswith(APPLE_SIGNATURE) or len(maker_note) < APPLE_IFD_START + 2:
            return None
        order = maker_note[12:14]
        if order not in (b"MM", b"II"):
            return None
        endian = ">" if order == b"MM" else "<"
        (count,) = struct.unpack_from(endian + "H", maker_note, APPLE_IFD_START)
        if count > MAX_IFD_ENTRIES:
            return None
        for index in range(count):
            entry = APPLE_IFD_START + 2 + 12 * index
            if entry + 12 > len(maker_note):
                return None
            tag, kind, number, offset = struct.unpack_from(endian + "HHII", maker_note, entry)
            if tag != APPLE_TAG_ACCELERATION:
                continue
            # Offsets count from the maker note's first byte (24 bytes never fit in the entry itself).
            if kind != TIFF_SRATIONAL or number != 3 or offset + 24 > len(maker_note):
                return None
            values = struct.unpack_from(endian + "6i", maker_note, offset)
            if any(values[i] == 0 for i in (1, 3, 5)):
                return None
            vector = tuple(values[i] / values[i + 1] for i in (0, 2, 4))
            return vector if all(math.isfinite(v) for v in vector) else None  # type: ignore[return-value]
        return None
    except (struct.error, TypeError, ValueError):
        return None


def up_in_upright_camera(acceleration: tuple[float, float, float], orientation: int) -> tuple[float, float, float]:
    """The world's up (unit) in the upright photo's camera frame (x right, y down, z forward), from
    Apple's stored acceleration (gravity in Core Motion's axes) and the EXIF orientation (1, 3, 6, 8)."""
    ax, ay, az = acceleration
    norm = math.sqrt(ax * ax + ay * ay + az * az)
    # Up = -gravity; stored x = -Y, stored y = -X, forward = -Z (the module's docstring).
    stored_x, stored_y, forward = ay / norm, ax / norm, az / norm
    x, y = _TO_UPRIGHT[orientation](stored_x, stored_y)
    return x, y, forward


def tilt_from_up(up: tuple[float, float, float]) -> tuple[float | None, float]:
    """(roll or None when the camera points nearly straight up or down, pitch), degrees, as
    calibration/placement.py defines them."""
    x, y, z = up
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, -z))))
    if math.hypot(x, y) < MIN_IN_PLANE:
        return None, pitch
    return math.degrees(math.atan2(x, -y)), pitch


def _orientation(tags: Mapping[int, Any]) -> int:
    """The EXIF orientation as daemon/imageio.probe reads it (outside 1-8: 1)."""
    try:
        value = int(tags.get(TAG_ORIENTATION, 1))
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def exif_tilt(source: bytes | Mapping[int, Any], image_format: str | None = None) -> CameraTilt | None:
    """The camera's roll and pitch from the gravity a JPEG records (source "exif"), or None when it
    records none (or its EXIF cannot be read).

    source: the photo's bytes, or its EXIF tags already read (daemon/imageio.Decoded.exif, flattened as
    calibration/intrinsics.exif_tags does) with the photo's format in `image_format`. Only JPEG (and MPO,
    a JPEG with a second image) is read: the axes are verified for the JPEGs an iPhone writes.
    Recorded but unusable gravity (a mirrored or front-camera photo, a phone that was moving, or one
    pointing nearly straight down or up) gives a CameraTilt without a roll, with the reason in `note`.
    `applied` is left False: the caller decides.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        image_format = "JPEG" if bytes(source[:3]) == b"\xff\xd8\xff" else "other"
    if image_format not in ("JPEG", "MPO"):
        return None
    tags = exif_tags(source)
    maker_note = tags.get(TAG_MAKER_NOTE)
    if not isinstance(maker_note, (bytes, bytearray)):
        return None
    acceleration = apple_acceleration(bytes(maker_note))
    if acceleration is None:
        return None
    orientation = _orientation(tags)
    lens = tags.get(TAG_LENS_MODEL)
    if isinstance(lens, bytes):
        lens = lens.decode("ascii", "replace")
    if isinstance(lens, str) and "front" in lens.lower():
        return CameraTilt(None, None, SOURCE, 0.0, note="the phone's gravity is not read for its front camera")
    if orientation not in _TO_UPRIGHT:
        return CameraTilt(None, None, SOURCE, 0.0,
                          note=f"the phone's gravity is not read for a mirrored photo (EXIF orientation {orientation})")
    magnitude = math.sqrt(sum(v * v for v in acceleration))
    if abs(magnitude - 1.0) > MAX_G_DEVIATION:
        return CameraTilt(None, None, SOURCE, 0.0,
                          note=f"the phone was moving when the photo was taken ({magnitude:.2f} g)")
    roll, pitch = tilt_from_up(up_in_upright_camera(acceleration, orientation))
    if roll is None:
        return CameraTilt(None, pitch, SOURCE, 0.0,
                          note=f"the phone pointed {'down' if pitch > 0 else 'up'} too steeply to read its roll")
    return CameraTilt(roll, pitch, SOURCE, CONFIDENCE)
