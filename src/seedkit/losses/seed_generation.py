"""Activation shape controlling: the generation loss ``L_GEN`` of USAGE."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from seedkit.backbones.family import resolve_family
from seedkit.checks import (
    check_cams,
    check_choice,
    check_labels,
    check_mask,
    check_temperature,
    labels_flag,
    mask_flag,
    nonfinite_flag,
    verify,
)
from seedkit.losses._reduction import Reduction, check_reduction
from seedkit.losses.activation import ActivationScale, _safe_average, _safe_pool
from seedkit.losses.presets import TEMPERATURE_PRESETS, activation_temperature
from seedkit.reference import SCALES, upcast

__all__ = ["SeedGenerationLoss", "seed_generation_loss"]


def seed_generation_loss(
    cams: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | None,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    scale: ActivationScale = "std",
) -> torch.Tensor:
    """Multi-label soft-margin loss of temperature-pooled class scores.

    ``L_GEN = BCE-with-logits(temperature_pool(A, tau), y)``, averaged over
    classes per image (what ``F.multilabel_soft_margin_loss`` computes), so an
    image with no present class still learns from its negatives.

    Args:
        cams: class activations (CAM logits).
        labels: multi-hot image labels.
        temperature: pooling temperature ``> 0``; ``None`` means global average
            pooling (the plain CAM baseline, the ``tau -> inf`` limit).
        mask: optional validity mask; masked positions never contribute.
        reduction: ``"none"`` (one value per image), ``"mean"`` or ``"sum"``.
        scale: ``"std"`` (default, scale-free), ``"max"`` or ``"raw"``, see
            :func:`seedkit.spatial_activation_distribution`.

    Returns:
        The loss, float32.

    Shape:
        - cams: :math:`(B, C, H, W)`
        - labels: :math:`(B, C)`
        - output: scalar, or :math:`(B,)` with ``reduction="none"``

    Example:
        >>> import torch, seedkit
        >>> cams = torch.zeros(2, 3, 4, 4, requires_grad=True)
        >>> labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
        >>> loss = seedkit.losses.seed_generation_loss(cams, labels, temperature=2.0)
        >>> round(loss.item(), 4)  # log(2) at zero logits
        0.6931
    """
    reduction = check_reduction(reduction)
    cams = check_cams("cams", cams, values=False)
    labels = check_labels("labels", labels, cams, values=False)
    given = mask
    mask = check_mask("mask", mask, cams, values=False)
    if temperature is None:
        scores = _safe_average(cams, mask)
    else:
        check_choice("scale", scale, SCALES)
        scores = _safe_pool(cams, check_temperature("temperature", temperature), mask, scale)
    # The (B, C) scores are non-finite wherever the map holds NaN / inf: one flag for
    # all value checks, read without a pass over the map (see the Performance page).
    flags = (nonfinite_flag(scores), labels_flag(labels), mask_flag(given, mask))
    checks = (("cams", "finite", cams), ("labels", "labels", labels), ("mask", "mask", given))
    verify("seedkit.losses.seed_generation_loss", flags, checks)
    scores = upcast(scores)
    per_class = F.binary_cross_entropy_with_logits(
        scores, labels.to(scores.dtype), reduction="none"
    )
    per_image = per_class.mean(dim=1)
    if reduction == "none":
        return per_image
    return per_image.mean() if reduction == "mean" else per_image.sum()


class SeedGenerationLoss(nn.Module):
    """Module form of :func:`seed_generation_loss`.

    Args:
        temperature: pooling temperature ``> 0``, or ``None`` for global average
            pooling (the CAM baseline).
        reduction: ``"none"``, ``"mean"`` (default) or ``"sum"``.
        scale: ``"std"`` (default, scale-free), ``"max"`` or ``"raw"``, see
            :func:`seedkit.spatial_activation_distribution`.

    Example:
        >>> import torch, seedkit
        >>> criterion = seedkit.SeedGenerationLoss.for_backbone("vit")
        >>> criterion.temperature
        1.0
        >>> cams = torch.randn(2, 20, 14, 14, requires_grad=True)
        >>> labels = torch.zeros(2, 20); labels[:, 3] = 1
        >>> criterion(cams, labels).backward()
    """

    def __init__(
        self,
        temperature: float | None = 1.0,
        reduction: Reduction = "mean",
        scale: ActivationScale = "std",
    ) -> None:
        super().__init__()
        self.temperature = (
            None if temperature is None else check_temperature("temperature", temperature)
        )
        self.reduction = check_reduction(reduction)
        self.scale = check_choice("scale", scale, SCALES)

    @classmethod
    def for_backbone(cls, model_or_family: object, **kwargs: object) -> SeedGenerationLoss:
        """Build the loss with the preset temperature of a backbone family.

        Args:
            model_or_family: ``"cnn"``, ``"vit"``, a :class:`seedkit.backbones.SeedModel`
                or a timm model (its family is read from its structure).
            **kwargs: other constructor arguments (``reduction``, ``scale``), or
                ``temperature`` to override the preset.

        Returns:
            A configured :class:`SeedGenerationLoss`.
        """
        family = resolve_family(model_or_family)
        kwargs.setdefault("temperature", TEMPERATURE_PRESETS[family])
        return cls(**kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_activation(cls, state: str, **kwargs: object) -> SeedGenerationLoss:
        """Build the loss with the preset temperature of an activation state.

        Measure the state on your CAM baseline: the FP and FN rates of its seeds
        at the best threshold (``seedkit eval-seeds``), then
        :func:`seedkit.losses.activation_state`. These presets follow the
        principle's direction and are not validated by seedkit's benchmark; the
        family preset (:meth:`for_backbone`) is.

        Args:
            state: ``"over"`` (sharpen, tau 1), ``"balanced"`` (tau 2) or
                ``"under"`` (spread, tau 8; near GAP); see :mod:`seedkit.losses.presets`.
            **kwargs: other constructor arguments, or ``temperature`` to override.

        Returns:
            A configured :class:`SeedGenerationLoss`.

        Example:
            >>> from seedkit import SeedGenerationLoss
            >>> from seedkit.losses import activation_state
            >>> SeedGenerationLoss.for_activation(activation_state(57.8, 7.7)).temperature
            1.0
        """
        kwargs.setdefault("temperature", activation_temperature(state))
        return cls(**kwargs)  # type: ignore[arg-type]

    def forward(
        self, cams: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the loss; see :func:`seed_generation_loss`."""
        return seed_generation_loss(
            cams, labels, self.temperature, mask, self.reduction, self.scale
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}, scale={self.scale!r}"
