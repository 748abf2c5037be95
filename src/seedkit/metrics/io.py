"""Readers for the seed and ground-truth files of the reference codebases."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seedkit.checks import check_num_labels, is_integer
from seedkit.data import read_mask
from seedkit.errors import DataError, DataFileError
from seedkit.files import load_npy

__all__ = ["load_gt_mask", "load_psa_cam", "load_psa_maps"]

PathLike = str | os.PathLike


def load_psa_maps(
    path: PathLike, num_fg_classes: int, shape: tuple[int, int] | None = None
) -> dict[int, np.ndarray]:
    """Read one seed file as ``{foreground class index: HxW float32 map}``.

    Accepted layouts (``np.save`` of a dict, read with :func:`seedkit.files.load_npy`,
    which refuses a pickle that would run code):

    - psa / SEAM / MCTformer: ``{class_index: HxW map in [0, 1]}`` with 0-based
      foreground indices (no background);
    - IRN: ``{"keys": indices, "high_res": (N, H, W), ...}`` (``"cam"`` is used
      when ``"high_res"`` is absent); a background row is not expected.

    Args:
        path: the ``<id>.npy`` file.
        num_fg_classes: number of foreground classes (20 for VOC).
        shape: the expected ``(H, W)`` (the ground truth's), or ``None``.

    Returns:
        The maps of the classes in the file, float32.

    Raises:
        DataFileError: the file does not exist.
        DataError: unreadable file, not a dict, a class index outside
            ``[0, num_fg_classes)``, maps that are not 2-D, of different or
            unexpected size, non-finite or outside ``[0, 1]``, or a pickle that
            would run code; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "seed file", "seeds are stored as <id>.npy per image")
    raw = load_npy(path, "a .npy file holding a pickled dict")
    if not isinstance(raw, dict):
        actual = (
            f"array of shape {raw.shape}" if isinstance(raw, np.ndarray) else type(raw).__name__
        )
        raise DataError(path, "a pickled dict {class_index: HxW map} (psa format)", actual)
    if "keys" in raw and ("high_res" in raw or "cam" in raw):
        keys = np.asarray(raw["keys"]).reshape(-1)
        stack = np.asarray(raw["high_res"] if "high_res" in raw else raw["cam"])
        if stack.ndim != 3 or stack.shape[0] != keys.size:
            raise DataError(
                path, f"IRN maps of shape ({keys.size}, H, W) matching 'keys'", stack.shape
            )
        items = list(zip(keys.tolist(), stack, strict=True))
    else:
        items = list(raw.items())
    maps: dict[int, np.ndarray] = {}
    map_shape = shape
    for key, value in items:
        if not is_integer(key):
            raise DataError(path, "integer class indices as keys", repr(key))
        key = int(key)
        if not 0 <= key < num_fg_classes:
            raise DataError(
                path,
                f"foreground class indices in [0, {num_fg_classes}) (0-based, no background)",
                f"class index {key}",
            )
        array = np.asarray(value)
        if array.ndim != 2:
            raise DataError(path, f"a 2-D map for class {key}", f"shape {array.shape}")
        if map_shape is not None and array.shape != tuple(map_shape):
            what = "the ground-truth size" if shape is not None else "the size of the other maps"
            raise DataError(
                path, f"maps of {what} {tuple(map_shape)}", f"class {key} of size {array.shape}"
            )
        map_shape = array.shape
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise DataError(path, f"finite values in the map of class {key}", "NaN or inf")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            # psa / SEAM / MCTformer and IRN's high_res all store max-normalised maps.
            raise DataError(
                path,
                f"values in [0, 1] in the map of class {key} (max-normalised seeds)",
                f"values in [{array.min():.4g}, {array.max():.4g}]",
            )
        maps[key] = array
    return maps


def load_psa_cam(
    path: PathLike, num_fg_classes: int, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Read one seed file as a dense ``(C_fg, H, W)`` float32 stack, zeros for absent classes.

    See :func:`load_psa_maps` for the accepted layouts and the errors. A file
    with no class at all needs ``shape`` to know its size.

    Args:
        path: the ``<id>.npy`` file.
        num_fg_classes: number of foreground classes ``C_fg``.
        shape: the expected ``(H, W)``, or ``None``.

    Returns:
        float32 array of shape ``(C_fg, H, W)``.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from seedkit.metrics import load_psa_cam
        >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
        >>> np.save(path, {3: np.ones((2, 4), np.float32)})
        >>> stack = load_psa_cam(path, 20)
        >>> stack.shape, float(stack[3].sum()), float(stack.sum())
        ((20, 2, 4), 8.0, 8.0)
    """
    maps = load_psa_maps(path, num_fg_classes, shape)
    if maps:
        size = next(iter(maps.values())).shape
    elif shape is not None:
        size = tuple(shape)
    else:
        raise DataError(path, "at least one class map (or a known shape)", "an empty dict")
    stack = np.zeros((num_fg_classes, *size), dtype=np.float32)
    for key, array in maps.items():
        stack[key] = array
    return stack


def load_gt_mask(
    path: PathLike,
    num_labels: int | None = None,
    ignore_index: int = 255,
    *,
    num_classes: int | None = None,
) -> np.ndarray:
    """Read a ground-truth mask: a VOC palette PNG or a plain index (grey) PNG.

    :func:`seedkit.data.read_mask` with RGB masks rejected (``colour=False``).

    Args:
        path: the mask file.
        num_labels: number of mask labels, background included (21 for VOC).
        ignore_index: the value that marks ignored pixels (VOC boundaries).
        num_classes: deprecated name of ``num_labels`` (the same count).

    Returns:
        ``(H, W)`` uint8 (or int32 for more than 255 classes) class ids.

    Raises:
        DataFileError: the file does not exist.
        DataError: unreadable, colour (RGB) instead of index, or class ids
            outside ``[0, num_labels)`` other than ``ignore_index``.
    """
    num_labels = check_num_labels("seedkit.metrics.load_gt_mask", num_labels, num_classes)
    return read_mask(path, num_labels, ignore_index, colour=False)
