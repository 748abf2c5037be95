"""The combined USAGE objective ``L = L_GEN + lambda(t) * L_REG``."""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn as nn

from seedkit.backbones.family import resolve_family
from seedkit.checks import check_number, compiling, is_number
from seedkit.errors import InvalidValueError
from seedkit.losses.consistency import ConsistencyLoss, Distance
from seedkit.losses.presets import (
    CONSISTENCY_PRESETS,
    CONSISTENCY_WEIGHT,
    TEMPERATURE_PRESETS,
    activation_temperature,
)
from seedkit.losses.seed_generation import SeedGenerationLoss

__all__ = ["USAGELoss", "USAGELossOutput", "consistency_ramp"]


class USAGELossOutput(NamedTuple):
    """What :class:`USAGELoss` returns: the total and its parts, for logging.

    ``consistency`` is the unweighted term; ``weight`` the ``lambda`` it was
    multiplied by at this call (0 while the term is off or still ramping in).
    """

    loss: torch.Tensor
    generation: torch.Tensor
    consistency: torch.Tensor
    weight: float = 0.0


def _check_fraction(name: str, value: object) -> float:
    return check_number(name, value, 0, 1)


def consistency_ramp(progress: float, start: float = 0.0, ramp: float = 0.0) -> float:
    """Factor in ``[0, 1]`` of the consistency weight at ``progress`` (fraction of the run).

    0 before ``start``; then the sigmoid-shaped ramp of mean-teacher training,
    ``exp(-5 (1 - r)^2)`` with ``r`` going from 0 to 1 over the next ``ramp``
    fraction of the run; 1 afterwards. ``ramp = 0`` switches the term on at
    ``start``. The student learns from its labels alone until the EMA teacher has
    something to teach (see the Method page of the docs).

    Args:
        progress: fraction of the run done, ``step / total_steps``.
        start: fraction of the run before which the term is off.
        ramp: fraction of the run over which it ramps in.

    Returns:
        The factor.

    Example:
        >>> from seedkit.losses import consistency_ramp
        >>> [round(consistency_ramp(p, start=0.2, ramp=0.2), 3) for p in (0.1, 0.2, 0.3, 0.4, 0.9)]
        [0.0, 0.007, 0.287, 1.0, 1.0]
    """
    if not is_number(progress) or progress != progress:
        raise InvalidValueError("progress", "a number (fraction of the run)", progress)
    start = _check_fraction("start", start)
    ramp = _check_fraction("ramp", ramp)
    if progress < start:
        return 0.0
    if ramp == 0.0 or progress >= start + ramp:
        return 1.0
    remaining = 1.0 - (progress - start) / ramp
    return math.exp(-5.0 * remaining * remaining)


class USAGELoss(nn.Module):
    """Generation loss plus a weighted, ramped consistency loss, parts returned for logging.

    Every attribute below is read by :meth:`forward` at each call, so changing
    one between steps takes effect.

    Args:
        generation: the generation loss (default: ``SeedGenerationLoss(temperature=1.0)``).
        consistency: the consistency loss (default: ``ConsistencyLoss()``).
        consistency_weight: ``lambda`` once ramped in (default: the presets' weight,
            :data:`seedkit.losses.CONSISTENCY_WEIGHT`).
        consistency_start: fraction of the run before which the term is off.
        consistency_ramp: fraction of the run over which it then ramps in
            (see :func:`consistency_ramp`). Both need ``progress`` in
            :meth:`forward`; without it the full weight applies.

    Example:
        >>> import torch, seedkit
        >>> criterion = seedkit.USAGELoss.for_backbone("vit")
        >>> student = torch.randn(2, 5, 7, 9, requires_grad=True)
        >>> teacher = torch.randn(2, 5, 7, 9)
        >>> labels = torch.zeros(2, 5); labels[0, 1] = labels[1, 4] = 1
        >>> out = criterion(student, teacher, labels, progress=0.5)
        >>> out.loss.backward()
        >>> sorted(out._fields)
        ['consistency', 'generation', 'loss', 'weight']
    """

    def __init__(
        self,
        generation: SeedGenerationLoss | None = None,
        consistency: ConsistencyLoss | None = None,
        consistency_weight: float = CONSISTENCY_WEIGHT,
        consistency_start: float = 0.0,
        consistency_ramp: float = 0.0,
    ) -> None:
        super().__init__()
        self.generation = generation if generation is not None else SeedGenerationLoss()
        self.consistency = consistency if consistency is not None else ConsistencyLoss()
        self.consistency_weight = consistency_weight
        self.consistency_start = consistency_start
        self.consistency_ramp = consistency_ramp

    @property
    def consistency_weight(self) -> float:
        """The weight ``lambda`` of the consistency term once ramped in (``>= 0``)."""
        return self._consistency_weight

    @consistency_weight.setter
    def consistency_weight(self, value: float) -> None:
        self._consistency_weight = check_number("consistency_weight", value, 0)

    @property
    def consistency_start(self) -> float:
        """Fraction of the run before which the consistency term is off."""
        return self._consistency_start

    @consistency_start.setter
    def consistency_start(self, value: float) -> None:
        self._consistency_start = _check_fraction("consistency_start", value)

    @property
    def consistency_ramp(self) -> float:
        """Fraction of the run over which the consistency term ramps in after its start."""
        return self._consistency_ramp

    @consistency_ramp.setter
    def consistency_ramp(self, value: float) -> None:
        self._consistency_ramp = _check_fraction("consistency_ramp", value)

    def weight_at(self, progress: float | None) -> float:
        """``lambda`` at ``progress`` (fraction of the run); the full weight for ``None``."""
        if progress is None or self.consistency_weight == 0:
            return self.consistency_weight
        factor = consistency_ramp(progress, self.consistency_start, self.consistency_ramp)
        return self.consistency_weight * factor

    @classmethod
    def for_backbone(
        cls,
        model_or_family: object,
        *,
        generation_temperature: float | None = None,
        consistency_temperature: float | None = None,
        teacher_temperature: float | None = None,
        consistency_weight: float | None = None,
        consistency_start: float | None = None,
        consistency_ramp: float | None = None,
        distance: str | Distance = "kl",
        scale: str = "std",
        consistency_scale: str | None = None,
        normalize: bool | None = None,
        **unknown: object,
    ) -> USAGELoss:
        """Build the objective with a family's presets.

        Each temperature follows the one before it unless set: the consistency
        student's follows the generation temperature, the teacher's follows the
        consistency student's.

        Args:
            model_or_family: ``"cnn"``, ``"vit"``, a ``SeedModel`` or a timm model.
            generation_temperature: ``tau`` of the generation term (default: the
                family's preset, :data:`seedkit.losses.TEMPERATURE_PRESETS`).
            consistency_temperature: the student's temperature in the consistency
                term (default: ``generation_temperature``).
            teacher_temperature: the teacher's (default: ``consistency_temperature``).
            consistency_weight: ``lambda`` (default: the family's preset).
            consistency_start: fraction of the run with the term off (default: preset).
            consistency_ramp: fraction of the run it then ramps in over (default: preset).
            distance: ``"kl"``, ``"js"``, ``"l1"`` or a callable, see
                :class:`~seedkit.ConsistencyLoss`. With ``"l1"`` or a distance
                object the consistency temperatures, scale and normalisation are
                the distance's own: passing them here is refused.
            scale: ``"std"`` (default, scale-free), ``"max"`` or ``"raw"`` for the
                generation term (and the
                consistency term unless ``consistency_scale`` is set).
            consistency_scale: the consistency term's own scale.
            normalize: divide the KL / JS by ``log N`` (``None``: no).
            **unknown: rejected with an error that names the argument.

        Returns:
            A configured :class:`USAGELoss`.

        Raises:
            InvalidValueError: an unknown keyword (``temperature`` is one: the
                objective has three, name the one you mean), or a bad value.

        Example:
            >>> from seedkit import USAGELoss
            >>> criterion = USAGELoss.for_backbone("cnn", generation_temperature=5.0)
            >>> c = criterion.consistency
            >>> criterion.generation.temperature, c.temperature, c.teacher_temperature
            (5.0, 5.0, None)

            (A ``teacher_temperature`` of ``None`` follows the student's.)
        """
        if unknown:
            name = sorted(unknown)[0]
            hint = (
                "generation_temperature=, consistency_temperature= or teacher_temperature="
                if name == "temperature"
                else "one of the documented keywords of USAGELoss.for_backbone"
            )
            raise InvalidValueError(name, hint, unknown[name])
        family = resolve_family(model_or_family)
        preset = CONSISTENCY_PRESETS[family]
        if generation_temperature is None:
            generation_temperature = TEMPERATURE_PRESETS[family]
        generation = SeedGenerationLoss(temperature=generation_temperature, scale=scale)  # type: ignore[arg-type]
        if distance in ("kl", "js"):
            if consistency_temperature is None:
                consistency_temperature = preset["temperature"] or generation_temperature
            consistency = ConsistencyLoss(
                distance,
                temperature=consistency_temperature,
                teacher_temperature=teacher_temperature,
                scale=consistency_scale or scale,
                normalize=normalize,
            )
        else:  # "l1" or a distance object: its settings are its own
            given = {
                "consistency_temperature": consistency_temperature,
                "teacher_temperature": teacher_temperature,
                "consistency_scale": consistency_scale,
                "normalize": normalize or None,
            }
            for name, value in given.items():
                if value is not None:
                    raise InvalidValueError(
                        name, "None with distance='l1' or a distance object (its own)", value
                    )
            consistency = ConsistencyLoss(distance)
        chosen = {
            "consistency_weight": (consistency_weight, preset["weight"]),
            "consistency_start": (consistency_start, preset["start"]),
            "consistency_ramp": (consistency_ramp, preset["ramp"]),
        }
        return cls(
            generation,
            consistency,
            **{
                name: default if value is None else value
                for name, (value, default) in chosen.items()
            },
        )

    @classmethod
    def for_activation(
        cls, state: str, model_or_family: object = "cnn", **kwargs: object
    ) -> USAGELoss:
        """Build the objective for the measured activation state of the CAM baseline.

        Like :meth:`for_backbone`, with the generation temperature (and so, unless
        set, both consistency temperatures) at the state's preset (see
        :meth:`SeedGenerationLoss.for_activation`).

        Args:
            state: ``"over"``, ``"balanced"`` or ``"under"``.
            model_or_family: supplies the consistency presets (weight, ramp).
            **kwargs: keywords of :meth:`for_backbone`.

        Returns:
            A configured :class:`USAGELoss`.

        Example:
            >>> from seedkit import USAGELoss
            >>> criterion = USAGELoss.for_activation("over")
            >>> criterion.generation.temperature, criterion.consistency.temperature
            (1.0, 1.0)
        """
        kwargs.setdefault("generation_temperature", activation_temperature(state))
        return cls.for_backbone(model_or_family, **kwargs)  # type: ignore[arg-type]

    def forward(
        self,
        student_cams: torch.Tensor,
        teacher_cams: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        progress: float | None = None,
    ) -> USAGELossOutput:
        """Compute ``L_GEN(student) + lambda(progress) * L_REG(student, teacher)``.

        The arguments come in the order of :meth:`ConsistencyLoss.forward
        <seedkit.ConsistencyLoss.forward>`: student, teacher, labels, mask.
        (The order of seedkit 0.1.0.dev, ``(student_cams, labels, teacher_cams)``,
        is still understood, with a ``DeprecationWarning``: labels are 2-D, maps 4-D.)

        Args:
            student_cams: student class activations, :math:`(B, C, H, W)`.
            teacher_cams: teacher class activations of the same shape, or ``None``
                to skip the consistency term (the plain generation loss).
            labels: multi-hot labels, :math:`(B, C)`.
            mask: optional validity mask.
            progress: fraction of the run done (``step / total_steps``), for the
                ramp of the consistency weight; ``None``: the full weight.

        Returns:
            ``USAGELossOutput(loss, generation, consistency, weight)``.
        """
        if _old_order(teacher_cams, labels):
            if not compiling():
                warnings.warn(
                    "USAGELoss.forward(student_cams, labels, teacher_cams) is deprecated: "
                    "pass (student_cams, teacher_cams, labels), the order of "
                    "ConsistencyLoss.forward",
                    DeprecationWarning,
                    stacklevel=4,  # forward <- Module._call_impl <- Module.__call__ <- caller
                )
            teacher_cams, labels = labels, teacher_cams  # type: ignore[assignment]
        if labels is None:
            raise InvalidValueError("labels", "a (B, C) multi-hot tensor", None)
        generation = self.generation(student_cams, labels, mask)
        weight = self.weight_at(progress)
        if teacher_cams is None or weight == 0:
            consistency = generation.new_zeros(())
            return USAGELossOutput(generation, generation, consistency, 0.0)
        consistency = self.consistency(student_cams, teacher_cams, labels, mask)
        total = generation + weight * consistency
        return USAGELossOutput(total, generation, consistency, weight)

    def extra_repr(self) -> str:
        return (
            f"consistency_weight={self.consistency_weight}, "
            f"consistency_start={self.consistency_start}, consistency_ramp={self.consistency_ramp}"
        )


def _old_order(teacher_cams: object, labels: object) -> bool:
    """Whether ``forward`` got ``(student, labels, teacher)``: 2-D labels where maps go."""
    return (
        isinstance(teacher_cams, torch.Tensor)
        and teacher_cams.dim() == 2
        and (labels is None or (isinstance(labels, torch.Tensor) and labels.dim() == 4))
    )
