"""Display names of segmentation classes (background first) for tables and overlays."""

from __future__ import annotations

from seedkit.data.constants import VOC_CLASSES

__all__ = ["VOC_CLASS_NAMES"]

#: Background followed by the 20 VOC foreground classes, index = class id.
VOC_CLASS_NAMES: tuple[str, ...] = ("background", *VOC_CLASSES)


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
