"""Property-based fuzzing (hypothesis) of the request parser and of photo decoding (issue 10).

Random and mutated JSON, base64 and photo bytes (truncated, bit-flipped, spliced, headers declaring
huge sizes) must each end in a success or an AnalysisError in the seed's error shape: never another
exception, never a hang past HANG_BOUND_S.

Budget: SKELETON_FUZZ_EXAMPLES examples per test (default 40: the normal test run, CI). The long run is
`bench/fuzz_long.py` (sets a large budget and SKELETON_FUZZ_REPORT, prints cases, failures and time).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import jsonschema
import orjson
import pytest
from conftest import read_photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from daemon.contract import load_schema
from daemon.errors import AnalysisError
from daemon.imageio import SUPPORTED_FORMATS, decode_upright
from daemon.request import AnalyzeRequest, parse_owned_body, parse_request

EXAMPLES = int(os.environ.get("SKELETON_FUZZ_EXAMPLES", "40"))
# A bound far above any honest decode of these small inputs on a busy machine: past it, a hang.
HANG_BOUND_S = float(os.environ.get("SKELETON_FUZZ_HANG_S", "30"))
MAX_PIXELS = 60_000_000
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# The published error shape (daemon/contract/error.schema.json), checked on every refusal.
ERROR_SHAPE = load_schema("error")

COUNTS: Counter = Counter()


def within_bound(function, *args):
    """function(*args) in a thread; its result, or its exception re-raised; a failure past the bound."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(HANG_BOUND_S)
    assert not thread.is_alive(), f"{function.__name__} still running after {HANG_BOUND_S} s (a hang)"
    COUNTS["slowest_ms"] = max(COUNTS["slowest_ms"], int((time.monotonic() - started) * 1000))
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def expect_answer_or_error(kind: str, function, *args, allowed=("validation", "image_load")):
    """Calls function; a success is returned, an AnalysisError is checked against the seed's shape."""
    COUNTS[f"{kind}_cases"] += 1
    try:
        result = within_bound(function, *args)
    except AnalysisError as exc:
        assert exc.kind in allowed, (exc.kind, exc.detail)
        jsonschema.validate(exc.to_answer("fuzz"), ERROR_SHAPE)
        COUNTS[f"{kind}_refused"] += 1
        return None
    COUNTS[f"{kind}_accepted"] += 1
    return result


@pytest.fixture(scope="module", autouse=True)
def report():
    started = time.monotonic()
    yield
    target = os.environ.get("SKELETON_FUZZ_REPORT")
    if target:
        Path(target).write_text(json.dumps({**COUNTS, "seconds": time.monotonic() - started, "examples": EXAMPLES}))


# -- seeds ------------------------------------------------------------------------------------------


def _pattern(width: int = 72, height: int = 96) -> Image.Image:
    image = Image.new("RGB", (width, height), (240, 240, 240))
    image.paste((200, 30, 30), (0, 0, width // 2, height // 2))
    image.paste((30, 30, 200), (width // 2, height // 2, width, height))
    return image


def _encode(fmt: str) -> bytes:
    out = io.BytesIO()
    image = _pattern()
    if fmt == "MPO":
        image.save(out, "MPO", save_all=True, append_images=[image.convert("L").convert("RGB")])
    else:
        if fmt == "HEIF":
            import pillow_heif

            pillow_heif.register_heif_opener()
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save(out, fmt, **({"exif": exif.tobytes()} if fmt in ("JPEG", "PNG", "WEBP", "TIFF") else {}))
    return out.getvalue()


def _seeds() -> dict[str, bytes]:
    seeds = {fmt: _encode(fmt) for fmt in SUPPORTED_FORMATS}
    seeds["GIF"] = _encode("GIF")
    progressive = io.BytesIO()
    _pattern().save(progressive, "JPEG", progressive=True)
    seeds["progressive JPEG"] = progressive.getvalue()
    seeds["real photo"] = read_photo("front", "fitlens_p5_front.jpg")
    return seeds


SEEDS = _seeds()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def declare_size(data: bytes, width: int, height: int) -> bytes:
    """The same file with its header claiming width x height (checksums fixed where the format has one)."""
    if data.startswith(b"\x89PNG"):
        ihdr = bytearray(data[16:29])
        ihdr[0:8] = struct.pack(">II", width & 0xFFFFFFFF, height & 0xFFFFFFFF)
        return data[:8] + _png_chunk(b"IHDR", bytes(ihdr)) + data[33:]
    if data.startswith(b"\xff\xd8"):
        for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
            at = data.find(marker)
            if at > 0:
                return data[:at + 5] + struct.pack(">HH", height & 0xFFFF, width & 0xFFFF) + data[at + 9:]
    if data.startswith(b"BM"):
        return data[:18] + struct.pack("<ii", width % 2**31, height % 2**31) + data[26:]
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        # TIFF: ImageWidth (256) and ImageLength (257) entries of the first directory.
        order = "<" if data[:2] == b"II" else ">"
        (ifd,) = struct.unpack(order + "I", data[4:8])
        out = bytearray(data)
        if ifd + 2 <= len(data):
            (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
            for i in range(min(count, 64)):
                entry = ifd + 2 + 12 * i
                (tag,) = struct.unpack(order + "H", data[entry:entry + 2])
                if tag in (256, 257) and entry + 12 <= len(data):
                    value = (width if tag == 256 else height) & 0xFFFFFFFF
                    out[entry + 2:entry + 12] = struct.pack(order + "HII", 4, 1, value)
        return bytes(out)
    return data


@st.composite
def mutated_photo(draw) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "splice", "declare", "drop"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "truncate":
            del data[at:]
        elif action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(patch)] = patch
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif action == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            data[at:] = other[draw(st.integers(0, len(other) - 1)):]
        elif action == "drop":
            del data[at:at + draw(st.integers(1, 256))]
        else:
            huge = st.integers(0, 2**31 - 1) | st.sampled_from([100_000, 65_535, 8_000, 7_746, 0, 1])
            data = bytearray(declare_size(bytes(data), draw(huge), draw(huge)))
    return bytes(data)


def check_decoded(data: bytes, min_side: int) -> None:
    decoded = expect_answer_or_error("decode", decode_upright, data, "front", MAX_PIXELS, min_side,
                                     allowed=("image_load",))
    if decoded is not None:
        height, width, channels = decoded.pixels.shape
        assert channels == 3 and decoded.pixels.dtype.name == "uint8"
        assert width * height <= MAX_PIXELS and min(decoded.photo_size) >= 1


# -- photo decoding ---------------------------------------------------------------------------------


@FUZZ
@given(data=mutated_photo(), min_side=st.sampled_from([0, 32, 256]))
def test_mutated_photos_decode_or_are_refused(data, min_side):
    check_decoded(data, min_side)


@FUZZ
@given(data=st.binary(max_size=4096) | st.builds(lambda head, tail: head + tail,
                                                   st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n",
                                                                    b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM",
                                                                    b"II*\x00", b"MM\x00*",
                                                                    b"\x00\x00\x00\x1cftypheic",
                                                                    b"\x00\x00\x00\x1cftypavif"]),
                                                   st.binary(max_size=2048)))
def test_random_bytes_decode_or_are_refused(data):
    check_decoded(data, 0)


@FUZZ
@given(width=st.integers(0, 2**32 - 1), height=st.integers(0, 2**32 - 1),
       name=st.sampled_from(["PNG", "JPEG", "BMP", "TIFF", "real photo"]))
def test_huge_declared_sizes_are_refused_before_decoding(width, height, name):
    data = declare_size(SEEDS[name], width, height)
    check_decoded(data, 0)


def test_a_hundred_thousand_square_header_is_refused_for_each_format():
    for name in ("PNG", "JPEG", "BMP", "TIFF"):
        with pytest.raises(AnalysisError) as raised:
            decode_upright(declare_size(SEEDS[name], 100_000, 100_000 if name != "JPEG" else 65_000),
                           "front", MAX_PIXELS)
        assert raised.value.kind == "image_load", name


# -- the request parser -----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.sampled_from([10**400, -(10**400), "9" * 5000, "1e400", "NaN", "-0", "\u0000", "x" * 100_000]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
FIELDS = ["id", "uuid", "forigimg", "sorigimg", "height", "weight", "age", "gender", "birthday", "kiosk"]
GOOD_B64 = base64.b64encode(SEEDS["JPEG"]).decode()


def _valid_request() -> dict:
    return {"id": "fuzz@example.com", "uuid": "fuzz-1", "forigimg": GOOD_B64, "sorigimg": GOOD_B64,
            "height": 172, "gender": "F", "birthday": "1990-01-02", "kiosk": None}


def check_parsed(payload) -> None:
    parsed = expect_answer_or_error("parse", parse_request, payload)
    if parsed is not None:
        assert isinstance(parsed, AnalyzeRequest) and parsed.front_image and parsed.side_image
        assert isinstance(parsed.input_hash, str)


@FUZZ
@given(payload=JSON_VALUES)
def test_random_json_is_answered(payload):
    check_parsed(json.dumps(payload).encode())


@FUZZ
@given(overrides=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4),
       removed=st.sets(st.sampled_from(FIELDS), max_size=3))
def test_requests_with_random_field_values_are_answered(overrides, removed):
    payload = {**_valid_request(), **overrides}
    for name in removed:
        payload.pop(name, None)
    check_parsed(payload)
    check_parsed(json.dumps(payload).encode())


@FUZZ
@given(data=st.data())
def test_mutated_request_bytes_are_answered(data):
    body = bytearray(orjson.dumps(_valid_request()))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["truncate", "flip", "overwrite", "insert"]))
        if action == "truncate":
            del body[max(1, at):]
        elif action == "flip":
            body[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "overwrite":
            patch = data.draw(st.binary(min_size=1, max_size=8))
            body[at:at + len(patch)] = patch
        else:
            body[at:at] = data.draw(st.sampled_from([b"\\u0000", b"\"", b"{", b"[]", b"\xff", b" ", b"%2B", b"="]))
    COUNTS["parse_cases"] += 1
    try:
        parsed = within_bound(parse_owned_body, [bytes(body)])
    except AnalysisError as exc:
        assert exc.kind in ("validation", "image_load"), exc.kind
        jsonschema.validate(exc.to_answer(), ERROR_SHAPE)
        COUNTS["parse_refused"] += 1
        return
    COUNTS["parse_accepted"] += 1
    assert isinstance(parsed, AnalyzeRequest)


BASE64_NOISE = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/-_=% \r\n\t:;,.*\u00e9", max_size=200)


@FUZZ
@given(prefix=st.sampled_from(["", "data:image/jpeg;base64,", "DATA:image/png;base64,", "data:,", "data:"]),
       text=BASE64_NOISE | st.builds(lambda cut, form: form(SEEDS["JPEG"])[:cut], st.integers(0, 4000),
                                     st.sampled_from([lambda b: base64.b64encode(b).decode(),
                                                      lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
                                                      lambda b: base64.encodebytes(b).decode()])))
def test_random_and_cut_base64_is_answered_and_decoded_or_refused(prefix, text):
    payload = {**_valid_request(), "forigimg": prefix + text}
    parsed = expect_answer_or_error("parse", parse_request, payload)
    if parsed is not None:
        # Whatever the bytes turned out to be, decoding them answers too.
        check_decoded(parsed.front_image, 0)
