"""Request parsing: required fields, lenient optional fields, base64 forms, uuid rules."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from daemon.errors import AnalysisError
from daemon.request import parse_request

PHOTO = b"\xff\xd8\xff\xe0 not really a photo, only bytes to carry"


def _payload(**extra) -> dict:
    text = base64.b64encode(PHOTO).decode()
    return {"id": "a@b.c", "uuid": "u-1", "forigimg": text, "sorigimg": text, **extra}


def test_base64_forms_all_decode_to_the_same_bytes():
    text = base64.b64encode(PHOTO * 20).decode()
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))  # MIME line wrapping
    for form in (text, wrapped, "data:image/jpeg;base64," + text):
        request = parse_request(_payload(forigimg=form))
        assert request.front_image == PHOTO * 20


@pytest.mark.parametrize("field", ["id", "uuid", "forigimg", "sorigimg"])
def test_missing_required_field(field):
    payload = _payload()
    del payload[field]
    with pytest.raises(AnalysisError) as raised:
        parse_request(payload)
    assert raised.value.kind == "validation" and raised.value.to_answer()["data"]["errors"] == f"missing field: {field}"


@pytest.mark.parametrize("uuid", ["a/b", "a+b", "a#b", "a\x01b", "x" * 129, ""])
def test_uuid_that_cannot_key_a_result(uuid):
    with pytest.raises(AnalysisError) as raised:
        parse_request(_payload(uuid=uuid))
    assert raised.value.kind == "validation"


@pytest.mark.parametrize("height", [49, 251, "tall", True])
def test_height_out_of_range_is_refused(height):
    with pytest.raises(AnalysisError) as raised:
        parse_request(_payload(height=height))
    assert "height" in raised.value.detail


def test_optional_fields_are_lenient():
    request = parse_request(_payload(height="172.5", weight=70, age=34, gender="여", birthday="19910402"))
    assert (request.height_cm, request.weight_kg, request.age) == (172.5, 70.0, 34.0)
    assert request.gender == "female" and request.birthday == dt.date(1991, 4, 2) and request.notes == []
    odd = parse_request(_payload(gender="?", birthday="next tuesday"))
    assert odd.gender is None and odd.birthday is None and len(odd.notes) == 2


def test_input_hash_tells_other_photos_apart():
    first = parse_request(_payload())
    again = parse_request(_payload())
    other = parse_request(_payload(sorigimg=base64.b64encode(PHOTO + b"!").decode()))
    assert first.input_hash == again.input_hash != other.input_hash


def test_input_hash_covers_every_field_that_shapes_the_answer():
    """A stored uuid re-sent with any other answer-shaping input is a conflict, not a redelivery."""
    base = parse_request(_payload(height=170, kiosk="front-desk"))
    same = parse_request(_payload(height=170, kiosk="front-desk", id="someone-else@b.c"))
    assert same.input_hash == base.input_hash  # the member id does not shape the answer
    variants = [
        parse_request(_payload(height=170)),                              # no kiosk
        parse_request(_payload(height=170, kiosk="back-room")),           # another kiosk
        parse_request(_payload(height=171, kiosk="front-desk")),          # another height
        parse_request(_payload(height=170, kiosk="front-desk", weight=70)),
        parse_request(_payload(height=170, kiosk="front-desk", gender="F")),
        parse_request(_payload(height=170, kiosk="front-desk", birthday="1990-01-02")),
        parse_request(_payload(height=170, kiosk="front-desk", gender="?")),  # a note in `message`
    ]
    other_tree = parse_request(_payload(height=170, kiosk="front-desk"))
    other_tree.topic_tree = "kiosk-b"  # the same request on another kiosk's MQTT topic tree
    variants.append(other_tree)
    hashes = [request.input_hash for request in variants]
    assert base.input_hash not in hashes
    assert len(set(hashes)) == len(hashes)


# -- the base64 forms clients really produce (issue 10) --------------------------------------------

BYTES = bytes(range(256)) * 3 + b"\xfb\xff\xfe"  # every byte value: '+' and '/' (or '-' and '_') appear


def _forms() -> dict[str, str]:
    plain = base64.b64encode(BYTES).decode()
    urlsafe = base64.urlsafe_b64encode(BYTES).decode()
    mime = base64.encodebytes(BYTES).decode().replace("\n", "\r\n")  # 76 columns, CRLF (MIME)
    return {
        "seed (plain)": plain,
        "data URL": "data:image/jpeg;base64," + plain,
        "data URL, upper case, parameters": "DATA:image/png;name=front.png;charset=utf-8;BASE64," + plain,
        "URL-safe (Android Base64.URL_SAFE, JWT style)": urlsafe,
        "URL-safe without padding": urlsafe.rstrip("="),
        "missing padding": plain.rstrip("="),
        "MIME 76 columns, CRLF": mime,
        "76 columns, LF (Python encodebytes, openssl base64)": base64.encodebytes(BYTES).decode(),
        "64 columns (PEM)": "\n".join(plain[i:i + 64] for i in range(0, len(plain), 64)),
        "spaces, tabs, leading and trailing blanks": "  " + " ".join(plain[i:i + 10] for i in range(0, len(plain), 10)) + "\t\n",
        "percent-encoded (form-encoded into JSON)": plain.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),
        "data URL, wrapped, no padding": "data:image/jpeg;base64," + "\n".join(
            plain.rstrip("=")[i:i + 76] for i in range(0, len(plain.rstrip("=")), 76)),
    }


@pytest.mark.parametrize("form", list(_forms()))
def test_every_base64_form_decodes_to_the_photo(form):
    request = parse_request(_payload(forigimg=_forms()[form], sorigimg=_forms()[form]))
    assert request.front_image == BYTES and request.side_image == BYTES


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("abc*def" + "A" * 20, "the character '*' is not base64"),
        ("ab+c-d" + "A" * 22, "mixes the standard and URL-safe alphabets"),
        ("A" * 21, "length is impossible"),
        ("data:image/jpeg,%FF%D8%FF", "a data URL must be base64"),
        ("data:image/jpeg;base64" + "A" * 40, "without a ','"),
        ("QUJD\u00e9REVG", "non-ASCII"),
        ("", "empty"),
        ("====", "empty"),
    ],
)
def test_what_is_not_base64_is_an_image_load_error_that_says_why(text, words):
    with pytest.raises(AnalysisError) as raised:
        parse_request(_payload(sorigimg=text))
    assert raised.value.kind == "image_load"
    assert raised.value.to_answer()["data"]["errors"] == "image load error"
    assert raised.value.detail.startswith("side image") and words in raised.value.detail, raised.value.detail


# -- found by tests/test_fuzz.py --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [10**400, -(10**5000), "9" * 5000, "x" * 1_000_000, [1, 2], {"cm": 170}],
    ids=["1e400 int", "5000-digit int", "5000-digit string", "1 MB string", "array", "object"],
)
def test_numbers_far_out_of_range_are_refused_with_a_short_detail(value):
    # 10**400 raised OverflowError in float(); a 5000-digit int cannot even be repr'd (Python's digit
    # limit); a megabyte string was echoed whole into the answer's detail.
    with pytest.raises(AnalysisError) as raised:
        parse_request(_payload(height=value))
    assert raised.value.kind == "validation" and raised.value.to_answer()["data"]["errors"] == "invalid field: height"
    assert len(raised.value.detail) < 120, raised.value.detail
