"""The local HTTP API (Starlette): parse, enqueue, reply; inference never runs on the event loop.

POST /analyze/skeleton-v2   the seed's request JSON -> the skeleton-v2 answer (errors in the seed shape)
GET  /results/{uuid}        a stored answer (token required whenever HTTP listens beyond loopback)
GET  /healthz               liveness, analyzer backend, queue depth, transport states
GET  /metrics               Prometheus text format
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from daemon import metrics
from daemon.answer import answer_json
from daemon.config import Config
from daemon.errors import AnalysisError
from daemon.request import parse_request, uuid_problem
from daemon.service import Service

log = logging.getLogger(__name__)

JSON = "application/json"
# Seconds a client should wait before retrying a request refused because the queue was full.
RETRY_AFTER_S = 5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json(payload: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(answer_json(payload), status_code=status, media_type=JSON, headers=headers)


def _error_response(error: AnalysisError, uuid: str | None = None) -> Response:
    metrics.count_error(error.kind)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if error.kind == "overload" else None
    return _json(error.to_answer(uuid), error.http_status, headers)


def _refusal(status: int, text: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"data": {"state": -1, "errors": text, "detail": detail}}, status, headers)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read chunk by chunk; stops as soon as it passes `limit` (memory stays bounded)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"the body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: Service, config: Config) -> Starlette:
    token = config.http.token
    results_need_token = token is not None or not is_loopback(config.http.host)

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    def unauthorized() -> Response:
        metrics.count_error("unauthorized")
        return _refusal(
            401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required",
            {"WWW-Authenticate": "Bearer"},
        )

    async def analyze(request: Request) -> Response:
        metrics.count_request("http")
        if not authorized(request):
            return unauthorized()
        try:
            body = await _read_body(request, config.http.max_body_bytes)
        except _TooLarge as exc:
            return _error_response(AnalysisError("too_large", str(exc)))
        uuid: str | None = None
        try:
            # Decoding megabytes of base64 and hashing them takes milliseconds: off the event loop.
            parsed = await run_in_threadpool(parse_request, body)
            # The raw body is as large as the photos again: drop it before waiting in the queue.
            del body
            uuid = parsed.uuid
            future = await run_in_threadpool(service.submit, parsed)
            answer = await asyncio.wrap_future(future)
        except AnalysisError as exc:
            if exc.kind not in ("validation", "overload", "too_large"):
                log.info("request %s: %s (%s)", uuid, exc.kind, exc.detail)
            return _error_response(exc, uuid)
        del parsed
        return Response(await run_in_threadpool(answer_json, answer), media_type=JSON)

    async def result(request: Request) -> Response:
        if results_need_token:
            if token is None:
                metrics.count_error("unauthorized")
                return _refusal(
                    403, "forbidden",
                    "results are served beyond loopback only with a token: set http.token",
                )
            if not authorized(request):
                return unauthorized()
        uuid = request.path_params["uuid"]
        problem = uuid_problem(uuid)
        if problem:
            return _error_response(AnalysisError("validation", problem, text="invalid field: uuid"), None)
        stored = await run_in_threadpool(service.get_result_json, uuid)
        if stored is None:
            return _refusal(404, "not found", f"no stored result for uuid {uuid} (never answered, or expired)")
        return Response(stored, media_type=JSON)

    async def healthz(request: Request) -> Response:
        description = service.describe()
        status = "ok" if description["accepting"] else "stopping"
        if status == "ok" and description["problems"]:
            status = "degraded"  # e.g. the broker unreachable for longer than mqtt.degraded_after_s
        return _json({"status": status, **description}, 200 if status == "ok" else 503)

    async def metrics_endpoint(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        metrics.set_queue_depth(service.worker.depth())
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    from daemon.capture.websocket import capture_route

    routes = [
        capture_route(service, config),  # WebSocket /capture: live capture (docs/capture.md)
        Route("/analyze/skeleton-v2", analyze, methods=["POST"]),
        Route("/results/{uuid:path}", result, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes)
