"""Prometheus metrics for the daemon, in base units with the `skeleton_` prefix.

The metrics live in prometheus-client's default registry (one per process, beside its process and GC
collectors); `/metrics` renders that registry.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter("skeleton_requests", "Analysis requests received, by transport.", ["transport"])
ERRORS = Counter("skeleton_errors", "Requests answered with an error, by error kind.", ["kind"])
QUEUE_DEPTH = Gauge("skeleton_queue_depth", "Requests waiting for the inference worker.")
IN_FLIGHT = Gauge("skeleton_in_flight", "Requests the inference worker is analysing now.")
BODY_BYTES = Gauge(
    "skeleton_http_body_bytes_in_flight",
    "Bytes of HTTP request bodies held from reading until answered (bounded by http.max_inflight_body_bytes).",
)
STORE_HITS = Counter("skeleton_store_hits", "Requests answered from the result store without inference.")
# Photos are analysed in about 0.05-5 s per stage on a Jetson or a CPU; queue waits can reach minutes.
STAGE_SECONDS = Histogram(
    "skeleton_stage_seconds",
    "Time spent per pipeline stage (decode, detect, landmarks, ..., plus queue_wait and analyze).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def observe_stage(stage: str, seconds: float) -> None:
    """Record one stage's duration; the analyzer calls this for each of its stages."""
    STAGE_SECONDS.labels(stage=stage).observe(max(0.0, float(seconds)))


def count_request(transport: str) -> None:
    REQUESTS.labels(transport=transport).inc()


def count_error(kind: str) -> None:
    ERRORS.labels(kind=kind).inc()


def count_store_hit() -> None:
    STORE_HITS.inc()


def set_queue_depth(depth: int) -> None:
    QUEUE_DEPTH.set(depth)


def set_in_flight(count: int) -> None:
    IN_FLIGHT.set(count)


def add_body_bytes(count: int) -> None:
    BODY_BYTES.inc(count)


def render() -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(REGISTRY)


# -- live capture (daemon/capture/) ---------------------------------------------------------------
CAPTURE_SESSIONS = Gauge("skeleton_capture_sessions", "Live capture sessions open now.")
CAPTURE_FRAMES = Counter(
    "skeleton_capture_frames", "Live capture frames, by outcome: processed, or dropped for a newer frame.",
    ["outcome"],
)
CAPTURE_VIEWS = Counter("skeleton_capture_views", "Views captured, by view and source (auto, command, still).",
                        ["view", "source"])
CAPTURE_GUIDE_SECONDS = Histogram(
    "skeleton_capture_guide_seconds", "From receiving a live frame to sending its guide event.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.045, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0),
)


def set_capture_sessions(count: int) -> None:
    CAPTURE_SESSIONS.set(count)


def count_capture_frame(outcome: str) -> None:
    CAPTURE_FRAMES.labels(outcome=outcome).inc()


def count_capture_view(view: str, source: str) -> None:
    CAPTURE_VIEWS.labels(view=view, source=source).inc()


def observe_guide_latency(seconds: float) -> None:
    CAPTURE_GUIDE_SECONDS.observe(max(0.0, float(seconds)))


# -- fleet erasure (daemon/mqtt.py, docs/fleet.md "Erasure") --------------------------------------
FLEET_ERASURES = Counter(
    "skeleton_fleet_erasures",
    "Member erasures fanned out to the other daemons of the shared group (direction sent: by outcome sent, "
    "pending, refused) or received from one (direction received: outcome erased, failed, unreadable).",
    ["direction", "outcome"],
)


def count_fleet_erasure(direction: str, outcome: str) -> None:
    FLEET_ERASURES.labels(direction=direction, outcome=outcome).inc()
