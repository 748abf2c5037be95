"""The stages' view of a VOC-layout dataset: class names, the ground-truth folder, checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seedkit.data import class_names_for

__all__ = ["check_evaluation_list", "class_names_for", "gt_dir"]


def gt_dir(voc_root: Path) -> Path:
    """Ground-truth folder of a VOC-layout root (``SegmentationClass`` first)."""
    for name in ("SegmentationClass", "SegmentationClassAug"):
        if (voc_root / name).is_dir():
            return voc_root / name
    return voc_root / "SegmentationClass"


def check_evaluation_list(
    voc_root: Any, split: str | list[str], num_classes: int, limit: int | None = None
) -> list[str]:
    """Check the images and ground-truth masks an evaluation will read; return its ids.

    The masks are read from :func:`gt_dir`, as the evaluations do, in full (a
    truncated file fails here, before any training).

    Raises:
        DataFileError: the list, the ground-truth folder, an image or a mask is missing.
        DataError: a file is unreadable or a mask does not match its image.
    """
    from seedkit.data import VOCSegmentation, resolve_voc_root
    from seedkit.errors import DataFileError

    root = resolve_voc_root(voc_root)
    folder = gt_dir(root)
    if not folder.is_dir():
        raise DataFileError(
            folder,
            "ground-truth mask folder",
            f"needed to evaluate on list {split!r}" if isinstance(split, str) else "",
        )
    names = class_names_for(num_classes)
    # mask_dir is relative to the VOC root (the root itself may be relative to the cwd).
    dataset = VOCSegmentation(
        root, split, with_masks=True, mask_dir=folder.name, class_names=names[1:]
    )
    if limit is not None:
        dataset.ids = dataset.ids[:limit]
    dataset.check_files(masks=True)
    return list(dataset.ids)
