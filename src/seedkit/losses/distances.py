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

from seedkit.checks import check_bool, check_choice, check_temperature
from seedkit.kernels import kl_rows, resolve_backend
from seedkit.reference import SCALES, kl_divergence, log_distribution, max_normalize

__all__ = ["JSDivergence", "KLDivergence", "MaxNormL1"]


@dataclass(frozen=True)
class KLDivergence:
    """``KL(alpha_teacher || alpha_student)`` between spatial distributions (the default).

    Args:
        temperature: student softmax temperature.
        teacher_temperature: teacher softmax temperature (``None``: same as the student).
        scale: ``"std"`` (default, scale-free), ``"max"`` or ``"raw"``, see
            :func:`seedkit.reference.scale_divisor`.
        normalize: divide by ``log N`` (the largest KL a uniform target can have) so the
            term's size does not grow with the map resolution.
    """

    temperature: float = 1.0
    teacher_temperature: float | None = None
    scale: str = "std"
    normalize: bool = False

    def __post_init__(self) -> None:
        check_temperature("temperature", self.temperature)
        if self.teacher_temperature is not None:
            check_temperature("teacher_temperature", self.teacher_temperature)
        check_choice("scale", self.scale, SCALES)
        check_bool("normalize", self.normalize)

    def _logs(
        self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        teacher_temperature = self.teacher_temperature or self.temperature
        log_student = log_distribution(student, valid, self.temperature, self.scale)
        log_teacher = log_distribution(teacher, valid, teacher_temperature, self.scale)
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
        return self.rows(student, teacher, valid)

    def rows(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor | None,
        backend: str | None = None,
    ) -> torch.Tensor:
        """The ``(B, C)`` divergences through ``backend`` (``None``: resolved here).

        The reference backend is the plain composition; the others are the fused
        kernels of :mod:`seedkit.kernels` (no ``(B, C, N)`` softmax kept for
        backward beyond what each states).
        """
        divergence = kl_rows(
            student,
            teacher,
            valid,
            self.temperature,
            self.teacher_temperature or self.temperature,
            self.scale,
            resolve_backend(student) if backend is None else backend,
        )
        return divergence / self._normalizer(student, valid)


def _propagates_nonfinite(distance: object, backend: str) -> bool:
    """Whether ``distance``'s ``(B, C)`` result is non-finite whenever an input value is.

    True for the KL on the eager, fused and Triton kernels, which read every value
    (masked positions too) into their sums. The reference KL skips masked
    positions and teacher zeros, and the JS / L1 distances clip (``relu(-inf)``
    is 0), so their inputs are scanned instead.
    """
    return type(distance) is KLDivergence and backend != "reference"


@dataclass(frozen=True)
class JSDivergence(KLDivergence):
    """Symmetric Jensen-Shannon divergence between spatial distributions."""

    def rows(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor | None,
        backend: str | None = None,
    ) -> torch.Tensor:
        """The ``(B, C)`` divergences (plain composition on every backend)."""
        log_student, log_teacher = self._logs(student, teacher, valid)
        if valid is not None:
            # logaddexp(-inf, -inf) has a NaN gradient; kl_divergence skips masked positions.
            log_student = log_student.masked_fill(~valid, 0.0)
            log_teacher = log_teacher.masked_fill(~valid, 0.0)
        log_mixture = torch.logaddexp(log_student, log_teacher) - math.log(2.0)
        divergence = 0.5 * (
            kl_divergence(log_teacher, log_mixture, valid)
            + kl_divergence(log_student, log_mixture, valid)
        )
        return divergence / self._normalizer(student, valid)


@dataclass(frozen=True)
class MaxNormL1:
    """SEAM-style mean absolute difference of max-normalised ReLU maps."""

    def __call__(
        self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        return self.rows(student, teacher, valid)

    def rows(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor | None,
        backend: str | None = None,
    ) -> torch.Tensor:
        """The ``(B, C)`` distances (plain composition on every backend)."""
        difference = (max_normalize(student, valid) - max_normalize(teacher, valid)).abs()
        if valid is None:
            return difference.mean(dim=2)
        weights = valid.to(difference.dtype)
        return (difference * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)
