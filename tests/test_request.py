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
