"""MCTSeedModel: a timm ViT with one class token per class (MCTformer-V2 style).

MCTformer (Xu et al., CVPR 2022) replaces a ViT's single class token by one
token per class. Each class token is classified on its own (its embedding,
averaged over channels, is the class score), so the attention it pays to the
patch tokens becomes a class-specific localisation map. MCTformer-V2 adds a
convolutional CAM head over the patch tokens. See ``docs/mctformer.rst``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from seedkit.backbones.seed_model import SeedModel
from seedkit.checks import check_choice, check_int
from seedkit.errors import BackboneError, InvalidValueError

__all__ = ["MCT_ATTENTION_BLOCKS", "MCTSeedModel", "MCTSeedModelOutput"]

#: The class-to-patch attention of this many last blocks forms the localisation
#: maps by default: MCTformer's published seed command (``--layer-index 3``).
MCT_ATTENTION_BLOCKS = 3

CLASS_TOKEN_INITS = ("copy", "random")


class MCTSeedModelOutput(NamedTuple):
    """What :class:`MCTSeedModel` returns.

    The first three fields mean what they mean for a
    :class:`~seedkit.backbones.SeedModelOutput`, so every part of seedkit that
    reads ``.cams`` (losses, views, the EMA teacher, CAM inference) works on it.

    Attributes:
        cams: patch-token CAMs (logits of the 3x3 convolution over the patch
            grid), :math:`(B, K, h, w)`.
        features: the patch-token grid of the last block, :math:`(B, D, h, w)`.
        logits: global average of ``cams``, :math:`(B, K)`: the patch-CAM
            class scores (MCTformer-V2's ``x_patch_logits``).
        token_logits: the class-token scores, :math:`(B, K)`: class token
            ``k``'s last-block embedding averaged over its channels.
        class_attention: class-to-patch attention, :math:`(B, K, h, w)`: for
            each of the last ``attention_blocks`` blocks the softmax attention
            row of class token ``k`` (mean over heads) at the patch-token
            columns, summed over those blocks. One block's map sums to 1 minus
            the attention the token pays to the class / prefix tokens, so the
            sum over positions lies in :math:`(0, L]` for :math:`L` blocks.
        affinity: patch-to-patch attention, :math:`(B, hw, hw)` (row: query
            patch, column: key patch, both in row-major grid order), the mean
            over heads summed over the last ``affinity_blocks`` blocks; ``None``
            unless the forward was called with ``return_affinity=True``.
    """

    cams: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    token_logits: torch.Tensor
    class_attention: torch.Tensor
    affinity: torch.Tensor | None


def _attention_head(attention: nn.Module) -> tuple[int, int, int]:
    """``(num_heads, head_dim, attention width)`` of a timm ``Attention`` module."""
    heads = int(attention.num_heads)
    width = int(attention.qkv.out_features) // 3
    return heads, width // heads, width


def _attention_rows(
    attention: nn.Module, tokens: torch.Tensor, rows: slice, first_key: int
) -> torch.Tensor:
    """Head-mean softmax attention of the query ``rows`` to the keys from ``first_key`` on.

    Recomputes queries and keys from the block's attention input with the
    block's own weights (``qkv``, ``q_norm`` / ``k_norm``, ``scale``), so the
    fused attention kernel keeps running in the block itself. The softmax runs
    over all keys (class, prefix and patch tokens), as in the block; only the
    columns from ``first_key`` on are kept. Heads are processed one at a time,
    which bounds the memory of the patch-to-patch case to one ``(B, R, T)`` map.
    """
    heads, head_dim, width = _attention_head(attention)
    weight, bias = attention.qkv.weight, attention.qkv.bias
    query = F.linear(
        tokens[:, rows], weight[:width], None if bias is None else bias[:width]
    )  # (B, R, width)
    key = F.linear(tokens, weight[width : 2 * width], None if bias is None else bias[width:-width])
    batch, num_rows, _ = query.shape
    query = attention.q_norm(query.view(batch, num_rows, heads, head_dim).transpose(1, 2))
    key = attention.k_norm(key.view(batch, tokens.shape[1], heads, head_dim).transpose(1, 2))
    scale = float(getattr(attention, "scale", head_dim**-0.5))
    total: torch.Tensor | None = None
    for head in range(heads):
        scores = (query[:, head] * scale) @ key[:, head].transpose(-2, -1)  # (B, R, T)
        probabilities = scores.float().softmax(dim=-1)[..., first_key:]
        total = probabilities if total is None else total + probabilities
    return total / heads  # type: ignore[operator]


class MCTSeedModel(SeedModel):
    """A timm ViT with one class token per class and a patch-token CAM head (MCTformer-V2).

    The encoder's class token is replaced by ``num_classes`` class tokens
    (distillation and register tokens stay as they are, after the class
    tokens). With position embeddings that cover the class token (original
    ViT / DeiT) each class token gets its own; models whose position
    embeddings cover patches only (DeiT-III, register models) keep it that way.
    The encoder runs through timm's own ``forward_intermediates``, so any input
    size the encoder takes works (no fixed token grid, any patch size).

    Outputs (:class:`MCTSeedModelOutput`):

    - ``token_logits``: class token ``k``'s last-block embedding averaged over
      channels (MCTformer: no final norm);
    - ``cams``: a 3x3 convolution (with bias) over the last block's patch
      tokens, and ``logits``, their global average (MCTformer-V2);
    - ``class_attention``: the class-to-patch attention of the last
      ``attention_blocks`` blocks, mean over heads, summed over blocks;
    - ``affinity`` (on request): the patch-to-patch attention of the last
      ``affinity_blocks`` blocks, mean over heads, summed over blocks, for
      MCTformer's refinement of the maps at inference.

    Training (MCTformer-V2): multi-label soft margin on ``token_logits`` plus
    the loss on the patch CAMs (the same on ``logits``, or USAGE's generation
    loss on ``cams``). Seeds: :class:`seedkit.cam.MCTLocalizationMaps`.

    The encoder is adapted in place: its class token (and that token's position
    embedding) becomes ``num_classes`` tokens, and its final norm and classifier
    are removed (MCTformer reads the last block's tokens directly; this way every
    parameter gets a gradient). Pass an encoder built for this model. With
    timm's gradient checkpointing on (``set_grad_checkpointing``) the attention
    maps carry no gradient (the losses do not use them).

    Args:
        encoder: a timm ``VisionTransformer`` (ViT, DeiT, DeiT-III, distilled
            DeiT, register ViTs...) whose blocks use ``timm.layers.Attention``.
        num_classes: number of classes ``K`` (one class token each).
        attention_blocks: how many last blocks form ``class_attention``;
            ``None``: :data:`MCT_ATTENTION_BLOCKS` (3, MCTformer's published
            seeds), or all blocks of a shallower model.
        affinity_blocks: how many last blocks form ``affinity``; ``None``: all
            (MCTformer).
        class_token_init: ``"copy"``: every class token (and its position
            embedding) starts as the encoder's class token (MCTformer's start
            from ImageNet weights); ``"random"``: truncated normal, std 0.02
            (MCTformer's start from scratch, and for encoders without a class
            token).

    Attributes:
        attention_blocks: settable; see Args.
        affinity_blocks: settable; see Args.

    Shape:
        - Input: :math:`(B, 3, H, W)`.
        - Output: :class:`MCTSeedModelOutput`.

    Raises:
        BackboneError: the encoder is not a timm ViT with class-token support,
            its blocks do not use ``timm.layers.Attention``, or it drops patch
            tokens (``patch_drop_rate``).

    Example:
        >>> import torch
        >>> from seedkit.backbones import create_seed_model
        >>> model = create_seed_model("deit_tiny_patch16_224", 4, head="mct", depth=2, img_size=64)
        >>> out = model(torch.randn(1, 3, 48, 80))
        >>> tuple(out.cams.shape), tuple(out.token_logits.shape), tuple(out.class_attention.shape)
        ((1, 4, 3, 5), (1, 4), (1, 4, 3, 5))
        >>> model.encoder.num_prefix_tokens, model.attention_blocks
        (4, 2)
        >>> tuple(model(torch.randn(1, 3, 48, 80), return_affinity=True).affinity.shape)
        (1, 15, 15)
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        *,
        attention_blocks: int | None = None,
        affinity_blocks: int | None = None,
        class_token_init: str = "copy",
    ) -> None:
        super().__init__(encoder, num_classes, family="vit")
        class_token_init = check_choice("class_token_init", class_token_init, CLASS_TOKEN_INITS)
        self._check_encoder(encoder)
        self.depth = len(encoder.blocks)
        self._convert_class_tokens(encoder, num_classes, class_token_init)
        if hasattr(encoder, "prune_intermediate_layers"):
            encoder.prune_intermediate_layers(indices=1, prune_norm=True, prune_head=True)
        self.attention_blocks = attention_blocks  # type: ignore[assignment]
        self.affinity_blocks = affinity_blocks  # type: ignore[assignment]
        # MCTformer-V2's head: a 3x3 convolution with bias over the patch-token grid.
        self.head = nn.Conv2d(self.out_channels, num_classes, kernel_size=3, padding=1)

    @staticmethod
    def _check_encoder(encoder: nn.Module) -> None:
        from timm.layers import Attention

        name = type(encoder).__name__
        needed = ("patch_embed", "blocks", "cls_token", "pos_embed", "num_prefix_tokens")
        missing = [attr for attr in needed if not hasattr(encoder, attr)]
        if missing or not callable(getattr(encoder, "forward_intermediates", None)):
            raise BackboneError(
                f"encoder {name}: the mct head needs a timm VisionTransformer-style encoder "
                f"(class token, prefix tokens, forward_intermediates); it lacks "
                f"{missing or ['forward_intermediates']}"
            )
        for index, block in enumerate(encoder.blocks):
            attention = getattr(block, "attn", None)
            if not isinstance(attention, Attention):
                raise BackboneError(
                    f"encoder {name}: the mct head reads attention maps from blocks whose attn "
                    f"is timm.layers.Attention (ViT, DeiT, DeiT-III...); block {index} has "
                    f"{type(attention).__name__}"
                )
        patch_drop = getattr(encoder, "patch_drop", None)
        if patch_drop is not None and not isinstance(patch_drop, nn.Identity):
            raise BackboneError(
                f"encoder {name}: patch dropout removes patch tokens, so there is no token grid "
                "for the maps; build it without patch_drop_rate"
            )

    @staticmethod
    def _convert_class_tokens(encoder: nn.Module, num_classes: int, init: str) -> None:
        existing = getattr(encoder, "num_class_tokens", None)
        if existing is not None:  # adapted before (e.g. an encoder taken from an MCTSeedModel)
            if existing != num_classes:
                raise InvalidValueError(
                    "num_classes", f"{existing} (the encoder's class tokens)", num_classes
                )
            return
        old_token = encoder.cls_token
        has_token = isinstance(old_token, torch.Tensor)
        reference = next(encoder.parameters())
        width = int(getattr(encoder, "embed_dim", 0) or encoder.num_features)
        copy = init == "copy" and has_token

        def new_rows(source: torch.Tensor | None) -> torch.Tensor:
            if copy and source is not None:
                return source.detach().expand(1, num_classes, width).clone()
            rows = reference.new_empty(1, num_classes, width)
            return nn.init.trunc_normal_(rows, std=0.02)

        pos_embed = encoder.pos_embed
        if isinstance(pos_embed, torch.Tensor) and not getattr(encoder, "no_embed_class", False):
            # The position embedding starts with one entry per prefix token, class token first.
            class_pos = pos_embed[:, :1] if has_token else None
            rest = pos_embed[:, 1:] if has_token else pos_embed
            encoder.pos_embed = nn.Parameter(torch.cat([new_rows(class_pos), rest.detach()], 1))
        encoder.cls_token = nn.Parameter(new_rows(old_token if has_token else None))
        encoder.num_prefix_tokens = int(encoder.num_prefix_tokens) - int(has_token) + num_classes
        if hasattr(encoder, "has_class_token"):
            encoder.has_class_token = True
        encoder.num_class_tokens = num_classes

    def _check_blocks(self, name: str, value: object) -> int | None:
        return check_int(name, value, 1, self.depth, optional=True)

    @property
    def attention_blocks(self) -> int:
        """How many last blocks form ``class_attention`` (set ``None`` for the default)."""
        return self._attention_blocks or min(MCT_ATTENTION_BLOCKS, self.depth)

    @attention_blocks.setter
    def attention_blocks(self, value: int | None) -> None:
        self._attention_blocks = self._check_blocks("attention_blocks", value)

    @property
    def affinity_blocks(self) -> int:
        """How many last blocks form ``affinity`` (resolved; set ``None`` for all)."""
        return self._affinity_blocks or self.depth

    @affinity_blocks.setter
    def affinity_blocks(self, value: int | None) -> None:
        self._affinity_blocks = self._check_blocks("affinity_blocks", value)

    def _capture_hook(
        self,
        store: dict[str, Any],
        want_class: bool,
        want_affinity: bool,
    ) -> Callable[..., None]:
        num_classes = self.num_classes
        prefix = int(self.encoder.num_prefix_tokens)
        # Under timm's gradient checkpointing the block is recomputed without this hook,
        # so the maps must save nothing for backward: they carry no gradient then.
        detached = bool(getattr(self.encoder, "grad_checkpointing", False))

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            tokens = args[0] if args else kwargs["x"]
            with torch.no_grad() if detached else contextlib.nullcontext():
                capture(module, tokens)

        def capture(module: nn.Module, tokens: torch.Tensor) -> None:
            if want_class:
                rows = _attention_rows(module, tokens, slice(0, num_classes), prefix)
                store["class"] = rows if store["class"] is None else store["class"] + rows
            if want_affinity:
                rows = _attention_rows(module, tokens, slice(prefix, None), prefix)
                store["affinity"] = rows if store["affinity"] is None else store["affinity"] + rows

        return hook

    def forward(self, x: torch.Tensor, return_affinity: bool = False) -> MCTSeedModelOutput:  # type: ignore[override]
        """Compute patch CAMs, class-token scores and attention maps.

        Args:
            x: images, :math:`(B, 3, H, W)`.
            return_affinity: also compute the patch-to-patch ``affinity``
                (:math:`(B, hw, hw)`; for inference).

        Returns:
            An :class:`MCTSeedModelOutput`.
        """
        self._check_input(x)
        encoder = self.encoder
        store: dict[str, Any] = {"class": None, "affinity": None}
        first_class = self.depth - self.attention_blocks
        first_affinity = self.depth - self.affinity_blocks if return_affinity else self.depth
        handles = []
        try:
            for index, block in enumerate(encoder.blocks):
                want_class, want_affinity = index >= first_class, index >= first_affinity
                if want_class or want_affinity:
                    hook = self._capture_hook(store, want_class, want_affinity)
                    handles.append(block.attn.register_forward_pre_hook(hook, with_kwargs=True))
            features, prefix_tokens = encoder.forward_intermediates(
                x,
                indices=1,
                return_prefix_tokens=True,
                norm=False,
                output_fmt="NCHW",
                intermediates_only=True,
            )[-1]
        finally:
            for handle in handles:
                handle.remove()
        batch, _, height, width = features.shape
        cams = self.head(features)
        if self.output_stride is None:
            self.output_stride = max(1, round(x.shape[-2] / height))
        token_logits = prefix_tokens[:, : self.num_classes].mean(dim=-1)
        class_attention = store["class"].reshape(batch, self.num_classes, height, width)
        return MCTSeedModelOutput(
            cams,
            features,
            cams.mean(dim=(2, 3)),
            token_logits,
            class_attention,
            store["affinity"],
        )

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"{super().extra_repr()}, attention_blocks={self.attention_blocks}, "
            f"affinity_blocks={self.affinity_blocks}"
        )
