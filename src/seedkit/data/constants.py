"""Class names, colour maps and normalisation constants of VOC 2012 and COCO 2014."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "COCO_CLASSES",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "class_names_for",
    "voc_palette",
]

#: Label value of pixels that are ignored (VOC object borders, crop padding, COCO crowds).
IGNORE_INDEX: int = 255

#: The 20 VOC 2012 object classes in the official order, without background.
#: Class index ``k`` (0-based) here is mask value ``k + 1``.
VOC_CLASSES: tuple[str, ...] = (
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

#: The 80 COCO 2014 object classes in category-id order, without background.
#: Class index ``k`` (0-based) here is mask value ``k + 1`` in rendered masks.
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

#: ImageNet channel means (RGB, for images scaled to [0, 1]).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB, for images scaled to [0, 1]).
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def class_names_for(num_fg_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """Display names ``["background", *classes]``, index = mask value.

    Given ``names`` are used when they fit (``num_fg_classes`` foreground names,
    or ``num_fg_classes + 1`` with background first); otherwise VOC's names for
    20 classes, COCO's for 80, else ``class_k`` for foreground index ``k``
    (0-based, the key of the class in a psa seed file).

    Args:
        num_fg_classes: number of foreground classes (20 for VOC, 80 for COCO).
        names: optional names, with or without ``"background"`` first.

    Returns:
        ``num_fg_classes + 1`` names, background first.

    Example:
        >>> class_names_for(20)[:3]
        ['background', 'aeroplane', 'bicycle']
        >>> class_names_for(2)
        ['background', 'class_0', 'class_1']
    """
    if names is not None:
        given = list(names)
        if len(given) == num_fg_classes:
            return ["background", *given]
        if len(given) == num_fg_classes + 1:
            return given
    classes = {len(VOC_CLASSES): VOC_CLASSES, len(COCO_CLASSES): COCO_CLASSES}.get(
        num_fg_classes, tuple(f"class_{k}" for k in range(num_fg_classes))
    )
    return ["background", *classes]


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """Return the standard PASCAL VOC colour map (the ``bitget`` construction).

    Args:
        num_colors: Number of entries.

    Returns:
        ``uint8`` array of shape ``(num_colors, 3)``.

    Example:
        >>> palette = voc_palette()
        >>> palette[1].tolist(), palette[15].tolist(), palette[255].tolist()
        ([128, 0, 0], [192, 128, 128], [224, 224, 192])
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


#: The standard 256 x 3 VOC colour map (``uint8``); entry 255 is the border colour.
VOC_PALETTE: np.ndarray = voc_palette()
VOC_PALETTE.setflags(write=False)
