"""The HTTP API as an OpenAPI 3.1 document, its request, answer and error shapes taken from the schema
files beside this module (so the document and the tests that validate answers cannot drift apart)."""

from __future__ import annotations

from typing import Any

from daemon.contract import load_schema

_COMPONENT_NAMES = {"request": "Request", "answer": "Answer", "error": "Error"}
JSON = "application/json"


def _component(name: str, components: dict[str, Any]) -> None:
    """Add schema `name` as components.schemas.<Name>, its $defs hoisted to <Name>_<def> (references to
    local $defs are the one thing that would not resolve once the schema sits inside another document)."""
    schema = load_schema(name)
    prefix = _COMPONENT_NAMES[name]
    schema.pop("$schema", None)
    schema.pop("$id", None)
    defs = schema.pop("$defs", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: (f"#/components/schemas/{prefix}_{value.removeprefix('#/$defs/')}"
                      if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                      else rewrite(value))
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    components[prefix] = rewrite(schema)
    for def_name, definition in defs.items():
        components[f"{prefix}_{def_name}"] = rewrite(definition)


def _error(description: str, headers: dict | None = None) -> dict:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"}}
}


def build_openapi(*, version: str, token_required: bool, results_need_token: bool) -> dict:
    """The document for a server configured so (with or without a bearer token)."""
    components: dict[str, Any] = {}
    for name in _COMPONENT_NAMES:
        _component(name, components)
    components["Health"] = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "description": "ok; anything else (stopping, degraded) comes with 503"},
            "analyzer": {"type": "object", "description": "backend and why, models"},
            "queue_depth": {"type": "integer"},
            "queue_size": {"type": "integer"},
            "accepting": {"type": "boolean"},
            "transports": {"type": "object", "description": "transport name -> state"},
        },
    }
    auth_errors: dict[str, Any] = {}
    security: list[dict] = []
    doc_components: dict[str, Any] = {"schemas": components}
    if token_required:
        doc_components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        security = [{"bearer": []}]
        auth_errors["401"] = _error(
            "no valid 'Authorization: Bearer <token>' header",
            {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}},
        )
    uuid_parameter = {
        "name": "uuid", "in": "path", "required": True,
        "description": "the request's uuid",
        "schema": {"type": "string", "minLength": 1},
    }
    results_responses: dict[str, Any] = {
        "200": {"description": "the stored answer, byte for byte as first sent",
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/Answer"}}}},
        "400": _error("the uuid cannot key a result ('/', '+', '#', control characters, over 128 characters)"),
        "404": _error("no stored result for this uuid (never answered, or expired)"),
    }
    if results_need_token:
        results_responses.update(auth_errors)
        if not token_required:
            results_responses["403"] = _error("results are served beyond loopback only with a token (http.token)")
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "skeleton-v2 daemon HTTP API",
            "version": version,
            "description": (
                "Front and side photos of a standing person in, the skeleton-v2 posture report out. The same "
                "request and answer travel over MQTT (see the AsyncAPI document). Errors keep the seed's shape."
            ),
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": {
            "/analyze/skeleton-v2": {
                "post": {
                    "operationId": "analyze",
                    "summary": "Analyse a front and a side photo",
                    **({"security": security} if security else {}),
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Request"}}},
                    },
                    "responses": {
                        "200": {"description": "the posture report",
                                "content": {JSON: {"schema": {"$ref": "#/components/schemas/Answer"}}}},
                        "400": _error("not JSON, a missing or mistyped field (validation); a photo that cannot "
                                      "be read (image_load); no person found, analysis failed (processing)"),
                        **auth_errors,
                        "409": _error("this uuid was already answered for other inputs (conflict)"),
                        "413": _error("the body is over http.max_body_bytes (too_large)"),
                        "500": _error("an unexpected failure (internal)"),
                        "503": _error("the queue is full, too many uploads are in flight, or the daemon is "
                                      "stopping (overload); sent before the body is read", _RETRY_AFTER),
                    },
                }
            },
            "/results/{uuid}": {
                "get": {
                    "operationId": "getResult",
                    "summary": "A stored answer by uuid",
                    **({"security": security} if results_need_token and security else {}),
                    "parameters": [uuid_parameter],
                    "responses": results_responses,
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness, analyzer backend, queue and transport states (never needs a token)",
                    "responses": {
                        "200": {"description": "serving",
                                "content": {JSON: {"schema": {"$ref": "#/components/schemas/Health"}}}},
                        "503": {"description": "stopping, or degraded",
                                "content": {JSON: {"schema": {"$ref": "#/components/schemas/Health"}}}},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    **({"security": security} if security else {}),
                    "responses": {
                        "200": {"description": "Prometheus text format",
                                "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **auth_errors,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1",
                                          "content": {JSON: {"schema": {"type": "object"}}}}},
                }
            },
        },
        "components": doc_components,
    }
    return document
