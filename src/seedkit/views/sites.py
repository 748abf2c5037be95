"""Find the adjustable layers of a CNN or ViT by structure, or take them from the user.

An adjustable layer is a residual block: a module that adds a residual branch
to a skip connection. A forward hook on the last module of the branch (its
*branch end*) can zero the branch's channels without touching the skip path.
Blocks are recognised by their structure, never by the model's name:

- timm blocks apply stochastic depth right before the add, through a
  ``drop_path`` attribute (ResNet, ConvNeXt, EfficientNet / MobileNet inverted
  residuals, older ViTs such as DeiT / MCTformer, which call it once per
  branch) or two of them, ``drop_path1`` / ``drop_path2`` (the attention and
  MLP branches of a transformer block); that module is the branch end. Blocks
  that declare ``has_skip = False`` add nothing and are left out. A
  ``drop_path`` of ``None`` (timm's ResNet blocks without stochastic depth)
  leaves the squeeze-excitation module ``se`` or the last normalisation child
  as the branch end;
- a transformer block without stochastic depth (``attn`` and ``mlp``
  children): both are branch ends;
- torchvision-style ``BasicBlock`` / ``Bottleneck`` (IRN's ResNet-50 too): a
  ``downsample`` attribute (a module or ``None``) next to convolution and
  normalisation children; the last normalisation child (``bn2`` / ``bn3``)
  ends the branch;
- Caffe-style names, as in psa / SEAM's ResNet-38 (``conv_branch1`` is the
  projection shortcut, ``*branch2*`` children the residual branch): the last
  ``*branch2*`` convolution ends the branch.

Anything else is named with ``sites=`` (see :func:`find_adjustable_blocks`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from seedkit.backbones.family import is_transformer_block, unwrap_model
from seedkit.errors import BackboneError, InvalidValueError

__all__ = ["AdjustableBlock", "Sites", "find_adjustable_blocks"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

#: Module names, or a predicate called with every submodule.
Sites = Iterable[str] | Callable[[nn.Module], bool]


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


def _torchvision_branch_end(block: nn.Module) -> tuple[nn.Module, ...]:
    downsample = getattr(block, "downsample", False)
    if downsample is not None and not isinstance(downsample, nn.Module):
        return ()
    children = [child for child in block.children() if child is not downsample]
    convs = [child for child in children if isinstance(child, nn.Conv2d)]
    norms = [child for child in children if isinstance(child, _NORMS)]
    if len(convs) >= 2 and norms:
        return (norms[-1],)
    return ()


def _caffe_branch_end(block: nn.Module) -> tuple[nn.Module, ...]:
    convs = [
        child
        for name, child in block.named_children()
        if "branch2" in name and isinstance(child, nn.Conv2d)
    ]
    return (convs[-1],) if len(convs) >= 2 else ()


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
    if is_transformer_block(block):
        return (block.attn, block.mlp)  # type: ignore[return-value]
    if drop_path is None:  # declared but disabled: find the last module of the branch
        se = getattr(block, "se", None)
        if isinstance(se, nn.Module) and not isinstance(se, nn.Identity):
            return (se,)
        norms = [child for child in block.children() if isinstance(child, _NORMS)]
        if norms:
            return (norms[-1],)
        return ()
    return _torchvision_branch_end(block) or _caffe_branch_end(block)


def _site_blocks(model: nn.Module, sites: Sites, model_name: str) -> list[AdjustableBlock]:
    modules = dict(model.named_modules())
    if callable(sites):
        chosen = [(name, module) for name, module in modules.items() if sites(module)]
        if not chosen:
            raise BackboneError(f"model {model_name}: the sites predicate matched no module")
    else:
        if isinstance(sites, (str, bytes)):
            raise InvalidValueError("sites", "a list of module names or a predicate", sites)
        names = list(sites)
        if not names:
            raise InvalidValueError("sites", "at least one module name", "an empty list")
        chosen = []
        for name in names:
            if not isinstance(name, str):
                raise InvalidValueError("sites", "module names (str)", repr(name))
            if name not in modules or name == "":
                close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise InvalidValueError("sites", f"names of submodules of {model_name}{hint}", name)
            chosen.append((name, modules[name]))
    blocks = []
    for name, module in chosen:
        # A recognised block loses the segment in its branches (the skip path passes);
        # any other module loses it in its whole output.
        ends = _branch_ends(module) or (module,)
        blocks.append(AdjustableBlock(name, module, ends))
    return blocks


def find_adjustable_blocks(model: nn.Module, sites: Sites | None = None) -> list[AdjustableBlock]:
    """Return the residual blocks of ``model`` in definition order.

    Args:
        model: any ``nn.Module`` (a timm or torchvision model, a
            :class:`~seedkit.backbones.SeedModel`, psa / SEAM / IRN / MCTformer
            networks), possibly wrapped in DDP.
        sites: ``None`` to find the blocks by structure (see the module
            docstring); else the modules to adjust: a list of qualified module
            names, or a predicate ``sites(module) -> bool`` called with every
            submodule. A site that is a recognised residual block loses the
            segment in its branches; any other site loses it in its whole
            output, so name the last layer of each residual branch (the one
            whose output is added to the skip path).

    Returns:
        One :class:`AdjustableBlock` per residual block or site (possibly empty
        when ``sites`` is ``None``).

    Raises:
        InvalidValueError: a site name that is no submodule (the message
            suggests close names).
        BackboneError: the predicate matched no module.

    Example:
        >>> from seedkit.backbones import create_seed_model
        >>> blocks = find_adjustable_blocks(create_seed_model("resnet18", num_classes=2))
        >>> len(blocks), blocks[0].name
        (8, 'encoder.layer1.0')
        >>> import torchvision
        >>> resnet = torchvision.models.resnet18()
        >>> [type(end).__name__ for end in find_adjustable_blocks(resnet)[0].branch_ends]
        ['BatchNorm2d']
        >>> [b.name for b in find_adjustable_blocks(resnet, sites=["layer4.1.bn2"])]
        ['layer4.1.bn2']
    """
    if isinstance(sites, torch.Generator):
        raise InvalidValueError(
            "sites", "module names or a predicate (pass generator= by keyword)", "a Generator"
        )
    model_name = type(model).__name__
    model = unwrap_model(model)
    if sites is not None:
        return _site_blocks(model, sites, model_name)
    blocks = []
    for name, module in model.named_modules():
        ends = _branch_ends(module)
        if ends:
            blocks.append(AdjustableBlock(name, module, ends))
    return blocks
