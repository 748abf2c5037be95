"""Input validation shared by the losses, views and metrics.

Shape checks are free and always run. Value checks (NaN / Inf, binary labels
and masks, an image with no valid position) need the tensor's values; the hot
losses run them without a pass over the input and without a host
synchronisation (see the "Input checks" section of the Performance page):

- they compute a few device-side flags from what they already have (the
  ``(B, C)`` result of the kernel, which is non-finite whenever an input value
  is, the ``(B, C)`` labels, the mask) and read them once per call;
- only when a flag is set do they scan the inputs to write the same precise
  error as a full check (argument, count of bad values...);
- on CUDA the flag is copied to the host without waiting for the device and
  read at the next checked call (or by :func:`flush_input_checks`), so the
  training step never waits for the GPU; ``set_input_checks("immediate")``
  reads it at once instead (one synchronisation per call).

:func:`set_input_checks` or the :func:`input_checks` context manager turns
value checks off entirely.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from seedkit.errors import InvalidValueError, NonFiniteError, SeedkitError, ShapeError

__all__ = [
    "flush_input_checks",
    "input_checks",
    "input_checks_enabled",
    "set_input_checks",
]

#: The modes of the value checks: "auto" reads the flags of CPU tensors at once and
#: those of CUDA tensors at the next checked call; "immediate" always at once;
#: "deferred" always at the next checked call (any device).
CHECK_MODES: tuple[str, ...] = ("auto", "immediate", "deferred")
# A deferred flag is read at the latest when this many are waiting (the GPU is that far behind).
_MAX_PENDING = 16


def _mode_of(value: object, argument: str) -> str | None:
    if value is True:
        return "auto"
    if value is False:
        return None
    if isinstance(value, str) and value in CHECK_MODES:
        return value
    raise InvalidValueError(argument, "True, False or one of " + ", ".join(CHECK_MODES), value)


def _initial_mode() -> str | None:
    value = os.environ.get("SEEDKIT_CHECKS", "1").strip().lower()
    if value in {"0", "false", "off"}:
        return None
    return value if value in CHECK_MODES else "auto"


_MODE = _initial_mode()


def set_input_checks(enabled: bool | str) -> None:
    """Turn the value checks (NaN/Inf, binary labels and masks) on or off for the process.

    The environment variable ``SEEDKIT_CHECKS=0`` sets the initial state to off
    (``SEEDKIT_CHECKS=immediate`` / ``deferred`` picks a mode). Shape checks
    always run because they cost nothing.

    Args:
        enabled: ``True`` (the default state, ``"auto"``), ``False`` to skip
            value checks, or a mode: ``"auto"`` (errors of CPU tensors raised at
            the call, those of CUDA tensors at the next checked call, with no
            host synchronisation), ``"immediate"`` (always at the call: one
            synchronisation per call on CUDA) or ``"deferred"`` (always at the
            next checked call or :func:`flush_input_checks`).

    Example:
        >>> import seedkit
        >>> seedkit.set_input_checks("immediate")
        >>> seedkit.input_checks_enabled()
        True
        >>> seedkit.set_input_checks(True)
    """
    global _MODE
    _MODE = _mode_of(enabled, "enabled")


def input_checks_enabled() -> bool:
    """Return whether value checks are currently on."""
    return _MODE is not None


@contextlib.contextmanager
def input_checks(enabled: bool | str) -> Iterator[None]:
    """Context manager that sets value checks on, off or to a mode and restores the old state.

    Args:
        enabled: as for :func:`set_input_checks`.

    Example:
        >>> import seedkit
        >>> with seedkit.input_checks(False):
        ...     seedkit.input_checks_enabled()
        False
    """
    global _MODE
    previous = _MODE
    set_input_checks(enabled)
    try:
        yield
    finally:
        _MODE = previous


@dataclass
class _Pending:
    """A flag whose value is still on its way to the host, and how to explain it."""

    where: str
    flag: torch.Tensor
    event: torch.cuda.Event | None
    diagnose: Callable[..., None]
    tensors: tuple[torch.Tensor | None, ...]

    def ready(self) -> bool:
        return self.event is None or self.event.query()


_PENDING: collections.deque[_Pending] = collections.deque()


def _explain(record: _Pending) -> None:
    try:
        record.diagnose(*record.tensors)
    except SeedkitError as error:
        if hasattr(error, "add_note"):  # Python 3.11+
            error.add_note(
                f"Found by a deferred value check of an earlier call of {record.where} "
                "(seedkit.set_input_checks('immediate') raises at the call itself)."
            )
        raise


def flush_input_checks(wait: bool = True) -> None:
    """Read the deferred value checks and raise the first error they found.

    Checks of CUDA tensors are read at the next checked call; call this at the
    end of training (or of an epoch) to see the last ones too.

    Args:
        wait: ``True`` waits for the device; ``False`` reads only the flags that
            have already arrived.

    Example:
        >>> import seedkit
        >>> seedkit.flush_input_checks()  # nothing pending
    """
    while _PENDING:
        record = _PENDING[0]
        if not record.ready():
            if not wait:
                return
            record.event.synchronize()  # type: ignore[union-attr]
        _PENDING.popleft()
        if bool(record.flag):
            try:
                _explain(record)
            except SeedkitError:
                _PENDING.clear()  # one error at a time: the rest came after it
                raise


def verify(
    where: str,
    flags: Sequence[torch.Tensor | None],
    diagnose: Callable[..., None],
    *tensors: torch.Tensor | None,
) -> None:
    """Raise the precise error ``diagnose(*tensors)`` finds if one of ``flags`` is set.

    Args:
        where: the public function, for the message of a deferred error.
        flags: 0-dim boolean tensors (``None`` entries are skipped), ``True``
            when something may be wrong; they are combined on the device and
            read once.
        diagnose: the full checks on ``tensors``, in the order of the
            function's arguments; raises the first error, or returns when the
            values are fine (a result that overflowed from finite inputs).
        *tensors: the inputs ``diagnose`` scans.
    """
    if _MODE is None:
        return
    present = [flag for flag in flags if flag is not None]
    if not present:
        return
    bad = present[0]
    for flag in present[1:]:
        bad = bad | flag
    if _PENDING:
        flush_input_checks(wait=False)
    if _MODE == "immediate" or (_MODE == "auto" and not bad.is_cuda):
        if bool(bad):
            diagnose(*tensors)
        return
    event = None
    if bad.is_cuda:
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(bad, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
    else:
        host = bad
    detached = tuple(None if t is None else t.detach() for t in tensors)
    _PENDING.append(_Pending(where, host, event, diagnose, detached))
    if len(_PENDING) > _MAX_PENDING:
        record = _PENDING[0]
        if not record.ready():
            record.event.synchronize()  # type: ignore[union-attr]
        flush_input_checks(wait=False)


def flags_read_now(tensor: torch.Tensor) -> bool:
    """Whether reading a flag of ``tensor`` costs no host synchronisation worth avoiding.

    True for CPU tensors and in ``"immediate"`` mode; a CUDA tensor in the other
    modes is read only where a deferred check reads it.
    """
    return not tensor.is_cuda or _MODE == "immediate"


def nonfinite_flag(tensor: torch.Tensor) -> torch.Tensor | None:
    """Device flag: does ``tensor`` hold a NaN or an infinity? ``None`` when checks are off."""
    if _MODE is None or not tensor.is_floating_point():
        return None
    return ~torch.isfinite(tensor).all()


def labels_flag(labels: torch.Tensor) -> torch.Tensor | None:
    """Device flag: does ``labels`` hold a value other than 0 and 1?"""
    if _MODE is None or labels.dtype == torch.bool:
        return None
    return ~((labels == 0) | (labels == 1)).all()


def mask_flag(given: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor | None:
    """Device flag: is the given mask non-binary, or an image of ``mask`` fully masked?

    Args:
        given: the mask as the caller passed it.
        mask: the ``(B, 1, H, W)`` boolean mask :func:`check_mask` returned.
    """
    if _MODE is None or mask is None:
        return None
    flag = ~mask.flatten(1).any(dim=1).all()
    if given is not None and given.dtype != torch.bool:
        flag = flag | ~((given == 0) | (given == 1)).all()
    return flag


def check_tensor(argument: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InvalidValueError(argument, "a torch.Tensor", type(value).__name__)
    return value


def scan_finite(argument: str, tensor: torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` naming ``argument`` if ``tensor`` holds NaN or inf."""
    if not tensor.is_floating_point():
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        raise NonFiniteError(argument, int((~finite).sum()), tensor.numel())


def check_finite(argument: str, tensor: torch.Tensor) -> None:
    if _MODE is not None:
        scan_finite(argument, tensor)


def check_cams(argument: str, cams: object, values: bool = True) -> torch.Tensor:
    """Check a ``(B, C, H, W)`` float map; ``values=False`` leaves NaN / inf to :func:`verify`."""
    cams = check_tensor(argument, cams)
    if cams.dim() != 4:
        raise ShapeError(argument, "(B, C, H, W)", tuple(cams.shape), f"rank {cams.dim()}")
    if not cams.is_floating_point():
        raise InvalidValueError(argument, "a floating-point tensor", str(cams.dtype))
    if cams.shape[2] * cams.shape[3] == 0:
        raise ShapeError(argument, "(B, C, H, W) with H*W > 0", tuple(cams.shape))
    if cams.shape[0] == 0 or cams.shape[1] == 0:
        # A mean over no image or no class is NaN: refuse it rather than train on it.
        raise ShapeError(argument, "(B, C, H, W) with B >= 1 and C >= 1", tuple(cams.shape))
    if values:
        check_finite(argument, cams)
    return cams


def scan_labels(argument: str, labels: torch.Tensor) -> None:
    """Raise :class:`InvalidValueError` if ``labels`` holds values other than 0 and 1."""
    if labels.dtype != torch.bool:
        binary = (labels == 0) | (labels == 1)
        if not bool(binary.all()):
            bad = labels[~binary].flatten()[:3].tolist()
            raise InvalidValueError(
                argument,
                "multi-hot values in {0, 1} (for soft labels, turn this check off with "
                "seedkit.input_checks(False))",
                f"values such as {bad}",
            )


def check_labels(
    argument: str, labels: object, cams: torch.Tensor, values: bool = True
) -> torch.Tensor:
    """Check ``(B, C)`` labels against ``cams``; ``values=False`` leaves values to ``verify``."""
    labels = check_tensor(argument, labels)
    batch, classes = cams.shape[:2]
    if labels.dim() != 2 or labels.shape[0] != batch or labels.shape[1] != classes:
        raise ShapeError(
            argument,
            f"(B, C) = ({batch}, {classes}) to match cams",
            tuple(labels.shape),
        )
    if values and _MODE is not None:
        scan_labels(argument, labels)
    return labels


def scan_mask(argument: str, mask: torch.Tensor | None) -> None:
    """Raise :class:`InvalidValueError` for a non-binary mask or a fully masked image.

    ``mask`` is the mask as given (shape already checked), ``(B, 1, H, W)`` or ``(B, H, W)``.
    """
    if mask is None:
        return
    if mask.dtype != torch.bool:
        binary = (mask == 0) | (mask == 1)
        if not bool(binary.all()):
            raise InvalidValueError(argument, "a boolean or {0, 1} mask", "other values")
        mask = mask != 0
    empty = ~mask.flatten(1).any(dim=1)
    if bool(empty.any()):
        index = int(empty.nonzero()[0])
        raise InvalidValueError(
            argument, "at least one valid position per image", f"image {index} fully masked"
        )


def check_mask(
    argument: str, mask: object | None, cams: torch.Tensor, values: bool = True
) -> torch.Tensor | None:
    """Return the mask as a ``(B, 1, H, W)`` boolean tensor, or ``None``.

    ``values=False`` leaves its values (binary, no fully masked image) to
    :func:`verify` with :func:`mask_flag`.
    """
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
    if values and _MODE is not None:
        scan_mask(argument, mask)
    if mask.dtype != torch.bool:
        mask = mask != 0
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


def check_int(argument: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[minimum, maximum]``; else name ``argument``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        expected = (
            f"an integer >= {minimum}"
            if maximum is None
            else f"an integer in [{minimum}, {maximum}]"
        )
        raise InvalidValueError(argument, expected, value)
    return int(value)


def check_number(
    argument: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    strict_minimum: bool = False,
    strict_maximum: bool = False,
) -> float:
    """Return ``value`` as a float if it is finite and in range; else name ``argument``.

    The range is ``[minimum, maximum]``; ``strict_minimum`` / ``strict_maximum``
    exclude that end (``(minimum, maximum)``); ``None`` leaves that side open.

    Example:
        >>> check_number("momentum", 0.9, 0.0, 1.0, strict_maximum=True)
        0.9
    """
    if minimum is not None and maximum is not None:
        left = "(" if strict_minimum else "["
        right = ")" if strict_maximum else "]"
        expected = f"a finite number in {left}{minimum}, {maximum}{right}"
    elif minimum is not None:
        expected = f"a finite number {'>' if strict_minimum else '>='} {minimum}"
    elif maximum is not None:
        expected = f"a finite number {'<' if strict_maximum else '<='} {maximum}"
    else:
        expected = "a finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValueError(argument, expected, value)
    number = float(value)
    if (
        not math.isfinite(number)
        or (minimum is not None and (number <= minimum if strict_minimum else number < minimum))
        or (maximum is not None and (number >= maximum if strict_maximum else number > maximum))
    ):
        raise InvalidValueError(argument, expected, value)
    return number
