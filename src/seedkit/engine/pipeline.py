"""Glue of the three stages for the example scripts: arguments, configs, seeds, results.

``examples/train_voc.py`` and ``examples/train_coco.py`` share it: stage 1
(:func:`~seedkit.engine.run_seed_stage`) writes ``<seed run>/seeds``, stage 2
(:func:`~seedkit.engine.run_pseudo_mask_stage`) reads them and writes
``OUT/pseudo_masks/masks``, stage 3 (:func:`~seedkit.engine.run_segmentation_stage`)
reads those. Each stage only needs the previous stage's files, so any stage can
be (re)run on its own with ``--stages``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from seedkit.engine.config import SeedStageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.pseudo_mask_stage import (
    DEMO_PSEUDO_MASKS,
    PseudoMaskStageConfig,
    run_pseudo_mask_stage,
)
from seedkit.engine.seed_stage import MODEL_NAME
from seedkit.engine.segmentation_stage import (
    DEMO_SEGMENTATION,
    SegmentationStageConfig,
    run_segmentation_stage,
)
from seedkit.errors import DataFileError, InvalidValueError
from seedkit.segmentation.model import SEGMENTATION_ARCHITECTURES

__all__ = [
    "add_pipeline_arguments",
    "ensure_seeds",
    "parse_stages",
    "pseudo_mask_config",
    "run_later_stages",
    "segmentation_config",
    "update_results",
]


def parse_stages(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (sorted, each of 1, 2, 3).

    Example:
        >>> parse_stages("3,1")
        [1, 3]
    """
    try:
        stages = sorted({int(part) for part in str(text).split(",") if part.strip()})
    except ValueError as error:
        raise InvalidValueError(
            "--stages", "comma-separated stage numbers 1, 2, 3", text
        ) from error
    if not stages or any(s not in (1, 2, 3) for s in stages):
        raise InvalidValueError("--stages", "comma-separated stage numbers 1, 2, 3", text)
    return stages


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--stages`` and the stage-2 / stage-3 options to an example's parser."""
    parser.add_argument(
        "--stages",
        default="1",
        help="stages to run: 1 seeds, 2 pseudo masks, 3 segmentation "
        "(e.g. 1,2,3); each reads the previous stage's files",
    )
    group = parser.add_argument_group("stage 2: pseudo masks")
    group.add_argument(
        "--pm-method",
        choices=["rw", "crf", "threshold"],
        help="random walk on learnt "
        "affinities (default), dense CRF of the seeds, or the seeds at their best threshold",
    )
    group.add_argument("--pm-backbone", help="timm CNN of the affinity network (IRN: resnet50)")
    group.add_argument(
        "--pm-steps", type=int, help="affinity training steps (default: IRN's 3 epochs)"
    )
    group.add_argument("--pm-batch-size", type=int)
    group.add_argument("--pm-image-size", type=int)
    group.add_argument(
        "--pm-split", help="images to make pseudo masks for (default train_aug; demo: train)"
    )
    group.add_argument(
        "--fg-threshold", type=float, help="confident foreground (IRN conf_fg_thres 0.30)"
    )
    group.add_argument(
        "--bg-threshold", type=float, help="confident background (IRN conf_bg_thres 0.05)"
    )
    group.add_argument("--beta", type=float, help="affinity exponent (IRN 10, PSA 8)")
    group.add_argument("--exp-times", type=int, help="2**exp_times walk steps (IRN 8, PSA logt 8)")
    group.add_argument(
        "--walk-bg-threshold", type=float, help="background score of the walk (IRN 0.25)"
    )
    group.add_argument(
        "--pm-crf", action="store_true", default=None, help="dense CRF after the walk"
    )
    group = parser.add_argument_group("stage 3: segmentation")
    group.add_argument(
        "--seg-arch",
        choices=SEGMENTATION_ARCHITECTURES,
        help="torchvision DeepLabV3, or deeplabv3_timm: its head on a timm encoder (--seg-encoder)",
    )
    group.add_argument(
        "--seg-encoder",
        help="timm encoder of deeplabv3_timm (default resnet50; demo: the stage-1 backbone)",
    )
    group.add_argument(
        "--seg-backbone-checkpoint",
        help="local backbone weights; for deeplabv3_timm also a stage-1 model.pt "
        "(demo: the stage-1 model)",
    )
    group.add_argument("--seg-steps", type=int)
    group.add_argument("--seg-batch-size", type=int)
    group.add_argument("--seg-image-size", type=int)
    group.add_argument("--seg-lr", type=float)
    group.add_argument(
        "--seg-pretrained-backbone",
        action="store_true",
        default=None,
        help="torchvision's ImageNet backbone weights (downloads once)",
    )
    group.add_argument(
        "--seg-eval-scales", type=float, nargs="+", help="default 0.5 .. 1.75 (demo 0.75 1 1.25)"
    )
    group.add_argument("--seg-eval-split", help="default val")
    group.add_argument(
        "--seg-crf", action="store_true", default=None, help="dense CRF on the predictions"
    )


def _set(overrides: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        overrides[name] = value


def pseudo_mask_config(
    args: argparse.Namespace,
    demo: bool,
    out: Path,
    seeds_dir: Path,
    seed_config: SeedStageConfig,
    seed_threshold: float | None,
) -> PseudoMaskStageConfig:
    """Stage-2 config: IRN defaults (demo: :data:`DEMO_PSEUDO_MASKS`) < flags."""
    config = PseudoMaskStageConfig(
        seeds_dir=str(seeds_dir),
        out=str(out / "pseudo_masks"),
        split="train" if demo else "train_aug",
        eval_split=seed_config.eval_split,
        num_classes=seed_config.num_classes,
        seed=seed_config.seed,
        pretrained=bool(seed_config.pretrained),
        progress=seed_config.progress,
    )
    if demo:
        config = dataclasses.replace(config, **DEMO_PSEUDO_MASKS)
    overrides: dict[str, Any] = {}
    for flag, name in (
        ("pm_method", "method"),
        ("pm_backbone", "backbone"),
        ("pm_batch_size", "batch_size"),
        ("pm_image_size", "image_size"),
        ("pm_split", "split"),
        ("fg_threshold", "fg_threshold"),
        ("bg_threshold", "bg_threshold"),
        ("beta", "beta"),
        ("exp_times", "exp_times"),
        ("walk_bg_threshold", "walk_bg_threshold"),
        ("pm_crf", "crf"),
    ):
        _set(overrides, name, getattr(args, flag, None))
    if getattr(args, "pm_steps", None) is not None:
        overrides.update(max_steps=args.pm_steps, epochs=None)
    if seed_threshold is not None:
        overrides["seed_threshold"] = seed_threshold
    if getattr(args, "eval_limit", None) is not None:
        overrides["eval_limit"] = args.eval_limit
    if getattr(args, "num_workers", None) is not None:
        overrides["num_workers"] = args.num_workers
    return dataclasses.replace(config, **overrides).validate()


def segmentation_config(
    args: argparse.Namespace,
    demo: bool,
    out: Path,
    mask_dir: Path,
    seed_config: SeedStageConfig,
    train_split: str,
) -> SegmentationStageConfig:
    """Stage-3 config: DeepLab defaults (demo: :data:`DEMO_SEGMENTATION`) < flags."""
    config = SegmentationStageConfig(
        mask_dir=str(mask_dir),
        out=str(out / "segmentation"),
        train_split=train_split,
        num_classes=seed_config.num_classes,
        seed=seed_config.seed,
        progress=seed_config.progress,
    )
    if demo:
        # The demo has no ImageNet weights: the segmentation encoder starts from stage 1's.
        config = dataclasses.replace(
            config,
            **{**DEMO_SEGMENTATION, "train_split": train_split},
            encoder=seed_config.backbone,
            timm_kwargs=dict(seed_config.timm_kwargs),
            output_stride=seed_config.output_stride,
            backbone_checkpoint=str(Path(seed_config.out) / MODEL_NAME),
        )
    overrides: dict[str, Any] = {}
    for flag, name in (
        ("seg_arch", "architecture"),
        ("seg_encoder", "encoder"),
        ("seg_backbone_checkpoint", "backbone_checkpoint"),
        ("seg_batch_size", "batch_size"),
        ("seg_image_size", "image_size"),
        ("seg_lr", "lr"),
        ("seg_pretrained_backbone", "pretrained_backbone"),
        ("seg_eval_split", "eval_split"),
        ("seg_crf", "crf"),
        ("num_workers", "num_workers"),
    ):
        _set(overrides, name, getattr(args, flag, None))
    if getattr(args, "seg_steps", None) is not None:
        overrides.update(max_steps=args.seg_steps, epochs=None)
    if getattr(args, "seg_eval_scales", None):
        overrides["eval_scales"] = tuple(args.seg_eval_scales)
    return dataclasses.replace(config, **overrides).validate()


def ensure_seeds(
    seed_config: SeedStageConfig, context: DistributedContext, voc_root: str, split: str
) -> Path:
    """Write the stage-1 seeds of ``split`` that are missing, with the stage-1 model.

    Stage 1 writes seeds for its evaluation list (VOC ``train``); the pseudo
    masks of stage 2 are usually wanted for ``train_aug``. Existing files are
    kept.

    Returns:
        The seeds folder.
    """
    from seedkit.data import InferenceTransform, VOCSegmentation
    from seedkit.engine._loop import class_names_for

    seeds_dir = Path(seed_config.out) / "seeds"
    names = class_names_for(seed_config.num_classes)
    dataset = VOCSegmentation(
        voc_root, split, transform=InferenceTransform(), with_masks=False, class_names=names[1:]
    )
    if all((seeds_dir / f"{i}.npy").is_file() for i in dataset.ids):
        return seeds_dir
    from seedkit.engine.seed_stage import load_seed_model, write_seeds

    model = load_seed_model(seed_config, context.device)  # raises if stage 1 has not run
    write_seeds(model, dataset, seeds_dir, seed_config, context)
    return seeds_dir


def update_results(path: Path, **entries: Any) -> dict[str, Any]:
    """Add ``entries`` to the JSON document at ``path`` (created if absent), atomically."""
    from seedkit.data import atomic_write_bytes

    document = json.loads(path.read_text()) if path.is_file() else {}
    document.update(entries)
    atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode())
    return document


def run_later_stages(
    args: argparse.Namespace,
    stages: list[int],
    demo: bool,
    out: Path,
    seed_config: SeedStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool,
) -> dict[str, Any]:
    """Run stages 2 and/or 3 from the seed run ``seed_config.out``; update ``OUT/results.json``.

    Returns:
        ``{"pseudo_masks": ..., "segmentation": ...}`` for the stages run (rank 0).
    """
    results: dict[str, Any] = {}
    seed_results = Path(seed_config.out) / "results.json"
    threshold = None
    if seed_results.is_file():
        threshold = json.loads(seed_results.read_text()).get("seeds", {}).get("threshold")
    pm_config = pseudo_mask_config(
        args, demo, out, Path(seed_config.out) / "seeds", seed_config, threshold
    )
    if 2 in stages:
        ensure_seeds(seed_config, context, voc_root, pm_config.split)
        if context.is_main:
            print(
                f"\n[stage 2] pseudo masks ({pm_config.method}, {pm_config.backbone})"
                f" -> {pm_config.out}",
                flush=True,
            )
        pm = run_pseudo_mask_stage(pm_config, context, voc_root, resume=resume)
        if pm is not None:
            results["pseudo_masks"] = pm
            if "miou" in pm:
                print(f"pseudo-mask mIoU on {pm_config.eval_split}: {pm['miou']:.2f}", flush=True)
    if 3 in stages:
        mask_dir = Path(pm_config.out) / "masks"
        if not mask_dir.is_dir():
            raise DataFileError(
                mask_dir, "stage-2 pseudo masks", "run stage 2 first (--stages 2,3)"
            )
        seg_config = segmentation_config(args, demo, out, mask_dir, seed_config, pm_config.split)
        if context.is_main:
            print(
                f"\n[stage 3] segmentation ({seg_config.architecture}) -> {seg_config.out}",
                flush=True,
            )
        seg = run_segmentation_stage(seg_config, context, voc_root, resume=resume)
        if seg is not None:
            results["segmentation"] = seg
            print((Path(seg_config.out) / "table.txt").read_text(), flush=True)
    if context.is_main and results:
        summary = out / "results.json"
        existing = json.loads(summary.read_text()) if summary.is_file() else {}
        if "seeds" not in existing and seed_results.is_file():
            results = {"seeds": json.loads(seed_results.read_text()).get("seeds"), **results}
        update_results(summary, **results)
    return results
