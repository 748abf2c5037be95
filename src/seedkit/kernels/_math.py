"""The fused math, written once in plain torch ops.

These functions are what ``torch.compile`` turns into fused loops (one
reduction kernel per direction); called uncompiled they are also the readable
statement of what every backend computes. Shapes: ``a`` is ``(B, C, N)``,
``valid`` a ``(B, 1, N)`` boolean mask, ``divisor`` a ``(B, C, 1)`` per-row
scale (ones for ``scale="raw"``, the detached maximum magnitude for
``scale="max"``) and ``tau`` a 0-d tensor, so the logits are
``a / divisor / tau`` exactly as in the reference path.
"""

from __future__ import annotations

import torch

__all__ = ["kl_backward", "kl_forward", "pool_backward", "pool_forward"]


def _logits(
    a: torch.Tensor, valid: torch.Tensor, divisor: torch.Tensor, tau: torch.Tensor
) -> torch.Tensor:
    return torch.where(valid, a / divisor / tau, float("-inf"))


def _normalisers(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row maximum and ``log sum exp(z - max)``, kept apart.

    ``log alpha = (z - peak) - log_total`` is then exact to a few ulps of
    ``log N`` even where ``|z|`` is huge (``|A| / tau`` up to 1e7), which a single
    ``logsumexp`` (rounded to an ulp of ``|z|``) is not.
    """
    peak = z.amax(dim=2, keepdim=True)
    return peak, torch.log(torch.exp(z - peak).sum(dim=2, keepdim=True))


def pool_forward(
    a: torch.Tensor, valid: torch.Tensor, divisor: torch.Tensor, tau: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``s = sum_n softmax(z)_n a_n``, ``max z`` and ``log sum exp(z - max z)``."""
    z = _logits(a, valid, divisor, tau)
    # Three sweeps over each row (max, sum of exp, weighted sum), each consuming its
    # exp once, so inductor keeps every intermediate in registers: nothing of size
    # (B, C, N) is written. A row is a few kB and stays in cache between sweeps.
    peak, log_total = _normalisers(z)
    alpha = torch.exp(z - peak - log_total)
    pooled = (alpha * torch.where(valid, a, 0.0)).sum(dim=2, keepdim=True)
    return pooled, peak, log_total


def pool_backward(
    a: torch.Tensor,
    valid: torch.Tensor,
    divisor: torch.Tensor,
    tau: torch.Tensor,
    peak: torch.Tensor,
    log_total: torch.Tensor,
    pooled: torch.Tensor,
    grad: torch.Tensor,
) -> torch.Tensor:
    """Return ``grad * alpha * (1 + (a - s) / divisor / tau)``, recomputing ``alpha``."""
    alpha = torch.exp(_logits(a, valid, divisor, tau) - peak - log_total)
    return grad * alpha * (1.0 + torch.where(valid, a - pooled, 0.0) / divisor / tau)


def kl_forward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    student_divisor: torch.Tensor,
    teacher_divisor: torch.Tensor,
    student_tau: torch.Tensor,
    teacher_tau: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Return ``KL(q || p)`` and the normalisers (peak, log-total) of ``p`` then ``q``.

    ``q = softmax(teacher logits)``, ``p = softmax(student logits)``; positions
    where ``q`` underflows to 0 or that are masked contribute 0. All ``(B, C, 1)``.
    """
    zs = _logits(student, valid, student_divisor, student_tau)
    zt = _logits(teacher, valid, teacher_divisor, teacher_tau)
    peak_s, log_total_s = _normalisers(zs)
    peak_t, log_total_t = _normalisers(zt)
    log_q = zt - peak_t - log_total_t
    log_p = zs - peak_s - log_total_s
    q = torch.exp(log_q)
    # q == 0 (underflow) or masked: the term is 0 (0 log 0 = 0), never NaN.
    terms = torch.where(valid & (q > 0), q * (log_q - log_p), 0.0)
    return terms.sum(dim=2, keepdim=True), peak_s, log_total_s, peak_t, log_total_t


def kl_backward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    student_divisor: torch.Tensor,
    teacher_divisor: torch.Tensor,
    student_tau: torch.Tensor,
    teacher_tau: torch.Tensor,
    peak_s: torch.Tensor,
    log_total_s: torch.Tensor,
    peak_t: torch.Tensor,
    log_total_t: torch.Tensor,
    grad: torch.Tensor,
) -> torch.Tensor:
    """Return ``grad * (p - q) / divisor / tau_s``, the gradient for the student."""
    p = torch.exp(_logits(student, valid, student_divisor, student_tau) - peak_s - log_total_s)
    q = torch.exp(_logits(teacher, valid, teacher_divisor, teacher_tau) - peak_t - log_total_t)
    return grad * (p - q) / student_divisor / student_tau
