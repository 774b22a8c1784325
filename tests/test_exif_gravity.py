"""The camera's roll and pitch from the gravity an iPhone records in its EXIF maker note (issue 12,
calibration/gravity.py), and through the whole pipeline.

The JPEGs are made at test time from the shared photos, with EXIF written here: an Apple maker note laid
out as iPhones write it ("Apple iOS\\0", version, "MM", a big-endian IFD whose offsets count from the
maker note's start, tag 0x0008 AccelerationVector as three signed rationals in g).

The acceleration a phone would record is worked out here from how it is held, independently of the
module's route (sensor frame -> stored pixels -> EXIF turn): for each orientation, where Core Motion's
axes (X toward the phone's right edge, Y toward its top edge, Z out of the screen) point in the upright
photo's camera frame (x right, y down, z forward), and gravity = -up seen along those axes.
"""

from __future__ import annotations

import math
import random
import statistics
import struct

import cv2
import numpy as np
import pytest
from photo_poses import read
from test_camera_tilt import MEDIAN_TOLERANCE_DEG, _answer, _jpeg, front_line_shifts, measure_shifts, turned

from calibration.gravity import apple_acceleration, exif_tilt
from calibration.placement import camera_up_vector
from daemon import guidance

# Core Motion's X (right edge), Y (top edge), Z (out of the screen) in the upright photo's camera frame,
# for the back camera, by how the phone is held for each EXIF orientation.
DEVICE_AXES = {
    # Landscape, top edge to the left (home button / port on the right): the sensor's own orientation.
    1: ((0, -1, 0), (-1, 0, 0), (0, 0, -1)),
    # Landscape, top edge to the right.
    3: ((0, 1, 0), (1, 0, 0), (0, 0, -1)),
    # Portrait, top edge up: the usual way.
    6: ((1, 0, 0), (0, -1, 0), (0, 0, -1)),
    # Portrait upside down.
    8: ((-1, 0, 0), (0, 1, 0), (0, 0, -1)),
}
# EXIF orientation -> the turn that stores an upright photo so that the orientation turns it back.
TO_STORED = {
    1: lambda image: image,
    3: lambda image: cv2.rotate(image, cv2.ROTATE_180),
    6: lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE),
    8: lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
}
ROLLS = (2.0, -2.0, 4.0, -4.0)
# Rationals as iPhones write them (numerator over a fixed denominator) lose nothing that matters.
DENOMINATOR = 100000


def recorded_acceleration(roll_deg: float, pitch_deg: float, orientation: int) -> tuple[float, float, float]:
    """What the phone's accelerometer reads (g, Core Motion's axes) when its photo, turned upright, was
    taken with this roll and pitch."""
    gravity = -camera_up_vector(pitch_deg, roll_deg)
    return tuple(float(gravity @ np.array(axis, float)) for axis in DEVICE_AXES[orientation])  # type: ignore[return-value]


def apple_maker_note(acceleration: tuple[float, float, float] | None, extra_entries: int = 2) -> bytes:
    """An Apple maker note: signature, version 1, "MM", an IFD (a few int32s entries like a phone's, the
    acceleration vector), its values after the IFD, offsets from the maker note's start."""
    entries = [(0x0001, 9, 1, struct.pack(">i", 14))]  # MakerNoteVersion, int32s
    entries += [(0x0004 + i, 9, 1, struct.pack(">i", 1)) for i in range(extra_entries)]
    if acceleration is not None:
        values = []
        for component in acceleration:
            values += [round(component * DENOMINATOR), DENOMINATOR]
        entries.append((0x0008, 10, 3, struct.pack(">6i", *values)))
    entries.sort()
    header = b"Apple iOS\x00" + struct.pack(">H", 1) + b"MM"
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = len(header) + ifd_size
    ifd, data = struct.pack(">H", len(entries)), b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\x00")
        else:
            ifd += struct.pack(">HHII", tag, kind, count, data_offset + len(data))
            data += value
    return header + ifd + struct.pack(">I", 0) + data


def exif_segment(orientation: int | None, maker_note: bytes | None, lens_model: str | None = None) -> bytes:
    """A JPEG APP1 EXIF segment (big-endian TIFF): IFD0 with Orientation and the EXIF pointer, the EXIF
    sub-IFD with MakerNote (and LensModel)."""
    ifd0 = []
    if orientation is not None:
        ifd0.append((0x0112, 3, 1, struct.pack(">H", orientation)))
    sub = []
    if maker_note is not None:
        sub.append((0x927C, 7, len(maker_note), maker_note))
    if lens_model is not None:
        text = lens_model.encode("ascii") + b"\x00"
        sub.append((0xA434, 2, len(text), text))
    ifd0.append((0x8769, 4, 1, None))  # the sub-IFD's offset, filled in below
    ifd0_size = 2 + 12 * len(ifd0) + 4
    sub_offset = 8 + ifd0_size
    sub_size = 2 + 12 * len(sub) + 4
    data_offset = sub_offset + sub_size

    def ifd(entries, data_start):
        out, data = struct.pack(">H", len(entries)), b""
        for tag, kind, count, value in sorted(entries, key=lambda e: e[0]):
            if value is None:
                out += struct.pack(">HHII", tag, kind, count, sub_offset)
            elif len(value) <= 4:
                out += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\x00")
            else:
                out += struct.pack(">HHII", tag, kind, count, data_start + len(data))
                data += value
                if len(data) % 2:
                    data += b"\x00"
        return out + struct.pack(">I", 0), data

    first, first_data = ifd(ifd0, data_offset)
    assert not first_data
    second, second_data = ifd(sub, data_offset)
    tiff = b"MM" + struct.pack(">HI", 42, 8) + first + second + second_data
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def with_exif(jpeg: bytes, segment: bytes) -> bytes:
    """The JPEG with the EXIF segment right after its start-of-image marker."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + segment + jpeg[2:]


def phone_jpeg(upright: np.ndarray, roll_deg: float, pitch_deg: float, orientation: int, **kw) -> bytes:
    """The upright photo stored as a phone held this way stores it, with the gravity it records."""
    stored = TO_STORED[orientation](upright)
    maker_note = apple_maker_note(recorded_acceleration(roll_deg, pitch_deg, orientation))
    return with_exif(_jpeg(stored), exif_segment(orientation, maker_note, **kw))


@pytest.fixture(scope="module")
def small_photo() -> np.ndarray:
    image = read("side", "fitlens_p4_side.jpg")
    return cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("orientation", (1, 3, 6, 8))
@pytest.mark.parametrize("roll", ROLLS)
def test_roll_and_pitch_read_back(small_photo, orientation, roll):
    """Each way of holding the phone, each roll, a camera looking 7 degrees down: read back exactly (to the
    rationals' rounding), and the photo decodes upright as the daemon sees it."""
    data = phone_jpeg(small_photo, roll, 7.0, orientation)
    tilt = exif_tilt(data)
    assert tilt is not None and tilt.source == "exif"
    assert tilt.roll_deg == pytest.approx(roll, abs=0.01)
    assert tilt.pitch_deg == pytest.approx(7.0, abs=0.01)
    assert tilt.confident and tilt.confidence == 1.0 and tilt.note is None
    from daemon.imageio import decode_upright

    decoded = decode_upright(data, "side", 50_000_000)
    assert decoded.pixels.shape == small_photo.shape


def test_pitch_sign_and_a_level_phone(small_photo):
    """Looking up reads a negative pitch; a level phone reads no roll and no pitch."""
    up = exif_tilt(phone_jpeg(small_photo, 0.0, -10.0, 6))
    assert up.pitch_deg == pytest.approx(-10.0, abs=0.01) and up.roll_deg == pytest.approx(0.0, abs=0.01)
    level = exif_tilt(phone_jpeg(small_photo, 0.0, 0.0, 1))
    assert level.roll_deg == pytest.approx(0.0, abs=0.01) and level.pitch_deg == pytest.approx(0.0, abs=0.01)


def test_the_signs_follow_core_motion(small_photo):
    """Anchored on Core Motion's documented readings, not on this file's own table: a phone upright in
    portrait reads (0, -1, 0); turned so its right edge rises (its top leaning left, as the person holding
    it sees the screen) gravity gains a negative X, and the world's up leans to the photo's right."""
    s = math.sin(math.radians(3.0))
    c = math.cos(math.radians(3.0))
    data = with_exif(_jpeg(TO_STORED[6](small_photo)), exif_segment(6, apple_maker_note((-s, -c, 0.0))))
    assert exif_tilt(data).roll_deg == pytest.approx(3.0, abs=0.01)
    # Screen tipped up toward the sky by 20 degrees (the camera looking down): gravity gains a negative Z.
    s, c = math.sin(math.radians(20.0)), math.cos(math.radians(20.0))
    data = with_exif(_jpeg(TO_STORED[6](small_photo)), exif_segment(6, apple_maker_note((0.0, -c, -s))))
    assert exif_tilt(data).pitch_deg == pytest.approx(20.0, abs=0.01)


def test_no_gravity_recorded(small_photo):
    """No EXIF, EXIF without a maker note, another maker's note, an Apple note without the vector: None."""
    plain = _jpeg(small_photo)
    assert exif_tilt(plain) is None
    assert exif_tilt(with_exif(plain, exif_segment(6, None))) is None
    assert exif_tilt(with_exif(plain, exif_segment(1, b"OLYMPUS\x00II\x03\x00" + bytes(40)))) is None
    assert exif_tilt(with_exif(plain, exif_segment(1, apple_maker_note(None)))) is None
    ok, png = cv2.imencode(".png", small_photo)
    assert ok
    assert exif_tilt(png.tobytes()) is None
    assert exif_tilt(b"") is None and exif_tilt(b"not an image") is None


def test_unusable_gravity_says_why(small_photo):
    """Recorded but unusable: no roll, a reason, never applied."""
    flat = exif_tilt(phone_jpeg(small_photo, 0.0, 75.0, 6))
    assert flat.roll_deg is None and not flat.confident and "down" in flat.note
    assert flat.pitch_deg == pytest.approx(75.0, abs=0.01)
    assert guidance.tilt_guidance("Side", flat)  # says it could not be read
    front = exif_tilt(phone_jpeg(small_photo, 2.0, 0.0, 6, lens_model="iPhone 12 front camera 2.71mm f/2.2"))
    assert front.roll_deg is None and "front camera" in front.note
    back = exif_tilt(phone_jpeg(small_photo, 2.0, 0.0, 6, lens_model="iPhone 12 back dual wide camera 4.2mm f/1.6"))
    assert back.roll_deg == pytest.approx(2.0, abs=0.01)
    mirrored = with_exif(_jpeg(small_photo), exif_segment(2, apple_maker_note(recorded_acceleration(2.0, 0.0, 1))))
    tilt = exif_tilt(mirrored)
    assert tilt.roll_deg is None and "mirrored" in tilt.note
    moving = with_exif(_jpeg(small_photo), exif_segment(1, apple_maker_note((0.0, -1.4, 0.1))))
    assert "moving" in exif_tilt(moving).note


def test_truncated_and_garbled_maker_notes_give_none(small_photo):
    """Every cut of the maker note, offsets pointing outside it, zero denominators, wrong types, random
    bytes after the signature: None, never an error."""
    plain = _jpeg(small_photo)
    note = apple_maker_note(recorded_acceleration(2.0, 0.0, 1))
    assert exif_tilt(with_exif(plain, exif_segment(1, note))).roll_deg == pytest.approx(2.0, abs=0.01)
    for cut in range(len(note)):  # the vector's values are the note's last 24 bytes
        assert apple_acceleration(note[:cut]) is None, cut
        assert exif_tilt(with_exif(plain, exif_segment(1, note[:cut]))) is None, cut
    entry_of_vector = 14 + 2 + 12 * 3  # after MakerNoteVersion and the two int32s entries
    broken = bytearray(note)
    struct.pack_into(">I", broken, entry_of_vector + 8, 0xFFFFFFF0)  # offset far outside
    assert exif_tilt(with_exif(plain, exif_segment(1, bytes(broken)))) is None
    zero = bytearray(note)
    struct.pack_into(">i", zero, len(note) - 4, 0)  # a zero denominator
    assert exif_tilt(with_exif(plain, exif_segment(1, bytes(zero)))) is None
    wrong_type = bytearray(note)
    struct.pack_into(">H", wrong_type, entry_of_vector + 2, 5)  # unsigned rationals
    assert exif_tilt(with_exif(plain, exif_segment(1, bytes(wrong_type)))) is None
    huge_count = bytearray(note)
    struct.pack_into(">H", huge_count, 14, 0xFFFF)
    assert exif_tilt(with_exif(plain, exif_segment(1, bytes(huge_count)))) is None
    generator = random.Random(12)
    for _ in range(200):
        garbage = b"Apple iOS\x00\x00\x01MM" + bytes(generator.randrange(256) for _ in range(generator.randrange(80)))
        exif_tilt(with_exif(plain, exif_segment(generator.choice((1, 3, 6, 8, 0, 9)), garbage)))
    # A damaged EXIF segment itself (cut inside the TIFF structure).
    segment = exif_segment(1, note)
    for cut in range(4, len(segment), 7):
        exif_tilt(with_exif(plain, segment[:cut]))


def test_exif_roll_applied_in_the_answer(analyzer):
    """The whole pipeline: photos turned by a known roll and carrying the matching Apple gravity (the
    fronts stored sideways, orientation 6, the sides upright, orientation 1) measure what the level
    photos do, and the answer's camera says the roll came from EXIF and was applied; the same turned
    photos recording a level phone measure the front lines off by the turn."""
    corrected, uncorrected = [], []
    for pair in ("fitlens_p2", "fitlens_p4", "fitlens_p5"):
        front = read("front", f"{pair}_front.jpg")
        side = read("side", f"{pair}_side.jpg")
        level = _answer(analyzer, phone_jpeg(front, 0.0, 0.0, 6), phone_jpeg(side, 0.0, 0.0, 1))
        for view in ("front", "side"):
            tilt = level["camera"][view]["tilt"]
            assert tilt["source"] == "exif" and abs(tilt["roll_deg"]) <= 0.01
        for roll in (2.0, -4.0):
            front_turned, side_turned = turned(front, roll, zoom=False), turned(side, roll, zoom=False)
            answer = _answer(analyzer, phone_jpeg(front_turned, roll, 3.0, 6), phone_jpeg(side_turned, roll, 3.0, 1))
            for view in ("front", "side"):
                tilt = answer["camera"][view]["tilt"]
                assert tilt["source"] == "exif" and tilt["applied"], tilt
                assert tilt["roll_deg"] == pytest.approx(roll, abs=0.1)
                assert tilt["pitch_deg"] == pytest.approx(3.0, abs=0.1)
            assert any("tilted by" in message for message in answer["message"]), answer["message"]
            corrected += measure_shifts(answer, level, (pair, roll))
            if roll == 2.0:
                unlevelled = _answer(analyzer, phone_jpeg(front_turned, 0.0, 3.0, 6), phone_jpeg(side_turned, 0.0, 3.0, 1))
                uncorrected += front_line_shifts(unlevelled, level)
    assert statistics.median(corrected) <= MEDIAN_TOLERANCE_DEG, corrected
    assert statistics.median(uncorrected) >= 1.5, uncorrected
