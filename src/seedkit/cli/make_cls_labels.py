"""``seedkit make-cls-labels``: write a ``cls_labels.npy`` for psa / SEAM / MCTformer or IRN."""

from __future__ import annotations

import argparse
from typing import Any

from seedkit.cli._args import check_output_file
from seedkit.errors import DataError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``make-cls-labels`` subcommand."""
    parser = subparsers.add_parser(
        "make-cls-labels",
        help="write a cls_labels.npy (dict id -> multi-hot) from masks, VOC XML or COCO JSON",
        description=(
            "Write the class-label file of psa / IRN / SEAM / MCTformer: a pickled dict "
            "{image id: float32 multi-hot vector} (20-d for VOC, 80-d for COCO)."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--voc-root", help="VOC2012 folder, VOCdevkit, or its parent")
    source.add_argument(
        "--coco-json", help="COCO instances JSON (needs the seedkit-wsss[coco] extra)"
    )
    parser.add_argument(
        "--list",
        default="train_aug",
        help="VOC list name under ImageSets/Segmentation or a list file (default: train_aug, "
        "falling back to train when absent); with --coco-json a list file restricts the ids",
    )
    parser.add_argument(
        "--source",
        choices=("masks", "xml"),
        default="masks",
        help="VOC: read classes from masks or XML",
    )
    parser.add_argument(
        "--key-type",
        choices=("str", "int"),
        default="str",
        help="id keys as strings (2007_000032: psa, SEAM, MCTformer, ToCo; default) or "
        "integers (2007000032: IRN's voc12/cls_labels.npy)",
    )
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the label table and write it."""
    import numpy as np

    from seedkit.data import make_cls_labels, make_coco_cls_labels, read_id_list, save_cls_labels

    check_output_file("--out", args.out)
    if args.coco_json is not None:
        ids = None if args.list == "train_aug" else read_id_list(None, args.list)
        labels = make_coco_cls_labels(args.coco_json, ids=ids, skip_empty=ids is None)
    else:
        ids = read_id_list(args.voc_root, args.list)
        labels = make_cls_labels(args.voc_root, ids, source=args.source)
    if not labels:
        source = args.coco_json if args.coco_json is not None else args.voc_root
        raise DataError(
            source,
            "at least one image with a class label"
            + (" among the ids of --list" if args.list != "train_aug" else ""),
            "none; nothing written",
        )
    path = save_cls_labels(args.out, labels, key_type=args.key_type)
    counts = np.stack(list(labels.values())).sum(axis=0) if labels else np.zeros(0)
    print(f"wrote {len(labels)} labels ({int(counts.sum())} image-class pairs) to {path}")
    return 0
