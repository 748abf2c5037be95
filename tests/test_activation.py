"""Properties of the spatial activation distribution, temperature pooling and seeds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference
import seedkit
from seedkit.errors import InvalidValueError, NonFiniteError, ShapeError
from seedkit.losses import global_average_pool

finite = st.floats(-50, 50, allow_nan=False, width=32)


def cams_arrays(max_b: int = 2, max_c: int = 3, max_hw: int = 5):
    shapes = st.tuples(
        st.integers(1, max_b), st.integers(1, max_c), st.integers(1, max_hw), st.integers(1, max_hw)
    )
    return shapes.flatmap(lambda s: hnp.arrays(np.float64, s, elements=finite))


@given(cams_arrays(), st.floats(0.05, 20))
def test_distribution_sums_to_one_and_is_positive(array, temperature):
    alpha = seedkit.spatial_activation_distribution(torch.from_numpy(array), temperature)
    assert alpha.shape == array.shape
    torch.testing.assert_close(alpha.sum((2, 3)), torch.ones(array.shape[:2], dtype=torch.float64))
    assert bool((alpha >= 0).all())


@given(cams_arrays(), st.floats(0.05, 20))
def test_pool_matches_plain_reference(array, temperature):
    pooled = seedkit.temperature_pool(torch.from_numpy(array), temperature)
    np.testing.assert_allclose(
        pooled.numpy(), reference.pool(array, temperature), rtol=1e-5, atol=1e-5
    )


@given(cams_arrays())
def test_large_temperature_is_global_average_pooling(array):
    cams = torch.from_numpy(array)
    # s - mean ~ Var(A) / tau: values up to 50 give at most 2.5e3 / 1e10
    pooled = seedkit.temperature_pool(cams, 1e10)
    torch.testing.assert_close(pooled, cams.mean((2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(global_average_pool(cams), cams.mean((2, 3)))


@given(cams_arrays())
def test_small_temperature_is_global_max_pooling(array):
    cams = torch.from_numpy(array)
    # values in the strategy differ by >= ~1e-6 unless equal; 1e-9 separates them completely
    pooled = seedkit.temperature_pool(cams, 1e-9)
    torch.testing.assert_close(pooled, cams.amax((2, 3)), rtol=1e-6, atol=1e-6)


@given(cams_arrays(), st.floats(0.05, 10), st.floats(1.01, 10))
def test_pool_non_increasing_in_temperature(array, temperature, factor):
    cams = torch.from_numpy(array)
    sharp = seedkit.temperature_pool(cams, temperature)
    smooth = seedkit.temperature_pool(cams, temperature * factor)
    assert bool((smooth <= sharp + 1e-9).all())
    assert bool((sharp <= cams.amax((2, 3)) + 1e-9).all())
    assert bool((smooth >= cams.mean((2, 3)) - 1e-9).all())


@given(cams_arrays(), st.floats(0.05, 20), st.floats(-100, 100))
def test_pool_shift_equivariance(array, temperature, shift):
    cams = torch.from_numpy(array)
    pooled = seedkit.temperature_pool(cams, temperature)
    shifted = seedkit.temperature_pool(cams + shift, temperature)
    torch.testing.assert_close(shifted, pooled + shift, rtol=1e-6, atol=1e-6)


@given(cams_arrays(), st.floats(0.05, 20), st.randoms(use_true_random=False))
def test_pool_permutation_invariance(array, temperature, rng):
    cams = torch.from_numpy(array)
    b, c, h, w = cams.shape
    order = list(range(h * w))
    rng.shuffle(order)
    permuted = cams.flatten(2)[:, :, order].reshape(b, c, h, w)
    torch.testing.assert_close(
        seedkit.temperature_pool(permuted, temperature), seedkit.temperature_pool(cams, temperature)
    )


@given(cams_arrays(max_hw=6), st.floats(0.05, 20), st.data())
def test_masked_positions_never_contribute(array, temperature, data):
    cams = torch.from_numpy(array)
    b, _, h, w = cams.shape
    mask = torch.from_numpy(data.draw(hnp.arrays(np.bool_, (b, h, w))))
    mask[:, 0, 0] = True  # at least one valid position per image
    garbage = torch.from_numpy(data.draw(hnp.arrays(np.float64, cams.shape, elements=finite)))
    changed = torch.where(mask.unsqueeze(1), cams, garbage * 1e3)
    pooled = seedkit.temperature_pool(cams, temperature, mask=mask)
    torch.testing.assert_close(seedkit.temperature_pool(changed, temperature, mask=mask), pooled)
    alpha = seedkit.spatial_activation_distribution(changed, temperature, mask=mask.unsqueeze(1))
    assert float(alpha.masked_select(~mask.unsqueeze(1).expand_as(alpha)).abs().sum()) == 0.0
    np.testing.assert_allclose(
        pooled.numpy(), reference.pool(array, temperature, mask.numpy()), rtol=1e-5, atol=1e-5
    )


def test_all_but_one_position_masked_gives_that_value():
    cams = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[0, 1, 2] = True
    mask[1, 3, 4] = True
    for temperature in (1e-3, 1.0, 1e3):
        pooled = seedkit.temperature_pool(cams, temperature, mask=mask)
        torch.testing.assert_close(pooled[0], cams[0, :, 1, 2])
        torch.testing.assert_close(pooled[1], cams[1, :, 3, 4])
        (grad,) = torch.autograd.grad(pooled.sum(), cams)
        assert torch.isfinite(grad).all()
        assert float(grad[0].sum()) == pytest.approx(3.0)
        assert float(grad[0, :, 1, 2].sum()) == pytest.approx(3.0)


@pytest.mark.parametrize("temperature", [1e-3, 0.1, 1.0, 10.0, 1e3])
def test_gradcheck_float64(temperature):
    # The raw form's math; the scale-free forms divide by a detached number (next test).
    cams = (torch.randn(2, 2, 3, 4, dtype=torch.float64) * 2).requires_grad_()
    mask = torch.ones(2, 1, 3, 4, dtype=torch.bool)
    mask[1, 0, 0, :2] = False
    assert torch.autograd.gradcheck(
        lambda a: seedkit.temperature_pool(a, temperature, mask=mask, scale="raw"),
        (cams,),
        eps=1e-6,
        atol=1e-5,
    )
    assert torch.autograd.gradcheck(
        lambda a: seedkit.spatial_activation_distribution(a, max(temperature, 0.1), scale="raw"),
        (cams,),
        eps=1e-6,
        atol=1e-5,
    )


@pytest.mark.parametrize("temperature", [0.3, 1.0, 3.0])
def test_std_scale_is_raw_pooling_at_tau_times_the_detached_spread(temperature):
    cams = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 1, 4, 5, dtype=torch.bool)
    mask[1, 0, 0, :3] = False
    flat = cams.detach().flatten(2)
    spread = torch.stack(
        [
            torch.stack([flat[b, c][mask[b].flatten()].std(correction=0) for c in range(3)])
            for b in range(2)
        ]
    )
    pooled = seedkit.temperature_pool(cams, temperature, mask=mask, scale="std")
    (grad,) = torch.autograd.grad(pooled.sum(), cams)
    for b in range(2):
        for c in range(3):
            row = cams[b : b + 1, c : c + 1]
            raw = seedkit.temperature_pool(
                row, temperature * float(spread[b, c]), mask=mask[b : b + 1], scale="raw"
            )
            (raw_grad,) = torch.autograd.grad(raw.sum(), row)
            torch.testing.assert_close(pooled[b, c], raw[0, 0])
            torch.testing.assert_close(grad[b, c], raw_grad[0, 0])


@given(cams_arrays(), st.floats(0.05, 20), st.floats(1e-3, 1e3), st.floats(-100, 100))
def test_std_scale_distribution_ignores_affine_changes(array, temperature, factor, shift):
    # Only where the map's spread survives the change in float64 (a spread of 1e-23 on
    # top of a shift of 1 is rounded away: the changed map is then exactly constant).
    spread = array.reshape(*array.shape[:2], -1).std(axis=2) * factor
    magnitude = np.abs(array * factor + shift).reshape(*array.shape[:2], -1).max(axis=2)
    assume(bool(((spread > 1e-6 * magnitude) | (spread == 0)).all()))
    cams = torch.from_numpy(array)
    alpha = seedkit.spatial_activation_distribution(cams, temperature)
    changed = seedkit.spatial_activation_distribution(cams * factor + shift, temperature)
    torch.testing.assert_close(changed, alpha, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scale", ["raw", "max", "std"])
@pytest.mark.parametrize("temperature", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 1e4])
def test_finite_gradients_at_extremes(scale, temperature, magnitude):
    cams = (torch.randn(2, 4, 6, 7) * magnitude).requires_grad_()
    pooled = seedkit.temperature_pool(cams, temperature, scale=scale)
    (grad,) = torch.autograd.grad(pooled.sum(), cams)
    assert torch.isfinite(pooled).all() and torch.isfinite(grad).all()


def test_scale_free_form_ignores_logit_scale():
    cams = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for factor in (0.01, 1.0, 100.0):
        alpha = seedkit.spatial_activation_distribution(cams * factor, 0.5, scale="max")
        torch.testing.assert_close(
            alpha, seedkit.spatial_activation_distribution(cams, 0.5, scale="max")
        )
    # the pooled score is still in logit units
    pooled = seedkit.temperature_pool(cams * 3, 0.5, scale="max")
    torch.testing.assert_close(pooled, 3 * seedkit.temperature_pool(cams, 0.5, scale="max"))


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
def test_autocast_finite(autocast_dtype):
    cams = (torch.randn(2, 3, 8, 8) * 1e4).requires_grad_()
    with torch.autocast("cpu", dtype=autocast_dtype):
        half = cams.to(autocast_dtype)
        for temperature in (1e-3, 1.0, 1e3):
            pooled = seedkit.temperature_pool(half, temperature)
            assert pooled.dtype == autocast_dtype
            (grad,) = torch.autograd.grad(pooled.float().sum(), cams)
            assert torch.isfinite(pooled.float()).all() and torch.isfinite(grad).all()


def test_seeds_max_normalised_form():
    cams = torch.tensor([[[[-1.0, 2.0], [4.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    labels = torch.tensor([[1.0, 0.0]])
    seeds = seedkit.seeds_from_cams(cams, labels)
    expected = torch.tensor([[0.0, 2.0], [4.0, 0.0]]) / (4.0 + 1e-5)
    torch.testing.assert_close(seeds[0, 0], expected)
    assert float(seeds[0, 1].abs().sum()) == 0.0


@given(cams_arrays(), st.floats(0.05, 20), st.data())
def test_seeds_temperature_form(array, temperature, data):
    cams = torch.from_numpy(array)
    labels = torch.from_numpy(
        data.draw(hnp.arrays(np.float64, cams.shape[:2], elements=st.sampled_from([0.0, 1.0])))
    )
    seeds = seedkit.seeds_from_cams(cams, labels, temperature)
    assert bool((seeds >= 0).all() and (seeds <= 1).all())
    alpha = seedkit.spatial_activation_distribution(cams, temperature)
    expected = alpha / alpha.amax((2, 3), keepdim=True) * labels[:, :, None, None]
    torch.testing.assert_close(seeds, expected)
    present = labels.bool()
    if present.any():
        assert torch.allclose(
            seeds.amax((2, 3))[present], torch.ones(int(present.sum()), dtype=seeds.dtype)
        )


def test_seeds_masked_positions_are_zero():
    cams = torch.rand(1, 2, 3, 3) + 0.5
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    mask[0, 0, 0] = False
    for temperature in (None, 1.0):
        seeds = seedkit.seeds_from_cams(cams, torch.ones(1, 2), temperature, mask=mask)
        assert float(seeds[0, :, 0, 0].abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (
            lambda: seedkit.temperature_pool(torch.zeros(2, 3, 4), 1.0),
            ShapeError,
            ["cams", "(B, C, H, W)", "(2, 3, 4)"],
        ),
        (
            lambda: seedkit.temperature_pool(torch.zeros(1, 1, 2, 2), 0.0),
            InvalidValueError,
            ["temperature", "> 0", "0.0"],
        ),
        (
            lambda: seedkit.temperature_pool(torch.zeros(1, 1, 2, 2), float("nan")),
            InvalidValueError,
            ["temperature"],
        ),
        (
            lambda: seedkit.temperature_pool(torch.zeros(1, 1, 2, 2), float("inf")),
            InvalidValueError,
            ["temperature"],
        ),
        (
            lambda: seedkit.temperature_pool(torch.zeros(1, 1, 2, 2), -2),
            InvalidValueError,
            ["temperature", "-2"],
        ),
        (
            lambda: seedkit.temperature_pool(torch.zeros(1, 1, 2, 2), "1"),
            InvalidValueError,
            ["temperature"],
        ),
        (
            lambda: seedkit.temperature_pool(torch.tensor([[[[0.0, float("nan")]]]]), 1.0),
            NonFiniteError,
            ["cams", "1 of 2"],
        ),
        (
            lambda: seedkit.temperature_pool(
                torch.zeros(2, 1, 3, 3), 1.0, mask=torch.ones(2, 3, 4)
            ),
            ShapeError,
            ["mask", "(2, 1, 3, 3)", "(2, 3, 4)"],
        ),
        (
            lambda: seedkit.temperature_pool(
                torch.zeros(1, 1, 2, 2), 1.0, mask=torch.zeros(1, 2, 2)
            ),
            InvalidValueError,
            ["mask", "image 0 fully masked"],
        ),
        (
            lambda: seedkit.temperature_pool(
                torch.zeros(1, 1, 2, 2), 1.0, mask=torch.full((1, 2, 2), 0.5)
            ),
            InvalidValueError,
            ["mask", "{0, 1}"],
        ),
        (
            lambda: seedkit.temperature_pool(torch.zeros(1, 1, 2, 2), 1.0, scale="log"),
            InvalidValueError,
            ["scale"],
        ),
        (
            lambda: seedkit.temperature_pool([[1.0]], 1.0),
            InvalidValueError,
            ["cams", "torch.Tensor", "list"],
        ),
        (
            lambda: seedkit.temperature_pool(torch.zeros(1, 1, 2, 2, dtype=torch.long), 1.0),
            InvalidValueError,
            ["cams", "floating"],
        ),
        (
            lambda: seedkit.seeds_from_cams(torch.zeros(2, 3, 2, 2), torch.ones(2, 4)),
            ShapeError,
            ["labels", "(2, 3)", "(2, 4)"],
        ),
        (
            lambda: seedkit.seeds_from_cams(torch.zeros(1, 2, 2, 2), torch.tensor([[0.5, 1.0]])),
            InvalidValueError,
            ["labels", "0.5"],
        ),
    ],
)
def test_errors_name_the_argument(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value)


def test_value_checks_can_be_switched_off():
    cams = torch.tensor([[[[0.0, float("nan")]]]])
    with seedkit.input_checks(False):
        assert not seedkit.input_checks_enabled()
        assert torch.isnan(seedkit.temperature_pool(cams, 1.0)).all()
    assert seedkit.input_checks_enabled()
    with pytest.raises(NonFiniteError):
        seedkit.temperature_pool(cams, 1.0)


# ---------------------------------------------------------------- scale-free temperatures


@pytest.mark.parametrize("family", ["cnn", "vit"])
def test_family_presets_pool_a_and_ten_a_alike(family):
    criterion = seedkit.SeedGenerationLoss.for_backbone(family)
    cams = torch.randn(2, 5, 7, 9, dtype=torch.float64) * 3 + 1
    for use_scale in (True, False):  # the loss's own scale, and the functional's default
        scale = {"scale": criterion.scale} if use_scale else {}
        alpha = seedkit.spatial_activation_distribution(cams, criterion.temperature, **scale)
        scaled = seedkit.spatial_activation_distribution(10 * cams, criterion.temperature, **scale)
        torch.testing.assert_close(scaled, alpha)
    pooled = seedkit.temperature_pool(cams, criterion.temperature, scale=criterion.scale)
    torch.testing.assert_close(
        seedkit.temperature_pool(10 * cams, criterion.temperature, scale=criterion.scale),
        10 * pooled,
    )


def test_effective_fraction_runs_from_one_over_n_to_one():
    cams = torch.randn(3, 4, 6, 5, dtype=torch.float64)
    fraction = seedkit.losses.effective_fraction
    torch.testing.assert_close(fraction(cams, 1e6), torch.ones(3, 4, dtype=torch.float64))
    torch.testing.assert_close(
        fraction(cams, 1e-6), torch.full((3, 4), 1 / 30, dtype=torch.float64)
    )
    values = [fraction(cams, tau) for tau in (0.3, 1.0, 3.0, 10.0)]
    assert all(bool((a <= b + 1e-12).all()) for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0, 4.0])
def test_effective_fraction_of_gaussian_maps_is_exp_minus_one_over_tau_squared(temperature):
    # For values ~ N(mu, s^2) over positions, the std-scaled weights exp(z / tau) give
    # N_eff / N = E[w]^2 / E[w^2] = exp(-1 / tau^2) (lognormal moments).
    generator = torch.Generator().manual_seed(0)
    cams = torch.randn(1, 1, 400, 400, generator=generator, dtype=torch.float64) * 5 - 2
    measured = float(seedkit.losses.effective_fraction(cams, temperature))
    assert measured == pytest.approx(np.exp(-1 / temperature**2), rel=0.02)


def test_effective_fraction_counts_valid_positions_only():
    cams = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2] = True
    fraction = seedkit.losses.effective_fraction(cams, 1e6, mask=mask)
    torch.testing.assert_close(fraction, torch.ones(1, 2, dtype=torch.float64))
