"""HTTP over a real uvicorn on a free port: every bad input answers in the seed's error shape and the
server stays up; results by uuid; the token; 503 + Retry-After when the queue is full; /metrics.

The bad-input tests run the real Analyzer on real photos. A fake analyzer appears only beside them, where
a test needs a worker it can hold still (the full queue) or a config the real server does not have.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import pytest
from conftest import testdata_path
from PIL import Image
from proc_helpers import free_port

from daemon.config import load_config
from daemon.contract import load_schema
from daemon.errors import AnalysisError
from daemon.http import create_app
from daemon.imageio import decode_upright
from daemon.service import Service, _make_uvicorn_server

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def running_server(service: Service, config):
    """uvicorn serving create_app(service, config) on 127.0.0.1:<free port>, in a thread."""
    config.http.port = free_port()
    bind = load_config(overrides={"http": {"host": "127.0.0.1", "port": config.http.port}})
    server = _make_uvicorn_server(create_app(service, config), bind)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.http.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def photo(view: str, name: str) -> bytes:
    return testdata_path("photos", view, name).read_bytes()


def request_json(uuid: str, front: bytes | None = None, side: bytes | None = None, **extra) -> dict:
    payload = {
        "id": "someone@example.com",
        "uuid": uuid,
        "forigimg": b64(front if front is not None else photo("front", "fitlens_p1_front.jpg")),
        "sorigimg": b64(side if side is not None else photo("side", "fitlens_p1_side.jpg")),
    }
    payload.update(extra)
    return payload


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A few rows of zeros, compressed: the real image would be 30 GB once decoded.
    pixels = zlib.compress(b"\x00" * (width * 3 + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# -- the real server ------------------------------------------------------------------------------

BODY_LIMIT = 2_000_000  # the photos are ~150 kB together; a small limit keeps the oversize test cheap


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    config = load_config(
        overrides={
            "http": {"token": TOKEN, "max_body_bytes": BODY_LIMIT},
            "store": {"path": str(tmp_path_factory.mktemp("store") / "results.sqlite3")},
        }
    )
    service = Service(config)
    service.start()
    with running_server(service, config) as url, httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
        yield client
    service.stop(30)


def assert_seed_error(response: httpx.Response, status: int, key: str, text: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    jsonschema.validate(response.json(), load_schema("error"))  # the published error shape
    data = response.json()["data"]
    assert data["state"] == -1
    assert key in data, data
    if text is not None:
        assert data[key] == text, data
    assert data["detail"]
    return data


def test_valid_request_is_answered_stored_and_served_by_uuid(real):
    response = real.post("/analyze/skeleton-v2", json=request_json("http-ok-1", height=172))
    assert response.status_code == 200, response.text[:500]
    answer = response.json()
    assert answer["uuid"] == "http-ok-1" and answer["state"] == 0
    assert isinstance(answer["far_coords"], str) and answer["forigimg"]
    stored = real.get("/results/http-ok-1")
    assert stored.status_code == 200
    assert stored.content == response.content
    # A redelivery is answered from the store: the very same bytes.
    again = real.post("/analyze/skeleton-v2", json=request_json("http-ok-1", height=172))
    assert again.status_code == 200 and again.content == response.content
    # The same uuid with other photos is refused and says why.
    other = real.post(
        "/analyze/skeleton-v2",
        json=request_json("http-ok-1", photo("front", "fitlens_p2_front.jpg"), photo("side", "fitlens_p2_side.jpg")),
    )
    data = assert_seed_error(other, 409, "errors")
    assert "already answered for other photos" in data["detail"]


def test_not_json(real):
    response = real.post("/analyze/skeleton-v2", content=b"this is { not json", headers={"content-type": "text/plain"})
    assert_seed_error(response, 400, "errors", "invalid JSON")


@pytest.mark.parametrize("missing", ["id", "uuid", "forigimg", "sorigimg"])
def test_missing_field(real, missing):
    payload = request_json("http-missing")
    del payload[missing]
    data = assert_seed_error(real.post("/analyze/skeleton-v2", json=payload), 400, "errors", f"missing field: {missing}")
    assert missing in data["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("uuid", 12345), ("forigimg", ["not", "a", "string"]), ("height", "tall"), ("height", 900), ("uuid", "a/b")],
)
def test_mistyped_field(real, field, value):
    payload = request_json("http-mistyped")
    payload[field] = value
    assert_seed_error(real.post("/analyze/skeleton-v2", json=payload), 400, "errors", f"invalid field: {field}")


@pytest.mark.parametrize(
    ("front", "why"),
    [
        (lambda: photo("front", "fitlens_p1_front.jpg")[:40_000], "truncated JPEG"),
        (lambda: b"\xff\xd8\xff\xe0" + b"garbage" * 500, "broken JPEG"),
        (lambda: b"Hello, this is a text file and not a photo.\n" * 20, "text instead of an image"),
        (lambda: bomb_png(), "decompression bomb"),
    ],
    ids=["truncated", "broken", "text", "bomb"],
)
def test_bad_image_is_an_image_load_error(real, front, why):
    data = front()
    response = real.post("/analyze/skeleton-v2", json=request_json(f"http-bad-{why[:5]}", front=data))
    details = assert_seed_error(response, 400, "errors", "image load error")
    assert "front" in details["detail"]
    if why == "decompression bomb":
        # Refused from the header, before any pixel is decoded (no timing here: shared machines are noisy).
        assert "over the limit" in details["detail"]
    # Errors are not stored: the kiosk may retry the uuid.
    assert real.get(f"/results/http-bad-{why[:5]}").status_code == 404


def test_bomb_is_tiny_and_claims_ten_gigapixels():
    data = bomb_png()
    assert len(data) < 2000
    assert struct.unpack(">II", data[16:24]) == (100_000, 100_000)


def test_no_person_is_a_processing_error(real):
    blank = io.BytesIO()
    Image.new("RGB", (480, 640), (200, 200, 200)).save(blank, "JPEG")
    response = real.post("/analyze/skeleton-v2", json=request_json("http-noperson", side=blank.getvalue()))
    data = assert_seed_error(response, 400, "message", "processing error")
    assert "side" in data["detail"]


def test_body_over_the_limit_is_413(real):
    big = request_json("http-big", front=b"\xff" * BODY_LIMIT)
    response = real.post("/analyze/skeleton-v2", json=big)
    assert_seed_error(response, 413, "errors", "request too large")


def test_chunked_body_over_the_limit_is_413_without_reading_it_all(real):
    sent = 0

    def chunks():
        nonlocal sent
        block = b"x" * 65536
        for _ in range(BODY_LIMIT // 65536 * 4):  # four times the limit, without a Content-Length
            sent += len(block)
            yield block

    try:
        response = real.post("/analyze/skeleton-v2", content=chunks(), headers={"content-type": "application/json"})
    except httpx.HTTPError:
        pytest.skip("the server closed the connection before the client finished sending")
    assert_seed_error(response, 413, "errors", "request too large")


def test_token_is_required(real):
    payload = request_json("http-token")
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = real.post("/analyze/skeleton-v2", json=payload, headers=headers)
        assert_seed_error(response, 401, "errors", "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        assert real.get("/results/http-ok-1", headers=headers).status_code == 401
        assert real.get("/metrics", headers=headers).status_code == 401
    # Liveness stays open for the supervisor.
    assert real.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_unknown_result_is_404(real):
    assert_seed_error(real.get("/results/never-seen"), 404, "errors", "not found")


def test_server_stays_up_and_metrics_count_everything(real):
    # Runs after the bad inputs above (file order): the server still answers and analyses.
    health = real.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["analyzer"]["backend"]
    response = real.post("/analyze/skeleton-v2", json=request_json("http-after-errors"))
    assert response.status_code == 200, response.text[:300]
    metrics = real.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'skeleton_requests_total{transport="http"}' in text
    assert 'skeleton_errors_total{kind="image_load"}' in text
    assert 'skeleton_errors_total{kind="validation"}' in text
    assert 'skeleton_errors_total{kind="too_large"}' in text
    assert "skeleton_queue_depth" in text
    assert 'skeleton_stage_seconds_count{stage="analyze"}' in text
    assert 'skeleton_stage_seconds_count{stage="decode"}' in text


def as_format(jpeg: bytes, fmt: str) -> bytes:
    """A test photo re-saved as `fmt`; MPO as a phone writes it (the photo, then a gain-map-like image)."""
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    out = io.BytesIO()
    if fmt == "HEIF":
        pytest.importorskip("pillow_heif", reason="HEIC needs the 'heic' extra (pillow-heif)").register_heif_opener()
    if fmt == "MPO":
        gain_map = image.resize((image.width // 2, image.height // 2)).convert("L").convert("RGB")
        image.save(out, "MPO", save_all=True, append_images=[gain_map], quality=92)
    elif fmt in ("BMP", "TIFF"):
        # Uncompressed: a kiosk camera's smaller frame, to stay under this server's 2 MB body limit.
        image.resize((image.width * 640 // image.height, 640)).save(out, fmt)
    else:
        image.save(out, fmt, **({"quality": 90} if fmt in ("WEBP", "AVIF", "HEIF") else {}))
    return out.getvalue()


B64_FORMS = {
    "url-safe, no padding": lambda data: base64.urlsafe_b64encode(data).decode().rstrip("="),
    "data URL, MIME lines": lambda data: "data:image/jpeg;base64," + base64.encodebytes(data).decode(),
    "percent-encoded": lambda data: b64(data).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),
}


@pytest.mark.parametrize(
    ("front_format", "side_format", "form"),
    [("MPO", "TIFF", "url-safe, no padding"), ("HEIF", "BMP", "data URL, MIME lines"),
     ("AVIF", "PNG", "percent-encoded")],
)
def test_phone_formats_and_base64_forms_are_analysed(real, front_format, side_format, form):
    front = as_format(photo("front", "fitlens_p4_front.jpg"), front_format)
    side = as_format(photo("side", "fitlens_p4_side.jpg"), side_format)
    encode = B64_FORMS[form]
    payload = request_json(f"http-fmt-{front_format}", forigimg=encode(front), sorigimg=encode(side))
    response = real.post("/analyze/skeleton-v2", json=payload)
    assert response.status_code == 200, response.text[:500]
    answer = response.json()
    assert answer["state"] == 0 and len(json.loads(answer["far_coords"])) == 22


# -- beside the real tests: a worker that can be held still ---------------------------------------


class HeldAnalyzer:
    """Decodes the photos like the real one, then waits until the test releases it."""

    def __init__(self, config, release: threading.Event):
        self.config = config
        self.release = release
        self.started = threading.Semaphore(0)

    def analyze(self, request) -> dict:
        for data, view in ((request.front_image, "front"), (request.side_image, "side")):
            decode_upright(data, view, self.config.pipeline.max_pixels)
        self.started.release()
        if not self.release.wait(30):
            raise AnalysisError("processing", "the test never released the analyzer")
        return {"uuid": request.uuid, "state": 0, "command": "keypoint"}

    def describe(self) -> dict:
        return {"backend": "held-fake"}

    def close(self) -> None:
        pass


@pytest.fixture
def held(tmp_path):
    config = load_config(
        overrides={"worker": {"queue_size": 1}, "store": {"path": str(tmp_path / "held.sqlite3")}}
    )
    release = threading.Event()
    analyzers: list[HeldAnalyzer] = []

    def factory(cfg):
        analyzers.append(HeldAnalyzer(cfg, release))
        return analyzers[-1]

    service = Service(config, factory)
    service.start()
    with running_server(service, config) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, analyzers[0], release
    release.set()
    service.stop(10)


def fill_queue(pool: ThreadPoolExecutor, client: httpx.Client, analyzer, prefix: str):
    """Two requests sent through `pool`: the first held in the worker, the second waiting in the queue."""
    first = pool.submit(client.post, "/analyze/skeleton-v2", json=request_json(f"{prefix}-1"))
    assert analyzer.started.acquire(timeout=20), "the first request never reached the worker"
    second = pool.submit(client.post, "/analyze/skeleton-v2", json=request_json(f"{prefix}-2"))
    deadline = time.monotonic() + 10
    while client.get("/healthz").json()["queue_depth"] < 1:
        assert time.monotonic() < deadline, "the second request was never queued"
        time.sleep(0.02)
    return first, second


def test_full_queue_answers_503_with_retry_after(held):
    client, analyzer, release = held
    with ThreadPoolExecutor(2) as pool:
        first, second = fill_queue(pool, client, analyzer, "held")
        refused = client.post("/analyze/skeleton-v2", json=request_json("held-3"))
        assert_seed_error(refused, 503, "errors", "server busy")
        assert int(refused.headers["retry-after"]) > 0
        release.set()
        assert first.result(30).status_code == 200
        assert second.result(30).status_code == 200
    # Room again: the refused request goes through now.
    assert client.post("/analyze/skeleton-v2", json=request_json("held-3")).status_code == 200


def test_results_need_a_token_beyond_loopback(tmp_path):
    config = load_config(overrides={"http": {"host": "0.0.0.0"}, "store": {"path": str(tmp_path / "r.sqlite3")}})
    release = threading.Event()
    release.set()
    service = Service(config, lambda cfg: HeldAnalyzer(cfg, release))
    service.start()
    try:
        with running_server(service, config) as url, httpx.Client(base_url=url, timeout=60) as client:
            assert client.post("/analyze/skeleton-v2", json=request_json("lan-1")).status_code == 200
            assert_seed_error(client.get("/results/lan-1"), 403, "errors", "forbidden")
    finally:
        service.stop(10)


# -- memory under large uploads (issue 10) ---------------------------------------------------------


def open_upload(base_url: str, content_length: int, first: bytes) -> socket.socket:
    """A POST that declares `content_length` bytes and sends only `first` of them (the rest never comes)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    sock.sendall(
        f"POST /analyze/skeleton-v2 HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n\r\n".encode() + first
    )
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the answer on `sock` (socket.timeout when none comes)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {raw!r}"
        raw += chunk
    head, _, content = raw.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(content) < length:
        content += sock.recv(65536)
    return int(head[9:12]), {"headers": head.decode("latin-1").lower(), **json.loads(content)}


def test_full_queue_refuses_a_large_upload_before_reading_its_body(held):
    client, analyzer, release = held
    url = str(client.base_url).rstrip("/")
    with ThreadPoolExecutor(2) as pool:
        first, second = fill_queue(pool, client, analyzer, "big-held")
        # 50 MB declared, 1 kB sent: the answer must come without the server waiting for the rest.
        sock = open_upload(url, 50_000_000, b'{"id": "x", "uuid": "big-3", "forigimg": "' + b"A" * 1000)
        with sock:
            status, answer = read_answer(sock)
        assert status == 503, answer
        assert answer["data"]["errors"] == "server busy" and "queue is full" in answer["data"]["detail"]
        assert "retry-after:" in answer["headers"]
        release.set()
        assert first.result(30).status_code == 200
        assert second.result(30).status_code == 200


def body_bytes_in_flight(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("skeleton_http_body_bytes_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no skeleton_http_body_bytes_in_flight in /metrics")


@pytest.fixture
def small_budget(tmp_path):
    """A server whose bodies in flight may total 1 MB, each at most 600 kB."""
    config = load_config(
        overrides={
            "http": {"max_body_bytes": 600_000, "max_inflight_body_bytes": 1_000_000},
            "store": {"path": str(tmp_path / "budget.sqlite3")},
        }
    )
    release = threading.Event()
    release.set()
    service = Service(config, lambda cfg: HeldAnalyzer(cfg, release))
    service.start()
    with running_server(service, config) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield url, client
    service.stop(10)


def test_bodies_in_flight_are_bounded(small_budget):
    url, client = small_budget
    # A slow upload holds 600 kB of the 1 MB budget while it is being received.
    start = b'{"id": "x", "uuid": "slow-1", "forigimg": "'
    slow = open_upload(url, 600_000, start)
    try:
        deadline = time.monotonic() + 20
        while body_bytes_in_flight(client) < 600_000:  # the server is reading it
            assert time.monotonic() < deadline, "the slow upload never took its share of the budget"
            time.sleep(0.02)
        for kind in ("declared", "chunked"):
            if kind == "declared":
                other = open_upload(url, 500_000, b"{")
                with other:
                    status, answer = read_answer(other)
            else:
                def chunks():
                    for _ in range(8):
                        yield b" " * 65536

                response = client.post("/analyze/skeleton-v2", content=chunks())
                status, answer = response.status_code, {"headers": "retry-after:", **response.json()}
            assert status == 503, (kind, answer)
            assert "too many uploads" in answer["data"]["detail"] and "retry-after:" in answer["headers"]
        # Small requests still fit beside the slow one.
        assert client.post("/analyze/skeleton-v2", json={"id": "x"}).status_code == 400
        room = 600_000 - len(start) - 2
        slow.sendall(b"A" * (room - room % 4) + b'"' + b" " * (room % 4) + b"}")
        status, answer = read_answer(slow)
        assert status == 400 and answer["data"]["errors"] == "missing field: sorigimg", answer
    finally:
        slow.close()
    # The slow upload is answered: its share of the budget is free again.
    payload = request_json("budget-ok", front=photo("front", "fitlens_p2_front.jpg"))
    assert len(json.dumps(payload)) < 600_000
    assert client.post("/analyze/skeleton-v2", json=payload).status_code == 200
    assert body_bytes_in_flight(client) == 0
