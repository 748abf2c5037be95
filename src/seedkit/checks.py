"""Input validation shared by every module: one vocabulary, one message format.

Argument checks (``check_int``, ``check_number``, ``check_choice``,
``check_temperature``, ``check_cams``...) raise a typed error from
:mod:`seedkit.errors` that names the argument, what was expected and what was
given. Environment variables are read through :func:`environment_setting`, which
validates them the same way: a bad value is reported, naming the variable, by
the first call that reads it (``import seedkit`` never fails on one).

Shape checks are free and always run. Value checks (NaN / Inf, binary labels
and masks, an image with no valid position) need the tensor's values; the hot
losses run them without a pass over the input and without a host
synchronisation (see the "Input checks" section of the Performance page):

- they compute a few device-side flags from what they already have (the
  ``(B, C)`` result of the kernel, which is non-finite whenever an input value
  is, the ``(B, C)`` labels, the mask) and read them once per call; only when a
  flag is set do they scan the inputs to raise the precise error (argument,
  count of bad values...). On the CPU this happens in the call itself;
- on CUDA (mode ``"auto"``, the default) waiting for the flag would stall the
  training step, so the call instead counts the bad values on the device and
  copies the counts to the host without waiting; the next checked call (or
  :func:`flush_input_checks`) reads them and raises the same error, with a note
  naming the call it came from (function, call site, call number). The pending
  check holds a few host integers and a CUDA event: no reference to the
  inputs. ``set_input_checks("immediate")`` raises in the call itself instead
  (one synchronisation per call);
- under ``torch.compile`` the value checks are skipped (they need host values
  and would break the graph); shape and argument checks still run at trace time.

:func:`set_input_checks` (process-wide) or the :func:`input_checks` context
manager (this thread or task only) turns value checks off or picks a mode.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
# A deferred check is read at the latest when this many are waiting (the GPU is that far behind).
_MAX_PENDING = 16
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- compile


def compiling() -> bool:
    """Whether the caller is being traced by ``torch.compile`` (value checks are skipped then)."""
    return torch.compiler.is_compiling()


# --------------------------------------------------------------------------- environment


def environment_setting(name: str, choices: Mapping[str, Any], default: str) -> Any:
    """Read the environment variable ``name`` and return what its value stands for.

    The value is matched case-insensitively, surrounding spaces ignored; unset or
    empty means ``default``. Every seedkit environment variable is read through
    this function, at the first call that needs it (never at import).

    Args:
        name: the variable, e.g. ``"SEEDKIT_KERNELS"``.
        choices: accepted spellings (lower case) and what each stands for.
        default: the spelling used when the variable is unset or empty.

    Returns:
        ``choices[value]``.

    Raises:
        InvalidValueError: the value is not one of ``choices``; the message names
            the variable and lists what it accepts.

    Example:
        >>> from seedkit.checks import environment_setting
        >>> environment_setting("SEEDKIT_DOC_EXAMPLE", {"on": True, "off": False}, "off")
        False
    """
    raw = os.environ.get(name, "")
    key = raw.strip().lower() or default
    if key not in choices:
        raise InvalidValueError(f"environment variable {name}", "one of " + ", ".join(choices), raw)
    return choices[key]


# --------------------------------------------------------------------------- modes

_UNSET: Any = object()
_CHECK_SETTINGS: dict[str, str | None] = {
    "1": "auto",
    "true": "auto",
    "on": "auto",
    "auto": "auto",
    "immediate": "immediate",
    "deferred": "deferred",
    "0": None,
    "false": None,
    "off": None,
}
# Set by set_input_checks (process-wide); _UNSET: SEEDKIT_CHECKS, read at first use.
_PROCESS_MODE: Any = _UNSET
# Set by the input_checks context manager, for this thread / task only.
_CONTEXT_MODE: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "seedkit_input_checks", default=_UNSET
)


def _mode_of(value: object, argument: str) -> str | None:
    if value is True:
        return "auto"
    if value is False:
        return None
    if isinstance(value, str) and value in CHECK_MODES:
        return value
    raise InvalidValueError(argument, "True, False or one of " + ", ".join(CHECK_MODES), value)


def check_mode() -> str | None:
    """The value-check mode in force here: ``"auto"``, ``"immediate"``, ``"deferred"`` or None.

    Raises:
        InvalidValueError: ``SEEDKIT_CHECKS`` holds a value it does not accept and
            no mode was set in code.
    """
    mode = _CONTEXT_MODE.get()
    if mode is _UNSET:
        mode = _PROCESS_MODE
        if mode is _UNSET:
            mode = environment_setting("SEEDKIT_CHECKS", _CHECK_SETTINGS, "1")
    return mode


def set_input_checks(enabled: bool | str) -> None:
    """Turn the value checks (NaN/Inf, binary labels and masks) on or off for the process.

    Without a call, the environment variable ``SEEDKIT_CHECKS`` gives the state:
    ``1`` / ``true`` / ``on`` / ``auto`` (the default), ``0`` / ``false`` /
    ``off``, ``immediate`` or ``deferred``; any other value makes the first
    checked call raise an error naming the variable. Shape checks always run
    because they cost nothing.

    Args:
        enabled: ``True`` (the default state, ``"auto"``), ``False`` to skip
            value checks, or a mode: ``"auto"`` (errors of CPU tensors raised in
            the call, those of CUDA tensors at the next checked call, naming the
            call they came from, with no host synchronisation), ``"immediate"``
            (always in the call: one synchronisation per call on CUDA) or
            ``"deferred"`` (always at the next checked call or
            :func:`flush_input_checks`).

    Example:
        >>> import seedkit
        >>> seedkit.set_input_checks("immediate")
        >>> seedkit.input_checks_enabled()
        True
        >>> seedkit.set_input_checks(True)
    """
    global _PROCESS_MODE
    _PROCESS_MODE = _mode_of(enabled, "enabled")


def input_checks_enabled() -> bool:
    """Return whether value checks are currently on (here: this thread or task)."""
    return check_mode() is not None


@contextlib.contextmanager
def input_checks(enabled: bool | str) -> Iterator[None]:
    """Context manager: value checks on, off or in a mode, for this thread or task only.

    Other threads keep the process-wide state (:func:`set_input_checks`).

    Args:
        enabled: as for :func:`set_input_checks`.

    Example:
        >>> import seedkit
        >>> with seedkit.input_checks(False):
        ...     seedkit.input_checks_enabled()
        False
    """
    token = _CONTEXT_MODE.set(_mode_of(enabled, "enabled"))
    try:
        yield
    finally:
        _CONTEXT_MODE.reset(token)


def values_checked() -> bool:
    """Whether value checks run here: on, and not traced by ``torch.compile``."""
    return not compiling() and check_mode() is not None


# --------------------------------------------------------------------------- value checks

#: What a value check looks for: ``"finite"`` (no NaN / inf), ``"labels"`` (values in
#: {0, 1}) or ``"mask"`` (values in {0, 1}, at least one valid position per image).
CHECK_KINDS: tuple[str, ...] = ("finite", "labels", "mask")
ValueCheck = tuple[str, str, "torch.Tensor | None"]


def _host_scan(checks: Sequence[ValueCheck]) -> None:
    """Raise the first error the checks find, scanning each tensor (argument order)."""
    for argument, kind, tensor in checks:
        if tensor is None:
            continue
        if kind == "finite":
            scan_finite(argument, tensor)
        elif kind == "labels":
            scan_labels(argument, tensor)
        else:
            scan_mask(argument, tensor)


def _device_counts(checks: Sequence[ValueCheck]) -> tuple[torch.Tensor, list[tuple[str, str, int]]]:
    """Count the bad values of every check on the tensors' device: one int64 vector.

    Per check: ``finite`` -> count of NaN / inf; ``labels`` -> count outside {0, 1};
    ``mask`` -> count outside {0, 1}, then 1 + the index of the first fully masked
    image (0: none). Returns the vector and ``(argument, kind, numel)`` per check.
    """
    counts: list[torch.Tensor] = []
    described: list[tuple[str, str, int]] = []
    device = None
    for argument, kind, tensor in checks:
        if tensor is None:
            continue
        device = tensor.device
        described.append((argument, kind, tensor.numel()))
        zero = torch.zeros((), dtype=torch.int64, device=device)
        if kind == "finite":
            bad = (~torch.isfinite(tensor)).sum() if tensor.is_floating_point() else zero
            counts.append(bad)
        elif kind == "labels":
            counts.append(zero if tensor.dtype == torch.bool else _non_binary(tensor).sum())
        else:
            counts.append(zero if tensor.dtype == torch.bool else _non_binary(tensor).sum())
            empty = ~(tensor != 0).flatten(1).any(dim=1)
            first = torch.argmax(empty.to(torch.int64)) + 1
            counts.append(torch.where(empty.any(), first, zero))
    if not counts:
        return torch.zeros(0, dtype=torch.int64), described
    return torch.stack([c.to(torch.int64) for c in counts]), described


def _non_binary(tensor: torch.Tensor) -> torch.Tensor:
    return ~((tensor == 0) | (tensor == 1))


def _raise_counted(described: Sequence[tuple[str, str, int]], counts: Sequence[int]) -> None:
    """Raise the error of the first check with a bad count (see :func:`_device_counts`)."""
    position = 0
    for argument, kind, numel in described:
        count = int(counts[position])
        position += 1
        if kind == "finite" and count:
            raise NonFiniteError(argument, count, numel)
        if kind == "labels" and count:
            raise InvalidValueError(
                argument, _LABELS_EXPECTED, f"{count} of {numel} values outside {{0, 1}}"
            )
        if kind == "mask":
            empty = int(counts[position])
            position += 1
            if count:
                raise InvalidValueError(argument, "a boolean or {0, 1} mask", "other values")
            if empty:
                raise InvalidValueError(
                    argument,
                    "at least one valid position per image",
                    f"image {empty - 1} fully masked",
                )


@dataclass
class _Pending:
    """A deferred check whose counts are on their way to the host, and where it came from.

    It holds no tensor of the checked call: only the host copy of a few integers
    and the event that says when they have arrived.
    """

    where: str
    site: str
    call: int
    described: list[tuple[str, str, int]]
    counts: torch.Tensor | tuple[int, ...]
    event: torch.cuda.Event | None

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def raise_if_bad(self) -> None:
        counts = self.counts if isinstance(self.counts, tuple) else tuple(self.counts.tolist())
        if not any(counts):
            return
        try:
            _raise_counted(self.described, counts)
        except SeedkitError as error:
            _note(
                error,
                f"Found by a deferred value check of {self.where} called at {self.site} "
                f"(call {self.call} of it in this process); "
                "seedkit.set_input_checks('immediate') raises in the call itself.",
            )
            raise


def _note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10
        error.args = (f"{error.args[0]}\n{note}", *error.args[1:])


_PENDING: collections.deque[_Pending] = collections.deque()
_CALLS: collections.Counter[str] = collections.Counter()


def _call_site() -> str:
    """``file:line`` of the innermost caller outside the seedkit package."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return "an unknown place"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def flush_input_checks(wait: bool = True) -> None:
    """Read the deferred value checks and raise the first error they found.

    Checks of CUDA tensors are read at the next checked call; call this at the
    end of training (or of an epoch) to see the last ones too.

    Args:
        wait: ``True`` waits for the device; ``False`` reads only the checks whose
            counts have already arrived.

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
        try:
            record.raise_if_bad()
        except SeedkitError:
            _PENDING.clear()  # one error at a time: the rest came after it
            raise


def verify(where: str, flags: Sequence[torch.Tensor | None], checks: Sequence[ValueCheck]) -> None:
    """Raise the precise error of ``checks`` if one of ``flags`` is set.

    Args:
        where: the public function, for the note of a deferred error.
        flags: 0-dim boolean tensors (``None`` entries are skipped), ``True``
            when something may be wrong; they are combined on the device and
            read once.
        checks: ``(argument, kind, tensor)`` in the order of the function's
            arguments, ``kind`` one of :data:`CHECK_KINDS`; scanned only when a
            flag is set (in the call), or counted on the device (deferred).
    """
    if compiling():
        return
    mode = check_mode()
    if mode is None:
        return
    present = [flag for flag in flags if flag is not None]
    if not present:
        return
    if _PENDING:
        flush_input_checks(wait=False)
    bad = present[0]
    for flag in present[1:]:
        bad = bad | flag
    if mode == "immediate" or (mode == "auto" and not bad.is_cuda):
        if bool(bad):
            _host_scan(checks)
        return
    counts, described = _device_counts(checks)
    _CALLS[where] += 1
    event = None
    if counts.is_cuda:
        host: torch.Tensor | tuple[int, ...] = torch.empty(
            counts.shape, dtype=counts.dtype, pin_memory=True
        )
        host.copy_(counts, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
    else:
        host = tuple(counts.tolist())
    _PENDING.append(_Pending(where, _call_site(), _CALLS[where], described, host, event))
    if len(_PENDING) > _MAX_PENDING:
        record = _PENDING[0]
        if not record.ready():
            record.event.synchronize()  # type: ignore[union-attr]
        flush_input_checks(wait=False)


def flags_read_now(tensor: torch.Tensor) -> bool:
    """Whether a value of ``tensor`` may be read on the host now (CPU, or ``"immediate"``).

    ``False`` under ``torch.compile``, with value checks off, and for a CUDA
    tensor in the other modes (reading it would synchronise).
    """
    if compiling():
        return False
    mode = check_mode()
    return mode is not None and (not tensor.is_cuda or mode == "immediate")


def nonfinite_flag(tensor: torch.Tensor) -> torch.Tensor | None:
    """Device flag: does ``tensor`` hold a NaN or an infinity? ``None`` when checks are off."""
    if not tensor.is_floating_point() or not values_checked():
        return None
    return ~torch.isfinite(tensor).all()


def labels_flag(labels: torch.Tensor) -> torch.Tensor | None:
    """Device flag: does ``labels`` hold a value other than 0 and 1?"""
    if labels.dtype == torch.bool or not values_checked():
        return None
    return _non_binary(labels).any()


def mask_flag(given: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor | None:
    """Device flag: is the given mask non-binary, or an image of ``mask`` fully masked?

    Args:
        given: the mask as the caller passed it.
        mask: the ``(B, 1, H, W)`` boolean mask :func:`check_mask` returned.
    """
    if mask is None or not values_checked():
        return None
    flag = ~mask.flatten(1).any(dim=1).all()
    if given is not None and given.dtype != torch.bool:
        flag = flag | _non_binary(given).any()
    return flag


# --------------------------------------------------------------------------- tensors


def check_tensor(argument: str, value: object) -> torch.Tensor:
    """Return ``value`` if it is a ``torch.Tensor``; else name ``argument``."""
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
    """:func:`scan_finite` when value checks are on (and not under ``torch.compile``)."""
    if values_checked():
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


_LABELS_EXPECTED = (
    "multi-hot values in {0, 1} (for soft labels, turn this check off with "
    "seedkit.input_checks(False))"
)


def scan_labels(argument: str, labels: torch.Tensor) -> None:
    """Raise :class:`InvalidValueError` if ``labels`` holds values other than 0 and 1."""
    if labels.dtype != torch.bool:
        binary = ~_non_binary(labels)
        if not bool(binary.all()):
            bad = labels[~binary].flatten()[:3].tolist()
            raise InvalidValueError(argument, _LABELS_EXPECTED, f"values such as {bad}")


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
    if values and values_checked():
        scan_labels(argument, labels)
    return labels


def scan_mask(argument: str, mask: torch.Tensor | None) -> None:
    """Raise :class:`InvalidValueError` for a non-binary mask or a fully masked image.

    ``mask`` is the mask as given (shape already checked), ``(B, 1, H, W)`` or ``(B, H, W)``.
    """
    if mask is None:
        return
    if mask.dtype != torch.bool:
        if bool(_non_binary(mask).any()):
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
        or mask.shape[2] != height
        or mask.shape[3] != width
    ):
        raise ShapeError(
            argument,
            f"(B, 1, H, W) or (B, H, W) = ({batch}, 1, {height}, {width})",
            given_shape,
        )
    if values and values_checked():
        scan_mask(argument, mask)
    if mask.dtype != torch.bool:
        mask = mask != 0
    return mask


# --------------------------------------------------------------------------- numbers


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), ``bool`` excluded."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: object) -> bool:
    """Whether ``value`` is a real number (Python or NumPy), ``bool`` excluded."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_temperature(argument: str, temperature: object) -> float:
    """Return ``temperature`` as a float if it is a finite number > 0; else name ``argument``."""
    return check_number(argument, temperature, 0, strict_minimum=True)


def check_choice(argument: str, value: object, choices: tuple[Any, ...]) -> Any:
    """Return ``value`` if it is one of ``choices``; else name ``argument`` and list them."""
    if value not in choices:
        raise InvalidValueError(argument, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_bool(argument: str, value: object) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (not 0 / 1); else name ``argument``."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidValueError(argument, "True or False", value)
    return bool(value)


def check_int(
    argument: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool = False,
) -> Any:
    """Return ``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``.

    Args:
        argument: the name the error gives.
        value: what was passed (NumPy integers are accepted, ``bool`` is not).
        minimum: the smallest allowed value (``None``: no bound).
        maximum: the largest allowed value (``None``: no bound).
        optional: accept ``None`` too (returned as is).

    Raises:
        InvalidValueError: naming ``argument``, e.g. ``expected an integer >= 1, got 0``.
    """
    if optional and value is None:
        return None
    if (
        not is_integer(value)
        or (minimum is not None and value < minimum)  # type: ignore[operator]
        or (maximum is not None and value > maximum)  # type: ignore[operator]
    ):
        if minimum is not None and maximum is not None:
            expected = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            expected = f"an integer >= {minimum}"
        elif maximum is not None:
            expected = f"an integer <= {maximum}"
        else:
            expected = "an integer"
        raise InvalidValueError(argument, expected + (" or None" if optional else ""), value)
    return int(value)  # type: ignore[call-overload]


def check_number(
    argument: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    strict_minimum: bool = False,
    strict_maximum: bool = False,
    optional: bool = False,
) -> Any:
    """Return ``value`` as a float if it is finite and in range; else name ``argument``.

    The range is ``[minimum, maximum]``, open on a side marked strict; ``None``
    leaves that side unbounded. ``optional`` accepts ``None`` (returned as is).
    """
    if optional and value is None:
        return None
    left = "(" if strict_minimum else "["
    right = ")" if strict_maximum else "]"
    if minimum is not None and maximum is not None:
        expected = f"a finite number in {left}{minimum}, {maximum}{right}"
    elif minimum is not None:
        expected = f"a finite number {'>' if strict_minimum else '>='} {minimum}"
    elif maximum is not None:
        expected = f"a finite number {'<' if strict_maximum else '<='} {maximum}"
    else:
        expected = "a finite number"
    if optional:
        expected += " or None"
    if not is_number(value):
        raise InvalidValueError(argument, expected, value)
    number = float(value)  # type: ignore[arg-type]
    below = minimum is not None and (number <= minimum if strict_minimum else number < minimum)
    above = maximum is not None and (number >= maximum if strict_maximum else number > maximum)
    if not math.isfinite(number) or below or above:
        raise InvalidValueError(argument, expected, value)
    return number


def renamed_argument(
    where: str, new: str, new_value: Any, old: str, old_value: Any, default: Any, why: str = ""
) -> Any:
    """Resolve an argument that was renamed, keeping the old spelling with a warning.

    Args:
        where: the function or class, for the message.
        new: the argument's name now.
        new_value: what was passed under ``new`` (``None``: nothing).
        old: its deprecated name.
        old_value: what was passed under ``old`` (``None``: nothing).
        default: the value when neither was passed.
        why: a sentence for the warning (why the name changed).

    Returns:
        The value to use (the same count under either name: nothing shifts).

    Raises:
        InvalidValueError: both names were passed.
    """
    return _renamed(where, new, new_value, old, old_value, default, why, stacklevel=4)


def _renamed(
    where: str,
    new: str,
    new_value: Any,
    old: str,
    old_value: Any,
    default: Any,
    why: str,
    stacklevel: int,
) -> Any:
    if old_value is None:
        return default if new_value is None else new_value
    if new_value is not None:
        raise InvalidValueError(old, f"only {new}= ({old}= is its deprecated name)", old_value)
    message = f"{where}: {old}= is deprecated, use {new}= (the same value: {new}={old_value!r})."
    warnings.warn(f"{message} {why}".strip(), DeprecationWarning, stacklevel=stacklevel)
    return old_value


def check_num_labels(
    where: str, num_labels: object, num_classes: object = None, default: object = None
) -> int:
    """The number of mask labels (background included) a metric or a segmentation net takes.

    ``num_classes`` in seedkit's Python API counts foreground classes (the CAM
    classifier's ``C``: 20 for VOC); a mask holds ``num_labels = num_classes + 1``
    labels (21 for VOC). Functions that count mask labels take ``num_labels``;
    their old keyword ``num_classes=`` (which meant the same count, background
    included) still works, with a ``DeprecationWarning``: nothing shifts by one.

    Args:
        where: the function or class, for the warning.
        num_labels: the value passed as ``num_labels`` (``None``: not passed).
        num_classes: the value passed under the deprecated name (``None``: not passed).
        default: the value when neither was passed (``None``: required).

    Returns:
        The count, an integer >= 2.
    """
    value = _renamed(
        where,
        "num_labels",
        num_labels,
        "num_classes",
        num_classes,
        default,
        "num_labels counts the mask labels, background included (21 for VOC); "
        "num_classes means the foreground classes everywhere in seedkit's Python API.",
        stacklevel=4,
    )
    return check_int("num_labels", value, 2)
