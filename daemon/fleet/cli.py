"""`skeletond fleet` (the daemons on a broker) and `skeletond kiosk-request` (the reference kiosk client)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from daemon.config import load_config


def _broker(args: argparse.Namespace) -> tuple[str, str, str | None, str | None, str | None]:
    """(url, prefix, username, password, ca file) from the flags, else the config's [mqtt] section."""
    config = load_config(getattr(args, "config", None))
    url = args.broker or config.mqtt.url
    if not url:
        raise SystemExit("skeletond: no broker: give --broker mqtt://host:port (or mqtt.url in --config)")
    prefix = args.prefix or config.mqtt.topic_prefix
    ca_file = str(config.mqtt.ca_file) if config.mqtt.ca_file else None
    return url, prefix, config.mqtt.username, config.mqtt.password, ca_file


def _fleet(args: argparse.Namespace) -> int:
    from daemon.fleet.status import collect_statuses, format_table

    url, prefix, username, password, ca_file = _broker(args)
    try:
        statuses = collect_statuses(url, prefix, args.wait, username, password, ca_file)
    except ConnectionError as error:
        print(f"skeletond fleet: {error}", file=sys.stderr)
        return 3
    if args.json:
        sys.stdout.buffer.write(orjson.dumps([status.__dict__ for status in statuses]) + b"\n")
    else:
        print(format_table(statuses))
    return 0


def _kiosk_request(args: argparse.Namespace) -> int:
    from daemon.fleet.client import KioskClient, KioskRequestError, answer_kind, request_payload

    url, prefix, username, password, ca_file = _broker(args)
    payload = request_payload(
        Path(args.front).read_bytes(), Path(args.side).read_bytes(),
        user_id=args.id, uuid=args.uuid, height=args.height, kiosk=args.kiosk_file,
    )
    try:
        with KioskClient(url, prefix, kiosk=args.kiosk, username=username, password=password,
                         ca_file=ca_file) as client:
            answer = client.request(payload, timeout_s=args.timeout, attempts=args.attempts)
    except KioskRequestError as error:
        print(f"skeletond kiosk-request: {error}", file=sys.stderr)
        return 3
    sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
    return 0 if answer_kind(answer) is None else 1


def add_fleet_parsers(commands: argparse._SubParsersAction) -> None:
    from daemon.fleet.client import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT_S

    def broker_flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--broker", help="mqtt://host:port or mqtts://... (default: mqtt.url of --config)")
        parser.add_argument("--prefix", help="topic prefix (default: mqtt.topic_prefix, skeleton/v2)")

    fleet = commands.add_parser("fleet", help="list the daemons on a broker from their retained status")
    broker_flags(fleet)
    fleet.add_argument("--wait", type=float, default=1.5, help="seconds to collect status messages")
    fleet.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    fleet.set_defaults(func=_fleet)

    kiosk = commands.add_parser(
        "kiosk-request", help="send one front/side pair over MQTT as a kiosk does (retrying by uuid)"
    )
    broker_flags(kiosk)
    kiosk.add_argument("--front", required=True, help="front photo")
    kiosk.add_argument("--side", required=True, help="side photo")
    kiosk.add_argument("--height", type=float, help="subject height, cm")
    kiosk.add_argument("--uuid", help="task uuid (default: a new one)")
    kiosk.add_argument("--id", default="kiosk@localhost", help="user e-mail (the seed's id field)")
    kiosk.add_argument("--kiosk", help="this kiosk's topic level: request/<kiosk>, result/<kiosk>/<uuid>")
    kiosk.add_argument("--kiosk-file", help="the request's `kiosk` field (a calibrated kiosk file's name)")
    kiosk.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per attempt")
    kiosk.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS, help="attempts before giving up")
    kiosk.set_defaults(func=_kiosk_request)
