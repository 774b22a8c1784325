"""Photo decoding: EXIF orientation at full and reduced scale, truncation, bombs, unsupported formats."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from conftest import read_photo
from PIL import Image

from daemon.errors import AnalysisError
from daemon.imageio import decode_upright

LIMIT = 60_000_000


def _sideways_jpeg(upright: Image.Image) -> bytes:
    """Stored turned 90 degrees counter-clockwise, with EXIF orientation 6 to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


def _upright_test_image(width: int, height: int) -> Image.Image:
    """A drawn photo whose top-left quadrant is red, so orientation mistakes show."""
    pixels = np.full((height, width, 3), 255, np.uint8)
    pixels[: height // 2, : width // 2] = (255, 0, 0)
    pixels[height // 2 :, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("min_side", [0, 1000])
def test_exif_orientation_is_applied_at_any_scale(min_side):
    data = _sideways_jpeg(_upright_test_image(3000, 4000))
    decoded = decode_upright(data, "front", LIMIT, min_side)
    assert decoded.photo_size == (3000, 4000)
    height, width = decoded.pixels.shape[:2]
    assert height > width
    if min_side:
        assert decoded.scale == pytest.approx(0.25, abs=0.01) and max(height, width) >= min_side
    # Top-left is red (BGR), bottom-right blue, as in the upright photo.
    assert tuple(decoded.pixels[height // 4, width // 4]) == pytest.approx((0, 0, 255), abs=40)
    assert tuple(decoded.pixels[3 * height // 4, 3 * width // 4]) == pytest.approx((255, 0, 0), abs=40)


def test_small_photos_are_never_reduced():
    data = read_photo("front", "fitlens_p1_front.jpg")
    decoded = decode_upright(data, "front", LIMIT, 1600)
    assert decoded.scale == 1.0 and decoded.photo_size == (1200, 1600)


def test_truncated_jpeg_is_refused():
    data = read_photo("front", "fitlens_p1_front.jpg")
    with pytest.raises(AnalysisError) as raised:
        decode_upright(data[: len(data) // 2], "front", LIMIT)
    assert raised.value.kind == "image_load" and "truncated" in raised.value.detail


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(AnalysisError) as raised:
        decode_upright(_png_header_only(100_000, 100_000), "side", LIMIT)
    assert "over the limit of 60 MP" in raised.value.detail and raised.value.detail.startswith("side image")


@pytest.mark.parametrize("data, words", [
    (b"hello, this is text and not a photo", "not an image in a supported format (JPEG, PNG, WEBP, BMP, TIFF"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image"),
])
def test_garbage_is_an_image_load_error(data, words):
    with pytest.raises(AnalysisError) as raised:
        decode_upright(data, "front", LIMIT)
    assert raised.value.kind == "image_load" and words in raised.value.detail


def test_png_and_webp_decode():
    image = _upright_test_image(400, 600)
    for fmt in ("PNG", "WEBP"):
        out = io.BytesIO()
        image.save(out, fmt)
        decoded = decode_upright(out.getvalue(), "front", LIMIT, 1024)
        assert decoded.photo_size == (400, 600) and decoded.pixels.shape == (600, 400, 3)
        assert cv2.mean(decoded.pixels)[0] > 0


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("min_side", [0, 500])
def test_every_exif_orientation_matches_pillow(orientation, min_side):
    """The JPEG path turns the pixels itself after a scaled decode: each of the 8 EXIF orientations must
    come out as Pillow's exif_transpose has it."""
    from PIL import ImageOps

    stored = _upright_test_image(640, 960)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=95, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(out.getvalue()))).convert("RGB"))[:, :, ::-1]
    decoded = decode_upright(out.getvalue(), "front", LIMIT, min_side)
    assert decoded.photo_size == (expected.shape[1], expected.shape[0])
    small = cv2.resize(expected, (decoded.pixels.shape[1], decoded.pixels.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(decoded.pixels.astype(int) - small.astype(int)).mean() < 6


# -- every still format a phone, browser or kiosk camera saves (issue 10) ----------------------------

ACCEPTED = ["JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "AVIF", "HEIF"]


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    if fmt == "HEIF":
        pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs the 'heic' extra (pillow-heif)")
        pillow_heif.register_heif_opener()
    out = io.BytesIO()
    if fmt == "MPO":
        # A phone's MPF JPEG: the photo, then a second image (a large thumbnail or a gain map).
        second = image.resize((image.width // 4, image.height // 4)).convert("L").convert("RGB")
        image.save(out, "MPO", save_all=True, append_images=[second], quality=95)
    else:
        image.save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ACCEPTED)
def test_every_accepted_format_decodes_to_the_photo(fmt):
    image = _upright_test_image(400, 600)
    data = _encoded(image, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF", "HEIF") else {}))
    assert Image.open(io.BytesIO(data)).format == fmt
    decoded = decode_upright(data, "front", LIMIT, 0)
    assert decoded.photo_size == (400, 600) and decoded.pixels.shape == (600, 400, 3)
    expected = np.asarray(image)[:, :, ::-1].astype(int)
    assert np.abs(decoded.pixels.astype(int) - expected).mean() < 8, fmt


def test_mpo_is_read_as_its_first_image_at_a_reduced_scale():
    image = _upright_test_image(3000, 4000)
    data = _encoded(image, "MPO")
    decoded = decode_upright(data, "side", LIMIT, 1000)
    assert decoded.photo_size == (3000, 4000) and max(decoded.pixels.shape) < 4000
    # The first image, not the grey second one: the top-left quadrant is red (BGR).
    b, g, r = decoded.pixels[10, 10]
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_exif_orientation_of_formats_decoded_by_pillow(fmt):
    stored = _upright_test_image(300, 200).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encoded(stored, fmt, **({"exif": exif.tobytes()} if fmt == "TIFF" else {}))
    decoded = decode_upright(data, "front", LIMIT)
    expected = (300, 200) if fmt == "TIFF" else (200, 300)  # BMP carries no EXIF
    assert decoded.photo_size == expected


def test_sixteen_bit_tiff_is_scaled_to_eight_bits():
    grey = (np.linspace(0, 65535, 300 * 200).reshape(200, 300)).astype(np.uint16)
    data = _encoded(Image.fromarray(grey), "TIFF")
    decoded = decode_upright(data, "front", LIMIT)
    assert decoded.pixels.shape == (200, 300, 3)
    assert decoded.pixels[0, 0, 0] < 5 and decoded.pixels[-1, -1, 0] > 250


@pytest.mark.parametrize("fmt", ["GIF", "JPEG2000", "PPM", "ICO", "TGA"])
def test_other_formats_are_refused_with_the_list(fmt):
    data = _encoded(_upright_test_image(64, 64), fmt)
    with pytest.raises(AnalysisError) as raised:
        decode_upright(data, "front", LIMIT)
    assert raised.value.kind == "image_load"
    assert raised.value.to_answer()["data"]["errors"] == "image load error"
    assert f"format {fmt} is not supported (supported: JPEG, PNG, WEBP, BMP, TIFF" in raised.value.detail


@pytest.mark.parametrize("fmt", ACCEPTED)
def test_truncated_files_of_every_format_are_refused(fmt):
    data = _encoded(_upright_test_image(400, 600), fmt)
    if fmt == "MPO":
        # Only the first image is read: a cut in the second one (the small grey one at the end) loses
        # nothing we use, a cut in the first is refused like a truncated JPEG.
        assert decode_upright(data[:-40], "front", LIMIT).photo_size == (400, 600)
        data = data[: len(data) // 2 + 4]
    for cut in (len(data) // 2, len(data) - 40):
        with pytest.raises(AnalysisError) as raised:
            decode_upright(data[:cut], "front", LIMIT)
        assert raised.value.kind == "image_load", (fmt, cut)


def test_jpeg_whose_data_ends_before_its_declared_size_is_refused():
    """Found by tests/test_fuzz.py: a JPEG cut and re-terminated, or whose header claims more pixels than
    its data holds, passed the end-marker check and OpenCV decoded it with grey for the missing rows."""
    photo = read_photo("front", "fitlens_p5_front.jpg")
    cut_and_closed = photo[: len(photo) // 2] + b"\xff\xd9"
    sof = max(photo.find(b"\xff\xc0"), photo.find(b"\xff\xc2"))  # baseline or progressive
    claims_more = photo[: sof + 5] + struct.pack(">HH", 7000, 8000) + photo[sof + 9:]
    for data in (cut_and_closed, claims_more):
        with pytest.raises(AnalysisError) as raised:
            decode_upright(data, "front", LIMIT)
        assert raised.value.kind == "image_load" and "truncated JPEG" in raised.value.detail


def test_probing_a_png_decodes_no_pixels(monkeypatch):
    """Pillow's PNG getexif() loads the whole image when no eXIf chunk comes before the pixels: probe read
    the orientation before checking the size, so a 100000x100000 bomb started decoding (gigabytes of RSS
    once glibc served Pillow's blocks from the heap: the full test suite was OOM-killed there)."""
    from PIL import PngImagePlugin

    def no_load(self):
        raise AssertionError("probe decoded the PNG's pixels")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_load)
    with pytest.raises(AnalysisError) as raised:
        decode_upright(_png_header_only(100_000, 100_000), "front", LIMIT)
    assert "over the limit" in raised.value.detail
    out = io.BytesIO()
    _upright_test_image(400, 600).save(out, "PNG")
    assert decode_upright(out.getvalue(), "front", LIMIT).photo_size == (400, 600)
