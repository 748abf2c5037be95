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

import math
from collections.abc import Callable
from typing import Literal

import torch

from seedkit.checks import (
    check_cams,
    check_choice,
    check_labels,
    check_mask,
    check_temperature,
    flags_read_now,
    mask_flag,
    nonfinite_flag,
    verify,
)
from seedkit.kernels import pool_rows, resolve_backend
from seedkit.reference import (
    SCALES,
    flatten_maps,
    max_normalize,
    neff_fraction,
    scaled_logits,
)

__all__ = [
    "ActivationScale",
    "effective_fraction",
    "global_average_pool",
    "seeds_from_cams",
    "spatial_activation_distribution",
    "spatial_log_distribution",
    "temperature_pool",
]

#: How a temperature relates to the activations: ``"std"`` (default, scale-free: in
#: units of each map's spatial spread), ``"max"`` (in units of its maximum magnitude)
#: or ``"raw"`` (in logit units). See :func:`seedkit.reference.scale_divisor`.
ActivationScale = Literal["raw", "max", "std"]
_SCALES = SCALES


def cams_checks(cams: torch.Tensor, mask: torch.Tensor | None) -> tuple:
    """The value checks of ``(cams, mask)`` for :func:`seedkit.checks.verify`."""
    return (("cams", "finite", cams), ("mask", "mask", mask))


def spatial_log_distribution(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "std",
) -> torch.Tensor:
    """Log of :func:`spatial_activation_distribution`, flattened, in float32.

    Masked positions hold ``-inf``. Used by the divergences, which need logs
    that are exact where the probability underflows to zero.

    Args:
        cams: class activations.
        temperature: softmax temperature ``tau > 0``.
        mask: optional validity mask, ``True`` where a position is real.
        scale: ``"std"`` (default) first divides each map by its detached spatial
            standard deviation, ``"max"`` by its maximum magnitude, ``"raw"`` not at
            all (see :data:`ActivationScale`).

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
    verify("seedkit.losses.spatial_log_distribution", flags, cams_checks(cams, given))
    return log_alpha


def spatial_activation_distribution(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "std",
) -> torch.Tensor:
    """Softmax of each class map over its spatial positions.

    Args:
        cams: class activations (CAM logits).
        temperature: softmax temperature ``tau > 0``; large spreads, small sharpens.
        mask: optional validity mask (``True`` or 1 = real pixel). Masked positions
            get probability 0 and never influence the others.
        scale: ``"std"`` (default, scale-free: ``tau`` in units of each map's
            detached spatial standard deviation, so ``A`` and ``c A + b`` give the same
            distribution), ``"max"`` (in units of its maximum magnitude) or
            ``"raw"`` (``softmax(A / tau)``, in logit units).

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


def effective_fraction(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "std",
) -> torch.Tensor:
    """How far from global average pooling a temperature pools: ``N_eff / N``.

    ``N_eff = 1 / sum_n alpha_c(n)^2`` is the effective number of positions of the
    pooling weights :func:`spatial_activation_distribution` (Kish's effective
    sample size): ``N_eff / N`` is 1 at GAP (``tau -> inf``) and ``1 / N`` at
    GMP. With the default scale-free ``scale="std"`` it depends on the shape of
    the map only; for a map whose values are Gaussian over positions it is
    ``exp(-1 / tau^2)`` (0.37 at ``tau = 1``, 0.78 at ``tau = 2``); peaked CAMs
    give less. The engine logs it during training (``neff_fraction``).

    Args:
        cams: class activations.
        temperature: softmax temperature ``tau > 0``.
        mask: optional validity mask; ``N`` counts the valid positions.
        scale: ``"std"`` (default), ``"max"`` or ``"raw"``, see
            :func:`spatial_activation_distribution`.

    Returns:
        ``(B, C)`` fractions in ``(0, 1]``, float32 (float64 for float64 input),
        detached.

    Shape:
        - cams: :math:`(B, C, H, W)`
        - output: :math:`(B, C)`

    Example:
        >>> import torch, seedkit
        >>> cams = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
        >>> round(seedkit.losses.effective_fraction(cams, 1e6).item(), 4)  # ~ GAP
        1.0
        >>> round(seedkit.losses.effective_fraction(cams, 1e-3).item(), 4)  # ~ GMP: 1 / N
        0.25
        >>> fraction = seedkit.losses.effective_fraction
        >>> torch.allclose(fraction(10 * cams - 3, 1.0), fraction(cams, 1.0))  # scale-free
        True
    """
    cams = check_cams("cams", cams)
    temperature = check_temperature("temperature", temperature)
    check_choice("scale", scale, _SCALES)
    mask = check_mask("mask", mask, cams)
    flat, valid = flatten_maps(cams.detach(), mask)
    alpha = torch.softmax(scaled_logits(flat, valid, temperature, scale), dim=2)
    return neff_fraction(alpha, valid)


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
    pooled = _safe_average(cams, mask)
    flags = (nonfinite_flag(pooled), mask_flag(given, mask))
    verify("seedkit.losses.global_average_pool", flags, cams_checks(cams, given))
    return pooled


def _average(cams: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Masked mean over positions; non-finite wherever an input value is (``0 * inf`` is NaN)."""
    flat, valid = flatten_maps(cams, mask)
    if valid is None:
        return flat.mean(dim=2).to(cams.dtype)
    weights = valid.to(flat.dtype)
    pooled = (flat * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)
    return pooled.to(cams.dtype)


def _times_power_of_two(tensor: torch.Tensor, exponent: int) -> torch.Tensor:
    """``tensor * 2**exponent``, exact (barring subnormals), in two factors that stay finite."""
    half = exponent // 2
    return tensor * math.ldexp(1.0, half) * math.ldexp(1.0, exponent - half)


def _overflow_safe(
    pool: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    cams: torch.Tensor,
    mask: torch.Tensor | None,
    pool_row: Callable[[torch.Tensor, torch.Tensor | None, int], torch.Tensor],
) -> torch.Tensor:
    """``pool(cams, mask)``, with the ``(b, c)`` scores that overflowed from a finite map redone.

    Pooling is homogeneous: ``pool(A) = s * pool(A / s)`` (with ``tau / s`` for the
    raw temperature), so such a map is pooled as ``A / 2**e`` with ``|A| < 2**e``
    by ``pool_row(row, row_mask, e)`` and the result scaled back: the finite value
    of the formula where ``A / tau`` or a sum overflowed. A non-finite map or a
    fully masked row stays non-finite for the value checks. CUDA results are
    looked at only in ``"immediate"`` mode (no host synchronisation otherwise).
    """
    pooled = pool(cams, mask)
    if not flags_read_now(pooled):
        return pooled
    overflowed = ~torch.isfinite(pooled)
    if not bool(overflowed.any()):
        return pooled
    redo = []
    for b, c in overflowed.nonzero().tolist():
        row_mask = None if mask is None else mask[b : b + 1]
        finite = bool(torch.isfinite(cams[b, c]).all())
        if finite and (row_mask is None or bool(row_mask.any())):
            redo.append((b, c))
    if not redo:
        return pooled
    # Pool again with those maps zeroed, so no overflow is left in the graph (its
    # backward would turn the zero gradient of a replaced score into NaN).
    zeroed = torch.zeros_like(overflowed)
    for b, c in redo:
        zeroed[b, c] = True
    pooled = pool(cams.masked_fill(zeroed[:, :, None, None], 0.0), mask).clone()
    for b, c in redo:
        row = cams[b : b + 1, c : c + 1]
        exponent = int(torch.frexp(row.detach().abs().amax().double()).exponent)
        row_mask = None if mask is None else mask[b : b + 1]
        # Values through the scaled map; gradients as they are, d pool(A) / dA being
        # d pool(a) / da (pooling is homogeneous of degree 1): scaling the gradient by
        # 2**e and back would overflow it.
        scaled_row = _times_power_of_two(row.detach(), -exponent) + (row - row.detach())
        value = pool_row(scaled_row, row_mask, exponent).reshape(())
        back = _times_power_of_two(value.detach(), exponent) + (value - value.detach())
        pooled[b, c] = back.to(pooled.dtype)
    return pooled


def _rescaled_temperature(temperature: float, exponent: int, scale: str) -> float:
    """The temperature of a map divided by ``2**exponent``, kept where ``A / tau`` is finite."""
    if scale == "raw":  # the scale-free forms are homogeneous in A: their tau stays
        temperature = math.ldexp(temperature, -exponent)
    # Below 1e-30 (relative to |A| <= 1) the softmax is already one-hot at the maximum:
    # values near it differ by at least one ulp, far more than 1e-30.
    return max(temperature, 1e-30)


def _safe_average(cams: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """:func:`_average` with overflowed rows redone (see :func:`_overflow_safe`)."""
    return _overflow_safe(_average, cams, mask, lambda row, row_mask, _: _average(row, row_mask))


def _safe_pool(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None,
    scale: str,
    backend: str | None = None,
) -> torch.Tensor:
    """Temperature pooling on checked arguments, through one backend, overflowed rows redone.

    Every backend returns a non-finite score for a row that holds a NaN or an
    infinity anywhere (masked positions included) or that is fully masked, so
    checking the ``(B, C)`` result replaces a pass over the input.
    """
    backend = resolve_backend(cams) if backend is None else backend

    def pool(
        maps: torch.Tensor, valid: torch.Tensor | None, tau: float = temperature
    ) -> torch.Tensor:
        flat_valid = None if valid is None else valid.flatten(2)
        return pool_rows(maps.flatten(2), flat_valid, tau, scale, backend).to(maps.dtype)

    def pool_row(row: torch.Tensor, row_mask: torch.Tensor | None, exponent: int) -> torch.Tensor:
        return pool(row, row_mask, _rescaled_temperature(temperature, exponent, scale))

    return _overflow_safe(pool, cams, mask, pool_row)


def temperature_pool_reference(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "std",
) -> torch.Tensor:
    """Plain autograd composition of :func:`temperature_pool` (softmax, multiply, sum).

    Kept as the reference the fused kernels are checked and benchmarked against:
    :func:`temperature_pool` with the ``"reference"`` backend.
    """
    cams = check_cams("cams", cams, values=False)
    temperature = check_temperature("temperature", temperature)
    check_choice("scale", scale, _SCALES)
    given = mask
    mask = check_mask("mask", mask, cams, values=False)
    pooled = _safe_pool(cams, temperature, mask, scale, "reference")
    flags = (nonfinite_flag(pooled), mask_flag(given, mask))
    verify("seedkit.losses.temperature_pool_reference", flags, cams_checks(cams, given))
    return pooled


def temperature_pool(
    cams: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "std",
) -> torch.Tensor:
    """Normalised expected activation ``s_c = sum_n alpha_c(n) A_c(n)``.

    Runs from global average pooling (``tau -> inf``) to global max pooling
    (``tau -> 0+``), is non-increasing in ``tau``, shifts with a constant added
    to a class map and ignores the order of positions.

    Dispatches once through :mod:`seedkit.kernels`: by default the ``"eager"``
    fused autograd function (no compilation; it keeps only the softmax for
    backward), the Triton kernels for CUDA tensors when ``triton`` imports;
    ``seedkit.kernels.set_backend("fused")`` compiles the fastest CPU path,
    ``"reference"`` (or ``SEEDKIT_KERNELS=reference``) forces the plain
    :func:`temperature_pool_reference`. The value checks read the ``(B, C)``
    result, not the map (see :func:`seedkit.set_input_checks`); under
    ``torch.compile`` they are skipped and the plain composition is traced.

    Args:
        cams: class activations (CAM logits).
        temperature: softmax temperature ``tau > 0``.
        mask: optional validity mask; masked positions never contribute.
        scale: ``"std"`` (default), ``"max"`` or ``"raw"``, see
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
        tensor([[1.0017]])
        >>> seedkit.temperature_pool(cams, temperature=0.01)  # ~ maximum
        tensor([[4.]])
    """
    cams = check_cams("cams", cams, values=False)
    temperature = check_temperature("temperature", temperature)
    check_choice("scale", scale, _SCALES)
    given = mask
    mask = check_mask("mask", mask, cams, values=False)
    pooled = _safe_pool(cams, temperature, mask, scale)
    # One flag from the (B, C) result instead of a pass over the map (see _safe_pool).
    flags = (nonfinite_flag(pooled), mask_flag(given, mask))
    verify("seedkit.temperature_pool", flags, cams_checks(cams, given))
    return pooled


def seeds_from_cams(
    cams: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | None = None,
    mask: torch.Tensor | None = None,
    scale: ActivationScale = "std",
) -> torch.Tensor:
    """Turn class activations into seed maps in ``[0, 1]``, zero for absent classes.

    Two forms:

    - ``temperature=None`` (default): the standard max-normalised ReLU form of
      psa / IRN / MCTformer, ``relu(A) / (max relu(A) + 1e-5)``.
    - ``temperature=tau``: the temperature form ``alpha / max alpha``, i.e.
      ``exp((A - max A) / (d tau))`` with ``d`` the map's spread for the default
      ``scale="std"`` (1 for ``"raw"``). In seedkit's first measurement it made worse
      seeds than the max-normalised form (the Seeds section of the Method page),
      so it is opt-in.

    Args:
        cams: class activations.
        labels: multi-hot image labels; absent classes get all-zero seeds.
        temperature: ``None`` for max-normalised seeds, or a temperature ``> 0``.
        mask: optional validity mask; masked positions get 0.
        scale: the temperature form's scale, see :func:`spatial_activation_distribution`.

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
        check_choice("scale", scale, _SCALES)
        logits = scaled_logits(flat, valid, temperature, scale)
        seeds = torch.exp(logits - logits.amax(dim=2, keepdim=True))
    seeds = seeds * labels.to(seeds.dtype).unsqueeze(-1)
    return seeds.reshape(cams.shape).to(cams.dtype)
