"""PASCAL VOC 2012 (with or without the SBD augmented set) as a PyTorch dataset."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from seedkit.data.constants import VOC_CLASSES
from seedkit.data.io import (
    PathLike,
    load_cls_labels,
    read_id_list,
    read_image,
    read_mask,
    resolve_voc_root,
)
from seedkit.data.labels import labels_from_mask, labels_from_xml, voc_mask_path
from seedkit.data.transforms import InferenceTransform
from seedkit.errors import DataError, DataFileError, InvalidValueError

__all__ = ["VOCSegmentation", "sample_generator"]

Transform = Callable[..., Mapping[str, Any]]


def sample_generator(seed: int | None, epoch: int, index: int) -> np.random.Generator:
    """Return the random generator for one sample.

    With an integer ``seed`` the stream depends only on ``(seed, epoch, index)``,
    so augmentations are identical whatever the number of DataLoader workers.
    With ``None`` it is seeded from torch's global generator, which the DataLoader
    seeds per worker: reproducible under :func:`torch.manual_seed` for a fixed
    worker count, and different every epoch.

    Args:
        seed: Dataset seed, or ``None``.
        epoch: Current epoch.
        index: Sample index.

    Returns:
        A fresh :class:`numpy.random.Generator`.
    """
    if seed is None:
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def build_sample(
    image_id: str,
    image: np.ndarray,
    mask: np.ndarray | None,
    labels: np.ndarray,
    transform: Transform,
    rng: np.random.Generator,
    with_masks: bool,
) -> dict[str, Any]:
    """Apply ``transform`` and pack the sample dict shared by the datasets."""
    out = transform(image, mask if with_masks else None, rng)
    sample: dict[str, Any] = {
        "id": image_id,
        "image": torch.from_numpy(np.ascontiguousarray(out["image"], dtype=np.float32)),
        "labels": torch.from_numpy(np.array(labels, dtype=np.float32)),
        "valid": torch.from_numpy(np.ascontiguousarray(out["valid"], dtype=bool)),
    }
    if with_masks:
        sample["mask"] = torch.from_numpy(np.asarray(out["mask"], dtype=np.int64))
    return sample


class VOCSegmentation(Dataset):
    """PASCAL VOC 2012 images with image-level labels and (optionally) masks.

    Masks are looked up per image in ``SegmentationClassAug`` (SBD, plain index
    PNGs) then ``SegmentationClass`` (palette PNGs), so plain VOC 2012 works. A
    ``"train_aug"`` split falls back to ``"train"`` when ``train_aug.txt`` is
    absent.

    Labels come from ``cls_labels`` (a dict, or a path to a psa-format file); if
    ``None``, from ``<root>/cls_labels.npy`` when it exists, else from each
    image's mask, else from its XML annotation.

    Args:
        voc_root: The ``VOC2012`` folder, ``VOCdevkit`` or its parent.
        split: A list name (``"train"``, ``"val"``, ``"train_aug"``...) or a
            list file path, or a sequence of ids.
        transform: ``transform(image, mask, rng) -> {"image", "mask", "valid"}``
            (see :mod:`seedkit.data.transforms`); default
            :class:`~seedkit.data.transforms.InferenceTransform`.
        cls_labels: Label table or path, see above.
        with_masks: Load masks; a missing mask is then an error.
        mask_dir: Mask folder (absolute, or relative to the VOC root) instead of
            ``SegmentationClassAug`` / ``SegmentationClass``, e.g. pseudo masks.
        seed: Augmentation seed (see :func:`sample_generator`).
        class_names: The dataset's classes; the default is VOC's 20.

    Sample:
        ``{"id": str, "image": float32 (3, H, W), "labels": float32 (C,),
        "mask": int64 (H, W) with 255 ignore (when ``with_masks``),
        "valid": bool (H, W), False on crop padding}``.

    Example:
        >>> import tempfile
        >>> from seedkit.data import make_demo_data
        >>> root = make_demo_data(tempfile.mkdtemp(), num_images=4)
        >>> dataset = VOCSegmentation(root, "train")
        >>> sample = dataset[0]
        >>> sample["image"].shape[0], sample["labels"].shape, sample["mask"].dtype
        (3, torch.Size([20]), torch.int64)
    """

    def __init__(
        self,
        voc_root: PathLike,
        split: str | PathLike | Sequence[str] = "train",
        transform: Transform | None = None,
        cls_labels: Mapping[str, np.ndarray] | PathLike | None = None,
        with_masks: bool = True,
        mask_dir: PathLike | None = None,
        seed: int | None = None,
        class_names: Sequence[str] = VOC_CLASSES,
    ) -> None:
        self.root = resolve_voc_root(voc_root)
        if isinstance(split, (str, Path)) or hasattr(split, "__fspath__"):
            self.ids = read_id_list(self.root, split)
        else:
            self.ids = [str(i) for i in split]
            if not self.ids:
                raise InvalidValueError("split", "a non-empty list of ids", "[]")
        self.split = split
        self.transform: Transform = transform if transform is not None else InferenceTransform()
        self.with_masks = bool(with_masks)
        self.mask_dir = mask_dir
        if mask_dir is not None and not (self.root / mask_dir).is_dir():
            raise DataFileError(self.root / mask_dir, "mask folder")
        self.seed = seed
        self.epoch = 0
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.cls_labels = self._load_labels(cls_labels)

    def _load_labels(
        self, cls_labels: Mapping[str, np.ndarray] | PathLike | None
    ) -> dict[str, np.ndarray] | None:
        source: Mapping[str, np.ndarray] | None
        label_path: object = "cls_labels"
        if cls_labels is None:
            default = self.root / "cls_labels.npy"
            if not default.is_file():
                return None
            source, label_path = load_cls_labels(default), default
        elif isinstance(cls_labels, Mapping):
            source = cls_labels
        else:
            source, label_path = load_cls_labels(cls_labels), cls_labels
        table = {str(k): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in source.items()}
        missing = [i for i in self.ids if i not in table]
        if missing:
            raise DataError(
                label_path,
                f"labels for every id of split {self.split!r}",
                f"{len(missing)} missing, e.g. {missing[:3]}",
            )
        lengths = {table[i].shape[0] for i in self.ids}
        if lengths != {self.num_classes}:
            raise DataError(
                label_path, f"{self.num_classes}-d label vectors", f"lengths {sorted(lengths)}"
            )
        return table

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the augmentations when ``seed`` is an int."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, image_id: str) -> Path:
        """Return ``JPEGImages/<id>.jpg`` (or the first other extension found)."""
        path = self.root / "JPEGImages" / f"{image_id}.jpg"
        if not path.is_file():
            for suffix in (".jpeg", ".png", ".JPG"):
                other = path.with_suffix(suffix)
                if other.is_file():
                    return other
        return path

    def mask_path(self, image_id: str) -> Path | None:
        """Return the mask file of ``image_id``, or ``None`` if there is none."""
        return voc_mask_path(self.root, image_id, self.mask_dir)

    def _read_mask(
        self, image_id: str, shape: tuple[int, int]
    ) -> tuple[np.ndarray | None, Path | None]:
        path = self.mask_path(image_id)
        if path is None:
            return None, None
        mask = read_mask(path, self.num_classes + 1)
        if mask.shape != shape:
            raise DataError(path, f"a mask of the image's size {shape}", f"size {mask.shape}")
        return mask, path

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        image = read_image(self.image_path(image_id))
        mask = None
        if self.with_masks or self.cls_labels is None:
            mask, _ = self._read_mask(image_id, image.shape[:2])
            if mask is None and self.with_masks:
                folder = self.root / (
                    self.mask_dir if self.mask_dir is not None else "SegmentationClass"
                )
                raise DataFileError(
                    folder / f"{image_id}.png", "mask", "pass with_masks=False to load images only"
                )
        labels = self._labels(image_id, mask)
        rng = sample_generator(self.seed, self.epoch, index)
        return build_sample(image_id, image, mask, labels, self.transform, rng, self.with_masks)

    def check_files(self, masks: bool | None = None, decode_masks: bool = True) -> None:
        """Check every id's files before a long run reads them: fail now, not mid-run.

        Each image must exist and be an image (its header is read); each id needs a
        label (the label table, else a mask or an XML annotation); with ``masks``
        (default: ``with_masks``) each mask must exist and, with ``decode_masks``, is
        read in full (a truncated or corrupt file fails here) and must have its
        image's size.

        Raises:
            DataFileError: a listed file is missing (the message names it and the list).
            DataError: a file is not readable or does not match its image.
        """
        masks = self.with_masks if masks is None else masks
        if (
            masks
            and self.mask_dir is None
            and not any(
                (self.root / name).is_dir()
                for name in ("SegmentationClass", "SegmentationClassAug")
            )
        ):
            raise DataFileError(
                self.root / "SegmentationClass",
                "ground-truth mask folder",
                f"needed for the masks of {self._list_name()}",
            )
        for image_id in self.ids:
            path = self.image_path(image_id)
            if not path.is_file():
                raise DataFileError(path, "image", f"listed in {self._list_name()}")
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                raise DataError(
                    path, "a readable image", f"an unreadable file ({error})"
                ) from error
            mask_path = self.mask_path(image_id) if masks or self.cls_labels is None else None
            if masks:
                if mask_path is None:
                    folder = self.root / (self.mask_dir or "SegmentationClass")
                    raise DataFileError(
                        folder / f"{image_id}.png", "mask", f"listed in {self._list_name()}"
                    )
                if not decode_masks:
                    continue
                mask = read_mask(mask_path, self.num_classes + 1)
                if mask.shape != (height, width):
                    raise DataError(
                        mask_path, f"a mask of the image's size {(height, width)}", mask.shape
                    )
            elif self.cls_labels is None and mask_path is None:
                xml = self.root / "Annotations" / f"{image_id}.xml"
                if not xml.is_file():
                    raise DataFileError(
                        xml,
                        "class labels (no cls_labels.npy, mask or XML annotation)",
                        "make labels with `seedkit make-cls-labels`",
                    )

    def _list_name(self) -> str:
        split = self.split
        return f"list {split!r}" if isinstance(split, (str, Path)) else "the given ids"

    def _labels(self, image_id: str, mask: np.ndarray | None) -> np.ndarray:
        if self.cls_labels is not None:
            return self.cls_labels[image_id].copy()
        if mask is not None:
            return labels_from_mask(mask, self.num_classes)
        xml = self.root / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            raise DataFileError(
                xml,
                "class labels (no cls_labels.npy, mask or XML annotation)",
                "make labels with `seedkit make-cls-labels`",
            )
        return labels_from_xml(xml, self.class_names)

    def __repr__(self) -> str:
        return (
            f"VOCSegmentation(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
            f"transform={self.transform!r})"
        )
