"""The WSSS pipeline on COCO 2014 (80 classes): seeds -> pseudo masks -> segmentation.

    python examples/train_coco.py --coco-root data/coco --stages 1,2,3 --out runs/coco

``--coco-root`` holds ``train2014/``, ``val2014/`` and
``annotations/instances_{train,val}2014.json``. On first use the script builds
a VOC-layout view of it under ``OUT/coco_voc`` (image symlinks, masks rendered
once from the annotations with pycocotools, ``train.txt`` / ``val.txt`` of the
images with at least one annotation, and an 80-class ``cls_labels.npy``), then
runs the same driver and stages as ``examples/train_voc.py``, with the same
flags: seeds on train (evaluated on train, in ``OUT/<method>``), pseudo masks for
train (evaluated on train), DeepLabV3 trained on them and evaluated on val.

Settings (docs/pipeline.rst): stage 1 uses the MCTformer-style recipe (DeiT-S,
AdamW, cosine) with 80 classes (``--recipe mctformer-v2`` / ``mctformer-v2-usage``:
MCTformer-V2's multi-class-token model, as MCTformer's COCO run); stage 2 IRN's
affinity settings; stage 3 DeepLabV3-ResNet-101. ``--limit-images N`` keeps the
first N images of each split for a quick trial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import seedkit
from seedkit.engine.pipeline import CommandParser, DataAdapter, add_command_arguments, run_command
from seedkit.engine.run import setting_differences
from seedkit.errors import DataFileError, RunConflictError

PROG = "train_coco.py"
SPLITS = {"train": "train2014", "val": "val2014"}


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--coco-root", required=True, help="folder with train2014/, val2014/, annotations/"
    )
    parser.add_argument(
        "--limit-images", type=int, help="use only the first N images of each split"
    )
    add_command_arguments(parser, skip=("voc_root",))
    return parser


def build_voc_view(
    coco_root: Path, view: Path, limit: int | None, context, overwrite: bool
) -> Path:
    """Write (once) the VOC-layout view of COCO 2014 that the stages read; return its root.

    A view of another ``--coco-root`` or ``--limit-images`` is refused (``--overwrite``
    writes it again). Every input is checked before anything is written.
    """
    from seedkit.data import (
        atomic_write_bytes,
        make_coco_cls_labels,
        render_coco_masks,
        save_cls_labels,
    )
    from seedkit.data.coco import load_coco

    marker = view / "cls_labels.npy"
    record_path = view / "view.json"
    wanted = {"coco_root": str(coco_root.resolve()), "limit_images": limit}
    recorded = json.loads(record_path.read_text()) if record_path.is_file() else {}
    flags = {"coco_root": "--coco-root", "limit_images": "--limit-images"}
    differences = [
        (flags.get(key, key), before, now)
        for key, before, now in setting_differences(recorded, wanted)
    ]
    if marker.is_file() and differences and not overwrite:
        raise RunConflictError(
            view,
            "holds a COCO view of other settings",
            differences,
            "pass --overwrite to write it again (and retrain), or choose another --out",
        )
    if context.is_main and (differences or not marker.is_file()):
        sources = {}
        for split, folder in SPLITS.items():
            image_dir = coco_root / folder
            if not image_dir.is_dir():
                raise DataFileError(
                    image_dir, "COCO image folder", "expected train2014/ and val2014/"
                )
            annotations = coco_root / "annotations" / f"instances_{folder}.json"
            sources[split] = (image_dir, load_coco(annotations))
        if view.exists():
            shutil.rmtree(view)
        labels = {}
        for split, (image_dir, coco) in sources.items():
            table = make_coco_cls_labels(coco, skip_empty=True)
            ids = sorted(table)[:limit] if limit else sorted(table)
            print(
                f"COCO {split}: {len(ids)} images; masks -> {view / 'SegmentationClass'}",
                flush=True,
            )
            render_coco_masks(coco, image_dir, view / "SegmentationClass", ids=ids)
            files = {Path(info["file_name"]).stem: info["file_name"] for info in coco.imgs.values()}
            (view / "JPEGImages").mkdir(parents=True, exist_ok=True)
            for image_id in ids:
                link = view / "JPEGImages" / f"{image_id}.jpg"
                target = (image_dir / files[image_id]).resolve()
                try:
                    link.symlink_to(target)
                except OSError:
                    atomic_write_bytes(link, target.read_bytes())
                labels[image_id] = table[image_id]
            atomic_write_bytes(
                view / "ImageSets" / "Segmentation" / f"{split}.txt",
                ("\n".join(ids) + "\n").encode(),
            )
        atomic_write_bytes(record_path, (json.dumps(wanted) + "\n").encode())
        save_cls_labels(marker, labels)  # last: the view is complete
    context.barrier()
    return view


def coco(args: argparse.Namespace) -> DataAdapter:
    """COCO 2014 through its VOC-layout view: 80 classes, train for seeds and pseudo masks."""
    return DataAdapter(
        PROG,
        lambda command, context: str(
            build_voc_view(
                Path(args.coco_root), command.out / "coco_voc", args.limit_images, context,
                args.overwrite,
            )
        ),
        defaults={
            "seeds": {"num_classes": 80, "train_split": "train", "eval_split": "train"},
            "pseudo_masks": {"train_split": "train"},  # COCO has no train_aug
            "segmentation": {"architecture": "deeplabv3_resnet101"},
        },
        recipe="mctformer-deit-s",
        seed_folder=lambda out, config: out / config.method,
        default_out=lambda config: "runs/coco",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit_images is not None and args.limit_images < 1:
        parser.error(f"--limit-images: expected an integer >= 1, got {args.limit_images}")
    return run_command(args, coco(args))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"seedkit {seedkit.__version__}", flush=True)
    sys.exit(main())
