# ruff: noqa: N803  (Triton convention: pointer and size arguments in capitals)
"""Triton kernels for the temperature pooling and the KL consistency loss.

One program per ``(b, c)`` row, looping over the ``N`` positions in blocks with
an online (per-lane) maximum and sum, so nothing of size ``(B, C, N)`` is
written except the gradient. Used automatically for CUDA tensors when
``triton`` imports and the self-check passed; under ``TRITON_INTERPRET=1``
(set before ``triton`` is imported) they also run on CPU tensors, which is how
the test-suite checks them without a GPU. The launchers mirror the functions of
:mod:`seedkit.kernels._math`, with the boolean mask, per-row divisors and
temperatures (built by ``pool_inputs`` / ``kl_inputs``) in place of the
additive mask and per-row inverse.

The first use per device and dtype runs :func:`seedkit.kernels.self_check`
against the reference; a failed check, or an error when a later launch
compiles a new block size, switches that device and dtype to the compiled
or reference path with one warning (the failed call is finished in eager
torch ops). :data:`KERNELS` holds the ``@triton.jit`` functions the launchers
call, by name; replacing an entry takes effect at the next launch, which is
how the tests inject a broken kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
import triton
import triton.language as tl

from seedkit.kernels import _math

__all__ = ["KERNELS", "triton_impl"]

_MAX_BLOCK = 2048


@triton.jit
def _pool_forward_kernel(A, VALID, DIV, TAU, POOLED, PEAK, LOGT, C, N, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    batch = row // C
    dtype = A.dtype.element_ty
    divisor = tl.load(DIV + row)
    tau = tl.load(TAU)
    peak = tl.full([BLOCK], float("-inf"), dtype)
    total = tl.zeros([BLOCK], dtype)
    weighted = tl.zeros([BLOCK], dtype)
    poison = tl.zeros([BLOCK], dtype)
    for start in range(0, N, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < N
        a = tl.load(A + row * N + offsets, mask=inside, other=0.0)
        # 0 for a finite value, NaN for NaN / inf, masked positions included: the
        # result is then non-finite exactly when the input is (the value checks read it).
        poison += a * 0.0
        keep = inside & (tl.load(VALID + batch * N + offsets, mask=inside, other=0) != 0)
        z = tl.where(keep, a / divisor / tau, float("-inf"))
        new_peak = tl.maximum(peak, z)
        # A lane that has seen only masked positions keeps peak -inf: shift by 0 there.
        shift = tl.where(new_peak == float("-inf"), 0.0, new_peak)
        rescale = tl.exp(peak - shift)
        weight = tl.exp(z - shift)
        total = total * rescale + weight
        weighted = weighted * rescale + weight * tl.where(keep, a, 0.0)
        peak = new_peak
    row_peak = tl.max(peak, axis=0)
    factor = tl.exp(peak - row_peak)
    row_total = tl.sum(total * factor, axis=0)
    pooled = tl.sum(weighted * factor, axis=0) / row_total + tl.sum(poison, axis=0)
    tl.store(POOLED + row, pooled)
    tl.store(PEAK + row, row_peak)
    tl.store(LOGT + row, tl.log(row_total))


@triton.jit
def _pool_backward_kernel(
    A, VALID, DIV, TAU, PEAK, LOGT, POOLED, GRAD, OUT, C, N, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    batch = row // C
    divisor = tl.load(DIV + row)
    tau = tl.load(TAU)
    peak = tl.load(PEAK + row)
    log_total = tl.load(LOGT + row)
    pooled = tl.load(POOLED + row)
    grad = tl.load(GRAD + row)
    for start in range(0, N, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < N
        a = tl.load(A + row * N + offsets, mask=inside, other=0.0)
        keep = inside & (tl.load(VALID + batch * N + offsets, mask=inside, other=0) != 0)
        alpha = tl.exp(tl.where(keep, a / divisor / tau, float("-inf")) - peak - log_total)
        out = grad * alpha * (1.0 + tl.where(keep, a - pooled, 0.0) / divisor / tau)
        tl.store(OUT + row * N + offsets, out, mask=inside)


@triton.jit
def _kl_forward_kernel(
    S,
    T,
    VALID,
    SDIV,
    TDIV,
    STAU,
    TTAU,
    KL,
    PEAK_S,
    LOGT_S,
    PEAK_T,
    LOGT_T,
    C,
    N,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    batch = row // C
    dtype = S.dtype.element_ty
    sdiv = tl.load(SDIV + row)
    tdiv = tl.load(TDIV + row)
    stau = tl.load(STAU)
    ttau = tl.load(TTAU)
    s_peak = tl.full([BLOCK], float("-inf"), dtype)
    t_peak = tl.full([BLOCK], float("-inf"), dtype)
    s_total = tl.zeros([BLOCK], dtype)
    t_total = tl.zeros([BLOCK], dtype)
    poison = tl.zeros([BLOCK], dtype)
    # Pass 1: both log-normalisers, online.
    for start in range(0, N, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < N
        keep = inside & (tl.load(VALID + batch * N + offsets, mask=inside, other=0) != 0)
        s = tl.load(S + row * N + offsets, mask=inside, other=0.0)
        t = tl.load(T + row * N + offsets, mask=inside, other=0.0)
        poison += s * 0.0 + t * 0.0  # NaN / inf anywhere makes the result NaN (see the pool)
        zs = tl.where(keep, s / sdiv / stau, float("-inf"))
        zt = tl.where(keep, t / tdiv / ttau, float("-inf"))
        new_s = tl.maximum(s_peak, zs)
        new_t = tl.maximum(t_peak, zt)
        shift_s = tl.where(new_s == float("-inf"), 0.0, new_s)
        shift_t = tl.where(new_t == float("-inf"), 0.0, new_t)
        s_total = s_total * tl.exp(s_peak - shift_s) + tl.exp(zs - shift_s)
        t_total = t_total * tl.exp(t_peak - shift_t) + tl.exp(zt - shift_t)
        s_peak = new_s
        t_peak = new_t
    s_row = tl.max(s_peak, axis=0)
    t_row = tl.max(t_peak, axis=0)
    logt_s = tl.log(tl.sum(s_total * tl.exp(s_peak - s_row), axis=0))
    logt_t = tl.log(tl.sum(t_total * tl.exp(t_peak - t_row), axis=0))
    # Pass 2: sum_n q (log q - log p), skipping masked positions and q == 0.
    kl = tl.zeros([BLOCK], dtype)
    for start in range(0, N, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < N
        keep = inside & (tl.load(VALID + batch * N + offsets, mask=inside, other=0) != 0)
        s = tl.load(S + row * N + offsets, mask=inside, other=0.0)
        t = tl.load(T + row * N + offsets, mask=inside, other=0.0)
        log_p = tl.where(keep, s / sdiv / stau - s_row, 0.0) - logt_s
        log_q = tl.where(keep, t / tdiv / ttau - t_row, 0.0) - logt_t
        q = tl.exp(log_q)
        kl += tl.where(keep & (q > 0), q * (log_q - log_p), 0.0)
    tl.store(KL + row, tl.sum(kl, axis=0) + tl.sum(poison, axis=0))
    tl.store(PEAK_S + row, s_row)
    tl.store(LOGT_S + row, logt_s)
    tl.store(PEAK_T + row, t_row)
    tl.store(LOGT_T + row, logt_t)


@triton.jit
def _kl_backward_kernel(
    S,
    T,
    VALID,
    SDIV,
    TDIV,
    STAU,
    TTAU,
    PEAK_S,
    LOGT_S,
    PEAK_T,
    LOGT_T,
    GRAD,
    OUT,
    C,
    N,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    batch = row // C
    sdiv = tl.load(SDIV + row)
    tdiv = tl.load(TDIV + row)
    stau = tl.load(STAU)
    ttau = tl.load(TTAU)
    peak_s = tl.load(PEAK_S + row)
    logt_s = tl.load(LOGT_S + row)
    peak_t = tl.load(PEAK_T + row)
    logt_t = tl.load(LOGT_T + row)
    grad = tl.load(GRAD + row)
    for start in range(0, N, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < N
        keep = inside & (tl.load(VALID + batch * N + offsets, mask=inside, other=0) != 0)
        s = tl.load(S + row * N + offsets, mask=inside, other=0.0)
        t = tl.load(T + row * N + offsets, mask=inside, other=0.0)
        p = tl.exp(tl.where(keep, s / sdiv / stau, float("-inf")) - peak_s - logt_s)
        q = tl.exp(tl.where(keep, t / tdiv / ttau, float("-inf")) - peak_t - logt_t)
        tl.store(OUT + row * N + offsets, grad * (p - q) / sdiv / stau, mask=inside)


#: The Triton kernels the launchers call, by name (replace one to test the self-check).
KERNELS: dict[str, Any] = {
    "pool_forward": _pool_forward_kernel,
    "pool_backward": _pool_backward_kernel,
    "kl_forward": _kl_forward_kernel,
    "kl_backward": _kl_backward_kernel,
}


def _block(n: int) -> int:
    return min(triton.next_power_of_2(n), _MAX_BLOCK)


def _rows(a: torch.Tensor) -> torch.Tensor:
    return torch.empty(a.shape[0], a.shape[1], 1, dtype=a.dtype, device=a.device)


def _bytes(valid: torch.Tensor) -> torch.Tensor:
    return valid.contiguous().view(torch.uint8)


def pool_forward(
    a: torch.Tensor, valid: torch.Tensor, divisor: torch.Tensor, tau: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton twin of :func:`seedkit.kernels._math.pool_forward`."""
    a = a.contiguous()
    batch, classes, n = a.shape
    pooled, peak, log_total = _rows(a), _rows(a), _rows(a)
    KERNELS["pool_forward"][(batch * classes,)](
        a,
        _bytes(valid),
        divisor.contiguous(),
        tau,
        pooled,
        peak,
        log_total,
        classes,
        n,
        BLOCK=_block(n),
    )
    return pooled, peak, log_total


def pool_backward(
    a: torch.Tensor,
    valid: torch.Tensor,
    divisor: torch.Tensor,
    tau: torch.Tensor,
    peak: torch.Tensor,
    log_total: torch.Tensor,
    pooled: torch.Tensor,
    grad: torch.Tensor,
) -> torch.Tensor:
    """Triton twin of :func:`seedkit.kernels._math.pool_backward`."""
    a = a.contiguous()
    batch, classes, n = a.shape
    out = torch.empty_like(a)
    KERNELS["pool_backward"][(batch * classes,)](
        a,
        _bytes(valid),
        divisor.contiguous(),
        tau,
        peak,
        log_total,
        pooled,
        grad.contiguous(),
        out,
        classes,
        n,
        BLOCK=_block(n),
    )
    return out


def kl_forward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    student_divisor: torch.Tensor,
    teacher_divisor: torch.Tensor,
    student_tau: torch.Tensor,
    teacher_tau: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Triton twin of :func:`seedkit.kernels._math.kl_forward`."""
    student, teacher = student.contiguous(), teacher.contiguous()
    batch, classes, n = student.shape
    outputs = tuple(_rows(student) for _ in range(5))
    KERNELS["kl_forward"][(batch * classes,)](
        student,
        teacher,
        _bytes(valid),
        student_divisor.contiguous(),
        teacher_divisor.contiguous(),
        student_tau,
        teacher_tau,
        *outputs,
        classes,
        n,
        BLOCK=_block(n),
    )
    return outputs


def kl_backward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    student_divisor: torch.Tensor,
    teacher_divisor: torch.Tensor,
    student_tau: torch.Tensor,
    teacher_tau: torch.Tensor,
    peak_s: torch.Tensor,
    log_total_s: torch.Tensor,
    peak_t: torch.Tensor,
    log_total_t: torch.Tensor,
    grad: torch.Tensor,
) -> torch.Tensor:
    """Triton twin of :func:`seedkit.kernels._math.kl_backward`."""
    student, teacher = student.contiguous(), teacher.contiguous()
    batch, classes, n = student.shape
    out = torch.empty_like(student)
    KERNELS["kl_backward"][(batch * classes,)](
        student,
        teacher,
        _bytes(valid),
        student_divisor.contiguous(),
        teacher_divisor.contiguous(),
        student_tau,
        teacher_tau,
        peak_s,
        log_total_s,
        peak_t,
        log_total_t,
        grad.contiguous(),
        out,
        classes,
        n,
        BLOCK=_block(n),
    )
    return out


def _max_magnitude(a: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    magnitude = a.detach().abs()
    if valid is not None:
        magnitude = torch.where(valid, magnitude, 0.0)
    return magnitude.amax(dim=2, keepdim=True).clamp_min(1e-6)


def _valid_or_all(valid: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor:
    if valid is not None:
        return valid
    return torch.ones(a.shape[0], 1, a.shape[2], dtype=torch.bool, device=a.device)


def _divisor_or_one(divisor: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor:
    if divisor is not None:
        return divisor
    return torch.ones(a.shape[0], a.shape[1], 1, dtype=a.dtype, device=a.device)


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def pool_inputs(
    a: torch.Tensor, valid: torch.Tensor | None, divisor: torch.Tensor | None, temperature: float
) -> tuple[torch.Tensor, ...]:
    """``(a, valid, divisor, tau)`` as :func:`pool_forward` reads them."""
    return a, _valid_or_all(valid, a), _divisor_or_one(divisor, a), _scalar(temperature, a)


def kl_inputs(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor | None,
    student_divisor: torch.Tensor | None,
    teacher_divisor: torch.Tensor | None,
    student_temperature: float,
    teacher_temperature: float,
) -> tuple[torch.Tensor, ...]:
    """The seven inputs of :func:`kl_forward`."""
    return (
        student,
        teacher,
        _valid_or_all(valid, student),
        _divisor_or_one(student_divisor, student),
        _divisor_or_one(teacher_divisor, student),
        _scalar(student_temperature, student),
        _scalar(teacher_temperature, student),
    )


def _math_layout(
    valid: torch.Tensor, divisor: torch.Tensor, tau: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The additive mask and per-row inverse of :mod:`seedkit.kernels._math` for these inputs."""
    bias = torch.zeros(valid.shape, dtype=divisor.dtype, device=divisor.device)
    return bias.masked_fill_(~valid, float("-inf")), (divisor * tau).reciprocal()


def _eager_pool_forward(a, valid, divisor, tau):  # type: ignore[no-untyped-def]
    return _math.pool_forward(a, *_math_layout(valid, divisor, tau))


def _eager_pool_backward(a, valid, divisor, tau, *rest):  # type: ignore[no-untyped-def]
    return _math.pool_backward(a, *_math_layout(valid, divisor, tau), *rest)


def _eager_kl_forward(student, teacher, valid, sdiv, tdiv, stau, ttau):  # type: ignore[no-untyped-def]
    bias, student_inverse = _math_layout(valid, sdiv, stau)
    return _math.kl_forward(student, teacher, bias, student_inverse, (tdiv * ttau).reciprocal())


def _eager_kl_backward(student, teacher, valid, sdiv, tdiv, stau, ttau, *rest):  # type: ignore[no-untyped-def]
    bias, student_inverse = _math_layout(valid, sdiv, stau)
    teacher_inverse = (tdiv * ttau).reciprocal()
    return _math.kl_backward(student, teacher, bias, student_inverse, teacher_inverse, *rest)


def _guarded(launcher: Callable[..., Any], eager: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``launcher``, or finish the call in eager torch ops if it raises.

    A launch that fails (a kernel that does not compile for a new block size,
    say) is recorded for its device and dtype: one warning, and later calls
    take another path.
    """

    def call(*args: torch.Tensor) -> Any:
        try:
            return launcher(*args)
        except Exception as error:  # any compiler / driver failure: never break training
            from seedkit.kernels._dispatch import record_failure

            record_failure("triton", args[0].device, args[0].dtype, error)
            return eager(*args)

    return call


@functools.cache
def triton_impl(guarded: bool = True) -> SimpleNamespace:
    """Return the Triton launchers under the names the autograd functions call.

    Args:
        guarded: finish a call whose launch raises in eager torch ops (and record
            the failure); ``False`` lets the error through (the self-check uses it).
    """
    launchers = {
        "pool_forward": (pool_forward, _eager_pool_forward),
        "pool_backward": (pool_backward, _eager_pool_backward),
        "kl_forward": (kl_forward, _eager_kl_forward),
        "kl_backward": (kl_backward, _eager_kl_backward),
    }
    return SimpleNamespace(
        name="triton",
        pool_inputs=pool_inputs,
        kl_inputs=kl_inputs,
        max_magnitude=_max_magnitude,
        **{
            name: _guarded(launch, eager) if guarded else launch
            for name, (launch, eager) in launchers.items()
        },
    )
