"""The web app's routes, added to the HTTP app by daemon/http.py.

GET    /kiosk                    the kiosk screen (camera -> WebSocket /capture -> overlay, guidance, report)
GET    /report/{uuid}            one report (HTML); ?lang=en|ko; ?t=<signed link token> opens it without
                                 the bearer token
GET    /report/{uuid}/link       a signed, expiring link to that report and its QR code (JSON)
GET    /members/{id}/history     every visit of a member, trends, two visits compared (HTML, or JSON
                                 when Accept asks for application/json)
DELETE /members/{id}             erasure: every stored result of that member
GET    /web/static/...           the kiosk's script and the pages' style sheets

Access: the same rule as GET /results (`results_refusal`): open on loopback without a token, the bearer
token otherwise. A report link's token replaces it for that one report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from daemon.config import Config
from daemon.request import uuid_problem
from daemon.service import Service
from daemon.web import history as history_view
from daemon.web import i18n
from daemon.web import report as report_view
from daemon.web.pages import render

STATIC_DIR = Path(__file__).parent / "static"
# Member ids are e-mail addresses; anything longer is not one.
MAX_MEMBER_ID_LENGTH = 320

Refusal = Callable[[Request], Response | None]


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, text: str, detail: str) -> Response:
    return _json({"data": {"state": -1, "errors": text, "detail": detail}}, status)


def _member_problem(member_id: str) -> str | None:
    if not member_id.strip():
        return "the member id is empty"
    if len(member_id) > MAX_MEMBER_ID_LENGTH:
        return f"the member id is longer than {MAX_MEMBER_ID_LENGTH} characters"
    return None


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept.split("application/json")[0]


def _base_url(request: Request, config: Config) -> str:
    if config.web.public_url:
        return config.web.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def web_routes(service: Service, config: Config, results_refusal: Refusal) -> list[BaseRoute]:
    def report_link(request: Request, uuid: str) -> dict:
        assert service.keys is not None  # callers check the store exists
        token, expires = service.keys.sign_report(uuid, config.web.link_ttl_s)
        url = f"{_base_url(request, config)}/report/{quote(uuid, safe='')}?t={token}"
        return {"url": url, "expires": expires, "qr_svg": report_view.qr_svg(url)}

    async def kiosk(request: Request) -> Response:
        lang = i18n.choose_lang(request.query_params.get("lang"), request.headers.get("accept-language"))
        return HTMLResponse(render("kiosk.html", lang=lang, t=i18n.texts(lang), kiosk_texts=i18n.kiosk_texts()))

    async def report(request: Request) -> Response:
        uuid = request.path_params["uuid"]
        problem = uuid_problem(uuid)
        if problem:
            return _error(400, "invalid field: uuid", problem)
        token = request.query_params.get("t")
        if token is not None:
            if service.keys is None or not service.keys.verify_report(uuid, token):
                return _error(403, "forbidden", "the report link is not valid for this report, or it expired")
        else:
            refusal = results_refusal(request)
            if refusal is not None:
                return refusal
        answer = await run_in_threadpool(service.store.get, uuid) if service.store is not None else None
        if answer is None:
            return _error(404, "not found", f"no stored result for uuid {uuid} (never answered, or expired)")
        lang = i18n.choose_lang(request.query_params.get("lang"), request.headers.get("accept-language"))
        link = report_link(request, uuid) if token is None else None
        html = await run_in_threadpool(report_view.render_report, answer, lang, link, token)
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def link(request: Request) -> Response:
        refusal = results_refusal(request)
        if refusal is not None:
            return refusal
        uuid = request.path_params["uuid"]
        problem = uuid_problem(uuid)
        if problem:
            return _error(400, "invalid field: uuid", problem)
        stored = await run_in_threadpool(service.get_result_json, uuid)
        if stored is None:
            return _error(404, "not found", f"no stored result for uuid {uuid} (never answered, or expired)")
        return _json(report_link(request, uuid))

    async def member_history(request: Request) -> Response:
        refusal = results_refusal(request)
        if refusal is not None:
            return refusal
        member_id = request.path_params["member_id"]
        problem = _member_problem(member_id)
        if problem:
            return _error(400, "invalid member id", problem)
        answers = await run_in_threadpool(service.member_history, member_id)
        visits = history_view.visits(answers)
        compare = history_view.comparison(
            visits, request.query_params.get("a"), request.query_params.get("b")
        )
        if _wants_json(request):
            return _json({"visits": visits, "comparison": compare, "noise": history_view.noise_table()})
        lang = i18n.choose_lang(request.query_params.get("lang"), request.headers.get("accept-language"))
        html = await run_in_threadpool(history_view.render_history, member_id, visits, compare, lang)
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def erase_member(request: Request) -> Response:
        refusal = results_refusal(request)
        if refusal is not None:
            return refusal
        member_id = request.path_params["member_id"]
        problem = _member_problem(member_id)
        if problem:
            return _error(400, "invalid member id", problem)
        removed = await run_in_threadpool(service.erase_member, member_id)
        return _json({"erased": removed})

    return [
        Route("/kiosk", kiosk, methods=["GET"]),
        Route("/report/{uuid}/link", link, methods=["GET"]),
        Route("/report/{uuid}", report, methods=["GET"]),
        Route("/members/{member_id}/history", member_history, methods=["GET"]),
        Route("/members/{member_id}", erase_member, methods=["DELETE"]),
        Mount("/web/static", StaticFiles(directory=STATIC_DIR), name="web-static"),
    ]
