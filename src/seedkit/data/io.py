"""Reading and writing the files of VOC-style datasets.

Every reader raises :class:`~seedkit.errors.DataFileError` when a file is missing
and :class:`~seedkit.errors.DataError` when it exists but cannot be used; both
messages name the file. Every writer is atomic: it writes a temporary file in the
destination folder and renames it, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from seedkit.checks import check_num_labels, is_integer
from seedkit.data.constants import VOC_PALETTE
from seedkit.errors import DataError, DataFileError, InvalidValueError
from seedkit.files import atomic_write, load_npy

__all__ = [
    "KEY_TYPES",
    "atomic_write_bytes",
    "load_cls_labels",
    "read_id_list",
    "read_image",
    "read_mask",
    "resolve_voc_root",
    "save_cls_labels",
    "write_mask_png",
]

PathLike = str | os.PathLike

_VOC_SUBDIRS = (
    "JPEGImages",
    "SegmentationClass",
    "SegmentationClassAug",
    "Annotations",
    "ImageSets",
)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, then rename).

    Args:
        path: Destination file; missing parent folders are created.
        data: The bytes to write.

    Returns:
        The destination path.

    Raises:
        OutputError: The file cannot be written (full disk, read-only folder...);
            the message names it, and a previous file at ``path`` is untouched.
    """
    return atomic_write(path, data)


def _open_image(path: PathLike, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, what)
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(
            path, f"a readable {what}", f"a corrupt or unsupported file ({error})"
        ) from error
    return image


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as RGB.

    Grey-scale, palette and RGBA files are converted to RGB.

    Args:
        path: Image file (JPEG, PNG, ...).

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        DataFileError: The file does not exist.
        DataError: The file is not a readable image.
    """
    image = _open_image(path, "image")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


#: Pillow modes of index masks: palette, grey, bilevel and 16/32-bit integer PNGs.
_INDEX_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L")


def read_mask(
    path: PathLike,
    num_labels: int | None = None,
    ignore_index: int = 255,
    colour: bool = True,
    *,
    num_classes: int | None = None,
) -> np.ndarray:
    """Read a label mask: a palette PNG (VOC ``SegmentationClass``) or a plain index PNG.

    The one mask reader of seedkit (datasets, class labels, pseudo masks and the
    ground truth of :func:`seedkit.metrics.evaluate_seeds`). Palette (mode
    ``"P"``) files give their palette indices, index files (mode ``"L"``,
    bilevel, or 16/32-bit integer PNGs) give their values; RGB files are decoded
    through the VOC colour map. ``ignore_index`` (255) means "ignore".

    Args:
        path: Mask file.
        num_labels: When given, the number of mask labels, background included
            (21 for VOC); any value ``>= num_labels`` other than ``ignore_index``
            is an error.
        ignore_index: the value that marks ignored pixels (VOC object borders).
        colour: decode RGB masks through the VOC colour map; ``False`` rejects
            them (an evaluation's ground truth is an index mask, as in psa / SEAM).
        num_classes: deprecated name of ``num_labels`` (the same count).

    Returns:
        ``(H, W)`` class ids, ``uint8`` (``int32`` when a value exceeds 255).

    Raises:
        DataFileError: The file does not exist.
        DataError: The file is corrupt, has an unsupported mode, a colour outside
            the VOC colour map, or a class id out of range.

    Example:
        >>> import tempfile, numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> mask = np.array([[0, 15], [255, 1]], dtype=np.uint8)
        >>> path = write_mask_png(folder + "/a.png", mask)
        >>> read_mask(path).tolist()
        [[0, 15], [255, 1]]
    """
    image = _open_image(path, "mask")
    mode = image.mode
    if colour and mode in ("RGB", "RGBA"):
        mask = _decode_colour_mask(path, np.asarray(image.convert("RGB")))
    elif mode in _INDEX_MODES:
        values = np.asarray(image)
        if values.dtype in (np.uint8, np.bool_):
            mask = values.astype(np.uint8)
        elif values.size and values.min() < 0:
            raise DataError(path, "class ids >= 0", f"values from {values.min()}")
        else:
            too_large = values.size and values.max() > 255
            mask = values.astype(np.int32 if too_large else np.uint8)
    else:
        mask = None
    if mask is None or mask.ndim != 2:
        raise DataError(path, "a palette or grey-level index mask", f"an image of mode {mode}")
    if num_labels is not None or num_classes is not None:
        num_labels = check_num_labels("seedkit.data.read_mask", num_labels, num_classes)
        _check_class_ids(path, mask, num_labels, ignore_index)
    return mask


def _decode_colour_mask(path: PathLike, rgb: np.ndarray) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    palette = VOC_PALETTE.astype(np.int32)
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    lookup = {int(code): index for index, code in enumerate(palette_codes)}
    unique, inverse = np.unique(codes, return_inverse=True)
    values = np.empty(len(unique), dtype=np.uint8)
    for position, code in enumerate(unique.tolist()):
        if code not in lookup:
            colour = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
            raise DataError(path, "colours of the VOC colour map", f"RGB colour {colour}")
        values[position] = lookup[code]
    return values[inverse].reshape(codes.shape)


def _check_class_ids(
    path: PathLike, mask: np.ndarray, num_labels: int, ignore_index: int = 255
) -> None:
    if mask.dtype == np.uint8:
        values = np.nonzero(np.bincount(mask.ravel(), minlength=256))[0]
    else:
        values = np.unique(mask)
    bad = values[(values != ignore_index) & ((values < 0) | (values >= num_labels))]
    if bad.size:
        raise DataError(
            path,
            f"class ids in [0, {num_labels}) or {ignore_index}",
            f"unknown class ids {bad[:5].tolist()}",
        )


def write_mask_png(path: PathLike, mask: np.ndarray, palette: bool = True) -> Path:
    """Write a class-id mask as a PNG, atomically.

    Args:
        path: Destination file; missing parent folders are created.
        mask: Integer array ``(H, W)`` with values in 0..255.
        palette: ``True`` writes a VOC palette PNG (mode ``"P"``, viewable in
            colour), ``False`` a plain index PNG (mode ``"L"``, like
            ``SegmentationClassAug``). Both read back to the same ids.

    Returns:
        The destination path.

    Raises:
        InvalidValueError: ``mask`` is not 2-D or has values outside 0..255.
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InvalidValueError("mask", "a 2-D (H, W) array", f"shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InvalidValueError(
            "mask", "values in 0..255", f"values in {array.min()}..{array.max()}"
        )
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    if palette:
        image.putpalette(VOC_PALETTE.tobytes())  # turns the "L" image into a "P" image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def resolve_voc_root(path: PathLike) -> Path:
    """Find the ``VOC2012`` folder (the one that holds ``JPEGImages``).

    Accepts the ``VOC2012`` folder itself, the ``VOCdevkit`` folder, or the folder
    that holds ``VOCdevkit``.

    Args:
        path: Any of the three folders.

    Returns:
        The folder that holds ``JPEGImages``.

    Raises:
        DataFileError: None of the candidates holds ``JPEGImages``; the message
            lists the folders that were tried.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataFileError(
            root, "dataset folder", "expected the VOC2012 folder, VOCdevkit, or its parent"
        )
    candidates = [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]
    for candidate in candidates:
        if (candidate / "JPEGImages").is_dir():
            return candidate
    tried = ", ".join(str(c / "JPEGImages") for c in candidates)
    raise DataFileError(
        root,
        "VOC 2012 layout",
        f"expected a folder JPEGImages (with {', '.join(_VOC_SUBDIRS[1:])}) in one of: {tried}",
    )


def read_id_list(voc_root: PathLike | None, list_name_or_path: PathLike) -> list[str]:
    """Read an image-id list.

    ``list_name_or_path`` is either a path to a list file, or a list name such as
    ``"train"``, ``"val"``, ``"trainval"`` or ``"train_aug"``, looked up as
    ``ImageSets/Segmentation/<name>.txt`` under the VOC root (then
    ``<root>/<name>.txt`` and ``ImageSets/Main/<name>.txt``). A bare name is
    looked up under the VOC root before the working directory. A missing
    ``train_aug`` falls back to ``train`` with a warning, so plain VOC 2012
    works without the SBD set.

    Each line holds an id (``2007_000032``) or, as in the DeepLab/SEAM lists, a
    path such as ``/JPEGImages/2007_000032.jpg /SegmentationClassAug/...``: the
    first token's file stem is the id. Blank lines are skipped.

    Args:
        voc_root: The dataset folder (see :func:`resolve_voc_root`); may be
            ``None`` when ``list_name_or_path`` is a file path.
        list_name_or_path: List name or file path.

    Returns:
        The ids, in file order.

    Raises:
        DataFileError: The list cannot be found; the message names the paths tried.
        DataError: The list is empty or holds an id twice.
    """
    direct = Path(list_name_or_path).expanduser()
    name = str(list_name_or_path)
    is_name = voc_root is not None and os.sep not in name and "/" not in name
    if direct.is_file() and not is_name:
        return _parse_id_list(direct)
    if voc_root is None:
        raise DataFileError(direct, "id list file")
    root = resolve_voc_root(voc_root)
    stem = name[:-4] if name.endswith(".txt") else name
    candidates = [
        root / "ImageSets" / "Segmentation" / f"{stem}.txt",
        root / f"{stem}.txt",
        root / "ImageSets" / "Main" / f"{stem}.txt",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return _parse_id_list(candidate)
    if direct.is_file():  # a bare file name in the working directory
        return _parse_id_list(direct)
    if stem == "train_aug":
        fallback = root / "ImageSets" / "Segmentation" / "train.txt"
        if fallback.is_file():
            warnings.warn(
                f"{candidates[0]} not found (SBD augmented set absent); using the VOC 2012 "
                f"train list {fallback} instead",
                stacklevel=2,
            )
            return _parse_id_list(fallback)
    raise DataFileError(
        candidates[0],
        f"id list {name!r}",
        "also tried "
        + ", ".join(str(c) for c in candidates[1:])
        + "; pass a list name or a file path",
    )


def _parse_id_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(path, "a UTF-8 text file with one image id per line", str(error)) from error
    ids = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        first = tokens[0]
        image_id = Path(first).stem if ("/" in first or "." in Path(first).name) else first
        if image_id in first_line:
            # A repeated id would count its image twice in every score.
            raise DataError(
                path,
                "each image id once",
                f"{image_id} on lines {first_line[image_id]} and {number}",
            )
        first_line[image_id] = number
        ids.append(image_id)
    if not ids:
        raise DataError(path, "at least one image id", "an empty list")
    return ids


#: Key types of ``cls_labels.npy``: ``"str"`` ids (psa, SEAM, MCTformer, ToCo) or
#: ``"int"`` numeric ids (IRN: ``2007_000032`` -> ``2007000032``).
KEY_TYPES: tuple[str, ...] = ("str", "int")


def _numeric_id(image_id: str) -> int:
    digits = image_id.replace("_", "")
    if not digits.isdigit():
        raise InvalidValueError(
            "labels", "ids of digits and '_' for integer keys (e.g. 2007_000032)", image_id
        )
    return int(digits)


def _id_from_key(key: object) -> str:
    if is_integer(key):
        text = str(int(key))
        # IRN stores VOC ids as integers (2007000032); its own decoding puts the '_' back.
        return f"{text[:4]}_{text[4:]}" if len(text) == 10 else text
    return str(key)


def load_cls_labels(path: PathLike) -> dict[str, np.ndarray]:
    """Load a class-label file (``cls_labels.npy``) of psa, IRN, SEAM or MCTformer.

    The file is a pickled dict ``{image id: float32 multi-hot vector}`` saved with
    :func:`numpy.save`, as written by psa, IRN, SEAM, MCTformer and
    :func:`save_cls_labels`; it is read with :func:`seedkit.files.load_npy`, which
    refuses a pickle that would run code. Integer keys (IRN's, ``2007000032``) are read back
    as VOC ids (``"2007_000032"``, the ``'_'`` after the year restored, as IRN's
    ``decode_int_filename`` does) when they have VOC's ten digits, else as
    their decimal string.

    Args:
        path: The ``.npy`` file.

    Returns:
        ``{id: float32 array (C,)}``.

    Raises:
        DataFileError: The file does not exist.
        DataError: The file is not a dict of equal-length vectors, or holds a pickle
            that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "class-label file", "make one with `seedkit make-cls-labels`")
    table = load_npy(path, "a numpy file holding a pickled dict")
    if not isinstance(table, Mapping):
        raise DataError(path, "a pickled dict {id: multi-hot vector}", type(table).__name__)
    labels: dict[str, np.ndarray] = {}
    length = None
    for key, value in table.items():
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
        if length is None:
            length = vector.shape[0]
        if vector.shape[0] != length:
            raise DataError(
                path, f"vectors of one length ({length})", f"length {vector.shape[0]} for {key!r}"
            )
        labels[_id_from_key(key)] = vector
    return labels


def save_cls_labels(
    path: PathLike, labels: Mapping[str, np.ndarray], key_type: str = "str"
) -> Path:
    """Save class labels in the format of psa / SEAM / MCTformer or IRN, atomically.

    Args:
        path: Destination ``.npy`` file.
        labels: ``{id: multi-hot vector}``; stored as float32.
        key_type: ``"str"`` keeps the ids (``"2007_000032"``: psa, SEAM,
            MCTformer, ToCo); ``"int"`` writes them as integers without the
            ``'_'`` (``2007000032``), the keys IRN's data loader looks up (it
            reads its id lists with ``np.loadtxt(..., dtype=np.int32)``).

    Returns:
        The destination path.

    Raises:
        InvalidValueError: an unknown ``key_type``, or an id with other
            characters than digits and ``'_'`` for ``key_type="int"``.

    Example:
        >>> import tempfile, numpy as np
        >>> path = save_cls_labels(tempfile.mkdtemp() + "/cls_labels.npy",
        ...                        {"2007_000032": np.eye(20)[0]})
        >>> np.load(path, allow_pickle=True).item()["2007_000032"][:3]
        array([1., 0., 0.], dtype=float32)
        >>> path = save_cls_labels(path, {"2007_000032": np.eye(20)[0]}, key_type="int")
        >>> list(np.load(path, allow_pickle=True).item())
        [2007000032]
    """
    if key_type not in KEY_TYPES:
        raise InvalidValueError("key_type", "'str' or 'int'", key_type)
    convert = _numeric_id if key_type == "int" else str
    table = {
        convert(str(k)): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in labels.items()
    }
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=True)
    return atomic_write_bytes(path, buffer.getvalue())
