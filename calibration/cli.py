"""`skeletond calibrate ...`: make and check kiosk files. The daemon's CLI calls add_calibrate_parser.

Exit codes: 0 done, 1 calibration failed (board not found, too few photos), 2 bad input (paths,
values, an unreadable kiosk file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import cv2

from calibration.intrinsics import CalibrationError, calibrate_intrinsics, parse_board
from calibration.kiosk import KioskError, load_kiosk, save_intrinsics, save_placement
from calibration.placement import placement_from_marker, placement_manual

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def calibrate_intrinsics_main(
    images: Path, board: str, square_mm: float, out: Path, stdout: TextIO | None = None
) -> int:
    """Calibrate from a directory of checkerboard photos and write (or update) the kiosk file."""
    stdout = stdout or sys.stdout
    try:
        board_size = parse_board(board)
        result = calibrate_intrinsics(Path(images), board_size, float(square_mm))
    except ValueError as exc:  # CalibrationError included
        print(f"calibration failed: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, CalibrationError) else EXIT_USAGE
    try:
        save_intrinsics(out, result)
    except (KioskError, OSError) as exc:
        print(f"cannot write {out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    matrix = result["camera_matrix"]
    print(f"wrote {out}", file=stdout)
    print(
        f"  views used {result['views_used']}, RMS {result['rms']:.3f} px, corner coverage {result['coverage']:.0%}",
        file=stdout,
    )
    print(
        f"  fx {matrix[0][0]:.1f}  fy {matrix[1][1]:.1f}  cx {matrix[0][2]:.1f}  cy {matrix[1][2]:.1f}  "
        f"image {result['image_size'][0]}x{result['image_size'][1]}",
        file=stdout,
    )
    for rejected in result["rejected"]:
        print(f"  rejected {rejected['file']}: {rejected['reason']}", file=stdout)
    for warning in result["warnings"]:
        print(f"  WARNING: {warning}", file=stdout)
    return EXIT_OK


def calibrate_placement_main(
    kiosk: Path,
    image: Path | None = None,
    board: str | None = None,
    square_mm: float | None = None,
    camera_height_mm: float | None = None,
    distance_mm: float | None = None,
    pitch_deg: float | None = None,
    roll_deg: float | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Measure the placement from a floor-board photo (image + board + square_mm), or take it by hand
    (distance_mm, optionally camera_height_mm, pitch_deg, roll_deg), and store it in the kiosk file."""
    stdout = stdout or sys.stdout
    warnings: list[str] = []
    try:
        if image is not None:
            if board is None or square_mm is None:
                print("--image needs --board and --square-mm", file=sys.stderr)
                return EXIT_USAGE
            loaded = load_kiosk(kiosk)
            if loaded.intrinsics is None:
                print(f"{kiosk} has no intrinsics: run `skeletond calibrate intrinsics` first", file=sys.stderr)
                return EXIT_USAGE
            photo = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
            if photo is None:
                print(f"cannot read {image} as an image", file=sys.stderr)
                return EXIT_USAGE
            placement, warnings = placement_from_marker(photo, loaded.intrinsics, parse_board(board), float(square_mm))
        elif distance_mm is not None:
            placement = placement_manual(distance_mm, camera_height_mm, pitch_deg or 0.0, roll_deg or 0.0)
        else:
            print("give --image (with --board, --square-mm) or --distance-mm", file=sys.stderr)
            return EXIT_USAGE
        save_placement(kiosk, placement)
    except CalibrationError as exc:
        print(f"placement failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, OSError) as exc:  # KioskError is a ValueError
        print(f"placement failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote placement to {kiosk} ({placement.method})", file=stdout)
    height = "unknown" if placement.camera_height_mm is None else f"{placement.camera_height_mm:.0f} mm"
    print(
        f"  standing distance {placement.standing_distance_mm:.0f} mm, camera height {height}, "
        f"pitch {placement.pitch_deg:.1f} deg, roll {placement.roll_deg:.1f} deg",
        file=stdout,
    )
    for warning in warnings:
        print(f"  WARNING: {warning}", file=stdout)
    return EXIT_OK


def calibrate_show_main(kiosk: Path, stdout: TextIO | None = None) -> int:
    """Validate a kiosk file and print what the daemon will use from it."""
    stdout = stdout or sys.stdout
    try:
        loaded = load_kiosk(kiosk)
    except KioskError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    summary: dict[str, Any] = {"kiosk": str(kiosk)}
    if loaded.intrinsics is not None:
        summary["intrinsics"] = loaded.intrinsics.to_dict()
        summary["rms"] = loaded.rms
        summary["views_used"] = loaded.views_used
        summary["warnings"] = loaded.data.get("warnings", [])
    else:
        summary["intrinsics"] = None
    summary["placement"] = None if loaded.placement is None else loaded.placement.to_dict()
    print(json.dumps(summary, indent=2), file=stdout)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    if args.calibrate_command == "intrinsics":
        return calibrate_intrinsics_main(args.images, args.board, args.square_mm, args.out)
    if args.calibrate_command == "placement":
        return calibrate_placement_main(
            args.kiosk, image=args.image, board=args.board, square_mm=args.square_mm,
            camera_height_mm=args.camera_height_mm, distance_mm=args.distance_mm,
            pitch_deg=args.pitch_deg, roll_deg=args.roll_deg,
        )
    if args.calibrate_command == "show":
        return calibrate_show_main(args.kiosk)
    print("skeletond calibrate: choose intrinsics, placement or show", file=sys.stderr)
    return EXIT_USAGE


def add_calibrate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `calibrate {intrinsics,placement,show}` to a subparsers object; sets func(args) -> exit code."""
    parser = subparsers.add_parser("calibrate", help="calibrate a kiosk camera (writes a kiosk JSON file)")
    parser.set_defaults(func=_run, calibrate_command=None)
    commands = parser.add_subparsers(dest="calibrate_command")

    intrinsics = commands.add_parser("intrinsics", help="lens calibration from checkerboard photos")
    intrinsics.add_argument("--images", type=Path, required=True, help="directory of checkerboard photos")
    intrinsics.add_argument("--board", required=True, help="inner corners COLSxROWS, e.g. 9x6")
    intrinsics.add_argument("--square-mm", type=float, required=True, help="printed square side in mm")
    intrinsics.add_argument("--out", type=Path, required=True, help="kiosk file to write (placement kept)")

    placement = commands.add_parser(
        "placement", help="camera height, distance to the standing mark and pitch, into the kiosk file"
    )
    placement.add_argument("--kiosk", type=Path, required=True, help="kiosk file to update")
    placement.add_argument("--image", type=Path, help="photo of the board lying flat, centred on the mark")
    placement.add_argument("--board", help="inner corners COLSxROWS of the floor board")
    placement.add_argument("--square-mm", type=float, help="floor board square side in mm")
    placement.add_argument("--distance-mm", type=float, help="by hand: floor distance, under the lens to the mark")
    placement.add_argument("--camera-height-mm", type=float, help="by hand: lens height above the floor")
    placement.add_argument("--pitch-deg", type=float, help="by hand: camera tilt, > 0 looking down")
    placement.add_argument("--roll-deg", type=float, help="by hand: camera roll, usually 0")

    show = commands.add_parser("show", help="validate a kiosk file and print what the daemon uses")
    show.add_argument("--kiosk", type=Path, required=True)
    return parser
