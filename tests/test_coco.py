"""COCO 2014 support on a tiny COCO-format file: polygons, RLE, crowds, caching, labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seedkit.cli import main
from seedkit.data import (
    COCO_CLASSES,
    COCOSegmentation,
    TrainTransform,
    coco_category_map,
    load_cls_labels,
    make_coco_cls_labels,
    read_mask,
    render_coco_masks,
)
from seedkit.errors import DataError, DataFileError

mask_api = pytest.importorskip("pycocotools.mask")

PERSON, DOG, TOOTHBRUSH = 1, 18, 90  # COCO category ids -> class indices 0, 16, 79


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    image_dir = tmp_path / "coco" / "train2014"
    image_dir.mkdir(parents=True)
    images = [
        {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 20, "width": 30},
        {"id": 25, "file_name": "COCO_train2014_000000000025.jpg", "height": 16, "width": 16},
        {"id": 30, "file_name": "COCO_train2014_000000000030.jpg", "height": 10, "width": 12},
    ]
    for info in images:
        Image.fromarray(np.full((info["height"], info["width"], 3), 120, np.uint8)).save(
            image_dir / info["file_name"]
        )
    dog = np.zeros((20, 30), np.uint8)
    dog[5:9, 10:15] = 1
    dog_rle = mask_api.encode(np.asfortranarray(dog))
    dog_rle["counts"] = dog_rle["counts"].decode("ascii")
    crowd = np.zeros((16, 16), np.uint8)
    crowd[0:8, :] = 1
    annotations = [
        {"id": 1, "image_id": 9, "category_id": PERSON, "iscrowd": 0, "area": 160.0,
         "segmentation": [[2, 2, 22, 2, 22, 14, 2, 14]], "bbox": [2, 2, 20, 12]},
        {"id": 2, "image_id": 9, "category_id": DOG, "iscrowd": 0, "area": 20.0,
         "segmentation": dog_rle, "bbox": [10, 5, 5, 4]},
        {"id": 3, "image_id": 25, "category_id": PERSON, "iscrowd": 1, "area": 128.0,
         "segmentation": _uncompressed_rle(crowd), "bbox": [0, 0, 16, 8]},
        {"id": 4, "image_id": 25, "category_id": TOOTHBRUSH, "iscrowd": 0, "area": 36.0,
         "segmentation": [[5, 5, 11, 5, 11, 11, 5, 11]], "bbox": [5, 5, 6, 6]},
    ]  # fmt: skip
    categories = [
        {"id": i, "name": COCO_CLASSES[coco_category_map()[i]]} for i in (PERSON, DOG, TOOTHBRUSH)
    ]
    path = tmp_path / "coco" / "instances_train2014.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path, image_dir


def test_category_map_is_the_standard_80() -> None:
    mapping = coco_category_map()
    assert len(mapping) == 80 == len(COCO_CLASSES)
    assert sorted(mapping.values()) == list(range(80))
    assert mapping[PERSON] == 0 and mapping[DOG] == 16 and mapping[TOOTHBRUSH] == 79
    assert 12 not in mapping and 91 not in mapping


def test_render_polygons_rle_and_crowd(coco: tuple[Path, Path], tmp_path: Path) -> None:
    annotation, image_dir = coco
    out = render_coco_masks(annotation, image_dir, tmp_path / "masks")
    first = read_mask(out / "COCO_train2014_000000000009.png")
    assert first.shape == (20, 30)
    assert first[0, 0] == 0 and first[3, 3] == 1 and first[12, 20] == 1  # polygon person
    assert (first[5:9, 10:15] == 17).all()  # compressed-RLE dog drawn over the larger person
    assert set(np.unique(first).tolist()) == {0, 1, 17}
    second = read_mask(out / "COCO_train2014_000000000025.png")
    assert (second[0:4, 0:4] == 255).all()  # crowd: ignored
    assert second[6, 8] == 80  # toothbrush over the crowd region
    assert second[9, 8] == 80 and second[14, 2] == 0
    with Image.open(out / "COCO_train2014_000000000025.png") as image:
        assert image.mode == "L"
    assert (read_mask(out / "COCO_train2014_000000000030.png") == 0).all()  # no annotations


def test_masks_are_rendered_once(coco: tuple[Path, Path], tmp_path: Path) -> None:
    annotation, image_dir = coco
    out = render_coco_masks(annotation, image_dir, tmp_path / "masks")
    target = out / "COCO_train2014_000000000009.png"
    marker = np.full((20, 30), 3, np.uint8)
    Image.fromarray(marker).save(target)  # a cached file is never re-rendered ...
    render_coco_masks(annotation, image_dir, out)
    assert (read_mask(target) == 3).all()
    render_coco_masks(annotation, image_dir, out, overwrite=True)  # ... unless asked
    assert read_mask(target)[6, 12] == 17


def test_coco_labels_and_cli(coco: tuple[Path, Path], tmp_path: Path) -> None:
    annotation, _ = coco
    labels = make_coco_cls_labels(annotation)
    assert set(labels) == {f"COCO_train2014_0000000000{n:02d}" for n in (9, 25, 30)}
    first = labels["COCO_train2014_000000000009"]
    assert first.shape == (80,) and first.dtype == np.float32
    assert np.flatnonzero(first).tolist() == [0, 16]
    assert np.flatnonzero(labels["COCO_train2014_000000000025"]).tolist() == [0, 79]
    no_crowd = make_coco_cls_labels(annotation, include_crowd=False, skip_empty=True)
    assert np.flatnonzero(no_crowd["COCO_train2014_000000000025"]).tolist() == [79]
    assert "COCO_train2014_000000000030" not in no_crowd
    out = tmp_path / "cls_labels_coco.npy"
    assert main(["make-cls-labels", "--coco-json", str(annotation), "--out", str(out)]) == 0
    saved = load_cls_labels(out)
    assert set(saved) == {"COCO_train2014_000000000009", "COCO_train2014_000000000025"}
    np.testing.assert_array_equal(saved["COCO_train2014_000000000009"], first)


def test_coco_dataset(coco: tuple[Path, Path]) -> None:
    annotation, image_dir = coco
    dataset = COCOSegmentation(annotation, image_dir)
    assert dataset.ids == ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    assert (
        image_dir.parent / "SegmentationClass" / "train2014" / "COCO_train2014_000000000009.png"
    ).is_file()
    sample = dataset[0]
    assert sample["image"].shape == (3, 20, 30) and sample["labels"].shape == (80,)
    assert sample["mask"].dtype == torch.int64 and int(sample["mask"][6, 12]) == 17
    cropped = COCOSegmentation(annotation, image_dir, transform=TrainTransform(24), seed=0)[1]
    assert (
        cropped["image"].shape == (3, 24, 24) and (cropped["mask"][~cropped["valid"]] == 255).all()
    )
    no_masks = COCOSegmentation(annotation, image_dir, with_masks=False)[0]
    assert "mask" not in no_masks


def test_coco_errors_name_the_file(coco: tuple[Path, Path], tmp_path: Path) -> None:
    annotation, image_dir = coco
    with pytest.raises(DataFileError, match=r"missing\.json"):
        make_coco_cls_labels(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json"):
        make_coco_cls_labels(tmp_path / "bad.json")
    data = json.loads(annotation.read_text())
    data["annotations"][0]["category_id"] = 12  # not one of the 80
    data["categories"].append({"id": 12, "name": "street sign"})
    (tmp_path / "odd.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"odd\.json.*category id 12"):
        make_coco_cls_labels(tmp_path / "odd.json")
    (image_dir / "COCO_train2014_000000000025.jpg").unlink()
    with pytest.raises(DataFileError, match=r"COCO_train2014_000000000025\.jpg"):
        render_coco_masks(annotation, image_dir, tmp_path / "m2")


def test_missing_pycocotools_names_the_extra(
    coco: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match=r"seedkit-wsss\[coco\]"):
        make_coco_cls_labels(coco[0])
