"""EMATeacher: exact EMA arithmetic, buffers, schedule, resume, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from seedkit import EMATeacher
from seedkit.errors import BackboneError, InvalidValueError


def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.Conv2d(3, 1, 1))


def _fill_dyadic(module: nn.Module, seed: int) -> None:
    """Values k / 8 so that m * t + (1 - m) * s is exact in float32 for m = 0.75."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randint(-16, 16, p.shape, generator=generator).float() / 8)


def test_ema_arithmetic_is_exact_and_buffers_are_copied():
    student = _small()
    _fill_dyadic(student, 0)
    teacher = EMATeacher(student, momentum=0.75)
    assert all(not p.requires_grad for p in teacher.module.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert teacher.module[0].weight.data_ptr() != student[0].weight.data_ptr()  # a deep copy
    old = {k: v.clone() for k, v in teacher.module.named_parameters()}
    _fill_dyadic(student, 1)
    student.train()(torch.randn(4, 2, 3, 3))  # moves the BatchNorm statistics
    teacher.update(student)
    for name, s in student.named_parameters():
        assert torch.equal(teacher.module.get_parameter(name), 0.75 * old[name] + 0.25 * s.detach())
    for name, b in student.named_buffers():
        assert torch.equal(teacher.module.get_buffer(name), b)
    assert int(teacher.num_updates) == 1
    assert not teacher.module.training


def test_momentum_zero_and_one():
    student = _small()
    teacher = EMATeacher(student, momentum=1.0)
    before = [p.clone() for p in teacher.module.parameters()]
    _fill_dyadic(student, 3)
    teacher.update(student)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.module.parameters(), strict=True))
    EMATeacher(student, momentum=0.0)  # valid
    copy = EMATeacher(_small(), momentum=0.0)
    copy.update(student)
    assert all(
        torch.equal(a, b)
        for a, b in zip(student.parameters(), copy.module.parameters(), strict=True)
    )


def test_cosine_schedule():
    teacher = EMATeacher(_small(), momentum=0.99, schedule="cosine", total_steps=100)
    assert teacher.momentum == pytest.approx(0.99)
    assert teacher.momentum_at(50) == pytest.approx(0.995)
    assert teacher.momentum_at(100) == pytest.approx(1.0)
    assert teacher.momentum_at(1000) == pytest.approx(1.0)
    values = [teacher.momentum_at(k) for k in range(0, 101, 10)]
    assert values == sorted(values)
    teacher.update(_small(), step=25)
    assert teacher.momentum == pytest.approx(1 - 0.01 * (math.cos(math.pi / 100) + 1) / 2)


def test_state_dict_round_trip_for_resume():
    student = _small()
    teacher = EMATeacher(student, momentum=0.9, schedule="cosine", total_steps=10)
    for seed in range(3):
        _fill_dyadic(student, seed)
        teacher.update(student)
    resumed = EMATeacher(_small(), momentum=0.9, schedule="cosine", total_steps=10)
    resumed.load_state_dict(teacher.state_dict())
    assert int(resumed.num_updates) == 3 and resumed.momentum == teacher.momentum
    for a, b in zip(teacher.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(resumed(x), teacher(x))


def test_train_keeps_teacher_in_eval_and_errors():
    teacher = EMATeacher(_small())
    teacher.train()
    assert teacher.training and not teacher.module.training
    with pytest.raises(InvalidValueError, match="momentum"):
        EMATeacher(_small(), momentum=1.5)
    with pytest.raises(InvalidValueError, match="total_steps"):
        EMATeacher(_small(), schedule="cosine")
    with pytest.raises(InvalidValueError, match="schedule"):
        EMATeacher(_small(), schedule="linear")
    with pytest.raises(BackboneError, match="student"):
        teacher.update(nn.Linear(2, 2))
