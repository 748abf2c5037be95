"""Stage 3 of the WSSS pipeline: train a segmentation network on pseudo masks, evaluate on val.

Reads stage 2's ``masks/<id>.png`` (255 ignored), trains torchvision's
DeepLabV3 with cross-entropy, and evaluates on the validation list against the
ground truth with multi-scale + flip inference (optionally a dense CRF),
reporting per-class IoU. Training resumes from its checkpoint; a finished
model is reused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from seedkit.engine.checkpoint import load_checkpoint
from seedkit.engine.config import StageConfig, _check_choice
from seedkit.engine.datasets import check_evaluation_list, class_names_for, gt_dir
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.loop import MODEL_FORMAT, Trainer, total_steps
from seedkit.engine.run import RunFolder, dataset_digest, folder_fingerprint
from seedkit.errors import InvalidValueError, RunConflictError
from seedkit.files import atomic_write, remove_stale_temporaries

__all__ = ["DEMO_SEGMENTATION", "SegmentationStageConfig", "run_segmentation_stage"]

SEGMENTATION_MODEL = "segmentation.pt"


@dataclass
class SegmentationStageConfig(StageConfig):
    """Everything that determines a stage-3 run; saved as ``OUT/config.json``.

    The defaults follow the DeepLab recipes the WSSS papers use for their final
    numbers (SGD poly lr 0.01 with a 10x head, wd 1e-4, batch 16, 512 crops of
    images rescaled 0.5-2x, about 30k iterations on train_aug, evaluation at
    scales 0.5-1.75 with flip). ``backbone`` / ``pretrained`` / ``checkpoint_path``
    are the timm encoder of ``architecture="deeplabv3_timm"`` (the torchvision
    architectures bring their own backbone; ``pretrained`` then loads torchvision's
    ImageNet weights and ``checkpoint_path`` a local backbone state dict).
    """

    STAGE: ClassVar[str] = "segmentation"
    AFTER_TRAINING: ClassVar[frozenset[str]] = frozenset(
        {"eval_split", "eval_limit", "eval_scales", "flip", "crf", "save_predictions"}
    )
    INPUT_PATHS: ClassVar[frozenset[str]] = frozenset({"checkpoint_path", "mask_dir"})

    mask_dir: str = "runs/pseudo/masks"
    out: str = "runs/segmentation"
    eval_split: str | None = "val"
    architecture: str = "deeplabv3_resnet50"
    backbone: str = "resnet50"
    output_stride: int | None = 16
    image_size: int = 512
    resize_long: tuple[int, int] | None = (256, 1000)
    batch_size: int = 16
    max_steps: int | None = 30000
    weight_decay: float = 1e-4
    eval_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    flip: bool = True
    crf: bool = False
    save_predictions: bool = False
    checkpoint_every: int = 500

    def check_stage(self) -> None:
        """Choices and ranges of stage 3's own fields."""
        from seedkit.segmentation import SEGMENTATION_ARCHITECTURES

        _check_choice("architecture", self.architecture, tuple(SEGMENTATION_ARCHITECTURES))
        if self.eval_split is None:
            raise InvalidValueError("eval_split", "a list name or file", None)
        if not self.eval_scales or not all(
            isinstance(v, (int, float)) and v > 0 for v in self.eval_scales
        ):
            raise InvalidValueError("eval_scales", "one or more scales > 0", self.eval_scales)


#: Stage-3 settings of the built-in demo: DeepLabV3's head on the stage-1 encoder at 128 px
#: (the pipeline sets ``backbone`` and ``checkpoint_path`` to the stage-1 model's).
DEMO_SEGMENTATION: dict[str, Any] = {
    "architecture": "deeplabv3_timm",
    "train_split": "train",
    "image_size": 128,
    "resize_long": (112, 192),
    "batch_size": 8,
    "max_steps": 600,
    "optimizer": "adamw",
    "lr": 5e-4,
    "head_lr_mult": 1.0,
    "schedule": "cosine",
    "warmup_steps": 10,
    "eval_scales": (0.75, 1.0, 1.25),
    "checkpoint_every": 200,
    "num_workers": 0,
}


def run_segmentation_stage(
    config: SegmentationStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool = False,
    overwrite: bool = False,
    *,
    stop_after_steps: int | None = None,
) -> dict[str, Any] | None:
    """Train on the pseudo masks, evaluate on ``eval_split``; write ``OUT/results.json``.

    Every training id's image and pseudo mask and every evaluated id's image and
    ground truth are checked first. A finished run of the same settings (and the
    same pseudo masks and starting weights) in ``OUT`` is reused; the run folder
    rules are :class:`~seedkit.engine.RunFolder`'s.

    Args:
        config: stage settings (validated here).
        context: distributed context (training is DDP when several processes
            run; evaluation runs on rank 0).
        voc_root: the ``VOC2012`` folder (or a VOC-layout view of COCO).
        resume: continue the run in ``OUT``.
        overwrite: delete the run in ``OUT`` first.
        stop_after_steps: testing aid; see :meth:`~seedkit.engine.Trainer.fit`.

    Returns:
        ``{"miou", "iou", "per_class", "num_images", ..., "provenance"}`` on rank 0,
        else ``None``.
    """
    from seedkit.data import TrainTransform, VOCSegmentation, collate, resolve_voc_root
    from seedkit.segmentation import create_segmentation_model, evaluate_segmentation

    config.validate()
    root = resolve_voc_root(voc_root)
    names = class_names_for(config.num_classes)
    mask_dir = Path(config.mask_dir).resolve()
    dataset = VOCSegmentation(
        root,
        config.train_split,
        transform=TrainTransform(config.image_size, resize_long=config.resize_long),
        with_masks=True,
        mask_dir=mask_dir,
        seed=config.seed,
        class_names=names[1:],
    )
    dataset.check_files(decode_masks=False)
    eval_ids = check_evaluation_list(root, config.eval_split, config.num_classes, config.eval_limit)
    run = RunFolder(
        config,
        context,
        SEGMENTATION_MODEL,
        ("results.json", "table.txt", "predictions"),
        inputs={"train_data": dataset_digest(dataset), "masks": folder_fingerprint(mask_dir)},
        total_steps=total_steps(config, len(dataset)),
    )
    plan = run.prepare(resume=resume, overwrite=overwrite)
    torch.manual_seed(config.seed)
    model = create_segmentation_model(
        config.architecture,
        config.num_classes + 1,
        pretrained_backbone=config.pretrained,
        backbone_checkpoint=config.checkpoint_path,
        encoder=config.backbone,
        output_stride=config.output_stride,
        checkpoint_classes=config.num_classes,
        **config.timm_kwargs,
    )
    if plan.train:
        trainer = Trainer(model, config, context, len(dataset))

        def step(batch: dict[str, Any], info: Any) -> torch.Tensor:
            logits = trainer.wrapped(batch["image"])
            return F.cross_entropy(logits, batch["mask"], ignore_index=255)

        torch.manual_seed(config.seed)
        trainer.fit(
            dataset,
            step,
            run,
            collate=collate,
            resume=plan.resume,
            stop_after_steps=stop_after_steps,
            desc="train segmentation",
            log_start={"stage": "segmentation", "architecture": config.architecture},
        )
        trainer.save_model(run)
    else:
        model = model.to(context.device)
        state = load_checkpoint(run.model_path, map_location=context.device, required=("model",))
        if state.get("format") != MODEL_FORMAT:
            raise RunConflictError(
                run.model_path, "is not a model file of this seedkit", hint="pass `overwrite`"
            )
        model.load_state_dict(state["model"])
    if not context.is_main:
        return None
    val = VOCSegmentation(
        root, eval_ids, with_masks=True, mask_dir=gt_dir(root).name, class_names=names[1:]
    )
    predictions = run.out / "predictions"
    if config.save_predictions and predictions.is_dir():  # this evaluation's, nothing older
        for old in predictions.glob("*.png"):
            old.unlink()
        remove_stale_temporaries(predictions)
    result = evaluate_segmentation(
        model,
        val,
        config.num_classes + 1,
        scales=config.eval_scales,
        flip=config.flip,
        crf=config.crf,
        device=context.device,
        class_names=names,
        progress=config.progress,
        pred_dir=str(predictions) if config.save_predictions else None,
    )
    from seedkit.engine.seed_stage import provenance

    results = {
        **result.to_json_dict(),
        "split": config.eval_split,
        "scales": list(config.eval_scales),
        "flip": config.flip,
        "crf": config.crf,
        "architecture": config.architecture,
        "provenance": provenance(run),
    }
    atomic_write(
        run.out / "results.json",
        (json.dumps({"segmentation": results}, indent=2) + "\n").encode(),
    )
    atomic_write(run.out / "table.txt", (result.format_table() + "\n").encode())
    return results
