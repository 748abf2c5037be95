"""Backend selection for the fused kernels.

The backend is ``"auto"`` (default), ``"reference"`` (the plain autograd
composition), ``"eager"`` (fused autograd functions in eager torch ops, no
compilation), ``"fused"`` (the ``torch.compile``-generated kernels) or
``"triton"`` (the hand-written Triton kernels). :func:`set_backend` sets it for
the process, :func:`use_backend` for a block of the current thread or task;
without either, the environment variable ``SEEDKIT_KERNELS`` gives it (read and
validated at the first call that needs it, so a bad value is an error naming
the variable there, never at import).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from seedkit.checks import check_choice, compiling, environment_setting
from seedkit.errors import InvalidValueError

__all__ = [
    "AUTO_MIN_NUMEL",
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
BACKENDS: tuple[str, ...] = ("auto", "reference", "eager", "fused", "triton")
# Below this many elements "auto" keeps CUDA maps off the Triton kernels: a launch's
# fixed cost (dispatch, mask and per-row buffers) outweighs what it saves on tiny maps.
AUTO_MIN_NUMEL = 32768

_UNSET: Any = object()
# Set by set_backend; _UNSET: SEEDKIT_KERNELS, read at the first call that needs it.
_PROCESS_BACKEND: Any = _UNSET
# Set by use_backend, for the current thread / task only.
_CONTEXT_BACKEND: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "seedkit_kernels_backend", default=_UNSET
)


def set_backend(backend: str) -> None:
    """Choose the implementation behind the temperature pooling and the KL loss, process-wide.

    Args:
        backend: ``"auto"`` (the Triton kernels for CUDA maps of at least
            ``AUTO_MIN_NUMEL`` = 32768 elements when ``triton`` imports and their
            self-check passed on that GPU, the ``"eager"`` path otherwise: nothing
            is ever compiled behind your back),
            ``"reference"`` (the plain autograd composition),
            ``"eager"`` (fused autograd functions in eager torch ops: no
            compilation, no ``(B, C, N)`` intermediate kept for backward but
            the KL's ``p - q``),
            ``"fused"`` (``torch.compile``-generated kernels on any device,
            compiled at their first call in the process: fastest on the CPU
            once compiled, see the Performance page) or ``"triton"`` (the
            Triton kernels; CUDA tensors, or CPU tensors under
            ``TRITON_INTERPRET=1``).

    Example:
        >>> from seedkit import kernels
        >>> kernels.set_backend("reference")
        >>> kernels.get_backend()
        'reference'
        >>> kernels.set_backend("auto")
    """
    global _PROCESS_BACKEND
    _PROCESS_BACKEND = check_choice("backend", backend, BACKENDS)


def get_backend() -> str:
    """Return the backend setting in force here (``"auto"`` unless changed).

    Raises:
        InvalidValueError: ``SEEDKIT_KERNELS`` holds a value it does not accept
            and no backend was set in code.
    """
    backend = _CONTEXT_BACKEND.get()
    if backend is _UNSET:
        backend = _PROCESS_BACKEND
        if backend is _UNSET:
            backend = environment_setting(
                "SEEDKIT_KERNELS", {name: name for name in BACKENDS}, "auto"
            )
    return backend


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Context manager: use ``backend`` in this block, for the current thread or task only.

    Example:
        >>> import torch, seedkit
        >>> from seedkit import kernels
        >>> with kernels.use_backend("reference"):
        ...     kernels.get_backend()
        'reference'
    """
    token = _CONTEXT_BACKEND.set(check_choice("backend", backend, BACKENDS))
    try:
        yield
    finally:
        _CONTEXT_BACKEND.reset(token)


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
    warnings.warn(
        f"seedkit.kernels: the {backend!r} kernels failed on {device} ({dtype}): "
        f"{reason}. Using the 'eager' path from now on for this device and dtype. "
        "Set SEEDKIT_KERNELS (or call seedkit.kernels.set_backend) to choose a path yourself.",
        RuntimeWarning,
        stacklevel=4,
    )


def self_check(
    backend: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> bool:
    """Check a backend's kernels against the reference, once per device and dtype.

    Runs the pooling and the KL, forward and backward, with and without a mask,
    ``scale="raw"``, ``"max"`` and ``"std"``, on maps of 37, 300 and 2100
    positions (one block, several blocks), compares them with the float64
    reference and checks that a NaN at a masked position reaches the result
    (what the input checks read). The outcome is kept for the process:
    :func:`resolve_backend` calls this on the first use of the Triton or
    compiled kernels per device and dtype and, on a failure (a compile error or
    a mismatch), warns once and uses the ``"eager"`` path from then on.

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
        reason = _SELF_CHECK[0](backend, torch.device(key[1]), key[2])
        _CHECKED[key] = reason
        if reason is not None:
            _warn_failure(*key, reason)
    return _CHECKED[key] is None


#: The self-check runner, ``run(backend, device, dtype) -> failure reason or None``. The
#: checks call the kernels, which import this module, so ``seedkit.kernels`` registers
#: it at import (:func:`register_self_check`) instead of this module importing it.
_SELF_CHECK: list[Any] = []


def register_self_check(runner: Any) -> None:
    """Set the function :func:`self_check` runs (done once by ``seedkit.kernels``)."""
    _SELF_CHECK[:] = [runner]


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
    if self_check(backend, tensor.device, tensor.dtype):
        return backend
    return "eager"


def resolve_backend(tensor: torch.Tensor, backend: str | None = None) -> str:
    """Return the implementation to use for ``tensor``: reference, eager, fused or triton.

    The one place a backend is chosen: the public functions call it once per call.

    Args:
        tensor: the activations the kernel will run on (its device decides).
        backend: a backend name, or ``None`` for the setting in force
            (:func:`get_backend`).

    Returns:
        ``"reference"``, ``"eager"``, ``"fused"`` or ``"triton"``. Under
        ``torch.compile`` always ``"reference"``: the compiler fuses that plain
        composition itself. The Triton kernels are returned only once they passed
        :func:`self_check` on the tensor's device and dtype; otherwise the
        eager path (``"fused"`` likewise). ``"auto"`` never
        returns ``"fused"``: nothing is compiled unless asked for.
    """
    if compiling():
        return "reference"
    choice = get_backend() if backend is None else check_choice("backend", backend, BACKENDS)
    if choice == "auto":
        if tensor.is_cuda and tensor.numel() >= AUTO_MIN_NUMEL and triton_available():
            return _checked("triton", tensor)
        return "eager"
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
    if choice == "fused":
        return _checked("fused", tensor)
    return choice
