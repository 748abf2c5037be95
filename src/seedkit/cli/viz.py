"""``seedkit viz``: PNG overlays of seed maps for people who would rather look than read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from seedkit.cli._args import check_output_folder, read_class_names
from seedkit.errors import DataError, DataFileError, InvalidValueError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["register", "run"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``viz`` subcommand."""
    parser = subparsers.add_parser(
        "viz",
        help="write PNG overlays (heat map per class and thresholded seed) of seed files",
        description=(
            "For every id write <out>/<id>.png: the image, one heat map per class in the "
            "seed file, and the seed at --threshold with a legend. Needs the "
            "seedkit-wsss[examples] extra."
        ),
    )
    parser.add_argument(
        "--image-dir", required=True, help="directory of <id>.jpg / <id>.png images"
    )
    parser.add_argument(
        "--cams", required=True, help="directory of <id>.npy seed files (psa format)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ids", nargs="+", metavar="ID", help="image ids")
    source.add_argument("--list", metavar="FILE", help="file with one image id per line")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--threshold", type=float, default=0.3, help="background threshold (0.3)")
    parser.add_argument(
        "--max-images", type=int, default=None, metavar="N", help="stop after N images"
    )
    parser.add_argument("--num-classes", type=int, default=21, help="classes incl. background (21)")
    parser.add_argument(
        "--class-names", default=None, help="file with one class name per line (VOC by default)"
    )
    parser.set_defaults(func=run)


def _find_image(directory: Path, image_id: str) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        candidate = directory / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataFileError(directory / f"{image_id}.jpg", "image", "looked for .jpg, .jpeg and .png")


def _read_image(path: Path) -> np.ndarray:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as handle:
            return np.asarray(handle.convert("RGB"))
    except OSError as error:  # truncated or not an image (PIL raises OSError subclasses)
        reason = f"unreadable file ({error})"
        raise DataError(path, "a readable JPEG or PNG image", reason) from error


def run(args: argparse.Namespace) -> int:
    """Write one overlay PNG per id."""
    from seedkit.checks import check_int, check_number
    from seedkit.data import read_id_list
    from seedkit.metrics import load_psa_maps
    from seedkit.viz import save_overlay

    check_number("--threshold", args.threshold, 0.0, 1.0)
    check_int("--num-classes", args.num_classes, 2)
    if args.max_images is not None:
        check_int("--max-images", args.max_images, 1)
    if args.ids:
        ids = list(args.ids)
        repeated = sorted({image_id for image_id in ids if ids.count(image_id) > 1})
        if repeated:
            raise InvalidValueError("--ids", "distinct image ids", f"{repeated[0]} more than once")
    else:
        ids = read_id_list(None, args.list)
    if args.max_images is not None:
        ids = ids[: args.max_images]
    names = None
    if args.class_names:
        names = read_class_names("--class-names", args.class_names, args.num_classes)
    out = check_output_folder("--out", args.out)
    image_dir, cam_dir = Path(args.image_dir), Path(args.cams)
    for image_id in ids:
        image = _read_image(_find_image(image_dir, image_id))
        maps = load_psa_maps(
            cam_dir / f"{image_id}.npy", args.num_classes - 1, shape=image.shape[:2]
        )
        save_overlay(image, maps, out / f"{image_id}.png", args.threshold, names)
        print(out / f"{image_id}.png")
    return 0
