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
from collections.abc import Iterator

import torch

from seedkit._checks import check_choice
from seedkit.errors import InvalidValueError

__all__ = [
    "AUTO_FUSED_ON_CPU",
    "AUTO_MIN_NUMEL",
    "AUTO_MIN_NUMEL_CPU",
    "BACKENDS",
    "get_backend",
    "resolve_backend",
    "set_backend",
    "triton_available",
    "use_backend",
]

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
    """Return whether the ``triton`` package imports (the ``seedkit[triton]`` extra)."""
    try:
        import triton
        import triton.language
    except Exception:
        return False
    return bool(triton.__version__ and triton.language)


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(tensor: torch.Tensor, backend: str | None = None) -> str:
    """Return the implementation to use for ``tensor``: reference, fused or triton.

    Args:
        tensor: the activations the kernel will run on (its device decides).
        backend: a backend name, or ``None`` for the process-wide setting.

    Returns:
        ``"reference"``, ``"fused"`` or ``"triton"``.
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
        return "triton"
    if choice == "auto":
        if tensor.is_cuda:
            if tensor.numel() < AUTO_MIN_NUMEL:
                return "reference"
            return "triton" if triton_available() else "reference"
        if not AUTO_FUSED_ON_CPU or tensor.numel() < AUTO_MIN_NUMEL_CPU:
            return "reference"
        from seedkit.kernels._compiled import compiled_available

        return "fused" if compiled_available() else "reference"
    return choice
