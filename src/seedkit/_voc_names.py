"""PASCAL VOC class names, kept here until :mod:`seedkit.data` provides them.

Swap point: when ``seedkit.data.VOC_CLASSES`` exists, this module can import
from it; every user of the names goes through :data:`VOC_CLASS_NAMES`.
"""

from __future__ import annotations

__all__ = ["VOC_CLASS_NAMES"]

#: Background followed by the 20 VOC foreground classes, index = class id.
VOC_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def class_names_for(
    num_classes: int, names: tuple[str, ...] | list[str] | None = None
) -> list[str]:
    """Return ``num_classes`` display names: given ones, VOC's when they fit, else numbers."""
    if names is not None:
        names = list(names)
        if len(names) == num_classes - 1:
            names = ["background", *names]
        if len(names) == num_classes:
            return names
    if num_classes == len(VOC_CLASS_NAMES) and names is None:
        return list(VOC_CLASS_NAMES)
    return ["background"] + [f"class {i}" for i in range(1, num_classes)]
