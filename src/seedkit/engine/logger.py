"""JSON-lines run log, with optional TensorBoard mirroring."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["RunLogger"]


class RunLogger:
    """Append one JSON object per event to ``log.jsonl``; mirror scalars to TensorBoard.

    Only the main process should own one. Lines are flushed as they are written,
    so a crashed run keeps its log.

    Args:
        out_dir: run directory.
        tensorboard: also write TensorBoard events under ``out_dir/tensorboard``
            (needs the ``tensorboard`` extra).
        append: keep an existing log (resume) instead of starting a new one.
    """

    def __init__(
        self, out_dir: str | os.PathLike, tensorboard: bool = False, append: bool = False
    ) -> None:
        self.path = Path(out_dir) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if append else "w", encoding="utf-8")
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:  # pragma: no cover - depends on the extra
                raise ImportError(
                    "TensorBoard logging needs `pip install seedkit[tensorboard]`"
                ) from error
            self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def log(self, event: str, step: int | None = None, **values: Any) -> None:
        """Write one record ``{"event", "step", "time", **values}``."""
        record = {"event": event, "step": step, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record, default=float) + "\n")
        self._file.flush()
        if self._writer is not None and step is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{event}/{key}", value, step)

    def close(self) -> None:
        """Close the files."""
        self._file.close()
        if self._writer is not None:
            self._writer.close()
