"""Checkpoint files: written atomically, read without running code.

``OUT/checkpoint.pt`` holds the training state (``{"format": "seedkit.training",
"model", "optimizer", "scheduler", "scaler", "step", "rng", "state", "run", "config",
"log_offset"}``), the finished model file (``model.pt``, ``affinity.pt``,
``segmentation.pt``) ``{"format": "seedkit.model", "model", "run", "config", "steps"}``.
Both hold only tensors and plain containers: :func:`load_checkpoint` reads them with
``torch.load(weights_only=True)``, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seedkit.errors import DataError, DataFileError
from seedkit.files import atomic_write

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, then rename it into place.

    A run killed mid-write leaves the previous checkpoint intact (and a temporary
    file that the next run of the stage removes); a full disk raises
    :class:`~seedkit.errors.OutputError` naming ``path``.

    Args:
        path: destination file.
        state: tensors and plain containers (what ``torch.load(weights_only=True)``
            reads back).

    Returns:
        The destination path.
    """
    return atomic_write(path, lambda stream: torch.save(state, stream))


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(..., weights_only=True)``.

    Args:
        path: the checkpoint file.
        map_location: where its tensors go.
        required: keys the caller reads (e.g. ``("model",)``); a missing one is
            an error naming the file and the key.

    Raises:
        DataFileError: the file does not exist.
        DataError: the file is not a readable checkpoint, it is a pickle that
            holds code (which is never run), or it lacks a ``required`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():
            raise DataError(
                path, "a checkpoint written by seedkit", "a file torch.load cannot unpickle"
            ) from error
        found = re.search(r"(?:Unsupported global|GLOBAL)[:\s]+(?:GLOBAL\s+)?([\w.]+)", str(error))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise DataError(
            path,
            "a checkpoint of tensors and plain containers (loaded with weights_only=True)",
            f"a pickle that would run code{what}; seedkit does not load it",
        ) from error
    except Exception as error:  # torch raises many types for a corrupt file
        raise DataError(
            path, "a checkpoint written by seedkit", f"unreadable file ({_first_line(error)})"
        ) from error
    if not isinstance(state, dict):
        raise DataError(path, "a checkpoint dict", type(state).__name__)
    missing = [key for key in required if key not in state]
    if missing:
        raise DataError(
            path,
            "a checkpoint with the entries " + ", ".join(repr(key) for key in required),
            "no " + ", ".join(repr(key) for key in missing),
        )
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
