"""Issue 11's benchmark: live capture over a real WebSocket against `skeletond serve`.

    .venv/bin/python bench/capture.py [--short] [--seconds 20] [--memory-frames 10000] [--json out.json]

What it does (frames are made in memory from ../shared/testdata/photos, never written anywhere):
 1. Starts `skeletond serve` on a free port (default config, result store in a temporary folder).
 2. Makes 60 distinct 1280x720 JPEG frames (q85): the front photo swaying left and right and a little
    nearer and farther over two seconds, with camera noise, so that every frame is a real tracking
    step and the person never holds still long enough to be captured (the session keeps streaming).
 3. One session at 30 fps for --seconds: guide events a second and frame-to-guide latency (client side:
    from sending a frame to receiving its guide event) p50 / p95. Targets: >= 25 /s, p95 <= 60 ms.
 4. One session at 60 fps: latency p50 / p95 / max in the first and second half (bounded: no backlog
    builds up) and the frames dropped for newer ones, as the guide events count them.
 5. POST /analyze/skeleton-v2 with the test pair, --post-runs pairs: one with the session paused, one
    while it streams at 30 fps, alternately: median latency of each and their ratio (target <= 1.3).
 6. One session of --memory-frames frames at 30 fps: the server's resident memory (VmRSS) after the
    first 500 frames and every 1000 frames after; growth and slope (target < 5% growth).
Figures, not assertions: on a shared machine they are noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from compare import (
    DEFAULT_FRONT,
    DEFAULT_SIDE,
    Server,
    check_answer,
    growth_pct,
    log,
    machine_info,
    percentile,
    ratio,
    request_template,
    slope_per_1000,
    summarize,
    verdict,
    with_uuid,
)

TARGETS = {"guides_per_s": 25.0, "p95_ms": 60.0, "rss_growth_pct": 5.0, "post_ratio": 1.3}
FRAME_COUNT = 60
SWAY_PERIOD_FRAMES = 60


def make_frames(photo_path: Path, count: int = FRAME_COUNT) -> list[bytes]:
    """1280x720 JPEGs of the person swaying (see the module docstring)."""
    import cv2
    from frames import compose, jpeg

    photo = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)
    if photo is None:
        raise SystemExit(f"cannot read {photo_path} (the benchmark reads the shared test photos)")
    frames = []
    for index in range(count):
        phase = 2 * math.pi * index / SWAY_PERIOD_FRAMES
        frames.append(jpeg(compose(photo, 0.9 + 0.05 * math.sin(2 * phase), 0.12 * math.sin(phase), seed=index)))
    return frames


@dataclass
class StreamResult:
    fps: float
    sent: int = 0
    seconds: float = 0.0
    guides: int = 0
    latencies_ms: list[tuple[int, float]] = field(default_factory=list)  # (frame, ms)
    server_latencies_ms: list[float] = field(default_factory=list)  # the daemon's own (latency_ms)
    # How late the client woke for each frame's send time: a starved client (a busy machine) shows here,
    # and its lateness is in the client-side latency too.
    pacing_late_ms: list[float] = field(default_factory=list)
    dropped: int = 0
    errors: list[str] = field(default_factory=list)
    captured: int = 0

    def summary(self) -> dict:
        values = [ms for _, ms in self.latencies_ms]
        half = self.sent // 2
        first = [ms for frame, ms in self.latencies_ms if frame < half]
        second = [ms for frame, ms in self.latencies_ms if frame >= half]
        return {
            "fps_sent": self.fps, "frames_sent": self.sent, "seconds": round(self.seconds, 2),
            "guide_events": self.guides, "guides_per_s": round(self.guides / self.seconds, 2) if self.seconds else None,
            "latency": summarize(values), "server_latency": summarize(self.server_latencies_ms),
            "client_pacing_late": summarize(self.pacing_late_ms),
            "latency_first_half": summarize(first),
            "latency_second_half": summarize(second),
            "dropped": self.dropped, "dropped_pct": round(100.0 * self.dropped / self.sent, 1) if self.sent else None,
            "captured": self.captured, "errors": self.errors[:5],
        }


async def stream(url: str, frames: list[bytes], fps: float, *, seconds: float | None = None,
                 count: int | None = None, progress=None, gate: asyncio.Event | None = None) -> StreamResult:
    """One session: send frames at `fps` (for `seconds` or `count` frames), timing each guide event.

    gate: frames are sent only while it is set (the session stays open, idle, while it is clear)."""
    from websockets.asyncio.client import connect

    result = StreamResult(fps=fps)
    sent_at: dict[int, float] = {}
    async with connect(url, max_size=None, max_queue=None) as ws:
        opening = json.loads(await ws.recv())
        if opening.get("event") != "session":
            raise RuntimeError(f"session refused: {opening}")

        async def receive() -> None:
            async for message in ws:
                now = time.perf_counter()
                event = json.loads(message)
                kind = event.get("event")
                if kind == "guide":
                    sent = sent_at.get(event["frame"])
                    if sent is not None and started <= sent:
                        result.guides += 1
                        result.latencies_ms.append((event["frame"], (now - sent) * 1000.0))
                        result.server_latencies_ms.append(float(event["latency_ms"]))
                    result.dropped = event["dropped"]
                elif kind == "captured":
                    result.captured += 1
                elif kind == "error":
                    result.errors.append(str(event.get("error", {}).get("data", {}).get("detail")))

        started = time.perf_counter()
        receiver = asyncio.ensure_future(receive())
        index = 0
        base, base_index = started, 0
        while True:
            elapsed = time.perf_counter() - started
            if (count is not None and index >= count) or (seconds is not None and elapsed >= seconds):
                break
            if gate is not None and not gate.is_set():
                await gate.wait()
                base, base_index = time.perf_counter(), index
            due = base + (index - base_index) / fps
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            result.pacing_late_ms.append((time.perf_counter() - due) * 1000.0)
            sent_at[index] = time.perf_counter()
            await ws.send(frames[index % len(frames)])
            index += 1
            if progress is not None and index % 1000 == 0:
                progress(index)
        result.sent = index
        result.seconds = time.perf_counter() - started
        await asyncio.sleep(1.0)  # the last guides in flight
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
    return result


def post_latencies(base_url: str, template: bytes, runs: int) -> tuple[list[float], list[str]]:
    import httpx

    latencies, problems = [], []
    with httpx.Client(timeout=120, headers={"content-type": "application/json"}) as client:
        for _ in range(runs):
            uuid = str(uuidlib.uuid4())
            started = time.perf_counter()
            reply = client.post(f"{base_url}/analyze/skeleton-v2", content=with_uuid(template, uuid))
            latencies.append((time.perf_counter() - started) * 1000.0)
            problem = check_answer(reply.content, uuid)
            if problem:
                problems.append(problem)
    return latencies, problems


async def post_interleaved(ws_url: str, base_url: str, frames: list[bytes], template: bytes,
                           runs: int) -> tuple[list[float], list[float], list[str]]:
    """POSTs alternately with the session paused and streaming at 30 fps (A/B pairs: the load of a
    shared machine drifts alike for both). The POSTs run in a thread; the stream in this loop."""
    gate = asyncio.Event()
    gate.set()
    streamer = asyncio.ensure_future(stream(ws_url, frames, 30.0, seconds=3600.0, gate=gate))
    await asyncio.sleep(2.0)  # the stream is in its stride before the first POST
    alone: list[float] = []
    during: list[float] = []
    problems: list[str] = []
    try:
        for _ in range(runs):
            gate.clear()
            await asyncio.sleep(0.5)  # the last frame's guide is out: the worker is idle
            latencies, trouble = await asyncio.to_thread(post_latencies, base_url, template, 1)
            alone += latencies
            problems += trouble
            gate.set()
            await asyncio.sleep(0.5)
            latencies, trouble = await asyncio.to_thread(post_latencies, base_url, template, 1)
            during += latencies
            problems += trouble
    finally:
        streamer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streamer
    return alone, during, problems


def session_url(base_url: str) -> str:
    query = urlencode({"uuid": str(uuidlib.uuid4()), "id": "bench@localhost", "lang": "en"})
    return base_url.replace("http://", "ws://") + "/capture?" + query


def run(args: argparse.Namespace) -> dict:
    results: dict = {"machine": machine_info(), "targets": TARGETS, "args": vars(args) | {"json": str(args.json)}}
    frames = make_frames(args.front)
    results["frame_bytes_mean"] = int(statistics.fmean(len(f) for f in frames))
    template = request_template(args.front.read_bytes(), args.side.read_bytes())
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        server = Server(Path(tmp), mqtt_url=None, queue_size=16, config=args.config)
        try:
            results["server"] = {"ready": server.wait_ready()}
            log("warm-up: a session of 90 frames at 30 fps, one POST")
            asyncio.run(stream(session_url(server.base_url), frames, 30.0, count=90))
            post_latencies(server.base_url, template, 1)

            log(f"30 fps for {args.seconds:g} s")
            results["fps30"] = asyncio.run(stream(session_url(server.base_url), frames, 30.0, seconds=args.seconds)).summary()
            log(f"  {json.dumps(results['fps30'])}")
            log(f"60 fps for {args.seconds:g} s")
            results["fps60"] = asyncio.run(stream(session_url(server.base_url), frames, 60.0, seconds=args.seconds)).summary()
            log(f"  {json.dumps(results['fps60'])}")

            log(f"POST /analyze/skeleton-v2 x{args.post_runs}, each alone and while a session streams at 30 fps")
            alone, during, problems = asyncio.run(
                post_interleaved(session_url(server.base_url), server.base_url, frames, template, args.post_runs))
            results["post"] = {
                "alone": summarize(alone), "while_streaming": summarize(during),
                "ratio_median": ratio(statistics.median(during), statistics.median(alone)),
                "ratio_p95": ratio(percentile(during, 95), percentile(alone, 95)),
                "problems": problems[:5],
            }
            log(f"  {json.dumps(results['post'])}")

            log(f"memory over {args.memory_frames} frames at 30 fps")
            samples: list[tuple[int, float]] = []

            def sample(frames_sent: int) -> None:
                samples.append((frames_sent, server.memory().get("VmRSS", 0.0)))

            memory_stream = asyncio.run(stream(
                session_url(server.base_url), frames, 30.0, count=args.memory_frames,
                progress=sample,
            ))
            sample(memory_stream.sent)
            start_rss = samples[0][1] if samples else None
            results["memory"] = {
                "frames": memory_stream.sent, "rss_mb_samples": [(n, round(mb, 1)) for n, mb in samples],
                "rss_start_mb": round(start_rss, 1) if start_rss else None,
                "rss_end_mb": round(samples[-1][1], 1) if samples else None,
                "growth_pct": growth_pct(start_rss, samples[-1][1] if samples else None),
                "slope_mb_per_1000_frames": slope_per_1000(samples),
                "peak_mb": round(server.memory().get("VmHWM", 0.0), 1),
                "stream": memory_stream.summary(),
            }
            log(f"  {json.dumps({k: v for k, v in results['memory'].items() if k != 'stream'})}")
        finally:
            results["server"]["exit_code"] = server.stop()
            results["server"]["log_tail"] = server.log_tail(800)
    return results


def report(results: dict) -> None:
    fps30, fps60, post, memory = (results.get(k, {}) for k in ("fps30", "fps60", "post", "memory"))

    def latency(block: dict | None, key: str) -> float | None:
        return block.get(key) if block else None

    rows = [
        ("30 fps: guide events / s", fps30.get("guides_per_s"), f">= {TARGETS['guides_per_s']:g}",
         "PASS" if (fps30.get("guides_per_s") or 0) >= TARGETS["guides_per_s"] else "FAIL"),
        ("30 fps: latency p50 ms", latency(fps30.get("latency"), "median_ms"), "", ""),
        ("30 fps: latency p95 ms", latency(fps30.get("latency"), "p95_ms"), f"<= {TARGETS['p95_ms']:g}",
         verdict(latency(fps30.get("latency"), "p95_ms"), TARGETS["p95_ms"])),
        ("30 fps: in-daemon latency p50 / p95 ms", (f"{latency(fps30.get('server_latency'), 'median_ms')} / "
         f"{latency(fps30.get('server_latency'), 'p95_ms')}"), "", ""),
        ("30 fps: frames dropped", fps30.get("dropped"), "", ""),
        ("60 fps: guide events / s", fps60.get("guides_per_s"), "", ""),
        ("60 fps: latency p50 / p95 ms", (f"{latency(fps60.get('latency'), 'median_ms')} / "
         f"{latency(fps60.get('latency'), 'p95_ms')}"), "", ""),
        ("60 fps: p95 first half / second half ms", (f"{latency(fps60.get('latency_first_half'), 'p95_ms')} / "
         f"{latency(fps60.get('latency_second_half'), 'p95_ms')}"), "bounded", ""),
        ("60 fps: in-daemon latency p50 / p95 ms", (f"{latency(fps60.get('server_latency'), 'median_ms')} / "
         f"{latency(fps60.get('server_latency'), 'p95_ms')}"), "", ""),
        ("60 fps: frames dropped", f"{fps60.get('dropped')} ({fps60.get('dropped_pct')}%)", "counted", ""),
        ("client woke late p95, 30 / 60 fps ms", (f"{latency(fps30.get('client_pacing_late'), 'p95_ms')} / "
         f"{latency(fps60.get('client_pacing_late'), 'p95_ms')}"), "~0", "busy" if max(
            latency(fps30.get("client_pacing_late"), "p95_ms") or 0,
            latency(fps60.get("client_pacing_late"), "p95_ms") or 0) > 10 else "quiet"),
        ("POST median alone / while streaming ms", (f"{latency(post.get('alone'), 'median_ms')} / "
         f"{latency(post.get('while_streaming'), 'median_ms')}"), "", ""),
        ("POST ratio (median)", post.get("ratio_median"), f"<= {TARGETS['post_ratio']:g}",
         verdict(post.get("ratio_median"), TARGETS["post_ratio"])),
        (f"RSS over {memory.get('frames')} frames MB", f"{memory.get('rss_start_mb')} -> {memory.get('rss_end_mb')}",
         "", ""),
        ("RSS growth %", memory.get("growth_pct"), f"< {TARGETS['rss_growth_pct']:g}",
         verdict(memory.get("growth_pct"), TARGETS["rss_growth_pct"], strict=True)),
    ]
    print(f"\nlive capture, {results['machine'].get('cpu_model')}, {results['machine'].get('affinity_cpus')} CPUs, "
          f"load at start {results['machine'].get('loadavg_at_start')}")
    print(f"{'figure':44} {'measured':>24} {'target':>10} verdict")
    for name, value, target, outcome in rows:
        print(f"{name:44} {value!s:>24} {target:>10} {outcome}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--front", type=Path, default=DEFAULT_FRONT, help="the person's front photo")
    parser.add_argument("--side", type=Path, default=DEFAULT_SIDE, help="side photo (for the POST pair)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the 30 and 60 fps phases")
    parser.add_argument("--memory-frames", type=int, default=10_000, help="frames of the memory phase")
    parser.add_argument("--post-runs", type=int, default=10, help="POSTs without and with a stream")
    parser.add_argument("--short", action="store_true", help="a quick pass: 5 s phases, 1500 frames, 4 POSTs")
    parser.add_argument("--config", type=Path, help="a skeletond TOML config for the server")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.short:
        args.seconds, args.memory_frames, args.post_runs = 5.0, 1500, 4
    results = run(args)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
