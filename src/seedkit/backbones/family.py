"""Backbone families: tell a CNN from a ViT by the structure of a module, never by its name."""

from __future__ import annotations

from typing import Literal

import torch.nn as nn

from seedkit.errors import BackboneError, InvalidValueError

__all__ = [
    "FAMILIES",
    "Family",
    "detect_family",
    "is_transformer_block",
    "resolve_family",
    "unwrap_model",
]

Family = Literal["cnn", "vit"]
FAMILIES: tuple[str, ...] = ("cnn", "vit")


def unwrap_model(module: nn.Module) -> nn.Module:
    """Return the user's module inside DDP / DataParallel / torch.compile wrappers.

    Args:
        module: a module, possibly wrapped by ``DistributedDataParallel``,
            ``DataParallel`` or ``torch.compile``.

    Returns:
        The innermost wrapped module (``module`` itself when it is not wrapped).
    """
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):  # torch.compile
            module = module._orig_mod  # type: ignore[assignment]
        else:
            break
    return module


def is_transformer_block(module: nn.Module) -> bool:
    """Return whether ``module`` looks like a transformer block (``attn`` and ``mlp`` children)."""
    return isinstance(getattr(module, "attn", None), nn.Module) and isinstance(
        getattr(module, "mlp", None), nn.Module
    )


def detect_family(module: nn.Module) -> Family:
    """Return ``"vit"`` or ``"cnn"`` from the structure of a (timm) model.

    A ViT embeds patches into tokens (a ``patch_embed`` submodule) and runs
    transformer blocks (submodules with ``attn`` and ``mlp`` children). A CNN is
    any other model built from 2-D convolutions. Wrappers (DDP, DataParallel,
    ``torch.compile``) are looked through, and a module with a string ``family``
    attribute (a :class:`~seedkit.backbones.SeedModel`) answers for itself.

    Args:
        module: the model.

    Returns:
        ``"cnn"`` or ``"vit"``.

    Raises:
        BackboneError: the module is neither (no convolution, no transformer block).

    Example:
        >>> import torch.nn as nn
        >>> detect_family(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
        'cnn'
    """
    if not isinstance(module, nn.Module):
        raise BackboneError(f"model: expected an nn.Module, got {type(module).__name__}")
    module = unwrap_model(module)
    family = getattr(module, "family", None)
    if family in ("cnn", "vit"):
        return family  # type: ignore[return-value]
    has_patch_embed = False
    has_blocks = False
    has_conv = False
    for name, sub in module.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "patch_embed":
            has_patch_embed = True
        if is_transformer_block(sub):
            has_blocks = True
        if isinstance(sub, nn.Conv2d):
            has_conv = True
    if has_patch_embed and has_blocks:
        return "vit"
    if has_conv:
        return "cnn"
    raise BackboneError(
        f"model: expected a CNN (2-D convolutions) or a ViT (patch_embed and transformer "
        f"blocks with attn and mlp), got {type(module).__name__} with neither"
    )


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
        return detect_family(model_or_family)
    raise InvalidValueError(
        "model_or_family",
        "'cnn', 'vit', a SeedModel or an nn.Module",
        type(model_or_family).__name__,
    )
