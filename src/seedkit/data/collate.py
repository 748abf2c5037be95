"""Batching of dataset samples, padding images of different sizes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from seedkit.data.constants import IGNORE_INDEX
from seedkit.errors import InvalidValueError

__all__ = ["collate"]

_PAD_VALUES = {"image": 0.0, "mask": IGNORE_INDEX, "valid": False}


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch sample dicts of :class:`VOCSegmentation` / :class:`COCOSegmentation`.

    Samples of one size (fixed training crops) are stacked exactly as
    :func:`torch.utils.data.default_collate` would. Samples of different sizes
    are padded at the bottom and right to the largest height and width: images
    with 0, masks with 255 and ``valid`` with ``False``. ``"id"`` becomes a list.

    Args:
        samples: Sample dicts with the same keys.

    Returns:
        A dict with ``"id"`` (list of str), ``"image"`` (B, 3, H, W), ``"labels"``
        (B, C), ``"valid"`` (B, H, W) and, when present, ``"mask"`` (B, H, W).

    Example:
        >>> import torch
        >>> a = {"id": "a", "image": torch.zeros(3, 2, 3), "labels": torch.ones(2),
        ...      "valid": torch.ones(2, 3, dtype=torch.bool)}
        >>> b = {"id": "b", "image": torch.zeros(3, 4, 2), "labels": torch.ones(2),
        ...      "valid": torch.ones(4, 2, dtype=torch.bool)}
        >>> batch = collate([a, b])
        >>> tuple(batch["image"].shape), batch["valid"][0].sum().item()
        ((2, 3, 4, 3), 6)
    """
    if not samples:
        raise InvalidValueError("samples", "at least one sample", "an empty batch")
    keys = set(samples[0])
    for sample in samples[1:]:
        if set(sample) != keys:
            raise InvalidValueError(
                "samples", f"the same keys in every sample ({sorted(keys)})", sorted(sample)
            )
    sizes = {tuple(sample["image"].shape[-2:]) for sample in samples}
    if len(sizes) == 1:
        return default_collate(list(samples))
    height = max(size[0] for size in sizes)
    width = max(size[1] for size in sizes)
    batch: dict[str, Any] = {}
    for key in samples[0]:
        if key in _PAD_VALUES:
            batch[key] = torch.stack(
                [_pad(sample[key], height, width, _PAD_VALUES[key]) for sample in samples]
            )
        else:
            batch[key] = default_collate([sample[key] for sample in samples])
    return batch


def _pad(tensor: torch.Tensor, height: int, width: int, value: float) -> torch.Tensor:
    out = torch.full((*tensor.shape[:-2], height, width), value, dtype=tensor.dtype)
    out[..., : tensor.shape[-2], : tensor.shape[-1]] = tensor
    return out
