"""The published contract (issue 10): daemon/contract's JSON Schemas, the OpenAPI 3.1 document served at
GET /openapi.json, and schemathesis attacking the live server (real analyzer, real uvicorn) with
requests generated from that document: every answer must have a documented status, content type,
headers and body.

Budget: SKELETON_CONTRACT_EXAMPLES examples per operation (default 25, the normal test run). The long run
is `bench/contract_long.py` (the schemathesis CLI against `skeletond serve`, every phase).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import httpx
import jsonschema
import pytest
import schemathesis
from conftest import testdata_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_http import TOKEN, running_server

from daemon.config import load_config
from daemon.contract import SCHEMA_NAMES, load_schema
from daemon.errors import _SEED_SHAPES
from daemon.service import Service

EXAMPLES = int(os.environ.get("SKELETON_CONTRACT_EXAMPLES", "25"))
CONTRACT = Path(__file__).resolve().parent.parent / "daemon" / "contract"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


def test_answer_schema_is_the_shared_specs():
    shared = json.loads(testdata_path("..", "spec", "skeleton-v2.answer.schema.json").read_text())
    assert load_schema("answer") == shared


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schemas_are_valid_json_schema(name):
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert (CONTRACT / f"{name}.schema.json").is_file()


def test_error_kinds_are_every_kind_the_daemon_answers():
    kinds = set(load_schema("error")["properties"]["data"]["properties"]["kind"]["enum"])
    assert kinds == set(_SEED_SHAPES) | {"unauthorized", "forbidden", "not_found", "method_not_allowed"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The real daemon (real analyzer) on uvicorn, with a token so every documented refusal can happen."""
    config = load_config(overrides={
        "http": {"token": TOKEN, "max_body_bytes": 1_000_000, "max_inflight_body_bytes": 4_000_000},
        "store": {"path": str(tmp_path_factory.mktemp("contract") / "results.sqlite3")},
    })
    service = Service(config)
    service.start()
    with running_server(service, config) as url:
        yield url
    service.stop(30)


def test_openapi_document_is_served_and_uses_the_package_schemas(live):
    response = httpx.get(f"{live}/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    # The same schemas, $defs hoisted so the references resolve inside the document.
    assert schemas["Answer"]["required"] == load_schema("answer")["required"]
    assert set(schemas["Error"]["properties"]["data"]["properties"]["kind"]["enum"]) >= set(_SEED_SHAPES)
    assert schemas["Request"]["required"] == ["id", "uuid", "forigimg", "sorigimg"]
    assert "Answer_points3d22" in schemas and "Request_photo" in schemas
    analyze = document["paths"]["/analyze/skeleton-v2"]["post"]
    assert set(analyze["responses"]) == {"200", "400", "401", "409", "413", "500", "503"}
    assert analyze["security"] == [{"bearer": []}]
    # A document schemathesis (an independent OpenAPI 3.1 reader) loads without complaint.
    assert len(list(schemathesis.openapi.from_dict(document).get_all_operations())) == 5


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"{live}/openapi.json")


OPERATIONS = [("POST", "/analyze/skeleton-v2"), ("GET", "/results/{uuid}"), ("GET", "/healthz"),
              ("GET", "/metrics"), ("GET", "/openapi.json")]


# Negative cases need an input to break: /healthz and /openapi.json take none.
CASES = [(method, path, mode) for method, path in OPERATIONS for mode in GenerationMode
         if mode == GenerationMode.POSITIVE or path not in ("/healthz", "/openapi.json")]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{p}-{m.value}" for _, p, m in CASES])
def test_every_generated_request_gets_a_documented_answer(api_schema, method, path, mode):
    """Cases generated from the served document by schemathesis' own strategies, sent to the live server,
    checked by its checks. (Its pytest plugin's lazy loader fails under pytest 9, so hypothesis drives
    the strategies here.)"""
    operation = api_schema[path][method]
    statuses: Counter = Counter()

    @given(case=operation.as_strategy(generation_mode=mode), with_token=st.booleans())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def attack(case, with_token):
        headers = {"Authorization": f"Bearer {TOKEN}"} if with_token else {}
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)
        statuses[response.status_code] += 1

    attack()
    assert sum(statuses.values()) >= 1


# -- what schemathesis found, pinned ------------------------------------------------------------------


def _error_answer(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    jsonschema.validate(body, load_schema("error"))
    assert body["data"]["kind"] == kind
    return body["data"]


def test_a_uuid_with_a_newline_is_a_400_not_a_plain_text_404(live):
    # Starlette's `path` parameter stops at a newline: the request fell through to a text/plain 404.
    response = httpx.get(f"{live}/results/abc%0Adef", headers={"Authorization": f"Bearer {TOKEN}"})
    data = _error_answer(response, 400, "validation")
    assert "control characters" in data["detail"]


def test_routing_refusals_and_http_refusals_are_in_the_error_shape(live):
    _error_answer(httpx.get(f"{live}/no/such/route"), 404, "not_found")
    refused = httpx.get(f"{live}/analyze/skeleton-v2")
    _error_answer(refused, 405, "method_not_allowed")
    assert "POST" in refused.headers["allow"]
    _error_answer(httpx.get(f"{live}/metrics"), 401, "unauthorized")
    _error_answer(httpx.get(f"{live}/results/none-such", headers={"Authorization": f"Bearer {TOKEN}"}),
                  404, "not_found")


def test_an_unexpected_failure_is_a_500_in_the_error_shape(tmp_path):
    """A result store that fails (here: closed under the server, as a vanished or broken disk would leave
    it) used to surface as Starlette's text/plain 'Internal Server Error'."""
    config = load_config(overrides={"store": {"path": str(tmp_path / "broken.sqlite3")}})
    service = Service(config, lambda cfg: None, use_store=True)
    try:
        with running_server(service, config) as url:
            service.store.close()
            response = httpx.get(f"{url}/results/some-uuid")
            data = _error_answer(response, 500, "internal")
            assert data["message"] == "processing error" and "see the daemon's log" in data["detail"]
            assert "broken.sqlite3" not in response.text  # no paths or internals in the answer
    finally:
        service.stop(1)
