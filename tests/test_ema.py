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


class _WeightNormHead(nn.Module):
    """DINO's / ToCo's projection head: MLP, L2 normalisation, a weight-normed last layer."""

    def __init__(self, legacy: bool) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 4))
        last = nn.Linear(4, 5, bias=False)
        if legacy:  # the hook-based torch.nn.utils.weight_norm ToCo uses
            with pytest.warns(FutureWarning):
                self.last_layer = nn.utils.weight_norm(last)
            self.last_layer.weight_g.data.fill_(1)
            self.last_layer.weight_g.requires_grad = False
        else:
            self.last_layer = nn.utils.parametrizations.weight_norm(last)
        self.spectral = nn.utils.parametrizations.spectral_norm(nn.Linear(5, 3))
        self.orthogonal = nn.utils.parametrizations.orthogonal(nn.Linear(3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(self.mlp(x), dim=-1)
        return self.orthogonal(self.spectral(self.last_layer(x)))


@pytest.mark.parametrize("legacy", [True, False], ids=["weight_norm", "parametrizations"])
def test_teacher_copies_weight_norm_and_parametrized_layers(legacy):
    torch.manual_seed(0)
    student = _WeightNormHead(legacy)
    x = torch.randn(3, 6)
    student(x).sum().backward()  # a trained student holds computed weights with a graph
    teacher = EMATeacher(student, momentum=0.5)
    teacher.module.spectral.eval(), student.spectral.eval()  # spectral norm's power step
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), student.eval()(x))
    student.train()
    names = [name for name, _ in student.named_parameters()]
    assert ("last_layer.weight_v" in names) == legacy
    assert ("last_layer.parametrizations.weight.original1" in names) != legacy
    before = {n: p.detach().clone() for n, p in teacher.module.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student)
    for name, value in teacher.module.named_parameters():
        torch.testing.assert_close(
            value, 0.5 * before[name] + 0.5 * dict(student.named_parameters())[name]
        )
        assert not value.requires_grad
    # the copy is independent: the teacher's forward uses its own (averaged) parameters
    student.eval(), teacher.module.eval()
    with torch.no_grad():
        assert not torch.allclose(teacher(x), student(x))
