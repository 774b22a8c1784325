"""The web app's routes, added to the HTTP app by daemon/http.py.

GET    /kiosk                    the kiosk screen (camera -> WebSocket /capture -> overlay, guidance, report)
GET    /report/{uuid}            one report (HTML); ?lang=en|ko; ?t=<signed link token> opens it without
                                 the bearer token
GET    /report/{uuid}/link       a signed, expiring link to that report and its QR code (JSON)
GET    /members/{id}/history     every visit of a member, trends, two visits compared (HTML, or JSON
                                 when Accept asks for application/json)
DELETE /members/{id}             erasure: every stored result of that member (in a fleet: on every daemon)
GET    /web/static/...           the kiosk's script and the pages' style sheets

Access and path parameters: checked as for GET /results (`results_access` of daemon/http.py): open on
loopback without a token, the bearer token otherwise; a report link's token replaces it for that one
report. Errors in the same shape as the rest of the HTTP API.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from daemon.config import Config
from daemon.http import ResultsAccess, _json, _refusal, not_stored
from daemon.service import Service
from daemon.web import history as history_view
from daemon.web import i18n
from daemon.web import report as report_view
from daemon.web.pages import render

STATIC_DIR = Path(__file__).parent / "static"


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept.split("application/json")[0]


def _base_url(request: Request, config: Config) -> str:
    if config.web.public_url:
        return config.web.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def web_routes(service: Service, config: Config, results_access: ResultsAccess) -> list[BaseRoute]:
    def report_link(request: Request, uuid: str) -> dict:
        assert service.keys is not None  # callers check the store exists
        token, expires = service.keys.sign_report(uuid, config.web.link_ttl_s)
        url = f"{_base_url(request, config)}/report/{quote(uuid, safe='')}?t={token}"
        return {"url": url, "expires": expires, "qr_svg": report_view.qr_svg(url)}

    async def kiosk(request: Request) -> Response:
        lang = i18n.choose_lang(request.query_params.get("lang"), request.headers.get("accept-language"))
        return HTMLResponse(render("kiosk.html", lang=lang, t=i18n.texts(lang), kiosk_texts=i18n.kiosk_texts()))

    async def report(request: Request) -> Response:
        token = request.query_params.get("t")
        # A report link's token stands in for the bearer token: checked against the uuid once it is valid.
        uuid, refusal = results_access(request, check_access=token is None)
        if refusal is not None:
            return refusal
        if token is not None and (service.keys is None or not service.keys.verify_report(uuid, token)):
            return _refusal(403, "forbidden", "the report link is not valid for this report, or it expired")
        answer = await run_in_threadpool(service.store.get, uuid) if service.store is not None else None
        if answer is None:
            return not_stored(uuid)
        lang = i18n.choose_lang(request.query_params.get("lang"), request.headers.get("accept-language"))
        link = report_link(request, uuid) if token is None else None
        html = await run_in_threadpool(report_view.render_report, answer, lang, link, token)
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def link(request: Request) -> Response:
        uuid, refusal = results_access(request)
        if refusal is not None:
            return refusal
        stored = await run_in_threadpool(service.get_result_json, uuid)
        if stored is None:
            return not_stored(uuid)
        return _json(report_link(request, uuid))

    async def member_history(request: Request) -> Response:
        member_id, refusal = results_access(request, "member_id")
        if refusal is not None:
            return refusal
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
        member_id, refusal = results_access(request, "member_id")
        if refusal is not None:
            return refusal
        # In a shared group the other daemons erase too (docs/fleet.md "Erasure").
        return _json(await run_in_threadpool(service.erase_everywhere, member_id))

    return [
        Route("/kiosk", kiosk, methods=["GET"]),
        Route("/report/{uuid}/link", link, methods=["GET"]),
        Route("/report/{uuid}", report, methods=["GET"]),
        Route("/members/{member_id}/history", member_history, methods=["GET"]),
        Route("/members/{member_id}", erase_member, methods=["DELETE"]),
        Mount("/web/static", StaticFiles(directory=STATIC_DIR), name="web-static"),
    ]
