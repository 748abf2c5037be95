"""Write seed files (psa or IRN format) for a whole dataset, resumable and shardable."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from seedkit.cam.inference import DEFAULT_SCALES, infer_cams
from seedkit.checks import is_integer
from seedkit.errors import InvalidValueError, NonFiniteError, ShapeError
from seedkit.files import atomic_write

__all__ = ["IRN_CAM_STRIDE", "SEED_FORMATS", "save_psa_maps", "save_seeds", "write_cams"]

#: The seed file formats :func:`save_seeds` writes.
SEED_FORMATS: tuple[str, ...] = ("psa", "irn")

#: IRN's ``"cam"`` entry is at 1/4 of the image size: the size of its boundary map.
IRN_CAM_STRIDE = 4


def _check_maps(
    maps: Mapping[int, Any], size: tuple[int, int] | None
) -> tuple[dict[int, np.ndarray], tuple[int, int] | None]:
    if not isinstance(maps, Mapping):
        raise InvalidValueError("maps", "a dict {class_index: HxW map}", type(maps).__name__)
    checked: dict[int, np.ndarray] = {}
    shape = None if size is None else (int(size[0]), int(size[1]))
    for key in maps:
        if not is_integer(key) or key < 0:
            raise InvalidValueError("maps", "class indices >= 0 (0-based, no background)", key)
    for key in sorted(maps):
        value = maps[key]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        if array.ndim != 2:
            raise ShapeError(f"maps[{key}]", "(H, W)", array.shape)
        if shape is not None and array.shape != shape:
            raise ShapeError(f"maps[{key}]", f"{shape} like the other maps", array.shape)
        shape = array.shape
        if array.dtype.kind != "f":
            raise InvalidValueError(f"maps[{key}]", "a floating-point map", str(array.dtype))
        finite = np.isfinite(array)
        if not finite.all():
            raise NonFiniteError(f"maps[{key}]", int((~finite).sum()), array.size)
        checked[int(key)] = array
    return checked, shape


def _irn_document(maps: dict[int, np.ndarray], shape: tuple[int, int]) -> dict[str, Any]:
    keys = np.array(sorted(maps), dtype=np.int64)
    height, width = shape
    if keys.size:
        high_res = np.stack([maps[int(k)] for k in keys])
    else:
        high_res = np.zeros((0, height, width), np.float32)
    strided = (math.ceil(height / IRN_CAM_STRIDE), math.ceil(width / IRN_CAM_STRIDE))
    cam = torch.from_numpy(np.ascontiguousarray(high_res, dtype=np.float32))
    if keys.size:
        cam = F.interpolate(cam[None], size=strided, mode="area")[0]
        # IRN divides each class of its strided CAM by its maximum (+1e-5).
        cam = cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-5)
    else:
        cam = cam.new_zeros((0, *strided))
    return {"keys": keys, "cam": cam.contiguous(), "high_res": high_res}


def save_seeds(
    maps: Mapping[int, Any],
    path: str | os.PathLike,
    format: str = "psa",
    *,
    size: tuple[int, int] | None = None,
) -> None:
    """Save one image's seed maps in psa or IRN format, atomically.

    ``format="psa"`` writes the dict as given, ``{class_index: HxW map}``: the
    files of psa, SEAM and MCTformer (``np.load(path, allow_pickle=True).item()``).

    ``format="irn"`` writes IRN's ``make_cam.py`` dict, which IRN's
    ``eval_cam.py``, ``cam_to_ir_label.py`` and ``make_sem_seg_labels.py`` read:

    - ``"keys"``: the class indices, int64 ``(N,)`` (0-based, no background);
    - ``"high_res"``: the maps at image size, ``(N, H, W)`` numpy, as given;
    - ``"cam"``: the maps at 1/4 of the image size (``ceil(H / 4) x ceil(W / 4)``,
      IRN's boundary-map size), area-downsampled and divided by their maximum
      + 1e-5 as IRN does: a CPU ``torch.Tensor``, because IRN's random walk
      calls ``.cuda()`` on it (loading the file then needs torch).

    Every seed reader of seedkit (``seedkit eval-seeds``, the pseudo-mask stage,
    ``seedkit viz``) reads both formats.

    Args:
        maps: ``{class index: HxW float map}`` for the classes present in the
            image (numpy arrays or CPU tensors), all of one size.
        path: the ``<id>.npy`` file to write (its folder must exist).
        format: ``"psa"`` or ``"irn"``.
        size: the image size ``(H, W)``; needed by ``"irn"`` when ``maps`` is
            empty, checked against the maps otherwise.

    Raises:
        InvalidValueError: an unknown format, a key that is no class index, a
            map that is not floating-point or not finite.
        ShapeError: maps that are not 2-D or differ in size.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from seedkit.cam import save_seeds
        >>> path = os.path.join(tempfile.mkdtemp(), "2007_000032.npy")
        >>> save_seeds({0: np.ones((10, 13), np.float32), 14: np.zeros((10, 13), np.float32)},
        ...            path, format="irn")
        >>> seeds = np.load(path, allow_pickle=True).item()
        >>> seeds["keys"].tolist(), seeds["high_res"].shape, tuple(seeds["cam"].shape)
        ([0, 14], (2, 10, 13), (2, 3, 4))
    """
    if format not in SEED_FORMATS:
        raise InvalidValueError("format", "'psa' or 'irn'", format)
    checked, shape = _check_maps(maps, size)
    if format == "psa":
        document: dict[Any, Any] = checked
    else:
        if shape is None:
            raise InvalidValueError(
                "size", "the image size (H, W) to write an IRN file without maps", None
            )
        document = _irn_document(checked, shape)
    path = Path(path)
    atomic_write(path, lambda stream: np.save(stream, document, allow_pickle=True))


def save_psa_maps(maps: Mapping[int, Any], path: str | os.PathLike) -> None:
    """Save ``{class_index: HxW map}`` in psa format: ``save_seeds(maps, path, "psa")``.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from seedkit.cam import save_psa_maps
        >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
        >>> save_psa_maps({0: np.ones((2, 2), np.float32)}, path)
        >>> sorted(np.load(path, allow_pickle=True).item())
        [0]
    """
    save_seeds(maps, path, "psa")


def _item_ids(dataset: Any) -> list[str] | None:
    ids = getattr(dataset, "ids", None)
    if ids is None:
        return None
    ids = [str(i) for i in ids]
    return ids if len(ids) == len(dataset) else None


def _batches(items: Iterator[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Group consecutive items of equal image size into batches of at most ``batch_size``."""
    batch: list[dict[str, Any]] = []
    for item in items:
        if batch and (len(batch) == batch_size or item["image"].shape != batch[0]["image"].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _valid_size(item: dict[str, Any]) -> tuple[int, int]:
    height, width = item["image"].shape[-2:]
    valid = item.get("valid")
    if valid is None:
        return int(height), int(width)
    valid = torch.as_tensor(valid).bool()
    if valid.dim() == 3:
        valid = valid[0]
    return int(valid.any(dim=1).sum()), int(valid.any(dim=0).sum())


def write_cams(
    model: torch.nn.Module,
    dataset: Any,
    out_dir: str | os.PathLike,
    scales: Sequence[float] = DEFAULT_SCALES,
    batch_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    temperature: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    flip: bool = True,
    dtype: np.dtype | type = np.float32,
    channels_last: bool = False,
    format: str = "psa",
) -> list[str]:
    """Run :func:`infer_cams` over a dataset and write one ``<id>.npy`` seed file per image.

    Each file holds the maps in ``[0, 1]`` of the classes present in the image,
    in psa format ``{class_index (0-based, no background): HxW map}`` or IRN's
    ``{"keys", "cam", "high_res"}`` (see :func:`save_seeds`), so it feeds
    ``seedkit eval-seeds`` and psa / SEAM / MCTformer or IRN code directly.
    Writes are atomic; ids whose file already exists are skipped (resume)
    unless ``overwrite``. With several processes, image ``i`` of the dataset
    belongs to ``rank == i % world_size``. When every map this call wrote is
    zero, a ``RuntimeWarning`` says so (such seeds are useless).

    The model is switched to ``eval()`` for the run and its previous mode
    restored afterwards; it must already be on ``device``.

    Args:
        model: returns CAMs ``(B, C, h, w)`` or an object with ``.cams``.
        dataset: map-style dataset of dicts with ``"id"``, ``"image"``
            ``(3, H, W)`` normalised and ``"labels"`` ``(C,)`` (optionally
            ``"valid"``, an ``(H, W)`` mask of the unpadded top-left region).
        out_dir: output directory (created).
        scales: inference scales.
        batch_size: images per forward; consecutive images of equal size are
            batched, others go alone.
        num_workers: data-loading workers.
        device: where images go; default the model's parameter device.
        temperature: ``None`` for max-normalised seeds, else the temperature form.
        overwrite: recompute ids whose file exists.
        progress: show a progress bar.
        rank: this process's shard index.
        world_size: number of shards.
        flip: add horizontally flipped views.
        dtype: dtype of the saved maps (``np.float32`` or ``np.float16``).
        channels_last: see :func:`infer_cams`.
        format: ``"psa"`` or ``"irn"``, see :func:`save_seeds`.

    Returns:
        The ids written by this call.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidValueError("rank", f"0 <= rank < world_size ({world_size})", rank)
    if batch_size < 1:
        raise InvalidValueError("batch_size", "an integer >= 1", batch_size)
    if format not in SEED_FORMATS:
        raise InvalidValueError("format", "'psa' or 'irn'", format)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if device is None:
        parameter = next(iter(model.parameters()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device)
    indices = [i for i in range(len(dataset)) if i % world_size == rank]
    known_ids = _item_ids(dataset)
    if known_ids is not None and not overwrite:
        indices = [i for i in indices if not (out_dir / f"{known_ids[i]}.npy").exists()]
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(
        subset, batch_size=None, shuffle=False, num_workers=num_workers
    )
    written: list[str] = []
    any_positive = False
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(indices), desc="cams", unit="img", disable=not progress) as bar:
            for batch in _batches(iter(loader), batch_size):
                todo = [
                    item
                    for item in batch
                    if overwrite or not (out_dir / f"{item['id']}.npy").exists()
                ]
                if todo:
                    images = torch.stack([torch.as_tensor(item["image"]) for item in todo]).to(
                        device
                    )
                    labels = torch.stack([torch.as_tensor(item["labels"]) for item in todo]).to(
                        device
                    )
                    seeds = infer_cams(
                        model,
                        images,
                        labels,
                        scales,
                        flip,
                        temperature,
                        channels_last=channels_last,
                    ).cpu()
                    for index, item in enumerate(todo):
                        height, width = _valid_size(item)
                        present = labels[index].nonzero().flatten().tolist()
                        maps = {
                            int(c): seeds[index, c, :height, :width].numpy().astype(dtype)
                            for c in present
                        }
                        any_positive = any_positive or any((m > 0).any() for m in maps.values())
                        save_seeds(
                            maps, out_dir / f"{item['id']}.npy", format, size=(height, width)
                        )
                        written.append(str(item["id"]))
                bar.update(len(batch))
    finally:
        model.train(was_training)
    if written and not any_positive:
        warnings.warn(
            f"write_cams: every seed map of the {len(written)} images written to {out_dir} is "
            "zero, so the seeds are useless: the model's CAMs are <= 0 for every present class "
            "(an untrained or collapsed model?)",
            RuntimeWarning,
            stacklevel=2,
        )
    return written
