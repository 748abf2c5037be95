"""The procedural demo dataset: layout, determinism and consistency of its files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seedkit.cli import main
from seedkit.data import (
    DEMO_CLASSES,
    VOC_CLASSES,
    VOCSegmentation,
    load_cls_labels,
    make_cls_labels,
    make_demo_data,
    read_id_list,
    read_image,
    read_mask,
)
from seedkit.errors import InvalidValueError


def _files(voc: Path) -> dict[str, bytes]:
    return {str(p.relative_to(voc)): p.read_bytes() for p in sorted(voc.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("demo"), num_images=40, seed=0)


def test_layout_is_the_real_vocdevkit_layout(demo: Path) -> None:
    assert demo.name == "VOC2012" and demo.parent.name == "VOCdevkit"
    ids = read_id_list(demo, "trainval")
    train, val = read_id_list(demo, "train"), read_id_list(demo, "val")
    assert sorted(train + val) == sorted(ids) and not set(train) & set(val)
    assert len(val) == 12
    for image_id in ids[:5]:
        with Image.open(demo / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.format == "JPEG" and image.size == (224, 192)
        with Image.open(demo / "SegmentationClass" / f"{image_id}.png") as mask:
            assert mask.mode == "P" and mask.size == (224, 192)
        root = ET.parse(demo / "Annotations" / f"{image_id}.xml").getroot()
        assert root.findtext("filename") == f"{image_id}.jpg"
        assert root.findtext("size/width") == "224" and root.findtext("size/height") == "192"
    assert not (demo / "SegmentationClassAug").exists()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = _files(make_demo_data(tmp_path / "a", num_images=6, seed=3))
    b = _files(make_demo_data(tmp_path / "b", num_images=6, seed=3))
    c = _files(make_demo_data(tmp_path / "c", num_images=6, seed=4))
    assert a == b
    assert a.keys() == c.keys()
    differing = [name for name in a if a[name] != c[name]]
    assert all(name in differing for name in a if name.startswith("JPEGImages"))
    # image i does not depend on how many images are written
    d = _files(make_demo_data(tmp_path / "d", num_images=3, seed=3))
    assert all(
        d[name] == a[name] for name in d if name.startswith(("JPEGImages", "SegmentationClass"))
    )


def test_labels_from_masks_xml_and_file_agree(demo: Path) -> None:
    ids = read_id_list(demo, "trainval")
    from_masks = make_cls_labels(demo, ids, source="masks")
    from_xml = make_cls_labels(demo, ids, source="xml")
    shipped = load_cls_labels(demo / "cls_labels.npy")
    assert set(shipped) == set(ids)
    for image_id in ids:
        np.testing.assert_array_equal(from_masks[image_id], from_xml[image_id])
        np.testing.assert_array_equal(from_masks[image_id], shipped[image_id])


def test_scenes_are_varied_multi_object_and_use_the_demo_classes(demo: Path) -> None:
    labels = np.stack(list(load_cls_labels(demo / "cls_labels.npy").values()))
    used = {VOC_CLASSES[i] for i in np.flatnonzero(labels.sum(axis=0))}
    assert used == set(DEMO_CLASSES)
    per_image = labels.sum(axis=1)
    assert per_image.min() >= 1 and per_image.max() <= 3
    assert (per_image >= 2).mean() >= 0.4


def test_masks_have_voc_border_band_and_match_xml_boxes(demo: Path) -> None:
    for image_id in read_id_list(demo, "val")[:6]:
        mask = read_mask(demo / "SegmentationClass" / f"{image_id}.png", num_labels=21)
        border = mask == 255
        assert border.any()
        # the band separates classes: no object pixel touches background directly (4-neighbourhood)
        horizontal = (mask[:, 1:] != mask[:, :-1]) & ~border[:, 1:] & ~border[:, :-1]
        vertical = (mask[1:] != mask[:-1]) & ~border[1:] & ~border[:-1]
        assert not horizontal.any() and not vertical.any()
        root = ET.parse(demo / "Annotations" / f"{image_id}.xml").getroot()
        boxes: dict[int, list[list[int]]] = {}
        for obj in root.iter("object"):
            value = VOC_CLASSES.index(obj.findtext("name")) + 1
            boxes.setdefault(value, []).append(
                [int(obj.findtext(f"bndbox/{k}")) - 1 for k in ("xmin", "ymin", "xmax", "ymax")]
            )
        for value, class_boxes in boxes.items():
            rows, cols = np.nonzero(mask == value)
            covered = np.zeros(mask.shape, dtype=bool)
            for xmin, ymin, xmax, ymax in class_boxes:
                assert 0 <= xmin <= xmax < mask.shape[1] and 0 <= ymin <= ymax < mask.shape[0]
                covered[ymin : ymax + 1, xmin : xmax + 1] = True
            assert covered[rows, cols].all()  # every pixel of the class lies in one of its boxes


def test_objects_are_not_separable_by_mean_colour_alone(demo: Path) -> None:
    """Each class takes hues that overlap with other classes' hues."""
    means: dict[int, list[np.ndarray]] = {}
    for image_id in read_id_list(demo, "trainval"):
        image = read_image(demo / "JPEGImages" / f"{image_id}.jpg").astype(float)
        mask = read_mask(demo / "SegmentationClass" / f"{image_id}.png")
        for value in set(np.unique(mask).tolist()) - {0, 255}:
            means.setdefault(value, []).append(image[mask == value].mean(axis=0))
    spreads = [np.std(np.stack(v), axis=0).mean() for v in means.values() if len(v) >= 3]
    assert spreads and min(spreads) > 15.0


def test_sbd_option_and_dataset_reading(tmp_path: Path) -> None:
    voc = make_demo_data(tmp_path, num_images=5, seed=1, image_size=(48, 64), sbd=True)
    assert read_id_list(voc, "train_aug") == read_id_list(voc, "train")
    dataset = VOCSegmentation(voc, "train_aug")
    sample = dataset[0]
    aug = read_mask(voc / "SegmentationClassAug" / f"{sample['id']}.png")
    with Image.open(voc / "SegmentationClassAug" / f"{sample['id']}.png") as image:
        assert image.mode == "L"
    assert 255 not in aug
    np.testing.assert_array_equal(sample["mask"].numpy(), aug)


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match="num_images"):
        make_demo_data(tmp_path, num_images=0)
    with pytest.raises(InvalidValueError, match="image_size"):
        make_demo_data(tmp_path, image_size=(16, 16))
    with pytest.raises(InvalidValueError, match="classes"):
        make_demo_data(tmp_path, classes=("dog",))


def test_cli_make_demo_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "make-demo-data",
            str(tmp_path),
            "--num-images",
            "4",
            "--seed",
            "2",
            "--image-size",
            "40",
            "56",
        ]
    )
    assert code == 0 and "wrote 4 images" in capsys.readouterr().out
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    assert len(list((voc / "JPEGImages").iterdir())) == 4
    with Image.open(next((voc / "JPEGImages").iterdir())) as image:
        assert image.size == (56, 40)
    expected = _files(make_demo_data(tmp_path / "api", num_images=4, seed=2, image_size=(40, 56)))
    assert _files(voc) == expected


def irn_decode_int_filename(int_filename: int) -> str:
    """IRN's voc12/dataloader.py decode_int_filename, written out."""
    s = str(int(int_filename))
    return s[:4] + "_" + s[4:]


def test_demo_ids_are_voc_style_and_irn_integer_labels_work(demo: Path, tmp_path: Path) -> None:
    """make-demo-data, then make-cls-labels --key-type int (IRN's cls_labels.npy) succeeds."""
    ids = read_id_list(demo, "trainval")
    assert ids[:2] == ["2000_000000", "2000_000001"] and ids == sorted(ids)
    assert all(len(i) == 11 and i[4] == "_" and i.replace("_", "").isdigit() for i in ids)
    out = tmp_path / "cls_labels.npy"
    args = ["make-cls-labels", "--voc-root", str(demo.parent), "--list", "train"]
    assert main([*args, "--key-type", "int", "--out", str(out)]) == 0
    raw = np.load(out, allow_pickle=True).item()  # as IRN's load_image_label_list_from_npy
    assert all(isinstance(key, int) for key in raw)
    train = read_id_list(demo, "train")
    assert sorted(irn_decode_int_filename(key) for key in raw) == train
    labels = load_cls_labels(demo / "cls_labels.npy")
    for key, value in raw.items():
        np.testing.assert_array_equal(value, labels[irn_decode_int_filename(key)])
