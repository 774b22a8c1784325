"""Photo bytes -> upright BGR pixels, refusing broken, truncated, unsupported and oversized photos early."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from daemon.errors import AnalysisError

# We check the pixel count ourselves, before decoding, with a message that says what the limit is.
Image.MAX_IMAGE_PIXELS = None

try:  # Phones send HEIC; pillow-heif is optional (extra "heic").
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF = True
except ImportError:  # pragma: no cover - depends on the install
    _HEIF = False

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP") + (("HEIF",) if _HEIF else ())


def _looks_truncated(data: bytes, image_format: str) -> bool:
    """libjpeg and libpng fill a cut-off photo with grey and only warn: catch the cut ourselves."""
    if image_format == "JPEG":
        # The end-of-image marker may be followed by padding or vendor trailers; look near the end.
        return data.rfind(b"\xff\xd9", max(0, len(data) - 65536)) < 0
    if image_format == "PNG":
        return data.rfind(b"IEND", max(0, len(data) - 64)) < 0
    if image_format == "WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8 if len(data) >= 8 else 0
        return len(data) < declared
    return False


def probe(data: bytes, view: str, max_pixels: int) -> tuple[str, int, int]:
    """Format and stored size from the header alone (no pixels decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            image_format = header.format or "unknown"
            width, height = header.size
    except UnidentifiedImageError:
        raise AnalysisError("image_load", f"{view} image: not a JPEG, PNG or WebP image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise AnalysisError("image_load", f"{view} image: unreadable header ({exc})") from None
    if image_format not in SUPPORTED_FORMATS:
        raise AnalysisError(
            "image_load", f"{view} image: format {image_format} is not supported ({', '.join(SUPPORTED_FORMATS)})"
        )
    if width * height > max_pixels:
        raise AnalysisError(
            "image_load",
            f"{view} image: {width}x{height} is {width * height / 1e6:.0f} MP, over the limit of "
            f"{max_pixels / 1e6:.0f} MP",
        )
    if width < 32 or height < 32:
        raise AnalysisError("image_load", f"{view} image: {width}x{height} is too small to analyse")
    return image_format, width, height


def decode_upright(data: bytes, view: str, max_pixels: int) -> np.ndarray:
    """BGR uint8 pixels of the photo as it should be seen (EXIF orientation applied)."""
    image_format, _, _ = probe(data, view, max_pixels)
    if _looks_truncated(data, image_format):
        raise AnalysisError("image_load", f"{view} image: truncated {image_format} (the file ends early)")
    if image_format == "HEIF":
        with Image.open(io.BytesIO(data)) as heif:
            upright = ImageOps.exif_transpose(heif).convert("RGB")
            return cv2.cvtColor(np.asarray(upright), cv2.COLOR_RGB2BGR)
    # OpenCV applies the EXIF orientation tag itself (IMREAD_COLOR without IMREAD_IGNORE_ORIENTATION).
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise AnalysisError("image_load", f"{view} image: corrupt {image_format} data")
    return pixels
