"""Parse and validate a skeleton-v2 request (the same JSON over HTTP, MQTT and the CLI) into a Job."""

from __future__ import annotations

import binascii
import dataclasses
import datetime as dt
import functools
import hashlib
import re
import urllib.parse
from dataclasses import dataclass, field

import orjson
import pybase64

from daemon.errors import AnalysisError

# A uuid becomes an MQTT topic level and a store key: no wildcards, separators or control characters.
_UUID_BAD = re.compile(r"[/+#\x00-\x1f\x7f]")
MAX_UUID_LENGTH = 128

_GENDERS = {
    "m": "male", "male": "male", "man": "male", "남": "male", "남자": "male", "남성": "male",
    "f": "female", "female": "female", "woman": "female", "여": "female", "여자": "female", "여성": "female",
}


@dataclass
class AnalyzeRequest:
    id: str
    uuid: str
    front_image: bytes
    side_image: bytes
    height_cm: float | None = None
    weight_kg: float | None = None
    age: float | None = None
    gender: str | None = None
    birthday: dt.date | None = None
    kiosk: str | None = None
    # The MQTT kiosk tree (the kiosk's broker username) the request arrived on; None: HTTP, CLI, plain tree.
    topic_tree: str | None = None
    # Notes for the answer's `message` (optional fields that were unreadable and ignored).
    notes: list[str] = field(default_factory=list)

    @functools.cached_property
    def input_hash(self) -> str:
        """Identifies every input that shapes the answer, so a uuid re-sent with any other input (photos,
        height, kiosk, another kiosk's topic tree, any field added later) is told apart from a redelivery.

        Every field takes part except `id`: it does not change the answer, and a plain hash of an e-mail
        address stored beside the answer would identify the member.
        """
        digest = hashlib.sha256()
        for part in (self.front_image, self.side_image):
            digest.update(hashlib.sha256(part).digest())
        shaping = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _NOT_HASHED}
        digest.update(orjson.dumps(shaping, default=repr, option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()


# Left out of the input hash: the photos are hashed on their own, and `id` does not shape the answer.
_NOT_HASHED = frozenset({"id", "front_image", "side_image"})


def uuid_problem(uuid: object) -> str | None:
    """Why `uuid` cannot key a result (None when it can)."""
    if not isinstance(uuid, str) or not uuid:
        return "uuid must be a non-empty string"
    if len(uuid) > MAX_UUID_LENGTH:
        return f"uuid is longer than {MAX_UUID_LENGTH} characters"
    if _UUID_BAD.search(uuid):
        return "uuid must not contain '/', '+', '#' or control characters"
    return None


def _required_string(payload: dict, name: str) -> str:
    if name not in payload:
        raise AnalysisError("validation", f"missing field '{name}'", text=f"missing field: {name}")
    value = payload[name]
    if not isinstance(value, str):
        raise AnalysisError(
            "validation", f"field '{name}' must be a string, got {type(value).__name__}",
            text=f"invalid field: {name}",
        )
    return value


_WHITESPACE = re.compile(r"\s+")
_DATA_URL = re.compile(r"data:[^,]{0,200},", re.IGNORECASE)


def decode_base64_image(text: str, view: str) -> bytes:
    """The bytes of a photo sent as base64 in the forms clients really produce (README "Photos"): bare
    standard base64 (the seed), a data URL (`data:image/jpeg;base64,...`), the URL-safe alphabet
    (`-_`), missing `=` padding, line breaks and spaces (MIME's 76 columns, PEM-style wrapping) and
    percent-encoding (`%2B`, `%2F`, `%3D`). Anything else is an `image load error` that says why."""
    # The common case first: strict SIMD decoding, a 12 MP photo's 3 MB of base64 in 0.2 ms.
    try:
        data = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        data = _decode_lenient_base64(text, view)
    if not data:
        raise AnalysisError("image_load", f"{view} image: empty")
    return data


def _decode_lenient_base64(text: str, view: str) -> bytes:
    if not text.isascii():
        raise AnalysisError("image_load", f"{view} image: not valid base64 (non-ASCII characters)")
    head = text[:256].lstrip()
    if head[:5].lower() == "data:":
        match = _DATA_URL.match(head)
        if match is None:
            raise AnalysisError("image_load", f"{view} image: a data URL without a ',' before its data")
        if not match.group(0)[:-1].lower().endswith(";base64"):
            raise AnalysisError("image_load", f"{view} image: a data URL must be base64 (';base64,')")
        text = text.lstrip()[match.end():]
    if "%" in text:
        text = urllib.parse.unquote(text)
    text = _WHITESPACE.sub("", text)
    urlsafe = "-" in text or "_" in text
    if urlsafe and ("+" in text or "/" in text):
        raise AnalysisError("image_load", f"{view} image: not valid base64 (mixes the standard and URL-safe alphabets)")
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        raise AnalysisError("image_load", f"{view} image: not valid base64 (its length is impossible: cut off?)")
    text = body + "=" * (-len(body) % 4)
    try:
        return pybase64.b64decode(text, altchars="-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError):
        bad = next((c for c in body if not (c.isalnum() or c in "+/-_")), None)
        reason = f"the character {bad!r} is not base64" if bad is not None else "misplaced '=' padding"
        raise AnalysisError("image_load", f"{view} image: not valid base64 ({reason})") from None


def _image(payload: dict, name: str, view: str) -> bytes:
    return decode_base64_image(_required_string(payload, name), view)


def _number(payload: dict, name: str, low: float, high: float, unit: str) -> float | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, int) and not isinstance(value, bool) and not -1e300 < value < 1e300:
        value = None  # float() of a huge int raises OverflowError
    if not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise AnalysisError(
            "validation",
            f"field '{name}' must be a number from {low:g} to {high:g} ({unit}), got {_shown(payload[name])}",
            text=f"invalid field: {name}",
        )
    return float(value)


def _shown(value: object, limit: int = 40) -> str:
    """A short repr for an error detail: never megabytes of the client's own input echoed back."""
    if isinstance(value, int) and not isinstance(value, bool) and not -1e300 < value < 1e300:
        return "a huge integer"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = repr(value if not isinstance(value, str) else value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _birthday(value: object) -> dt.date | None:
    if not isinstance(value, str):
        return None
    for pattern in ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y.%m.%d"):
        try:
            return dt.datetime.strptime(value.strip(), pattern).date()
        except ValueError:
            continue
    return None


def _load_json(payload: bytes | bytearray | str) -> object:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise AnalysisError("validation", f"body is not JSON: {exc}", text="invalid JSON") from None


def parse_owned_body(owned: list[bytes | bytearray]) -> AnalyzeRequest:
    """parse_request of the one body in `owned`, taken out and freed as soon as its JSON is read (a large
    upload is then never held as raw body, JSON strings and decoded photos all at once)."""
    payload = _load_json(owned.pop())
    if not isinstance(payload, dict):
        raise AnalysisError("validation", "body must be a JSON object", text="invalid JSON")
    return parse_request(payload)


def parse_request(payload: bytes | bytearray | str | dict) -> AnalyzeRequest:
    """A Job from the request JSON; AnalysisError(validation | image_load) says what is wrong."""
    if isinstance(payload, (bytes, bytearray, str)):
        payload = _load_json(payload)
    if not isinstance(payload, dict):
        raise AnalysisError("validation", "body must be a JSON object", text="invalid JSON")

    user_id = _required_string(payload, "id")
    uuid = _required_string(payload, "uuid")
    problem = uuid_problem(uuid)
    if problem:
        raise AnalysisError("validation", problem, text="invalid field: uuid")
    front = _image(payload, "forigimg", "front")
    side = _image(payload, "sorigimg", "side")

    request = AnalyzeRequest(id=user_id, uuid=uuid, front_image=front, side_image=side)
    request.height_cm = _number(payload, "height", 50, 250, "cm")
    request.weight_kg = _number(payload, "weight", 10, 400, "kg")
    request.age = _number(payload, "age", 0, 120, "years")

    # gender and birthday are lenient (decisions.md): unreadable values are noted and ignored, never a 400.
    gender = payload.get("gender")
    if gender not in (None, ""):
        request.gender = _GENDERS.get(str(gender).strip().lower())
        if request.gender is None:
            request.notes.append("The gender field was not understood and was ignored.")
    birthday = payload.get("birthday")
    if birthday not in (None, ""):
        request.birthday = _birthday(birthday)
        if request.birthday is None:
            request.notes.append("The birthday field was not understood and was ignored.")

    kiosk = payload.get("kiosk")
    if kiosk is not None and not isinstance(kiosk, str):
        raise AnalysisError("validation", "field 'kiosk' must be a string", text="invalid field: kiosk")
    request.kiosk = kiosk or None
    return request
