"""Fused kernels: equality with the plain reference, gradients, dispatch, Triton (interpreted)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seedkit
from seedkit import kernels
from seedkit.errors import InvalidValueError, ShapeError
from seedkit.kernels import fused_kl_consistency, fused_temperature_pool
from seedkit.kernels._functions import KLConsistencyFunction, TemperaturePoolFunction

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="torch.compile unavailable"
)

SRC = Path(__file__).resolve().parents[1] / "src"


def _case(
    seed: int, batch: int, classes: int, n: int, magnitude: float, masked: bool, dtype=torch.float32
):
    generator = torch.Generator().manual_seed(seed)
    a = magnitude * torch.randn(batch, classes, n, generator=generator, dtype=dtype)
    t = magnitude * torch.randn(batch, classes, n, generator=generator, dtype=dtype)
    valid = None
    if masked:
        valid = torch.rand(batch, 1, n, generator=generator) > 0.4
        valid[:, :, 0] = True  # at least one valid position per image
    return a, t, valid


def _run(function, a, *args, **kwargs):
    leaf = a.clone().requires_grad_()
    out = function(leaf, *args, **kwargs)
    weights = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * weights).sum().backward()
    return out.detach(), leaf.grad


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, scale: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-3))


case = st.tuples(
    st.integers(0, 2**16),
    st.integers(2, 3),
    st.integers(2, 4),
    st.integers(2, 70),
    st.sampled_from([1e-2, 1.0, 30.0, 1e4]),
    st.booleans(),
)
temperatures = st.floats(1e-3, 1e3).map(float)


FAST_BACKENDS = ["eager", "fused"]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@settings(max_examples=25, deadline=None)
@given(case=case, temperature=temperatures, scale=st.sampled_from(["raw", "max", "std"]))
def test_fused_pool_matches_reference(backend, case, temperature, scale):
    a, _, valid = _case(*case)
    out, grad = _run(fused_temperature_pool, a, valid, temperature, scale, backend=backend)
    ref_out, ref_grad = _run(
        fused_temperature_pool, a, valid, temperature, scale, backend="reference"
    )
    _close(out, ref_out, 1e-5, a.abs().max().item())
    _close(grad, ref_grad, 1e-4, ref_grad.abs().max().item())
    if valid is not None:
        assert bool((grad.masked_select(~valid.expand_as(grad)) == 0).all())


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@settings(max_examples=25, deadline=None)
@given(
    case=case,
    temperature=temperatures,
    teacher=temperatures,
    scale=st.sampled_from(["raw", "max", "std"]),
)
def test_fused_kl_matches_reference(backend, case, temperature, teacher, scale):
    a, t, valid = _case(*case)
    out, grad = _run(
        fused_kl_consistency, a, t, valid, temperature, teacher, scale, backend=backend
    )
    ref_out, ref_grad = _run(
        fused_kl_consistency, a, t, valid, temperature, teacher, scale, backend="reference"
    )
    # The KL sums terms q (log q - log p) with |log q - log p| up to ~ max|A| / tau + log N,
    # which cancel: float32 rounding is relative to that size, not to the (maybe tiny) result.
    spread = a.abs().max().item() if scale == "raw" else 1.0
    logit_scale = max(1.0, spread / min(temperature, teacher))
    _close(out, ref_out, 1e-5, max(ref_out.abs().max().item(), logit_scale))
    # The gradient (p - q) / (d tau) cancels too: float32 rounds p and q to ~1e-7, which
    # the factor 1 / (d tau) of the scale divisor d multiplies (weights up to 1.5).
    divisor = seedkit.reference.scale_divisor(a, valid, scale)
    factor = 1.5 / temperature / (1.0 if divisor is None else divisor.min().item())
    _close(grad, ref_grad, 1e-4, max(ref_grad.abs().max().item(), 0.04 * factor))
    assert bool((out >= -1e-5 * max(1.0, logit_scale)).all())


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_pool_against_float64_reference(backend):
    a, _, valid = _case(3, 2, 3, 500, 5.0, True)
    out, grad = _run(fused_temperature_pool, a, valid, 0.5, backend=backend)
    ref_out, ref_grad = _run(fused_temperature_pool, a.double(), valid, 0.5, backend="reference")
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("scale", ["raw", "max", "std"])
def test_an_all_true_mask_is_the_unmasked_computation(backend, scale):
    # On the CPU an all-true mask is dropped so that the kernels read no mask at all.
    a, t, _ = _case(5, 2, 3, 40, 3.0, False)
    everywhere = torch.ones(2, 1, 40, dtype=torch.bool)
    for function in (
        lambda x, valid, backend: fused_temperature_pool(x, valid, 0.7, scale, backend=backend),
        lambda x, valid, backend: fused_kl_consistency(
            x, t, valid, 0.7, 1.3, scale, backend=backend
        ),
    ):
        masked = _run(function, a, everywhere, backend)
        plain = _run(function, a, None, backend)
        reference = _run(function, a, everywhere, "reference")
        for x, y, z in zip(masked, plain, reference, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
            _close(x, z, 1e-5, z.abs().max().item())


# scale="max" divides by a *detached* maximum, so its analytic gradient differs from the
# numerical one on purpose; it is compared with the reference's gradient above instead.
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("scale", ["raw"])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_float64(backend, scale, masked):
    a, t, valid = _case(1, 2, 3, 7, 1.5, masked, dtype=torch.float64)
    a.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: fused_temperature_pool(x, valid, 0.7, scale, backend=backend),
        (a,),
        eps=1e-6,
        atol=1e-6,
    )
    assert torch.autograd.gradcheck(
        lambda x: fused_kl_consistency(x, t, valid, 0.7, 1.3, scale, backend=backend),
        (a,),
        eps=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(backend, dtype):
    a, t, valid = _case(5, 2, 3, 64, 4.0, True)
    half = a.to(dtype)
    out, grad = _run(fused_temperature_pool, half, valid, 0.8, backend=backend)
    ref_out, ref_grad = _run(fused_temperature_pool, half.float(), valid, 0.8, backend="reference")
    assert out.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.float(), ref_grad, rtol=1e-2, atol=1e-2)
    kl, kl_grad = _run(fused_kl_consistency, half, t.to(dtype), valid, 0.8, 1.0, backend=backend)
    assert torch.isfinite(kl).all() and kl_grad.dtype == dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = seedkit.temperature_pool(half.reshape(2, 3, 8, 8), 0.8, valid.reshape(2, 1, 8, 8))
    torch.testing.assert_close(pooled.float(), ref_out, rtol=2e-2, atol=2e-2)


def test_backward_keeps_no_softmax():
    a, _, valid = _case(0, 2, 3, 40, 1.0, True)
    leaf = a.clone().requires_grad_()
    out = fused_temperature_pool(leaf, valid, 1.0, backend="fused")
    saved = out.grad_fn.saved_tensors
    big = [s for s in saved if s.numel() >= a.numel()]
    # Only the input itself is kept at full size; the rest are per-row scalars or the mask.
    assert len(big) == 1 and big[0].data_ptr() == leaf.data_ptr()
    # The eager path likewise (pooling), or keeps only p - q (KL).
    eager = fused_temperature_pool(leaf, valid, 1.0, backend="eager")
    big = [s for s in eager.grad_fn.saved_tensors if s is not None and s.numel() >= a.numel()]
    assert len(big) == 1 and big[0].data_ptr() == leaf.data_ptr()
    kl = fused_kl_consistency(leaf, a.flip(-1), valid, 1.0, backend="eager")
    assert [s.numel() >= a.numel() for s in kl.grad_fn.saved_tensors].count(True) == 1


def test_public_functions_dispatch_and_switch(monkeypatch):
    cams = torch.randn(2, 4, 96, 96)
    mask = torch.rand(2, 1, 96, 96) > 0.2
    # "auto" never compiles on the CPU: the eager fused functions, at every size.
    assert kernels.resolve_backend(cams) == "eager"
    assert kernels.resolve_backend(torch.empty(16, 20, 56, 56)) == "eager"
    with kernels.use_backend("fused"):
        assert kernels.resolve_backend(cams) == "fused"
        fused = seedkit.temperature_pool(cams, 0.5, mask, scale="max")
    eager = seedkit.temperature_pool(cams, 0.5, mask, scale="max")
    with kernels.use_backend("reference"):
        assert kernels.resolve_backend(cams) == "reference"
        calls = []
        for function in (TemperaturePoolFunction, KLConsistencyFunction):
            monkeypatch.setattr(function, "apply", lambda *a: calls.append(a))
        monkeypatch.setattr(seedkit.kernels.fused.EagerPoolFunction, "apply", calls.append)
        monkeypatch.setattr(seedkit.kernels.fused.EagerKLFunction, "apply", calls.append)
        reference = seedkit.temperature_pool(cams, 0.5, mask, scale="max")
        labels = torch.ones(2, 4)
        seedkit.consistency_loss(cams, cams.flip(-1), labels, mask=mask)
        assert calls == []  # the switch really bypasses the fused functions
    monkeypatch.undo()
    assert kernels.get_backend() == "auto"
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eager, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        fused, seedkit.losses.temperature_pool_reference(cams, 0.5, mask, "max")
    )


def test_consistency_loss_fused_equals_reference():
    student = torch.randn(2, 3, 120, 100, requires_grad=True)
    teacher = torch.randn(2, 3, 120, 100)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    loss = seedkit.ConsistencyLoss(temperature=1.0, teacher_temperature=2.0, normalize=True)
    with kernels.use_backend("fused"):
        fused = loss(student, teacher, labels)
        (grad,) = torch.autograd.grad(fused, student)
    with kernels.use_backend("reference"):
        reference = loss(student, teacher, labels)
        (ref_grad,) = torch.autograd.grad(reference, student)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-9)


def test_environment_variable_forces_reference():
    code = (
        "import seedkit.kernels as k, torch; "
        "print(k.get_backend(), k.resolve_backend(torch.zeros(4, 8, 99, 99)))"
    )
    env = {**os.environ, "SEEDKIT_KERNELS": "reference", "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["reference", "reference"]


def test_bad_arguments_raise_typed_errors():
    a = torch.randn(2, 3, 5)
    with pytest.raises(ShapeError, match="flat"):
        fused_temperature_pool(a[0], None, 1.0)
    with pytest.raises(ShapeError, match="valid"):
        fused_temperature_pool(a, torch.ones(2, 5, dtype=torch.bool), 1.0)
    with pytest.raises(InvalidValueError, match="temperature"):
        fused_temperature_pool(a, None, 0.0)
    with pytest.raises(ShapeError, match="teacher_flat"):
        fused_kl_consistency(a, a[:, :2], None, 1.0)
    with pytest.raises(InvalidValueError, match="backend"):
        kernels.set_backend("fast")
    with pytest.raises(InvalidValueError, match="backend"):
        fused_temperature_pool(a, None, 1.0, backend="triton")  # CPU tensor, not interpreted


_TRITON_SCRIPT = textwrap.dedent(
    """
    import json, torch
    from seedkit import kernels
    from seedkit.kernels import fused_kl_consistency, fused_temperature_pool
    errors = {}
    g = torch.Generator().manual_seed(0)
    for n, scale, masked in [(37, "raw", False), (3000, "max", True), (129, "raw", True)]:
        a = (3 * torch.randn(2, 3, n, generator=g)).requires_grad_()
        t = 3 * torch.randn(2, 3, n, generator=g)
        valid = (torch.rand(2, 1, n, generator=g) > 0.3) if masked else None
        results = {}
        for backend in ("triton", "reference"):
            a.grad = None
            pooled = fused_temperature_pool(a, valid, 0.7, scale, backend=backend)
            pooled.sum().backward()
            pool_grad = a.grad.clone()
            a.grad = None
            kl = fused_kl_consistency(a, t, valid, 0.7, 1.3, scale, backend=backend)
            kl.sum().backward()
            results[backend] = (pooled, pool_grad, kl, a.grad.clone())
        names = ("pool", "pool_grad", "kl", "kl_grad")
        for name, x, y in zip(names, results["triton"], results["reference"]):
            scale_ = max(float(y.abs().max()), 1e-6)
            errors[f"{name}-{n}-{scale}-{masked}"] = float((x - y).abs().max()) / scale_
    print(json.dumps({"errors": errors, "checks": kernels.self_check_results()}))
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_interpreted_match_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", _TRITON_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0 and "No module named 'triton'" in result.stderr:
        pytest.skip("triton does not import")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    errors = report["errors"]
    assert len(errors) == 12
    assert max(errors.values()) < 1e-5, errors
    assert report["checks"] == {"triton cpu float32": "ok"}  # the self-check ran and passed


# Two broken kernels injected through seedkit.kernels.triton_kernels.KERNELS: one that
# compiles but computes a wrong pooling (caught by the self-check before its first use),
# one that fails to compile for a block size the self-check does not use (caught when a
# training step first launches it). Training goes on, on another path, with the same losses.
_BROKEN_TRITON_SCRIPT = textwrap.dedent(
    """
    import json, warnings, torch, triton, triton.language as tl
    import seedkit
    from seedkit import kernels
    import seedkit.kernels.triton_kernels as tk

    REAL_POOL = tk.KERNELS["pool_forward"]
    REAL_KL_BACKWARD = tk.KERNELS["kl_backward"]

    @triton.jit
    def wrong_pool_forward(A, VALID, DIV, TAU, POOLED, PEAK, LOGT, C, N, BLOCK: tl.constexpr):
        REAL_POOL(A, VALID, DIV, TAU, POOLED, PEAK, LOGT, C, N, BLOCK)
        row = tl.program_id(0)
        tl.store(POOLED + row, tl.load(POOLED + row) + 1.0)

    @triton.jit
    def failing_kl_backward(
        S, T, V, SD, TD, SU, TU, PS, LS, PT, LT, GRAD, OUT, C, N, BLOCK: tl.constexpr
    ):
        tl.static_assert(BLOCK != 256, "injected compile error")
        REAL_KL_BACKWARD(S, T, V, SD, TD, SU, TU, PS, LS, PT, LT, GRAD, OUT, C, N, BLOCK)

    def train(backend, dtype):
        torch.manual_seed(0)
        model = torch.nn.Conv2d(3, 4, 3, padding=1).to(dtype)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        criterion = seedkit.USAGELoss(
            seedkit.SeedGenerationLoss(temperature=2.0),
            seedkit.ConsistencyLoss(temperature=1.0, teacher_temperature=0.5),
            consistency_weight=0.5,
        )
        x = torch.randn(2, 3, 16, 16, dtype=dtype)  # 256 positions: Triton block size 256
        labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
        losses = []
        with kernels.use_backend(backend), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(4):
                cams = model(x)
                teacher = model(x.flip(-1)).flip(-1).detach()
                out = criterion(cams, teacher, labels)
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
                losses.append(out.loss.item())
            after = kernels.resolve_backend(cams)
        messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
        return {"losses": losses, "warnings": messages, "after": after}

    report = {}
    tk.KERNELS["kl_backward"] = failing_kl_backward
    report["compile"] = train("triton", torch.float32)
    tk.KERNELS["kl_backward"] = REAL_KL_BACKWARD
    tk.KERNELS["pool_forward"] = wrong_pool_forward
    report["mismatch"] = train("triton", torch.float64)
    report["reference32"] = train("reference", torch.float32)
    report["reference64"] = train("reference", torch.float64)
    report["checks"] = kernels.self_check_results()
    print(json.dumps(report))
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_a_broken_triton_kernel_is_caught_and_training_continues():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", _BROKEN_TRITON_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0 and "No module named 'triton'" in result.stderr:
        pytest.skip("triton does not import")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    fallback = "eager"  # a failed Triton kernel never triggers a compilation
    # A kernel that does not compile: its first launch fails inside a training step's
    # backward; that step finishes in eager ops, one warning, later steps use the fallback.
    compile_run = report["compile"]
    assert len(compile_run["warnings"]) == 1, compile_run["warnings"]
    assert "'triton' kernels failed on cpu (torch.float32)" in compile_run["warnings"][0]
    assert "injected compile error" in compile_run["warnings"][0]
    assert compile_run["after"] == fallback
    np.testing.assert_allclose(compile_run["losses"], report["reference32"]["losses"], rtol=1e-5)
    # A kernel that computes a wrong pooling: the self-check catches it before its first use.
    mismatch = report["mismatch"]
    assert len(mismatch["warnings"]) == 1, mismatch["warnings"]
    assert "(torch.float64): pool forward differs from the reference" in mismatch["warnings"][0]
    assert mismatch["after"] == fallback
    np.testing.assert_allclose(mismatch["losses"], report["reference64"]["losses"], rtol=1e-10)
    assert report["checks"]["triton cpu float64"].startswith("pool forward differs")
    assert report["checks"]["triton cpu float32"].startswith("InterpreterError")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs for minutes")
def test_bench_gpu_says_there_is_no_gpu_and_exits_0():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    env = {**os.environ, "PYTHONPATH": str(SRC), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no CUDA device here" in result.stdout
