"""Write psa-format seed files for a whole dataset, resumable and shardable."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from seedkit._files import atomic_write
from seedkit.cam.inference import DEFAULT_SCALES, infer_cams
from seedkit.errors import InvalidValueError

__all__ = ["save_psa_maps", "write_cams"]


def save_psa_maps(maps: dict[int, np.ndarray], path: str | os.PathLike) -> None:
    """Save ``{class_index: HxW map}`` with ``np.save`` atomically (temp file + ``os.replace``).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from seedkit.cam import save_psa_maps
        >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
        >>> save_psa_maps({0: np.ones((2, 2), np.float32)}, path)
        >>> sorted(np.load(path, allow_pickle=True).item())
        [0]
    """
    atomic_write(path, lambda stream: np.save(stream, maps, allow_pickle=True))


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
) -> list[str]:
    """Run :func:`infer_cams` over a dataset and write one psa-format ``<id>.npy`` per image.

    Each file holds ``{class_index (0-based, no background): HxW map in [0, 1]}``
    for the classes present in the image, so it feeds ``seedkit eval-seeds``
    and psa / IRN / SEAM code directly. Writes are atomic; ids whose file
    already exists are skipped (resume) unless ``overwrite``. With several
    processes, image ``i`` of the dataset belongs to ``rank == i % world_size``.

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

    Returns:
        The ids written by this call.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidValueError("rank", f"0 <= rank < world_size ({world_size})", rank)
    if batch_size < 1:
        raise InvalidValueError("batch_size", "an integer >= 1", batch_size)
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
                        save_psa_maps(maps, out_dir / f"{item['id']}.npy")
                        written.append(str(item["id"]))
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return written
