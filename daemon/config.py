"""The daemon's one typed configuration: a TOML file, then SKELETON_* environment variables, then flags.

Each concern owns one section. `load_config` validates cross-field rules and raises ConfigError with a
message that names the offending key.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or inconsistent."""


# Settings whose values never appear in an error text or a log line.
SECRET_SETTINGS = frozenset({"mqtt.password", "http.token"})


def redact_url(url: str) -> str:
    """The URL without its password (`mqtt://user:***@host:1883`): the one way a URL is logged or echoed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    # The last '@' ends the user info (an unencoded '@' or '/' in a password stays on its left).
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}:***@{host}" if colon else f"{scheme}://{user}@{host}"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "skeleton-v2"


@dataclass
class ModelsConfig:
    # Where fetched and converted models live (never in git).
    dir: Path = field(default_factory=lambda: _default_cache_dir() / "models")
    # Isolated environment holding TensorFlow + tf2onnx, used only by `skeletond models fetch`.
    convert_venv: Path = field(default_factory=lambda: _default_cache_dir() / "convert-venv")
    # Landmark model size: heavy is the default; full and lite trade accuracy for speed.
    landmark: str = "heavy"


@dataclass
class EngineConfig:
    # auto: TensorRT when it and a CUDA device are present, else ONNX Runtime.
    backend: str = "auto"
    # Threads per ONNX Runtime session; the pipeline runs the two views in two threads.
    threads: int = 1
    # TensorRT engine cache and build settings.
    engine_dir: Path = field(default_factory=lambda: _default_cache_dir() / "engines")
    workspace_mb: int = 1024
    # fp16 | fp32 | int8. TensorRT builds its engines in it; ONNX Runtime (no fp16 kernels on a CPU) runs
    # the fp32 models for fp16 and fp32, the int8 models for int8 (README "int8": what int8 costs).
    precision: str = "fp16"
    max_batch: int = 4


@dataclass
class PipelineConfig:
    # Decompression-bomb guard: photos whose header claims more pixels are refused before decoding.
    max_pixels: int = 60_000_000
    # Detector and landmark thresholds (MediaPipe's graph settings).
    min_detection_score: float = 0.5
    min_pose_presence: float = 0.5
    # Average the landmarks of the ROI crop and of its mirror (accuracy.md: steadier measures).
    flip_test: bool = True
    # Decode JPEGs at a reduced DCT scale when the annotated photo and the landmark crop need no more.
    reduced_decode: bool = True
    # Longest side of the annotated photos returned (0 = the photo's own size).
    # 1280 px: sharp on a kiosk's 1080p screen showing the two photos side by side.
    annotated_max_side: int = 1280
    annotated_jpeg_quality: int = 85
    # Subject height assumed for the 3D scale when the request gives none (cm).
    default_height_cm: float = 170.0
    # Without a kiosk placement, read the camera's roll from the photo's straight lines and correct the
    # measures when sure (calibration/roll.py; 30-130 ms a photo on a 2-core CPU).
    level_from_lines: bool = True
    # A roll read from the lines of at least this many degrees gets a second pose pass with the detector
    # seeing the photo level (the pose stage is not rotation-equivariant; docs/measures.md). 0 = every
    # confident roll; a large value (e.g. 90) = never, for the speed of one pass.
    relevel_min_roll_deg: float = 0.5


@dataclass
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 64 * 1024 * 1024
    # Bytes of request bodies held at once, from reading until answered; more uploads get 503 + Retry-After.
    # 128 MiB: twenty typical requests (two 12 MP phone photos, ~6 MB) or two of the largest allowed.
    max_inflight_body_bytes: int = 128 * 1024 * 1024
    # Optional bearer token; required for /results when listening beyond loopback.
    token: str | None = None


@dataclass
class MqttConfig:
    # mqtt://host:port or mqtts://host:port; None = HTTP only.
    url: str | None = None
    topic_prefix: str = "skeleton/v2"
    client_id: str = field(default_factory=lambda: f"skeletond-{socket.gethostname()}")
    daemon_id: str = field(default_factory=socket.gethostname)
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    # Fleet (docs/fleet.md): read the request topics through the shared subscription `$share/<group>/...`,
    # so that the broker hands each request to one daemon of the group; the session is then clean
    # (session_expiry_s is not used). None: this daemon reads the request topics alone.
    shared_group: str | None = None
    # Seconds between updates of the retained status (sent at once, too, whenever the state changes).
    status_interval_s: float = 10.0
    # /healthz says `degraded` (HTTP 503) once the broker has been unreachable or refusing for this long.
    degraded_after_s: float = 60.0


@dataclass
class WorkerConfig:
    queue_size: int = 16
    # SIGTERM: finish in-flight requests within this many seconds, then exit.
    stop_timeout_s: float = 30.0


@dataclass
class StoreConfig:
    path: Path = field(default_factory=lambda: _default_cache_dir() / "results.sqlite3")
    retention_days: float = 30.0
    # Keep the uploaded original photos beside the answer (off: privacy default).
    keep_photos: bool = False
    # Folder of the member-hash and report-link keys (daemon/members.py); None = the store's folder.
    key_dir: Path | None = None


@dataclass
class WebConfig:
    # How long a member's report link (the QR code on the kiosk) opens the report without the token.
    link_ttl_s: float = 7 * 24 * 3600.0
    # Base URL a phone reaches the daemon at (e.g. http://192.168.1.20:8080); None = the request's own.
    public_url: str | None = None


@dataclass
class CalibrationConfig:
    # kiosk name -> kiosk file (JSON written by `skeletond calibrate`).
    kiosks: dict[str, Path] = field(default_factory=dict)
    default_kiosk: str | None = None
    # Vertical field of view assumed for a phone photo without EXIF focal length (degrees).
    default_vfov_deg: float = 65.0


@dataclass
class CaptureConfig:
    # Live capture sessions (WebSocket /capture and MQTT capture topics; docs/capture.md).
    enabled: bool = True
    # Sessions at once, over both transports; one more is refused with a close reason.
    max_sessions: int = 2
    # Landmark model of the live path (one pass per frame, no flip testing): lite or full.
    landmark: str = "full"
    # ONNX Runtime threads of the live path's sessions: its passes run alone in the worker (never beside
    # an analysis), so they may use every core.
    threads: int = 2
    # Run the person detector every this many frames even while tracking (a second person walking in).
    detect_every: int = 15
    # Seconds every condition must hold with the person still before the view is captured.
    hold_s: float = 1.0
    # Still: the trunk and legs move less than this share of the person's height during the hold.
    still_tolerance: float = 0.02
    # Too far below this share of the frame height (with no calibrated standing mark).
    min_height_fraction: float = 0.55
    # Off-centre beyond this share of the frame width.
    max_offset_fraction: float = 0.1
    # Frames are decoded with their long side reduced to about this (the guide needs no more).
    decode_max_side: int = 640
    # Largest binary message (frame or still) accepted.
    max_frame_bytes: int = 16 * 1024 * 1024
    # A session with no frame or command for this long is closed.
    idle_timeout_s: float = 30.0
    # Browser pages from other origins may open sessions (off: only the daemon's own pages, and clients
    # that send no Origin header).
    allow_any_origin: bool = False
    # How long the captured pair may wait for room in a full analysis queue before "server busy".
    analysis_wait_s: float = 30.0


@dataclass
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    web: WebConfig = field(default_factory=WebConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)


LANDMARK_MODELS = ("lite", "full", "heavy")
BACKENDS = ("auto", "onnxruntime", "tensorrt")


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Turn a TOML or environment value into the field's declared type."""
    optional = "None" in annotation
    base = annotation.replace("| None", "").replace("None |", "").strip()
    if value is None or (optional and isinstance(value, str) and value == ""):
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if base == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if base == "Path":
            return Path(os.path.expanduser(str(value)))
        if base == "str":
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
        if base.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError(value)
            return {str(k): Path(os.path.expanduser(str(v))) for k, v in value.items()}
    except (TypeError, ValueError):
        # Any value echoed goes through redact_url: a mistyped url may still carry a password.
        shown = "a value that is not shown (a secret)" if where in SECRET_SETTINGS else redact_url(repr(value))
        raise ConfigError(f"{where}: expected {base}, got {shown}") from None
    return value


def _apply(section: Any, values: dict[str, Any], where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown setting (known: {', '.join(sorted(fields))})")
        setattr(section, key, _coerce(value, str(fields[key].type), f"{where}.{key}"))


def _env_values(config: Config, environ: dict[str, str]) -> dict[str, dict[str, str]]:
    """SKELETON_<SECTION>_<KEY>=value, e.g. SKELETON_MODELS_DIR, SKELETON_HTTP_PORT."""
    found: dict[str, dict[str, str]] = {}
    for section in dataclasses.fields(config):
        for f in dataclasses.fields(getattr(config, section.name)):
            name = f"SKELETON_{section.name}_{f.name}".upper()
            if name in environ:
                found.setdefault(section.name, {})[f.name] = environ[name]
    return found


def validate(config: Config) -> None:
    if config.models.landmark not in LANDMARK_MODELS:
        raise ConfigError(f"models.landmark: one of {', '.join(LANDMARK_MODELS)}, got {config.models.landmark!r}")
    if config.engine.backend not in BACKENDS:
        raise ConfigError(f"engine.backend: one of {', '.join(BACKENDS)}, got {config.engine.backend!r}")
    if config.engine.precision not in ("fp16", "fp32", "int8"):
        raise ConfigError(f"engine.precision: fp16, fp32 or int8, got {config.engine.precision!r}")
    if not 1 <= config.engine.max_batch <= 16:
        raise ConfigError("engine.max_batch: between 1 and 16")
    if config.engine.threads < 1:
        raise ConfigError("engine.threads: at least 1")
    if not 1 <= config.http.port <= 65535:
        raise ConfigError(f"http.port: 1-65535, got {config.http.port}")
    if config.http.max_body_bytes < 1024:
        raise ConfigError("http.max_body_bytes: at least 1024")
    if config.http.max_inflight_body_bytes < config.http.max_body_bytes:
        raise ConfigError("http.max_inflight_body_bytes: at least http.max_body_bytes (else a large body never fits)")
    if config.pipeline.max_pixels < 10_000:
        raise ConfigError("pipeline.max_pixels: at least 10000")
    if not 1 <= config.pipeline.annotated_jpeg_quality <= 100:
        raise ConfigError("pipeline.annotated_jpeg_quality: 1-100")
    if not 50 <= config.pipeline.default_height_cm <= 250:
        raise ConfigError("pipeline.default_height_cm: 50-250")
    if config.pipeline.relevel_min_roll_deg < 0:
        raise ConfigError("pipeline.relevel_min_roll_deg: 0 or more")
    if config.web.link_ttl_s <= 0:
        raise ConfigError("web.link_ttl_s: more than 0")
    if config.web.public_url is not None and not config.web.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"web.public_url: http://host:port or https://..., got {config.web.public_url!r}")
    if config.worker.queue_size < 1:
        raise ConfigError("worker.queue_size: at least 1")
    if config.mqtt.url is not None:
        _validate_mqtt_url(config.mqtt.url)
    if config.mqtt.degraded_after_s <= 0:
        raise ConfigError("mqtt.degraded_after_s: more than 0")
    if config.mqtt.shared_group is not None and (
        not config.mqtt.shared_group or any(ch in config.mqtt.shared_group for ch in "/+#")
    ):
        raise ConfigError(f"mqtt.shared_group: one topic level without '/', '+', '#', got {config.mqtt.shared_group!r}")
    if config.mqtt.status_interval_s <= 0:
        raise ConfigError("mqtt.status_interval_s: more than 0")
    if (config.mqtt.cert_file is None) != (config.mqtt.key_file is None):
        raise ConfigError("mqtt.cert_file and mqtt.key_file go together")
    if config.mqtt.password is not None and config.mqtt.username is None:
        raise ConfigError("mqtt.password needs mqtt.username")
    _validate_capture(config.capture)
    if config.calibration.default_kiosk is not None and config.calibration.default_kiosk not in config.calibration.kiosks:
        raise ConfigError(f"calibration.default_kiosk: {config.calibration.default_kiosk!r} is not in calibration.kiosks")


def _validate_capture(capture: CaptureConfig) -> None:
    if capture.landmark not in ("lite", "full"):
        raise ConfigError(f"capture.landmark: lite or full, got {capture.landmark!r}")
    if capture.max_sessions < 0:
        raise ConfigError("capture.max_sessions: 0 or more")
    if capture.threads < 1:
        raise ConfigError("capture.threads: at least 1")
    if capture.detect_every < 1:
        raise ConfigError("capture.detect_every: at least 1")
    if not 0 <= capture.hold_s <= 10:
        raise ConfigError("capture.hold_s: 0-10 seconds")
    if not 0 < capture.still_tolerance < 1:
        raise ConfigError("capture.still_tolerance: between 0 and 1")
    if not 0 < capture.min_height_fraction < 1:
        raise ConfigError("capture.min_height_fraction: between 0 and 1")
    if not 0 < capture.max_offset_fraction < 0.5:
        raise ConfigError("capture.max_offset_fraction: between 0 and 0.5")
    if capture.decode_max_side < 256:
        raise ConfigError("capture.decode_max_side: at least 256")
    if capture.max_frame_bytes < 1024:
        raise ConfigError("capture.max_frame_bytes: at least 1024")
    if capture.idle_timeout_s <= 0 or capture.analysis_wait_s < 0:
        raise ConfigError("capture.idle_timeout_s: above 0; capture.analysis_wait_s: 0 or more")


def _validate_mqtt_url(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("mqtt", "mqtts") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:  # a bad port, an unclosed IPv6 bracket
        valid = False
    if not valid:
        raise ConfigError(f"mqtt.url: mqtt://host:port or mqtts://host:port, got {redact_url(url)!r}")


def load_config(
    path: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """File, then environment, then explicit overrides (flags); validated."""
    config = Config()
    layers: list[tuple[str, dict[str, dict[str, Any]]]] = []
    if path is not None:
        try:
            with open(path, "rb") as handle:
                layers.append((str(path), tomllib.load(handle)))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    layers.append(("environment", _env_values(config, dict(os.environ if environ is None else environ))))
    if overrides:
        layers.append(("flags", overrides))
    for origin, layer in layers:
        for section_name, values in layer.items():
            if not hasattr(config, section_name) or not isinstance(values, dict):
                raise ConfigError(f"{origin}: unknown section [{section_name}]")
            _apply(getattr(config, section_name), values, section_name)
    validate(config)
    return config
