"""COCO 2014 through pycocotools: masks rendered once into index PNGs, labels, dataset.

Category ids of COCO are non-contiguous (1..90); seedkit maps the 80 standard
ids in increasing order to class indices 0..79 (:data:`COCO_CLASSES`). Rendered
masks are plain index PNGs named ``<file stem>.png`` with 0 = background,
``k + 1`` = class ``k``, and 255 = crowd regions (ignored). Where instances
overlap, smaller instances are drawn on top of larger ones; crowd regions never
cover an instance.

pycocotools is an optional dependency: ``pip install 'seedkit-wsss[coco]'``.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from seedkit.data.constants import COCO_CLASSES, IGNORE_INDEX
from seedkit.data.io import PathLike, load_cls_labels, read_image, read_mask, write_mask_png
from seedkit.data.transforms import InferenceTransform
from seedkit.data.voc import build_sample, sample_generator
from seedkit.errors import DataError, DataFileError

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCOSegmentation",
    "coco_category_map",
    "load_coco",
    "make_coco_cls_labels",
    "render_coco_masks",
]

#: The 80 category ids of COCO 2014/2017 in increasing order (index = class index).
COCO_CATEGORY_IDS: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91),
)  # fmt: skip


def coco_category_map() -> dict[int, int]:
    """Return ``{COCO category id: class index 0..79}``.

    Example:
        >>> mapping = coco_category_map()
        >>> len(mapping), mapping[1], mapping[90]
        (80, 0, 79)
    """
    return {category: index for index, category in enumerate(COCO_CATEGORY_IDS)}


def _require_pycocotools() -> Any:
    try:
        from pycocotools.coco import COCO
    except ImportError as error:
        raise ImportError(
            "COCO support needs pycocotools: install it with `pip install 'seedkit-wsss[coco]'` "
            "(or `pip install pycocotools`)"
        ) from error
    return COCO


def load_coco(annotation_json: PathLike | Any) -> Any:
    """Load a COCO annotation file with pycocotools (quietly), checking its categories.

    Args:
        annotation_json: ``instances_train2014.json`` or similar, or an already
            loaded ``pycocotools.coco.COCO`` object.

    Returns:
        A ``pycocotools.coco.COCO`` object.

    Raises:
        ImportError: pycocotools is not installed (names the ``seedkit-wsss[coco]`` extra).
        DataFileError: The file does not exist.
        DataError: The file is not COCO JSON or uses a category id outside the
            80 standard ones.
    """
    coco_class = _require_pycocotools()
    if isinstance(annotation_json, coco_class):
        return annotation_json
    path = Path(annotation_json)
    if not path.is_file():
        raise DataFileError(path, "COCO annotation file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = coco_class(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AssertionError) as error:
        raise DataError(
            path, "a COCO instances JSON file", f"unreadable content ({error!r})"
        ) from error
    known = coco_category_map()
    for category_id, category in coco.cats.items():
        if category_id not in known:
            raise DataError(path, "the 80 standard COCO category ids", f"category id {category_id}")
        expected = COCO_CLASSES[known[category_id]]
        if category.get("name", expected) != expected:
            raise DataError(
                path, f"category {category_id} named {expected!r}", f"name {category.get('name')!r}"
            )
    for annotation in coco.anns.values():
        if annotation.get("category_id") not in known:
            raise DataError(
                path,
                "annotations with one of the 80 standard category ids",
                f"category id {annotation.get('category_id')} in annotation {annotation.get('id')}",
            )
    return coco


def _image_id_of(coco: Any) -> dict[str, int]:
    return {Path(info["file_name"]).stem: image_id for image_id, info in coco.imgs.items()}


def _render(coco: Any, image_id: int, path: Path) -> np.ndarray:
    info = coco.imgs[image_id]
    height, width = int(info["height"]), int(info["width"])
    mask = np.zeros((height, width), dtype=np.uint8)
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    mapping = coco_category_map()
    for annotation in annotations:
        if annotation.get("iscrowd", 0):
            region = coco.annToMask(annotation).astype(bool)
            mask[region] = IGNORE_INDEX
    instances = [a for a in annotations if not a.get("iscrowd", 0)]
    instances.sort(key=lambda a: -float(a.get("area", 0.0)))
    for annotation in instances:
        region = coco.annToMask(annotation).astype(bool)
        if region.shape != mask.shape:
            raise DataError(path, f"annotation masks of the image size {mask.shape}", region.shape)
        mask[region] = mapping[annotation["category_id"]] + 1
    return mask


def render_coco_masks(
    annotation_json: PathLike | Any,
    image_dir: PathLike | None,
    out_dir: PathLike,
    ids: Iterable[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Render COCO annotations into index PNG masks, once.

    Existing mask files are kept (so a second call is nearly free) unless
    ``overwrite``. See the module docstring for the mask values.

    Args:
        annotation_json: COCO instances JSON (or a loaded ``COCO`` object).
        image_dir: Folder of the images; when given, every rendered image must
            exist there (catches a wrong annotation file). ``None`` skips the check.
        out_dir: Output folder (created).
        ids: File stems to render; default every image of the JSON.
        overwrite: Re-render existing masks.

    Returns:
        ``out_dir``.

    Raises:
        DataFileError: An image is missing from ``image_dir``.
        DataError: An id is not in the annotation file.
    """
    coco = load_coco(annotation_json)
    stems = _image_id_of(coco)
    wanted = list(stems) if ids is None else list(ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stem in wanted:
        if stem not in stems:
            raise DataError(annotation_json, f"an image with file stem {stem!r}", "no such image")
        target = out / f"{stem}.png"
        if target.is_file() and not overwrite:
            continue
        if image_dir is not None:
            image_path = Path(image_dir) / coco.imgs[stems[stem]]["file_name"]
            if not image_path.is_file():
                raise DataFileError(image_path, "COCO image")
        write_mask_png(target, _render(coco, stems[stem], target), palette=False)
    return out


def make_coco_cls_labels(
    annotation_json: PathLike | Any,
    ids: Iterable[str] | None = None,
    include_crowd: bool = True,
    skip_empty: bool = False,
) -> dict[str, np.ndarray]:
    """Build the psa-format label table of a COCO split (80-d multi-hot).

    Args:
        annotation_json: COCO instances JSON (or a loaded ``COCO`` object).
        ids: File stems; default every image of the JSON.
        include_crowd: Count crowd annotations as present classes (their pixels
            are ignored in the masks, but the class is in the image).
        skip_empty: Leave out images without any (counted) annotation, as the
            WSSS codebases' COCO lists do.

    Returns:
        ``{file stem: float32 (80,)}``.
    """
    coco = load_coco(annotation_json)
    stems = _image_id_of(coco)
    mapping = coco_category_map()
    labels: dict[str, np.ndarray] = {}
    for stem in list(stems) if ids is None else list(ids):
        if stem not in stems:
            raise DataError(annotation_json, f"an image with file stem {stem!r}", "no such image")
        label = np.zeros(len(COCO_CLASSES), dtype=np.float32)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[stems[stem]], iscrowd=None)):
            if include_crowd or not annotation.get("iscrowd", 0):
                label[mapping[annotation["category_id"]]] = 1.0
        if skip_empty and not label.any():
            continue
        labels[stem] = label
    return labels


class COCOSegmentation(Dataset):
    """COCO 2014 images with 80-class labels and masks rendered from the annotations.

    Masks are rendered on first use into ``mask_dir`` (default
    ``<image_dir>/../SegmentationClass/<image_dir name>``, the MCTformer / ToCo
    layout) and read from there afterwards.

    Args:
        annotation_json: COCO instances JSON.
        image_dir: Image folder (e.g. ``coco/train2014``).
        mask_dir: Folder of rendered masks (see above).
        transform: As for :class:`~seedkit.data.VOCSegmentation`.
        cls_labels: Label table or psa-format file; default from the annotations.
        with_masks: Load (and render) masks.
        ids: File stems to use; default the images with at least one annotation.
        seed: Augmentation seed (see :func:`~seedkit.data.sample_generator`).

    Sample:
        As :class:`~seedkit.data.VOCSegmentation`, with 80-d ``"labels"``.
    """

    def __init__(
        self,
        annotation_json: PathLike,
        image_dir: PathLike,
        mask_dir: PathLike | None = None,
        transform: Callable[..., Mapping[str, Any]] | None = None,
        cls_labels: Mapping[str, np.ndarray] | PathLike | None = None,
        with_masks: bool = True,
        ids: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> None:
        coco = load_coco(annotation_json)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataFileError(self.image_dir, "COCO image folder")
        self._files = {
            Path(info["file_name"]).stem: info["file_name"] for info in coco.imgs.values()
        }
        table = make_coco_cls_labels(coco, skip_empty=ids is None)
        self.ids = list(table) if ids is None else [str(i) for i in ids]
        if cls_labels is not None:
            source = cls_labels if isinstance(cls_labels, Mapping) else load_cls_labels(cls_labels)
            table = {str(k): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in source.items()}
        else:
            table = make_coco_cls_labels(coco, ids=self.ids)
        missing = [i for i in self.ids if i not in table]
        if missing:
            raise DataError(
                "cls_labels", "labels for every id", f"{len(missing)} missing, e.g. {missing[:3]}"
            )
        self.cls_labels = table
        self.with_masks = bool(with_masks)
        if mask_dir is None:
            mask_dir = self.image_dir.parent / "SegmentationClass" / self.image_dir.name
        self.mask_dir = Path(mask_dir)
        if self.with_masks:
            render_coco_masks(coco, self.image_dir, self.mask_dir, ids=self.ids)
        self.transform = transform if transform is not None else InferenceTransform()
        self.seed = seed
        self.epoch = 0
        self.num_classes = len(COCO_CLASSES)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the augmentations when ``seed`` is an int."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        image = read_image(self.image_dir / self._files[image_id])
        mask = None
        if self.with_masks:
            path = self.mask_dir / f"{image_id}.png"
            mask = read_mask(path, self.num_classes + 1)
            if mask.shape != image.shape[:2]:
                raise DataError(
                    path, f"a mask of the image's size {image.shape[:2]}", f"size {mask.shape}"
                )
        rng = sample_generator(self.seed, self.epoch, index)
        return build_sample(
            image_id, image, mask, self.cls_labels[image_id], self.transform, rng, self.with_masks
        )
