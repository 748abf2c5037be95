"""The fused math, written once in plain torch ops.

These functions are what ``torch.compile`` turns into fused loops; called
uncompiled they are also the readable statement of what the compiled backend
computes. Shapes: ``a`` is ``(B, C, N)``; ``bias`` a ``(B, 1, N)`` float
additive mask (0 at valid positions, ``-inf`` at masked ones), or ``None`` when
every position is valid (a separate compiled variant that reads no mask; the
pooling uses it, the KL is faster with a zero bias, see ``_compiled``);
``inverse`` the
``(B, C, 1)`` per-row factor ``1 / (divisor * tau)`` (``divisor`` is 1 for
``scale="raw"`` and the detached maximum magnitude for ``scale="max"``), so the
logits are ``z = a * inverse + bias``.

Two choices make the CPU loops fast (measured on the Performance page):

- the mask is an additive float ``bias`` rather than a boolean ``where``: a
  vectorised bool-to-mask load in every sweep cost more than the ``exp``;
- one multiplication by a per-row ``inverse`` replaces two divisions.

Masked positions must hold finite values (``0 * a`` must be 0 there); the
public functions' input checks reject non-finite activations.
"""

from __future__ import annotations

import torch

__all__ = [
    "kl_backward",
    "kl_forward",
    "masked_max_magnitude",
    "pool_backward",
    "pool_forward",
]


def _plus(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x + bias``, or ``x`` without a mask (``torch.compile`` specialises on ``None``)."""
    return x if bias is None else x + bias


def pool_forward(
    a: torch.Tensor, bias: torch.Tensor | None, inverse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``s = sum_n softmax(z)_n a_n``, ``max z`` and ``log sum exp(z - max z)``.

    Two sweeps over each row: the maximum, then both sums from one ``exp``
    (inductor fuses reductions over the same loop), so nothing of size
    ``(B, C, N)`` is written.
    """
    z = _plus(a * inverse, bias)
    peak = z.amax(dim=2, keepdim=True)
    weights = torch.exp(z - peak)
    total = weights.sum(dim=2, keepdim=True)
    weighted = (weights * a).sum(dim=2, keepdim=True)
    return weighted / total, peak, torch.log(total)


def pool_backward(
    a: torch.Tensor,
    bias: torch.Tensor | None,
    inverse: torch.Tensor,
    peak: torch.Tensor,
    log_total: torch.Tensor,
    pooled: torch.Tensor,
    grad: torch.Tensor,
) -> torch.Tensor:
    """Return ``grad * alpha * (1 + (a - s) * inverse)``, recomputing ``alpha``."""
    alpha = torch.exp(_plus(a * inverse, bias) - (peak + log_total))
    return (grad * alpha) * (1.0 + (a - pooled) * inverse)


def kl_forward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    bias: torch.Tensor | None,
    student_inverse: torch.Tensor,
    teacher_inverse: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Return ``KL(q || p)`` and the normalisers (peak, log-total) of ``p`` then ``q``.

    ``q = softmax(teacher logits)``, ``p = softmax(student logits)``. With the
    centred logits ``u = z - max z``,
    ``KL = sum_n e^{u_t} (u_t - u_s) / sum e^{u_t} - log sum e^{u_t} + log sum e^{u_s}``:
    two sweeps (the maxima, then three sums from two ``exp``), and the centring
    keeps the difference as accurate as the elementwise form. All ``(B, C, 1)``.
    """
    zs = student * student_inverse
    zt = teacher * teacher_inverse
    peak_s = _plus(zs, bias).amax(dim=2, keepdim=True)
    peak_t = _plus(zt, bias).amax(dim=2, keepdim=True)
    us = zs - peak_s
    ut = zt - peak_t
    weights_t = torch.exp(_plus(ut, bias))
    total_t = weights_t.sum(dim=2, keepdim=True)
    total_s = torch.exp(_plus(us, bias)).sum(dim=2, keepdim=True)
    # Masked positions have weight 0 and finite ``ut - us``, so they add 0.
    cross = (weights_t * (ut - us)).sum(dim=2, keepdim=True)
    log_total_s = torch.log(total_s)
    log_total_t = torch.log(total_t)
    kl = cross / total_t - log_total_t + log_total_s
    return kl, peak_s, log_total_s, peak_t, log_total_t


def kl_backward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    bias: torch.Tensor | None,
    student_inverse: torch.Tensor,
    teacher_inverse: torch.Tensor,
    peak_s: torch.Tensor,
    log_total_s: torch.Tensor,
    peak_t: torch.Tensor,
    log_total_t: torch.Tensor,
    grad: torch.Tensor,
) -> torch.Tensor:
    """Return ``grad * (p - q) * inverse_s``, the gradient for the student."""
    p = torch.exp(_plus(student * student_inverse, bias) - (peak_s + log_total_s))
    q = torch.exp(_plus(teacher * teacher_inverse, bias) - (peak_t + log_total_t))
    return (grad * student_inverse) * (p - q)


def masked_max_magnitude(a: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-row ``max |a|`` over valid positions, at least 1e-6 (``scale="max"``)."""
    return _plus(a.abs(), bias).amax(dim=2, keepdim=True).clamp_min(1e-6)
