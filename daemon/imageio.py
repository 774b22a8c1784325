"""Photo bytes -> upright BGR pixels, refusing broken, truncated, unsupported and oversized photos early."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError, features

from calibration.intrinsics import exif_tags
from daemon.errors import AnalysisError

# We check the pixel count ourselves, before decoding, with a message that says what the limit is.
Image.MAX_IMAGE_PIXELS = None

try:  # Phones send HEIC; pillow-heif is optional (extra "heic").
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF = True
except ImportError:  # pragma: no cover - depends on the install
    _HEIF = False

# What phones, browsers and kiosk cameras save as stills (README "Photos"). Pillow names a JPEG with a second
# embedded image (MPF: large thumbnail, gain map, as many phones write) MPO: it is read as a JPEG, first
# image. Everything else (GIF, JPEG 2000, PPM, ICO, ...) is refused with an `image load error`.
_JPEG_LIKE = ("JPEG", "MPO")
_VIA_PILLOW = ("BMP", "TIFF") + (("AVIF",) if features.check("avif") else ()) + (("HEIF",) if _HEIF else ())
SUPPORTED_FORMATS = _JPEG_LIKE + ("PNG", "WEBP") + _VIA_PILLOW
_FORMAT_NAMES = ", ".join(dict.fromkeys("JPEG" if f == "MPO" else f for f in SUPPORTED_FORMATS))


def _looks_truncated(data: bytes, image_format: str) -> bool:
    """libjpeg and libpng fill a cut-off photo with grey and only warn: catch the cut ourselves."""
    if image_format in _JPEG_LIKE:
        # The end-of-image marker may be followed by padding or vendor trailers; look near the end.
        return data.rfind(b"\xff\xd9", max(0, len(data) - 65536)) < 0
    if image_format == "PNG":
        return data.rfind(b"IEND", max(0, len(data) - 64)) < 0
    if image_format == "WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8 if len(data) >= 8 else 0
        return len(data) < declared
    if image_format == "BMP":
        return len(data) < (int.from_bytes(data[2:6], "little") if len(data) >= 6 else 1)
    return False


def _check_format_and_size(image_format: str, width: int, height: int, view: str, max_pixels: int) -> None:
    if image_format not in SUPPORTED_FORMATS:
        raise AnalysisError(
            "image_load", f"{view} image: format {image_format} is not supported (supported: {_FORMAT_NAMES})"
        )
    if width * height > max_pixels:
        raise AnalysisError(
            "image_load",
            f"{view} image: {width}x{height} is {width * height / 1e6:.0f} MP, over the limit of "
            f"{max_pixels / 1e6:.0f} MP",
        )
    if width < 32 or height < 32:
        raise AnalysisError("image_load", f"{view} image: {width}x{height} is too small to analyse")


def probe(data: bytes, view: str, max_pixels: int) -> tuple[str, int, int, int, dict[int, Any]]:
    """Format, stored size, EXIF orientation (1-8) and the EXIF tags (IFD0 and the EXIF sub-IFD, flattened:
    calibration/intrinsics.exif_tags) from the header alone (no pixels decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            image_format = header.format or "unknown"
            width, height = header.size
            _check_format_and_size(image_format, width, height, view, max_pixels)
            # Only then the EXIF, and only from the header: Pillow's PNG getexif() decodes the whole
            # image when no eXIf chunk precedes the pixels (a 100000x100000 bomb took gigabytes).
            tags: dict[int, Any] = {}
            if image_format != "PNG" or "exif" in header.info:
                try:
                    tags = exif_tags(header)
                except (ValueError, TypeError, OSError, SyntaxError):
                    tags = {}
            try:
                orientation = int(tags.get(0x0112, 1))
            except (ValueError, TypeError):
                orientation = 1
    except AnalysisError:
        raise
    except UnidentifiedImageError:
        raise AnalysisError("image_load", f"{view} image: not an image in a supported format ({_FORMAT_NAMES})") from None
    except Exception as exc:  # noqa: BLE001 - a hostile header may trip any decoder: it is the photo's fault
        raise AnalysisError("image_load", f"{view} image: unreadable header ({type(exc).__name__}: {str(exc)[:200]})") from None
    return image_format, width, height, orientation if 1 <= orientation <= 8 else 1, tags


@dataclass
class Decoded:
    """Upright BGR pixels, possibly decoded at a reduced scale, and the upright photo's own size."""

    pixels: np.ndarray
    photo_size: tuple[int, int]  # (width, height) of the upright photo at full resolution
    image_format: str = ""  # Pillow's name for the file's format ("JPEG", "MPO", "PNG", "HEIF", ...)
    # The file's EXIF tags as probe read them from its header (focal length, orientation, maker note).
    exif: dict[int, Any] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """Decoded px per photo px."""
        return self.pixels.shape[1] / self.photo_size[0]


# EXIF orientation -> the turn that makes the stored pixels upright.
_UPRIGHT = {
    2: lambda img: cv2.flip(img, 1),
    3: lambda img: cv2.rotate(img, cv2.ROTATE_180),
    4: lambda img: cv2.flip(img, 0),
    5: lambda img: cv2.transpose(img),
    6: lambda img: cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
    7: lambda img: cv2.flip(cv2.transpose(img), -1),
    8: lambda img: cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


class _ScanEndsEarly(Exception):
    pass


def _decode_jpeg(data: bytes, width: int, height: int, orientation: int, min_long_side: int) -> np.ndarray | None:
    """libjpeg-turbo through simplejpeg: any M/8 DCT scale whose long side still reaches min_long_side
    (OpenCV offers only 1/2, 1/4, 1/8), the GIL released; the EXIF turn applied here, after scaling."""
    if min_long_side > 0 and max(width, height) > min_long_side:
        factor = min_long_side / max(width, height)
        min_width, min_height = math.ceil(width * factor), math.ceil(height * factor)
    else:
        min_width, min_height = width, height
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="BGR", min_width=min_width, min_height=min_height)
    except ValueError as exc:
        if "premature end of data" in str(exc):
            # The scan data ran out before the declared size (cut and re-terminated, or a header claiming
            # more pixels than sent): OpenCV would fill the rest with grey and call it a photo.
            raise _ScanEndsEarly from None
        return None  # other damage libjpeg tolerates, or a kind simplejpeg leaves to others: OpenCV next
    turn = _UPRIGHT.get(orientation)
    return turn(pixels) if turn else pixels


def decode_upright(data: bytes, view: str, max_pixels: int, min_long_side: int = 0) -> Decoded:
    """The photo as it should be seen (EXIF orientation applied).

    min_long_side > 0 lets a JPEG decode at the smallest DCT scale whose long side still reaches it;
    coordinates stay in the full photo's pixels through `photo_size`.
    """
    image_format, width, height, orientation, tags = probe(data, view, max_pixels)
    photo_size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    name = "JPEG" if image_format == "MPO" else image_format
    if _looks_truncated(data, image_format):
        raise AnalysisError("image_load", f"{view} image: truncated {name} (the file ends early)")
    try:
        if image_format in _VIA_PILLOW:
            pixels = _decode_with_pillow(data)
        else:
            pixels = None
            if image_format in _JPEG_LIKE:
                try:
                    pixels = _decode_jpeg(data, width, height, orientation, min_long_side)
                except _ScanEndsEarly:
                    raise AnalysisError(
                        "image_load", f"{view} image: truncated JPEG (its image data ends before {width}x{height})"
                    ) from None
            if pixels is None:
                # PNG, WebP, and JPEGs simplejpeg declines. OpenCV applies the EXIF orientation tag itself.
                pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if pixels is not None:
                    photo_size = (pixels.shape[1], pixels.shape[0])
    except AnalysisError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt data may trip any decoder: it is the photo's fault
        raise AnalysisError("image_load", f"{view} image: corrupt {name} data ({type(exc).__name__})") from None
    if pixels is None:
        raise AnalysisError("image_load", f"{view} image: corrupt {name} data")
    if image_format in _VIA_PILLOW:
        photo_size = (pixels.shape[1], pixels.shape[0])
    return Decoded(pixels, photo_size, image_format, tags)


def _decode_with_pillow(data: bytes) -> np.ndarray:
    """BMP, TIFF (first page), AVIF, HEIF: Pillow decodes; EXIF orientation applied; 16-bit and alpha
    reduced to 8-bit RGB. Upright BGR pixels."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit grey (scientific and some industrial cameras): scale to 8 bits, not clip.
            image = image.point(lambda value: value / 256).convert("L")
        upright = ImageOps.exif_transpose(image).convert("RGB")
        return cv2.cvtColor(np.asarray(upright), cv2.COLOR_RGB2BGR)
