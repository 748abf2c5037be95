"""Spatial activation distributions, temperature pooling and seeds.

These are the building blocks of seedkit's formulation of USAGE (see the Method
page of the docs): for class activations ``A`` of shape ``(B, C, H, W)`` and a
temperature ``tau``,

.. math::

    \\alpha_c = \\operatorname{softmax}_n(A_c / \\tau), \\qquad
    s_c = \\sum_n \\alpha_c(n) A_c(n).

``tau -> inf`` gives global average pooling, ``tau -> 0+`` global max pooling.
All softmax arithmetic runs in float32 (float64 for float64 input), so the
functions stay finite under float16 / bfloat16 autocast.
"""

from __future__ import annotations

from typing import Literal

import torch

from seedkit.checks import (
    check_cams,
    check_choice,
    check_labels,
    check_mask,
    check_temperature,
    mask_flag,
    nonfinite_flag,
    scan_finite,
    scan_mask,
    verify,
)
from seedkit.kernels import fused_temperature_pool, resolve_backend
from seedkit.reference import flatten_maps, max_normalize, scaled_logits
from seedkit.reference import temperature_pool as pool_flat

__all__ = [
    "ActivationScale",
    "global_average_pool",
    "seeds_from_cams",
    "spatial_activation_distribution",
    "spatial_log_distribution",
    "temperature_pool",
]

ActivationScale = Literal["raw", "max"]
_SCALES: tuple[str, ...] = ("raw", "max")


def _diagnose_cams(cams: torch.Tensor, mask: torch.Tensor | None) -> None:
    """The full value checks of ``(cams, mask)``, run only once a flag is set."""
    scan_finite("cams", cams)
    scan_mask("mask", mask)


def spatial_log_distribution(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "raw",
) -> torch.Tensor:
    """Log of :func:`spatial_activation_distribution`, flattened, in float32.

    Masked positions hold ``-inf``. Used by the divergences, which need logs
    that are exact where the probability underflows to zero.

    Args:
        cams: class activations.
        temperature: softmax temperature ``tau > 0``.
        mask: optional validity mask, ``True`` where a position is real.
        scale: ``"raw"`` divides the activations by ``tau``; ``"max"`` first
            divides them by their detached per-image, per-class maximum magnitude.

    Returns:
        Log-probabilities over positions.

    Shape:
        - cams: :math:`(B, C, H, W)`
        - mask: :math:`(B, 1, H, W)` or :math:`(B, H, W)`
        - output: :math:`(B, C, H \\cdot W)`, float32
    """
    cams = check_cams("cams", cams, values=False)
    temperature = check_temperature("temperature", temperature)
    check_choice("scale", scale, _SCALES)
    given = mask
    mask = check_mask("mask", mask, cams, values=False)
    flat, valid = flatten_maps(cams, mask)
    log_alpha = torch.log_softmax(scaled_logits(flat, valid, temperature, scale), dim=2)
    # The output holds -inf at masked positions, so the flag reads the input (one pass).
    flags = (nonfinite_flag(cams), mask_flag(given, mask))
    verify("seedkit.losses.spatial_log_distribution", flags, _diagnose_cams, cams, given)
    return log_alpha


def spatial_activation_distribution(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "raw",
) -> torch.Tensor:
    """Softmax of each class map over its spatial positions.

    Args:
        cams: class activations (CAM logits).
        temperature: softmax temperature ``tau > 0``; large spreads, small sharpens.
        mask: optional validity mask (``True`` or 1 = real pixel). Masked positions
            get probability 0 and never influence the others.
        scale: ``"raw"`` (activations as given) or ``"max"`` (scale-free: divided by
            their detached per-image, per-class maximum magnitude before ``/ tau``).

    Returns:
        ``alpha`` with ``alpha.sum((2, 3)) == 1`` for every image and class, in the
        dtype of ``cams``.

    Shape:
        - cams: :math:`(B, C, H, W)`
        - mask: :math:`(B, 1, H, W)` or :math:`(B, H, W)`
        - output: :math:`(B, C, H, W)`

    Example:
        >>> import torch, seedkit
        >>> cams = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]]]])
        >>> alpha = seedkit.spatial_activation_distribution(cams, temperature=1.0)
        >>> round(float(alpha.sum()), 6)
        1.0
        >>> bool(alpha[0, 0, 1, 1] > alpha[0, 0, 0, 0])
        True
    """
    log_alpha = spatial_log_distribution(cams, temperature, mask, scale)
    return log_alpha.exp().reshape(cams.shape).to(cams.dtype)


def global_average_pool(cams: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of each class map over its valid positions: the ``tau -> inf`` limit.

    Args:
        cams: class activations.
        mask: optional validity mask.

    Returns:
        Pooled scores in the dtype of ``cams``.

    Shape:
        - cams: :math:`(B, C, H, W)`
        - output: :math:`(B, C)`

    Example:
        >>> import torch, seedkit
        >>> seedkit.losses.global_average_pool(torch.arange(4.0).reshape(1, 1, 2, 2))
        tensor([[1.5000]])
    """
    cams = check_cams("cams", cams, values=False)
    given = mask
    mask = check_mask("mask", mask, cams, values=False)
    pooled = _average(cams, mask)
    flags = (nonfinite_flag(pooled), mask_flag(given, mask))
    verify("seedkit.losses.global_average_pool", flags, _diagnose_cams, cams, given)
    return pooled


def _average(cams: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Masked mean over positions; non-finite wherever an input value is (``0 * inf`` is NaN)."""
    flat, valid = flatten_maps(cams, mask)
    if valid is None:
        return flat.mean(dim=2).to(cams.dtype)
    weights = valid.to(flat.dtype)
    pooled = (flat * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)
    return pooled.to(cams.dtype)


def temperature_pool_reference(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "raw",
) -> torch.Tensor:
    """Plain autograd composition of :func:`temperature_pool` (softmax, multiply, sum).

    Kept as the reference the fused kernels are checked and benchmarked against.
    """
    cams = check_cams("cams", cams, values=False)
    temperature = check_temperature("temperature", temperature)
    check_choice("scale", scale, _SCALES)
    given = mask
    mask = check_mask("mask", mask, cams, values=False)
    pooled = _pool_reference(cams, temperature, mask, scale)
    flags = (nonfinite_flag(pooled), mask_flag(given, mask))
    verify("seedkit.losses.temperature_pool_reference", flags, _diagnose_cams, cams, given)
    return pooled


def _pool_reference(
    cams: torch.Tensor, temperature: float, mask: torch.Tensor | None, scale: str
) -> torch.Tensor:
    flat, valid = flatten_maps(cams, mask)
    # alpha is exactly 0 at masked positions, so a finite value there adds 0 and a
    # non-finite one makes the row NaN (what the value checks read, see _pool).
    return pool_flat(flat, valid, temperature, scale).to(cams.dtype)


def _pool(
    cams: torch.Tensor, temperature: float, mask: torch.Tensor | None, scale: str
) -> torch.Tensor:
    """Temperature pooling through the chosen backend, on checked arguments.

    Every backend returns a non-finite score for a row that holds a NaN or an
    infinity anywhere (masked positions included) or that is fully masked, so
    checking the ``(B, C)`` result replaces a pass over the input.
    """
    backend = resolve_backend(cams)
    if backend == "reference":
        return _pool_reference(cams, temperature, mask, scale)
    valid = None if mask is None else mask.flatten(2)
    pooled = fused_temperature_pool(cams.flatten(2), valid, temperature, scale, backend=backend)
    return pooled.to(cams.dtype)


def temperature_pool(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "raw",
) -> torch.Tensor:
    """Normalised expected activation ``s_c = sum_n alpha_c(n) A_c(n)``.

    Runs from global average pooling (``tau -> inf``) to global max pooling
    (``tau -> 0+``), is non-increasing in ``tau``, shifts with a constant added
    to a class map and ignores the order of positions.

    Dispatches through :mod:`seedkit.kernels`: the Triton kernels for CUDA
    tensors (once they passed their self-check there), the compiled fused path
    for CPU maps of at least ``seedkit.kernels.AUTO_MIN_NUMEL_CPU`` elements
    (both keep no ``(B, C, H*W)`` softmax for backward), the plain
    :func:`temperature_pool_reference` otherwise; ``set_backend("reference")``
    or ``SEEDKIT_KERNELS=reference`` forces the reference everywhere. The value
    checks read the ``(B, C)`` result, not the map (see
    :func:`seedkit.set_input_checks`).

    Args:
        cams: class activations (CAM logits).
        temperature: softmax temperature ``tau > 0``.
        mask: optional validity mask; masked positions never contribute.
        scale: ``"raw"`` or ``"max"`` (scale-free temperature), see
            :func:`spatial_activation_distribution`.

    Returns:
        Pooled class scores (logits) in the dtype of ``cams``.

    Shape:
        - cams: :math:`(B, C, H, W)`
        - mask: :math:`(B, 1, H, W)` or :math:`(B, H, W)`
        - output: :math:`(B, C)`

    Example:
        >>> import torch, seedkit
        >>> cams = torch.tensor([[[[0.0, 0.0], [0.0, 4.0]]]])
        >>> seedkit.temperature_pool(cams, temperature=1000.0)  # ~ average
        tensor([[1.0030]])
        >>> seedkit.temperature_pool(cams, temperature=0.01)  # ~ maximum
        tensor([[4.]])
    """
    cams = check_cams("cams", cams, values=False)
    temperature = check_temperature("temperature", temperature)
    check_choice("scale", scale, _SCALES)
    given = mask
    mask = check_mask("mask", mask, cams, values=False)
    pooled = _pool(cams, temperature, mask, scale)
    # One flag from the (B, C) result instead of a pass over the map (see _pool).
    flags = (nonfinite_flag(pooled), mask_flag(given, mask))
    verify("seedkit.temperature_pool", flags, _diagnose_cams, cams, given)
    return pooled


def seeds_from_cams(
    cams: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Turn class activations into seed maps in ``[0, 1]``, zero for absent classes.

    Two forms:

    - ``temperature=None`` (default): the standard max-normalised ReLU form of
      psa / IRN / MCTformer, ``relu(A) / (max relu(A) + 1e-5)``.
    - ``temperature=tau``: the temperature form ``exp((A - max A) / tau)``,
      i.e. ``alpha / max alpha``. In seedkit's first measurement it made worse
      seeds than the max-normalised form (the Seeds section of the Method page),
      so it is opt-in.

    Args:
        cams: class activations.
        labels: multi-hot image labels; absent classes get all-zero seeds.
        temperature: ``None`` for max-normalised seeds, or a temperature ``> 0``.
        mask: optional validity mask; masked positions get 0.

    Returns:
        Seeds in the dtype of ``cams``.

    Shape:
        - cams: :math:`(B, C, H, W)`
        - labels: :math:`(B, C)`
        - output: :math:`(B, C, H, W)`

    Example:
        >>> import torch, seedkit
        >>> cams = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
        >>> seeds = seedkit.seeds_from_cams(cams, torch.tensor([[1.0, 0.0]]))
        >>> [round(v, 4) for v in seeds[0, 0, 0].tolist()], seeds[0, 1].abs().sum().item()
        ([0.5, 1.0], 0.0)
    """
    cams = check_cams("cams", cams)
    labels = check_labels("labels", labels, cams)
    mask = check_mask("mask", mask, cams)
    flat, valid = flatten_maps(cams, mask)
    if temperature is None:
        seeds = max_normalize(flat, valid)
    else:
        temperature = check_temperature("temperature", temperature)
        logits = scaled_logits(flat, valid, temperature, "raw")
        seeds = torch.exp(logits - logits.amax(dim=2, keepdim=True))
    seeds = seeds * labels.to(seeds.dtype).unsqueeze(-1)
    return seeds.reshape(cams.shape).to(cams.dtype)
