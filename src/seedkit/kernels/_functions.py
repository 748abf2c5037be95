"""Autograd functions shared by the fused backends.

They save only their inputs and per-row scalars (log-normalisers, pooled
values) and recompute the softmax in backward, so no ``(B, C, N)`` tensor
stays alive between forward and backward. ``impl`` is the namespace of
kernels (compiled or Triton) that does the arithmetic.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["KLConsistencyFunction", "TemperaturePoolFunction"]


class TemperaturePoolFunction(torch.autograd.Function):
    """``s = sum_n softmax(a / divisor / tau)_n a_n`` per row, with a recomputing backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        a: torch.Tensor,
        valid: torch.Tensor,
        divisor: torch.Tensor,
        tau: torch.Tensor,
        impl: SimpleNamespace,
    ) -> torch.Tensor:
        """Return the pooled ``(B, C)`` scores."""
        pooled, peak, log_total = impl.pool_forward(a, valid, divisor, tau)
        ctx.save_for_backward(a, valid, divisor, tau, peak, log_total, pooled)
        ctx.impl = impl
        return pooled.squeeze(2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """Return ``grad * alpha * (1 + (a - s) / divisor / tau)`` for ``a``."""
        grad_a = ctx.impl.pool_backward(*ctx.saved_tensors, grad.unsqueeze(2).contiguous())
        return grad_a, None, None, None, None


class KLConsistencyFunction(torch.autograd.Function):
    """Per-row ``KL(softmax(teacher) || softmax(student))``; the teacher gets no gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor,
        student_divisor: torch.Tensor,
        teacher_divisor: torch.Tensor,
        student_tau: torch.Tensor,
        teacher_tau: torch.Tensor,
        impl: SimpleNamespace,
    ) -> torch.Tensor:
        """Return the ``(B, C)`` divergences."""
        kl, *normalisers = impl.kl_forward(
            student, teacher, valid, student_divisor, teacher_divisor, student_tau, teacher_tau
        )
        ctx.save_for_backward(
            student,
            teacher,
            valid,
            student_divisor,
            teacher_divisor,
            student_tau,
            teacher_tau,
            *normalisers,
        )
        ctx.impl = impl
        return kl.squeeze(2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """Return ``grad * (p - q) / divisor / tau_s`` for the student, nothing for the teacher."""
        grad_student = ctx.impl.kl_backward(*ctx.saved_tensors, grad.unsqueeze(2).contiguous())
        return grad_student, None, None, None, None, None, None, None
