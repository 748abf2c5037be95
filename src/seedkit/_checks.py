"""Input validation shared by the losses, views and metrics.

Checks that need the tensor's values (NaN / Inf, binary labels) synchronise with
the device; :func:`set_input_checks` or the :func:`input_checks` context manager
turns them off in hot loops. Shape checks are free and always run.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch

from seedkit.errors import InvalidValueError, NonFiniteError, ShapeError

__all__ = ["input_checks", "input_checks_enabled", "set_input_checks"]

_VALUE_CHECKS = os.environ.get("SEEDKIT_CHECKS", "1").strip().lower() not in {"0", "false", "off"}


def set_input_checks(enabled: bool) -> None:
    """Turn the value checks (NaN/Inf, binary labels) on or off for the process.

    The environment variable ``SEEDKIT_CHECKS=0`` sets the initial state to off.
    Shape checks always run because they cost nothing.

    Args:
        enabled: ``True`` to validate tensor values, ``False`` to skip it.
    """
    global _VALUE_CHECKS
    _VALUE_CHECKS = bool(enabled)


def input_checks_enabled() -> bool:
    """Return whether value checks are currently on."""
    return _VALUE_CHECKS


@contextlib.contextmanager
def input_checks(enabled: bool) -> Iterator[None]:
    """Context manager that sets value checks on or off and restores the old state.

    Example:
        >>> import seedkit
        >>> with seedkit.input_checks(False):
        ...     seedkit.input_checks_enabled()
        False
    """
    previous = _VALUE_CHECKS
    set_input_checks(enabled)
    try:
        yield
    finally:
        set_input_checks(previous)


def check_tensor(argument: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InvalidValueError(argument, "a torch.Tensor", type(value).__name__)
    return value


def check_finite(argument: str, tensor: torch.Tensor) -> None:
    if not _VALUE_CHECKS or not tensor.is_floating_point():
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        raise NonFiniteError(argument, int((~finite).sum()), tensor.numel())


def check_cams(argument: str, cams: object) -> torch.Tensor:
    cams = check_tensor(argument, cams)
    if cams.dim() != 4:
        raise ShapeError(argument, "(B, C, H, W)", tuple(cams.shape), f"rank {cams.dim()}")
    if not cams.is_floating_point():
        raise InvalidValueError(argument, "a floating-point tensor", str(cams.dtype))
    if cams.shape[2] * cams.shape[3] == 0:
        raise ShapeError(argument, "(B, C, H, W) with H*W > 0", tuple(cams.shape))
    check_finite(argument, cams)
    return cams


def check_labels(argument: str, labels: object, cams: torch.Tensor) -> torch.Tensor:
    labels = check_tensor(argument, labels)
    batch, classes = cams.shape[:2]
    if labels.dim() != 2 or labels.shape[0] != batch or labels.shape[1] != classes:
        raise ShapeError(
            argument,
            f"(B, C) = ({batch}, {classes}) to match cams",
            tuple(labels.shape),
        )
    if _VALUE_CHECKS and labels.dtype != torch.bool:
        binary = (labels == 0) | (labels == 1)
        if not bool(binary.all()):
            bad = labels[~binary].flatten()[:3].tolist()
            raise InvalidValueError(
                argument,
                "multi-hot values in {0, 1} (for soft labels, turn this check off with "
                "seedkit.input_checks(False))",
                f"values such as {bad}",
            )
    return labels


def check_mask(argument: str, mask: object | None, cams: torch.Tensor) -> torch.Tensor | None:
    """Return the mask as a ``(B, 1, H, W)`` boolean tensor, or ``None``."""
    if mask is None:
        return None
    mask = check_tensor(argument, mask)
    batch, _, height, width = cams.shape
    given_shape = tuple(mask.shape)
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if (
        mask.dim() != 4
        or mask.shape[1] != 1
        or mask.shape[0] != batch
        or mask.shape[2:]
        != (
            height,
            width,
        )
    ):
        raise ShapeError(
            argument,
            f"(B, 1, H, W) or (B, H, W) = ({batch}, 1, {height}, {width})",
            given_shape,
        )
    if mask.dtype != torch.bool:
        if _VALUE_CHECKS:
            binary = (mask == 0) | (mask == 1)
            if not bool(binary.all()):
                raise InvalidValueError(argument, "a boolean or {0, 1} mask", "other values")
        mask = mask != 0
    if _VALUE_CHECKS:
        empty = ~mask.flatten(1).any(dim=1)
        if bool(empty.any()):
            index = int(empty.nonzero()[0])
            raise InvalidValueError(
                argument, "at least one valid position per image", f"image {index} fully masked"
            )
    return mask


def check_temperature(argument: str, temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise InvalidValueError(argument, "a finite number > 0", temperature)
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise InvalidValueError(argument, "a finite number > 0", temperature)
    return value


def check_choice(argument: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidValueError(argument, "one of " + ", ".join(repr(c) for c in choices), value)
    return str(value)
