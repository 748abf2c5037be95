"""Atomic checkpoint files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from seedkit.errors import DataError, DataFileError

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, then rename it into place.

    A run killed mid-write leaves the previous checkpoint intact.

    Args:
        path: destination file.
        state: anything ``torch.save`` accepts.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        DataFileError: the file does not exist.
        DataError: the file is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises many types for a corrupt file
        raise DataError(
            path, "a checkpoint written by seedkit", f"unreadable file ({error})"
        ) from error
    if not isinstance(state, dict):
        raise DataError(path, "a checkpoint dict", type(state).__name__)
    return state
