"""Image-level class labels from segmentation masks or VOC XML annotations."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from seedkit.data.constants import IGNORE_INDEX, VOC_CLASSES
from seedkit.data.io import PathLike, read_mask, resolve_voc_root
from seedkit.errors import DataError, DataFileError, InvalidValueError

__all__ = [
    "labels_from_mask",
    "labels_from_xml",
    "make_cls_labels",
    "parse_voc_xml",
    "voc_mask_path",
]


def parse_voc_xml(path: PathLike, class_names: Sequence[str] = VOC_CLASSES) -> list[str]:
    """Return the object class names listed in a VOC XML annotation file.

    Args:
        path: ``Annotations/<id>.xml``.
        class_names: The allowed names.

    Returns:
        One name per ``<object>``, in file order (repeats kept).

    Raises:
        DataFileError: The file does not exist.
        DataError: The XML is malformed, an object has no name, or a name is not
            in ``class_names``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "XML annotation")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise DataError(path, "well-formed VOC XML", f"a parse error ({error})") from error
    allowed = set(class_names)
    names = []
    for obj in root.iter("object"):
        node = obj.find("name")
        if node is None or not (node.text or "").strip():
            raise DataError(path, "an <object> with a <name>", "an object without a name")
        name = node.text.strip()
        if name not in allowed:
            raise DataError(
                path, "object names among the dataset's classes", f"unknown class {name!r}"
            )
        names.append(name)
    return names


def labels_from_xml(path: PathLike, class_names: Sequence[str] = VOC_CLASSES) -> np.ndarray:
    """Multi-hot label of the object classes of a VOC XML annotation.

    Difficult objects count, as in psa's ``make_cls_labels.py``.

    Args:
        path: ``Annotations/<id>.xml``.
        class_names: The dataset's classes, in label order.

    Returns:
        float32 multi-hot ``(len(class_names),)``.

    Raises:
        DataFileError: The file does not exist.
        DataError: The XML is malformed or names an unknown class.
    """
    label = np.zeros(len(class_names), dtype=np.float32)
    index = {name: position for position, name in enumerate(class_names)}
    for name in parse_voc_xml(path, class_names):
        label[index[name]] = 1.0
    return label


def labels_from_mask(mask: np.ndarray, num_classes: int = 20) -> np.ndarray:
    """Multi-hot label of the classes present in a mask.

    Args:
        mask: ``(H, W)`` class ids; 0 is background, ``k`` is class ``k - 1``,
            255 is ignored.
        num_classes: Number of object classes (no background).

    Returns:
        ``float32`` array ``(num_classes,)``.

    Raises:
        InvalidValueError: A class id is above ``num_classes`` (and not 255).

    Example:
        >>> import numpy as np
        >>> labels_from_mask(np.array([[0, 3], [255, 3]]), num_classes=5).tolist()
        [0.0, 0.0, 1.0, 0.0, 0.0]
    """
    values = np.unique(np.asarray(mask))
    values = values[(values != 0) & (values != IGNORE_INDEX)]
    if values.size and values.max() > num_classes:
        raise InvalidValueError(
            "mask", f"class ids 0..{num_classes} or 255", f"id {int(values.max())}"
        )
    label = np.zeros(num_classes, dtype=np.float32)
    label[values.astype(np.int64) - 1] = 1.0
    return label


def voc_mask_path(
    voc_root: PathLike, image_id: str, mask_dir: PathLike | None = None
) -> Path | None:
    """Find the mask of ``image_id``: ``SegmentationClassAug`` first, then ``SegmentationClass``.

    Args:
        voc_root: The ``VOC2012`` folder.
        image_id: Image id.
        mask_dir: A folder to use instead of the two defaults (absolute, or
            relative to ``voc_root``).

    Returns:
        The mask path, or ``None`` when no mask exists.
    """
    root = Path(voc_root)
    folders = (
        [root / mask_dir]
        if mask_dir is not None
        else [
            root / "SegmentationClassAug",
            root / "SegmentationClass",
        ]
    )
    for folder in folders:
        candidate = folder / f"{image_id}.png"
        if candidate.is_file():
            return candidate
    return None


def make_cls_labels(
    voc_root: PathLike,
    ids: Iterable[str],
    source: str = "masks",
    num_classes: int = 20,
    class_names: Sequence[str] = VOC_CLASSES,
    mask_dir: PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Build the psa-format class-label table of a VOC-style dataset.

    Args:
        voc_root: The ``VOC2012`` folder (or ``VOCdevkit`` or its parent).
        ids: Image ids.
        source: ``"masks"`` (classes present in the mask, 255 ignored;
            ``SegmentationClassAug`` then ``SegmentationClass``) or ``"xml"``
            (``<object><name>`` of ``Annotations/<id>.xml``, difficult objects
            included, as psa's ``make_cls_labels.py`` does).
        num_classes: Number of object classes (no background).
        class_names: Class names, for ``source="xml"``.
        mask_dir: Mask folder overriding the defaults, for ``source="masks"``.

    Returns:
        ``{id: float32 multi-hot (num_classes,)}`` in the order of ``ids``.

    Raises:
        InvalidValueError: Unknown ``source``.
        DataFileError: A mask or XML file is missing.
        DataError: A file is corrupt or holds an unknown class.
    """
    if source not in ("masks", "xml"):
        raise InvalidValueError("source", "'masks' or 'xml'", source)
    if len(class_names) != num_classes:
        raise InvalidValueError("class_names", f"{num_classes} names", len(class_names))
    root = resolve_voc_root(voc_root)
    labels: dict[str, np.ndarray] = {}
    for image_id in ids:
        if source == "masks":
            path = voc_mask_path(root, image_id, mask_dir)
            if path is None:
                folder = root / (mask_dir if mask_dir is not None else "SegmentationClass")
                raise DataFileError(folder / f"{image_id}.png", "mask")
            labels[image_id] = labels_from_mask(read_mask(path, num_classes + 1), num_classes)
        else:
            labels[image_id] = labels_from_xml(
                root / "Annotations" / f"{image_id}.xml", class_names
            )
    if not labels:
        raise DataError(root, "at least one image id", "none")
    return labels
