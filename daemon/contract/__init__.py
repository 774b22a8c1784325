"""The published contract: JSON Schemas of the request, the answer and the error, and the OpenAPI 3.1
document built from them (served at GET /openapi.json).

The same schema files are what the tests validate answers with (tests/test_answer.py, tests/test_http.py,
tests/test_contract.py) and what the AsyncAPI document of the MQTT side references: keep their names.
answer.schema.json is a copy of ../shared/spec/skeleton-v2.answer.schema.json (a test keeps them equal).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

SCHEMA_NAMES = ("request", "answer", "error")


@functools.cache
def _text(name: str) -> str:
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r} (known: {', '.join(SCHEMA_NAMES)})")
    return resources.files(__package__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


def load_schema(name: str) -> dict:
    """A fresh copy of daemon/contract/<name>.schema.json (request, answer or error)."""
    return json.loads(_text(name))
