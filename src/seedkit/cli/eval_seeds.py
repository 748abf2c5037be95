"""``seedkit eval-seeds``: background-threshold sweep of psa-format seeds against masks."""

from __future__ import annotations

import argparse
import json
import os
import sys

from seedkit.cli._args import check_output_file, read_class_names

__all__ = ["MIN_STEP", "register", "run", "write_json_atomic"]

#: The finest threshold spacing ``--step`` accepts.
MIN_STEP = 0.001


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
    parser.add_argument(
        "--step", type=float, default=0.01, help=f"threshold spacing (0.01; >= {MIN_STEP})"
    )
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
    parser.add_argument(
        "--mctformer-best",
        action="store_true",
        help="also report the best that MCTformer's evaluation.py --curve True prints: it "
        "stops at the first threshold whose mIoU does not improve, so on a curve with a dip "
        "it reports an earlier, lower best than the full sweep (JSON key early_stopped_best)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    parser.set_defaults(func=run)


def write_json_atomic(document: object, path: str | os.PathLike) -> None:
    """Write ``document`` as indented JSON to ``path``, atomically."""
    from seedkit.files import atomic_write

    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode())


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print (and optionally save) the results."""
    from seedkit.checks import check_int, check_number
    from seedkit.data import read_id_list
    from seedkit.errors import InvalidValueError
    from seedkit.metrics import ThresholdSweep, evaluate_seeds

    check_int("--num-classes", args.num_classes, 2)
    check_number("--max-threshold", args.max_threshold, 0.0, 1.0)
    # The sweep scores every threshold on every pixel: 0.001 gives 1000 thresholds per unit.
    check_number("--step", args.step, MIN_STEP, 1.0)
    try:  # the sweep refuses a count table too large for memory before any file is read
        ThresholdSweep(args.num_classes, max_threshold=args.max_threshold, step=args.step)
    except InvalidValueError as error:
        if error.argument != "num_labels":
            raise
        raise InvalidValueError("--num-classes", error.expected, error.actual) from None
    json_path = None if args.json is None else check_output_file("--json", args.json)
    ids = read_id_list(None, args.list)
    names = None
    if args.class_names:
        names = read_class_names("--class-names", args.class_names, args.num_classes)
    result = evaluate_seeds(
        args.cams,
        args.gt,
        ids,
        num_labels=args.num_classes,
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
    document = result.to_json_dict()
    if args.mctformer_best:
        threshold, miou = result.early_stopped_best()
        document["early_stopped_best"] = {"threshold": round(threshold, 10), "miou": miou}
        same = threshold == result.best_threshold
        print(
            f"MCTformer's evaluation.py would print: best threshold {threshold:.2f} mIoU "
            f"{miou:.2f} (it stops at the first threshold that does not improve; "
            + (
                "here that is the full sweep's best)"
                if same
                else f"the full sweep's best is {result.best_threshold:.2f} / "
                f"{result.best_miou:.2f})"
            )
        )
        if result.mean_over != "all":
            print(
                "note: MCTformer averages over all classes; pass --mean-over all to compare",
                file=sys.stderr,
            )
    for message in result.warnings:
        print(f"seedkit eval-seeds: warning: {message}", file=sys.stderr)
    if json_path is not None:
        write_json_atomic(document, json_path)
    return 0
