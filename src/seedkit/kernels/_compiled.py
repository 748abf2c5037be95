"""The ``torch.compile`` (inductor) backend: fused C++ / OpenMP loops on the CPU.

The math of :mod:`seedkit.kernels._math` is compiled once per process with
dynamic shapes, so a new ``(B, C, N)`` does not trigger a recompilation (sizes 0
and 1 are still specialised by ``torch.compile``: a first call with ``B == 1``
or ``C == 1`` compiles one more variant). Inductor's on-disk cache makes later
processes start fast.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from seedkit.kernels import _math

__all__ = ["compile_seconds", "compiled_available", "compiled_impl", "max_magnitude"]

_COMPILE_SECONDS: dict[str, float] = {}


def _compile(function: Callable[..., Any]) -> Callable[..., Any]:
    # Not fullgraph: the kernels trace whole (the tests check it), but past dynamo's
    # recompile limit (8 variants of one kernel: dtypes, masks, sizes 0 / 1 in one
    # process) fullgraph=True raises in the user's call, where without it that call
    # runs the same math in eager ops.
    compiled = torch.compile(function, dynamic=True)
    name = function.__name__

    @functools.wraps(function)
    def call(*args: torch.Tensor | None) -> Any:
        first = name not in _COMPILE_SECONDS
        start = time.perf_counter()
        device_type = args[0].device.type  # type: ignore[union-attr]
        if torch.is_autocast_enabled(device_type):
            # The inputs are float32 / float64 already; autocast must not change the graph.
            with torch.autocast(device_type=device_type, enabled=False):
                result = compiled(*args)
        else:  # the common case: no context manager to enter (it costs about 10 us a call)
            result = compiled(*args)
        if first:
            _COMPILE_SECONDS[name] = time.perf_counter() - start
        return result

    return call


def _bias(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """The ``(B, 1, N)`` boolean mask as the additive float mask the compiled loops read.

    ``None`` (every position valid) stays ``None``: the kernels then read no mask.
    """
    if valid is None:
        return None
    bias = torch.zeros(valid.shape, dtype=like.dtype, device=like.device)
    return bias.masked_fill_(~valid, float("-inf"))


def _zeros_bias(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(like.shape[0], 1, like.shape[2], dtype=like.dtype, device=like.device)


def _inverse(like: torch.Tensor, divisor: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """The ``(B, C, 1)`` per-row factor ``1 / (divisor * tau)`` (``divisor`` 1 when ``None``)."""
    if divisor is None:
        shape = (like.shape[0], like.shape[1], 1)
        return torch.full(shape, 1.0 / temperature, dtype=like.dtype, device=like.device)
    return divisor.reciprocal().mul_(1.0 / temperature).clamp_(max=torch.finfo(like.dtype).max)


@functools.cache
def _kernels() -> SimpleNamespace:
    return SimpleNamespace(
        pool_forward=_compile(_math.pool_forward),
        pool_backward=_compile(_math.pool_backward),
        kl_forward=_compile(_math.kl_forward),
        kl_backward=_compile(_math.kl_backward),
        max_magnitude=_compile(_math.masked_max_magnitude),
    )


Tensor = torch.Tensor


def _pool_inputs(
    a: Tensor, valid: Tensor | None, divisor: Tensor | None, temperature: float
) -> tuple[Tensor | None, ...]:
    """``(a, bias, inverse)``: built once per call, read by both directions."""
    return a, _bias(valid, a), _inverse(a, divisor, temperature)


def _kl_inputs(
    student: Tensor,
    teacher: Tensor,
    valid: Tensor | None,
    student_divisor: Tensor | None,
    teacher_divisor: Tensor | None,
    student_temperature: float,
    teacher_temperature: float,
) -> tuple[Tensor | None, ...]:
    """``(student, teacher, bias, student_inverse, teacher_inverse)``.

    The KL always reads a bias (zeros without a mask). Inductor schedules the
    masked KL graph as one loop nest per image that keeps each row in cache
    across its sweeps, and the unmasked one as separate passes over all rows:
    1.3-1.6x slower at (16, 21, 56, 56) and (8, 81, 64, 64) on the benchmark
    machine. The pooling is faster without one, so it gets ``None``.
    """
    bias = _bias(valid, student) if valid is not None else _zeros_bias(student)
    return (
        student,
        teacher,
        bias,
        _inverse(student, student_divisor, student_temperature),
        _inverse(student, teacher_divisor, teacher_temperature),
    )


def _max_magnitude(a: Tensor, valid: Tensor | None) -> Tensor:
    return _kernels().max_magnitude(a, _bias(valid, a))


@functools.cache
def compiled_impl() -> SimpleNamespace:
    """Return the compiled kernels (compiled lazily, on their first call)."""
    kernels = _kernels()
    return SimpleNamespace(
        name="fused",
        pool_inputs=_pool_inputs,
        pool_forward=kernels.pool_forward,
        pool_backward=kernels.pool_backward,
        kl_inputs=_kl_inputs,
        kl_forward=kernels.kl_forward,
        kl_backward=kernels.kl_backward,
        max_magnitude=_max_magnitude,
    )


def max_magnitude(a: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Detached per-row ``max |a|`` over valid positions (``scale="max"``), fused."""
    return compiled_impl().max_magnitude(a.detach(), valid)


@functools.cache
def compiled_available() -> bool:
    """Compile the forward kernel on a tiny input once; ``False`` (and a warning) if that fails."""
    try:
        a = torch.linspace(-1.0, 1.0, 2 * 3 * 5).reshape(2, 3, 5)
        valid = torch.ones(2, 1, 5, dtype=torch.bool)
        valid[0, 0, 0] = False
        inputs = _pool_inputs(a, valid, None, 1.0)
        pooled, *_ = compiled_impl().pool_forward(*inputs)
        expected, *_ = _math.pool_forward(*inputs)
        if not torch.allclose(pooled, expected, rtol=1e-5, atol=1e-6):
            raise RuntimeError("the compiled kernel disagrees with the eager one")
    except Exception as error:  # any compiler / toolchain failure: fall back, never crash
        warnings.warn(
            "seedkit.kernels: torch.compile is unavailable here "
            f"({type(error).__name__}: {error}); using the reference path. "
            "Set SEEDKIT_KERNELS=reference to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def compile_seconds() -> dict[str, float]:
    """Return the wall time of the first call of each compiled kernel in this process.

    The first call includes the compilation (or the load from inductor's on-disk
    cache); later calls with new shapes do not recompile.
    """
    return dict(_COMPILE_SECONDS)
