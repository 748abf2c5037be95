"""A small procedurally generated dataset in the real VOC 2012 layout.

:func:`make_demo_data` writes multi-object scenes with exact masks: eight VOC
classes, each with its own silhouette and surface texture, on cluttered
backgrounds. Colour is a weak cue only (each class has a preferred hue, but a
third of the objects take any hue), so a classifier has to learn shape and
texture. Everything is deterministic by seed: image ``i`` depends only on
``(seed, i)``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from seedkit.checks import check_int
from seedkit.data.constants import IGNORE_INDEX, VOC_CLASSES
from seedkit.data.io import PathLike, atomic_write_bytes, save_cls_labels, write_mask_png
from seedkit.data.labels import labels_from_mask
from seedkit.errors import InvalidValueError

__all__ = ["DEMO_CLASSES", "demo_id", "make_demo_data"]

#: The demo's classes: VOC class name -> (silhouette, texture). Their mask values
#: and label indices are those of :data:`~seedkit.data.VOC_CLASSES`.
DEMO_CLASSES: dict[str, tuple[str, str]] = {
    "aeroplane": ("plane", "gradient"),
    "bird": ("star", "spots"),
    "boat": ("triangle", "stripes"),
    "bottle": ("capsule", "speckle"),
    "bus": ("square", "checker"),
    "cat": ("disc", "radial"),
    "person": ("figure", "hatch"),
    "tvmonitor": ("ring", "plain"),
}

_CLASS_HUES = {
    "aeroplane": 0.58,
    "bird": 0.12,
    "boat": 0.0,
    "bottle": 0.33,
    "bus": 0.15,
    "cat": 0.07,
    "person": 0.85,
    "tvmonitor": 0.67,
}


@dataclass
class _Object:
    name: str
    instance: np.ndarray  # bool (H, W), full silhouette
    colour: np.ndarray  # float32 (H, W, 3), valid where instance


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    hue = hue % 1.0
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = (
        value * (1 - saturation),
        value * (1 - f * saturation),
        value * (1 - (1 - f) * saturation),
    )
    rgb = [
        (value, t, p),
        (q, value, p),
        (p, value, t),
        (p, q, value),
        (t, p, value),
        (value, p, q),
    ][i]
    return np.asarray(rgb, dtype=np.float32) * 255.0


def _silhouette(shape: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r2 = u * u + v * v
    if shape == "disc":
        return r2 <= 1.0
    if shape == "ring":
        inner = rng.uniform(0.45, 0.6)
        return (r2 <= 1.0) & (r2 >= inner * inner)
    if shape == "square":
        aspect = rng.uniform(0.75, 1.0)
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8 * aspect)
    if shape == "triangle":
        inside = np.ones(u.shape, dtype=bool)
        for angle in (-90.0, 30.0, 150.0):
            phi = math.radians(angle)
            inside &= u * math.cos(phi) + v * math.sin(phi) <= 0.5
        return inside
    if shape == "star":
        angle = np.arctan2(v, u)
        return np.sqrt(r2) <= 0.6 + 0.38 * np.cos(5 * angle)
    if shape == "capsule":
        length = rng.uniform(0.55, 0.7)
        du = np.clip(np.abs(u) - length, 0, None)
        return du * du + v * v <= 0.33**2
    if shape == "plane":
        fuselage = (np.abs(v) <= 0.15) & (np.abs(u) <= 1.0)
        wings = (np.abs(u - 0.1) <= 0.18) & (np.abs(v) <= 0.9)
        tail = (np.abs(u + 0.82) <= 0.12) & (np.abs(v) <= 0.4)
        return fuselage | wings | tail
    if shape == "figure":
        body = (u / 0.42) ** 2 + ((v + 0.2) / 0.72) ** 2 <= 1.0
        head = u * u + (v - 0.72) ** 2 <= 0.26**2
        return body | head
    raise InvalidValueError("shape", "a demo silhouette", shape)  # pragma: no cover


def _texture(kind: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    frequency = rng.uniform(0.8, 1.25)
    phase = rng.uniform(0, 2 * math.pi)
    if kind == "gradient":
        return np.clip(0.5 + 0.5 * u, 0, 1)
    if kind == "spots":
        f = 5.0 * frequency
        return ((np.sin(f * u * math.pi + phase) * np.sin(f * v * math.pi)) > 0.45).astype(
            np.float32
        )
    if kind == "stripes":
        return (np.sin(4.5 * frequency * v * math.pi + phase) > 0).astype(np.float32)
    if kind == "speckle":
        return (rng.random(u.shape) > 0.6).astype(np.float32)
    if kind == "checker":
        f = 3.0 * frequency
        return ((np.floor(f * (u + 2)) + np.floor(f * (v + 2))) % 2).astype(np.float32)
    if kind == "radial":
        return 0.5 + 0.5 * np.sin(6.0 * frequency * np.sqrt(u * u + v * v) * math.pi + phase)
    if kind == "hatch":
        return (np.sin(4.0 * frequency * (u + v) * math.pi + phase) > 0.3).astype(np.float32)
    if kind == "plain":
        return np.full(u.shape, 0.15, dtype=np.float32)
    raise InvalidValueError("texture", "a demo texture", kind)  # pragma: no cover


def _smooth_noise(
    rng: np.random.Generator, height: int, width: int, cells: int, channels: int
) -> np.ndarray:
    grid = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    layers = [
        np.asarray(
            Image.fromarray(grid[..., c]).resize((width, height), Image.Resampling.BICUBIC),
            np.float32,
        )
        for c in range(channels)
    ]
    return np.stack(layers, axis=-1) / 255.0 - 0.5


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
    low = _hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.2, 0.8))
    high = _hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.95))
    image = low * (1 - ramp[..., None]) + high * ramp[..., None]
    image += 90.0 * _smooth_noise(rng, height, width, int(rng.integers(3, 7)), 3)
    if rng.random() < 0.5:  # faint background pattern (grass, wallpaper...)
        freq = rng.uniform(0.05, 0.2)
        theta = rng.uniform(0, math.pi)
        pattern = np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy))
        image += 18.0 * pattern[..., None]
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):  # distractor strokes
        points = [
            (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
            for _ in range(int(rng.integers(2, 4)))
        ]
        colour = tuple(
            int(c) for c in _hsv_to_rgb(rng.random(), rng.uniform(0.2, 1), rng.uniform(0.2, 1))
        )
        draw.line(points, fill=colour, width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 4))):  # small blobs
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(2, 6)
        colour = tuple(
            int(c) for c in _hsv_to_rgb(rng.random(), rng.uniform(0.2, 1), rng.uniform(0.2, 1))
        )
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    return np.asarray(canvas, dtype=np.float32)


def _make_object(name: str, rng: np.random.Generator, height: int, width: int) -> _Object:
    shape, texture = DEMO_CLASSES[name]
    side = min(height, width)
    radius = rng.uniform(0.17, 0.33) * side
    cy = rng.uniform(0.12, 0.88) * height
    cx = rng.uniform(0.12, 0.88) * width
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = (xx - cx) / radius, (yy - cy) / radius
    u = math.cos(theta) * dx + math.sin(theta) * dy
    v = -math.sin(theta) * dx + math.cos(theta) * dy
    instance = _silhouette(shape, u, v, rng)
    hue = _CLASS_HUES[name] + rng.normal(0, 0.04) if rng.random() < 0.65 else rng.random()
    first = _hsv_to_rgb(hue, rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95))
    second = _hsv_to_rgb(
        hue + rng.uniform(-0.15, 0.15), rng.uniform(0.2, 0.9), rng.uniform(0.1, 0.5)
    )
    pattern = _texture(texture, u, v, rng)[..., None]
    shading = (
        1.0 - 0.25 * np.clip(0.5 * (u * math.cos(theta) + v * math.sin(theta)), -1, 1)[..., None]
    )
    colour = (first * (1 - pattern) + second * pattern) * shading
    return _Object(name=name, instance=instance, colour=colour.astype(np.float32))


def _border(instances: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` (chessboard distance) of a different instance."""
    padded = np.pad(instances, width, mode="edge")
    height, cols = instances.shape
    edge = np.zeros(instances.shape, dtype=bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                shifted = padded[width + dy : width + dy + height, width + dx : width + dx + cols]
                edge |= shifted != instances
    return edge


def _scene(
    rng: np.random.Generator, height: int, width: int, names: list[str], border: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, tuple[int, int, int, int], bool]]]:
    image = _background(rng, height, width)
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    chosen: list[str] = []
    for _ in range(count):
        fresh = [n for n in names if n not in chosen]
        if chosen and (rng.random() < 0.15 or not fresh):
            chosen.append(str(rng.choice(chosen)))
        else:
            chosen.append(str(rng.choice(fresh)))
    instances = np.zeros((height, width), dtype=np.int32)  # 0 background, k = k-th object
    objects: list[_Object] = []
    for name in chosen:
        for _ in range(25):
            candidate = _make_object(name, rng, height, width)
            if candidate.instance.sum() < 0.5 * math.pi * (0.17 * min(height, width)) ** 2 * 0.3:
                continue  # mostly outside the image
            trial = np.where(candidate.instance, len(objects) + 1, instances)
            if all(
                (trial == k + 1).sum() >= 0.4 * obj.instance.sum() for k, obj in enumerate(objects)
            ):
                objects.append(candidate)
                instances = trial
                break
    for k, obj in enumerate(objects):
        visible = instances == k + 1
        image[visible] = obj.colour[visible]
    image += rng.normal(0, 5.0, image.shape)
    mask = np.zeros((height, width), dtype=np.uint8)
    annotations = []
    for k, obj in enumerate(objects):
        visible = instances == k + 1
        mask[visible] = VOC_CLASSES.index(obj.name) + 1
        rows, cols = np.nonzero(visible)
        box = (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1)
        truncated = box[0] == 1 or box[1] == 1 or box[2] == width or box[3] == height
        annotations.append((obj.name, box, truncated))
    if border > 0:
        mask[_border(instances, border)] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), mask, annotations


def _xml(
    image_id: str,
    height: int,
    width: int,
    annotations: list[tuple[str, tuple[int, int, int, int], bool]],
) -> str:
    lines = [
        "<annotation>",
        "\t<folder>VOC2012</folder>",
        f"\t<filename>{escape(image_id)}.jpg</filename>",
        "\t<source>",
        "\t\t<database>seedkit demo (procedural)</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>1</segmented>",
    ]
    for name, (xmin, ymin, xmax, ymax), truncated in annotations:
        lines += [
            "\t<object>",
            f"\t\t<name>{name}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(truncated)}</truncated>",
            "\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{xmin}</xmin>",
            f"\t\t\t<ymin>{ymin}</ymin>",
            f"\t\t\t<xmax>{xmax}</xmax>",
            f"\t\t\t<ymax>{ymax}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def demo_id(index: int) -> str:
    """The id of the demo image ``index``: VOC's ``YYYY_NNNNNN`` form, from ``2000_000000``.

    Every reference format accepts it: psa / SEAM / MCTformer / ToCo string keys
    and IRN's integer keys (``2000_000032`` -> ``2000000032``, which IRN's
    ``decode_int_filename`` turns back into the id). The year (2000, before VOC's
    2007-2012) marks the image as synthetic; it counts up every million images,
    so the ids sort in index order.

    Example:
        >>> from seedkit.data.demo import demo_id
        >>> demo_id(0), demo_id(32), demo_id(1_000_000)
        ('2000_000000', '2000_000032', '2001_000000')
    """
    return f"{2000 + index // 1_000_000}_{index % 1_000_000:06d}"


def make_demo_data(
    root: PathLike,
    num_images: int = 100,
    seed: int = 0,
    image_size: tuple[int, int] = (192, 224),
    val_fraction: float = 0.3,
    border: int = 1,
    sbd: bool = False,
    classes: tuple[str, ...] | None = None,
) -> Path:
    """Write a small procedurally generated dataset in the VOC 2012 layout.

    Writes ``ROOT/VOCdevkit/VOC2012/`` with ``JPEGImages/<id>.jpg``,
    ``SegmentationClass/<id>.png`` (palette PNGs with a 255 band of ``2 *
    border`` pixels along every object outline, like VOC),
    ``Annotations/<id>.xml`` (VOC XML with names and boxes),
    ``ImageSets/Segmentation/{train,val,trainval}.txt`` and ``cls_labels.npy``
    (psa format). With ``sbd=True`` it also writes ``SegmentationClassAug``
    (plain index PNGs without the border, as the SBD set) and ``train_aug.txt``.

    Each image holds 1-3 objects (about two thirds of the images have two or
    more classes) of the classes in :data:`DEMO_CLASSES`, each with its own
    silhouette and texture, random size, rotation and colour, on backgrounds
    of gradients, noise, patterns and distractor strokes. Later objects occlude
    earlier ones (the mask shows the top-most); every object keeps at least
    40% of its area visible.

    Args:
        root: Output folder (created).
        num_images: Number of images (VOC-style ids ``2000_000000``, ``2000_000001``...,
            see :func:`demo_id`).
        seed: Random seed; the same seed writes byte-identical files.
        image_size: ``(height, width)`` of every image.
        val_fraction: Fraction of the images in the ``val`` list.
        border: Half-width of the 255 border band (0 for none).
        sbd: Also write the SBD-style ``SegmentationClassAug`` and ``train_aug.txt``.
        classes: Subset of :data:`DEMO_CLASSES` to draw from (default all).

    Returns:
        The ``VOC2012`` folder.

    Example:
        >>> import tempfile
        >>> voc = make_demo_data(tempfile.mkdtemp(), num_images=3, seed=1)
        >>> sorted(p.name for p in voc.iterdir())  # doctest: +NORMALIZE_WHITESPACE
        ['Annotations', 'ImageSets', 'JPEGImages', 'SegmentationClass', 'cls_labels.npy']
    """
    num_images = check_int("num_images", num_images, 1)
    seed = check_int("seed", seed, 0)
    if len(image_size) != 2 or min(int(s) for s in image_size) < 32:
        raise InvalidValueError("image_size", "(height, width), each >= 32", image_size)
    if not 0 <= val_fraction < 1:
        raise InvalidValueError("val_fraction", "a number in [0, 1)", val_fraction)
    names = list(classes) if classes is not None else list(DEMO_CLASSES)
    unknown = [n for n in names if n not in DEMO_CLASSES]
    if unknown or not names:
        raise InvalidValueError("classes", f"a non-empty subset of {sorted(DEMO_CLASSES)}", classes)
    height, width = (int(s) for s in image_size)
    voc = Path(root).expanduser() / "VOCdevkit" / "VOC2012"
    ids = [demo_id(index) for index in range(num_images)]
    labels = {}
    for index, image_id in enumerate(ids):
        rng = np.random.default_rng([int(seed), index])
        image, mask, annotations = _scene(rng, height, width, names, int(border))
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=92)
        atomic_write_bytes(voc / "JPEGImages" / f"{image_id}.jpg", buffer.getvalue())
        write_mask_png(voc / "SegmentationClass" / f"{image_id}.png", mask, palette=True)
        atomic_write_bytes(
            voc / "Annotations" / f"{image_id}.xml",
            _xml(image_id, height, width, annotations).encode(),
        )
        if sbd:
            full = mask.copy()
            if border > 0:  # SBD masks have no border band: fill it from the nearest object
                full = _fill_border(full)
            write_mask_png(voc / "SegmentationClassAug" / f"{image_id}.png", full, palette=False)
        labels[image_id] = labels_from_mask(mask, len(VOC_CLASSES))
    order = np.random.default_rng([int(seed), 2**31]).permutation(num_images)
    num_val = round(val_fraction * num_images) if num_images > 1 else 0
    val = sorted(ids[i] for i in order[:num_val])
    train = sorted(ids[i] for i in order[num_val:])
    lists = voc / "ImageSets" / "Segmentation"
    atomic_write_bytes(lists / "train.txt", ("\n".join(train) + "\n").encode())
    atomic_write_bytes(lists / "val.txt", ("\n".join(val) + "\n").encode() if val else b"")
    atomic_write_bytes(lists / "trainval.txt", ("\n".join(ids) + "\n").encode())
    if sbd:
        atomic_write_bytes(lists / "train_aug.txt", ("\n".join(train) + "\n").encode())
    save_cls_labels(voc / "cls_labels.npy", labels)
    return voc


def _fill_border(mask: np.ndarray) -> np.ndarray:
    """Replace 255 pixels by the label of a neighbouring non-255 pixel (iteratively)."""
    out = mask.copy()
    for _ in range(16):
        holes = out == IGNORE_INDEX
        if not holes.any():
            break
        padded = np.pad(out, 1, mode="edge")
        for dy, dx in ((0, 1), (1, 0), (1, 2), (2, 1)):
            neighbour = padded[dy : dy + out.shape[0], dx : dx + out.shape[1]]
            take = holes & (neighbour != IGNORE_INDEX)
            out[take] = neighbour[take]
            holes &= ~take
    return out
