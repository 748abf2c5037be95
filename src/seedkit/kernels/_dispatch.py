"""Backend selection for the fused kernels.

The backend is a process-wide setting: ``"auto"`` (default), ``"reference"``
(the plain autograd composition), ``"fused"`` (the ``torch.compile``-generated
kernels) or ``"triton"`` (the hand-written Triton kernels). The environment
variable ``SEEDKIT_KERNELS`` sets the initial value.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator

import torch

from seedkit.checks import check_choice
from seedkit.errors import InvalidValueError

__all__ = [
    "AUTO_FUSED_ON_CPU",
    "AUTO_MIN_NUMEL",
    "AUTO_MIN_NUMEL_CPU",
    "BACKENDS",
    "get_backend",
    "record_failure",
    "resolve_backend",
    "self_check",
    "self_check_results",
    "set_backend",
    "triton_available",
    "use_backend",
]

#: The backends :func:`set_backend` accepts.
BACKENDS: tuple[str, ...] = ("auto", "reference", "fused", "triton")
# Below this many elements "auto" keeps the reference path on CUDA: a fused call's
# fixed cost (dispatch, mask and per-row buffers) outweighs what it saves on tiny maps.
AUTO_MIN_NUMEL = 32768
# The same on the CPU, where a compiled forward + backward has a fixed cost of about
# 0.2 ms (torch.compile's guards and wrappers) and the reference composition stays in
# cache up to a few hundred thousand elements: measured crossover 0.15-0.4 M elements
# on the 2-core benchmark machine (Performance page).
AUTO_MIN_NUMEL_CPU = 524288
# Whether "auto" uses the compiled fused path for CPU tensors at all.
AUTO_FUSED_ON_CPU = True


def _initial_backend() -> str:
    value = os.environ.get("SEEDKIT_KERNELS", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise InvalidValueError("SEEDKIT_KERNELS", "one of " + ", ".join(BACKENDS), value)
    return value


_BACKEND = _initial_backend()


def set_backend(backend: str) -> None:
    """Choose the implementation behind the temperature pooling and the KL loss.

    Args:
        backend: ``"auto"`` (Triton kernels for CUDA maps of at least
            ``AUTO_MIN_NUMEL`` = 32768 elements when ``triton`` imports; the
            compiled fused path for CPU maps of at least ``AUTO_MIN_NUMEL_CPU``
            = 524288 elements when ``torch.compile`` works here; the reference
            path otherwise),
            ``"reference"`` (the plain autograd composition, no compilation),
            ``"fused"`` (``torch.compile``-generated kernels on any device) or
            ``"triton"`` (the Triton kernels; CUDA tensors, or CPU tensors under
            ``TRITON_INTERPRET=1``).

    Example:
        >>> from seedkit import kernels
        >>> kernels.set_backend("reference")
        >>> kernels.get_backend()
        'reference'
        >>> kernels.set_backend("auto")
    """
    global _BACKEND
    _BACKEND = check_choice("backend", backend, BACKENDS)


def get_backend() -> str:
    """Return the current backend setting (``"auto"`` unless changed)."""
    return _BACKEND


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Context manager that sets the backend and restores the previous one.

    Example:
        >>> import torch, seedkit
        >>> from seedkit import kernels
        >>> with kernels.use_backend("reference"):
        ...     kernels.get_backend()
        'reference'
    """
    previous = _BACKEND
    set_backend(backend)
    try:
        yield
    finally:
        set_backend(previous)


@functools.cache
def triton_available() -> bool:
    """Return whether the ``triton`` package imports (the ``seedkit-wsss[triton]`` extra)."""
    try:
        import triton
        import triton.language
    except Exception:
        return False
    return bool(triton.__version__ and triton.language)


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Outcome of the self-check per (backend, device, working dtype): None = passed,
# else the reason it failed (a failed launch later on is recorded here too).
_CHECKED: dict[tuple[str, str, torch.dtype], str | None] = {}
_CHECKABLE: tuple[str, ...] = ("fused", "triton")


def _device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float64 stays, everything else is float32."""
    return dtype if dtype == torch.float64 else torch.float32


def _warn_failure(backend: str, device: str, dtype: torch.dtype, reason: str) -> None:
    then = (
        "the compiled ('fused') path (the reference where that fails too)"
        if backend == "triton"
        else "the reference path"
    )
    warnings.warn(
        f"seedkit.kernels: the {backend!r} kernels failed on {device} ({dtype}): "
        f"{reason}. Using {then} from now on for this device and dtype. "
        "Set SEEDKIT_KERNELS=reference (or fused) to choose a path yourself.",
        RuntimeWarning,
        stacklevel=4,
    )


def self_check(
    backend: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> bool:
    """Check a backend's kernels against the reference, once per device and dtype.

    Runs the pooling and the KL, forward and backward, with and without a mask,
    ``scale="raw"`` and ``"max"``, on maps of 37, 300 and 2100 positions (one
    block, several blocks), compares them with the float64 reference and checks
    that a NaN at a masked position reaches the result (what the input checks
    read). The outcome is kept for the process: :func:`resolve_backend` calls
    this on the first use of the Triton kernels per device and dtype and, on a
    failure (a compile error or a mismatch), warns once and uses the compiled
    path (if its own check passes there) or the reference from then on.

    Args:
        backend: ``"triton"`` or ``"fused"``.
        device: where to run the kernels.
        dtype: the working dtype (half dtypes are computed in float32).

    Returns:
        Whether the kernels passed (now or earlier in this process).

    Example:
        >>> from seedkit import kernels
        >>> kernels.self_check("fused", "cpu") in (True, False)
        True
    """
    check_choice("backend", backend, _CHECKABLE)
    key = (backend, _device_name(device), _working_dtype(dtype))
    if key not in _CHECKED:
        from seedkit.kernels._selfcheck import run_self_check

        reason = run_self_check(backend, torch.device(key[1]), key[2])
        _CHECKED[key] = reason
        if reason is not None:
            _warn_failure(*key, reason)
    return _CHECKED[key] is None


def record_failure(
    backend: str, device: torch.device | str, dtype: torch.dtype, error: BaseException
) -> None:
    """Record that a launch of ``backend`` failed on ``device``: later calls go elsewhere.

    Warns once per backend, device and dtype. Called by the Triton launchers,
    which finish the failed call in eager torch ops.
    """
    key = (backend, _device_name(device), _working_dtype(dtype))
    if _CHECKED.get(key) is None:
        reason = f"{type(error).__name__}: {error}"
        _CHECKED[key] = reason
        _warn_failure(*key, reason)


def self_check_results() -> dict[str, str]:
    """The self-checks run in this process: ``"backend device dtype"`` -> ``"ok"`` or why not."""
    return {
        f"{backend} {device} {str(dtype).replace('torch.', '')}": reason or "ok"
        for (backend, device, dtype), reason in _CHECKED.items()
    }


def _checked(backend: str, tensor: torch.Tensor) -> str:
    """``backend`` if it passed its check on ``tensor``'s device and dtype, else the fallback."""
    if backend == "triton":
        if self_check("triton", tensor.device, tensor.dtype):
            return "triton"
        backend = "fused"
    if backend == "fused" and self_check("fused", tensor.device, tensor.dtype):
        return "fused"
    return "reference"


def resolve_backend(tensor: torch.Tensor, backend: str | None = None) -> str:
    """Return the implementation to use for ``tensor``: reference, fused or triton.

    Args:
        tensor: the activations the kernel will run on (its device decides).
        backend: a backend name, or ``None`` for the process-wide setting.

    Returns:
        ``"reference"``, ``"fused"`` or ``"triton"``. The Triton kernels are
        returned only once they passed :func:`self_check` on the tensor's
        device and dtype; otherwise the compiled path (if it passed there) or
        the reference.
    """
    choice = _BACKEND if backend is None else check_choice("backend", backend, BACKENDS)
    if choice == "triton":
        if not triton_available():
            raise InvalidValueError(
                "backend", "'triton' only with the triton package installed", "triton"
            )
        if not (tensor.is_cuda or _triton_interpreted()):
            raise InvalidValueError(
                "backend",
                "'triton' only for CUDA tensors (or under TRITON_INTERPRET=1)",
                str(tensor.device),
            )
        return _checked("triton", tensor)
    if choice == "auto":
        if tensor.is_cuda:
            if tensor.numel() < AUTO_MIN_NUMEL:
                return "reference"
            return _checked("triton", tensor) if triton_available() else "reference"
        if not AUTO_FUSED_ON_CPU or tensor.numel() < AUTO_MIN_NUMEL_CPU:
            return "reference"
        from seedkit.kernels._compiled import compiled_available

        return "fused" if compiled_available() else "reference"
    return choice
