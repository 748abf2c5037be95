"""Find the adjustable layers of a timm CNN or ViT by structure.

An adjustable layer is a residual block: a module that adds a residual branch
to a skip connection. timm blocks apply stochastic depth to the branch right
before the add, through a ``drop_path`` attribute (ResNet, ConvNeXt,
EfficientNet / MobileNet inverted residuals, and most others) or two of them,
``drop_path1`` / ``drop_path2`` (the attention and MLP branches of a transformer
block). The output of that submodule *is* the residual branch, so a forward hook
on it can scale the branch's channels without touching the skip path.

Blocks that declare ``has_skip = False`` add nothing and are left out. Blocks
whose ``drop_path`` is ``None`` (timm's ResNet blocks without stochastic depth)
have no module to hook; their branch ends in the squeeze-excitation module
``se`` when there is one, else in the last normalisation child, which is hooked
instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from seedkit.backbones.family import unwrap_model

__all__ = ["AdjustableBlock", "find_adjustable_blocks"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class AdjustableBlock:
    """A residual block and the submodules whose outputs are its residual branches.

    Attributes:
        name: the block's qualified name inside the model.
        block: the block module.
        branch_ends: submodules whose output is a residual branch (one per branch).
    """

    name: str
    block: nn.Module
    branch_ends: tuple[nn.Module, ...]


def _branch_ends(block: nn.Module) -> tuple[nn.Module, ...]:
    if getattr(block, "has_skip", True) is False:
        return ()
    ends = tuple(
        getattr(block, attr)
        for attr in ("drop_path1", "drop_path2")
        if isinstance(getattr(block, attr, None), nn.Module)
    )
    if ends:
        return ends
    drop_path = getattr(block, "drop_path", False)
    if isinstance(drop_path, nn.Module):
        return (drop_path,)
    if drop_path is None:  # declared but disabled: find the last module of the branch
        se = getattr(block, "se", None)
        if isinstance(se, nn.Module) and not isinstance(se, nn.Identity):
            return (se,)
        norms = [child for child in block.children() if isinstance(child, _NORMS)]
        if norms:
            return (norms[-1],)
    return ()


def find_adjustable_blocks(model: nn.Module) -> list[AdjustableBlock]:
    """Return the residual blocks of ``model`` in definition order.

    Args:
        model: a timm model, a :class:`~seedkit.backbones.SeedModel`, or either
            wrapped in DDP.

    Returns:
        One :class:`AdjustableBlock` per residual block (possibly empty).

    Example:
        >>> from seedkit.backbones import create_seed_model
        >>> blocks = find_adjustable_blocks(create_seed_model("resnet18", num_classes=2))
        >>> len(blocks), blocks[0].name
        (8, 'encoder.layer1.0')
    """
    model = unwrap_model(model)
    blocks = []
    for name, module in model.named_modules():
        ends = _branch_ends(module)
        if ends:
            blocks.append(AdjustableBlock(name, module, ends))
    return blocks
