"""Stage 3 of the WSSS pipeline: train a segmentation network on pseudo masks, evaluate on val.

Reads stage 2's ``masks/<id>.png`` (255 ignored), trains torchvision's
DeepLabV3 with cross-entropy, and evaluates on the validation list against the
ground truth with multi-scale + flip inference (optionally a dense CRF),
reporting per-class IoU. Training resumes from its checkpoint; a finished
model is reused.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seedkit.engine._loop import class_names_for, gt_dir, train_loop
from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.distributed import DistributedContext
from seedkit.errors import InvalidValueError

__all__ = ["DEMO_SEGMENTATION", "SegmentationStageConfig", "run_segmentation_stage"]

SEGMENTATION_MODEL = "segmentation.pt"


@dataclass
class SegmentationStageConfig:
    """Everything that determines a stage-3 run; saved as ``OUT/config.json``.

    The defaults follow the DeepLab recipes the WSSS papers use for their final
    numbers (SGD poly lr 0.01 with a 10x head, wd 1e-4, batch 16, 512 crops of
    images rescaled 0.5-2x, about 30k iterations on train_aug, evaluation at
    scales 0.5-1.75 with flip); ``epochs`` is derived from the list length.
    """

    mask_dir: str = "runs/pseudo/masks"
    out: str = "runs/segmentation"
    train_split: str = "train_aug"
    eval_split: str = "val"
    num_classes: int = 20
    eval_limit: int | None = None
    architecture: str = "deeplabv3_resnet50"
    # the timm encoder of architecture "deeplabv3_timm", and its output stride
    encoder: str = "resnet50"
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    output_stride: int | None = 16
    pretrained_backbone: bool = False
    backbone_checkpoint: str | None = None
    image_size: int = 512
    resize_long: tuple[int, int] | None = (256, 1000)
    batch_size: int = 16
    epochs: int | None = None
    max_steps: int | None = 30000
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 1e-4
    head_lr_mult: float = 10.0
    schedule: str = "poly"
    warmup_steps: int = 0
    eval_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    flip: bool = True
    crf: bool = False
    save_predictions: bool = False
    seed: int = 0
    num_workers: int = 2
    checkpoint_every: int = 500
    log_every: int = 10
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> SegmentationStageConfig:
        """Check choices and ranges; return ``self``."""
        from seedkit.segmentation import SEGMENTATION_ARCHITECTURES

        if self.architecture not in SEGMENTATION_ARCHITECTURES:
            raise InvalidValueError(
                "architecture", "one of " + ", ".join(SEGMENTATION_ARCHITECTURES), self.architecture
            )
        if (self.epochs is None) == (self.max_steps is None):
            raise InvalidValueError(
                "epochs / max_steps", "exactly one of them", (self.epochs, self.max_steps)
            )
        if not self.eval_scales:
            raise InvalidValueError("eval_scales", "at least one scale", self.eval_scales)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


#: Stage-3 settings of the built-in demo: DeepLabV3's head on the stage-1 encoder at 128 px
#: (the pipeline sets ``encoder`` and ``backbone_checkpoint`` to the stage-1 model's).
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
) -> dict[str, Any] | None:
    """Train on the pseudo masks, evaluate on ``eval_split``; write ``OUT/results.json``.

    Args:
        config: stage settings (validated here).
        context: distributed context (training is DDP when several processes
            run; evaluation runs on rank 0).
        voc_root: the ``VOC2012`` folder (or a VOC-layout view of COCO).
        resume: continue training from ``OUT/checkpoint.pt``, or reuse a
            finished ``OUT/segmentation.pt``.

    Returns:
        ``{"miou", "iou", "per_class", "num_images", ...}`` on rank 0, else ``None``.
    """
    from seedkit.data import (
        TrainTransform,
        VOCSegmentation,
        atomic_write_bytes,
        collate,
        resolve_voc_root,
    )
    from seedkit.engine.config import save_config
    from seedkit.segmentation import create_segmentation_model, evaluate_segmentation

    config.validate()
    out = Path(config.out)
    root = resolve_voc_root(voc_root)
    names = class_names_for(config.num_classes)
    mask_dir = Path(config.mask_dir).resolve()
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.json")  # type: ignore[arg-type]
    torch.manual_seed(config.seed)
    model = create_segmentation_model(
        config.architecture,
        config.num_classes + 1,
        pretrained_backbone=config.pretrained_backbone,
        backbone_checkpoint=config.backbone_checkpoint,
        encoder=config.encoder,
        output_stride=config.output_stride,
        checkpoint_classes=config.num_classes,
        **config.timm_kwargs,
    ).to(context.device)
    if resume and (out / SEGMENTATION_MODEL).is_file():
        model.load_state_dict(
            load_checkpoint(out / SEGMENTATION_MODEL, map_location=context.device)["model"]
        )
    else:
        transform = TrainTransform(config.image_size, resize_long=config.resize_long)
        dataset = VOCSegmentation(
            root,
            config.train_split,
            transform=transform,
            with_masks=True,
            mask_dir=mask_dir,
            seed=config.seed,
            class_names=names[1:],
        )

        def loss_fn(net: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            logits = net(batch["image"].to(context.device))
            return F.cross_entropy(logits, batch["mask"].to(context.device), ignore_index=255)

        train_loop(
            model=model,
            dataset=dataset,
            loss_fn=loss_fn,
            out=out,
            context=context,
            settings=config,
            resume=resume,
            desc="train segmentation",
            collate=collate,
            extra_log={"stage": "segmentation", "architecture": config.architecture},
        )
        if context.is_main:
            save_checkpoint(
                out / SEGMENTATION_MODEL, {"model": model.state_dict(), "config": config.to_dict()}
            )
    context.barrier()
    if not context.is_main:
        return None
    folder = gt_dir(root)
    val = VOCSegmentation(
        root, config.eval_split, with_masks=True, mask_dir=folder, class_names=names[1:]
    )
    if config.eval_limit is not None:
        val.ids = val.ids[: config.eval_limit]
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
        pred_dir=str(out / "predictions") if config.save_predictions else None,
    )
    results = {
        **result.to_json_dict(),
        "split": config.eval_split,
        "scales": list(config.eval_scales),
        "flip": config.flip,
        "crf": config.crf,
        "architecture": config.architecture,
    }
    atomic_write_bytes(
        out / "results.json", (json.dumps({"segmentation": results}, indent=2) + "\n").encode()
    )
    (out / "table.txt").write_text(result.format_table() + "\n")
    return results
