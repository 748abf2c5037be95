"""Resolve a backbone family ("cnn" or "vit") from a string, a SeedModel or a module."""

from __future__ import annotations

from typing import Literal

import torch.nn as nn

from seedkit.errors import InvalidValueError

Family = Literal["cnn", "vit"]
FAMILIES: tuple[str, ...] = ("cnn", "vit")

__all__ = ["FAMILIES", "Family", "resolve_family"]


def resolve_family(model_or_family: object) -> Family:
    """Return ``"cnn"`` or ``"vit"`` for a family name, a ``SeedModel`` or a timm module.

    Args:
        model_or_family: ``"cnn"``, ``"vit"``, any object with a ``family``
            attribute (a :class:`seedkit.backbones.SeedModel`), or an
            ``nn.Module`` whose structure tells the family (a timm model).

    Returns:
        The family name.

    Raises:
        InvalidValueError: the argument names no known family.
    """
    if isinstance(model_or_family, str):
        family = model_or_family.strip().lower()
        if family not in FAMILIES:
            raise InvalidValueError("model_or_family", "'cnn', 'vit' or a model", model_or_family)
        return family  # type: ignore[return-value]
    family = getattr(model_or_family, "family", None)
    if isinstance(family, str):
        return resolve_family(family)
    if isinstance(model_or_family, nn.Module):
        from seedkit.backbones import detect_family  # local: backbones imports timm

        return detect_family(model_or_family)
    raise InvalidValueError(
        "model_or_family",
        "'cnn', 'vit', a SeedModel or an nn.Module",
        type(model_or_family).__name__,
    )
