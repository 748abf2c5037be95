"""The ``"eager"`` backend: fused autograd functions written in eager torch ops.

Nothing is compiled, so the first call costs what every call costs. Compared
with the plain autograd composition (:mod:`seedkit.reference`), each function
keeps one ``(B, C, N)`` tensor for backward instead of several (the softmax for
the pooling, ``p - q`` for the KL), computes the softmax in place, and writes
the gradient from a closed form in three in-place sweeps instead of running the
softmax's backward through the graph (see the Performance page for the
measured speed and memory).

Shapes: ``a`` / ``student`` / ``teacher`` are ``(B, C, N)`` float32 or float64;
``bias`` a ``(B, 1, N)`` additive mask (0 at valid positions, ``-inf`` at masked
ones) or ``None``; ``inverse`` the ``(B, C, 1)`` per-row factor
``1 / (divisor * tau)``. A NaN or infinity anywhere in a row (masked positions
included: ``nan + -inf`` is NaN) makes that row's result non-finite, which is
what the value checks read.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["EagerKLFunction", "EagerPoolFunction"]

_softmax_out = torch.ops.aten._softmax.out
_log_softmax_out = torch.ops.aten._log_softmax.out


def _logits(a: torch.Tensor, inverse: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A new ``(B, C, N)`` buffer ``a * inverse + bias``."""
    z = a * inverse
    return z if bias is None else z.add_(bias)


def _no_autocast(device_type: str) -> Any:
    """Autocast off inside the functions (their inputs are already float32 / float64)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return _NULL


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


_NULL = _Null()


class EagerPoolFunction(torch.autograd.Function):
    """``s = sum_n softmax(a * inverse + bias)_n a_n`` per row; keeps only the softmax."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, a: torch.Tensor, inverse: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Return the pooled ``(B, C)`` scores."""
        with _no_autocast(a.device.type):
            z = _logits(a, inverse, bias)
            alpha = _softmax_out(z, 2, False, out=z)
            pooled = (alpha * a).sum(dim=2, keepdim=True)
        ctx.save_for_backward(a, inverse, alpha, pooled)
        return pooled.squeeze(2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """Return ``grad * alpha * (1 + (a - s) * inverse)`` for ``a``."""
        a, inverse, alpha, pooled = ctx.saved_tensors
        grad = grad.unsqueeze(2)
        with _no_autocast(a.device.type):
            grad_a = (a - pooled).mul_(grad * inverse).add_(grad).mul_(alpha)
        return grad_a, None, None


class EagerKLFunction(torch.autograd.Function):
    """Per-row ``KL(softmax(teacher logits) || softmax(student logits))``; keeps ``p - q``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student: torch.Tensor,
        teacher: torch.Tensor,
        student_inverse: torch.Tensor,
        teacher_inverse: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """Return the ``(B, C)`` divergences (the teacher gets no gradient)."""
        with _no_autocast(student.device.type):
            log_p = _logits(student, student_inverse, bias)
            log_p = _log_softmax_out(log_p, 2, False, out=log_p)
            log_q = _logits(teacher, teacher_inverse, bias)
            log_q = _log_softmax_out(log_q, 2, False, out=log_q)
            q = log_q.exp()
            difference = log_q.sub_(log_p)
            if bias is not None:
                # -inf - -inf is NaN at masked positions, where q is 0: they add nothing.
                difference = difference.masked_fill_(torch.isneginf(bias), 0.0)
            kl = difference.mul_(q).sum(dim=2)
            del difference
            p_minus_q = log_p.exp_().sub_(q)
        ctx.save_for_backward(p_minus_q, student_inverse)
        return kl

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """Return ``grad * (p - q) * inverse_s`` for the student, nothing for the teacher."""
        p_minus_q, student_inverse = ctx.saved_tensors
        with _no_autocast(p_minus_q.device.type):
            grad_student = p_minus_q * (grad.unsqueeze(2) * student_inverse)
        return grad_student, None, None, None, None
