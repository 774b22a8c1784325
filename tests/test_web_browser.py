"""The web app in Debian's real Chromium (headless, driven by Playwright's Python API; Playwright's own
browser download is never used): the report in both languages with every measure and both photos, its
A4 print layout, a member's history, a member's phone opening a signed link, the kiosk script's logic
against the capture protocol, and the kiosk with Chromium's fake camera fed a video made at test time
from the test photos (in a temporary folder, never committed).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import testdata_path
from test_http import AUTH, TOKEN
from test_web import MEMBER, site  # noqa: F401  (the module-scoped daemon with three visits)

from daemon.answer import FRONT_MEASURE_FIELDS, SIDE_MEASURE_FIELDS
from daemon.web.fakecam import write_y4m

CHROMIUM = "/usr/bin/chromium"
MEASURES = FRONT_MEASURE_FIELDS + SIDE_MEASURE_FIELDS
# Height the printed report keeps free on its A4 page: three lines of findings or photo notes.
PRINT_SPARE_PX = 45

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
)


@pytest.fixture(scope="module")
def camera_video(tmp_path_factory) -> Path:
    return write_y4m(tmp_path_factory.mktemp("fakecam") / "camera.y4m",
                     testdata_path("photos", "front", "fitlens_p1_front.jpg"),
                     testdata_path("photos", "side", "fitlens_p1_side.jpg"))


@pytest.fixture(scope="module")
def browser(camera_video):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera_video}",
        ])
        yield instance
        instance.close()


@pytest.fixture
def coach(browser, site):  # noqa: F811
    """A browser context that sends the daemon's bearer token (a coach's screen)."""
    context = browser.new_context(base_url=site["url"], extra_http_headers=AUTH)
    yield context.new_page()
    context.close()


def pdf_pages(pdf: bytes) -> int:
    counts = [int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count (\d+)", pdf)]
    counts += [int(n) for n in re.findall(rb"/Count (\d+)[^>]*?/Type\s*/Pages\b", pdf)]
    assert counts, "no page tree found in the PDF"
    return max(counts)


@pytest.mark.parametrize("lang, heading, word", [("en", "Posture report", "Shoulder balance"),
                                                 ("ko", "자세 분석 결과", "어깨 균형")])
def test_report_shows_every_measure_and_both_photos(coach, lang, heading, word):
    measures = coach.request.get("/results/visit-0").json()["measures"]
    coach.goto(f"/report/visit-0?lang={lang}")
    assert coach.inner_text("h1") == heading
    assert coach.evaluate("document.documentElement.lang") == lang
    assert word in coach.inner_text("body")
    for view in ("front", "side"):
        size = coach.evaluate(f"[document.getElementById('photo-{view}').naturalWidth,"
                              f" document.getElementById('photo-{view}').naturalHeight]")
        assert size[0] > 300 and size[1] > 300, f"the {view} photo did not load"
        assert coach.is_visible(f"#photo-{view}")
    for name in MEASURES:
        row = coach.locator(f'tr[data-measure="{name}"]')
        assert row.is_visible(), name
        assert row.locator("svg.range-bar .normal-band").count() == 1
        value = row.locator("td.value").inner_text()
        if measures[name]["value"] is None:  # fitlens_p1's side photo cuts a toe off: sar_tilt
            assert value == "–" and measures[name]["reason"] in row.locator(".meaning").inner_text()
            assert row.get_attribute("class") == "measure status-not_measurable"
        else:
            assert value == f"{measures[name]['value']:.1f}°", name
            assert row.locator("svg.range-bar .value-marker").count() == 1
        assert row.locator(".meaning").inner_text().strip(), f"{name} has no sentence"
    assert coach.locator(".qr svg").count() == 1  # the member's link, for the kiosk and coach


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 720}, {"width": 1080, "height": 1920}])
def test_report_prints_on_one_a4_page(browser, site, lang, viewport):  # noqa: F811
    context = browser.new_context(base_url=site["url"], extra_http_headers=AUTH, viewport=viewport)
    page = context.new_page()
    page.goto(f"/report/visit-1?lang={lang}")
    pdf = page.pdf(format="A4", print_background=True)
    assert pdf_pages(pdf) == 1
    # Print media: nothing wider than A4's printable width (210 mm - 2 x 9 mm margins = 726 px).
    page.emulate_media(media="print")
    page.set_viewport_size({"width": 726, "height": 1000})
    widest = page.evaluate("Math.max(...[...document.querySelectorAll('body *')].map(e => e.getBoundingClientRect().right))")
    assert widest <= 727
    # ... and room to spare below (297 mm - 2 x 9 mm = 1054 px high): a measure that crosses a band's
    # edge adds a finding, a photo note adds a line; neither may push the footer onto a second page.
    bottom = page.evaluate("Math.max(...[...document.querySelectorAll('body *')].map(e => e.getBoundingClientRect().bottom))")
    assert bottom <= 1054 - PRINT_SPARE_PX, f"the printed report ends {1054 - bottom:.0f} px above the page's end"
    assert page.is_hidden(".lang-switch")
    context.close()


def test_history_has_trends_and_a_comparison(coach):
    coach.goto(f"/members/{quote(MEMBER)}/history?lang=en")
    assert coach.locator("tr.visit").count() == 3
    cards = coach.locator(".trend-card")
    assert cards.count() == len(MEASURES) + 2  # and the front and side scores
    for index in range(cards.count()):
        assert cards.nth(index).locator("circle.visit-point").count() in (2, 3)
    assert coach.locator(".trend-card circle.visit-point").count() >= 3 * (len(MEASURES) - 1)
    rows = coach.locator("tr.compare-row")
    assert rows.count() == len(MEASURES)
    flags = [rows.nth(i).get_attribute("data-flag") for i in range(rows.count())]
    assert any(flag != "none" for flag in flags)
    assert "measurement noise" in coach.inner_text(".comparison .note")
    coach.goto(f"/members/{quote(MEMBER)}/history?lang=ko")
    assert "비교" in coach.inner_text(".comparison h2")


def test_a_phone_opens_the_signed_link_without_the_token(browser, site, coach):  # noqa: F811
    link = coach.request.get("/report/visit-2/link").json()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = phone.new_page()
    refused = page.goto(f"{site['url']}/report/visit-2")
    assert refused.status == 401
    opened = page.goto(link["url"])
    assert opened.status == 200
    assert page.locator("tr[data-measure]").count() == len(MEASURES)
    # The language switch keeps the link's token.
    page.click(".lang-switch")
    assert page.evaluate("document.documentElement.lang") == "ko"
    assert page.locator("tr[data-measure]").count() == len(MEASURES)
    phone.close()


KIOSK_LOGIC = """
async () => {
  const k = await import('/web/static/kiosk.js');
  const out = {};
  out.url = k.captureUrl({protocol: 'http:', host: 'kiosk.local:8080'},
                         {uuid: 'u-1', id: 'a@b.c', height: 172, kiosk: null, lang: 'ko', token: null});
  out.urlToken = k.captureUrl({protocol: 'https:', host: 'h'}, {uuid: 'u', id: 'x', token: 't k'});
  out.uuidFallback = k.newUuid({getRandomValues: (a) => { a.fill(255); return a; }});
  out.uuid = k.newUuid();
  let s = {phase: 'live', view: 'front', lastFrameAnswered: -1, captured: {}};
  s = k.reduce(s, {event: 'session', protocol: 1, uuid: 'u-1', views: ['front', 'side'], view: 'front'}, 'ko');
  s = k.reduce(s, {event: 'guide', frame: 3, view: 'front', ready: false,
                   messages: [{code: 'step_back', text: '뒤로 물러서 주세요'}, {code: 'move_left', text: '왼쪽으로'}],
                   countdown: null, dropped: 2, image_size: [540, 960],
                   person: {box: [10, 20, 100, 400], keypoints: [[1, 2, 0.99], [3, 4, 0.2]], score: 0.9}, people: 1}, 'ko');
  out.guide = s;
  s = k.reduce(s, {event: 'guide', frame: 5, view: 'front', ready: true,
                   messages: [{code: 'hold_still', text: 'Hold still.'}], countdown: 0.4, person: null}, 'en');
  out.ready = s;
  s = k.reduce(s, {event: 'captured', view: 'front', frame: 5, source: 'auto', next: 'side'}, 'en');
  out.afterFront = s.phase + ':' + s.view + ':' + JSON.stringify(s.captured);
  const restarted = k.reduce(s, {event: 'restarted', view: 'front'}, 'en');
  out.restarted = restarted.phase + ':' + restarted.view + ':' + JSON.stringify(restarted.captured);
  s = k.reduce(s, {event: 'error', fatal: false, frame: 6,
                   error: {data: {state: -1, errors: 'image load error', detail: 'frame 6: not a JPEG'}}}, 'en');
  out.notice = s.phase + ':' + s.notice;
  s = k.reduce(s, {event: 'guide', frame: 9, view: 'side', ready: false, messages: [{code: 'turn_side', text: 'Turn to your side.'}]}, 'en');
  out.sideGuide = s.view + ':' + s.messages[0] + ':' + s.notice;
  s = k.reduce(s, {event: 'captured', view: 'side', frame: 12, source: 'command', next: null}, 'en');
  out.afterSide = s.phase;
  s = k.reduce(s, {event: 'analysing', uuid: 'u-1'}, 'en');
  out.analysing = s.phase;
  out.result = k.reduce(s, {event: 'result', answer: {uuid: 'u-1', state: 0, data: {state: 0}}}, 'en').phase;
  out.fatal = k.reduce(s, {event: 'error', fatal: true,
                           error: {uuid: 'u-1', data: {state: -1, message: 'processing error',
                                                       detail: 'no person found in the side image'}}}, 'en');
  out.busy = k.reduce({phase: 'live'}, {event: 'error', fatal: true,
                      error: {data: {state: -1, errors: 'server busy', detail: 'too many capture sessions'}}}, 'en').error;
  out.maySend = [k.maySend(0, -1), k.maySend(1, -1), k.maySend(2, -1), k.maySend(3, 0), k.maySend(3, 1), k.maySend(1, -1, 8e6)];
  out.size = [k.frameSize(1080, 1920), k.frameSize(4000, 3000), k.frameSize(640, 480)];
  out.edges = [k.edgesFor(33).length, k.edgesFor(17).length, k.edgesFor(3).length];
  out.messageForms = [k.messageText('plain', 'ko'), k.messageText({en: 'E', ko: 'K'}, 'ko'), k.messageText({code: 'x', text: 'T'}, 'ko')];
  out.outline = k.outlinePoints('front', 1080, 1920).every(([x, y]) => x > 0 && x < 1080 && y >= 190 && y <= 1730);
  out.sideOutline = k.outlinePoints('side', 1080, 1920).length;
  return out;
}
"""


def test_kiosk_logic_follows_the_capture_protocol(coach):
    coach.goto("/healthz")
    out = coach.evaluate(KIOSK_LOGIC)
    assert out["url"] == "ws://kiosk.local:8080/capture?uuid=u-1&id=a%40b.c&height=172&lang=ko"
    assert out["urlToken"] == "wss://h/capture?uuid=u&id=x&token=t+k"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", out["uuidFallback"])
    assert re.fullmatch(r"[0-9a-f-]{36}", out["uuid"])
    guide = out["guide"]
    assert guide["messages"] == ["뒤로 물러서 주세요", "왼쪽으로"]
    assert guide["box"] == {"x": 10, "y": 20, "w": 100, "h": 400}
    assert guide["keypoints"] == [[1, 2, 0.99], [3, 4, 0.2]] and guide["frameSize"] == [540, 960]
    assert guide["lastFrameAnswered"] == 3 and guide["ready"] is False and guide["dropped"] == 2
    ready = out["ready"]
    assert ready["ready"] is True and ready["countdown"] == 0.4 and ready["keypoints"] == []
    assert ready["lastFrameAnswered"] == 5 and ready["messages"] == ["Hold still."]
    assert out["afterFront"] == 'live:side:{"front":true}'
    assert out["restarted"] == "live:front:{}"
    assert out["notice"] == "live:frame 6: not a JPEG"
    assert out["sideGuide"] == "side:Turn to your side.:null"
    assert out["afterSide"] == "analysing" and out["analysing"] == "analysing"
    assert out["result"] == "result"
    assert out["fatal"]["phase"] == "error" and out["fatal"]["error"] == "no person found in the side image"
    assert out["busy"] == "too many capture sessions"
    assert out["maySend"] == [True, True, False, False, True, False]
    assert out["size"] == [[1080, 1920], [1920, 1440], [640, 480]]
    assert out["edges"][0] > out["edges"][1] > 0 and out["edges"][2] == 0
    assert out["messageForms"] == ["plain", "K", "T"]
    assert out["outline"] is True and out["sideOutline"] > 10


class ScriptedCapture:
    """Plays the daemon's side of /capture (docs/capture.md, protocol 1) inside the browser's WebSocket
    layer: session, guide events for the frames it gets, front then side captured, analysing, then the
    stored answer of a real analysis. A fake that checks the page's half of the protocol; the real
    WebSocket is the end-to-end test below."""

    def __init__(self, answer: dict, keypoints: list[list[float]], frames_per_view: int = 6):
        self.answer, self.keypoints, self.per_view = answer, keypoints, frames_per_view
        self.frames: list[bytes] = []
        self.url = ""
        self.commands: list[str] = []

    def __call__(self, ws) -> None:
        import json

        self.url = ws.url
        ws.on_message(lambda message: self.on_message(ws, message))
        ws.send(json.dumps({"event": "session", "protocol": 1, "uuid": "scripted", "views": ["front", "side"],
                            "view": "front", "lang": "ko", "still": False, "hold_s": 1.0, "max_sessions": 2}))

    def on_message(self, ws, message) -> None:
        import json

        if isinstance(message, str):
            self.commands.append(message)
            return
        index = len(self.frames)
        self.frames.append(message)
        view = "front" if index < self.per_view else "side"
        ready = index % self.per_view >= self.per_view - 3
        messages = ([{"code": "hold_still", "text": "움직이지 마세요."}] if ready
                    else [{"code": "step_back", "text": "뒤로 물러서 주세요."}])
        ws.send(json.dumps({
            "event": "guide", "frame": index, "view": view, "ready": ready, "messages": messages,
            "countdown": 1.0 if ready else None, "dropped": 0, "latency_ms": 30.0, "image_size": [540, 960],
            "person": {"box": [100, 80, 300, 800], "keypoints": self.keypoints, "score": 0.97}, "people": 1,
        }))
        if index == self.per_view - 1:
            ws.send(json.dumps({"event": "captured", "view": "front", "frame": index, "source": "auto",
                                "next": "side"}))
        if index == 2 * self.per_view - 1:
            ws.send(json.dumps({"event": "captured", "view": "side", "frame": index, "source": "auto",
                                "next": None}))
            ws.send(json.dumps({"event": "analysing", "uuid": self.answer["uuid"]}))
            ws.send(json.dumps({"event": "result", "answer": self.answer}))


# BlazePose's 33 landmarks from the answer's 22-point layout (README "Keypoint layouts"): the face, hand
# and foot points the layout lacks take their nearest layout point.
BLAZEPOSE_FROM_LAYOUT22 = (19, 18, 18, 18, 21, 21, 21, 17, 20, 19, 19, 5, 2, 6, 3, 7, 4, 7, 4, 7, 4, 7, 4,
                           11, 8, 12, 9, 13, 10, 13, 10, 13, 10)


def frame_keypoints(answer: dict) -> list[list[float]]:
    """The answer's front keypoints as the 33 BlazePose points of a guide event, moved into the fake
    camera's letterboxed 540x960 frame."""
    import json

    from PIL import Image

    with Image.open(testdata_path("photos", "front", "fitlens_p1_front.jpg")) as photo:
        width, height = photo.size
    scale = min(540 / width, 960 / height)
    left, top = (540 - width * scale) / 2, (960 - height * scale) / 2
    layout = json.loads(answer["far_coords"])
    return [[left + layout[i][0] * scale, top + layout[i][1] * scale, 0.99] for i in BLAZEPOSE_FROM_LAYOUT22]


@pytest.mark.parametrize("viewport", [{"width": 1080, "height": 1920}, {"width": 1280, "height": 800}])
def test_kiosk_streams_the_camera_draws_guidance_and_shows_the_report(browser, site, coach, viewport):  # noqa: F811
    from io import BytesIO

    from PIL import Image

    answer = coach.request.get("/results/visit-0").json()
    script = ScriptedCapture(answer, frame_keypoints(answer))
    context = browser.new_context(base_url=site["url"], viewport=viewport)
    page = context.new_page()
    page.route_web_socket(re.compile(r".*/capture\?.*"), script)
    # Slow frames so that the live screen can be looked at before the scripted views are captured.
    # The daemon has a token: the kiosk gets it in the URL's fragment (never sent to a server or a log).
    page.goto(f"/kiosk?lang=ko&id={quote(MEMBER)}&height=172&autostart=1&reset=0&fps=4#token={TOKEN}")
    page.wait_for_function("window.kiosk && window.kiosk.state() && window.kiosk.state().lastFrameAnswered >= 1",
                           timeout=30_000)
    assert page.evaluate("document.getElementById('camera').videoWidth") == 540
    stage = page.locator("#stage").bounding_box()
    assert stage["x"] >= 0 and stage["y"] >= 0
    assert stage["x"] + stage["width"] <= viewport["width"] + 1
    assert stage["y"] + stage["height"] <= viewport["height"] + 1
    assert abs(stage["width"] / stage["height"] - 540 / 960) < 0.02
    assert stage["height"] > 0.45 * viewport["height"]
    guide = page.locator("#guide-main").bounding_box()
    assert guide["y"] + guide["height"] <= stage["y"] + 1  # the guidance sits above the camera
    assert float(page.evaluate("parseFloat(getComputedStyle(document.getElementById('guide-main')).fontSize)")) >= 24
    assert page.inner_text("#guide-main") in ("뒤로 물러서 주세요.", "움직이지 마세요.")
    # The overlay has the outline and the skeleton drawn on it.
    drawn = page.evaluate("""() => { const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
    assert drawn > 1000
    page.wait_for_function("document.body.dataset.phase === 'result'", timeout=60_000)
    # What reached the socket: the session's query and JPEG frames of the camera's size.
    assert f"id={quote(MEMBER, safe='')}" in script.url and "lang=ko" in script.url and "height=172" in script.url
    first = Image.open(BytesIO(script.frames[0]))
    assert first.format == "JPEG" and first.size == (540, 960)
    # The report of the answer, through its signed link, and the QR code to take it home.
    frame = page.frame_locator("#report-frame")
    frame.locator("tr[data-measure]").first.wait_for(timeout=30_000)
    assert frame.locator("tr[data-measure]").count() == len(MEASURES)
    assert frame.locator("html").get_attribute("lang") == "ko"
    assert "t=" in page.get_attribute("#report-frame", "src")
    assert page.locator("#qr svg").count() == 1
    assert page.evaluate("document.getElementById('camera').srcObject") is None  # camera released
    context.close()


def test_kiosk_reaches_a_report_through_the_live_capture_websocket(browser, site):  # noqa: F811
    """End to end: fake camera -> /kiosk -> the daemon's /capture WebSocket (real live path, auto-capture
    of front then side, the full analysis) -> the report, stored in the member's history."""
    context = browser.new_context(base_url=site["url"], viewport={"width": 1080, "height": 1920})
    page = context.new_page()
    page.goto(f"/kiosk?lang=en&id={quote(MEMBER)}&height=172&autostart=1&reset=0#token={TOKEN}")
    page.wait_for_function("document.body.dataset.phase === 'result' || document.body.dataset.phase === 'error'",
                           timeout=120_000)
    assert page.evaluate("document.body.dataset.phase") == "result", page.inner_text("#guide-detail")
    uuid = page.evaluate("document.body.dataset.reportUuid")
    frame = page.frame_locator("#report-frame")
    frame.locator("tr[data-measure]").first.wait_for(timeout=30_000)
    assert frame.locator("tr[data-measure]").count() == len(MEASURES)
    assert page.locator("#qr svg").count() == 1
    stored = site["client"].get(f"/results/{uuid}")
    assert stored.status_code == 200 and stored.json()["state"] == 0
    history = site["client"].get(f"/members/{quote(MEMBER)}/history", headers={"Accept": "application/json"})
    assert uuid in [visit["uuid"] for visit in history.json()["visits"]]
    context.close()
