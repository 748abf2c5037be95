"""Value checks of the hot losses: read from the (B, C) result, precise errors, deferred mode."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import seedkit
from seedkit import kernels
from seedkit.errors import InvalidValueError, NonFiniteError

BACKENDS = ["reference", "fused"] if kernels.compiled_available() else ["reference"]


def _maps(seed: int = 0, shape=(2, 3, 4, 5)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=generator)
    teacher = torch.randn(shape, generator=generator)
    mask = torch.ones(shape[0], shape[2], shape[3], dtype=torch.bool)
    mask[:, 0, :2] = False
    return student, teacher, mask


def _poisoned(value: float, where: tuple[int, ...]) -> torch.Tensor:
    cams = _maps()[0]
    cams[where] = value
    return cams


LABELS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
MASKED = (1, 2, 0, 0)  # a masked position (row 0, column 0 of image 1)
VALID = (0, 1, 3, 4)


def _calls():
    """(name, call(student, teacher, labels, mask), argument its NaN error names) per loss."""
    return [
        ("pool", lambda s, t, y, m: seedkit.temperature_pool(s, 0.5, m), "cams"),
        ("pool_max", lambda s, t, y, m: seedkit.temperature_pool(s, 0.5, m, scale="max"), "cams"),
        ("generation", lambda s, t, y, m: seedkit.seed_generation_loss(s, y, 2.0, m), "cams"),
        ("gap", lambda s, t, y, m: seedkit.seed_generation_loss(s, y, None, m), "cams"),
        (
            "kl_student",
            lambda s, t, y, m: seedkit.consistency_loss(s, t, y, mask=m),
            "student_cams",
        ),
        (
            "kl_teacher",
            lambda s, t, y, m: seedkit.consistency_loss(t, s, y, mask=m),
            "teacher_cams",
        ),
        (
            "kl_max",
            lambda s, t, y, m: seedkit.consistency_loss(t, s, y, mask=m, scale="max"),
            "teacher_cams",
        ),
        ("js", lambda s, t, y, m: seedkit.consistency_loss(t, s, y, "js", mask=m), "teacher_cams"),
        ("l1", lambda s, t, y, m: seedkit.consistency_loss(t, s, y, "l1", mask=m), "teacher_cams"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [VALID, MASKED], ids=["valid", "masked"])
@pytest.mark.parametrize("name", [name for name, _, _ in _calls()])
def test_any_nonfinite_value_is_named(backend, value, where, name):
    # Every non-finite value is an error, at a masked position too, on every backend:
    # the fused kernels' (B, C) result carries it, the other paths scan their inputs.
    call, argument = next((c, a) for n, c, a in _calls() if n == name)
    _, teacher, mask = _maps()
    with kernels.use_backend(backend), pytest.raises(NonFiniteError) as info:
        call(_poisoned(value, where), teacher, LABELS, mask)
    assert str(info.value).startswith(f"{argument}: expected finite values only, got '1 of 120")


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_and_label_errors_on_every_path(backend):
    student, teacher, mask = _maps()
    empty = mask.clone()
    empty[1] = False
    with kernels.use_backend(backend):
        for call in (
            lambda m: seedkit.temperature_pool(student, 0.5, m),
            lambda m: seedkit.seed_generation_loss(student, LABELS, None, m),
            lambda m: seedkit.seed_generation_loss(student, LABELS, 2.0, m),
            lambda m: seedkit.consistency_loss(student, teacher, LABELS, mask=m),
        ):
            with pytest.raises(InvalidValueError, match=r"mask: .*image 1 fully masked"):
                call(empty)
            with pytest.raises(InvalidValueError, match=r"mask: expected a boolean or \{0, 1\}"):
                call(mask.float() * 0.5)
            call(mask.float())  # a {0, 1} float mask is fine
        with pytest.raises(InvalidValueError, match=r"labels: .*values such as \[2.0,"):
            seedkit.consistency_loss(student, teacher, LABELS * 2, mask=mask)
        with pytest.raises(InvalidValueError, match=r"labels: .*values such as \[0.5"):
            seedkit.seed_generation_loss(student, LABELS * 0.5, 2.0, mask)


def test_errors_come_in_argument_order():
    student, teacher, mask = _maps()
    bad_student = _poisoned(float("nan"), VALID)
    with pytest.raises(NonFiniteError, match="student_cams"):
        seedkit.consistency_loss(bad_student, teacher * float("nan"), LABELS * 2, mask=mask)
    with pytest.raises(NonFiniteError, match=r"^cams"):
        seedkit.seed_generation_loss(bad_student, LABELS * 2, 2.0, mask.float() * 0.5)
    with pytest.raises(InvalidValueError, match=r"^labels"):
        seedkit.seed_generation_loss(student, LABELS * 2, 2.0, mask.float() * 0.5)


class _IsfiniteSizes(TorchFunctionMode):
    """Records the number of elements every ``torch.isfinite`` call reads."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.isfinite, torch.Tensor.isfinite):
            self.sizes.append(args[0].numel())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_checks_read_the_result_not_the_map(backend):
    # The pooling and the generation loss never scan the (B, C, H, W) map when it is fine:
    # their finiteness flag comes from the (B, C) scores (the fused KL likewise, tested above
    # through the errors it still raises for masked positions).
    student, _, mask = _maps(shape=(2, 3, 16, 16))
    with kernels.use_backend(backend), _IsfiniteSizes() as seen:
        seedkit.temperature_pool(student, 0.5, mask)
        seedkit.seed_generation_loss(student, LABELS, 2.0, mask)
        seedkit.seed_generation_loss(student, LABELS, None, mask)
    assert seen.sizes and max(seen.sizes) <= 6


def test_deferred_checks_raise_at_the_next_call():
    # "deferred" is what "auto" does for CUDA tensors; here it runs on the CPU.
    bad = _poisoned(float("nan"), VALID)
    student, teacher, _ = _maps()
    with seedkit.input_checks("deferred"):
        pooled = seedkit.temperature_pool(bad, 0.5)  # no error yet, and no host read
        assert torch.isnan(pooled[0, 1])
        with pytest.raises(NonFiniteError, match=r"cams: .*'1 of 120") as info:
            seedkit.consistency_loss(student, teacher, LABELS)  # the next checked call
        notes = "".join(getattr(info.value, "__notes__", []))
        assert "seedkit.temperature_pool" in notes or not hasattr(info.value, "add_note")
        seedkit.consistency_loss(student, teacher, LABELS)  # the error was raised once
        seedkit.seed_generation_loss(student, LABELS * 3, 2.0)
        with pytest.raises(InvalidValueError, match="labels"):
            seedkit.flush_input_checks()
        seedkit.flush_input_checks()  # nothing left


def test_modes_and_bad_mode():
    with seedkit.input_checks("immediate"):
        assert seedkit.input_checks_enabled()
        with pytest.raises(NonFiniteError):
            seedkit.temperature_pool(_poisoned(float("inf"), VALID), 1.0)
        with seedkit.input_checks(False):
            pooled = seedkit.temperature_pool(_poisoned(float("inf"), VALID), 1.0)
            assert not torch.isfinite(pooled).all()
    with pytest.raises(InvalidValueError, match="enabled"):
        seedkit.set_input_checks("sometimes")
    assert seedkit.input_checks_enabled()


def test_a_deferred_check_holds_no_tensor_and_names_its_call():
    student, teacher, _ = _maps()
    with seedkit.input_checks("deferred"):
        bad = _poisoned(float("nan"), VALID)
        watcher = weakref.ref(bad)
        seedkit.temperature_pool(bad, 0.5)  # line of the call the error must name
        line = sys._getframe().f_lineno - 1
        del bad
        gc.collect()
        assert watcher() is None  # the pending check keeps no reference to the map
        with pytest.raises(NonFiniteError, match=r"cams: .*'1 of 120") as info:
            seedkit.consistency_loss(student, teacher, LABELS)
    notes = "".join(info.value.__notes__)
    assert "seedkit.temperature_pool called at" in notes
    assert f"{Path(__file__).name}:{line}" in notes and "(call " in notes


def test_input_checks_and_use_backend_are_local_to_the_thread():
    seen = {}

    def other_thread():
        seen["checks"] = seedkit.input_checks_enabled()
        seen["backend"] = kernels.get_backend()

    with seedkit.input_checks(False), kernels.use_backend("reference"):
        assert not seedkit.input_checks_enabled() and kernels.get_backend() == "reference"
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen == {"checks": True, "backend": "auto"}


_BAD_ENVIRONMENT = """
import torch, seedkit
from seedkit import kernels
cams = torch.randn(1, 2, 3, 3)
try:
    seedkit.temperature_pool(cams, 1.0)
except seedkit.errors.InvalidValueError as error:
    print(error)
kernels.set_backend("reference")
seedkit.set_input_checks(True)
print(bool(torch.isfinite(seedkit.temperature_pool(cams, 1.0)).all()))
"""


@pytest.mark.parametrize(
    ("variable", "accepted"),
    [
        ("SEEDKIT_KERNELS", "auto, reference, eager, fused, triton"),
        ("SEEDKIT_CHECKS", "1, true, on, auto, immediate, deferred, 0, false, off"),
    ],
)
def test_a_bad_environment_variable_is_one_line_at_first_use(variable, accepted):
    # import seedkit never fails on it; the first call that reads it names it; setting
    # the value in code replaces it.
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, variable: "Sometimes", "PYTHONPATH": str(src)}
    result = subprocess.run(
        [sys.executable, "-c", _BAD_ENVIRONMENT], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        f"environment variable {variable}: expected one of {accepted}, got 'Sometimes'",
        "True",
    ]
    assert result.stderr == ""
