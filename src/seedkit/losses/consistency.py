"""Activation shape regularisation: the consistency loss ``L_REG`` of USAGE."""

from __future__ import annotations

import dataclasses
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
    verify,
)
from seedkit.errors import InvalidValueError, ShapeError
from seedkit.kernels import resolve_backend
from seedkit.losses._reduction import Reduction, check_reduction
from seedkit.losses.distances import (
    JSDivergence,
    KLDivergence,
    MaxNormL1,
    _propagates_nonfinite,
)
from seedkit.reference import upcast

__all__ = ["ConsistencyLoss", "Distance", "consistency_loss", "make_distance"]

Distance = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
_DISTANCES: tuple[str, ...] = ("kl", "js", "l1")
# The settings a KL / JS distance carries; a distance without them refuses them.
_SETTINGS: tuple[str, ...] = ("temperature", "teacher_temperature", "scale", "normalize")


def _has_settings(distance: object) -> bool:
    return isinstance(distance, KLDivergence)


def make_distance(
    distance: str | Distance,
    temperature: float | None = None,
    teacher_temperature: float | None = None,
    scale: str | None = None,
    normalize: bool | None = None,
) -> Distance:
    """Return a distance callable from its name, or the callable itself.

    A setting is used by the distance it is given with, or refused: ``"l1"`` has
    no temperature, scale or normalisation, and a distance object carries its
    own (``KLDivergence(temperature=0.5)``), so passing one of those next to it
    raises instead of being ignored.

    Args:
        distance: ``"kl"`` (default of the losses), ``"js"``, ``"l1"`` (SEAM-style,
            temperature-free) or a callable ``(student, teacher, valid) -> (B, C)``.
        temperature: student temperature of ``"kl"`` / ``"js"`` (``None``: 1.0).
        teacher_temperature: teacher temperature (``None``: the student's).
        scale: ``"std"`` (``None``: the default), ``"max"`` or ``"raw"`` for
            ``"kl"`` / ``"js"`` (see :func:`seedkit.spatial_activation_distribution`).
        normalize: divide ``"kl"`` / ``"js"`` by ``log N`` (``None``: no).

    Returns:
        The distance callable.

    Raises:
        InvalidValueError: an unknown name, a bad setting, or a setting passed
            with a distance that does not take it.

    Example:
        >>> from seedkit.losses import KLDivergence, make_distance
        >>> make_distance("kl", temperature=0.5)
        KLDivergence(temperature=0.5, teacher_temperature=None, scale='std', normalize=False)
        >>> make_distance(KLDivergence(2.0), temperature=0.5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        seedkit.errors.InvalidValueError: temperature: expected None with a distance object ...
    """
    given = {
        "temperature": temperature,
        "teacher_temperature": teacher_temperature,
        "scale": scale,
        "normalize": normalize,
    }
    if isinstance(distance, str):
        name = check_choice("distance", distance, _DISTANCES)
        if name == "l1":
            _refuse_settings(given, "None with distance='l1' (it has no temperature or scale)")
            return MaxNormL1()
        kind = KLDivergence if name == "kl" else JSDivergence
        return kind(
            1.0 if temperature is None else temperature,
            teacher_temperature,
            "std" if scale is None else scale,
            False if normalize is None else normalize,
        )
    if not callable(distance):
        raise InvalidValueError(
            "distance", "'kl', 'js', 'l1' or a callable (student, teacher, valid)", distance
        )
    _refuse_settings(
        given,
        "None with a distance object (it carries its own: "
        f"{type(distance).__name__}(temperature={getattr(distance, 'temperature', None)}, ...))",
    )
    return distance


def _refuse_settings(given: dict[str, object], expected: str) -> None:
    for name, value in given.items():
        # normalize=False says what such a distance does anyway: no division by log N.
        if value is not None and not (name == "normalize" and value is False):
            raise InvalidValueError(name, expected, value)


def _checks(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None
) -> tuple:
    return (
        ("student_cams", "finite", student),
        ("teacher_cams", "finite", teacher),
        ("labels", "labels", labels),
        ("mask", "mask", mask),
    )


def consistency_loss(
    student_cams: torch.Tensor,
    teacher_cams: torch.Tensor,
    labels: torch.Tensor,
    distance: str | Distance = "kl",
    temperature: float | None = None,
    teacher_temperature: float | None = None,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    scale: str | None = None,
    normalize: bool | None = None,
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
        temperature: student temperature (``None``: 1.0 for ``"kl"`` / ``"js"``;
            refused with ``"l1"`` or a distance object, which carry their own).
        teacher_temperature: teacher temperature (``None``: same as the student).
        mask: optional validity mask shared by both maps.
        reduction: ``"none"`` gives ``(B, C)`` with zeros for absent classes;
            ``"mean"`` divides by the number of present classes; ``"sum"``.
        scale: ``"std"`` (``None``: the default, scale-free), ``"max"`` or ``"raw"``.
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
    measure = make_distance(distance, temperature, teacher_temperature, scale, normalize)
    return _consistency(
        student_cams, teacher_cams, labels, measure, mask, check_reduction(reduction)
    )


def _consistency(
    student_cams: torch.Tensor,
    teacher_cams: torch.Tensor,
    labels: torch.Tensor,
    measure: Distance,
    mask: torch.Tensor | None,
    reduction: str,
) -> torch.Tensor:
    """:func:`consistency_loss` with a built distance and a checked reduction."""
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
    valid = None if mask is None else mask.flatten(2)
    student = upcast(student_cams).flatten(2)
    teacher = upcast(teacher_cams.detach()).flatten(2)
    backend = "reference"
    if isinstance(measure, (KLDivergence, MaxNormL1)):
        backend = resolve_backend(student_cams)
        per_class = measure.rows(student, teacher, valid, backend)
    else:
        per_class = measure(student, teacher, valid)
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
    if _propagates_nonfinite(measure, backend):
        # The fused KL's (B, C) result is non-finite wherever either map holds NaN / inf.
        flags = [nonfinite_flag(per_class)]
    else:  # other distances may hide one (relu(-inf) is 0): one pass over each map
        flags = [nonfinite_flag(student_cams), nonfinite_flag(teacher_cams)]
    flags += [labels_flag(labels), mask_flag(given, mask)]
    verify(
        "seedkit.losses.consistency_loss",
        flags,
        _checks(student_cams, teacher_cams, labels, given),
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

    The distance is built once, here; ``temperature``, ``teacher_temperature``,
    ``scale`` and ``normalize`` are read from it (``None`` / ``False`` for a
    distance that has none), so what the module reports is what its
    :meth:`forward` computes. Setting one of them (or ``distance``, or
    ``reduction``) between steps takes effect at the next call; setting a
    temperature on a distance without one raises.

    Args:
        distance: ``"kl"`` (default), ``"js"``, ``"l1"`` or a callable
            ``(student, teacher, valid) -> (B, C)`` such as
            :class:`~seedkit.losses.KLDivergence` ``(temperature=...)``.
        temperature: student temperature (``None``: 1.0 for ``"kl"`` /
            ``"js"``). Refused with ``"l1"`` or a distance object: it carries
            its own.
        teacher_temperature: teacher temperature (``None``: follows the student's).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        scale: ``"std"`` (``None``: the default, scale-free), ``"max"`` or ``"raw"``.
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
        >>> criterion.temperature, criterion.distance.temperature
        (2.0, 2.0)
    """

    def __init__(
        self,
        distance: str | Distance = "kl",
        temperature: float | None = None,
        teacher_temperature: float | None = None,
        reduction: Reduction = "mean",
        scale: str | None = None,
        normalize: bool | None = None,
    ) -> None:
        super().__init__()
        self._distance = make_distance(distance, temperature, teacher_temperature, scale, normalize)
        self.reduction = reduction

    @property
    def reduction(self) -> str:
        """``"none"``, ``"mean"`` or ``"sum"``."""
        return self._reduction

    @reduction.setter
    def reduction(self, value: Reduction) -> None:
        self._reduction = check_reduction(value)

    @property
    def distance(self) -> Distance:
        """The distance :meth:`forward` computes (a :class:`KLDivergence` for ``"kl"``...).

        Set a name to switch it, keeping the current temperatures, scale and
        normalisation where the new one takes them; or set a callable.
        """
        return self._distance

    @distance.setter
    def distance(self, value: str | Distance) -> None:
        if isinstance(value, str) and value != "l1" and _has_settings(self._distance):
            current = {name: getattr(self._distance, name) for name in _SETTINGS}
            self._distance = make_distance(value, **current)  # type: ignore[arg-type]
        else:
            self._distance = make_distance(value)

    def _setting(self, name: str) -> object:
        if _has_settings(self._distance):
            return getattr(self._distance, name)
        return False if name == "normalize" else None

    def _set(self, name: str, value: object) -> None:
        if not _has_settings(self._distance):
            raise InvalidValueError(
                name,
                f"to be set only with a 'kl' or 'js' distance ({type(self._distance).__name__} "
                f"has no {name})",
                value,
            )
        self._distance = dataclasses.replace(self._distance, **{name: value})  # type: ignore[type-var]

    @property
    def temperature(self) -> float | None:
        """The student temperature of the distance (``None`` for one without)."""
        return self._setting("temperature")  # type: ignore[return-value]

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._set("temperature", value)

    @property
    def teacher_temperature(self) -> float | None:
        """The teacher temperature of the distance (``None``: follows the student's)."""
        return self._setting("teacher_temperature")  # type: ignore[return-value]

    @teacher_temperature.setter
    def teacher_temperature(self, value: float | None) -> None:
        self._set("teacher_temperature", value)

    @property
    def scale(self) -> str | None:
        """The scale of the distance's temperatures (``None`` for one without)."""
        return self._setting("scale")  # type: ignore[return-value]

    @scale.setter
    def scale(self, value: str) -> None:
        self._set("scale", value)

    @property
    def normalize(self) -> bool:
        """Whether the KL / JS is divided by ``log N``."""
        return bool(self._setting("normalize"))

    @normalize.setter
    def normalize(self, value: bool) -> None:
        self._set("normalize", value)

    def forward(
        self,
        student_cams: torch.Tensor,
        teacher_cams: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss; see :func:`consistency_loss`."""
        return _consistency(
            student_cams, teacher_cams, labels, self._distance, mask, self.reduction
        )

    def extra_repr(self) -> str:
        return f"distance={self._distance!r}, reduction={self.reduction!r}"
