"""Stage 3 of the WSSS pipeline: a segmentation network trained on the pseudo masks.

DeepLabV3 (torchvision's, or its head on a timm encoder), cross-entropy on stage 2's
masks (255 ignored), evaluated on val with multi-scale + flip inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seedkit.engine.config import SEGMENTATION, SegmentationStageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.run import RunFolder, dataset_digest, files_digest
from seedkit.engine.stages import (
    Stage,
    TrainingState,
    check_network,
    class_names_for,
    evaluation_digest,
    evaluation_list,
    run_stage,
)
from seedkit.errors import DataFileError, InvalidValueError
from seedkit.files import ContentDigests, remove_stale_temporaries

__all__ = ["SEGMENTATION_STAGE", "SegmentationStage", "run_segmentation_stage"]


def _dataset(config: SegmentationStageConfig, voc_root: Any, transform: Any = None) -> Any:
    from seedkit.data import VOCSegmentation

    mask_dir = Path(config.mask_dir).resolve()
    if not mask_dir.is_dir():
        raise DataFileError(mask_dir, "pseudo-mask folder", "run stage 2 first (--stages 2,3)")
    return VOCSegmentation(
        voc_root, config.train_split, transform=transform, with_masks=True, mask_dir=mask_dir,
        seed=config.seed, class_names=class_names_for(config.num_classes)[1:],
    )  # fmt: skip


def build_segmentation_model(
    config: SegmentationStageConfig, weights: bool = True
) -> torch.nn.Module:
    """The segmentation network of ``config`` (see ``create_segmentation_model``)."""
    from seedkit.segmentation import create_segmentation_model

    timm = config.architecture == "deeplabv3_timm"
    return create_segmentation_model(
        config.architecture, config.num_classes + 1,
        pretrained_backbone=config.pretrained and weights,
        backbone_checkpoint=config.checkpoint_path if weights else None,
        encoder=config.backbone or "resnet50",
        output_stride=(config.output_stride or 16) if timm else None,
        checkpoint_classes=config.num_classes, **config.timm_kwargs,
    )  # fmt: skip


class SegmentationTrainingState(TrainingState):
    """The segmentation network's training: cross-entropy on the pseudo masks (255 ignored)."""

    def training_step(self, batch: dict[str, Any], info: Any) -> torch.Tensor:
        """The cross-entropy of one micro-batch."""
        logits = self.trainer.wrapped(batch["image"])
        return F.cross_entropy(logits, batch["mask"], ignore_index=255)


class SegmentationStage(Stage):
    """Stage 3: the segmentation network and its evaluation on ``eval_split``."""

    name = SEGMENTATION
    model_file = "segmentation.pt"
    owned = ("results.json", "table.txt", "predictions")

    def check_settings(self, config: Any, context: DistributedContext, produced: bool) -> None:
        """The network: torchvision's or a timm encoder's settings, its starting weights."""
        torchvision = config.architecture != "deeplabv3_timm"
        for name in ("backbone", "output_stride") if torchvision else ():
            if getattr(config, name) is not None:
                raise InvalidValueError(
                    name, f"None for torchvision's {config.architecture} (deeplabv3_timm only)",
                    getattr(config, name),
                )  # fmt: skip
        if config.checkpoint_path is not None and produced:
            config = config.replace(checkpoint_path=None)  # an earlier stage writes it
        model = check_network(config, context, build_segmentation_model)
        family = getattr(getattr(model.network, "backbone", None), "family", "cnn")
        if config.output_stride is not None and family == "vit":
            raise InvalidValueError("output_stride", "None for a ViT encoder", config.output_stride)

    def check_data(self, config: Any, voc_root: Any, produced: bool) -> None:
        """The training images and pseudo masks (unless still to be made), the ground truth."""
        if not produced:
            _dataset(config, voc_root).check_files(decode_masks=False)
        evaluation_list(config, voc_root, check=True)

    def inputs(self, config: Any, voc_root: Any, digests: ContentDigests) -> dict[str, Any]:
        """The training images and labels, the pseudo masks and the starting weights."""
        dataset = _dataset(config, voc_root)
        masks = [dataset.mask_path(i) or Path(config.mask_dir) / f"{i}.png" for i in dataset.ids]
        train = dataset_digest(dataset, digests)
        return {"train_data": train, "masks": files_digest(masks, digests)}

    def build_model(self, config: Any, weights: bool = True) -> torch.nn.Module:
        """The segmentation network."""
        return build_segmentation_model(config, weights)

    def training(self, config: Any, context: DistributedContext, voc_root: Any) -> tuple[Any, Any]:
        """Augmented crops of the training images with their pseudo masks, and the network."""
        from seedkit.data import TrainTransform

        transform = TrainTransform(config.image_size, resize_long=config.resize_long)
        dataset = _dataset(config, voc_root, transform)
        model = build_segmentation_model(config)
        return dataset, SegmentationTrainingState(model, config, context, len(dataset))

    def produce(
        self, config: Any, context: DistributedContext, voc_root: Any, state: Any, run: RunFolder
    ) -> dict[str, Any] | None:
        """Evaluate on ``eval_split`` (rank 0): ``table.txt``, optional predictions, results."""
        from seedkit.files import atomic_write
        from seedkit.segmentation import evaluate_segmentation

        if not context.is_main:
            return None
        val = evaluation_list(config, voc_root)
        predictions = run.out / "predictions"
        if config.save_predictions and predictions.is_dir():  # this evaluation's, nothing older
            for old in predictions.glob("*.png"):
                old.unlink()
            remove_stale_temporaries(predictions)
        result = evaluate_segmentation(
            state.model, val, config.num_classes + 1, scales=config.eval_scales, flip=config.flip,
            crf=config.crf, device=context.device, class_names=class_names_for(config.num_classes),
            progress=config.progress,
            pred_dir=str(predictions) if config.save_predictions else None,
        )  # fmt: skip
        atomic_write(run.out / "table.txt", (result.format_table() + "\n").encode())
        return {
            "segmentation": {
                **result.to_json_dict(),
                "split": config.eval_split,
                "scales": list(config.eval_scales),
                "flip": config.flip,
                "crf": config.crf,
                "architecture": config.architecture,
            }
        }

    def result_inputs(
        self, config: Any, voc_root: Any, run: RunFolder, digests: ContentDigests
    ) -> dict[str, Any]:
        """The model, its training inputs and the evaluated images and ground truth."""
        val = evaluation_list(config, voc_root)
        return {
            **super().result_inputs(config, voc_root, run, digests),
            "eval_data": evaluation_digest(val, digests),
        }


#: The segmentation stage (stage 3).
SEGMENTATION_STAGE = SegmentationStage()


def run_segmentation_stage(
    config: SegmentationStageConfig,
    context: DistributedContext,
    voc_root: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    **hooks: Any,
) -> dict[str, Any] | None:
    """Train on the pseudo masks, evaluate on ``eval_split``; write ``OUT/results.json``.

    :func:`~seedkit.engine.run_stage` of :data:`SEGMENTATION_STAGE` (its arguments;
    ``voc_root`` defaults to ``config.voc_root``): every training image and pseudo
    mask and every evaluated image and ground truth are checked first; a finished
    run of the same settings and inputs (by content) is reused.

    Returns:
        ``{"miou", "iou", "per_class", ..., "provenance"}`` on rank 0, else ``None``.
    """
    root = voc_root or config.voc_root
    found = run_stage(SEGMENTATION_STAGE, config, context, root, resume, overwrite, **hooks)
    return None if found is None else {**found["segmentation"], "provenance": found["provenance"]}
