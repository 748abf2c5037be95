"""Public entry points of the fused kernels, on flattened activations.

Both functions take float activations flattened to ``(B, C, N)`` and an
optional ``(B, 1, N)`` boolean validity mask, and dispatch to the backend
chosen by :func:`seedkit.kernels.set_backend` (or ``SEEDKIT_KERNELS``):

- ``"eager"``: autograd functions in eager torch ops that keep one ``(B, C, N)``
  tensor for backward and write the gradient in closed form (no compilation);
- ``"fused"``: the math of :mod:`seedkit.kernels._math` compiled by
  ``torch.compile`` (inductor emits fused C++/OpenMP loops on the CPU, Triton
  on CUDA), compiled at its first call in the process;
- ``"triton"``: hand-written Triton kernels for CUDA tensors;
- ``"reference"``: the plain autograd composition of :mod:`seedkit.reference`.

The fused and Triton backends keep only the inputs and per-row scalars for
backward and recompute the softmax there. Half-precision inputs are computed
in float32 (the gradient comes back in the input dtype); float64 stays float64.

:func:`fused_temperature_pool` and :func:`fused_kl_consistency` check their
arguments; :func:`pool_rows` and :func:`kl_rows` are the same dispatch on
arguments the caller has already checked (what :mod:`seedkit.losses` calls, so
each public loss checks once and dispatches once).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from seedkit.checks import check_choice, check_temperature
from seedkit.errors import InvalidValueError, ShapeError
from seedkit.kernels._dispatch import resolve_backend
from seedkit.kernels._eager import EagerKLFunction, EagerPoolFunction
from seedkit.kernels._functions import KLConsistencyFunction, TemperaturePoolFunction
from seedkit.reference import SCALES, kl_consistency, scale_divisor, temperature_pool_flat

__all__ = ["fused_kl_consistency", "fused_temperature_pool", "kl_rows", "pool_rows"]


def _check_flat(argument: str, flat: object) -> torch.Tensor:
    if not isinstance(flat, torch.Tensor):
        raise InvalidValueError(argument, "a torch.Tensor", type(flat).__name__)
    if flat.dim() != 3 or flat.shape[2] == 0:
        raise ShapeError(argument, "(B, C, N) with N > 0", tuple(flat.shape))
    if not flat.is_floating_point():
        raise InvalidValueError(argument, "a floating-point tensor", str(flat.dtype))
    return flat


def _check_valid(valid: object | None, flat: torch.Tensor) -> torch.Tensor | None:
    if valid is None:
        return None
    if not isinstance(valid, torch.Tensor):
        raise InvalidValueError("valid", "a torch.Tensor or None", type(valid).__name__)
    batch, _, n = flat.shape
    if tuple(valid.shape) != (batch, 1, n):
        raise ShapeError("valid", f"(B, 1, N) = ({batch}, 1, {n})", tuple(valid.shape))
    return valid if valid.dtype == torch.bool else valid != 0


def _working(flat: torch.Tensor) -> torch.Tensor:
    """Float32 for half inputs (an autograd cast, so gradients return in the input dtype)."""
    return flat if flat.dtype in (torch.float32, torch.float64) else flat.float()


def implementation(backend: str, guarded: bool = True) -> SimpleNamespace:
    """The kernels of ``"fused"`` or ``"triton"`` (``guarded``: see ``triton_impl``)."""
    if backend == "triton":
        from seedkit.kernels.triton_kernels import triton_impl

        return triton_impl(guarded)
    from seedkit.kernels._compiled import compiled_impl

    return compiled_impl()


_impl = implementation


def _inverse(divisor: torch.Tensor | None, temperature: float, like: torch.Tensor) -> torch.Tensor:
    """The ``(B, C, 1)`` per-row factor ``1 / (divisor * tau)`` (``divisor`` 1 when ``None``)."""
    if divisor is None:
        shape = (like.shape[0], like.shape[1], 1)
        return torch.full(shape, 1.0 / temperature, dtype=like.dtype, device=like.device)
    # The divisor of an all-zero map is the smallest normal number: keep 1 / (d tau)
    # finite (0 * inf would be NaN where the reference's 0 / d / tau is 0).
    return divisor.reciprocal().mul_(1.0 / temperature).clamp_(max=torch.finfo(like.dtype).max)


def _bias(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """The ``(B, 1, N)`` additive mask (0 or ``-inf``), or ``None`` without a mask."""
    if valid is None:
        return None
    bias = torch.zeros(valid.shape, dtype=like.dtype, device=like.device)
    return bias.masked_fill_(~valid, float("-inf"))


def _mask(valid: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor | None:
    """The mask on ``a``'s device, or ``None`` when every position is valid.

    On the CPU an all-true mask (what a training loop without padding passes) is
    dropped after one cheap check, so the kernels read no mask; on CUDA the
    check would synchronise, so the mask is kept.
    """
    if valid is None:
        return None
    valid = valid.to(a.device).contiguous()
    if not valid.is_cuda and bool(valid.all()):
        return None
    return valid


def _divisor(
    impl: SimpleNamespace, a: torch.Tensor, valid: torch.Tensor | None, scale: str
) -> torch.Tensor | None:
    """Per-row divisor of the scale-free forms (fused for ``"max"``); ``None`` for raw."""
    if scale == "max":
        return impl.max_magnitude(a.detach(), valid)
    return scale_divisor(a, valid, scale)


def fused_temperature_pool(
    flat: torch.Tensor,
    valid: torch.Tensor | None,
    temperature: float,
    scale: str = "std",
    backend: str | None = None,
) -> torch.Tensor:
    """Temperature pooling ``s_c = sum_n softmax_n(A_c / tau) A_c(n)`` on flat maps.

    Args:
        flat: class activations flattened over positions.
        valid: optional boolean mask, ``True`` at real positions.
        temperature: softmax temperature ``tau > 0``.
        scale: ``"std"`` (default), ``"max"`` or ``"raw"`` (logits divided by the detached
            per-row maximum magnitude or spatial spread first, as in
            :func:`seedkit.temperature_pool`).
        backend: override of the process-wide backend (``None``: use it).

    Returns:
        Pooled scores, float32 for half inputs, else the dtype of ``flat``.

    Shape:
        - flat: :math:`(B, C, N)`
        - valid: :math:`(B, 1, N)`
        - output: :math:`(B, C)`

    Example:
        >>> import torch
        >>> from seedkit.kernels import fused_temperature_pool
        >>> flat = torch.tensor([[[0.0, 0.0, 0.0, 4.0]]])
        >>> fused_temperature_pool(flat, None, 0.01, backend="reference")
        tensor([[4.]])
    """
    flat = _check_flat("flat", flat)
    valid = _check_valid(valid, flat)
    temperature = check_temperature("temperature", temperature)
    check_choice("scale", scale, SCALES)
    return pool_rows(flat, valid, temperature, scale, resolve_backend(flat, backend))


def pool_rows(
    flat: torch.Tensor,
    valid: torch.Tensor | None,
    temperature: float,
    scale: str,
    backend: str | None = None,
) -> torch.Tensor:
    """:func:`fused_temperature_pool` on arguments the caller has checked.

    Args:
        flat: ``(B, C, N)`` float activations.
        valid: ``(B, 1, N)`` boolean mask or ``None``.
        temperature: ``tau > 0`` (a float).
        scale: one of ``"raw"``, ``"max"``, ``"std"``.
        backend: an implementation :func:`seedkit.kernels.resolve_backend`
            returned, or ``None`` to resolve it here.

    Returns:
        ``(B, C)`` pooled scores, float32 for half inputs.
    """
    choice = resolve_backend(flat, None) if backend is None else backend
    a = _working(flat)
    if choice == "reference":
        return temperature_pool_flat(a, valid, temperature, scale)
    if choice == "eager":
        mask = _mask(valid, a)
        inverse = _inverse(scale_divisor(a, mask, scale), temperature, a)
        return EagerPoolFunction.apply(a, inverse, _bias(mask, a))
    return pool_with(_impl(choice), a, valid, temperature, scale)


def pool_with(
    impl: SimpleNamespace,
    a: torch.Tensor,
    valid: torch.Tensor | None,
    temperature: float,
    scale: str,
) -> torch.Tensor:
    """The pooling on the kernels of ``impl``, on checked float32 / float64 arguments."""
    mask = _mask(valid, a)
    inputs = impl.pool_inputs(a, mask, _divisor(impl, a, mask, scale), temperature)
    return TemperaturePoolFunction.apply(impl, *inputs)


def fused_kl_consistency(
    student_flat: torch.Tensor,
    teacher_flat: torch.Tensor,
    valid: torch.Tensor | None,
    temperature: float,
    teacher_temperature: float | None = None,
    scale: str = "std",
    backend: str | None = None,
) -> torch.Tensor:
    """Per-row ``KL(softmax(T / tau_t) || softmax(S / tau_s))`` with the teacher detached.

    Args:
        student_flat: student activations flattened over positions.
        teacher_flat: teacher activations (detached here; it never gets a gradient).
        valid: optional boolean mask, ``True`` at real positions.
        temperature: student temperature ``tau_s > 0``.
        teacher_temperature: teacher temperature (``None``: same as the student).
        scale: ``"raw"``, ``"max"`` or ``"std"`` (each map divided by its detached
            maximum magnitude or spatial spread, see :func:`seedkit.reference.scale_divisor`).
        backend: override of the process-wide backend (``None``: use it).

    Returns:
        Divergences, float32 for half inputs, else the dtype of ``student_flat``.

    Shape:
        - student_flat, teacher_flat: :math:`(B, C, N)`
        - valid: :math:`(B, 1, N)`
        - output: :math:`(B, C)`

    Example:
        >>> import torch
        >>> from seedkit.kernels import fused_kl_consistency
        >>> s = torch.tensor([[[0.0, 1.0, 2.0]]])
        >>> fused_kl_consistency(s, s, None, 1.0, backend="reference").abs().item() < 1e-7
        True
    """
    student_flat = _check_flat("student_flat", student_flat)
    teacher_flat = _check_flat("teacher_flat", teacher_flat)
    if teacher_flat.shape != student_flat.shape:
        raise ShapeError(
            "teacher_flat",
            f"the student's shape {tuple(student_flat.shape)}",
            tuple(teacher_flat.shape),
        )
    valid = _check_valid(valid, student_flat)
    temperature = check_temperature("temperature", temperature)
    if teacher_temperature is None:
        teacher_temperature = temperature
    teacher_temperature = check_temperature("teacher_temperature", teacher_temperature)
    check_choice("scale", scale, SCALES)
    return kl_rows(
        student_flat,
        teacher_flat,
        valid,
        temperature,
        teacher_temperature,
        scale,
        resolve_backend(student_flat, backend),
    )


def kl_rows(
    student_flat: torch.Tensor,
    teacher_flat: torch.Tensor,
    valid: torch.Tensor | None,
    temperature: float,
    teacher_temperature: float,
    scale: str,
    backend: str | None = None,
) -> torch.Tensor:
    """:func:`fused_kl_consistency` on arguments the caller has checked.

    Args:
        student_flat: ``(B, C, N)`` float student activations.
        teacher_flat: teacher activations of the same shape (detached here).
        valid: ``(B, 1, N)`` boolean mask or ``None``.
        temperature: student temperature (a float > 0).
        teacher_temperature: teacher temperature (a float > 0).
        scale: one of ``"raw"``, ``"max"``, ``"std"``.
        backend: an implementation :func:`seedkit.kernels.resolve_backend`
            returned, or ``None`` to resolve it here.

    Returns:
        ``(B, C)`` divergences, float32 for half inputs.
    """
    choice = resolve_backend(student_flat, None) if backend is None else backend
    student = _working(student_flat)
    teacher = teacher_flat.detach().to(student.dtype)
    if choice == "reference":
        return kl_consistency(student, teacher, valid, temperature, teacher_temperature, scale)
    if choice == "eager":
        mask = _mask(valid, student)
        return EagerKLFunction.apply(
            student,
            teacher,
            _inverse(scale_divisor(student, mask, scale), temperature, student),
            _inverse(scale_divisor(teacher, mask, scale), teacher_temperature, student),
            _bias(mask, student),
        )
    return kl_with(_impl(choice), student, teacher, valid, temperature, teacher_temperature, scale)


def kl_with(
    impl: SimpleNamespace,
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor | None,
    temperature: float,
    teacher_temperature: float,
    scale: str,
) -> torch.Tensor:
    """The KL on the kernels of ``impl``, on checked arguments (``teacher`` detached)."""
    mask = _mask(valid, student)
    inputs = impl.kl_inputs(
        student,
        teacher,
        mask,
        _divisor(impl, student, mask, scale),
        _divisor(impl, teacher, mask, scale),
        temperature,
        teacher_temperature,
    )
    return KLConsistencyFunction.apply(impl, *inputs)
