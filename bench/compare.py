"""Issue 7's benchmark: the daemon beside MediaPipe 0.10.21, in one run on one machine.

    .venv/bin/python bench/compare.py [--runs N] [--quick] [--json out.json]

What it does, in order (every phase is timed out and its failure is reported, the others still run):
 1. Makes two photo pairs in a temporary folder (never in the repo) from ../shared/testdata/photos:
    a 12 MP pair (upscaled, JPEG q92) and a 1080x1920 kiosk pair (centre crop to 9:16, q92).
 2. Builds or checks the benchmark-only MediaPipe venv (bench/mediapipe_env.py) and starts
    bench/mediapipe_baseline.py in it (decode + `solutions.pose` heavy, static image mode, per photo).
 3. In this process, an Analyzer with the daemon's config: the bare model time (detector + landmark
    passes for both views, as `skeletond bench` computes it) and in-process stage timings.
 4. Starts `skeletond serve` on a free port (result store in the temporary folder, a fresh uuid per
    request so the store never answers from cache, a unique MQTT topic prefix and client id, a larger
    worker queue), then measures over HTTP and MQTT:
    - 12 MP pair end to end (complete answer, both annotated photos) interleaved pair by pair with
      MediaPipe on the same two files -> ratio (target <= 0.6);
    - 1080p pair end to end interleaved with the bare model time -> ratio (target <= 1.5);
    - p50/p95 latency and throughput at concurrency 1, 4, 16, over HTTP and over MQTT;
    - the server's resident memory (VmRSS from /proc) after load, its peak (VmHWM) and its growth over
      --memory-requests requests (targets: <= 700 MB, < 5% growth over 1000 requests).
 5. Stops the server with SIGTERM, prints one table and writes the same figures as JSON (--json).

Latency is measured at the client: from sending the request to having read the whole answer. These are
figures, not assertions: on a shared machine they are noisy, so compare within one run only.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid as uuidlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

TARGETS = {
    "ratio_12mp_vs_mediapipe": 0.6,
    "ratio_1080p_vs_bare_model": 1.5,
    "rss_mb": 700.0,
    "rss_growth_pct": 5.0,
}
DEFAULT_FRONT = REPO.parent / "shared" / "testdata" / "photos" / "front" / "fitlens_p1_front.jpg"
DEFAULT_SIDE = REPO.parent / "shared" / "testdata" / "photos" / "side" / "fitlens_p1_side.jpg"
UUID_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"  # base64 never contains '-': a unique marker
KIOSK_SIZE = (1080, 1920)  # width, height: a portrait kiosk screen / camera frame
JPEG_QUALITY = 92


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- pure helpers (tests/test_bench.py) -----------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty list")
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def summarize(values: list[float]) -> dict | None:
    """n, median, p95, mean, min and max of a list of milliseconds (None for an empty list)."""
    if not values:
        return None
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "mean_ms": round(statistics.fmean(values), 2),
        "min_ms": round(min(values), 2),
        "max_ms": round(max(values), 2),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def verdict(value: float | None, limit: float, *, strict: bool = False) -> str:
    """PASS / FAIL against an upper limit (strict: value < limit), or n/a when there is no value."""
    if value is None:
        return "n/a"
    ok = value < limit if strict else value <= limit
    return "PASS" if ok else "FAIL"


def growth_pct(start: float | None, end: float | None) -> float | None:
    if not start or end is None:
        return None
    return round((end - start) / start * 100.0, 2)


def slope_per_1000(samples: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of (request count, MB) samples, in MB per 1000 requests."""
    if len(samples) < 2:
        return None
    xs = [float(x) for x, _ in samples]
    ys = [float(y) for _, y in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return None
    return round(sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / denominator * 1000.0, 2)


def parse_proc_status(text: str) -> dict[str, float]:
    """VmRSS / VmHWM / VmSize ... from /proc/<pid>/status text, in MB."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if key.startswith("Vm") and len(words) == 2 and words[1] == "kB" and words[0].isdigit():
            values[key] = int(words[0]) / 1024.0
    return values


def read_memory_mb(pid: int) -> dict[str, float]:
    return parse_proc_status(Path(f"/proc/{pid}/status").read_text())


def cpu_model(cpuinfo_text: str) -> str:
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Processor", "cpu model", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


# cpuinfo flags that decide which kernels ONNX Runtime's MLAS picks at start (platform.cpp): for int8
# AMX > AVX512-VNNI > AVX-VNNI > AVX512BW > AVX2; for fp32 AVX512F > FMA3/AVX2.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


def onnxruntime_kernels(flags: set[str]) -> dict:
    """The MLAS kernel families these cpuinfo flags select, fp32 and int8 (u8s8), best first."""
    int8 = ("AMX (if the kernel grants tile use)" if "amx_int8" in flags and "amx_tile" in flags else None) or (
        "AVX512-VNNI" if {"avx512_vnni", "avx512bw"} <= flags else
        "AVX-VNNI" if "avx_vnni" in flags else
        "AVX512BW (vpmaddubsw, saturating)" if "avx512bw" in flags else
        "AVX2 (vpmaddubsw, saturating)" if "avx2" in flags else "SSE")
    fp32 = "AVX512F" if "avx512f" in flags else "AVX2/FMA3" if {"avx2", "fma"} <= flags else "SSE"
    if int8.startswith("AMX") and {"avx512_vnni", "avx512bw"} <= flags:
        int8 += ", else AVX512-VNNI"
    return {"fp32": fp32, "int8": int8}


def machine_info() -> dict:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    info = {
        "cpu_model": cpu_model(cpuinfo),
        "cpuinfo_processors": sum(1 for line in cpuinfo.splitlines() if line.startswith("processor")),
        "os_cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }
    flags = next((set(line.partition(":")[2].split()) for line in cpuinfo.splitlines()
                  if line.startswith("flags")), set())
    info["cpu_features"] = [flag for flag in CPU_FEATURES if flag in flags]
    info["onnxruntime_kernels"] = onnxruntime_kernels(flags)
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for module in ("onnxruntime", "cv2", "numpy", "orjson", "httpx", "paho.mqtt"):
        try:
            imported = __import__(module, fromlist=["__version__"])
            info[f"{module}_version"] = getattr(imported, "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - a version we cannot read is left out
            info[f"{module}_version"] = f"unreadable: {type(exc).__name__}"
    return info


def request_template(front: bytes, side: bytes, height_cm: float | None = 175.0) -> bytes:
    """The request JSON with UUID_PLACEHOLDER as its uuid; `with_uuid` fills it per request."""
    import orjson

    payload = {
        "id": "bench@localhost",
        "uuid": UUID_PLACEHOLDER,
        "forigimg": base64.b64encode(front).decode("ascii"),
        "sorigimg": base64.b64encode(side).decode("ascii"),
    }
    if height_cm is not None:
        payload["height"] = height_cm
    return orjson.dumps(payload)


def with_uuid(template: bytes, uuid: str) -> bytes:
    return template.replace(UUID_PLACEHOLDER.encode(), uuid.encode(), 1)


def check_answer(content: bytes, uuid: str) -> str | None:
    """None for a complete answer (state 0, our uuid, both annotated photos); else what is wrong."""
    import orjson

    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(answer, dict):
        return "not a JSON object"
    if answer.get("state") != 0:
        data = answer.get("data") if isinstance(answer.get("data"), dict) else {}
        return f"state {answer.get('state', data.get('state'))}: {data.get('errors') or data.get('message')} {data.get('detail', '')}"
    if answer.get("uuid") != uuid:
        return f"uuid {answer.get('uuid')!r}, expected {uuid!r}"
    for field in ("forigimg", "sorigimg"):
        if not isinstance(answer.get(field), str) or len(answer[field]) < 1000:
            return f"no annotated photo in {field}"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- photos ---------------------------------------------------------------------------------------


def scaled_to_megapixels(image, megapixels: float):
    import cv2

    height, width = image.shape[:2]
    factor = (megapixels * 1e6 / (width * height)) ** 0.5
    size = (round(width * factor), round(height * factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)


def kiosk_frame(image, width: int = KIOSK_SIZE[0], height: int = KIOSK_SIZE[1]):
    """Centre crop to width:height, then resize to exactly width x height."""
    import cv2

    rows, cols = image.shape[:2]
    target = width / height
    if cols / rows > target:  # too wide: crop the sides
        keep = round(rows * target)
        x0 = (cols - keep) // 2
        image = image[:, x0:x0 + keep]
    else:  # too tall: crop top and bottom
        keep = round(cols / target)
        y0 = (rows - keep) // 2
        image = image[y0:y0 + keep]
    interpolation = cv2.INTER_AREA if image.shape[1] > width else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interpolation)


def with_grain(image, sigma: float, seed: int = 7):
    """Add Gaussian sensor-like grain (sigma in 8-bit levels): an upscaled photo is unnaturally smooth and
    compresses to a quarter of a real 12 MP phone JPEG, which flatters any decoder."""
    import numpy as np

    if sigma <= 0:
        return image
    noise = np.random.default_rng(seed).standard_normal(image.shape, dtype=np.float32) * sigma
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def make_pairs(front_path: Path, side_path: Path, workdir: Path, megapixels: float,
               grain: float = 0.0, as_shot: bool = False) -> dict[str, dict]:
    """{"12mp": {...}, "1080p": {...}}: file paths, bytes and sizes of the two benchmark pairs.

    as_shot: the big pair is the two files exactly as given (real phone photos), not an upscale.
    """
    import cv2

    pairs: dict[str, dict] = {}
    sources = {}
    for view, path in (("front", front_path), ("side", side_path)):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # EXIF orientation applied
        if image is None:
            raise SystemExit(f"cannot read {path}")
        sources[view] = image
    makers = {"12mp": lambda im: with_grain(scaled_to_megapixels(im, megapixels), grain), "1080p": kiosk_frame}
    for name, make in makers.items():
        entry: dict = {"files": {}, "bytes": {}, "size": {}}
        for view, image in sources.items():
            out = make(image)
            data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
            target = workdir / f"{name}_{view}.jpg"
            target.write_bytes(data)
            entry["files"][view] = target
            entry["bytes"][view] = data
            entry["size"][view] = f"{out.shape[1]}x{out.shape[0]}, {len(data) / 1e6:.2f} MB"
        pairs[name] = entry
    if as_shot:
        entry = {"files": {}, "bytes": {}, "size": {}}
        for view, path in (("front", front_path), ("side", side_path)):
            data = Path(path).read_bytes()
            entry["files"][view], entry["bytes"][view] = Path(path), data
            rows, cols = sources[view].shape[:2]
            entry["size"][view] = f"{cols}x{rows}, {len(data) / 1e6:.2f} MB, as shot"
        pairs["12mp"] = entry
    return pairs


# -- the MediaPipe baseline process ---------------------------------------------------------------


class MediapipeProcess:
    """bench/mediapipe_baseline.py --serve in the MediaPipe venv: time N pairs on request."""

    def __init__(self, python: Path, pairs: dict[str, dict], workdir: Path, warmup: int = 2):
        args = [str(python), str(HERE / "mediapipe_baseline.py"), "--serve", "--warmup", str(warmup)]
        for name, entry in pairs.items():
            args += ["--pair", f"{name}:{entry['files']['front']}:{entry['files']['side']}"]
        self.stderr_path = workdir / "mediapipe.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - open while the process runs
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
            env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        self.info = self._read(timeout=300).get("ready")
        if self.info is None:
            raise RuntimeError("the MediaPipe baseline did not start")

    def _read(self, timeout: float) -> dict:
        result: dict = {}

        def reader():
            line = self.proc.stdout.readline()
            if line:
                result.update(json.loads(line))

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive() or not result:
            tail = self.stderr_path.read_text(errors="replace")[-1500:]
            self.close()
            raise RuntimeError(f"the MediaPipe baseline gave no answer within {timeout:.0f} s; its log:\n{tail}")
        if "error" in result:
            raise RuntimeError(f"the MediaPipe baseline failed: {result['error']}")
        return result

    def time_pairs(self, name: str, count: int = 1, timeout: float = 120) -> dict:
        self.proc.stdin.write(f"{name} {count}\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()


# -- the daemon under test ------------------------------------------------------------------------


class Server:
    """`skeletond serve` in a child process; stopped with SIGTERM."""

    def __init__(self, workdir: Path, *, mqtt_url: str | None, queue_size: int, config: Path | None,
                 precision: str | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        tag = uuidlib.uuid4().hex[:12]
        self.topic_prefix = f"skeleton-bench/{tag}"
        self.mqtt_url = mqtt_url
        self.daemon_id = f"bench-{tag}"
        env = dict(os.environ)
        env.update({
            "SKELETON_STORE_PATH": str(workdir / "results.sqlite3"),
            "SKELETON_WORKER_QUEUE_SIZE": str(queue_size),
            "SKELETON_MQTT_TOPIC_PREFIX": self.topic_prefix,
            "SKELETON_MQTT_CLIENT_ID": f"skeletond-bench-{tag}",
            "SKELETON_MQTT_DAEMON_ID": self.daemon_id,
            # Leave no persistent session behind at the broker once the benchmark is over.
            "SKELETON_MQTT_SESSION_EXPIRY_S": "60",
        })
        if precision:  # the second server of the precision comparison
            env["SKELETON_ENGINE_PRECISION"] = precision
            env["SKELETON_STORE_PATH"] = str(workdir / f"results-{precision}.sqlite3")
        skeletond = Path(sys.executable).parent / "skeletond"
        command = [str(skeletond)] if skeletond.exists() else [
            sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main())"]
        if config:
            command += ["--config", str(config)]
        command += ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if mqtt_url:
            command += ["--mqtt", mqtt_url]
        self.log_path = workdir / (f"skeletond-{precision}.log" if precision else "skeletond.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the server runs
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO))
        self.pid = self.proc.pid
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 300) -> dict:
        import httpx

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skeletond exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                reply = httpx.get(f"{self.base_url}/healthz", timeout=5)
                last = reply.json()
                mqtt_ok = not self.mqtt_url or last.get("transports", {}).get("mqtt") == "connected"
                if reply.status_code == 200 and mqtt_ok:
                    last["ready_after_s"] = round(time.monotonic() - self.started_at, 2)
                    return last
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"skeletond not ready after {timeout:.0f} s (last /healthz: {last}):\n{self.log_tail()}")

    def memory(self) -> dict[str, float]:
        return read_memory_mb(self.pid)

    def stop(self, timeout: float = 45) -> int | None:
        if self.proc.poll() is None:
            start = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"skeletond did not stop within {timeout:.0f} s of SIGTERM: killing it")
                self.proc.kill()
                self.exit_code = self.proc.wait(10)
            self.stop_seconds = round(time.monotonic() - start, 2)
        else:
            self.exit_code = self.proc.returncode
        self._log.close()
        return self.exit_code


# -- clients --------------------------------------------------------------------------------------


class HttpSender:
    """POST /analyze/skeleton-v2 with a fresh uuid; retries on 503 (queue full) and counts them."""

    def __init__(self, base_url: str, timeout: float):
        self.url = f"{base_url}/analyze/skeleton-v2"
        self.timeout = timeout
        self._local = threading.local()

    def _client(self):
        import httpx

        client = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(timeout=self.timeout, headers={"content-type": "application/json"})
            self._local.client = client
        return client

    def send(self, template: bytes) -> tuple[float, str | None, int]:
        """(latency ms, error or None, 503 retries)."""
        uuid = str(uuidlib.uuid4())
        body = with_uuid(template, uuid)
        client = self._client()
        retries = 0
        start = time.perf_counter()
        deadline = start + self.timeout
        while True:
            try:
                reply = client.post(self.url, content=body)
            except Exception as exc:  # noqa: BLE001 - a failed request is counted, not fatal
                return (time.perf_counter() - start) * 1000, f"{type(exc).__name__}: {exc}", retries
            if reply.status_code == 503 and time.perf_counter() < deadline:
                retries += 1
                time.sleep(0.02)
                continue
            break
        elapsed = (time.perf_counter() - start) * 1000
        if reply.status_code != 200:
            return elapsed, f"HTTP {reply.status_code}: {reply.content[:200]!r}", retries
        return elapsed, check_answer(reply.content, uuid), retries


class MqttSender:
    """Publishes requests on <prefix>/request and waits for <prefix>/result/<uuid> (paho-mqtt 2.x)."""

    def __init__(self, url: str, prefix: str, timeout: float):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from daemon.mqtt import broker_address

        host, port, tls, username, password = broker_address(url)
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self._waiting: dict[str, list] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"skeleton-bench-client-{uuidlib.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set()
        self.client.max_inflight_messages_set(64)
        self.client.on_connect = lambda c, u, f, rc, p: (self._connected.set(), c.subscribe(f"{self.prefix}/result/+", qos=1))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            self.close()
            raise RuntimeError(f"could not connect and subscribe to the broker at {url}")

    def _on_message(self, client, userdata, message) -> None:
        arrived = time.perf_counter()
        uuid = message.topic.rsplit("/", 1)[-1]
        with self._lock:
            slot = self._waiting.get(uuid)
        if slot is not None:
            slot[1] = arrived
            slot[2] = message.payload
            slot[0].set()

    def send(self, template: bytes) -> tuple[float, str | None, int]:
        uuid = str(uuidlib.uuid4())
        body = with_uuid(template, uuid)
        slot = [threading.Event(), None, None]
        with self._lock:
            self._waiting[uuid] = slot
        start = time.perf_counter()
        try:
            info = self.client.publish(f"{self.prefix}/request", body, qos=1)
            if info.rc != 0:
                return (time.perf_counter() - start) * 1000, f"publish failed: rc {info.rc}", 0
            if not slot[0].wait(self.timeout):
                return (time.perf_counter() - start) * 1000, f"no result within {self.timeout:.0f} s", 0
            return (slot[1] - start) * 1000, check_answer(slot[2], uuid), 0
        finally:
            with self._lock:
                self._waiting.pop(uuid, None)

    def clear_retained(self, topic: str) -> None:
        self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def run_concurrent(send, template: bytes, concurrency: int, total: int) -> dict:
    """`total` requests with `concurrency` in flight; latency summary, throughput, errors, 503 retries."""
    latencies: list[float] = []
    errors: list[str] = []
    retries = [0]
    lock = threading.Lock()
    next_index = [0]

    def worker():
        while True:
            with lock:
                if next_index[0] >= total:
                    return
                next_index[0] += 1
            elapsed, error, retried = send(template)
            with lock:
                retries[0] += retried
                if error:
                    errors.append(error)
                else:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    summary = summarize(latencies) or {}
    return {
        "concurrency": concurrency,
        "requests": total,
        "ok": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "retries_503": retries[0],
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 2) if wall > 0 else None,
        "p50_ms": summary.get("median_ms"),
        "p95_ms": summary.get("p95_ms"),
        "mean_ms": summary.get("mean_ms"),
    }


# -- in-process model figures ---------------------------------------------------------------------


def in_process_stages(analyzer, template: bytes, runs: int) -> dict:
    """analyzer.analyze() directly (no transport, no store): end to end and per-stage medians."""
    from daemon.bench import time_analyze

    totals, stages = time_analyze(analyzer, template, runs)
    return {
        "parse_and_analyze": summarize(totals),
        "stage_median_ms": {stage: round(statistics.median(v), 2) for stage, v in stages.items()},
    }


# -- the run --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="timed pairs per side-by-side figure (default 30; 8 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer runs and requests (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--memory-requests", type=int,
                        help="requests for the memory growth figure (default 1000; 100 with --quick)")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--concurrency-requests", type=int,
                        help="requests per concurrency level (default max(runs, 3 x level); 2 x with --quick)")
    parser.add_argument("--concurrency-pair", choices=("12mp", "1080p"), default="12mp",
                        help="the pair sent in the concurrency runs (default 12mp)")
    parser.add_argument("--memory-pair", choices=("12mp", "1080p", "mixed"), default="mixed",
                        help="the pair(s) sent in the memory run (default mixed: alternating)")
    parser.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", help="broker URL ('' or 'none': HTTP only)")
    parser.add_argument("--other-precision", default="auto",
                        help="engine.precision of a second server timed in the same loops: int8 when the config's "
                             "is fp16/fp32, fp32 when it is int8 (auto), or one of fp32, int8, none")
    parser.add_argument("--no-mediapipe", action="store_true", help="skip the MediaPipe baseline")
    parser.add_argument("--mediapipe-venv", type=Path, help="the MediaPipe venv (default ~/.cache/skeleton-v2/bench-mediapipe-venv)")
    parser.add_argument("--config", type=Path, help="a skeletond TOML config, for the server and the bare model")
    parser.add_argument("--queue-size", type=int, default=64, help="the server's worker queue (default 64)")
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--grain", type=float, default=0.0,
                        help="Gaussian grain (8-bit levels) added to the 12 MP pair for phone-like JPEG sizes "
                             "(default 0: plain upscale, ~0.7 MB files; 4 gives ~2.2 MB)")
    parser.add_argument("--as-shot", action="store_true",
                        help="use --front/--side unchanged as the big pair (real phone photos, e.g. "
                             "front/fiton_p1a_front.jpg + side/fiton_p1a_side.jpg at 13 MP)")
    parser.add_argument("--front", type=Path, default=DEFAULT_FRONT)
    parser.add_argument("--side", type=Path, default=DEFAULT_SIDE)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary folder (photos, logs)")
    return parser


def _phase(results: dict, name: str, function, *args, **kwargs):
    """Run one phase; an exception is logged and recorded under results['errors'][name]."""
    log(f"{name} ...")
    start = time.monotonic()
    try:
        value = function(*args, **kwargs)
        log(f"{name}: done in {time.monotonic() - start:.1f} s")
        return value
    except Exception as exc:  # noqa: BLE001 - one failed phase must not lose the others' figures
        log(f"{name} FAILED: {exc}")
        results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        if os.environ.get("SKELETON_BENCH_DEBUG"):
            traceback.print_exc()
        return None


def run(args: argparse.Namespace) -> dict:
    runs = args.runs or (8 if args.quick else 30)
    memory_requests = args.memory_requests if args.memory_requests is not None else (100 if args.quick else 1000)
    levels = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    mqtt_url = None if args.mqtt in ("", "none") else args.mqtt
    results: dict = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {
            "runs": runs, "quick": args.quick, "memory_requests": memory_requests, "concurrency": levels,
            "concurrency_pair": args.concurrency_pair, "memory_pair": args.memory_pair,
            "mqtt": mqtt_url, "queue_size": args.queue_size, "grain": args.grain, "as_shot": args.as_shot, "config": str(args.config) if args.config else None,
        },
        "targets": TARGETS,
    }
    workdir = Path(tempfile.mkdtemp(prefix="skeleton-bench-"))
    results["settings"]["workdir"] = str(workdir)
    mediapipe = server = analyzer = mqtt_sender = other = None
    try:
        pairs = make_pairs(args.front, args.side, workdir, args.megapixels, args.grain, args.as_shot)
        results["photos"] = {
            name: {"source": [str(args.front), str(args.side)], **entry["size"]} for name, entry in pairs.items()
        }
        templates = {name: request_template(e["bytes"]["front"], e["bytes"]["side"]) for name, e in pairs.items()}
        results["photos"]["request_body_mb"] = {name: round(len(t) / 1e6, 2) for name, t in templates.items()}

        # MediaPipe, in its own venv and its own process.
        if args.no_mediapipe:
            results["errors"] = {"mediapipe": "skipped (--no-mediapipe)"}
        else:
            def start_mediapipe():
                from mediapipe_env import ensure_mediapipe_venv

                python = ensure_mediapipe_venv(args.mediapipe_venv, log=log)
                return MediapipeProcess(python, pairs, workdir)

            mediapipe = _phase(results, "mediapipe", start_mediapipe)
            if mediapipe is not None:
                results["mediapipe"] = mediapipe.info

        # The daemon's Analyzer in this process: bare model time and the in-process stage split.
        def load_analyzer():
            from daemon.config import load_config
            from daemon.pipeline import Analyzer

            config = load_config(args.config)
            built = Analyzer(config)
            results["analyzer"] = {
                **built.describe(),
                "annotated_max_side": config.pipeline.annotated_max_side,
                "engine_threads": config.engine.threads,
            }
            return built

        analyzer = _phase(results, "analyzer", load_analyzer)
        bare = None
        if analyzer is not None:
            from daemon.bench import bare_model_ms

            # skeletond bench's own measure: the same model passes the pipeline runs, nothing around them.
            bare = _phase(results, "bare_model_setup", bare_model_ms, analyzer, 1)
            in_process = {}
            for name in ("12mp", "1080p"):
                figures = _phase(results, f"in_process_{name}", in_process_stages, analyzer, templates[name],
                                 max(3, runs // 2))
                if figures:
                    in_process[name] = figures
            results["in_process"] = in_process

        # The server.
        def start_server():
            started = Server(workdir, mqtt_url=mqtt_url, queue_size=args.queue_size, config=args.config)
            try:
                health = started.wait_ready()
            except Exception:
                started.stop(10)
                raise
            results["server"] = {"pid": started.pid, "port": started.port, "ready_after_s": health.get("ready_after_s"),
                                 "healthz": {k: v for k, v in health.items() if k != "ready_after_s"}}
            return started

        server = _phase(results, "server_start", start_server)
        if server is None:
            return results

        # The other precision's server, timed in the same loops (its figures beside the default's).
        other_precision = args.other_precision
        if other_precision == "auto":
            from daemon.config import load_config

            other_precision = "fp32" if load_config(args.config).engine.precision == "int8" else "int8"

        def start_other():
            started = Server(workdir, mqtt_url=None, queue_size=args.queue_size, config=args.config,
                             precision=other_precision)
            try:
                health = started.wait_ready()
            except Exception:
                started.stop(10)
                raise
            results["other_server"] = {"precision": other_precision, "healthz": health}
            return started

        if other_precision != "none":
            other = _phase(results, "other_server_start", start_other)
            other_http = HttpSender(other.base_url, args.timeout) if other is not None else None
        else:
            other = other_http = None
        memory: dict = {"after_start_mb": server.memory()}
        results["memory"] = memory
        http = HttpSender(server.base_url, args.timeout)

        def warm_up():
            for name in ("12mp", "1080p", "12mp", "1080p"):
                for sender in (http, other_http):
                    if sender is None:
                        continue
                    _, error, _ = sender.send(templates[name])
                    if error:
                        raise RuntimeError(f"warm-up request ({name}) failed: {error}")

        _phase(results, "http_warm_up", warm_up)

        # Side by side, pair by pair, so both sides see the same load on a shared machine.
        baseline = {"process": mediapipe}

        def mediapipe_pair(name: str) -> dict | None:
            """One MediaPipe pair; a baseline that breaks mid-run is dropped, our own figures go on."""
            if baseline["process"] is None:
                return None
            try:
                return baseline["process"].time_pairs(name, 1)
            except Exception as exc:  # noqa: BLE001
                log(f"MediaPipe baseline failed mid-run: {exc}")
                results.setdefault("errors", {})["mediapipe_run"] = f"{type(exc).__name__}: {exc}"
                baseline["process"].close()
                baseline["process"] = None
                return None

        def side_by_side_12mp():
            ours, theirs, mp_decode, mp_process, errors, others = [], [], [], [], [], []
            for _ in range(runs):
                timed = mediapipe_pair("12mp")
                if timed is not None:
                    theirs += timed["ms"]
                    mp_decode += timed["decode_ms"]
                    mp_process += timed["process_ms"]
                elapsed, error, _ = http.send(templates["12mp"])
                (errors.append(error) if error else ours.append(elapsed))
                if other_http is not None:
                    elapsed, error, _ = other_http.send(templates["12mp"])
                    (errors.append(f"{other_precision}: {error}") if error else others.append(elapsed))
            out = {"http_end_to_end": summarize(ours), "errors": len(errors), "first_errors": errors[:3]}
            out["other_precision"] = _other_figures(other_precision, others, theirs)
            if theirs:
                out["mediapipe"] = summarize(theirs)
                out["mediapipe_decode_median_ms"] = round(statistics.median(mp_decode), 2)
                out["mediapipe_process_median_ms"] = round(statistics.median(mp_process), 2)
                out["ratio"] = ratio(out["http_end_to_end"] and out["http_end_to_end"]["median_ms"],
                                     out["mediapipe"]["median_ms"])
            else:
                out["mediapipe"] = None
                out["ratio"] = None
            return out

        results["pair_12mp"] = _phase(results, "pair_12mp", side_by_side_12mp)

        def side_by_side_1080p():
            ours, model, theirs, errors, others = [], [], [], [], []
            for _ in range(runs):
                if bare is not None:
                    model.append(bare_model_ms(analyzer, 1))
                elapsed, error, _ = http.send(templates["1080p"])
                (errors.append(error) if error else ours.append(elapsed))
                if other_http is not None:
                    elapsed, error, _ = other_http.send(templates["1080p"])
                    (errors.append(f"{other_precision}: {error}") if error else others.append(elapsed))
                timed = mediapipe_pair("1080p")
                if timed is not None:
                    theirs += timed["ms"]
            out = {"http_end_to_end": summarize(ours), "bare_model": summarize(model),
                   "mediapipe": summarize(theirs), "errors": len(errors), "first_errors": errors[:3]}
            out["ratio"] = ratio(out["http_end_to_end"] and out["http_end_to_end"]["median_ms"],
                                 out["bare_model"] and out["bare_model"]["median_ms"])
            out["ratio_vs_mediapipe"] = ratio(out["http_end_to_end"] and out["http_end_to_end"]["median_ms"],
                                              out["mediapipe"] and out["mediapipe"]["median_ms"])
            out["other_precision"] = _other_figures(other_precision, others, theirs)
            return out

        results["pair_1080p"] = _phase(results, "pair_1080p", side_by_side_1080p)
        if baseline["process"] is not None:
            baseline["process"].close()
        mediapipe = None
        if other is not None:
            results["other_server"]["memory_mb"] = other.memory()
            results["other_server"]["exit_code"] = other.stop()
            other = other_http = None
        if analyzer is not None:
            analyzer.close()
            analyzer = None
        memory["after_load_mb"] = server.memory()

        # Concurrency, over HTTP and over MQTT.
        def per_level(level: int) -> int:
            if args.concurrency_requests:
                return args.concurrency_requests
            return max(runs, (2 if args.quick else 3) * level)

        concurrency: dict = {"pair": args.concurrency_pair, "http": [], "mqtt": []}
        results["concurrency"] = concurrency
        template = templates[args.concurrency_pair]
        for level in levels:
            row = _phase(results, f"http_c{level}", run_concurrent, http.send, template, level, per_level(level))
            if row:
                concurrency["http"].append(row)
        if mqtt_url:
            def connect_mqtt():
                sender = MqttSender(mqtt_url, server.topic_prefix, args.timeout)
                # The daemon subscribes right after it connects: retry the first request until it answers.
                for attempt in range(5):
                    sender.timeout = 15
                    _, error, _ = sender.send(templates["1080p"])
                    if error is None:
                        break
                    log(f"MQTT warm-up attempt {attempt + 1}: {error}")
                else:
                    sender.close()
                    raise RuntimeError(f"no MQTT answer: {error}")
                sender.timeout = args.timeout
                sender.send(template)
                return sender

            mqtt_sender = _phase(results, "mqtt_connect", connect_mqtt)
            if mqtt_sender is not None:
                for level in levels:
                    row = _phase(results, f"mqtt_c{level}", run_concurrent, mqtt_sender.send, template, level,
                                 per_level(level))
                    if row:
                        concurrency["mqtt"].append(row)
        else:
            results.setdefault("errors", {})["mqtt"] = "skipped (no broker URL)"

        # Memory over many requests (two in flight so the worker never waits for the client).
        def memory_run():
            names = {"12mp": ["12mp"], "1080p": ["1080p"], "mixed": ["12mp", "1080p"]}[args.memory_pair]
            start = server.memory()
            samples = [(0, start["VmRSS"])]
            every = max(1, memory_requests // 20)
            done = [0]
            errors: list[str] = []
            lock = threading.Lock()

            def send_next(_template):
                with lock:
                    index = done[0]
                    done[0] += 1
                elapsed, error, retried = http.send(templates[names[index % len(names)]])
                with lock:
                    if error:
                        errors.append(error)
                    if (index + 1) % every == 0:
                        samples.append((index + 1, server.memory()["VmRSS"]))
                return elapsed, error, retried

            row = run_concurrent(send_next, b"", 2, memory_requests)
            end = server.memory()
            samples.append((memory_requests, end["VmRSS"]))
            samples.sort()
            return {
                "requests": memory_requests, "pairs": names, "ok": row["ok"], "errors": row["errors"],
                "first_errors": row["first_errors"], "wall_s": row["wall_s"],
                "rss_start_mb": round(start["VmRSS"], 1), "rss_end_mb": round(end["VmRSS"], 1),
                "rss_max_sampled_mb": round(max(mb for _, mb in samples), 1),
                "growth_pct": growth_pct(start["VmRSS"], end["VmRSS"]),
                "slope_mb_per_1000": slope_per_1000(samples),
                "samples": [(count, round(mb, 1)) for count, mb in samples],
            }

        if memory_requests > 0:
            memory["run"] = _phase(results, "memory_run", memory_run)
        memory["final_mb"] = server.memory()
        return results
    finally:
        if mqtt_sender is not None:
            mqtt_sender.close()
        if mediapipe is not None:
            mediapipe.close()
        if analyzer is not None:
            analyzer.close()
        if other is not None:
            other.stop()
        if server is not None:
            code = server.stop()
            results.setdefault("server", {}).update({"exit_code": code, "sigterm_to_exit_s": server.stop_seconds})
            if code != 0:
                results.setdefault("errors", {})["server_exit"] = f"exit code {code}:\n{server.log_tail(1500)}"
            if mqtt_url:
                _clear_status_topic(mqtt_url, f"{server.topic_prefix}/status/{server.daemon_id}")
        if args.keep_temp:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _other_figures(precision: str, ours: list[float], theirs: list[float]) -> dict | None:
    """The second server's figures of one side-by-side loop, and its ratio to MediaPipe's."""
    if not ours:
        return None
    figures = summarize(ours)
    return {"precision": precision, "http_end_to_end": figures,
            "ratio_vs_mediapipe": ratio(figures["median_ms"], summarize(theirs)["median_ms"] if theirs else None)}


def _clear_status_topic(url: str, topic: str) -> None:
    """Remove the daemon's retained online/offline message (its topic prefix was used once)."""
    try:
        sender = MqttSender(url, topic.rsplit("/status/", 1)[0], 5)
        try:
            sender.clear_retained(topic)
        finally:
            sender.close()
    except Exception as exc:  # noqa: BLE001 - cosmetic: a leftover retained message harms nothing
        log(f"could not clear the retained {topic}: {exc}")


# -- the report -----------------------------------------------------------------------------------


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _get(mapping, *keys):
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def evaluate(results: dict) -> dict:
    """The four targets: value, limit, PASS/FAIL/n/a (also stored in results['verdicts'])."""
    memory = results.get("memory") or {}
    after_load = _get(memory, "after_load_mb", "VmRSS")
    peak = _get(memory, "final_mb", "VmHWM")
    growth = _get(memory, "run", "growth_pct")
    verdicts = {
        "ratio_12mp_vs_mediapipe": (_get(results, "pair_12mp", "ratio"), TARGETS["ratio_12mp_vs_mediapipe"], False),
        "ratio_1080p_vs_bare_model": (_get(results, "pair_1080p", "ratio"), TARGETS["ratio_1080p_vs_bare_model"], False),
        "rss_peak_mb": (round(peak, 1) if peak else None, TARGETS["rss_mb"], False),
        "rss_growth_pct": (growth, TARGETS["rss_growth_pct"], True),
    }
    out = {name: {"value": value, "limit": limit, "verdict": verdict(value, limit, strict=strict)}
           for name, (value, limit, strict) in verdicts.items()}
    out["rss_after_load_mb"] = {"value": round(after_load, 1) if after_load else None, "limit": TARGETS["rss_mb"],
                                "verdict": verdict(after_load, TARGETS["rss_mb"])}
    return out


def format_report(results: dict) -> str:
    lines: list[str] = []
    machine = results.get("machine", {})
    settings = results.get("settings", {})
    analyzer = results.get("analyzer", {})
    lines.append("=" * 100)
    lines.append(f"skeleton-v2 vs MediaPipe benchmark   {results.get('started_at', '')} .. {results.get('finished_at', '')}")
    lines.append(f"machine: {machine.get('cpu_model')}, {machine.get('cpuinfo_processors')} processors in /proc/cpuinfo, "
                 f"os.cpu_count {machine.get('os_cpu_count')}, affinity {machine.get('affinity_cpus')}, "
                 f"load at start {machine.get('loadavg_at_start')}")
    lines.append(f"         {machine.get('platform')}; python {machine.get('python')}, onnxruntime "
                 f"{machine.get('onnxruntime_version')}, opencv {machine.get('cv2_version')}, numpy {machine.get('numpy_version')}")
    lines.append(f"cpu features: {', '.join(machine.get('cpu_features', []))}; ONNX Runtime (MLAS) kernels they "
                 f"select: fp32 {_get(machine, 'onnxruntime_kernels', 'fp32')}, "
                 f"int8 {_get(machine, 'onnxruntime_kernels', 'int8')}")
    if analyzer:
        lines.append(f"daemon:  {analyzer.get('backend_description') or analyzer.get('backend')}; landmark "
                     f"{analyzer.get('landmark_model')}; precision {analyzer.get('precision')} "
                     f"({analyzer.get('model_files')} models); flip test "
                     f"{analyzer.get('flip_test')}; annotated max side "
                     f"{analyzer.get('annotated_max_side')}; engine threads {analyzer.get('engine_threads')}")
    mp = results.get("mediapipe")
    if mp:
        lines.append(f"baseline: mediapipe {mp.get('mediapipe')} (numpy {mp.get('numpy')}, opencv {mp.get('opencv')}), "
                     f"solutions.pose static_image_mode, model_complexity {mp.get('model_complexity')}, "
                     f"decode + BGR->RGB + process per photo, sequential")
    else:
        lines.append(f"baseline: MISSING ({_get(results, 'errors', 'mediapipe') or 'not run'})")
    photos = results.get("photos", {})
    for name in ("12mp", "1080p"):
        if name in photos:
            lines.append(f"photos {name:>5}: front {photos[name]['front']}; side {photos[name]['side']}; "
                         f"request {_get(photos, 'request_body_mb', name)} MB")
    lines.append(f"runs: {settings.get('runs')} per side-by-side figure (interleaved pair by pair)"
                 f"{'  [QUICK]' if settings.get('quick') else ''}; latency at the client, ms")
    lines.append("-" * 100)
    verdicts = results.get("verdicts") or evaluate(results)
    row = "{:<58} {:>9} {:>9} {:>10} {:>8}"
    lines.append(row.format("figure", "median", "p95", "target", "result"))
    p12 = results.get("pair_12mp") or {}
    lines.append(row.format("12 MP pair, daemon over HTTP, complete answer (ms)",
                            _fmt(_get(p12, "http_end_to_end", "median_ms")), _fmt(_get(p12, "http_end_to_end", "p95_ms")), "", ""))
    lines.append(row.format("12 MP pair, MediaPipe decode + landmarks (ms)",
                            _fmt(_get(p12, "mediapipe", "median_ms")), _fmt(_get(p12, "mediapipe", "p95_ms")), "", ""))
    if p12.get("mediapipe"):
        lines.append(row.format("   of which MediaPipe decode / process (ms)",
                                f"{_fmt(p12.get('mediapipe_decode_median_ms'))}/{_fmt(p12.get('mediapipe_process_median_ms'))}", "", "", ""))
    v = verdicts["ratio_12mp_vs_mediapipe"]
    lines.append(row.format("   ratio daemon / MediaPipe (medians)", _fmt(v["value"], 3), "", f"<= {v['limit']}", v["verdict"]))
    other12 = p12.get("other_precision") or {}
    if other12:
        lines.append(row.format(f"12 MP pair, engine.precision = {other12['precision']}, same loop (ms)",
                                _fmt(_get(other12, "http_end_to_end", "median_ms")),
                                _fmt(_get(other12, "http_end_to_end", "p95_ms")), "", ""))
        lines.append(row.format(f"   ratio {other12['precision']} daemon / MediaPipe (medians)",
                                _fmt(other12.get("ratio_vs_mediapipe"), 3), "", "", ""))
    p10 = results.get("pair_1080p") or {}
    lines.append(row.format("1080p pair, daemon over HTTP, complete answer (ms)",
                            _fmt(_get(p10, "http_end_to_end", "median_ms")), _fmt(_get(p10, "http_end_to_end", "p95_ms")), "", ""))
    lines.append(row.format("1080p bare model: detector + landmarks, both views (ms)",
                            _fmt(_get(p10, "bare_model", "median_ms")), _fmt(_get(p10, "bare_model", "p95_ms")), "", ""))
    v = verdicts["ratio_1080p_vs_bare_model"]
    lines.append(row.format("   ratio daemon / bare model (medians)", _fmt(v["value"], 3), "", f"<= {v['limit']}", v["verdict"]))
    other10 = p10.get("other_precision") or {}
    if other10:
        lines.append(row.format(f"1080p pair, engine.precision = {other10['precision']}, same loop (ms)",
                                _fmt(_get(other10, "http_end_to_end", "median_ms")),
                                _fmt(_get(other10, "http_end_to_end", "p95_ms")),
                                f"x{_fmt(other10.get('ratio_vs_mediapipe'), 3)}", ""))
    if p10.get("mediapipe"):
        lines.append(row.format("1080p pair, MediaPipe decode + landmarks (info, ms)",
                                _fmt(_get(p10, "mediapipe", "median_ms")), _fmt(_get(p10, "mediapipe", "p95_ms")),
                                f"x{_fmt(p10.get('ratio_vs_mediapipe'), 3)}", ""))
    memory = results.get("memory") or {}
    other_memory = _get(results, "other_server", "memory_mb") or {}
    if other_memory:
        lines.append(row.format(f"{_get(results, 'other_server', 'precision')} server RSS / peak after its loops (MB)",
                                f"{_fmt(other_memory.get('VmRSS'))}/{_fmt(other_memory.get('VmHWM'))}", "", "", ""))
    v = verdicts["rss_after_load_mb"]
    lines.append(row.format("server RSS after load (MB, VmRSS)", _fmt(v["value"]), "", f"<= {v['limit']:.0f}", v["verdict"]))
    v = verdicts["rss_peak_mb"]
    lines.append(row.format("server peak RSS over the whole run (MB, VmHWM)", _fmt(v["value"]), "", f"<= {v['limit']:.0f}", v["verdict"]))
    run_ = memory.get("run") or {}
    v = verdicts["rss_growth_pct"]
    lines.append(row.format(f"RSS growth over {run_.get('requests', '-')} requests ({'+'.join(run_.get('pairs', []))}), %",
                            _fmt(v["value"], 2), "", f"< {v['limit']}", v["verdict"]))
    if run_:
        lines.append(f"   RSS {run_.get('rss_start_mb')} -> {run_.get('rss_end_mb')} MB, max sampled "
                     f"{run_.get('rss_max_sampled_mb')} MB, slope {run_.get('slope_mb_per_1000')} MB/1000 requests, "
                     f"{run_.get('ok')} ok / {run_.get('errors')} errors in {run_.get('wall_s')} s")
    conc = results.get("concurrency") or {}
    if conc.get("http") or conc.get("mqtt"):
        lines.append("-" * 100)
        lines.append(f"concurrency ({conc.get('pair')} pair; one inference worker, queue {settings.get('queue_size')}):")
        crow = "{:<6} {:>4} {:>9} {:>9} {:>9} {:>12} {:>8} {:>7}"
        lines.append(crow.format("via", "c", "requests", "p50 ms", "p95 ms", "pairs/s", "503s", "errors"))
        for transport in ("http", "mqtt"):
            for item in conc.get(transport, []):
                lines.append(crow.format(transport, item["concurrency"], item["requests"], _fmt(item["p50_ms"]),
                                         _fmt(item["p95_ms"]), _fmt(item["throughput_rps"], 2), item["retries_503"],
                                         item["errors"]))
    in_process = results.get("in_process") or {}
    if in_process:
        lines.append("-" * 100)
        lines.append("in-process analyzer.analyze (no transport, no store), stage medians ms:")
        for name, figures in in_process.items():
            stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in figures.get("stage_median_ms", {}).items())
            lines.append(f"   {name:>5}: total {_fmt(_get(figures, 'parse_and_analyze', 'median_ms'))}; {stages}")
    server = results.get("server") or {}
    if server:
        lines.append(f"server: ready after {server.get('ready_after_s')} s; SIGTERM -> exit {server.get('exit_code')} "
                     f"in {server.get('sigterm_to_exit_s')} s")
    errors = results.get("errors") or {}
    if errors:
        lines.append("-" * 100)
        lines.append("problems:")
        for name, text in errors.items():
            lines.append(f"   {name}: {text}")
    for name in ("pair_12mp", "pair_1080p"):
        first = _get(results, name, "first_errors")
        if first:
            lines.append(f"   {name} request errors: {first}")
    for transport in ("http", "mqtt"):
        for item in conc.get(transport, []):
            if item.get("first_errors"):
                lines.append(f"   {transport} c={item['concurrency']} errors: {item['first_errors']}")
    lines.append("=" * 100)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.front.exists() or not args.side.exists():
        print(f"photos missing: {args.front} / {args.side} (pass --front and --side)", file=sys.stderr)
        return 2
    results = run(args)
    results["verdicts"] = evaluate(results)
    report = format_report(results)
    print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0 if "server_start" not in (results.get("errors") or {}) else 1


if __name__ == "__main__":
    sys.exit(main())
