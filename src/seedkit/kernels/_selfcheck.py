"""The self-check behind :func:`seedkit.kernels.self_check`.

The Triton kernels are hand-written and a GPU toolchain can miscompile or
refuse them; this runs them (or the compiled path) on small inputs against the
float64 reference once per device and dtype, so a broken kernel is found before
it trains a model (Performance page, "Self-check").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import SimpleNamespace

import torch

__all__ = ["run_self_check"]

# (positions, masked, scale): one block, one power-of-two block, several largest blocks.
_CASES: tuple[tuple[int, bool, str], ...] = (
    (37, True, "raw"),
    (300, False, "max"),
    (2100, True, "max"),
    (300, True, "std"),
)
_STUDENT_TAU = 0.7
_TEACHER_TAU = 1.3


def _run(
    function: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = a.clone().requires_grad_()
    out = function(leaf)
    weights = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype, device=out.device)
    (out * weights.reshape(out.shape)).sum().backward()
    return out.detach(), leaf.grad  # type: ignore[return-value]


def _error(actual: torch.Tensor, expected: torch.Tensor, floor: float) -> float:
    """Largest difference relative to the reference's size (at least ``floor``)."""
    actual = actual.detach().to("cpu", torch.float64)
    scale = max(float(expected.abs().max()), floor)
    return float((actual - expected).abs().max()) / scale


def _case(
    impl: SimpleNamespace,
    device: torch.device,
    dtype: torch.dtype,
    case: tuple[int, bool, str],
    generator: torch.Generator,
) -> str | None:
    """Compare both operations, forward and gradient, on one random map: why not, or None."""
    from seedkit.kernels.fused import (
        fused_kl_consistency,
        fused_temperature_pool,
        kl_with,
        pool_with,
    )

    n, masked, scale = case
    a = 3 * torch.randn(2, 3, n, generator=generator, dtype=torch.float64)
    t = 3 * torch.randn(2, 3, n, generator=generator, dtype=torch.float64)
    valid = None
    if masked:
        valid = torch.rand(2, 1, n, generator=generator) > 0.3
        valid[:, :, 0] = True
    here = None if valid is None else valid.to(device)
    pool_args = {"temperature": _STUDENT_TAU, "scale": scale}
    kl_args = {**pool_args, "teacher_temperature": _TEACHER_TAU}
    operations = {
        "pool": (
            partial(pool_with, impl, valid=here, **pool_args),
            partial(fused_temperature_pool, valid=valid, backend="reference", **pool_args),
        ),
        "kl": (
            partial(kl_with, impl, teacher=t.to(device, dtype), valid=here, **kl_args),
            partial(
                fused_kl_consistency, teacher_flat=t, valid=valid, backend="reference", **kl_args
            ),
        ),
    }
    tolerance = 1e-9 if dtype == torch.float64 else 2e-4
    for op, (candidate, reference) in operations.items():
        out, grad = _run(candidate, a.to(device, dtype))
        ref_out, ref_grad = _run(reference, a)
        # The KL cancels terms of the size of the logits (|A| / tau ~ 10 here).
        floor = 10.0 if op == "kl" else 1e-3
        for part, actual, expected, size in (
            ("forward", out, ref_out, floor),
            ("gradient", grad, ref_grad, 1e-3),
        ):
            error = _error(actual, expected, size)
            if not error <= tolerance:  # NaN fails too
                return (
                    f"{op} {part} differs from the reference by {error:.2g} (relative) "
                    f"on a (2, 3, {n}) map, scale={scale!r}, mask={masked}"
                )
    return None


def _carries_nan(impl: SimpleNamespace, device: torch.device, dtype: torch.dtype) -> str | None:
    """A NaN at a masked position must reach its row's result, and only that row.

    The input checks of the losses read non-finite inputs from the ``(B, C)`` result.
    """
    from seedkit.kernels.fused import kl_with, pool_with

    a = torch.linspace(-2.0, 2.0, 2 * 3 * 37, dtype=torch.float64).reshape(2, 3, 37)
    a = a.to(device, dtype)
    valid = torch.ones(2, 1, 37, dtype=torch.bool, device=device)
    valid[0, 0, 5] = False
    a[0, 1, 5] = float("nan")
    with torch.no_grad():
        results = {
            "pool": pool_with(impl, a, valid, 1.0, "raw"),
            "kl": kl_with(impl, a.flip(-1).nan_to_num(), a, valid, 1.0, 1.0, "raw"),
        }
    for op, result in results.items():
        if bool(torch.isfinite(result[0, 1])) or not bool(torch.isfinite(result[1]).all()):
            return f"{op} does not carry a masked NaN into its result (the input checks read it)"
    return None


def run_self_check(backend: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Return ``None`` when ``backend``'s kernels agree with the reference, else why not."""
    from seedkit.kernels.fused import implementation

    generator = torch.Generator().manual_seed(0)
    try:
        impl = implementation(backend, guarded=False)
        for case in _CASES:
            reason = _case(impl, device, dtype, case, generator)
            if reason is not None:
                return reason
        return _carries_nan(impl, device, dtype)
    except Exception as error:  # a compile error, a driver error: fall back, never crash
        lines = str(error).strip().splitlines()
        return f"{type(error).__name__}: {lines[0] if lines else ''}"
