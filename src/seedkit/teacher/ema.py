"""EMATeacher: an exponential moving average of a student network."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn

from seedkit.backbones.family import unwrap_model
from seedkit.checks import check_int, check_number
from seedkit.errors import BackboneError, InvalidValueError

__all__ = ["EMATeacher"]

_SCHEDULES = (None, "constant", "cosine")


def _unwrap_student(student: nn.Module) -> nn.Module:
    student = unwrap_model(student)
    # A SelfAdaptiveView or an EMATeacher stands for the model it wraps.
    for attribute in ("model", "module"):
        inner = getattr(student, attribute, None)
        if type(student).__name__ in ("SelfAdaptiveView", "EMATeacher") and isinstance(
            inner, nn.Module
        ):
            return _unwrap_student(inner)
    return student


def _copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies modules holding computed (non-leaf) tensors.

    ``torch.nn.utils.weight_norm`` (DINO / ToCo heads) keeps ``weight`` as a plain
    attribute computed from ``weight_g`` and ``weight_v``: a non-leaf tensor, which
    ``copy.deepcopy`` refuses. Its forward pre-hook recomputes it from the copied
    parameters at every call, so a detached clone stands in for it in the copy.
    Parametrizations (``torch.nn.utils.parametrizations``) copy as they are.
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, dict):
                items = list(value.values())
            else:
                items = list(value) if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, torch.Tensor) and not item.is_leaf:
                    memo[id(item)] = item.detach().clone()
    return copy.deepcopy(model, memo)


class EMATeacher(nn.Module):
    r"""A frozen copy of a student that follows it as an exponential moving average.

    ``update(student)`` sets every floating-point parameter of the teacher to
    :math:`t \leftarrow m\,t + (1 - m)\,s` and copies every buffer (BatchNorm
    statistics) from the student. The teacher's parameters never require
    gradients, and its module stays in eval mode (``train()`` on the teacher
    does not change that), which is what USAGE's weak teacher view expects.

    Args:
        student: the student model (DDP / DataParallel / ``torch.compile``
            wrappers are looked through). It is deep-copied, never changed;
            ``torch.nn.utils.weight_norm`` layers and parametrizations
            (``torch.nn.utils.parametrizations``) are copied too, and their
            underlying parameters (``weight_g`` / ``weight_v``, ``original*``)
            follow the student.
        momentum: :math:`m` in ``[0, 1]``; with a schedule, the starting value.
        schedule: ``None`` / ``"constant"`` for a fixed momentum, or
            ``"cosine"``: :math:`m_k = m_1 - (m_1 - m_0)(\cos(\pi k / T) + 1) / 2`
            from ``momentum`` at step 0 to ``final_momentum`` at ``total_steps``.
        total_steps: :math:`T`, required by ``"cosine"``.
        final_momentum: :math:`m_1` of the cosine schedule (default 1.0).

    Attributes:
        module: the teacher model.
        num_updates: how many updates were applied (saved in the state dict).

    Example:
        >>> import torch
        >>> student = torch.nn.Linear(2, 1)
        >>> teacher = EMATeacher(student, momentum=0.5)
        >>> with torch.no_grad():
        ...     _ = student.weight.add_(2.0)
        >>> teacher.update(student)
        >>> torch.allclose(teacher.module.weight, student.weight - 1.0)
        True
    """

    def __init__(
        self,
        student: nn.Module,
        momentum: float = 0.999,
        schedule: str | None = None,
        total_steps: int | None = None,
        final_momentum: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(student, nn.Module):
            raise InvalidValueError("student", "an nn.Module", type(student).__name__)
        self.base_momentum = self._check_momentum("momentum", momentum)
        self.final_momentum = self._check_momentum("final_momentum", final_momentum)
        if schedule not in _SCHEDULES:
            raise InvalidValueError("schedule", "None, 'constant' or 'cosine'", schedule)
        if schedule == "cosine":
            total_steps = check_int("total_steps (of the cosine schedule)", total_steps, 1)
        self.schedule = None if schedule == "constant" else schedule
        self.total_steps = total_steps
        self.module = _copy_model(_unwrap_student(student))
        self.module.requires_grad_(False)
        self.module.eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _check_momentum(name: str, value: object) -> float:
        return check_number(name, value, 0, 1)

    def momentum_at(self, step: int) -> float:
        """Return the momentum the schedule gives at ``step``."""
        if self.schedule != "cosine":
            return self.base_momentum
        progress = min(max(step, 0), self.total_steps) / self.total_steps  # type: ignore[operator]
        cosine = (math.cos(math.pi * progress) + 1.0) / 2.0
        return self.final_momentum - (self.final_momentum - self.base_momentum) * cosine

    @property
    def momentum(self) -> float:
        """The momentum the next :meth:`update` without ``step`` will use."""
        return self.momentum_at(int(self.num_updates))

    @torch.no_grad()
    def update(self, student: nn.Module, step: int | None = None) -> None:
        """Move the teacher towards ``student``: ``t = m * t + (1 - m) * s``.

        Args:
            student: the student (same architecture as the teacher; wrappers are
                looked through).
            step: the schedule step; the internal update count if ``None``.

        Raises:
            BackboneError: the student's parameters or buffers do not match.
        """
        momentum = self.momentum_at(int(self.num_updates) if step is None else int(step))
        source = _unwrap_student(student)
        teacher_params = dict(self.module.named_parameters())
        student_params = dict(source.named_parameters())
        if teacher_params.keys() != student_params.keys():
            missing = sorted(teacher_params.keys() ^ student_params.keys())[:3]
            raise BackboneError(
                f"student: parameters differ from the teacher's (e.g. {missing}); pass the model "
                "the teacher was made from"
            )
        float_t, float_s = [], []
        for name, tensor in teacher_params.items():
            other = student_params[name].detach()
            if tensor.shape != other.shape:
                raise BackboneError(
                    f"student: parameter {name} has shape {tuple(other.shape)}, the teacher's "
                    f"is {tuple(tensor.shape)}"
                )
            if tensor.is_floating_point():
                float_t.append(tensor)
                float_s.append(other.to(tensor.dtype))
            else:
                tensor.copy_(other)
        if float_t:
            if momentum == 1.0:
                pass
            elif momentum == 0.0:
                torch._foreach_copy_(float_t, float_s)
            else:
                torch._foreach_mul_(float_t, momentum)
                torch._foreach_add_(float_t, float_s, alpha=1.0 - momentum)
        student_buffers = dict(source.named_buffers())
        for name, buffer in self.module.named_buffers():
            other = student_buffers.get(name)
            if other is None or other.shape != buffer.shape:
                raise BackboneError(f"student: buffer {name} is missing or has another shape")
            buffer.copy_(other)
        self.num_updates += 1

    def train(self, mode: bool = True) -> EMATeacher:
        """Set the wrapper's flag; the teacher module itself stays in eval mode."""
        self.training = mode
        self.module.eval()
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the teacher module."""
        return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"momentum={self.base_momentum}, schedule={self.schedule!r}, "
            f"total_steps={self.total_steps}, final_momentum={self.final_momentum}"
        )
