"""Live capture over a real WebSocket through uvicorn, with the real models, on frames made at test time
from the shared photos (tests/capture_frames.py; nothing is written into the repository).

The client is the `websockets` package, a separate implementation from the server's, over TCP.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid as uuidlib
from urllib.parse import urlencode

import httpx
import jsonschema
import pytest
from capture_frames import compose, jpeg, load_photo
from conftest import testdata_path
from test_http import running_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from daemon.config import load_config
from daemon.service import Service

# Generous: the 2-core test machine is shared, and the final answer runs the heavy model with flip testing.
EVENT_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 180.0
# Frames the client keeps sending while it waits for a capture before the test gives up.
MAX_SETTLE_FRAMES = 150


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = load_config(overrides={
        "store": {"path": str(tmp_path_factory.mktemp("capture") / "results.sqlite3")},
        # A shorter hold keeps the test short; the default (1 s) is exercised by bench/capture.py.
        "capture": {"hold_s": 0.6, "max_sessions": 2, "idle_timeout_s": 30, "max_frame_bytes": 4_000_000},
    })
    service = Service(config)
    service.start()
    with running_server(service, config) as url:
        yield url, service
    service.stop(30)


@pytest.fixture(scope="module")
def photos():
    return {
        "front": load_photo("front", "fitlens_p1_front.jpg"),
        "side": load_photo("side", "fitlens_p1_side.jpg"),
    }


def ws_url(http_url: str, **params) -> str:
    return http_url.replace("http://", "ws://") + "/capture?" + urlencode(params)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


class Client:
    """A kiosk: sends frames, keeps every event it receives."""

    def __init__(self, ws):
        self.ws = ws
        self.events: list[dict] = []
        self.sent = 0

    async def next_event(self, timeout: float = EVENT_TIMEOUT_S) -> dict:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return event

    async def send_frame(self, data: bytes) -> int:
        await self.ws.send(data)
        self.sent += 1
        return self.sent - 1

    async def step(self, data: bytes) -> list[dict]:
        """Send one frame and read events until its guide arrives (lockstep: no frame is dropped).

        Returns the events received meanwhile (a capture, a result ...)."""
        index = await self.send_frame(data)
        received = []
        while True:
            event = await self.next_event()
            received.append(event)
            if event["event"] == "guide" and event["frame"] >= index:
                return received
            # After the last capture no guide follows; a bad frame gets an error instead of a guide.
            last_capture = event["event"] == "captured" and event["next"] is None
            if last_capture or event["event"] in ("analysing", "result") or (
                    event["event"] == "error" and event.get("frame") == index):
                return received

    def codes(self) -> set[str]:
        return {m["code"] for e in self.events if e["event"] == "guide" for m in e["messages"]}

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["event"] == kind]


async def settle_until_captured(client: Client, photo, view: str, seed0: int) -> dict:
    """Stand still on the mark (camera noise only) until the daemon captures `view`."""
    for index in range(MAX_SETTLE_FRAMES):
        received = await client.step(jpeg(compose(photo, 0.95, 0.0, seed=seed0 + index)))
        for event in received:
            if event["event"] == "captured" and event["view"] == view:
                return event
    raise AssertionError(f"{view} was not captured after {MAX_SETTLE_FRAMES} still frames; "
                         f"last guide: {client.of('guide')[-1] if client.of('guide') else None}")


def test_walk_in_settle_turn_capture_and_answer(server, photos):
    """The whole journey: guided in from far and off-centre, told to step back, held still, captured
    front and side, and the complete answer (valid against the schema, stored under the uuid)."""
    url, service = server
    uuid = new_uuid()
    schema = json.loads(testdata_path("..", "spec", "skeleton-v2.answer.schema.json").read_text())

    async def journey() -> tuple[Client, int, str]:
        async with connect(ws_url(url, uuid=uuid, id="member-1", height=178, lang="en"), max_size=None) as ws:
            client = Client(ws)
            opening = await client.next_event()
            assert opening["event"] == "session" and opening["view"] == "front" and opening["uuid"] == uuid
            # Walking in from far away, left of centre, towards the mark.
            for index in range(8):
                await client.step(jpeg(compose(photos["front"], 0.45 + 0.06 * index, -0.3 + 0.035 * index, seed=index)))
            # One step too far forward: head and feet out of the frame.
            for index in range(3):
                await client.step(jpeg(compose(photos["front"], 1.3, 0.0, seed=20 + index)))
            front = await settle_until_captured(client, photos["front"], "front", 100)
            assert front["source"] == "auto" and front["next"] == "side"
            # Turning to the side: the side photo on the same mark.
            side = await settle_until_captured(client, photos["side"], "side", 300)
            assert side["source"] == "auto" and side["next"] is None
            while not client.of("result") and not client.of("error"):
                await client.next_event(RESULT_TIMEOUT_S)
            with pytest.raises(ConnectionClosed):
                await client.next_event()
            return client, ws.close_code, ws.close_reason

    client, code, reason = asyncio.run(journey())
    codes = client.codes()
    assert {"come_closer", "move_left", "step_back", "hold_still"} <= codes, codes
    guides = client.of("guide")
    assert [e["frame"] for e in guides] == sorted(e["frame"] for e in guides)
    tracked = [e for e in guides if e["person"] is not None]
    assert tracked and all(len(e["person"]["keypoints"]) == 33 and len(e["person"]["box"]) == 4 for e in tracked)
    assert all(e["image_size"] == [1280, 720] for e in guides)
    # While ready the countdown runs down from the hold time.
    countdowns = [e["countdown"] for e in guides if e["ready"]]
    assert countdowns and min(countdowns) < 0.6 and max(countdowns) <= 0.6
    assert [e["view"] for e in client.of("captured")] == ["front", "side"]
    assert client.of("analysing")
    assert not client.of("error"), client.of("error")
    answer = client.of("result")[0]["answer"]
    jsonschema.validate(answer, schema)
    assert answer["uuid"] == uuid and answer["state"] == 0
    assert (code, reason) == (1000, "done")
    # Stored under the uuid, as an HTTP request's answer is.
    stored = httpx.get(f"{url}/results/{uuid}", timeout=30)
    assert stored.status_code == 200 and stored.json()["uuid"] == uuid
    assert service.capture.count() == 0


def test_feet_cut_off_never_captures_and_says_why(server, photos):
    url, _ = server

    async def run() -> Client:
        async with connect(ws_url(url, uuid=new_uuid(), id="member-2", lang="ko"), max_size=None) as ws:
            client = Client(ws)
            await client.next_event()
            # Standing still for 3 hold times, but the camera sees the body only down to the shins.
            started = time.monotonic()
            while time.monotonic() - started < 1.8 or client.sent < 10:
                await client.step(jpeg(compose(photos["front"], 0.95, 0.0, 0.3, seed=client.sent)))
            return client

    client = asyncio.run(run())
    guides = client.of("guide")
    assert not client.of("captured")
    assert guides and all(not e["ready"] for e in guides)
    assert all("feet_cut" in {m["code"] for m in e["messages"]} for e in guides)
    # Korean texts for a Korean kiosk.
    assert any("발" in m["text"] for e in guides for m in e["messages"])


def test_disconnect_mid_session_leaves_nothing_running(server, photos):
    url, service = server
    frames = [jpeg(compose(photos["front"], 0.95, 0.0, seed=i)) for i in range(6)]
    threads_before = {t.ident for t in threading.enumerate()}

    async def run() -> None:
        ws = await connect(ws_url(url, uuid=new_uuid(), id="member-3"), max_size=None)
        await ws.recv()
        for data in frames:
            await ws.send(data)
        await asyncio.sleep(0.05)
        assert service.capture.count() == 1
        ws.transport.abort()  # the kiosk vanishes: no close handshake

    asyncio.run(run())
    deadline = time.monotonic() + 20
    while (service.capture.count() or service.worker.live_pending()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.capture.count() == 0
    assert service.worker.live_pending() == 0
    time.sleep(0.5)  # a frame the worker had already started finishes; nothing is scheduled after it
    assert service.worker.live_pending() == 0
    leftover = [t.name for t in threading.enumerate() if t.ident not in threads_before]
    assert leftover == [], leftover
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert "skeleton_capture_sessions 0.0" in metrics
    assert httpx.get(f"{url}/healthz", timeout=30).json()["capture_sessions"] == 0


def test_session_limit_refuses_with_a_reason(server):
    url, service = server

    async def run() -> tuple[dict, int, str, dict]:
        first = await connect(ws_url(url, uuid=new_uuid(), id="a"))
        second = await connect(ws_url(url, uuid=new_uuid(), id="b"))
        await first.recv(), await second.recv()
        third = await connect(ws_url(url, uuid=new_uuid(), id="c"))
        refusal = json.loads(await third.recv())
        with pytest.raises(ConnectionClosed):
            await third.recv()
        await first.close()
        # The freed slot is taken again at once.
        deadline = time.monotonic() + 10
        while service.capture.count() > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        fourth = await connect(ws_url(url, uuid=new_uuid(), id="d"))
        opening = json.loads(await fourth.recv())
        await second.close()
        await fourth.close()
        return refusal, third.close_code, third.close_reason, opening

    refusal, code, reason, opening = asyncio.run(run())
    assert refusal["event"] == "error" and refusal["fatal"] is True
    assert refusal["error"]["data"] == {
        "state": -1, "errors": "server busy", "kind": "overload", "detail": refusal["error"]["data"]["detail"],
    }
    assert code == 1013
    assert "too many capture sessions" in reason and "capture.max_sessions = 2" in reason
    assert opening["event"] == "session"


@pytest.mark.parametrize(("params", "text"), [
    ({"id": "x"}, "missing field: uuid"),
    ({"uuid": "a/b", "id": "x"}, "invalid field: uuid"),
    ({"uuid": "u-1", "id": "x", "height": "999"}, "invalid field: height"),
    ({"uuid": "u-1", "id": "x", "lang": "fr"}, "invalid field: lang"),
    ({"uuid": "u-1", "id": "x", "kiosk": "nowhere"}, "invalid field: kiosk"),
])
def test_bad_session_parameters_are_refused_in_the_seed_shape(server, params, text):
    url, _ = server

    async def run() -> tuple[dict, int, str]:
        async with connect(ws_url(url, **params)) as ws:
            event = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return event, ws.close_code, ws.close_reason

    event, code, reason = asyncio.run(run())
    assert event["event"] == "error" and event["error"]["data"]["state"] == -1
    assert event["error"]["data"]["errors"] == text
    assert code == 1008 and text in reason


def test_newest_frame_wins_and_drops_are_counted(server, photos):
    """Frames sent faster than they are processed: the daemon skips to the newest, never queues."""
    url, _ = server
    frames = [jpeg(compose(photos["front"], 0.9, 0.02 * (i % 5), seed=i)) for i in range(40)]

    async def run() -> Client:
        async with connect(ws_url(url, uuid=new_uuid(), id="member-4"), max_size=None) as ws:
            client = Client(ws)
            await client.next_event()
            for data in frames:
                await client.send_frame(data)
            # The last frame is always processed (nothing newer replaces it).
            while not any(e["event"] == "guide" and e["frame"] == len(frames) - 1 for e in client.events):
                await client.next_event()
            return client

    client = asyncio.run(run())
    guides = client.of("guide")
    processed = [e["frame"] for e in guides]
    assert processed == sorted(processed) and len(processed) < len(frames)
    assert guides[-1]["dropped"] == len(frames) - len(processed)
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    dropped = [line for line in metrics.splitlines() if line.startswith('skeleton_capture_frames_total{outcome="dropped"}')]
    assert dropped and float(dropped[0].split()[-1]) >= guides[-1]["dropped"]


def test_commands_bad_frames_and_the_still_camera(server, photos):
    """capture / restart / unknown commands, an undecodable frame (the session goes on), and a
    still-camera kiosk answering take_still with its own full-resolution still."""
    url, _ = server
    still = testdata_path("photos", "front", "fitlens_p1_front.jpg").read_bytes()

    async def run() -> tuple[Client, Client, int]:
        async with connect(ws_url(url, uuid=new_uuid(), id="member-5"), max_size=None) as ws:
            client = Client(ws)
            await client.next_event()
            await client.step(b"not an image")
            await client.step(jpeg(compose(photos["front"], 0.5, -0.3, seed=1)))
            await ws.send(json.dumps({"command": "capture"}))
            captured = await client.next_event()
            assert captured["event"] == "captured" and captured["source"] == "command" and captured["frame"] == 1
            await ws.send(json.dumps({"command": "restart"}))
            restarted = await client.next_event()
            assert restarted == {"event": "restarted", "view": "front"}
            await ws.send(json.dumps({"command": "dance"}))
            unknown = await client.next_event()
            assert unknown["event"] == "error" and unknown["fatal"] is False
            guide = (await client.step(jpeg(compose(photos["front"], 0.95, 0.0, seed=2))))[-1]
            assert guide["view"] == "front"  # restarted: the front view is wanted again

        async with connect(ws_url(url, uuid=new_uuid(), id="member-6", still=1), max_size=None) as ws:
            kiosk = Client(ws)
            opening = await kiosk.next_event()
            assert opening["still"] is True
            take = None
            for index in range(MAX_SETTLE_FRAMES):
                for event in await kiosk.step(jpeg(compose(photos["front"], 0.95, 0.0, seed=400 + index))):
                    take = take or (event if event["event"] == "take_still" else None)
                if take or kiosk.of("take_still"):
                    take = take or kiosk.of("take_still")[0]
                    break
            assert take is not None and take["view"] == "front"
            assert not kiosk.of("captured")  # a still kiosk's preview frames never become the photo
            await ws.send(json.dumps({"command": "still", "view": "front"}))
            still_index = await kiosk.send_frame(still)
            while not kiosk.of("captured"):
                await kiosk.next_event()
        return client, kiosk, still_index

    client, kiosk, still_index = asyncio.run(run())
    bad = [e for e in client.of("error") if e.get("frame") == 0]
    assert bad and bad[0]["fatal"] is False and bad[0]["error"]["data"]["errors"] == "image load error"
    captured = kiosk.of("captured")[0]
    assert captured["source"] == "still" and captured["view"] == "front" and captured["next"] == "side"
    assert captured["frame"] == still_index


def test_worker_runs_queued_analyses_before_live_frames():
    """Priority in the worker itself (a recording analyzer stands in for the models, beside the real
    journey above): analyses queued while a live frame runs go first; a session's newer live task
    replaces its older one."""
    from daemon.worker import Worker

    order: list[str] = []

    class Recorder:
        def analyze(self, request):
            order.append(f"analysis {request}")
            return {}

        def describe(self):
            return {}

        def close(self):
            pass

    worker = Worker(Recorder, queue_size=4)
    worker.start(10)
    running, release = threading.Event(), threading.Event()

    def blocker(analyzer):
        running.set()
        release.wait(10)
        order.append("live blocker")

    worker.schedule_live("a", blocker)
    assert running.wait(10)
    worker.schedule_live("b", lambda analyzer: order.append("live b old"))
    first, second = worker.submit("r1"), worker.submit("r2")
    worker.schedule_live("b", lambda analyzer: order.append("live b new"))
    assert worker.live_pending() == 1
    release.set()
    first.result(10), second.result(10)
    deadline = time.monotonic() + 10
    while len(order) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == ["live blocker", "analysis r1", "analysis r2", "live b new"]
    worker.cancel_live("b")
    assert worker.stop(5)


def test_capture_settings_are_validated():
    from daemon.config import ConfigError

    for bad in ({"landmark": "heavy"}, {"hold_s": -1}, {"detect_every": 0}, {"max_offset_fraction": 0.7}):
        with pytest.raises(ConfigError, match="capture."):
            load_config(overrides={"capture": bad})


def test_a_frame_over_the_limit_closes_the_session_with_the_reason(server):
    url, service = server

    async def run() -> tuple[int, str]:
        async with connect(ws_url(url, uuid=new_uuid(), id="member-7"), max_size=None) as ws:
            await ws.recv()
            await ws.send(b"\xff" * 4_000_001)
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(run())
    assert code == 1009 and reason == "frame too large: 4000001 bytes, the limit is 4000000"
    deadline = time.monotonic() + 10
    while service.capture.count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.capture.count() == 0


def test_pages_from_other_origins_are_refused(server):
    """A page anywhere on the web must not stream to the kiosk's daemon through the kiosk's browser."""
    url, _ = server
    host = url.removeprefix("http://")

    async def run(origin: str) -> tuple[dict, int | None, str | None]:
        async with connect(ws_url(url, uuid=new_uuid(), id="member-8"), origin=origin) as ws:
            event = json.loads(await ws.recv())
            if event["event"] == "error":
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            return event, ws.close_code, ws.close_reason

    event, code, reason = asyncio.run(run("https://evil.example"))
    assert event["error"]["data"]["errors"] == "forbidden origin" and (code, reason) == (1008, "forbidden origin")
    event, _, _ = asyncio.run(run(f"http://{host}"))
    assert event["event"] == "session"
