"""Multi-scale + flip inference and mIoU evaluation of a segmentation network."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from seedkit.cam.inference import multi_scale_flip
from seedkit.checks import check_num_labels
from seedkit.data import class_names_for
from seedkit.errors import InvalidValueError, ShapeError

__all__ = ["SegmentationResult", "evaluate_segmentation", "predict_probs"]


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    image: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
) -> torch.Tensor:
    """Class probabilities averaged over scales and horizontal flips.

    Each view is resized (bilinear), passed through ``model`` (logits), the
    softmax is resized back to the input size and averaged.

    Args:
        model: returns logits ``(B, K, h, w)``; in eval mode.
        image: one normalised image.
        scales: resize factors (DeepLab evaluation commonly uses 0.5 .. 1.75).
        flip: add the mirrored view of every scale.

    Returns:
        ``(K, H, W)`` probabilities summing to 1 per pixel.

    Shape:
        - image: :math:`(3, H, W)`
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ShapeError("image", "(3, H, W)", tuple(image.shape))
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise InvalidValueError("scales", "a non-empty list of positive factors", scales)

    def forward(views: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(views).float(), dim=1)

    return multi_scale_flip(forward, image[None], scales, flip, min_size=8)[0]


@dataclass
class SegmentationResult:
    """Evaluation of a segmentation network (mIoU and IoU in percent)."""

    miou: float
    iou: list[float | None]
    class_names: list[str]
    num_images: int
    confusion: np.ndarray = field(repr=False)

    def to_json_dict(self) -> dict[str, Any]:
        """``{"miou", "iou", "per_class": {name: iou}, "num_images"}``."""
        return {
            "miou": self.miou,
            "iou": self.iou,
            "per_class": dict(zip(self.class_names, self.iou, strict=True)),
            "num_images": self.num_images,
        }

    def format_table(self) -> str:
        """Per-class IoU table."""
        lines = [f"{'class':<16}{'IoU':>8}"]
        lines += [
            f"{name:<16}{'-' if v is None else f'{v:.2f}':>8}"
            for name, v in zip(self.class_names, self.iou, strict=True)
        ]
        lines.append(f"{'mIoU':<16}{self.miou:>8.2f}")
        return "\n".join(lines)


def _percent(iou: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else round(float(v) * 100, 2) for v in iou]


def evaluate_segmentation(
    model: torch.nn.Module,
    dataset: Any,
    num_labels: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
    crf: bool = False,
    crf_params: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    class_names: Sequence[str] | None = None,
    progress: bool = True,
    pred_dir: str | None = None,
    *,
    num_classes: int | None = None,
) -> SegmentationResult:
    """Predict every image of ``dataset`` and compute per-class IoU against its masks.

    Args:
        model: segmentation network (logits), switched to eval mode here.
        dataset: items ``{"id", "image" (3, H, W), "mask" (H, W), 255 ignored}``;
            with ``crf=True`` also ``.image_path(id)`` for the RGB image.
        num_labels: mask labels, background included (21 for VOC).
        scales: inference scales.
        flip: add flipped views.
        crf: refine the probabilities with :func:`~seedkit.refine.dense_crf`.
        crf_params: CRF parameters.
        device: where the model runs.
        class_names: names for the table (default
            :func:`seedkit.data.class_names_for`).
        progress: progress bar.
        pred_dir: also write the predictions as palette PNGs there.
        num_classes: deprecated name of ``num_labels`` (the same count).

    Returns:
        :class:`SegmentationResult`.
    """
    from seedkit.metrics import confusion_matrix, iou_from_confusion

    num_labels = check_num_labels(
        "seedkit.segmentation.evaluate_segmentation", num_labels, num_classes
    )
    names = list(class_names) if class_names is not None else class_names_for(num_labels - 1)
    if len(names) != num_labels:
        raise InvalidValueError("class_names", f"{num_labels} names", len(names))
    was_training = model.training
    model.eval()
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    try:
        for index in tqdm(
            range(len(dataset)), desc="segmentation eval", unit="img", disable=not progress
        ):
            item = dataset[index]
            probs = predict_probs(model, item["image"].to(device), scales, flip)
            probs_np = probs.cpu().numpy()
            if crf:
                from seedkit.data import read_image
                from seedkit.refine import dense_crf

                probs_np = dense_crf(
                    read_image(dataset.image_path(item["id"])), probs_np, **(crf_params or {})
                )
            pred = probs_np.argmax(axis=0)
            gt = np.asarray(item["mask"])
            cm += confusion_matrix(pred, gt, num_labels)
            if pred_dir is not None:
                from pathlib import Path

                from seedkit.data import write_mask_png

                write_mask_png(Path(pred_dir) / f"{item['id']}.png", pred.astype(np.uint8))
    finally:
        model.train(was_training)
    iou, miou = iou_from_confusion(cm)
    return SegmentationResult(
        miou=round(float(miou) * 100, 2),
        iou=_percent(iou),
        class_names=names,
        num_images=len(dataset),
        confusion=cm,
    )
