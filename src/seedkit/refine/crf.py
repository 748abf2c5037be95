"""Dense CRF refinement with the reference parameters (optional extra ``seedkit-wsss[crf]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from seedkit.checks import check_int
from seedkit.errors import InvalidValueError, ShapeError
from seedkit.metrics import as_seed_maps

__all__ = ["crf_refine_seeds", "dense_crf"]


def _densecrf() -> Any:
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as error:
        raise ImportError(
            "dense CRF needs pydensecrf2 (imported as 'pydensecrf'): "
            "pip install 'seedkit-wsss[crf]'"
        ) from error
    return dcrf


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    iterations: int = 10,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 80.0,
    bilateral_srgb: float = 13.0,
    bilateral_compat: float = 10.0,
) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF (Krähenbühl and Koltun).

    The defaults are those of psa / SEAM / IRN / MCTformer: 10 mean-field
    iterations, a Gaussian kernel (sxy 3, compat 3) and a bilateral kernel
    (sxy 80, srgb 13, compat 10). The unary is ``-log(probs)``.

    Args:
        image: RGB image, uint8.
        probs: per-class probabilities (they need not sum to one; they are
            clipped to ``[1e-5, 1]`` before the log, as
            ``pydensecrf.utils.unary_from_softmax`` does).
        iterations: mean-field iterations.
        gaussian_sxy: spatial standard deviation of the smoothness kernel.
        gaussian_compat: weight of the smoothness kernel.
        bilateral_sxy: spatial standard deviation of the appearance kernel.
        bilateral_srgb: colour standard deviation of the appearance kernel.
        bilateral_compat: weight of the appearance kernel.

    Returns:
        Refined probabilities, float32, summing to one per pixel.

    Raises:
        ImportError: ``pydensecrf2`` is not installed (names the ``seedkit-wsss[crf]`` extra).

    Shape:
        - image: :math:`(H, W, 3)`
        - probs: :math:`(K, H, W)`
        - output: :math:`(K, H, W)`
    """
    dcrf = _densecrf()
    image = np.asarray(image)
    probs = np.asarray(probs, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShapeError("image", "(H, W, 3) uint8", f"{image.shape} {image.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2] or probs.shape[0] < 2:
        raise ShapeError("probs", f"(K >= 2, {image.shape[0]}, {image.shape[1]})", probs.shape)
    if not np.isfinite(probs).all():
        raise InvalidValueError("probs", "finite values", "NaN or inf")
    iterations = check_int("iterations", iterations, 0)
    labels, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(labels, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy,
        srgb=bilateral_srgb,
        rgbim=np.ascontiguousarray(image),
        compat=bilateral_compat,
    )
    refined = np.array(crf.inference(iterations), dtype=np.float32)
    return refined.reshape(labels, height, width)


def crf_refine_seeds(
    image: np.ndarray,
    seeds: np.ndarray | dict[int, np.ndarray],
    threshold: float,
    num_fg_classes: int | None = None,
    **crf_kwargs: Any,
) -> np.ndarray:
    """Turn seed maps into a CRF-refined label map, as psa / SEAM do for pseudo masks.

    Stacks a constant background plane equal to ``threshold`` (the rule of the
    threshold sweep, :func:`seedkit.metrics.seed_labels`) with the maps of the
    classes present, normalises the stack to probabilities per pixel, runs
    :func:`dense_crf` and returns the argmax.

    Args:
        image: RGB image ``(H, W, 3)`` uint8.
        seeds: psa dict ``{fg class index: HxW}`` or a ``(C_fg, H, W)`` stack.
        threshold: background score.
        num_fg_classes: unused for dicts; kept for symmetry with the readers.
        **crf_kwargs: parameters of :func:`dense_crf`.

    Returns:
        ``(H, W)`` int32 class ids (0 background, ``c + 1`` for fg index ``c``).
    """
    del num_fg_classes
    by_key = as_seed_maps(seeds, "seeds")
    keys = sorted(by_key)
    maps = [by_key[k] for k in keys]
    height, width = np.asarray(image).shape[:2]
    if not keys:
        return np.zeros((height, width), dtype=np.int32)
    background = np.full((1, height, width), np.float32(threshold))
    scores = np.concatenate([background, np.stack(maps)])
    probs = scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-8)
    refined = dense_crf(image, probs, **crf_kwargs)
    lookup = np.asarray([0, *(k + 1 for k in keys)], dtype=np.int32)
    return lookup[refined.argmax(axis=0)]
