"""Seed maps of multi-class-token models: class attention, fusion, affinity refinement.

MCTformer's class-specific localisation maps from an
:class:`~seedkit.backbones.MCTSeedModel` output:

- ``"class_attention"``: the class-to-patch attention (MCTformer-V1's maps);
- ``"patch_cam"``: the patch-token CAMs through ReLU;
- ``"fused"``: their product (MCTformer-V2's maps, the default);

each optionally refined by the patch-to-patch attention affinity, as
MCTformer's ``--patch-attn-refine`` does. :class:`MCTLocalizationMaps` wraps the
model so that its ``.cams`` are these maps, and :func:`seedkit.cam.infer_cams` /
:func:`seedkit.cam.write_cams` (multi-scale + flip, psa files) take it as they
take any seed model. See ``docs/mctformer.rst``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from seedkit.backbones.family import unwrap_model
from seedkit.backbones.mct import MCTSeedModel
from seedkit.checks import check_choice, check_tensor
from seedkit.errors import InvalidValueError, ShapeError

__all__ = [
    "MAP_KINDS",
    "MCTLocalizationMaps",
    "as_seed_map_model",
    "fuse_attention_cams",
    "localization_maps",
    "refine_with_affinity",
]

#: The kinds of localisation map :func:`localization_maps` makes.
MAP_KINDS: tuple[str, ...] = ("fused", "class_attention", "patch_cam")


def _check_maps(argument: str, maps: object) -> torch.Tensor:
    maps = check_tensor(argument, maps)
    if maps.dim() != 4:
        raise ShapeError(argument, "(B, K, h, w)", tuple(maps.shape))
    return maps


def fuse_attention_cams(class_attention: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """MCTformer-V2's fused maps: class attention times the ReLU of the patch CAMs.

    Args:
        class_attention: class-to-patch attention, non-negative.
        cams: patch-token CAM logits.

    Returns:
        ``class_attention * relu(cams)``, non-negative.

    Shape:
        - class_attention, cams, output: :math:`(B, K, h, w)`.

    Example:
        >>> import torch
        >>> attention = torch.tensor([[[[0.5, 0.25]]]])
        >>> fuse_attention_cams(attention, torch.tensor([[[[2.0, -1.0]]]])).tolist()
        [[[[1.0, 0.0]]]]
    """
    class_attention = _check_maps("class_attention", class_attention)
    cams = _check_maps("cams", cams)
    if class_attention.shape != cams.shape:
        raise ShapeError("cams", f"{tuple(class_attention.shape)} (as class_attention)", cams.shape)
    return class_attention * F.relu(cams)


def refine_with_affinity(maps: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Propagate maps along patch-to-patch attention: ``refined[k, i] = sum_j A[i, j] maps[k, j]``.

    MCTformer's refinement: each patch takes the maps of the patches it attends
    to, weighted by the attention (no row normalisation, as MCTformer does; the
    seeds are max-normalised afterwards). An identity affinity leaves the maps
    unchanged.

    Args:
        maps: localisation maps over the patch grid.
        affinity: patch-to-patch affinity; row ``i`` (query) and column ``j``
            (key) index the grid in row-major order.

    Returns:
        The refined maps.

    Shape:
        - maps: :math:`(B, K, h, w)`
        - affinity: :math:`(B, hw, hw)`
        - output: :math:`(B, K, h, w)`

    Example:
        >>> import torch
        >>> maps = torch.tensor([[[[1.0, 0.0, 0.0]]]])
        >>> affinity = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
        >>> refine_with_affinity(maps, affinity).tolist()
        [[[[1.0, 0.5, 0.0]]]]
    """
    maps = _check_maps("maps", maps)
    affinity = check_tensor("affinity", affinity)
    batch, classes, height, width = maps.shape
    cells = height * width
    if affinity.shape != (batch, cells, cells):
        raise ShapeError("affinity", f"({batch}, {cells}, {cells})", affinity.shape)
    flat = maps.reshape(batch, classes, cells).to(affinity.dtype)
    return (flat @ affinity.transpose(1, 2)).reshape(batch, classes, height, width).to(maps.dtype)


def localization_maps(output: Any, kind: str = "fused", refine: bool = True) -> torch.Tensor:
    """Class-specific localisation maps of an :class:`~seedkit.backbones.MCTSeedModel` output.

    Args:
        output: an :class:`~seedkit.backbones.MCTSeedModelOutput` (with
            ``affinity`` when ``refine``).
        kind: ``"fused"`` (class attention x ReLU(patch CAM), MCTformer-V2),
            ``"class_attention"`` (MCTformer-V1) or ``"patch_cam"`` (ReLU of
            the patch CAMs).
        refine: propagate the maps along ``output.affinity``
            (:func:`refine_with_affinity`).

    The class attention enters in units of uniform attention (multiplied by
    the number of patches ``h * w``): a patch that gets ``1 / (h w)`` of every
    row scores 1 per block. At one input size this factor cancels in the
    max-normalised seeds; across the scales of multi-scale inference it puts
    the views on one scale (raw attention shrinks with the token count, so the
    smallest scale would dominate the sum). This factor is seedkit's choice;
    MCTformer's published seeds use one scale.

    Returns:
        Non-negative maps :math:`(B, K, h, w)`, not normalised (the seed
        functions normalise each class by its maximum).

    Example:
        >>> import torch
        >>> from seedkit.backbones import create_seed_model
        >>> model = create_seed_model("deit_tiny_patch16_224", 3, head="mct", depth=1, img_size=32)
        >>> out = model(torch.randn(1, 3, 32, 48), return_affinity=True)
        >>> tuple(localization_maps(out).shape), bool((localization_maps(out) >= 0).all())
        ((1, 3, 2, 3), True)
    """
    kind = check_choice("kind", kind, MAP_KINDS)
    for field in ("cams", "class_attention", "affinity"):
        if not hasattr(output, field):
            raise InvalidValueError(
                "output", "an MCTSeedModelOutput (cams, class_attention, affinity)", output
            )
    if kind != "patch_cam":
        attention = _check_maps("class_attention", output.class_attention)
        # In units of uniform attention: one patch of N gets 1/N of a row, so without this
        # factor the smallest input scale would dominate a multi-scale sum.
        attention = attention * (attention.shape[-2] * attention.shape[-1])
    if kind == "fused":
        maps = fuse_attention_cams(attention, output.cams.float())
    elif kind == "class_attention":
        maps = attention
    else:
        maps = F.relu(_check_maps("cams", output.cams))
    if refine:
        if output.affinity is None:
            raise InvalidValueError("output.affinity", "a (B, hw, hw) tensor for refine=True", None)
        maps = refine_with_affinity(maps, output.affinity)
    return maps


def _is_mct(model: object) -> bool:
    """Whether ``model`` is an MCTSeedModel, inside DDP / compile / EMA-teacher wrappers or not."""
    if not isinstance(model, nn.Module):
        return False
    inner = unwrap_model(model)
    teacher_copy = getattr(inner, "module", None)  # an EMATeacher
    return isinstance(inner, MCTSeedModel) or isinstance(teacher_copy, MCTSeedModel)


class MCTLocalizationMaps(nn.Module):
    """A multi-class-token model whose ``.cams`` are its localisation maps.

    Calls the model (with ``return_affinity=refine``) and returns its output
    with ``cams`` replaced by :func:`localization_maps`, so
    :func:`seedkit.cam.infer_cams`, :func:`seedkit.cam.write_cams` and the seed
    stage treat it like any seed model (multi-scale + flip, max-normalised psa
    seeds). The model is shared, not copied.

    Args:
        model: an :class:`~seedkit.backbones.MCTSeedModel` (possibly wrapped in
            DDP, an EMA teacher...).
        kind: see :func:`localization_maps`.
        refine: see :func:`localization_maps`.

    Shape:
        - Input: :math:`(B, 3, H, W)`.
        - Output: the model's :class:`~seedkit.backbones.MCTSeedModelOutput`
          with ``cams`` :math:`(B, K, h, w)` the localisation maps.

    Example:
        >>> import torch
        >>> from seedkit.backbones import create_seed_model
        >>> from seedkit.cam import infer_cams
        >>> model = create_seed_model("deit_tiny_patch16_224", 3, head="mct", depth=1, img_size=32)
        >>> seeds = infer_cams(MCTLocalizationMaps(model).eval(), torch.randn(1, 3, 64, 96),
        ...                    torch.tensor([[1.0, 0.0, 1.0]]), scales=(1.0, 0.5))
        >>> tuple(seeds.shape), float(seeds[0, 1].abs().sum()), round(float(seeds[0, 0].max()), 2)
        ((1, 3, 64, 96), 0.0, 1.0)
    """

    def __init__(self, model: nn.Module, kind: str = "fused", refine: bool = True) -> None:
        super().__init__()
        if not _is_mct(model):
            raise InvalidValueError("model", "an MCTSeedModel", type(model).__name__)
        self.model = model
        self.kind = check_choice("kind", kind, MAP_KINDS)
        self.refine = bool(refine)
        self.training = model.training  # so wrapping leaves the model's mode as it is

    def forward(self, x: torch.Tensor) -> Any:
        """Return the model's output with ``cams`` replaced by the localisation maps."""
        output = self.model(x, return_affinity=self.refine)
        return output._replace(cams=localization_maps(output, self.kind, self.refine))

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return f"kind={self.kind!r}, refine={self.refine}"


def as_seed_map_model(model: nn.Module) -> nn.Module:
    """Return the module whose output ``.cams`` are the seed maps of ``model``.

    :class:`MCTLocalizationMaps` (fused, refined: MCTformer-V2's seeds) for an
    :class:`~seedkit.backbones.MCTSeedModel`, ``model`` itself for any other
    seed model (whose ``.cams`` are its CAMs).

    Example:
        >>> from seedkit.backbones import create_seed_model
        >>> type(as_seed_map_model(create_seed_model("resnet18", 2))).__name__
        'SeedModel'
    """
    if _is_mct(model):
        return MCTLocalizationMaps(model)
    return model
