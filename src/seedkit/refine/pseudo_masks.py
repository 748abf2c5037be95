"""Seeds -> pseudo masks: random walk on learnt affinities, dense CRF, or plain threshold.

One index PNG per image (0 background, ``k + 1`` for foreground class ``k``),
written atomically; ids whose PNG exists are skipped, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from seedkit.checks import check_num_labels
from seedkit.errors import InvalidValueError
from seedkit.metrics import as_seed_maps, seed_labels
from seedkit.refine.random_walk import (
    IRN_BETA,
    IRN_EXP_TIMES,
    background_scores,
    local_offsets,
    local_transition,
    random_walk,
)

__all__ = [
    "RandomWalkSettings",
    "evaluate_pseudo_masks",
    "propagate_seeds",
    "pseudo_mask_from_seeds",
    "write_pseudo_masks",
]

METHODS = ("rw", "crf", "threshold")


@dataclass
class RandomWalkSettings:
    """Parameters of the affinity random walk (IRN defaults).

    Attributes:
        beta: affinity exponent (IRN 10, PSA 8).
        exp_times: ``2 ** exp_times`` walk steps (IRN ``exp_times`` 8, PSA ``logt`` 8).
        bg_mode: ``"threshold"`` (constant background score, IRN) or ``"power"``
            (``(1 - max fg)^alpha``, psa).
        bg_threshold: IRN's ``sem_seg_bg_thres`` 0.25.
        alpha: exponent of ``"power"``.
    """

    beta: float = IRN_BETA
    exp_times: int = IRN_EXP_TIMES
    bg_mode: str = "threshold"
    bg_threshold: float = 0.25
    alpha: float = 6.0


def _stack(seeds: dict[int, np.ndarray]) -> tuple[list[int], np.ndarray]:
    keys = sorted(int(k) for k in seeds)
    if not keys:
        return [], np.zeros((0, 1, 1), np.float32)
    return keys, np.stack([np.asarray(seeds[k], dtype=np.float32) for k in keys])


def _probabilities(fg: torch.Tensor, settings: RandomWalkSettings) -> torch.Tensor:
    """``[bg, fg...]`` normalised per pixel (B, 1 + C, h, w)."""
    bg = background_scores(fg, settings.bg_mode, settings.bg_threshold, settings.alpha)
    scores = torch.cat([bg, fg.clamp(min=0)], dim=1)
    return scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def propagate_seeds(
    model: torch.nn.Module,
    image: torch.Tensor,
    seeds: dict[int, np.ndarray],
    settings: RandomWalkSettings | None = None,
) -> tuple[list[int], torch.Tensor]:
    """Random-walk the seeds of one image on the affinities ``model`` predicts.

    The seed maps are area-resized to the affinity grid, a background plane is
    put in front (``settings.bg_mode``), the scores are normalised per cell,
    walked for ``2 ** exp_times`` steps, and the result is bilinearly resized
    back to the image.

    Args:
        model: an :class:`~seedkit.refine.AffinityNet` (``.radius``, ``.stride``,
            ``model(x)`` -> embedding) in eval mode.
        image: the normalised image ``(3, H, W)``, on the model's device.
        seeds: psa dict ``{fg class index: HxW map in [0, 1]}``.
        settings: walk parameters.

    Returns:
        ``(keys, probs)``: the classes in the file and ``(1 + len(keys), H, W)``
        probabilities (background first), summing to 1 per pixel.
    """
    from seedkit.refine.affinity import pair_affinity

    settings = settings or RandomWalkSettings()
    height, width = image.shape[-2:]
    keys, stack = _stack(seeds)
    if not keys:
        return [], image.new_ones(1, height, width)
    fg = torch.from_numpy(stack).to(image.device)[None]
    if tuple(fg.shape[-2:]) != (height, width):
        fg = F.interpolate(fg, size=(height, width), mode="bilinear", align_corners=False)
    embedding = model(image[None])
    grid = tuple(embedding.shape[-2:])
    offsets = local_offsets(model.radius)
    transition = local_transition(pair_affinity(embedding, offsets), offsets, beta=settings.beta)
    # seeds on the grid: pad to grid * stride, then average over each cell
    stride = model.stride
    padded = F.pad(fg, (0, grid[1] * stride - width, 0, grid[0] * stride - height))
    small = F.avg_pool2d(padded, stride)
    probs = _probabilities(small, settings)
    walked = random_walk(probs, transition.to(probs.dtype), offsets, exp_times=settings.exp_times)
    full = F.interpolate(
        walked, size=(grid[0] * stride, grid[1] * stride), mode="bilinear", align_corners=False
    )
    full = full[..., :height, :width]
    return keys, (full / full.sum(dim=1, keepdim=True).clamp_min(1e-8))[0]


def pseudo_mask_from_seeds(
    seeds: dict[int, np.ndarray],
    method: str = "threshold",
    image: np.ndarray | None = None,
    threshold: float = 0.25,
    probs: np.ndarray | None = None,
    keys: Sequence[int] | None = None,
    crf: bool = False,
    crf_params: dict[str, Any] | None = None,
) -> np.ndarray:
    """One pseudo mask from seed maps (``"threshold"``, ``"crf"``) or walked probabilities.

    Args:
        seeds: psa dict ``{fg class index: HxW map}``.
        method: ``"threshold"`` (argmax over ``[threshold, maps...]``), ``"crf"``
            (:func:`~seedkit.refine.crf_refine_seeds`) or ``"rw"`` (argmax of
            ``probs``, from :func:`propagate_seeds`).
        image: RGB ``uint8`` image (for the CRF).
        threshold: background score of ``"threshold"`` / ``"crf"``.
        probs: ``(1 + K, H, W)`` probabilities for ``"rw"``.
        keys: the classes of ``probs`` rows 1..K.
        crf: refine ``"rw"`` probabilities with a dense CRF.
        crf_params: keyword arguments of :func:`~seedkit.refine.dense_crf`.

    Returns:
        ``(H, W)`` uint8 mask, 0 background, ``k + 1`` class ``k``.

    Example:
        >>> import numpy as np
        >>> pseudo_mask_from_seeds({3: np.array([[0.9, 0.1]])}, threshold=0.25).tolist()
        [[4, 0]]
    """
    from seedkit.refine.crf import crf_refine_seeds, dense_crf

    if method not in METHODS:
        raise InvalidValueError("method", "one of " + ", ".join(METHODS), method)
    if method == "rw":
        if probs is None or keys is None:
            raise InvalidValueError(
                "probs", "walked probabilities and their keys for method 'rw'", None
            )
        probs = np.asarray(probs, dtype=np.float32)
        if crf and len(keys):
            if image is None:
                raise InvalidValueError("image", "the RGB image for crf=True", None)
            probs = dense_crf(image, probs, **(crf_params or {}))
        lookup = np.asarray([0, *(int(k) + 1 for k in keys)], dtype=np.uint8)
        return lookup[probs.argmax(axis=0)]
    if method == "crf":
        if image is None:
            raise InvalidValueError("image", "the RGB image for method 'crf'", None)
        return crf_refine_seeds(image, seeds, threshold, **(crf_params or {})).astype(np.uint8)
    if not seeds:
        shape = image.shape[:2] if image is not None else (1, 1)
        return np.zeros(shape, np.uint8)
    maps = as_seed_maps(seeds)
    shape = next(iter(maps.values())).shape
    return seed_labels(maps, threshold, shape).astype(np.uint8)


def write_pseudo_masks(
    dataset: Any,
    seeds_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_fg_classes: int,
    method: str = "rw",
    model: torch.nn.Module | None = None,
    settings: RandomWalkSettings | None = None,
    threshold: float = 0.25,
    crf: bool = False,
    crf_params: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    palette: bool = True,
) -> list[str]:
    """Write ``<id>.png`` pseudo masks for every image of ``dataset``.

    Args:
        dataset: map-style dataset with ``.ids`` and ``.image_path(id)``, items
            ``{"id", "image" (3, H, W) normalised}`` (e.g.
            :class:`~seedkit.data.VOCSegmentation` with ``with_masks=False``).
        seeds_dir: folder of psa-format ``<id>.npy`` seeds.
        out_dir: output folder (created).
        num_fg_classes: foreground classes (20 VOC, 80 COCO).
        method: ``"rw"`` (needs ``model``), ``"crf"`` or ``"threshold"``.
        model: the affinity network for ``"rw"``.
        settings: random-walk parameters.
        threshold: background score of ``"threshold"`` / ``"crf"``.
        crf: CRF on top of the walk (``"rw"`` only).
        crf_params: :func:`~seedkit.refine.dense_crf` parameters.
        device: where the network runs.
        overwrite: rewrite existing masks.
        progress: progress bar.
        rank: shard index (image ``i`` belongs to ``i % world_size``).
        world_size: number of shards.
        palette: VOC palette PNGs (``False``: plain index PNGs).

    Returns:
        The ids written by this call (existing ones are skipped).
    """
    from seedkit.data import read_image, write_mask_png
    from seedkit.metrics import load_psa_maps

    if method not in METHODS:
        raise InvalidValueError("method", "one of " + ", ".join(METHODS), method)
    if method == "rw" and model is None:
        raise InvalidValueError("model", "an affinity network for method 'rw'", None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in dataset.ids]
    todo = [
        i
        for i in range(len(ids))
        if i % world_size == rank and (overwrite or not (out / f"{ids[i]}.png").exists())
    ]
    written = []
    if model is not None:
        model.eval()
    for index in tqdm(todo, desc=f"pseudo masks ({method})", unit="img", disable=not progress):
        image_id = ids[index]
        seeds = load_psa_maps(Path(seeds_dir) / f"{image_id}.npy", num_fg_classes)
        needs_rgb = method == "crf" or crf or not seeds
        rgb = read_image(dataset.image_path(image_id)) if needs_rgb else None
        if method == "rw" and seeds:
            item = dataset[index]
            keys, probs = propagate_seeds(model, item["image"].to(device), seeds, settings)
            if rgb is None and crf:
                rgb = read_image(dataset.image_path(image_id))
            mask = pseudo_mask_from_seeds(
                seeds,
                "rw",
                image=rgb,
                probs=probs.cpu().numpy(),
                keys=keys,
                crf=crf,
                crf_params=crf_params,
            )
        elif not seeds:
            mask = np.zeros(rgb.shape[:2], np.uint8)
        else:
            mask = pseudo_mask_from_seeds(
                seeds, method, image=rgb, threshold=threshold, crf_params=crf_params
            )
        write_mask_png(out / f"{image_id}.png", mask, palette=palette)
        written.append(image_id)
    return written


def evaluate_pseudo_masks(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    ids: Sequence[str],
    num_labels: int | None = None,
    class_names: Sequence[str] | None = None,
    *,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """MIoU of index-PNG masks against ground truth (255 ignored), in percent.

    Args:
        pred_dir: folder of ``<id>.png`` pseudo masks.
        gt_dir: folder of ground-truth ``<id>.png`` (palette or index).
        ids: images to evaluate.
        num_labels: number of mask labels, background included (21 for VOC).
        class_names: names for ``per_class``.
        num_classes: deprecated name of ``num_labels`` (the same count).

    Returns:
        ``{"miou", "iou" (per class, None when absent), "per_class", "num_images"}``.
    """
    from seedkit.data import read_mask
    from seedkit.metrics import confusion_matrix, iou_from_confusion

    num_labels = check_num_labels("seedkit.refine.evaluate_pseudo_masks", num_labels, num_classes)
    names = (
        list(class_names) if class_names is not None else [f"class_{k}" for k in range(num_labels)]
    )
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    for image_id in ids:
        pred = read_mask(Path(pred_dir) / f"{image_id}.png", num_labels)
        gt = read_mask(Path(gt_dir) / f"{image_id}.png", num_labels)
        cm += confusion_matrix(pred, gt, num_labels)
    iou, miou = iou_from_confusion(cm)
    values = [None if np.isnan(v) else round(float(v) * 100, 2) for v in iou]
    return {
        "miou": round(float(miou) * 100, 2),
        "iou": values,
        "per_class": dict(zip(names, values, strict=False)),
        "num_images": len(ids),
    }
