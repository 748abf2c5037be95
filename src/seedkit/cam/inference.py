"""Multi-scale + flip CAM inference for any model that returns class activation maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from seedkit.checks import check_int, check_tensor
from seedkit.errors import InvalidValueError, ShapeError
from seedkit.losses import seeds_from_cams

__all__ = ["DEFAULT_SCALES", "cams_of", "infer_cams", "multi_scale_flip"]

#: The scales of psa / SEAM / IRN / MCTformer CAM inference.
DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)


def cams_of(output: object) -> torch.Tensor:
    """Return the CAM tensor of a model output.

    Accepts a ``(B, C, h, w)`` tensor, an object with a ``.cams`` attribute (a
    :class:`seedkit.backbones.SeedModel` output) or a dict with key ``"cams"``.

    Example:
        >>> import torch
        >>> from seedkit.cam import cams_of
        >>> cams_of({"cams": torch.zeros(1, 2, 3, 3)}).shape
        torch.Size([1, 2, 3, 3])
    """
    if isinstance(output, torch.Tensor):
        cams = output
    elif isinstance(output, dict) and "cams" in output:
        cams = output["cams"]
    elif hasattr(output, "cams"):
        cams = output.cams  # type: ignore[attr-defined]
    else:
        raise InvalidValueError(
            "model output", "a (B, C, h, w) tensor or an object with .cams", type(output).__name__
        )
    cams = check_tensor("model output cams", cams)
    if cams.dim() != 4:
        raise ShapeError("model output cams", "(B, C, h, w)", tuple(cams.shape))
    return cams


def multi_scale_flip(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool = True,
    output_size: Sequence[int] | None = None,
    min_size: int = 1,
) -> torch.Tensor:
    """Average ``forward`` over resized (and horizontally flipped) views of ``images``.

    The one multi-scale + flip rule of seedkit (CAM seeds and segmentation
    evaluation both use it): for each scale the batch is resized (bilinear; not
    at all at scale 1 or when the size does not change), its mirror image is
    appended, ``forward`` maps the views, the mirrored maps are flipped back and
    added to their originals, and the sum is resized (bilinear) to
    ``output_size``. One scale at a time, so peak memory is that of the largest
    scale plus one output-size buffer.

    Args:
        forward: maps a ``(V, 3, h, w)`` batch of views to ``(V, K, h', w')`` maps.
        images: the batch.
        scales: resize factors (checked by the caller: non-empty, ``> 0``).
        flip: add the mirrored view of every scale.
        output_size: ``(H', W')`` of the result (default: the input size).
        min_size: the smallest side of a resized view.

    Returns:
        The mean over the ``len(scales) * (2 if flip else 1)`` views.

    Shape:
        - images: :math:`(B, 3, H, W)`
        - output: :math:`(B, K, H', W')`

    Example:
        >>> import torch
        >>> from seedkit.cam.inference import multi_scale_flip
        >>> images = torch.rand(1, 3, 8, 12)
        >>> multi_scale_flip(lambda x: x.mean(1, keepdim=True), images, (1.0, 0.5)).shape
        torch.Size([1, 1, 8, 12])
    """
    batch = images.shape[0]
    in_size = (images.shape[-2], images.shape[-1])
    out_size = tuple(output_size) if output_size is not None else in_size
    total: torch.Tensor | None = None
    views = 0
    for scale in scales:
        size = _scaled_size(in_size, scale, min_size)
        x = (
            images
            if scale == 1 or size == in_size
            else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        )
        if flip:
            x = torch.cat([x, x.flip(-1)], dim=0)
        maps = forward(x)
        del x
        if flip:
            maps = maps[:batch] + maps[batch:].flip(-1)
        maps = F.interpolate(maps, size=out_size, mode="bilinear", align_corners=False)
        total = maps if total is None else total.add_(maps)
        views += 2 if flip else 1
    if total is None:
        raise InvalidValueError("scales", "a non-empty sequence of numbers > 0", tuple(scales))
    return total / views


def _scaled_size(size: tuple[int, int], scale: float, min_size: int = 1) -> tuple[int, int]:
    return max(min_size, round(size[0] * scale)), max(min_size, round(size[1] * scale))


def _present_cams(
    model: torch.nn.Module | Callable[[torch.Tensor], object],
    x: torch.Tensor,
    num_classes: int,
    present: torch.Tensor,
    relu: bool,
) -> torch.Tensor:
    """One forward pass: the float32 CAMs of the present classes (ReLU'd if asked)."""
    cams = cams_of(model(x))
    if cams.shape[0] != x.shape[0] or cams.shape[1] != num_classes:
        raise ShapeError(
            "model output cams",
            f"({x.shape[0]}, {num_classes}, h, w) to match images and labels",
            tuple(cams.shape),
        )
    cams = cams.index_select(1, present.to(cams.device)).float()
    return F.relu(cams) if relu else cams


def infer_cams(
    model: torch.nn.Module | Callable[[torch.Tensor], object],
    images: torch.Tensor,
    labels: torch.Tensor,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    temperature: float | None = None,
    output_size: tuple[int, int] | None = None,
    channels_last: bool = False,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """Multi-scale, flipped CAM inference turned into seed maps in ``[0, 1]``.

    For every scale (one at a time, so peak memory is that of the largest
    scale plus one output-size buffer) the resized batch and its horizontal
    flip go through the model together (in chunks of at most ``max_pixels``
    input pixels when that is set); the flipped CAMs are flipped back,
    upsampled bilinearly to ``output_size`` and accumulated, for the classes
    present in some image of the batch only. Then
    :func:`seedkit.seeds_from_cams` zeroes absent classes and normalises:

    - ``temperature=None`` (the CAM baseline of psa / IRN): every view's CAM
      goes through ReLU before summing, then each class is divided by its
      maximum;
    - ``temperature=tau``: the raw CAMs are averaged over the views and mapped
      to ``exp((A - max A) / tau)``.

    The model is used as it is: put it in ``eval()`` mode first. Runs under
    ``torch.inference_mode``.

    Args:
        model: callable returning CAMs ``(B, C, h, w)`` or an object with ``.cams``
            (a module, or e.g. ``lambda x: model(x)[1]`` for a model returning a tuple).
        images: normalised images.
        labels: multi-hot image labels.
        scales: input scales (psa / IRN: ``(1.0, 0.5, 1.5, 2.0)``).
        flip: add horizontally flipped views.
        temperature: ``None`` for max-normalised seeds, else the temperature form.
        output_size: ``(H_out, W_out)``; default the input size.
        channels_last: feed the model channels-last inputs, often faster for
            CNNs (measured 1.3-1.5x on CPU in ``benchmarks/bench_eval.py``);
            off by default because a model that calls ``.view`` on its
            feature maps fails on channels-last tensors.
        max_pixels: the most input pixels (views x height x width, flipped
            copies counted) one forward pass may take. ``None`` (default) sends
            a scale's images and their flips through together; a bound splits
            them into chunks, down to one view (an image or its flip) per
            forward, which is never split further (tiling would change a CNN's
            output at the tile borders). The model's activation memory scales
            with it: ``max_pixels=1_000_000`` keeps a VOC image at scale 2.0
            (1000 x 750 pixels) to one view at a time, half the peak of the
            image and its flip together (Performance page). The seeds are the
            same as without a bound, up to the float rounding of the model's
            batched kernels.

    Returns:
        Seeds in ``[0, 1]``, zero for absent classes, float32.

    Shape:
        - images: :math:`(B, 3, H, W)`
        - labels: :math:`(B, C)`
        - output: :math:`(B, C, H_{out}, W_{out})`

    Example:
        >>> import torch
        >>> from seedkit.cam import infer_cams
        >>> model = torch.nn.Conv2d(3, 4, 3, stride=4)
        >>> labels = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
        >>> seeds = infer_cams(model, torch.randn(1, 3, 32, 48), labels)
        >>> seeds.shape, float(seeds[0, 1].abs().sum()), float(seeds.max()) <= 1.0
        (torch.Size([1, 4, 32, 48]), 0.0, True)
    """
    images = check_tensor("images", images)
    if images.dim() != 4:
        raise ShapeError("images", "(B, 3, H, W)", tuple(images.shape))
    labels = check_tensor("labels", labels)
    if labels.dim() != 2 or labels.shape[0] != images.shape[0]:
        raise ShapeError("labels", f"(B, C) with B = {images.shape[0]}", tuple(labels.shape))
    scales = tuple(float(s) for s in scales)
    if not scales or any(not s > 0 for s in scales):
        raise InvalidValueError("scales", "a non-empty sequence of numbers > 0", scales)
    max_pixels = check_int("max_pixels", max_pixels, 1, optional=True)
    batch = images.shape[0]
    in_size = (images.shape[2], images.shape[3])
    out_size = tuple(output_size) if output_size is not None else in_size
    present = labels.detach().to(torch.bool).any(dim=0).nonzero().flatten()
    num_classes = labels.shape[1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        views_per_pass = x.shape[0]
        if max_pixels is not None:
            views_per_pass = max(1, max_pixels // (x.shape[2] * x.shape[3]))
        # Only the present classes of each chunk's low-resolution CAMs are kept.
        parts = [
            _present_cams(model, chunk, num_classes, present, temperature is None)
            for chunk in x.split(views_per_pass)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    with torch.inference_mode():
        mean = multi_scale_flip(forward, images, scales, flip, out_size)
        full = images.new_zeros((batch, num_classes, *out_size), dtype=torch.float32)
        full[:, present.to(full.device)] = mean
        return seeds_from_cams(full, labels.to(full.device).float(), temperature)
