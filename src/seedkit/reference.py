"""Plain reference math of the losses, on flattened activations, without input checks.

The bottom layer that both :mod:`seedkit.losses` (the checked public functions)
and :mod:`seedkit.kernels` (whose ``"reference"`` backend is this math) import,
so the two never import each other's internals. Every function takes
activations flattened to ``(B, C, N)`` and an optional ``(B, 1, N)`` boolean
validity mask ``valid`` (``None``: every position is valid) and assumes its
arguments were checked by the caller (see the Method page of the docs for the
formulas).

Example:
    >>> import torch
    >>> from seedkit import reference
    >>> flat = torch.tensor([[[0.0, 0.0, 0.0, 4.0]]])
    >>> reference.temperature_pool_flat(flat, None, 0.01, "raw")
    tensor([[4.]])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "MAX_NORM_EPS",
    "SCALES",
    "flatten_maps",
    "kl_consistency",
    "kl_divergence",
    "log_distribution",
    "max_normalize",
    "neff_fraction",
    "scale_divisor",
    "scaled_logits",
    "temperature_pool_flat",
    "upcast",
]

#: psa / IRN add this to the per-class maximum when max-normalising CAMs.
MAX_NORM_EPS = 1e-5

#: How a temperature relates to the activations (see :func:`scale_divisor`).
SCALES: tuple[str, ...] = ("raw", "max", "std")

# The "std" divisor of a constant map (spread exactly 0) is this fraction of its
# magnitude instead: all its logits are equal (a uniform distribution) and stay finite.
_FLAT_FRACTION = 2.0**-100


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Return ``tensor`` in the dtype the arithmetic runs in: float64 stays, the rest is float32."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def flatten_maps(
    cams: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return upcast ``(B, C, N)`` activations and a ``(B, 1, N)`` validity mask.

    Args:
        cams: class activations ``(B, C, H, W)``.
        mask: ``(B, 1, H, W)`` boolean validity mask, or ``None``.

    Returns:
        ``(flat, valid)``; ``valid`` is ``None`` when ``mask`` is.
    """
    flat = upcast(cams).flatten(2)
    valid = None if mask is None else mask.flatten(2)
    return flat, valid


def scale_divisor(
    flat: torch.Tensor, valid: torch.Tensor | None, scale: str
) -> torch.Tensor | None:
    """The detached per-row number the activations are divided by before ``/ tau``.

    - ``"raw"``: none (``None``): ``tau`` is in the units of the logits.
    - ``"max"``: the maximum magnitude ``max_n |A(n)|`` (at least 1e-6).
    - ``"std"``: the spatial standard deviation of the map over its valid
      positions. Softmax ignores a constant, so this is the standardised map
      ``(A - mean) / std``: the distribution of ``c A + b`` equals that of ``A``
      for every ``c > 0`` and ``b``, and ``tau`` is in units of the map's own
      spread (see the Method page of the docs). A constant map (spread 0) gets
      ``2**-100 max|A|``: equal, finite logits, a uniform distribution.

    The spread is computed in two passes (the mean, then the root mean square of
    the deviations) on the map divided by its maximum magnitude, so it neither
    overflows near the float maximum nor loses precision to a large mean; every
    backend of :mod:`seedkit.kernels` uses this function.

    Args:
        flat: activations ``(B, C, N)``.
        valid: ``(B, 1, N)`` boolean mask or ``None``.
        scale: one of :data:`SCALES`.

    Returns:
        ``(B, C, 1)`` detached divisors, or ``None`` for ``"raw"``.
    """
    if scale == "raw":
        return None
    a = flat.detach()
    work = a.abs()
    if valid is not None:
        work = work.masked_fill_(~valid, 0.0)
    largest = work.amax(dim=2, keepdim=True)
    if scale == "max":
        return largest.clamp_min(1e-6)
    tiny = torch.finfo(a.dtype).tiny
    # The map in units of its magnitude (no overflow near the float maximum), in place.
    unit = torch.mul(a, largest.clamp_min(tiny).reciprocal(), out=work)
    if valid is None:
        unit = unit.sub_(unit.mean(dim=2, keepdim=True))
        root_count: torch.Tensor | float = math.sqrt(a.shape[2])
    else:
        count = valid.sum(dim=2, keepdim=True).clamp_min(1).to(a.dtype)
        unit = unit.masked_fill_(~valid, 0.0)
        unit = unit.sub_(unit.sum(dim=2, keepdim=True) / count).masked_fill_(~valid, 0.0)
        root_count = count.sqrt()
    spread = torch.linalg.vector_norm(unit, 2, dim=2, keepdim=True) / root_count
    return torch.maximum(spread * largest, (largest * _FLAT_FRACTION).clamp_min(tiny))


def scaled_logits(
    flat: torch.Tensor, valid: torch.Tensor | None, temperature: float, scale: str
) -> torch.Tensor:
    """Return ``A / (d * tau)`` with masked positions at ``-inf``.

    Args:
        flat: activations ``(B, C, N)``.
        valid: ``(B, 1, N)`` boolean mask or ``None``.
        temperature: ``tau > 0``.
        scale: one of :data:`SCALES`; ``d`` is its :func:`scale_divisor` (1 for
            ``"raw"``).

    Returns:
        The logits, ``(B, C, N)``.
    """
    logits = flat
    divisor = scale_divisor(flat, valid, scale)
    if divisor is not None:
        # Scale-free forms: tau means the same however large the logits have grown.
        logits = flat / divisor
    logits = logits / temperature
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    return logits


def log_distribution(
    flat: torch.Tensor, valid: torch.Tensor | None, temperature: float, scale: str
) -> torch.Tensor:
    """Log-softmax over positions of :func:`scaled_logits` (``-inf`` at masked positions)."""
    return torch.log_softmax(scaled_logits(flat, valid, temperature, scale), dim=2)


def temperature_pool_flat(
    flat: torch.Tensor, valid: torch.Tensor | None, temperature: float, scale: str
) -> torch.Tensor:
    """Return ``s_c = sum_n softmax_n(logits)_n A_c(n)``, ``(B, C)``, in the dtype of ``flat``.

    The softmax weight is exactly 0 at masked positions, so a finite value there
    adds 0 and a non-finite one makes the row NaN (what the value checks read).
    """
    alpha = torch.softmax(scaled_logits(flat, valid, temperature, scale), dim=2)
    return (alpha * flat).sum(dim=2)


def neff_fraction(alpha: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``N_eff / N`` of distributions over positions: ``1 / (N sum_n alpha(n)^2)``.

    The effective number of positions ``N_eff`` (Kish's effective sample size,
    the inverse participation ratio) is ``N`` for a uniform distribution (global
    average pooling) and 1 for a one-hot one (global max pooling).

    Args:
        alpha: distributions ``(B, C, N)`` summing to 1 over ``N`` (0 where masked).
        valid: ``(B, 1, N)`` boolean mask or ``None``; ``N`` counts valid positions.

    Returns:
        ``(B, C)`` fractions in ``(0, 1]``.
    """
    count = alpha.shape[2] if valid is None else valid.sum(dim=2).clamp_min(1).to(alpha.dtype)
    return 1.0 / ((alpha * alpha).sum(dim=2) * count)


def kl_divergence(
    log_p: torch.Tensor, log_q: torch.Tensor, valid: torch.Tensor | None
) -> torch.Tensor:
    """``sum_n p (log p - log q)`` with ``0 log 0 = 0`` and masked positions skipped."""
    p = log_p.exp()
    keep = p > 0
    if valid is not None:
        keep = keep & valid
    # Mask the difference itself, not the product: -inf - -inf is NaN at masked positions,
    # and a NaN anywhere in a product poisons its gradient even where where() discards it.
    difference = torch.where(keep, log_p - log_q, torch.zeros_like(log_p))
    return (p * difference).sum(dim=2)


def kl_consistency(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor | None,
    temperature: float,
    teacher_temperature: float,
    scale: str,
) -> torch.Tensor:
    """Per-row ``KL(softmax(T / tau_t) || softmax(S / tau_s))``, ``(B, C)``."""
    log_student = log_distribution(student, valid, temperature, scale)
    log_teacher = log_distribution(teacher, valid, teacher_temperature, scale)
    return kl_divergence(log_teacher, log_student, valid)


def max_normalize(flat: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The psa / IRN max-normalised ReLU maps ``relu(A) / (max relu(A) + 1e-5)``, 0 where masked."""
    positive = F.relu(flat)
    if valid is not None:
        positive = positive.masked_fill(~valid, 0.0)
    return positive / (positive.amax(dim=2, keepdim=True) + MAX_NORM_EPS)
