"""Screenshots of the web app for a person to look at: the kiosk screen (portrait 1080x1920 and a tablet),
a report in English and Korean, its print layout as PDF, and a member's history.

    .venv/bin/python bench/screenshots.py /tmp/skeleton-screens

The pages show the test photos (../shared/testdata), so the folder must be outside the repository: the
script refuses one inside it. It runs a daemon in-process (real models, a store in a temporary folder),
analyses three visits of one member and drives Debian's Chromium (/usr/bin/chromium) with Playwright.
The kiosk is fed the test photos through Chromium's fake camera (a y4m video written to a temporary
folder) and shown live against the /capture WebSocket when the daemon has one.
"""

from __future__ import annotations

import argparse
import base64
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.config import load_config
from daemon.http import create_app
from daemon.service import Service, _make_uvicorn_server
from daemon.web.fakecam import write_y4m

PHOTOS = (REPO / ".." / "shared" / "testdata" / "photos").resolve()
CHROMIUM = "/usr/bin/chromium"
MEMBER = "screens@example.com"
VISITS = ("fitlens_p1", "fitlens_p2", "fitlens_p3")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(store_dir: Path) -> tuple[str, Service, object, threading.Thread]:
    port = _free_port()
    config = load_config(overrides={
        "http": {"host": "127.0.0.1", "port": port}, "store": {"path": str(store_dir / "results.sqlite3")},
    })
    service = Service(config)
    service.start()
    server = _make_uvicorn_server(create_app(service, config), config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", service, server, thread


def _analyse_visits(base: str) -> list[str]:
    uuids = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for index, pair in enumerate(VISITS):
            uuid = f"screens-{index}"
            body = {
                "id": MEMBER, "uuid": uuid, "height": 172,
                "forigimg": base64.b64encode((PHOTOS / "front" / f"{pair}_front.jpg").read_bytes()).decode(),
                "sorigimg": base64.b64encode((PHOTOS / "side" / f"{pair}_side.jpg").read_bytes()).decode(),
            }
            reply = client.post("/analyze/skeleton-v2", json=body)
            reply.raise_for_status()
            uuids.append(uuid)
    return uuids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the PNGs and the PDF (outside the repository)")
    parser.add_argument("--kiosk-seconds", type=float, default=40.0, help="how long the kiosk may take to a report")
    args = parser.parse_args()
    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        parser.error(f"{out} is inside the repository; the screenshots show test photos: choose a folder outside it")
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="skeleton-screens-") as tmp:
        tmp_dir = Path(tmp)
        base, service, server, thread = _serve(tmp_dir)
        try:
            uuids = _analyse_visits(base)
            video = write_y4m(tmp_dir / "camera.y4m", PHOTOS / "front" / "fitlens_p1_front.jpg",
                              PHOTOS / "side" / "fitlens_p1_side.jpg")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                    "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                    f"--use-file-for-fake-video-capture={video}",
                ])
                page = browser.new_page(viewport={"width": 1080, "height": 1920})
                for lang in ("en", "ko"):
                    page.goto(f"{base}/report/{uuids[-1]}?lang={lang}")
                    page.screenshot(path=str(out / f"report-{lang}.png"), full_page=True)
                page.pdf(path=str(out / "report-ko.pdf"), format="A4", print_background=True)
                page.emulate_media(media="print")
                page.screenshot(path=str(out / "report-print-media.png"), full_page=True)
                # "null" ends the emulation ("screen" would make page.pdf print the screen layout).
                page.emulate_media(media="null")
                page.goto(f"{base}/members/{MEMBER}/history?lang=en")
                page.screenshot(path=str(out / "history-en.png"), full_page=True)
                page.goto(f"{base}/members/{MEMBER}/history?lang=ko")
                page.screenshot(path=str(out / "history-ko.png"), full_page=True)
                phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
                phone.goto(f"{base}/report/{uuids[0]}?lang=ko")
                phone.screenshot(path=str(out / "report-phone-ko.png"), full_page=False)
                for name, size in (("kiosk-portrait", (1080, 1920)), ("kiosk-tablet", (1280, 800))):
                    kiosk = browser.new_page(viewport={"width": size[0], "height": size[1]})
                    kiosk.goto(f"{base}/kiosk?lang=ko&id={MEMBER}&height=172&autostart=1&reset=0")
                    _kiosk_shots(kiosk, out, name, args.kiosk_seconds)
                    kiosk.close()
                browser.close()
        finally:
            server.should_exit = True
            thread.join(10)
            service.stop(10)
    for path in sorted(out.iterdir()):
        print(path)
    return 0


def _kiosk_shots(page, out: Path, name: str, seconds: float) -> None:
    """The live screen once the first guide arrives, then the report when it comes (or the state reached)."""
    deadline = time.monotonic() + seconds
    live_taken = False
    while time.monotonic() < deadline:
        phase = page.evaluate("document.body.dataset.phase")
        tracked = page.evaluate("window.kiosk && window.kiosk.state() && (window.kiosk.state().keypoints || []).length")
        if not live_taken and phase == "live" and tracked:
            page.screenshot(path=str(out / f"{name}-live.png"))
            live_taken = True
        if phase in ("result", "error"):
            page.wait_for_timeout(1500)
            break
        page.wait_for_timeout(250)
    page.screenshot(path=str(out / f"{name}-{page.evaluate('document.body.dataset.phase')}.png"))


if __name__ == "__main__":
    raise SystemExit(main())
