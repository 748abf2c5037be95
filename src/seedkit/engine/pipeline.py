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
from seedkit.errors import (
    DataError,
    DataFileError,
    InvalidValueError,
    RunConflictError,
    SeedkitError,
)
from seedkit.files import atomic_write
from seedkit.segmentation.model import SEGMENTATION_ARCHITECTURES

__all__ = [
    "PSEUDO_MASK_FLAGS",
    "SEGMENTATION_FLAGS",
    "LaterStages",
    "add_pipeline_arguments",
    "ensure_stage_seeds",
    "name_flags",
    "parse_stages",
    "prepare_later_stages",
    "pseudo_mask_config",
    "run_later_stages",
    "segmentation_config",
    "update_results",
]

#: Stage-2 settings and the flags that set them (for error messages).
PSEUDO_MASK_FLAGS = {
    "method": "--pm-method",
    "backbone": "--pm-backbone",
    "max_steps": "--pm-steps",
    "batch_size": "--pm-batch-size",
    "image_size": "--pm-image-size",
    "train_split": "--pm-split",
    "fg_threshold": "--fg-threshold",
    "bg_threshold": "--bg-threshold",
    "beta": "--beta",
    "exp_times": "--exp-times",
    "walk_bg_threshold": "--walk-bg-threshold",
    "crf": "--pm-crf",
    "eval_limit": "--eval-limit",
    "num_workers": "--num-workers",
}
#: Stage-3 settings and the flags that set them.
SEGMENTATION_FLAGS = {
    "architecture": "--seg-arch",
    "backbone": "--seg-backbone",
    "checkpoint_path": "--seg-checkpoint-path",
    "pretrained": "--seg-pretrained",
    "max_steps": "--seg-steps",
    "batch_size": "--seg-batch-size",
    "image_size": "--seg-image-size",
    "lr": "--seg-lr",
    "eval_scales": "--seg-eval-scales",
    "eval_split": "--seg-eval-split",
    "crf": "--seg-crf",
    "num_workers": "--num-workers",
}
_RUN_FLAGS = {"resume": "--resume", "overwrite": "--overwrite", "out": "--out"}


def name_flags(error: SeedkitError, names: dict[str, str], stage: str = "") -> SeedkitError:
    """The same error with settings named by their command-line flags (for the examples).

    Settings without a flag keep their name, prefixed with ``stage`` (e.g. ``"stage 2 "``).
    """

    def name(setting: str) -> str:
        return names.get(setting, _RUN_FLAGS.get(setting, f"{stage}{setting}"))

    if isinstance(error, RunConflictError):
        renamed = [(name(n), old, new) for n, old, new in error.differences]
        hint = error.hint
        for setting in {**names, **_RUN_FLAGS}:
            hint = hint.replace(f"`{setting}`", f"`{name(setting)}`")
        return RunConflictError(error.path, error.problem, renamed, hint)
    if type(error) is InvalidValueError:
        parts = [name(part.strip()) for part in error.argument.split("/")]
        return InvalidValueError(" / ".join(parts), error.expected, error.actual)
    return error


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
        "--pm-crf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="dense CRF after the walk",
    )
    group = parser.add_argument_group("stage 3: segmentation")
    group.add_argument(
        "--seg-arch",
        choices=SEGMENTATION_ARCHITECTURES,
        help="torchvision DeepLabV3, or deeplabv3_timm: its head on a timm encoder "
        "(--seg-backbone)",
    )
    group.add_argument(
        "--seg-backbone",
        "--seg-encoder",
        dest="seg_backbone",
        help="timm encoder of deeplabv3_timm (default resnet50; demo: the stage-1 backbone)",
    )
    group.add_argument(
        "--seg-checkpoint-path",
        "--seg-backbone-checkpoint",
        dest="seg_checkpoint_path",
        help="local backbone weights; for deeplabv3_timm also a stage-1 model.pt "
        "(demo: the stage-1 model)",
    )
    group.add_argument("--seg-steps", type=int)
    group.add_argument("--seg-batch-size", type=int)
    group.add_argument("--seg-image-size", type=int)
    group.add_argument("--seg-lr", type=float)
    group.add_argument(
        "--seg-pretrained",
        "--seg-pretrained-backbone",
        dest="seg_pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ImageNet backbone weights (torchvision's or timm's; downloads once)",
    )
    group.add_argument(
        "--seg-eval-scales", type=float, nargs="+", help="default 0.5 .. 1.75 (demo 0.75 1 1.25)"
    )
    group.add_argument("--seg-eval-split", help="default val")
    group.add_argument(
        "--seg-crf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="dense CRF on the predictions",
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
        train_split="train" if demo else "train_aug",
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
        ("pm_split", "train_split"),
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
    try:
        return dataclasses.replace(config, **overrides).validate()
    except InvalidValueError as error:
        raise name_flags(error, PSEUDO_MASK_FLAGS, "stage-2 ") from None


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
            backbone=seed_config.backbone,
            timm_kwargs=dict(seed_config.timm_kwargs),
            output_stride=seed_config.output_stride,
            checkpoint_path=str(Path(seed_config.out) / MODEL_NAME),
        )
    overrides: dict[str, Any] = {}
    for flag, name in (
        ("seg_arch", "architecture"),
        ("seg_backbone", "backbone"),
        ("seg_checkpoint_path", "checkpoint_path"),
        ("seg_batch_size", "batch_size"),
        ("seg_image_size", "image_size"),
        ("seg_lr", "lr"),
        ("seg_pretrained", "pretrained"),
        ("seg_eval_split", "eval_split"),
        ("seg_crf", "crf"),
        ("num_workers", "num_workers"),
    ):
        _set(overrides, name, getattr(args, flag, None))
    if getattr(args, "seg_steps", None) is not None:
        overrides.update(max_steps=args.seg_steps, epochs=None)
    if getattr(args, "seg_eval_scales", None):
        overrides["eval_scales"] = tuple(args.seg_eval_scales)
    if getattr(args, "eval_limit", None) is not None:
        overrides["eval_limit"] = args.eval_limit
    try:
        return dataclasses.replace(config, **overrides).validate()
    except InvalidValueError as error:
        raise name_flags(error, SEGMENTATION_FLAGS, "stage-3 ") from None


def ensure_stage_seeds(
    seed_config: SeedStageConfig, context: DistributedContext, voc_root: str, split: str
) -> Path:
    """Write the stage-1 seeds of ``split`` that are missing, with the stage-1 model.

    Stage 1 writes seeds for its evaluation list (VOC ``train``); the pseudo
    masks of stage 2 are usually wanted for ``train_aug``. Seed files of this
    model and inference settings are kept, others deleted first.

    Returns:
        The seeds folder.
    """
    from seedkit.data import InferenceTransform, VOCSegmentation
    from seedkit.engine.datasets import class_names_for
    from seedkit.engine.seed_stage import ensure_seeds

    names = class_names_for(seed_config.num_classes)
    dataset = VOCSegmentation(
        voc_root, split, transform=InferenceTransform(), with_masks=False, class_names=names[1:]
    )
    return ensure_seeds(seed_config, context, dataset)


def update_results(path: Path, **entries: Any) -> dict[str, Any]:
    """Add ``entries`` to the JSON document at ``path`` (created if absent), atomically."""
    document = json.loads(path.read_text()) if path.is_file() else {}
    document.update(entries)
    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode())
    return document


@dataclasses.dataclass
class LaterStages:
    """The validated configs of stages 2 and 3 of one command (``None``: not run)."""

    pseudo_masks: PseudoMaskStageConfig | None
    segmentation: SegmentationStageConfig | None


def prepare_later_stages(
    args: argparse.Namespace,
    stages: list[int],
    demo: bool,
    out: Path,
    seed_config: SeedStageConfig,
    voc_root: str,
) -> LaterStages:
    """Build and check stages 2 and 3 before anything trains.

    Their configs are validated (errors name the flags) and the images of stage 2's
    list and the images and ground truth of stage 3's evaluation list are checked.
    """
    from seedkit.data import VOCSegmentation
    from seedkit.engine.datasets import check_evaluation_list, class_names_for

    pm_config = pseudo_mask_config(
        args, demo, out, Path(seed_config.out) / "seeds", seed_config, None
    )
    seg_config = segmentation_config(
        args, demo, out, Path(pm_config.out) / "masks", seed_config, pm_config.train_split
    )
    names = class_names_for(seed_config.num_classes)
    if 2 in stages:
        VOCSegmentation(
            voc_root, pm_config.train_split, with_masks=False, class_names=names[1:]
        ).check_files()
    if 3 in stages:
        check_evaluation_list(
            voc_root, seg_config.eval_split, seg_config.num_classes, seg_config.eval_limit
        )
    return LaterStages(
        pm_config if 2 in stages or 3 in stages else None, seg_config if 3 in stages else None
    )


def _seed_threshold(seed_config: SeedStageConfig) -> float | None:
    """The best threshold of the stage-1 results, if they belong to the stage-1 model."""
    run_path = Path(seed_config.out) / "run.json"
    results_path = Path(seed_config.out) / "results.json"
    if not results_path.is_file() or not run_path.is_file():
        return None
    results = json.loads(results_path.read_text())
    model = json.loads(run_path.read_text()).get("model")
    recorded = results.get("provenance", {}).get("model")
    if model is None or recorded != model:
        raise DataError(
            results_path,
            "stage-1 results of the stage-1 model",
            "results of another model; run stage 1 again (--stages 1)",
        )
    return results.get("seeds", {}).get("threshold")


def run_later_stages(
    args: argparse.Namespace,
    stages: list[int],
    demo: bool,
    out: Path,
    seed_config: SeedStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool,
    overwrite: bool = False,
    later: LaterStages | None = None,
) -> dict[str, Any]:
    """Run stages 2 and/or 3 from the seed run ``seed_config.out``; update ``OUT/results.json``.

    With ``resume``, a stage whose folder holds no run yet starts from scratch.

    Returns:
        ``{"pseudo_masks": ..., "segmentation": ...}`` for the stages run (rank 0).
    """
    from seedkit.engine.run import has_run

    later = later or prepare_later_stages(args, stages, demo, out, seed_config, voc_root)
    results: dict[str, Any] = {}
    seed_results = Path(seed_config.out) / "results.json"
    pm_config = later.pseudo_masks
    assert pm_config is not None
    threshold = _seed_threshold(seed_config)
    if threshold is not None:
        pm_config = dataclasses.replace(pm_config, seed_threshold=threshold)
    if 2 in stages:
        ensure_stage_seeds(seed_config, context, voc_root, pm_config.train_split)
        if context.is_main:
            print(
                f"\n[stage 2] pseudo masks ({pm_config.method}, {pm_config.backbone})"
                f" -> {pm_config.out}",
                flush=True,
            )
        try:
            pm = run_pseudo_mask_stage(
                pm_config,
                context,
                voc_root,
                resume=resume and has_run(pm_config.out),
                overwrite=overwrite,
            )
        except (RunConflictError, InvalidValueError) as error:
            raise name_flags(error, PSEUDO_MASK_FLAGS, "stage-2 ") from None
        if pm is not None:
            results["pseudo_masks"] = pm
            if "miou" in pm:
                print(f"pseudo-mask mIoU on {pm_config.eval_split}: {pm['miou']:.2f}", flush=True)
    if 3 in stages:
        seg_config = later.segmentation
        assert seg_config is not None
        mask_dir = Path(seg_config.mask_dir)
        if not mask_dir.is_dir():
            raise DataFileError(
                mask_dir, "stage-2 pseudo masks", "run stage 2 first (--stages 2,3)"
            )
        if context.is_main:
            print(
                f"\n[stage 3] segmentation ({seg_config.architecture}) -> {seg_config.out}",
                flush=True,
            )
        try:
            seg = run_segmentation_stage(
                seg_config,
                context,
                voc_root,
                resume=resume and has_run(seg_config.out),
                overwrite=overwrite,
            )
        except (RunConflictError, InvalidValueError) as error:
            raise name_flags(error, SEGMENTATION_FLAGS, "stage-3 ") from None
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
