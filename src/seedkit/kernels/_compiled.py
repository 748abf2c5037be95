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
    compiled = torch.compile(function, dynamic=True, fullgraph=True)
    name = function.__name__

    @functools.wraps(function)
    def call(*args: torch.Tensor) -> Any:
        device_type = args[0].device.type
        first = name not in _COMPILE_SECONDS
        start = time.perf_counter()
        # The inputs are float32 / float64 already; autocast must not change the graph.
        with torch.autocast(device_type=device_type, enabled=False):
            result = compiled(*args)
        if first:
            _COMPILE_SECONDS[name] = time.perf_counter() - start
        return result

    return call


def _bias(valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The ``(B, 1, N)`` boolean mask as the additive float mask the compiled loops read."""
    bias = torch.zeros(valid.shape, dtype=like.dtype, device=like.device)
    return bias.masked_fill_(~valid, float("-inf"))


def _inverse(divisor: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    return 1.0 / (divisor * tau)


@functools.cache
def _kernels() -> SimpleNamespace:
    return SimpleNamespace(
        pool_forward=_compile(_math.pool_forward),
        pool_backward=_compile(_math.pool_backward),
        kl_forward=_compile(_math.kl_forward),
        kl_backward=_compile(_math.kl_backward),
        max_magnitude=_compile(_math.masked_max_magnitude),
    )


# The autograd functions call every backend with the boolean mask, the per-row
# divisor and tau; these adapters turn them into the bias and the per-row inverse
# (a (B, 1, N) fill and a (B, C, 1) division, outside the compiled loops).


Tensor = torch.Tensor


def _pool_forward(a: Tensor, valid: Tensor, divisor: Tensor, tau: Tensor) -> tuple[Tensor, ...]:
    return _kernels().pool_forward(a, _bias(valid, a), _inverse(divisor, tau))


def _pool_backward(
    a: Tensor, valid: Tensor, divisor: Tensor, tau: Tensor, *saved_and_grad: Tensor
) -> Tensor:
    return _kernels().pool_backward(a, _bias(valid, a), _inverse(divisor, tau), *saved_and_grad)


def _kl_arguments(
    student: Tensor,
    teacher: Tensor,
    valid: Tensor,
    student_divisor: Tensor,
    teacher_divisor: Tensor,
    student_tau: Tensor,
    teacher_tau: Tensor,
) -> tuple[Tensor, ...]:
    return (
        student,
        teacher,
        _bias(valid, student),
        _inverse(student_divisor, student_tau),
        _inverse(teacher_divisor, teacher_tau),
    )


def _kl_forward(*inputs: Tensor) -> tuple[Tensor, ...]:
    return _kernels().kl_forward(*_kl_arguments(*inputs))


def _kl_backward(*inputs_saved_and_grad: Tensor) -> Tensor:
    inputs, rest = inputs_saved_and_grad[:7], inputs_saved_and_grad[7:]
    return _kernels().kl_backward(*_kl_arguments(*inputs), *rest)


def _max_magnitude(a: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return _kernels().max_magnitude(a, _bias(valid, a))


@functools.cache
def compiled_impl() -> SimpleNamespace:
    """Return the compiled kernels (compiled lazily, on their first call)."""
    return SimpleNamespace(
        name="fused",
        pool_forward=_pool_forward,
        pool_backward=_pool_backward,
        kl_forward=_kl_forward,
        kl_backward=_kl_backward,
        max_magnitude=_max_magnitude,
    )


def max_magnitude(a: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Detached per-row ``max |a|`` over valid positions (``scale="max"``), fused."""
    return compiled_impl().max_magnitude(a.detach(), valid)


@functools.cache
def compiled_available() -> bool:
    """Compile the forward kernel on a tiny input once; ``False`` (and a warning) if that fails."""
    try:
        a = torch.linspace(-1.0, 1.0, 2 * 3 * 5).reshape(2, 3, 5)
        valid = torch.ones(2, 1, 5, dtype=torch.bool)
        divisor = torch.ones(2, 3, 1)
        pooled, *_ = compiled_impl().pool_forward(a, valid, divisor, torch.tensor(1.0))
        expected, *_ = _math.pool_forward(a, _bias(valid, a), _inverse(divisor, torch.tensor(1.0)))
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
