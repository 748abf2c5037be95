"""``seedkit eval-seeds``: background-threshold sweep of psa-format seeds against masks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["register", "run", "write_json_atomic"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval-seeds`` subcommand."""
    parser = subparsers.add_parser(
        "eval-seeds",
        help="score seed maps (<id>.npy, psa format) against ground-truth masks",
        description=(
            "Sweep the background threshold 0.00 .. --max-threshold (step 0.01) over "
            "psa / SEAM / MCTformer / IRN seed files and report mIoU per threshold, the "
            "best threshold, per-class IoU and the false-positive / false-negative split. "
            "Prediction at t: argmax over [t, map_1, ..., map_C], background wins ties. "
            "The mIoU divides by all classes (--mean-over all, as SEAM / MCTformer / psa "
            "report it) unless --mean-over present."
        ),
    )
    parser.add_argument("--cams", required=True, help="directory of <id>.npy seed files")
    parser.add_argument("--gt", required=True, help="directory of <id>.png masks (255 = ignore)")
    parser.add_argument("--list", required=True, help="file with one image id per line")
    parser.add_argument("--num-classes", type=int, default=21, help="classes incl. background (21)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    parser.add_argument(
        "--max-threshold", type=float, default=0.59, help="last threshold of the sweep (0.59)"
    )
    parser.add_argument("--step", type=float, default=0.01, help="threshold spacing (0.01)")
    parser.add_argument(
        "--class-names",
        default=None,
        help="file with one class name per line (foreground only, or with background first)",
    )
    parser.add_argument(
        "--mean-over",
        choices=("all", "present"),
        default="all",
        help="classes the mIoU averages over: all (default; a class with no pixel counts 0, "
        "as SEAM / MCTformer / psa) or present (classes in the ground truth or the "
        "prediction, as IRN); equal on full VOC",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    parser.set_defaults(func=run)


def write_json_atomic(document: object, path: str | os.PathLike) -> None:
    """Write ``document`` as indented JSON to ``path``, atomically."""
    from seedkit.files import atomic_write

    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode())


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print (and optionally save) the results."""
    from seedkit.data import read_id_list
    from seedkit.metrics import evaluate_seeds

    ids = read_id_list(None, args.list)
    names = None
    if args.class_names:
        names = [
            line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()
        ]
    result = evaluate_seeds(
        args.cams,
        args.gt,
        ids,
        num_classes=args.num_classes,
        max_threshold=args.max_threshold,
        step=args.step,
        progress=not args.quiet,
        class_names=names,
        mean_over=args.mean_over,
    )
    if not args.quiet:
        print(result.format_table())
    else:
        print(
            f"best threshold {result.best_threshold:.2f} mIoU {result.best_miou:.2f} "
            f"(mean over {result.mean_over}: {result.mean_classes} classes)"
        )
        activation = result.format_table().splitlines()[-1]
        if activation.startswith("activation:"):
            print(activation)
    for message in result.warnings:
        print(f"seedkit eval-seeds: warning: {message}", file=sys.stderr)
    if args.json:
        write_json_atomic(result.to_json_dict(), args.json)
    return 0
