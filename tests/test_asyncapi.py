"""docs/asyncapi.yaml, the MQTT contract for kiosk makers: AsyncAPI 3.0, internally consistent, every $ref
resolving (the payload schemas are the HTTP API's files in daemon/contract/), and in step with the code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import REPO_ROOT

DOC_PATH = REPO_ROOT / "docs" / "asyncapi.yaml"
CONTRACT_DIR = REPO_ROOT / "daemon" / "contract"
# The official AsyncAPI 3.0.0 JSON Schema (npm @asyncapi/specs, fetched by .ci/run; see docs/fleet.md).
OFFICIAL_SCHEMA = Path(
    os.environ.get(
        "SKELETON_ASYNCAPI_SCHEMA",
        Path.home() / ".cache" / "skeleton-v2" / "asyncapi-specs" / "package" / "schemas" / "3.0.0-without-$id.json",
    )
)


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(DOC_PATH.read_text())


def _pointer(document: object, fragment: str, where: str) -> object:
    """Resolve a JSON pointer (`/a/b`, RFC 6901) or fail naming the reference."""
    node = document
    for raw in fragment.lstrip("/").split("/") if fragment.strip("/") else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            pytest.fail(f"{where}: the reference does not resolve (no {part!r})")
    return node


def _refs(node: object, path: str = "") -> list[tuple[str, str]]:
    """Every ($ref value, where) in the document."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append((value, path))
            else:
                found.extend(_refs(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_refs(value, f"{path}/{index}"))
    return found


def test_is_asyncapi_3_0(doc):
    assert re.fullmatch(r"3\.0\.\d+", str(doc["asyncapi"]))
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["defaultContentType"] == "application/json"


def test_internal_refs_resolve(doc):
    internal = [(ref, where) for ref, where in _refs(doc) if ref.startswith("#")]
    assert len(internal) > 20
    for ref, where in internal:
        _pointer(doc, ref[1:], f"{where}: {ref}")


def test_external_refs_point_into_the_shared_contract(doc):
    external = [(ref, where) for ref, where in _refs(doc) if not ref.startswith("#")]
    targets = {(DOC_PATH.parent / ref.partition("#")[0]).resolve() for ref, _ in external}
    # The three payloads are the HTTP API's schema files, shared, not copies.
    assert targets == {CONTRACT_DIR / name for name in
                       ("request.schema.json", "answer.schema.json", "error.schema.json")}


@pytest.mark.skipif(not CONTRACT_DIR.is_dir(), reason="daemon/contract/ (the HTTP API's schemas) is not here yet")
def test_external_refs_resolve(doc):
    for ref, where in _refs(doc):
        if ref.startswith("#"):
            continue
        file_part, _, fragment = ref.partition("#")
        target = (DOC_PATH.parent / file_part).resolve()
        assert target.is_file(), f"{where}: {ref} names a missing file"
        schema = json.loads(target.read_text())
        jsonschema.validators.validator_for(schema).check_schema(schema)
        _pointer(schema, fragment, f"{where}: {ref}")


def test_channels_operations_and_messages_agree(doc):
    channels, operations = doc["channels"], doc["operations"]
    components = doc["components"]["messages"]
    for name, channel in channels.items():
        placeholders = set(re.findall(r"{([^}]+)}", channel["address"]))
        assert placeholders == set(channel.get("parameters", {})), f"channel {name}: address and parameters differ"
        assert channel["messages"], f"channel {name} carries no message"
        for message in channel["messages"].values():
            target = message["$ref"]
            assert target.startswith("#/components/messages/") and target.rsplit("/", 1)[1] in components
    used = set()
    for name, operation in operations.items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        channel_name = channel_ref.removeprefix("#/channels/")
        assert channel_name in channels, f"operation {name}: unknown channel {channel_ref}"
        used.add(channel_name)
        # An operation's messages must be messages of its own channel (AsyncAPI 3.0, Operation Object).
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), f"operation {name}: {message}"
        reply = operation.get("reply")
        if reply:
            reply_ref = reply["channel"]["$ref"]
            assert reply_ref.removeprefix("#/channels/") in channels
            used.add(reply_ref.removeprefix("#/channels/"))
            for message in reply["messages"]:
                assert message["$ref"].startswith(f"{reply_ref}/messages/"), f"operation {name} reply: {message}"
        qos = operation["bindings"]["mqtt"]["qos"]
        assert qos == 1, f"operation {name}: every message of the contract is QoS 1"
    assert used == set(channels), f"channels no operation uses: {set(channels) - used}"
    for name, message in components.items():
        assert message["payload"], name


def test_topics_are_the_ones_the_client_uses(doc):
    """The documented addresses, filled in, are the reference client's topics (both layouts)."""
    from daemon.fleet.client import KioskClient

    def address(channel: str, **values: str) -> str:
        text = doc["channels"][channel]["address"]
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text

    per_kiosk = KioskClient("mqtt://127.0.0.1:1", "gym/v2", kiosk="kiosk-03")
    single = KioskClient("mqtt://127.0.0.1:1", "gym/v2")
    assert per_kiosk.request_topic == address("request", prefix="gym/v2", kiosk="kiosk-03")
    assert per_kiosk.result_head + "u-1" == address("result", prefix="gym/v2", kiosk="kiosk-03", uuid="u-1")
    assert single.request_topic == address("requestSingle", prefix="gym/v2")
    assert single.result_head + "u-1" == address("resultSingle", prefix="gym/v2", uuid="u-1")
    assert doc["components"]["parameters"]["prefix"]["default"] == "skeleton/v2"


def test_status_schema_matches_the_status_the_daemons_publish(doc):
    from daemon.fleet.status import STATES, DaemonStatus, now_iso, status_json

    schema = doc["components"]["schemas"]["daemonStatus"]
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(DaemonStatus)}
    assert schema["properties"]["state"]["enum"] == list(STATES)
    example = DaemonStatus("jetson-1", "online", "onnxruntime", "0.1.0", 0, 16, 12, "skeletond", now_iso(), now_iso())
    jsonschema.validate(json.loads(status_json(example)), schema, format_checker=jsonschema.FormatChecker())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"daemon_id": "x", "state": "asleep"}, schema)


@pytest.mark.skipif(not OFFICIAL_SCHEMA.is_file(), reason=f"the official AsyncAPI schema is not at {OFFICIAL_SCHEMA}")
def test_valid_against_the_official_asyncapi_3_0_schema(doc):
    schema = json.loads(OFFICIAL_SCHEMA.read_text())
    errors = [f"{list(error.path)}: {error.message[:200]}" for error in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    assert not errors, errors


@pytest.mark.skipif(not CONTRACT_DIR.is_dir(), reason="daemon/contract/ (the HTTP API's schemas) is not here yet")
def test_the_reference_client_sends_what_the_shared_request_schema_describes():
    from daemon.errors import AnalysisError
    from daemon.fleet.client import request_payload

    request_schema = json.loads((CONTRACT_DIR / "request.schema.json").read_text())
    error_schema = json.loads((CONTRACT_DIR / "error.schema.json").read_text())
    payload = request_payload(b"\xff\xd8front", b"\xff\xd8side", user_id="member@example.com", height=171.5)
    jsonschema.validators.validator_for(request_schema)(request_schema).validate(payload)
    # What the client retries on (error kinds) is what the daemons send.
    busy = AnalysisError("overload", "the analysis queue is full").to_answer(payload["uuid"])
    jsonschema.validators.validator_for(error_schema)(error_schema).validate(busy)
