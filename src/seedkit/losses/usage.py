"""The combined USAGE objective ``L = L_GEN + lambda * L_REG``."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from seedkit._checks import check_temperature
from seedkit._family import resolve_family
from seedkit.errors import InvalidValueError
from seedkit.losses.consistency import ConsistencyLoss
from seedkit.losses.presets import CONSISTENCY_PRESETS, activation_temperature
from seedkit.losses.seed_generation import SeedGenerationLoss

__all__ = ["USAGELoss", "USAGELossOutput"]


class USAGELossOutput(NamedTuple):
    """What :class:`USAGELoss` returns: the total and its parts, for logging."""

    loss: torch.Tensor
    generation: torch.Tensor
    consistency: torch.Tensor


class USAGELoss(nn.Module):
    """Generation loss plus weighted consistency loss, with parts returned for logging.

    Args:
        generation: the generation loss (default: ``SeedGenerationLoss(temperature=1.0)``).
        consistency: the consistency loss (default: ``ConsistencyLoss()``).
        consistency_weight: ``lambda``; may be changed between steps (e.g. a warm-up
            that ramps it from 0).

    Example:
        >>> import torch, seedkit
        >>> criterion = seedkit.USAGELoss.for_backbone("vit")
        >>> student = torch.randn(2, 5, 7, 9, requires_grad=True)
        >>> teacher = torch.randn(2, 5, 7, 9)
        >>> labels = torch.zeros(2, 5); labels[0, 1] = labels[1, 4] = 1
        >>> out = criterion(student, labels, teacher)
        >>> out.loss.backward()
        >>> sorted(out._fields)
        ['consistency', 'generation', 'loss']
    """

    def __init__(
        self,
        generation: SeedGenerationLoss | None = None,
        consistency: ConsistencyLoss | None = None,
        consistency_weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.generation = generation if generation is not None else SeedGenerationLoss()
        self.consistency = consistency if consistency is not None else ConsistencyLoss()
        self.consistency_weight = consistency_weight

    @property
    def consistency_weight(self) -> float:
        """The weight ``lambda`` of the consistency term (``>= 0``)."""
        return self._consistency_weight

    @consistency_weight.setter
    def consistency_weight(self, value: float) -> None:
        if value != 0:
            check_temperature("consistency_weight", value)  # finite and > 0
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValueError("consistency_weight", "a finite number >= 0", value)
        self._consistency_weight = float(value)

    @classmethod
    def for_backbone(cls, model_or_family: object, **kwargs: object) -> USAGELoss:
        """Build the objective with a family's presets (temperatures and weight).

        Args:
            model_or_family: ``"cnn"``, ``"vit"``, a ``SeedModel`` or a timm model.
            **kwargs: overrides: ``consistency_weight``, ``distance``, ``scale``,
                ``normalize``, ``temperature``, ``teacher_temperature``.

        Returns:
            A configured :class:`USAGELoss`.
        """
        family = resolve_family(model_or_family)
        preset = dict(CONSISTENCY_PRESETS[family])
        weight = kwargs.pop("consistency_weight", preset.pop("weight"))
        generation_temperature = kwargs.pop("generation_temperature", None)
        scale = kwargs.get("scale", "raw")
        preset.update(kwargs)
        generation = SeedGenerationLoss.for_backbone(family, scale=scale)
        if generation_temperature is not None:
            generation = SeedGenerationLoss(temperature=generation_temperature, scale=scale)  # type: ignore[arg-type]
        return cls(generation, ConsistencyLoss(**preset), consistency_weight=weight)  # type: ignore[arg-type]

    @classmethod
    def for_activation(cls, state: str, **kwargs: object) -> USAGELoss:
        """Build the objective for an activation state of the CAM baseline.

        Like :meth:`for_backbone`, with the generation and both consistency
        temperatures at the state's preset (see
        :meth:`SeedGenerationLoss.for_activation`).

        Args:
            state: ``"over"``, ``"balanced"`` or ``"under"``.
            **kwargs: overrides as for :meth:`for_backbone`.

        Returns:
            A configured :class:`USAGELoss`.

        Example:
            >>> from seedkit import USAGELoss
            >>> criterion = USAGELoss.for_activation("over")
            >>> criterion.generation.temperature, criterion.consistency.teacher_temperature
            (0.3, 0.3)
        """
        tau = activation_temperature(state)
        for name in ("generation_temperature", "temperature", "teacher_temperature"):
            kwargs.setdefault(name, tau)
        # Every temperature is set, so the family only supplies the shared weight preset.
        return cls.for_backbone("cnn", **kwargs)

    def forward(
        self,
        student_cams: torch.Tensor,
        labels: torch.Tensor,
        teacher_cams: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> USAGELossOutput:
        """Compute ``L_GEN(student) + lambda * L_REG(student, teacher)``.

        Args:
            student_cams: student class activations, :math:`(B, C, H, W)`.
            labels: multi-hot labels, :math:`(B, C)`.
            teacher_cams: teacher class activations of the same shape, or ``None``
                to skip the consistency term (the plain generation loss).
            mask: optional validity mask.

        Returns:
            ``USAGELossOutput(loss, generation, consistency)``.
        """
        generation = self.generation(student_cams, labels, mask)
        if teacher_cams is None or self.consistency_weight == 0:
            consistency = generation.new_zeros(())
            return USAGELossOutput(generation, generation, consistency)
        consistency = self.consistency(student_cams, teacher_cams, labels, mask)
        total = generation + self.consistency_weight * consistency
        return USAGELossOutput(total, generation, consistency)

    def extra_repr(self) -> str:
        return f"consistency_weight={self.consistency_weight}"
