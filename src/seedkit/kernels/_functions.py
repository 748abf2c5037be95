"""Autograd functions shared by the fused backends.

They save only their inputs and per-row scalars (log-normalisers, pooled
values) and recompute the softmax in backward, so no ``(B, C, N)`` tensor
stays alive between forward and backward. ``impl`` is the namespace of
kernels (compiled or Triton) that does the arithmetic; its ``pool_inputs`` /
``kl_inputs`` turn the mask, the per-row divisors and the temperatures into
the tensors its kernels read, once per call: forward and backward both take
them.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["KLConsistencyFunction", "TemperaturePoolFunction"]


class TemperaturePoolFunction(torch.autograd.Function):
    """``s = sum_n softmax(a / divisor / tau)_n a_n`` per row, with a recomputing backward.

    Called as ``apply(impl, a, *rest)`` with ``(a, *rest) = impl.pool_inputs(...)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, impl: SimpleNamespace, a: torch.Tensor, *rest: torch.Tensor | None
    ) -> torch.Tensor:
        """Return the pooled ``(B, C)`` scores."""
        pooled, peak, log_total = impl.pool_forward(a, *rest)
        ctx.save_for_backward(a, *rest, peak, log_total, pooled)
        ctx.impl = impl
        ctx.num_rest = len(rest)
        return pooled.squeeze(2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """Return ``grad * alpha * (1 + (a - s) / divisor / tau)`` for ``a``."""
        grad_a = ctx.impl.pool_backward(*ctx.saved_tensors, grad.unsqueeze(2).contiguous())
        return (None, grad_a, *([None] * ctx.num_rest))


class KLConsistencyFunction(torch.autograd.Function):
    """Per-row ``KL(softmax(teacher) || softmax(student))``; the teacher gets no gradient.

    Called as ``apply(impl, student, *rest)`` with ``(student, *rest) = impl.kl_inputs(...)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, impl: SimpleNamespace, student: torch.Tensor, *rest: torch.Tensor | None
    ) -> torch.Tensor:
        """Return the ``(B, C)`` divergences."""
        kl, *normalisers = impl.kl_forward(student, *rest)
        ctx.save_for_backward(student, *rest, *normalisers)
        ctx.impl = impl
        ctx.num_rest = len(rest)
        return kl.squeeze(2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """Return ``grad * (p - q) / divisor / tau_s`` for the student, nothing for the teacher."""
        grad_student = ctx.impl.kl_backward(*ctx.saved_tensors, grad.unsqueeze(2).contiguous())
        return (None, grad_student, *([None] * ctx.num_rest))
