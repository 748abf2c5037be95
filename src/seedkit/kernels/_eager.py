"""The ``"eager"`` backend: fused autograd functions written in eager torch ops.

Nothing is compiled, so the first call costs what every call costs. Compared
with the plain autograd composition (:mod:`seedkit.reference`), each function

- works through the batch a few images at a time (about ``CHUNK`` elements),
  so its temporaries are a fraction of the map and stay in cache between sweeps;
- keeps no ``(B, C, N)`` tensor for backward but its input (the pooling: the
  softmax is recomputed in backward) or ``p - q`` (the KL);
- writes the gradient from its closed form instead of running the softmax's
  backward through the graph.

See the Performance page for the measured speed and memory. Shapes: ``a`` /
``student`` / ``teacher`` are contiguous ``(B, C, N)`` float32 or float64;
``bias`` a ``(B, 1, N)`` additive mask (0 at valid positions, ``-inf`` at masked
ones) or ``None``; ``inverse`` the ``(B, C, 1)`` per-row factor
``1 / (divisor * tau)``. A NaN or infinity anywhere in a row (masked positions
included: ``nan + -inf`` is NaN) makes that row's result non-finite, which is
what the value checks read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["CHUNK", "EagerKLFunction", "EagerPoolFunction"]

#: Elements per chunk of images (at least one image): 64 Ki float32 values, 256 KiB.
CHUNK = 65536

_softmax_out = torch.ops.aten._softmax.out
_log_softmax_out = torch.ops.aten._log_softmax.out


def _chunks(like: torch.Tensor) -> Iterator[slice]:
    """Slices of whole images of ``like`` (``(B, C, N)``), about ``CHUNK`` elements each."""
    batch, classes, n = like.shape
    step = max(1, CHUNK // max(1, classes * n))
    for start in range(0, batch, step):
        yield slice(start, min(start + step, batch))


def _part(tensor: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return None if tensor is None else tensor[rows]


@contextlib.contextmanager
def _no_autocast(device_type: str) -> Iterator[None]:
    """Autocast off inside the functions (their inputs are already float32 / float64)."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def _logits_into(
    out: torch.Tensor, a: torch.Tensor, inverse: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``out = a * inverse + bias``."""
    torch.mul(a, inverse, out=out)
    return out if bias is None else out.add_(bias)


class EagerPoolFunction(torch.autograd.Function):
    """``s = sum_n softmax(a * inverse + bias)_n a_n`` per row; keeps the ``(B, C)`` result only.

    Forward writes the logits of a chunk into one buffer, turns them into the
    softmax in place (one ATen softmax: maximum, ``exp`` and sum in a single
    vectorised kernel) and reduces it against ``a``; backward recomputes the
    softmax the same way straight into the gradient's buffer, chunk by chunk.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, a: torch.Tensor, inverse: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Return the pooled ``(B, C)`` scores."""
        pooled = a.new_empty(a.shape[0], a.shape[1])
        with _no_autocast(a.device.type):
            buffer: torch.Tensor | None = None
            for rows in _chunks(a):
                part = a[rows]
                if buffer is None or buffer.shape != part.shape:
                    buffer = torch.empty_like(part)
                weights = _softmax_out(
                    _logits_into(buffer, part, inverse[rows], _part(bias, rows)),
                    2,
                    False,
                    out=buffer,
                )
                torch.linalg.vecdot(weights, part, dim=2, out=pooled[rows])
        ctx.save_for_backward(a, inverse, bias, pooled)
        return pooled

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """Return ``grad * alpha * (1 + (a - s) * inverse)``, recomputing ``alpha``."""
        a, inverse, bias, pooled = ctx.saved_tensors
        grad = grad.unsqueeze(2)
        scale = grad * inverse
        pooled = pooled.unsqueeze(2)
        grad_a = torch.empty_like(a)
        with _no_autocast(a.device.type):
            for rows in _chunks(a):
                alpha = _logits_into(grad_a[rows], a[rows], inverse[rows], _part(bias, rows))
                alpha = _softmax_out(alpha, 2, False, out=alpha)
                factor = torch.sub(a[rows], pooled[rows]).mul_(scale[rows]).add_(grad[rows])
                alpha.mul_(factor)
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
        masked = None if bias is None else torch.isneginf(bias)
        with _no_autocast(student.device.type):
            p_minus_q = torch.empty_like(student)
            kl = student.new_empty(student.shape[0], student.shape[1])
            for rows in _chunks(student):
                part_bias = _part(bias, rows)
                log_p = _logits_into(
                    p_minus_q[rows], student[rows], student_inverse[rows], part_bias
                )
                _log_softmax_out(log_p, 2, False, out=log_p)
                log_q = _logits_into(
                    torch.empty_like(log_p), teacher[rows], teacher_inverse[rows], part_bias
                )
                _log_softmax_out(log_q, 2, False, out=log_q)
                q = log_q.exp()
                difference = log_q.sub_(log_p)
                if masked is not None:
                    # -inf - -inf is NaN at masked positions, where q is 0: they add nothing.
                    difference = difference.masked_fill_(masked[rows], 0.0)
                torch.sum(difference.mul_(q), dim=2, out=kl[rows])
                log_p.exp_().sub_(q)
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
