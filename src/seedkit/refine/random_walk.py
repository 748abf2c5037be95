"""Random-walk propagation of seed scores on a pixel-affinity graph (PSA / IRN style).

Affinities ``a(p, q)`` in ``[0, 1]`` between pixels of a (downsampled) grid are
raised to the power ``beta`` and row-normalised into a transition matrix
``T(p, q) = a(p, q)^beta / sum_q' a(p, q')^beta``. Class scores ``P`` (one
probability vector per pixel) are propagated by ``P <- T P`` for
``2 ** exp_times`` steps, which is what PSA (``logt = 8``) and IRN
(``exp_times = 8``) compute by squaring the transition matrix ``exp_times``
times. Each step replaces a pixel's vector by a convex combination of its
neighbours' vectors, so per-pixel probabilities stay normalised.

Two representations are offered:

- *local* (the one the pipeline uses): affinities to the neighbours within a
  radius, ``(B, K, h, w)`` for the ``K`` offsets of :func:`local_offsets`. The
  walk is ``O(steps * h * w * K * C)`` and never builds an ``N x N`` matrix;
- *dense*: an ``(N, N)`` affinity matrix, for tests and small graphs.
"""

from __future__ import annotations

import functools
import warnings

import torch

from seedkit.checks import check_int, check_number
from seedkit.errors import InvalidValueError, ShapeError

__all__ = [
    "IRN_BETA",
    "IRN_EXP_TIMES",
    "PSA_BETA",
    "PSA_LOGT",
    "background_scores",
    "dense_random_walk",
    "dense_transition_matrix",
    "local_offsets",
    "local_transition",
    "random_walk",
    "shift2d",
]

#: PSA's ``beta`` (``infer_aff.py``) and ``logt`` (``2 ** logt`` walk steps).
PSA_BETA = 8.0
PSA_LOGT = 8
#: IRN's ``beta`` and ``exp_times`` (``make_sem_seg_labels.py``).
IRN_BETA = 10.0
IRN_EXP_TIMES = 8


@functools.lru_cache(maxsize=16)
def local_offsets(radius: int, half: bool = False) -> tuple[tuple[int, int], ...]:
    """Offsets ``(dy, dx)`` with ``dy^2 + dx^2 < radius^2``.

    Args:
        radius: neighbourhood radius in grid cells (PSA / IRN use 5).
        half: only one offset of each pair ``d, -d`` and no ``(0, 0)``
            (``dy > 0``, or ``dy == 0`` and ``dx > 0``), as PSA's training pairs;
            otherwise the full symmetric set, ``(0, 0)`` first.

    Returns:
        The offsets, deterministic order.

    Example:
        >>> local_offsets(2)
        ((0, 0), (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
        >>> local_offsets(2, half=True)
        ((0, 1), (1, -1), (1, 0), (1, 1))
    """
    radius = check_int("radius", radius, 1)
    offsets = [
        (dy, dx)
        for dy in range(-radius + 1, radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius
    ]
    if half:
        return tuple((dy, dx) for dy, dx in offsets if dy > 0 or (dy == 0 and dx > 0))
    offsets.remove((0, 0))
    return ((0, 0), *offsets)


def shift2d(tensor: torch.Tensor, dy: int, dx: int, fill: float = 0.0) -> torch.Tensor:
    """``out[..., y, x] = tensor[..., y + dy, x + dx]`` where inside, else ``fill``.

    Example:
        >>> shift2d(torch.arange(3.0).view(1, 3), 0, 1).tolist()
        [[1.0, 2.0, 0.0]]
    """
    height, width = tensor.shape[-2:]
    out = torch.full_like(tensor, fill)
    ys, yd = (
        (slice(dy, height), slice(0, height - dy))
        if dy >= 0
        else (slice(0, height + dy), slice(-dy, height))
    )
    xs, xd = (
        (slice(dx, width), slice(0, width - dx))
        if dx >= 0
        else (slice(0, width + dx), slice(-dx, width))
    )
    out[..., yd, xd] = tensor[..., ys, xs]
    return out


def _check_beta(beta: float) -> float:
    return check_number("beta", beta, 0, strict_minimum=True)


def _check_steps(exp_times: int | None, steps: int | None) -> int:
    if steps is not None:
        return check_int("steps", steps, 0)
    return 2 ** check_int("exp_times", exp_times, 0, 16)


def local_transition(
    affinity: torch.Tensor, offsets: tuple[tuple[int, int], ...], beta: float = IRN_BETA
) -> torch.Tensor:
    """Row-normalised transition weights from local affinities.

    Affinities of neighbours outside the grid must be 0 (:func:`shift2d`'s
    fill); the self-affinity (offset ``(0, 0)``) is set to 1, so every row
    has a positive sum.

    Args:
        affinity: ``a(p, p + d_k)`` in ``[0, 1]``.
        offsets: the ``K`` offsets ``d_k`` of the full set (:func:`local_offsets`).
        beta: exponent (IRN 10, PSA 8).

    Returns:
        ``T`` with ``T[:, k].sum over k == 1`` at every pixel.

    Shape:
        - affinity: :math:`(B, K, h, w)`
        - output: :math:`(B, K, h, w)`
    """
    beta = _check_beta(beta)
    if affinity.dim() != 4 or affinity.shape[1] != len(offsets):
        raise ShapeError("affinity", f"(B, K={len(offsets)}, h, w)", tuple(affinity.shape))
    if (0, 0) not in offsets:
        raise InvalidValueError("offsets", "a set containing (0, 0)", offsets[:3])
    weights = affinity.clamp(0.0, 1.0) ** beta
    # outside the grid: zero weight whatever the caller's fill
    mask = torch.stack(
        [shift2d(torch.ones_like(affinity[:, 0]), dy, dx) for dy, dx in offsets], dim=1
    )
    weights = weights * mask
    weights[:, offsets.index((0, 0))] = 1.0
    return weights / weights.sum(dim=1, keepdim=True)


def random_walk(
    scores: torch.Tensor,
    transition: torch.Tensor,
    offsets: tuple[tuple[int, int], ...],
    exp_times: int | None = IRN_EXP_TIMES,
    steps: int | None = None,
) -> torch.Tensor:
    """Propagate scores with local transition weights: ``P <- T P``, ``2 ** exp_times`` times.

    Args:
        scores: per-pixel class scores; probabilities (summing to 1 over ``C``)
            stay probabilities.
        transition: from :func:`local_transition`.
        offsets: the offsets the transition was built with.
        exp_times: walk for ``2 ** exp_times`` steps (IRN 8, PSA ``logt`` 8).
        steps: exact number of steps instead (overrides ``exp_times``).

    Returns:
        The propagated scores.

    Shape:
        - scores: :math:`(B, C, h, w)`
        - transition: :math:`(B, K, h, w)`
        - output: :math:`(B, C, h, w)`

    Example:
        >>> offsets = local_offsets(2)
        >>> T = local_transition(torch.ones(1, len(offsets), 3, 3), offsets)
        >>> P = torch.softmax(torch.randn(1, 2, 3, 3), dim=1)
        >>> out = random_walk(P, T, offsets, exp_times=3)
        >>> bool(torch.allclose(out.sum(1), torch.ones(1, 3, 3)))
        True
    """
    count = _check_steps(exp_times, steps)
    if scores.dim() != 4:
        raise ShapeError("scores", "(B, C, h, w)", tuple(scores.shape))
    batch, channels, height, width = scores.shape
    if transition.shape != (batch, len(offsets), height, width):
        raise ShapeError(
            "transition", f"({batch}, {len(offsets)}, {height}, {width})", tuple(transition.shape)
        )
    # one sparse (B*N x B*N) matrix with K entries per row; out-of-grid neighbours are dropped
    device = scores.device
    nodes = height * width
    index = torch.arange(nodes, device=device, dtype=torch.float64).view(1, height, width)
    neighbours = (
        torch.stack([shift2d(index, dy, dx, fill=-1.0)[0] for dy, dx in offsets])
        .long()
        .view(len(offsets), -1)
    )
    rows = torch.arange(nodes, device=device).expand(len(offsets), nodes)
    inside = neighbours >= 0
    weights = transition.reshape(batch, len(offsets), nodes)
    base = torch.arange(batch, device=device).view(batch, 1) * nodes
    row_index = (rows[inside][None] + base).reshape(-1)
    col_index = (neighbours[inside][None] + base).reshape(-1)
    values = weights[:, inside].reshape(-1)
    with warnings.catch_warnings():  # "sparse CSR support is in beta" and invariant-check notices
        warnings.simplefilter("ignore", UserWarning)
        matrix = (
            torch.sparse_coo_tensor(
                torch.stack([row_index, col_index]),
                values,
                (batch * nodes, batch * nodes),
                check_invariants=False,
            )
            .coalesce()
            .to_sparse_csr()
        )
    state = scores.permute(0, 2, 3, 1).reshape(batch * nodes, channels)
    for _ in range(count):
        state = matrix @ state
    state = state.view(batch, height, width, channels).permute(0, 3, 1, 2)
    return state.contiguous()


def dense_transition_matrix(affinity: torch.Tensor, beta: float = IRN_BETA) -> torch.Tensor:
    """Row-normalised ``a^beta`` of a dense affinity matrix.

    Args:
        affinity: non-negative affinities, rows with a positive sum.
        beta: exponent.

    Returns:
        ``T`` whose rows sum to 1.

    Shape:
        - affinity: :math:`(N, N)` or :math:`(B, N, N)`
        - output: the same

    Example:
        >>> T = dense_transition_matrix(torch.tensor([[1.0, 0.5], [0.5, 1.0]]), beta=1)
        >>> T.sum(-1).tolist()
        [1.0, 1.0]
    """
    beta = _check_beta(beta)
    if affinity.dim() not in (2, 3) or affinity.shape[-1] != affinity.shape[-2]:
        raise ShapeError("affinity", "(N, N) or (B, N, N)", tuple(affinity.shape))
    if bool((affinity < 0).any()):
        raise InvalidValueError("affinity", "non-negative values", f"min {float(affinity.min())}")
    weights = affinity**beta
    total = weights.sum(dim=-1, keepdim=True)
    if bool((total <= 0).any()):
        raise InvalidValueError("affinity", "rows with a positive sum", "a zero row")
    return weights / total


def dense_random_walk(
    scores: torch.Tensor, transition: torch.Tensor, exp_times: int = IRN_EXP_TIMES
) -> torch.Tensor:
    """``T^(2^exp_times) P`` by repeated squaring, as PSA / IRN compute it.

    Shape:
        - scores: :math:`(N, C)` or :math:`(B, N, C)`
        - transition: :math:`(N, N)` or :math:`(B, N, N)`
        - output: like ``scores``
    """
    _check_steps(exp_times, None)
    if scores.shape[-2] != transition.shape[-1]:
        raise ShapeError("scores", f"(..., N={transition.shape[-1]}, C)", tuple(scores.shape))
    power = transition
    for _ in range(exp_times):
        power = power @ power
    return power @ scores


def background_scores(
    foreground: torch.Tensor, mode: str = "threshold", threshold: float = 0.25, alpha: float = 6.0
) -> torch.Tensor:
    """The background plane put in front of the foreground maps before the walk.

    Args:
        foreground: foreground maps in ``[0, 1]``.
        mode: ``"threshold"`` (a constant ``threshold``, IRN's
            ``sem_seg_bg_thres`` 0.25) or ``"power"`` (``(1 - max_c map_c)^alpha``,
            psa's form).
        threshold: the constant of ``"threshold"``.
        alpha: the exponent of ``"power"``.

    Returns:
        ``(B, 1, h, w)``.

    Shape:
        - foreground: :math:`(B, C, h, w)`
    """
    if foreground.dim() != 4:
        raise ShapeError("foreground", "(B, C, h, w)", tuple(foreground.shape))
    if mode == "threshold":
        return foreground.new_full(
            (foreground.shape[0], 1, *foreground.shape[2:]), float(threshold)
        )
    if mode == "power":
        peak = (
            foreground.amax(dim=1, keepdim=True)
            if foreground.shape[1]
            else foreground.new_zeros((foreground.shape[0], 1, *foreground.shape[2:]))
        )
        return (1.0 - peak.clamp(0, 1)) ** float(alpha)
    raise InvalidValueError("mode", "'threshold' or 'power'", mode)
