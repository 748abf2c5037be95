"""SelfAdaptiveView: a network view that drops a channel segment in every residual branch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from seedkit.backbones.family import Family, resolve_family
from seedkit.checks import check_number
from seedkit.errors import BackboneError, InvalidValueError
from seedkit.views.sites import AdjustableBlock, Sites, find_adjustable_blocks

__all__ = ["Segment", "SelfAdaptiveView"]


class Segment(NamedTuple):
    """The channels ``[start, stop)`` of a block's residual branch that a call dropped.

    Attributes:
        start: first dropped channel.
        stop: one past the last dropped channel.
        channels: the branch's channel count when it was drawn.
    """

    start: int
    stop: int
    channels: int


def _check_ratio(drop_ratio: object) -> float:
    return check_number("drop_ratio", drop_ratio, 0, 1, strict_maximum=True)


class SelfAdaptiveView(nn.Module):
    """A view of a network whose residual branches each lose a random channel segment.

    USAGE's *self-adaptive network adjustment*: in every adjustable layer (a
    residual block of a CNN, a transformer block of a ViT, found by structure,
    see :func:`seedkit.views.find_adjustable_blocks`) a random contiguous
    segment of ``round(drop_ratio * C)`` of the residual branch's ``C``
    channels is set to zero; the other channels and the skip path pass
    unchanged. A transformer block has two branches (attention and MLP); both
    lose the same segment. The segment is drawn per call and per block and is
    shared by the batch. A strong view (student) and a weak view (teacher) are
    two instances with two ratios over the same model.

    Recognised by structure: timm CNNs and ViTs, torchvision ``BasicBlock`` /
    ``Bottleneck`` (and IRN's ResNet-50), psa / SEAM's ResNet-38 blocks, and
    transformer blocks with ``attn`` and ``mlp`` children (MCTformer's too).
    For any other model, name the layers with ``sites=``.

    The model is never edited: forward hooks are attached for the duration of
    one call and removed afterwards, also when the call raises. Dropping does not
    depend on ``model.training``: an eval-mode teacher gets its weak view too.

    Args:
        model: a :class:`~seedkit.backbones.SeedModel`, a timm CNN or ViT, an
            :class:`~seedkit.EMATeacher`, or any of them wrapped in DDP. It is
            registered as the submodule ``model`` (parameters are shared, not
            copied).
        drop_ratio: fraction of each branch's channels to drop, in ``[0, 1)``.
            ``0`` calls the model unchanged.
        sites: ``None`` to find the residual blocks by structure; else the
            modules to adjust, as qualified names (``["layer1.0.bn3", ...]``) or
            a predicate ``sites(module) -> bool`` over submodules. Name the last
            layer of each residual branch (its output is what is added to the
            skip path); a site that is itself a recognised block loses the
            segment in its branches. See :func:`seedkit.views.find_adjustable_blocks`.
        generator: a ``torch.Generator`` (CPU) that draws the segments; the
            global RNG if ``None``.
        rescale: multiply the kept channels by ``C / (C - dropped)`` (as
            dropout does). Off by default: the rest passes as it is.

    Attributes:
        blocks: the adjustable blocks found.
        family: ``"cnn"`` or ``"vit"``.
        last_segments: ``{block name: Segment}`` of the last call (empty for
            ratio 0); pass it back as ``segments=`` to replay the call.

    Shape:
        Whatever ``model`` takes and returns.

    Example:
        >>> import torch
        >>> from seedkit.backbones import create_seed_model
        >>> model = create_seed_model("resnet18", num_classes=3)
        >>> generator = torch.Generator().manual_seed(0)
        >>> strong = SelfAdaptiveView(model, drop_ratio=0.5, generator=generator)
        >>> x = torch.randn(1, 3, 64, 64)
        >>> out = strong(x)
        >>> len(strong.last_segments), strong.last_segments["encoder.layer1.0"].channels
        (8, 64)
        >>> torch.equal(strong(x, segments=strong.last_segments).cams, out.cams)
        True
    """

    def __init__(
        self,
        model: nn.Module,
        drop_ratio: float = 0.3,
        sites: Sites | None = None,
        generator: torch.Generator | None = None,
        *,
        rescale: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InvalidValueError("model", "an nn.Module", type(model).__name__)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InvalidValueError(
                "generator", "a torch.Generator or None", type(generator).__name__
            )
        self.drop_ratio = _check_ratio(drop_ratio)
        self.family: Family = resolve_family(model)
        blocks = find_adjustable_blocks(model, sites)
        if not blocks:
            raise BackboneError(
                f"model {type(model).__name__}: no adjustable residual block found (recognised: "
                "timm blocks, torchvision BasicBlock / Bottleneck, psa / SEAM ResNet-38 blocks, "
                "transformer blocks with attn and mlp); name the last layer of each residual "
                "branch with sites=, e.g. SelfAdaptiveView(model, 0.3, "
                "sites=['layer1.0.bn2', ...]) or sites=lambda m: isinstance(m, MyBranchEnd)"
            )
        self.model = model
        self.blocks: tuple[AdjustableBlock, ...] = tuple(blocks)
        self.generator = generator
        self.rescale = bool(rescale)
        self.last_segments: dict[str, Segment] = {}
        self._channel_dim = 1 if self.family == "cnn" else -1

    @property
    def drop_ratio(self) -> float:
        """The fraction of branch channels dropped per block, in ``[0, 1)``."""
        return self._drop_ratio

    @drop_ratio.setter
    def drop_ratio(self, value: float) -> None:
        self._drop_ratio = _check_ratio(value)

    def segment_length(self, channels: int) -> int:
        """Return how many of ``channels`` branch channels a call drops.

        ``round(drop_ratio * channels)``, at least 1 for a ratio above 0 and at
        most ``channels - 1`` (some channels always pass).
        """
        if self._drop_ratio == 0.0 or channels < 2:
            return 0
        return min(channels - 1, max(1, round(self._drop_ratio * channels)))

    def _mask_hook(
        self,
        block: AdjustableBlock,
        draw: list[float] | None,
        index: int,
        segments: Mapping[str, Segment] | None,
        masks: dict[tuple[str, torch.dtype, torch.device], torch.Tensor],
    ) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                # e.g. MCTformer's attention returns (tokens, attention weights)
                first = drop(output[0])
                return type(output)((first, *output[1:]))
            if not isinstance(output, torch.Tensor):
                return None
            return drop(output)

        def drop(output: torch.Tensor) -> torch.Tensor:
            # Tokens (B, N, C) keep channels last; 4-D maps follow the family (Swin is
            # channels-last, CNNs channels-first).
            dim = self._channel_dim if output.dim() > 3 else -1
            channels = output.shape[dim]
            segment = self.last_segments.get(block.name)
            if segment is None:
                if segments is not None:
                    segment = segments.get(block.name)
                    if segment is None:
                        return output
                    segment = Segment(*segment)
                    if segment.channels != channels:
                        raise InvalidValueError(
                            f"segments[{block.name!r}]",
                            f"a segment over {channels} channels",
                            f"{segment.channels} channels",
                        )
                else:
                    length = self.segment_length(channels)
                    if length == 0:
                        return output
                    fraction = draw[index] if draw is not None else 0.0
                    start = min(int(fraction * (channels - length + 1)), channels - length)
                    segment = Segment(start, start + length, channels)
                self.last_segments[block.name] = segment
            if segment.channels != channels or segment.stop <= segment.start:
                return output
            length = segment.stop - segment.start
            keep = channels / (channels - length) if self.rescale else 1.0
            if not (torch.is_grad_enabled() and output.requires_grad):
                # No graph to keep: zero the segment in place (the teacher's cheap path).
                if keep != 1.0:
                    output.mul_(keep)
                output.narrow(dim, segment.start, length).zero_()
                return output
            key = (block.name, output.dtype, output.device)
            mask = masks.get(key)
            if mask is None:  # one mask per block and call (a ViT block has two branches)
                mask = output.new_full((channels,), keep)
                mask[segment.start : segment.stop] = 0
                masks[key] = mask
            shape = [1] * output.dim()
            shape[dim] = channels
            return output * mask.view(shape)

        return hook

    def forward(
        self, *args: Any, segments: Mapping[str, Segment] | None = None, **kwargs: Any
    ) -> Any:
        """Run the model with one channel segment dropped in every residual branch.

        Args:
            *args: the model's positional inputs (e.g. images ``x``).
            segments: replay these segments (a previous ``last_segments``)
                instead of drawing new ones; blocks not in it are left intact.
            **kwargs: the model's keyword inputs.

        Returns:
            What ``model(*args, **kwargs)`` returns.
        """
        self.last_segments = {}
        if segments is None and self._drop_ratio == 0.0:
            return self.model(*args, **kwargs)
        draw = None
        if segments is None:
            draw = torch.rand(len(self.blocks), generator=self.generator).tolist()
        handles = []
        masks: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}
        try:
            for index, block in enumerate(self.blocks):
                hook = self._mask_hook(block, draw, index, segments, masks)
                handles.extend(end.register_forward_hook(hook) for end in block.branch_ends)
            return self.model(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    def view(self, *args: Any, segments: Mapping[str, Segment] | None = None, **kwargs: Any) -> Any:
        """Same as calling the module: ``view(x)`` returns what ``model(x)`` returns."""
        return self(*args, segments=segments, **kwargs)

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"drop_ratio={self._drop_ratio}, family={self.family!r}, blocks={len(self.blocks)}, "
            f"rescale={self.rescale}"
        )
