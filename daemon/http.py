"""The local HTTP API (Starlette): parse, enqueue, reply; inference never runs on the event loop.

POST /analyze/skeleton-v2   the seed's request JSON -> the skeleton-v2 answer (errors in the seed shape)
GET  /results/{uuid}        a stored answer (token required whenever HTTP listens beyond loopback)
GET  /healthz               liveness, analyzer backend, queue depth, transport states
GET  /metrics               Prometheus text format
GET  /openapi.json          this API as an OpenAPI 3.1 document (daemon/contract/)
/kiosk, /report/{uuid}, /members/{id}[/history]: the web app (daemon/web/routes.py, same access rule as /results)
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Callable

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from daemon import metrics
from daemon.answer import SOFTWARE_VERSION, answer_json
from daemon.config import Config
from daemon.contract.openapi import build_openapi
from daemon.errors import AnalysisError
from daemon.members import member_problem
from daemon.request import parse_owned_body, uuid_problem
from daemon.service import Service, release_free_memory

log = logging.getLogger(__name__)

JSON = "application/json"
# Seconds a client should wait before retrying a request refused because the queue was full.
RETRY_AFTER_S = 5
# Returning freed memory to the system (malloc_trim) costs milliseconds: only after bodies this large.
_TRIM_AFTER_BYTES = 8 * 1024 * 1024


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


def _refusal(
    status: int, text: str, detail: str, headers: dict[str, str] | None = None, kind: str | None = None
) -> Response:
    """A refusal of the HTTP layer itself (no token, no result) in the seed's error shape."""
    kind = kind or text.replace(" ", "_")
    return _json({"data": {"state": -1, "errors": text, "detail": detail, "kind": kind}}, status, headers)


def not_stored(uuid: str) -> Response:
    return _refusal(404, "not found", f"no stored result for uuid {uuid} (never answered, or expired)")


# Path parameters of the results routes: how to tell a bad one, and the `errors` text of its 400.
_PATH_CHECKS: dict[str, tuple[Callable[[str], str | None], str]] = {
    "uuid": (uuid_problem, "invalid field: uuid"),
    "member_id": (member_problem, "invalid member id"),
}

# results_access(request, key="uuid", check_access=True): see create_app.
ResultsAccess = Callable[..., tuple[str, Response | None]]


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) in the seed's error shape too."""
    status = getattr(exc, "status_code", 500)
    headers = getattr(exc, "headers", None)
    if status == 404:
        return _refusal(404, "not found", f"no route {request.method} {request.url.path[:200]}", kind="not_found")
    if status == 405:
        return _refusal(405, "method not allowed", f"{request.method} is not allowed here", headers,
                        kind="method_not_allowed")
    return _refusal(status, "invalid request", str(getattr(exc, "detail", "")) or "refused", headers,
                    kind="validation")


class _AnyText(Convertor):
    """A path parameter matching any text, newlines included (Starlette's `path` stops at one, and the
    request then fell through to a plain-text 404 instead of the uuid's own 400)."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())


async def _unexpected(request: Request, exc: Exception) -> Response:
    """An exception no handler caught: the seed's `internal` error (documented 500), not a bare text page."""
    log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    return _error_response(AnalysisError("internal", f"unexpected {type(exc).__name__}; see the daemon's log"))


class _TooLarge(Exception):
    pass


class BodyBudget:
    """Bytes of request bodies held from the first byte read until the answer is sent (http.max_inflight_body_bytes).

    Used only on the event loop (no lock). A body is counted at its declared Content-Length before it is
    read, or chunk by chunk when it has none; the parsed photos it becomes stay counted until answered,
    so uploads cannot pile up in memory however many clients send at once.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        metrics.add_body_bytes(size)
        return True

    def give_back(self, size: int) -> None:
        self.used -= size
        metrics.add_body_bytes(-size)


def _busy(detail: str) -> AnalysisError:
    return AnalysisError("overload", detail)


async def _read_body(request: Request, limit: int, budget: BodyBudget, held: list[int]) -> bytearray:
    """The body, read chunk by chunk into one buffer; stops as soon as it passes `limit` (413) or the
    budget of bodies in flight (503). `held[0]` is what this body has taken from the budget so far."""
    declared = request.headers.get("content-length")
    size_known = declared is not None and declared.isdigit()
    if size_known and int(declared) > limit:
        raise _TooLarge(f"the body is {int(declared)} bytes; the limit is {limit} bytes")
    if size_known:
        if not budget.take(int(declared)):
            raise _busy("too many uploads are being received at once; retry shortly")
        held[0] += int(declared)
    # One buffer, no list of chunks joined at the end (that doubled the peak for a moment).
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise _TooLarge(f"the body is larger than the limit of {limit} bytes")
        if len(body) + len(chunk) > held[0]:
            extra = len(body) + len(chunk) - held[0]
            if not budget.take(extra):
                raise _busy("too many uploads are being received at once; retry shortly")
            held[0] += extra
        body += chunk
    return body


def create_app(service: Service, config: Config) -> Starlette:
    token = config.http.token
    budget = BodyBudget(config.http.max_inflight_body_bytes)
    parse_lock = asyncio.Lock()
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
        # Refused before a byte of the body is read: a full queue costs the server no memory.
        if not service.has_room():
            return _error_response(_busy(
                "the analysis queue is full; retry shortly" if service.worker.accepting
                else "the daemon is not accepting requests (starting or shutting down); retry shortly"
            ))
        held = [0]
        try:
            return await _analyze_body(request, held)
        finally:
            budget.give_back(held[0])
            if budget.used == 0 and held[0] >= _TRIM_AFTER_BYTES:
                # The last large upload is answered: hand its freed pages back to the system.
                asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    async def _analyze_body(request: Request, held: list[int]) -> Response:
        try:
            body = await _read_body(request, config.http.max_body_bytes, budget, held)
        except _TooLarge as exc:
            return _error_response(AnalysisError("too_large", str(exc)))
        except AnalysisError as exc:
            return _error_response(exc)
        uuid: str | None = None
        try:
            # Decoding megabytes of base64 and hashing them takes milliseconds: off the event loop, one
            # body at a time (a parse briefly holds the body's size twice over). The parser takes the
            # body out of `owned` and frees it once the JSON is read, before the photos are decoded.
            owned = [body]
            del body
            async with parse_lock:
                parsed = await run_in_threadpool(parse_owned_body, owned)
            uuid = parsed.uuid
            future = await run_in_threadpool(service.submit, parsed)
            answer = await asyncio.wrap_future(future)
        except AnalysisError as exc:
            if exc.kind not in ("validation", "overload", "too_large"):
                log.info("request %s: %s (%s)", uuid, exc.kind, exc.detail)
            return _error_response(exc, uuid)
        del parsed
        return Response(await run_in_threadpool(answer_json, answer), media_type=JSON)

    def results_refusal(request: Request) -> Response | None:
        """None when the caller may read stored results (and, in daemon/web, members' pages)."""
        if results_need_token:
            if token is None:
                metrics.count_error("unauthorized")
                return _refusal(
                    403, "forbidden",
                    "results are served beyond loopback only with a token: set http.token",
                )
            if not authorized(request):
                return unauthorized()
        return None

    def results_access(
        request: Request, key: str = "uuid", check_access: bool = True
    ) -> tuple[str, Response | None]:
        """The path parameter `key` ("uuid" or "member_id") of a results route, and the refusal to send
        instead when there is one: the caller may not read results (`results_refusal`; skipped when
        check_access is False), or the value is not valid (400). /results and every web route check here."""
        value = request.path_params[key]
        refusal = results_refusal(request) if check_access else None
        if refusal is None:
            problem_of, text = _PATH_CHECKS[key]
            problem = problem_of(value)
            if problem:
                refusal = _error_response(AnalysisError("validation", problem, text=text))
        return value, refusal

    async def result(request: Request) -> Response:
        uuid, refusal = results_access(request)
        if refusal is not None:
            return refusal
        stored = await run_in_threadpool(service.get_result_json, uuid)
        if stored is None:
            return not_stored(uuid)
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

    openapi_json = orjson.dumps(build_openapi(
        version=SOFTWARE_VERSION, token_required=token is not None, results_need_token=results_need_token,
    ))

    async def openapi(request: Request) -> Response:
        return Response(openapi_json, media_type=JSON)

    from daemon.capture.websocket import capture_route
    from daemon.web.routes import web_routes  # imports this module's error shapes

    routes = [
        capture_route(service, config),  # WebSocket /capture: live capture (docs/capture.md)
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/analyze/skeleton-v2", analyze, methods=["POST"]),
        Route("/results/{uuid:anytext}", result, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *web_routes(service, config, results_access),
    ]
    return Starlette(routes=routes, exception_handlers={Exception: _unexpected, HTTPException: _http_exception})
