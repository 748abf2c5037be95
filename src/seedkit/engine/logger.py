"""JSON-lines run log, with optional TensorBoard mirroring."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from seedkit.errors import OutputError
from seedkit.files import ensure_directory

__all__ = ["RunLogger"]


class RunLogger:
    """Append one JSON object per event to ``log.jsonl``; mirror scalars to TensorBoard.

    Only the main process should own one. Lines are flushed as they are written,
    so a crashed run keeps its log. A resumed run cuts the log back to where its
    checkpoint was written (``truncate_to``, the :attr:`position` the checkpoint
    recorded), so the steps it trains again are not logged twice.

    Args:
        out_dir: run directory.
        tensorboard: also write TensorBoard events under ``out_dir/tensorboard``
            (needs the ``tensorboard`` extra).
        append: keep an existing log (resume) instead of starting a new one.
        truncate_to: with ``append``, drop everything after this byte offset.
        purge_step: with ``tensorboard``, drop TensorBoard events from this step on.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        tensorboard: bool = False,
        append: bool = False,
        truncate_to: int | None = None,
        purge_step: int | None = None,
    ) -> None:
        self.path = Path(out_dir) / "log.jsonl"
        ensure_directory(self.path.parent)
        try:
            self._file = self.path.open("a" if append else "w", encoding="utf-8")
            if append and truncate_to is not None and truncate_to <= self._file.tell():
                self._file.truncate(truncate_to)
                self._file.seek(truncate_to)
        except OSError as error:
            raise OutputError(self.path, error) from error
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:  # pragma: no cover - depends on the extra
                raise ImportError(
                    "TensorBoard logging needs `pip install 'seedkit-wsss[tensorboard]'`"
                ) from error
            self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=purge_step)

    @property
    def position(self) -> int:
        """Byte offset after the last record (what a checkpoint records)."""
        return self._file.tell()

    def log(self, event: str, step: int | None = None, **values: Any) -> None:
        """Write one record ``{"event", "step", "time", **values}``."""
        record = {"event": event, "step": step, "time": round(time.time(), 3), **values}
        try:
            self._file.write(json.dumps(record, default=float) + "\n")
            self._file.flush()
        except OSError as error:
            raise OutputError(self.path, error) from error
        if self._writer is not None and step is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{event}/{key}", value, step)

    def close(self) -> None:
        """Close the files."""
        self._file.close()
        if self._writer is not None:
            self._writer.close()
