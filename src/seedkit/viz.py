"""PNG overlays of seed maps: heat map per class and the thresholded seed, with class names.

Needs the ``examples`` extra (``pip install "seedkit-wsss[examples]"``), which brings
``imgviz``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from seedkit.checks import check_int
from seedkit.data import class_names_for
from seedkit.errors import ShapeError
from seedkit.files import atomic_write
from seedkit.metrics import as_seed_maps, seed_labels

__all__ = ["overlay_panel", "save_overlay", "seed_labels"]


def _imgviz() -> Any:
    try:
        import imgviz
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "seedkit.viz needs imgviz: install the extra with pip install 'seedkit-wsss[examples]'"
        ) from error
    return imgviz


def overlay_panel(
    image: np.ndarray,
    maps: Mapping[int, np.ndarray] | np.ndarray,
    threshold: float = 0.3,
    class_names: Sequence[str] | None = None,
    columns: int | None = None,
) -> np.ndarray:
    """Build a panel: the image, one heat map per class present, the seed overlay.

    Args:
        image: RGB image, uint8.
        maps: psa dict ``{fg class index: HxW in [0, 1]}`` or ``(C_fg, H, W)``.
        threshold: background threshold of the seed overlay.
        class_names: names indexed by class id (background first); VOC by default.
        columns: tiles per row (default: up to 4, in rows of balanced length); a
            shorter last row is centred on white, so no panel is ever empty.

    Returns:
        The panel as an RGB uint8 array.

    Shape:
        - image: :math:`(H, W, 3)`
        - output: :math:`(H', W', 3)`
    """
    imgviz = _imgviz()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShapeError("image", "(H, W, 3) uint8", f"{image.shape} {image.dtype}")
    shape = image.shape[:2]
    maps = as_seed_maps(maps)
    for key, array in maps.items():
        if array.shape != shape:
            raise ShapeError(f"maps[{key}]", f"the image size {shape}", array.shape)
    num_classes = max([len(class_names) if class_names else 21, *(k + 2 for k in maps)])
    names = class_names_for(num_classes - 1, class_names)
    font = max(10, min(shape) // 18)
    tiles = [imgviz.draw.text_in_rectangle(image, "lt", "image", font, (255, 255, 255))]
    for key in sorted(maps):
        scalar = np.clip(maps[key], 0.0, 1.0)
        if hasattr(imgviz, "colorize"):  # imgviz >= 2
            heat = imgviz.colorize(scalar, vmin=0.0, vmax=1.0, cmap="jet")
        else:  # pragma: no cover - imgviz 1.x
            heat = imgviz.depth2rgb(scalar, min_value=0.0, max_value=1.0)
        blended = (0.5 * image + 0.5 * heat).astype(np.uint8)
        title = f"{names[key + 1]} (max {float(maps[key].max()):.2f})"
        tiles.append(imgviz.draw.text_in_rectangle(blended, "lt", title, font, (255, 255, 255)))
    label = seed_labels(maps, threshold, shape)
    seed = imgviz.label2rgb(label, image, label_names=names, font_size=font, loc="rb")
    tiles.append(
        imgviz.draw.text_in_rectangle(
            seed, "lt", f"seed, t = {threshold:.2f}", font, (255, 255, 255)
        )
    )
    if columns is None:  # balanced rows of at most 4: 5 tiles as 3 + 2, 7 as 4 + 3
        rows = -(-len(tiles) // 4)
        columns = -(-len(tiles) // rows)
    return _sheet(imgviz, tiles, check_int("columns", columns, 1))


def _sheet(imgviz: Any, tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Rows of ``columns`` tiles; a shorter last row is centred on white, never black panels."""
    border = 4
    rows = [
        imgviz.tile(
            tiles[start : start + columns],
            row=1,
            col=len(tiles[start : start + columns]),
            border=(255, 255, 255),
            border_width=border,
        )
        for start in range(0, len(tiles), columns)
    ]
    width = max(row.shape[1] for row in rows)
    padded = []
    for index, row in enumerate(rows):
        if index:  # imgviz draws borders between tiles only: one between the rows too
            padded.append(np.full((border, width, 3), 255, np.uint8))
        left = (width - row.shape[1]) // 2
        canvas = np.full((row.shape[0], width, 3), 255, np.uint8)
        canvas[:, left : left + row.shape[1]] = row
        padded.append(canvas)
    return np.concatenate(padded, axis=0)


def save_overlay(
    image: np.ndarray,
    maps: Mapping[int, np.ndarray] | np.ndarray,
    path: str | os.PathLike,
    threshold: float = 0.3,
    class_names: Sequence[str] | None = None,
    columns: int | None = None,
) -> np.ndarray:
    """Write :func:`overlay_panel` as a PNG, atomically.

    Args:
        image: RGB image ``(H, W, 3)`` uint8.
        maps: psa dict or ``(C_fg, H, W)`` stack of maps in ``[0, 1]``.
        path: output ``.png`` file.
        threshold: background threshold of the seed overlay.
        class_names: names indexed by class id (background first).
        columns: tiles per row.

    Returns:
        The panel that was written.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from seedkit.viz import save_overlay
        >>> image = np.full((40, 60, 3), 128, np.uint8)
        >>> cam = np.zeros((40, 60), np.float32); cam[10:30, 20:40] = 1.0
        >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
        >>> panel = save_overlay(image, {14: cam}, path)
        >>> os.path.exists(path), panel.shape[1] > 3 * 60
        (True, True)
    """
    panel = overlay_panel(image, maps, threshold, class_names, columns)
    atomic_write(path, lambda stream: Image.fromarray(panel).save(stream, format="PNG"))
    return panel
