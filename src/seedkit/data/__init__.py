"""Datasets, file formats and transforms: VOC 2012 (+ SBD), COCO 2014 and a demo set.

Readers raise :class:`~seedkit.errors.DataFileError` for missing files and
:class:`~seedkit.errors.DataError` for unusable ones, naming the file. Writers
are atomic.
"""

from seedkit.data.coco import (
    COCOSegmentation,
    coco_category_map,
    make_coco_cls_labels,
    render_coco_masks,
)
from seedkit.data.collate import collate
from seedkit.data.constants import (
    COCO_CLASSES,
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_CLASSES,
    VOC_PALETTE,
    class_names_for,
    voc_palette,
)
from seedkit.data.demo import DEMO_CLASSES, make_demo_data
from seedkit.data.io import (
    KEY_TYPES,
    atomic_write_bytes,
    load_cls_labels,
    read_id_list,
    read_image,
    read_mask,
    resolve_voc_root,
    save_cls_labels,
    write_mask_png,
)
from seedkit.data.labels import (
    labels_from_mask,
    labels_from_xml,
    make_cls_labels,
    parse_voc_xml,
    voc_mask_path,
)
from seedkit.data.transforms import InferenceTransform, TrainTransform, normalize_image
from seedkit.data.voc import VOCSegmentation, sample_generator

__all__ = [
    "COCO_CLASSES",
    "DEMO_CLASSES",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KEY_TYPES",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "COCOSegmentation",
    "InferenceTransform",
    "TrainTransform",
    "VOCSegmentation",
    "atomic_write_bytes",
    "class_names_for",
    "coco_category_map",
    "collate",
    "labels_from_mask",
    "labels_from_xml",
    "load_cls_labels",
    "make_cls_labels",
    "make_coco_cls_labels",
    "make_demo_data",
    "normalize_image",
    "parse_voc_xml",
    "read_id_list",
    "read_image",
    "read_mask",
    "render_coco_masks",
    "resolve_voc_root",
    "sample_generator",
    "save_cls_labels",
    "voc_mask_path",
    "voc_palette",
    "write_mask_png",
]
