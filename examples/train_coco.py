"""The WSSS pipeline on COCO 2014 (80 classes): seeds -> pseudo masks -> segmentation.

    python examples/train_coco.py --coco-root data/coco --stages 1,2,3 --out runs/coco

``--coco-root`` holds ``train2014/``, ``val2014/`` and
``annotations/instances_{train,val}2014.json``. On first use the script builds
a VOC-layout view of it under ``OUT/coco_voc`` (image symlinks, masks rendered
once from the annotations with pycocotools, ``train.txt`` / ``val.txt`` of the
images with at least one annotation, and an 80-class ``cls_labels.npy``), then
runs the same three stages as ``examples/train_voc.py``: seeds on train
(evaluated on train), pseudo masks for train (evaluated on train), DeepLabV3
trained on them and evaluated on val.

Settings (documented in docs/pipeline.rst): stage 1 uses the MCTformer-style
recipe (DeiT-S, AdamW, cosine) with 80 classes (``--recipe mctformer-v2`` /
``mctformer-v2-usage``: MCTformer-V2's multi-class-token model, as MCTformer's
COCO run); stage 2 IRN's affinity settings
(ResNet-50, stride 4, radius 5, conf_fg 0.30, conf_bg 0.05, beta 10,
exp_times 8); stage 3 DeepLabV3-ResNet-101. ``--limit-images N`` keeps the
first N images of each split for a quick trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import seedkit
from seedkit.engine import (
    RECIPES,
    SeedStageConfig,
    apply_recipe,
    ensure_writable_directory,
    has_run,
    init_distributed,
    run_seed_stage,
)
from seedkit.engine.pipeline import (
    add_pipeline_arguments,
    name_flags,
    parse_stages,
    prepare_later_stages,
    run_later_stages,
)
from seedkit.engine.run import setting_differences
from seedkit.errors import (
    DataFileError,
    InvalidValueError,
    PretrainedWeightsError,
    RunConflictError,
    SeedkitError,
)

SPLITS = {"train": "train2014", "val": "val2014"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--coco-root", required=True, help="folder with train2014/, val2014/, annotations/"
    )
    parser.add_argument("--out", default="runs/coco", help="output directory")
    parser.add_argument(
        "--recipe", choices=sorted(RECIPES), default="mctformer-deit-s", help="stage-1 settings"
    )
    parser.add_argument(
        "--method", choices=["usage", "cam"], help="default: the recipe's, else usage"
    )
    parser.add_argument("--backbone")
    parser.add_argument("--head", choices=["cam", "mct"], help="default: the recipe's")
    parser.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="timm's ImageNet weights (default: the recipe's; --no-pretrained: none)",
    )
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int)
    length.add_argument("--max-steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument(
        "--eval-limit", type=int, help="evaluate seeds / pseudo masks on the first N train images"
    )
    parser.add_argument("--cam-scales", type=float, nargs="+")
    parser.add_argument("--num-workers", type=int)
    parser.add_argument(
        "--limit-images", type=int, help="use only the first N images of each split"
    )
    parser.add_argument("--seed", type=int, default=0)
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the runs in OUT")
    again.add_argument(
        "--overwrite", action="store_true", help="delete the runs in OUT and start over"
    )
    parser.add_argument("--no-progress", action="store_true")
    add_pipeline_arguments(parser)
    return parser


def build_voc_view(
    coco_root: Path, view: Path, limit: int | None, is_main: bool, context, overwrite: bool
) -> Path:
    """Write (once) the VOC-layout view of COCO 2014 that the stages read; return its root.

    A view of another ``--coco-root`` or ``--limit-images`` is refused (``--overwrite``
    writes it again).
    """
    import json
    import shutil

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
    if is_main and differences and view.exists():
        shutil.rmtree(view)
    if is_main and not marker.is_file():
        labels = {}
        for split, folder in SPLITS.items():
            annotations = coco_root / "annotations" / f"instances_{folder}.json"
            image_dir = coco_root / folder
            if not image_dir.is_dir():
                raise DataFileError(
                    image_dir, "COCO image folder", "expected train2014/ and val2014/"
                )
            coco = load_coco(annotations)
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
                if not link.exists():
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


def seed_config(args: argparse.Namespace, out: Path, voc_root: str) -> SeedStageConfig:
    config = apply_recipe(SeedStageConfig(), args.recipe)
    method = args.method or config.method
    overrides = {
        "num_classes": 80,
        "train_split": "train",
        "eval_split": "train",
        "voc_root": voc_root,
        "out": str(out / method),
        "method": method,
        "seed": args.seed,
    }
    for name in (
        "backbone",
        "head",
        "pretrained",
        "image_size",
        "batch_size",
        "lr",
        "eval_limit",
        "num_workers",
    ):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.epochs is not None:
        overrides.update(epochs=args.epochs, max_steps=None)
    if args.max_steps is not None:
        overrides.update(max_steps=args.max_steps, epochs=None)
    if args.cam_scales:
        overrides["cam_scales"] = tuple(args.cam_scales)
    if args.no_progress:
        overrides["progress"] = False
    try:
        return dataclasses.replace(config, **overrides).validate()
    except InvalidValueError as error:
        flags = {name: "--" + name.replace("_", "-") for name in overrides}
        raise name_flags(error, flags) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.pm_split is None:
        args.pm_split = "train"  # COCO has no train_aug
    if args.seg_arch is None:
        args.seg_arch = "deeplabv3_resnet101"
    context = init_distributed()
    try:
        if args.limit_images is not None and args.limit_images < 1:
            raise InvalidValueError("--limit-images", "an integer >= 1", args.limit_images)
        stages = parse_stages(args.stages)
        out = Path(args.out)
        seed_config(args, out, str(out / "coco_voc"))  # every flag checked before any file
        if context.is_main:
            ensure_writable_directory(out)
        view = build_voc_view(
            Path(args.coco_root),
            out / "coco_voc",
            args.limit_images,
            context.is_main,
            context,
            args.overwrite,
        )
        config = seed_config(args, out, str(view))
        later = None
        if 2 in stages or 3 in stages:  # checked before anything trains
            later = prepare_later_stages(args, stages, False, out, config, str(view))
        folders = [config.out] if 1 in stages else []
        if later is not None:
            folders += [c.out for c in (later.pseudo_masks, later.segmentation) if c is not None]
        if args.resume and not any(has_run(folder) for folder in folders):
            raise RunConflictError(
                out,
                "nothing to resume: no run has started here (no checkpoint.pt, no run.json)",
                hint="run without --resume to start it",
            )
        if 1 in stages:
            if context.is_main:
                print(
                    f"\n[stage 1] {config.method} seeds, {config.backbone} -> {config.out}",
                    flush=True,
                )
            try:
                result = run_seed_stage(
                    config,
                    context,
                    str(view),
                    resume=args.resume and has_run(config.out),
                    overwrite=args.overwrite,
                )
            except (RunConflictError, InvalidValueError) as error:
                flags = {name: "--" + name.replace("_", "-") for name in vars(args)}
                raise name_flags(error, flags) from None
            if result is not None:
                from seedkit.engine.pipeline import update_results

                update_results(out / "results.json", seeds=result["seeds"], method=config.method)
                print(
                    f"seed mIoU: {result['seeds']['miou']:.2f} "
                    f"at threshold {result['seeds']['threshold']:.2f}"
                )
                for message in result["seeds"]["warnings"]:
                    print(f"train_coco.py: warning: {message}", file=sys.stderr)
        if later is not None:
            run_later_stages(
                args,
                stages,
                False,
                out,
                config,
                context,
                str(view),
                args.resume,
                overwrite=args.overwrite,
                later=later,
            )
        if context.is_main:
            print(f"\nresults: {out / 'results.json'}")
    except PretrainedWeightsError as error:
        print(
            f"train_coco.py: error: {error.model_name}: could not load timm's pretrained weights "
            f"({error.reason}); run with --no-pretrained (random initialisation), or point "
            "HF_HOME at a cache that has them",
            file=sys.stderr,
        )
        return 2
    except SeedkitError as error:
        print(f"train_coco.py: error: {error}", file=sys.stderr)
        return 2
    finally:
        context.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"seedkit {seedkit.__version__}", flush=True)
    sys.exit(main())
