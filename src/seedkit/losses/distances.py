"""Distances between student and teacher class maps for the consistency loss.

A distance is any callable ``distance(student, teacher, valid) -> (B, C)``
taking float32 flattened class activations ``(B, C, N)`` (the teacher already
detached) and an optional ``(B, 1, N)`` boolean validity mask. Pass one to
:class:`seedkit.ConsistencyLoss` to replace the built-in ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seedkit._checks import check_temperature
from seedkit.kernels import fused_kl_consistency, resolve_backend
from seedkit.losses.activation import _scaled_logits

__all__ = ["JSDivergence", "KLDivergence", "MaxNormL1"]


def _log_distribution(
    flat: torch.Tensor, valid: torch.Tensor | None, temperature: float, normalize_scale: bool
) -> torch.Tensor:
    logits = _scaled_logits(flat, valid, temperature, "max" if normalize_scale else "raw")
    return torch.log_softmax(logits, dim=2)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``sum_n p (log p - log q)`` with ``0 log 0 = 0`` and masked positions skipped."""
    p = log_p.exp()
    keep = p > 0
    if valid is not None:
        keep = keep & valid
    # Mask the difference itself, not the product: -inf - -inf is NaN at masked positions,
    # and a NaN anywhere in a product poisons its gradient even where where() discards it.
    difference = torch.where(keep, log_p - log_q, torch.zeros_like(log_p))
    return (p * difference).sum(dim=2)


@dataclass(frozen=True)
class KLDivergence:
    """``KL(alpha_teacher || alpha_student)`` between spatial distributions (the default).

    Args:
        temperature: student softmax temperature.
        teacher_temperature: teacher softmax temperature (``None``: same as the student).
        scale: ``"raw"`` or ``"max"`` (scale-free: maps divided by their detached maximum).
        normalize: divide by ``log N`` (the largest KL a uniform target can have) so the
            term's size does not grow with the map resolution.
    """

    temperature: float = 1.0
    teacher_temperature: float | None = None
    scale: str = "raw"
    normalize: bool = False

    def __post_init__(self) -> None:
        check_temperature("temperature", self.temperature)
        if self.teacher_temperature is not None:
            check_temperature("teacher_temperature", self.teacher_temperature)

    def _logs(
        self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        teacher_temperature = self.teacher_temperature or self.temperature
        max_scale = self.scale == "max"
        log_student = _log_distribution(student, valid, self.temperature, max_scale)
        log_teacher = _log_distribution(teacher, valid, teacher_temperature, max_scale)
        return log_student, log_teacher

    def _normalizer(
        self, student: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor | float:
        if not self.normalize:
            return 1.0
        if valid is None:
            return max(math.log(student.shape[2]), 1.0)
        return valid.sum(dim=2).float().log().clamp_min(1.0)

    def __call__(
        self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        backend = resolve_backend(student)
        if backend == "reference":
            log_student, log_teacher = self._logs(student, teacher, valid)
            divergence = _kl(log_teacher, log_student, valid)
        else:
            # Fused kernels (seedkit.kernels): no (B, C, N) softmax kept for backward.
            divergence = fused_kl_consistency(
                student,
                teacher,
                valid,
                self.temperature,
                self.teacher_temperature or self.temperature,
                self.scale,
                backend=backend,
            )
        return divergence / self._normalizer(student, valid)


def _propagates_nonfinite(distance: object, like: torch.Tensor) -> bool:
    """Whether ``distance``'s ``(B, C)`` result is non-finite whenever an input value is.

    True for the KL on the fused and Triton kernels, which read every value (masked
    positions too) into their sums. The reference KL skips masked positions and
    teacher zeros, and the JS / L1 distances clip (``relu(-inf)`` is 0), so their
    inputs are scanned instead.
    """
    return type(distance) is KLDivergence and resolve_backend(like) != "reference"


@dataclass(frozen=True)
class JSDivergence(KLDivergence):
    """Symmetric Jensen-Shannon divergence between spatial distributions."""

    def __call__(
        self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        log_student, log_teacher = self._logs(student, teacher, valid)
        if valid is not None:
            # logaddexp(-inf, -inf) has a NaN gradient; masked positions are skipped by _kl anyway.
            log_student = log_student.masked_fill(~valid, 0.0)
            log_teacher = log_teacher.masked_fill(~valid, 0.0)
        log_mixture = torch.logaddexp(log_student, log_teacher) - math.log(2.0)
        divergence = 0.5 * (
            _kl(log_teacher, log_mixture, valid) + _kl(log_student, log_mixture, valid)
        )
        return divergence / self._normalizer(student, valid)


@dataclass(frozen=True)
class MaxNormL1:
    """SEAM-style mean absolute difference of max-normalised ReLU maps."""

    def __call__(
        self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        def normalise(flat: torch.Tensor) -> torch.Tensor:
            positive = F.relu(flat)
            if valid is not None:
                positive = positive.masked_fill(~valid, 0.0)
            return positive / (positive.amax(dim=2, keepdim=True) + 1e-5)

        difference = (normalise(student) - normalise(teacher)).abs()
        if valid is None:
            return difference.mean(dim=2)
        weights = valid.to(difference.dtype)
        return (difference * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)
