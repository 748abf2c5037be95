"""``seedkit make-demo-data``: write the procedural demo dataset in the VOC layout."""

from __future__ import annotations

import argparse
from typing import Any

from seedkit.cli._args import check_output_folder

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``make-demo-data`` subcommand."""
    parser = subparsers.add_parser(
        "make-demo-data",
        help="write a small procedural dataset in the VOCdevkit layout",
        description=(
            "Write ROOT/VOCdevkit/VOC2012 with JPEGImages, SegmentationClass (palette PNGs), "
            "Annotations (XML), ImageSets/Segmentation lists and cls_labels.npy, of "
            "procedurally generated multi-object scenes. Deterministic by seed."
        ),
    )
    parser.add_argument("root", help="output folder")
    parser.add_argument(
        "--num-images", type=int, default=100, help="number of images (default 100)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(192, 224),
        metavar=("H", "W"),
        help="image size (default 192 224)",
    )
    parser.add_argument(
        "--sbd", action="store_true", help="also write SegmentationClassAug and train_aug.txt"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the dataset."""
    from seedkit.checks import check_int
    from seedkit.data import make_demo_data

    check_int("--num-images", args.num_images, 1)
    check_int("--seed", args.seed, 0)
    for side in args.image_size:
        check_int("--image-size", side, 32)
    check_output_folder("root", args.root)
    voc = make_demo_data(
        args.root,
        num_images=args.num_images,
        seed=args.seed,
        image_size=tuple(args.image_size),
        sbd=args.sbd,
    )
    print(f"wrote {args.num_images} images to {voc}")
    return 0
