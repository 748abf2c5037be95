"""Activation shape regularisation: the consistency loss ``L_REG`` of USAGE."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from seedkit.checks import (
    check_cams,
    check_choice,
    check_labels,
    check_mask,
    labels_flag,
    mask_flag,
    nonfinite_flag,
    scan_finite,
    scan_labels,
    scan_mask,
    verify,
)
from seedkit.errors import InvalidValueError, ShapeError
from seedkit.losses._reduction import Reduction, check_reduction
from seedkit.losses.distances import (
    JSDivergence,
    KLDivergence,
    MaxNormL1,
    _propagates_nonfinite,
)
from seedkit.reference import SCALES, upcast

__all__ = ["ConsistencyLoss", "Distance", "consistency_loss", "make_distance"]

Distance = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
_DISTANCES: tuple[str, ...] = ("kl", "js", "l1")


def make_distance(
    distance: str | Distance,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
    scale: str = "std",
    normalize: bool = False,
) -> Distance:
    """Return a distance callable from its name, or the callable itself.

    Args:
        distance: ``"kl"`` (default of the losses), ``"js"``, ``"l1"`` (SEAM-style,
            temperature-free) or a callable ``(student, teacher, valid) -> (B, C)``.
        temperature: student temperature of ``"kl"`` / ``"js"``.
        teacher_temperature: teacher temperature (``None``: the student's).
        scale: ``"std"`` (default), ``"max"`` or ``"raw"`` for ``"kl"`` / ``"js"``
            (see :func:`seedkit.spatial_activation_distribution`).
        normalize: divide ``"kl"`` / ``"js"`` by ``log N``.

    Returns:
        The distance callable.
    """
    if callable(distance):
        return distance
    name = check_choice("distance", distance, _DISTANCES)
    check_choice("scale", scale, SCALES)
    if name == "l1":
        return MaxNormL1()
    kind = KLDivergence if name == "kl" else JSDivergence
    return kind(temperature, teacher_temperature, scale, normalize)


def _diagnose(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None
) -> None:
    scan_finite("student_cams", student)
    scan_finite("teacher_cams", teacher)
    scan_labels("labels", labels)
    scan_mask("mask", mask)


def consistency_loss(
    student_cams: torch.Tensor,
    teacher_cams: torch.Tensor,
    labels: torch.Tensor,
    distance: str | Distance = "kl",
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    scale: str = "std",
    normalize: bool = False,
) -> torch.Tensor:
    """Distance between student and (detached) teacher class maps, present classes only.

    With the default ``distance="kl"`` this is
    ``mean over present (b, c) of KL(alpha~_c || alpha_c)``, where ``alpha`` is the
    student's spatial distribution at ``temperature`` and ``alpha~`` the teacher's
    at ``teacher_temperature``. The teacher never receives a gradient.

    Args:
        student_cams: student class activations (strong view).
        teacher_cams: teacher class activations (weak view); detached here.
        labels: multi-hot labels; only present classes count.
        distance: ``"kl"``, ``"js"``, ``"l1"`` or a callable, see :func:`make_distance`.
        temperature: student temperature.
        teacher_temperature: teacher temperature (``None``: same as the student).
        mask: optional validity mask shared by both maps.
        reduction: ``"none"`` gives ``(B, C)`` with zeros for absent classes;
            ``"mean"`` divides by the number of present classes; ``"sum"``.
        scale: ``"std"`` (default, scale-free), ``"max"`` or ``"raw"``.
        normalize: divide the KL / JS by ``log N``.

    Returns:
        The loss, float32. A batch without any present class gives a zero that is
        still connected to the student's graph.

    Shape:
        - student_cams, teacher_cams: :math:`(B, C, H, W)`
        - labels: :math:`(B, C)`
        - output: scalar, or :math:`(B, C)` with ``reduction="none"``

    Example:
        >>> import torch, seedkit
        >>> student = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        >>> seedkit.losses.consistency_loss(student, student.detach(), labels).item()
        0.0
    """
    reduction = check_reduction(reduction)
    student_cams = check_cams("student_cams", student_cams, values=False)
    teacher_cams = check_cams("teacher_cams", teacher_cams, values=False)
    if teacher_cams.shape != student_cams.shape:
        raise ShapeError(
            "teacher_cams",
            f"{tuple(student_cams.shape)} (student_cams' shape)",
            tuple(teacher_cams.shape),
        )
    labels = check_labels("labels", labels, student_cams, values=False)
    given = mask
    mask = check_mask("mask", mask, student_cams, values=False)
    measure = make_distance(distance, temperature, teacher_temperature, scale, normalize)
    valid = None if mask is None else mask.flatten(2)
    per_class = measure(
        upcast(student_cams).flatten(2), upcast(teacher_cams.detach()).flatten(2), valid
    )
    if not isinstance(per_class, torch.Tensor):
        raise InvalidValueError(
            "distance", "a callable returning a (B, C) tensor", type(per_class).__name__
        )
    if per_class.shape != labels.shape:
        raise ShapeError(
            "distance",
            f"(B, C) = {tuple(labels.shape)} from the distance callable",
            tuple(per_class.shape),
        )
    if _propagates_nonfinite(measure, student_cams):
        # The fused KL's (B, C) result is non-finite wherever either map holds NaN / inf.
        flags = [nonfinite_flag(per_class)]
    else:  # other distances may hide one (relu(-inf) is 0): one pass over each map
        flags = [nonfinite_flag(student_cams), nonfinite_flag(teacher_cams)]
    flags += [labels_flag(labels), mask_flag(given, mask)]
    verify(
        "seedkit.losses.consistency_loss",
        flags,
        _diagnose,
        student_cams,
        teacher_cams,
        labels,
        given,
    )
    present = labels.to(per_class.dtype)
    # where() keeps NaN-free zeros for absent classes whatever their distance is.
    per_class = torch.where(present > 0, per_class, torch.zeros_like(per_class))
    if reduction == "none":
        return per_class
    total = per_class.sum()
    if reduction == "sum":
        return total
    return total / present.sum().clamp_min(1.0)


class ConsistencyLoss(nn.Module):
    """Module form of :func:`consistency_loss`.

    Every argument is stored as the attribute of the same name and read by
    :meth:`forward` at each call, so changing one between steps takes effect.

    Args:
        distance: ``"kl"`` (default), ``"js"``, ``"l1"`` or a callable
            ``(student, teacher, valid) -> (B, C)``.
        temperature: student temperature.
        teacher_temperature: teacher temperature (``None``: follows the student's).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        scale: ``"std"`` (default, scale-free), ``"max"`` or ``"raw"``.
        normalize: divide the KL / JS by ``log N``.

    Example:
        >>> import torch, seedkit
        >>> criterion = seedkit.ConsistencyLoss(temperature=2.0)
        >>> student = torch.randn(1, 4, 6, 6, requires_grad=True)
        >>> teacher = torch.randn(1, 4, 6, 6)
        >>> labels = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
        >>> loss = criterion(student, teacher, labels)
        >>> loss.backward(); bool(loss >= 0)
        True
    """

    def __init__(
        self,
        distance: str | Distance = "kl",
        temperature: float = 1.0,
        teacher_temperature: float | None = None,
        reduction: Reduction = "mean",
        scale: str = "std",
        normalize: bool = False,
    ) -> None:
        super().__init__()
        # Built once here so bad names and temperatures fail at construction.
        make_distance(distance, temperature, teacher_temperature, scale, normalize)
        self.distance = distance
        self.temperature = float(temperature)
        self.teacher_temperature = (
            None if teacher_temperature is None else float(teacher_temperature)
        )
        self.reduction = check_reduction(reduction)
        self.scale = scale
        self.normalize = bool(normalize)

    def forward(
        self,
        student_cams: torch.Tensor,
        teacher_cams: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss; see :func:`consistency_loss`."""
        return consistency_loss(
            student_cams,
            teacher_cams,
            labels,
            distance=self.distance,
            temperature=self.temperature,
            teacher_temperature=self.teacher_temperature,
            mask=mask,
            reduction=self.reduction,
            scale=self.scale,
            normalize=self.normalize,
        )

    def extra_repr(self) -> str:
        distance = self.distance if isinstance(self.distance, str) else type(self.distance).__name__
        return (
            f"distance={distance!r}, temperature={self.temperature}, "
            f"teacher_temperature={self.teacher_temperature}, reduction={self.reduction!r}, "
            f"scale={self.scale!r}, normalize={self.normalize}"
        )
