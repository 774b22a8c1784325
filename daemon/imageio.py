"""Photo bytes -> upright BGR pixels, refusing broken, truncated, unsupported and oversized photos early."""

from __future__ import annotations

import io
from dataclasses import dataclass

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


def probe(data: bytes, view: str, max_pixels: int) -> tuple[str, int, int, int]:
    """Format, stored size and EXIF orientation (1-8) from the header alone (no pixels decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            image_format = header.format or "unknown"
            width, height = header.size
            try:
                orientation = int(header.getexif().get(0x0112, 1))
            except (ValueError, TypeError, OSError, SyntaxError):
                orientation = 1
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
    return image_format, width, height, orientation if 1 <= orientation <= 8 else 1


@dataclass
class Decoded:
    """Upright BGR pixels, possibly decoded at a reduced scale, and the upright photo's own size."""

    pixels: np.ndarray
    photo_size: tuple[int, int]  # (width, height) of the upright photo at full resolution

    @property
    def scale(self) -> float:
        """Decoded px per photo px."""
        return self.pixels.shape[1] / self.photo_size[0]


# libjpeg-turbo decodes straight to 1/2, 1/4 or 1/8 size (DCT scaling): most of a 12 MP decode saved.
_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def decode_upright(data: bytes, view: str, max_pixels: int, min_long_side: int = 0) -> Decoded:
    """The photo as it should be seen (EXIF orientation applied).

    min_long_side > 0 lets a JPEG decode at the smallest DCT scale whose long side still reaches it;
    coordinates stay in the full photo's pixels through `photo_size`.
    """
    image_format, width, height, orientation = probe(data, view, max_pixels)
    photo_size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    if _looks_truncated(data, image_format):
        raise AnalysisError("image_load", f"{view} image: truncated {image_format} (the file ends early)")
    if image_format == "HEIF":
        with Image.open(io.BytesIO(data)) as heif:
            upright = ImageOps.exif_transpose(heif).convert("RGB")
            pixels = cv2.cvtColor(np.asarray(upright), cv2.COLOR_RGB2BGR)
            return Decoded(pixels, (pixels.shape[1], pixels.shape[0]))
    flag = cv2.IMREAD_COLOR
    if image_format == "JPEG" and min_long_side > 0:
        for factor, reduced in _REDUCED_FLAGS:
            if -(-max(width, height) // factor) >= min_long_side:
                flag = reduced
                break
    # OpenCV applies the EXIF orientation tag itself (no IMREAD_IGNORE_ORIENTATION), reduced or not.
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if pixels is None:
        raise AnalysisError("image_load", f"{view} image: corrupt {image_format} data")
    if flag == cv2.IMREAD_COLOR:
        photo_size = (pixels.shape[1], pixels.shape[0])
    return Decoded(pixels, photo_size)
