"""create_seed_model: build a SeedModel from any timm CNN or ViT name."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import torch
import torch.nn as nn

from seedkit.backbones.family import detect_family
from seedkit.backbones.mct import MCTSeedModel
from seedkit.backbones.seed_model import SeedModel
from seedkit.checks import check_choice, check_int, is_integer
from seedkit.errors import BackboneError, DataFileError, InvalidValueError, PretrainedWeightsError

__all__ = ["HEADS", "create_seed_model", "with_output_stride"]

#: The seed-model heads of :func:`create_seed_model`: ``"cam"`` (a 1x1-conv CAM
#: classifier, :class:`SeedModel`) and ``"mct"`` (one class token per class and a
#: patch-token CAM head, :class:`~seedkit.backbones.MCTSeedModel`; ViTs only).
HEADS: tuple[str, ...] = ("cam", "mct")

#: The output strides timm's dilated CNNs support.
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)


def _create_timm(name: str, **kwargs: Any) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error) or "nknown" in str(error):
            raise BackboneError(
                f"name: timm has no model {name!r}; see timm.list_models() for the names"
            ) from error
        raise
    except (TypeError, AssertionError) as error:  # timm asserts on some values
        reason = str(error) or "an assertion in its constructor failed"
        raise BackboneError(
            f"{name}: timm rejected the keyword arguments {kwargs}: {reason}"
        ) from error


def _load_encoder_weights(encoder: nn.Module, state_dict: dict[str, Any], path: str) -> None:
    filter_fn = getattr(sys.modules.get(type(encoder).__module__), "checkpoint_filter_fn", None)
    if callable(filter_fn):  # timm's own key conversion (pos-embed resampling, old layouts)
        with contextlib.suppress(Exception):  # keep the raw keys if it does not apply
            state_dict = filter_fn(state_dict, encoder)
    own = encoder.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own}
    if not matched:
        raise BackboneError(
            f"checkpoint_path {path}: no key matches the encoder {type(encoder).__name__} "
            f"(checkpoint keys such as {list(state_dict)[:3]}, model keys such as {list(own)[:3]})"
        )
    wrong = [k for k, v in matched.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise BackboneError(
            f"checkpoint_path {path}: shapes differ for {wrong[:3]}: checkpoint "
            f"{tuple(matched[wrong[0]].shape)}, model {tuple(own[wrong[0]].shape)}"
        )
    # Converted checkpoints often lack BatchNorm's step counters; they are bookkeeping,
    # not weights, so the model's own values stand in for them.
    matched.update(
        {k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in matched}
    )
    missing = [k for k in own if k not in matched]
    if missing:
        raise BackboneError(
            f"checkpoint_path {path}: {len(missing)} encoder weights are missing, such as "
            f"{missing[:3]}; is it a checkpoint of a different architecture?"
        )
    encoder.load_state_dict(matched, strict=True)


def with_output_stride(name: str, output_stride: int | None, **timm_kwargs: Any) -> dict[str, Any]:
    """Return ``timm_kwargs`` plus ``output_stride`` when ``name`` is a CNN.

    ViTs have no output stride (timm rejects the argument), so one setting can
    serve both families. The family comes from a parameter-free probe on the
    meta device, as in :func:`create_seed_model`.

    Args:
        name: a timm model name.
        output_stride: the CNN's output stride, or ``None`` for the model's own.
        **timm_kwargs: other ``timm.create_model`` arguments (kept as they are).

    Returns:
        The keyword arguments for :func:`create_seed_model`.

    Example:
        >>> with_output_stride("resnet18", 16, drop_rate=0.1)
        {'drop_rate': 0.1, 'output_stride': 16}
        >>> with_output_stride("deit_tiny_patch16_224", 16, depth=2)
        {'depth': 2}
    """
    kwargs = dict(timm_kwargs)
    if not output_stride:
        return kwargs
    with torch.device("meta"):
        probe = _create_timm(name, pretrained=False, num_classes=0, **kwargs)
    if detect_family(probe) == "cnn":
        kwargs["output_stride"] = output_stride
    return kwargs


def create_seed_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    head: str = "cam",
    **timm_kwargs: Any,
) -> SeedModel:
    """Build a :class:`SeedModel` from a timm model name.

    The family (``"cnn"`` or ``"vit"``) is read from the model's structure. A
    ViT is built with ``dynamic_img_size=True`` (unless you pass it) so it takes
    any input size that is a multiple of its patch size; add
    ``dynamic_img_pad=True`` for other sizes. A CNN takes ``output_stride=8`` or
    ``16`` where timm supports dilation (ResNet, ConvNeXt, EfficientNet...).

    Args:
        name: a timm model name, e.g. ``"resnet50"``, ``"deit_small_patch16_224"``.
        num_classes: number of foreground classes of the CAM classifier.
        pretrained: load timm's pretrained weights (downloads them, or reads the
            Hugging Face cache).
        checkpoint_path: a local ``.pth`` / ``.safetensors`` file: either weights
            of the timm encoder (its classifier is ignored) or a whole
            ``SeedModel`` state dict (keys ``encoder.*`` and ``head.*``).
        head: ``"cam"``: a bias-free 1x1-conv CAM classifier (:class:`SeedModel`);
            ``"mct"``: one class token per class plus a 3x3-conv patch-token CAM
            head (:class:`~seedkit.backbones.MCTSeedModel`, MCTformer-V2; ViTs
            only). Its class tokens start from the encoder's class token when
            weights are loaded (``pretrained`` or encoder weights in
            ``checkpoint_path``), else at random.
        **timm_kwargs: passed to ``timm.create_model`` (``img_size``,
            ``output_stride``, ``drop_path_rate``, ``reg_tokens``...).

    Returns:
        The model.

    Raises:
        BackboneError: unknown name, rejected keyword, no CNN/ViT structure,
            weights that cannot be fetched or do not fit.
        DataFileError: ``checkpoint_path`` does not exist.

    Example:
        >>> import torch
        >>> model = create_seed_model("deit_tiny_patch16_224", num_classes=5, depth=1, img_size=64)
        >>> out = model(torch.randn(1, 3, 48, 80))
        >>> model.family, tuple(out.cams.shape), tuple(out.features.shape)
        ('vit', (1, 5, 3, 5), (1, 192, 3, 5))
        >>> mct = create_seed_model("deit_tiny_patch16_224", 5, head="mct", depth=1, img_size=64)
        >>> type(mct).__name__, tuple(mct(torch.randn(1, 3, 48, 80)).token_logits.shape)
        ('MCTSeedModel', (1, 5))
    """
    if not isinstance(name, str) or not name:
        raise InvalidValueError("name", "a timm model name", name)
    num_classes = check_int("num_classes", num_classes, 1)
    if "num_classes" in timm_kwargs:
        raise InvalidValueError(
            "timm_kwargs", "no num_classes (the CAM head sets it)", "num_classes"
        )
    head = check_choice("head", head, HEADS)
    if checkpoint_path is not None and not os.path.isfile(checkpoint_path):
        raise DataFileError(checkpoint_path, "checkpoint file")
    output_stride = timm_kwargs.get("output_stride")
    if output_stride is not None and (
        not is_integer(output_stride) or output_stride not in OUTPUT_STRIDES
    ):
        raise InvalidValueError(
            "output_stride", "8, 16 or 32 (None: the model's own)", output_stride
        )

    # A parameter-free probe on the meta device tells the family before the real build.
    with torch.device("meta"):
        probe = _create_timm(name, pretrained=False, num_classes=0, **timm_kwargs)
    family = detect_family(probe)
    del probe
    if head == "mct" and family != "vit":
        raise BackboneError(
            f"{name}: head='mct' needs a ViT (class tokens attend to patch tokens); "
            f"{name} is a {family.upper()}"
        )
    kwargs = dict(timm_kwargs)
    if family == "vit":
        kwargs.setdefault("dynamic_img_size", True)

    try:
        encoder = _create_timm(name, pretrained=bool(pretrained), num_classes=0, **kwargs)
    except BackboneError:
        raise
    except Exception as error:
        if not pretrained:
            raise
        raise PretrainedWeightsError(name, f"{type(error).__name__}: {error}") from error

    state_dict = None
    whole_model = False
    if checkpoint_path is not None:
        import timm.models

        path = os.fspath(checkpoint_path)
        try:
            state_dict = timm.models.load_state_dict(path, weights_only=True)
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            if "Unsupported global" in str(error):
                reason = "a pickle that would run code; seedkit loads weights only"
            raise BackboneError(
                f"checkpoint_path {path}: cannot read it as a PyTorch / safetensors state dict "
                f"({type(error).__name__}: {reason})"
            ) from error
        whole_model = any(k.startswith("encoder.") for k in state_dict) and any(
            k.startswith("head.") for k in state_dict
        )

    if head == "mct":
        # Encoder weights hold one class token: load them before it becomes K tokens.
        if state_dict is not None and not whole_model:
            _load_encoder_weights(encoder, state_dict, path)
        weights = bool(pretrained) or (state_dict is not None and not whole_model)
        model: SeedModel = MCTSeedModel(
            encoder, num_classes, class_token_init="copy" if weights else "random"
        )
    else:
        # Keep only what feeds the last feature map (timm's own pruning contract), so
        # every parameter gets a gradient and DDP needs no find_unused_parameters.
        if hasattr(encoder, "prune_intermediate_layers"):
            encoder.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=True)
        elif hasattr(encoder, "reset_classifier"):
            encoder.reset_classifier(0, "")
        model = SeedModel(encoder, num_classes, family=family)
        if state_dict is not None and not whole_model:
            _load_encoder_weights(encoder, state_dict, path)

    if state_dict is not None and whole_model:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise BackboneError(f"checkpoint_path {path}: {error}") from error
    return model
