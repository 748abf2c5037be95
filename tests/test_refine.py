"""Random walk, affinity labels and loss, pseudo-mask helpers (seedkit.refine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seedkit.errors import InvalidValueError, ShapeError
from seedkit.refine import (
    AffinityNet,
    affinity_labels,
    affinity_loss,
    background_scores,
    confident_labels,
    dense_random_walk,
    dense_transition_matrix,
    local_offsets,
    local_transition,
    pair_affinity,
    pseudo_mask_from_seeds,
    random_walk,
    shift2d,
)


def _dense_from_local(affinity: torch.Tensor, offsets) -> torch.Tensor:
    """(N, N) affinity matrix of a single (1, K, h, w) local affinity tensor."""
    _, _, height, width = affinity.shape
    dense = torch.zeros(height * width, height * width, dtype=affinity.dtype)
    for k, (dy, dx) in enumerate(offsets):
        for y in range(height):
            for x in range(width):
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width:
                    dense[y * width + x, ny * width + nx] = affinity[0, k, y, x]
    return dense


@st.composite
def grids(draw):
    height = draw(st.integers(2, 6))
    width = draw(st.integers(2, 6))
    radius = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    return height, width, radius, channels, seed


def _symmetric_local(height: int, width: int, radius: int, generator: torch.Generator):
    """Symmetric local affinities a(p, p+d) = a(p+d, p) from a random embedding (PSA form)."""
    offsets = local_offsets(radius)
    embedding = torch.randn(1, 3, height, width, generator=generator, dtype=torch.float64)
    return pair_affinity(embedding, offsets), offsets


@settings(max_examples=25, deadline=None)
@given(grids(), st.sampled_from([1.0, 8.0, 10.0]))
def test_transition_rows_sum_to_one(grid, beta):
    height, width, radius, _, seed = grid
    affinity, offsets = _symmetric_local(height, width, radius, torch.Generator().manual_seed(seed))
    transition = local_transition(affinity, offsets, beta=beta)
    torch.testing.assert_close(
        transition.sum(dim=1), torch.ones(1, height, width, dtype=torch.float64)
    )
    assert bool((transition >= 0).all())
    # neighbours outside the grid get no weight
    for k, (dy, dx) in enumerate(offsets):
        outside = shift2d(torch.ones(height, width, dtype=torch.float64), dy, dx) == 0
        assert bool((transition[0, k][outside] == 0).all())
    dense = dense_transition_matrix(
        _dense_from_local(affinity, offsets).clamp(0, 1)
        + torch.eye(height * width) * (1 - _dense_from_local(affinity, offsets).diagonal()).diag(),
        beta=beta,
    )
    torch.testing.assert_close(dense.sum(-1), torch.ones(height * width, dtype=torch.float64))


@settings(max_examples=25, deadline=None)
@given(grids(), st.integers(0, 5))
def test_walk_keeps_probabilities_normalised_and_matches_dense_squaring(grid, exp_times):
    height, width, radius, channels, seed = grid
    generator = torch.Generator().manual_seed(seed)
    affinity, offsets = _symmetric_local(height, width, radius, generator)
    transition = local_transition(affinity, offsets, beta=3.0)
    probs = torch.softmax(
        torch.randn(1, channels, height, width, generator=generator, dtype=torch.float64), dim=1
    )
    walked = random_walk(probs, transition, offsets, exp_times=exp_times)
    torch.testing.assert_close(walked.sum(dim=1), torch.ones(1, height, width, dtype=torch.float64))
    assert bool((walked >= 0).all())
    # the local walk is T^(2^k) P with the dense transition matrix, computed by repeated squaring
    dense_t = _dense_from_local(transition, offsets)
    torch.testing.assert_close(dense_t.sum(-1), torch.ones(height * width, dtype=torch.float64))
    flat = probs[0].reshape(channels, -1).T
    expected = dense_random_walk(flat, dense_t, exp_times=exp_times).T.reshape(
        1, channels, height, width
    )
    torch.testing.assert_close(walked, expected)


def test_dense_transition_matches_local_transition():
    generator = torch.Generator().manual_seed(0)
    affinity, offsets = _symmetric_local(4, 5, 2, generator)
    dense_aff = _dense_from_local(affinity, offsets)
    dense_aff.fill_diagonal_(1.0)
    torch.testing.assert_close(
        dense_transition_matrix(dense_aff, beta=8.0),
        _dense_from_local(local_transition(affinity, offsets, 8.0), offsets),
    )


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 8))
def test_perfect_seed_stays_perfect_under_region_respecting_affinities(seed, exp_times):
    rng = np.random.default_rng(seed)
    height, width = 7, 9
    regions = torch.from_numpy(rng.integers(0, 3, size=(height, width)))
    offsets = local_offsets(3)
    # affinity 1 inside a region, 0 across: the walk never mixes regions
    affinity = torch.stack(
        [
            (shift2d(regions[None].float(), dy, dx, fill=-1.0) == regions).float()[0]
            for dy, dx in offsets
        ]
    )[None].double()
    transition = local_transition(affinity, offsets, beta=10.0)
    onehot = torch.nn.functional.one_hot(regions, 3).permute(2, 0, 1)[None].double()
    probs = 0.6 * onehot + 0.4 / 3  # a perfect (soft) seed: argmax is the true region everywhere
    walked = random_walk(probs, transition, offsets, exp_times=exp_times)
    assert torch.equal(walked.argmax(dim=1)[0], regions)
    torch.testing.assert_close(walked.sum(dim=1), torch.ones(1, height, width, dtype=torch.float64))


def test_walk_spreads_scores_within_a_region():
    offsets = local_offsets(2)
    affinity = torch.ones(1, len(offsets), 1, 6, dtype=torch.float64)
    transition = local_transition(affinity, offsets, beta=1.0)
    probs = torch.zeros(1, 2, 1, 6, dtype=torch.float64)
    probs[:, 0] = 1.0
    probs[0, :, 0, 0] = torch.tensor([0.0, 1.0])
    walked = random_walk(probs, transition, offsets, exp_times=8)
    # after many steps on a connected uniform graph every pixel converges to the same mix
    assert float(walked[0, 1].std()) < 1e-3
    assert 0.0 < float(walked[0, 1, 0, 3]) < 0.5


def test_walk_errors():
    offsets = local_offsets(2)
    transition = local_transition(torch.ones(1, len(offsets), 3, 3), offsets)
    with pytest.raises(ShapeError, match="transition"):
        random_walk(torch.ones(1, 2, 3, 4), transition, offsets)
    with pytest.raises(InvalidValueError, match="exp_times"):
        random_walk(torch.ones(1, 2, 3, 3), transition, offsets, exp_times=-1)
    with pytest.raises(InvalidValueError, match="beta"):
        local_transition(torch.ones(1, len(offsets), 3, 3), offsets, beta=0.0)
    with pytest.raises(InvalidValueError, match="affinity"):
        dense_transition_matrix(torch.zeros(2, 2))
    with pytest.raises(InvalidValueError, match="radius"):
        local_offsets(0)


def test_offsets_sets():
    full, half = local_offsets(5), local_offsets(5, half=True)
    assert full[0] == (0, 0) and len(full) == 2 * len(half) + 1
    assert set(full) == {(0, 0)} | set(half) | {(-dy, -dx) for dy, dx in half}
    assert len(half) == 34  # PSA's 34 pairs at radius 5


def test_background_scores():
    fg = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    assert background_scores(fg, "threshold", 0.3).flatten().tolist() == pytest.approx([0.3] * 3)
    assert background_scores(fg, "power", alpha=2.0).flatten().tolist() == pytest.approx(
        [1.0, 0.25, 0.0]
    )
    with pytest.raises(InvalidValueError, match="mode"):
        background_scores(fg, "nope")


def test_confident_labels_from_a_toy_seed():
    seeds = torch.tensor(
        [
            [[0.9, 0.5, 0.2, 0.04, 0.0]],
            [[0.1, 0.6, 0.1, 0.01, 0.0]],
        ]
    )
    labels = confident_labels(
        seeds, fg_threshold=0.30, bg_threshold=0.05, keys=torch.tensor([2, 7])
    )
    # 0.9 -> class 2; 0.6 beats 0.5 -> class 7; max 0.2 is unsure; max 0.04 and 0 are background
    assert labels.tolist() == [[3, 8, 255, 0, 0]]
    assert confident_labels(torch.zeros(0, 2, 2)).tolist() == [[0, 0], [0, 0]]


def test_affinity_labels_and_loss():
    labels = torch.tensor([[[0, 0, 1, 1, 255, 2]]])
    pairs = affinity_labels(labels, radius=2)
    offsets = local_offsets(2, half=True)
    right = offsets.index((0, 1))
    assert pairs.bg[0, right, 0].tolist() == [1, 0, 0, 0, 0, 0]
    assert pairs.fg[0, right, 0].tolist() == [0, 0, 1, 0, 0, 0]
    assert pairs.neg[0, right, 0].tolist() == [0, 1, 0, 0, 0, 0]  # 1->255 and 255->2 ignored
    total = pairs.bg + pairs.fg + pairs.neg
    assert float(total.max()) <= 1.0
    # the loss is lowest for the affinities the labels ask for
    target = pairs.bg + pairs.fg
    good = affinity_loss(target.clamp(0.01, 0.99), pairs)
    bad = affinity_loss((1 - target).clamp(0.01, 0.99), pairs)
    assert float(good) < float(bad)
    assert float(affinity_loss(target, pairs)) < 1e-3
    with pytest.raises(ShapeError, match="affinity"):
        affinity_loss(torch.zeros(1, 1, 1, 6), pairs)


def test_affinity_net_is_symmetric_and_learns_toy_pairs():
    torch.manual_seed(0)
    net = AffinityNet("resnet18", stride=8, embed_dim=16, radius=2)
    images = torch.randn(2, 3, 40, 48)
    embedding = net(images)
    assert embedding.shape[-2:] == (5, 6)
    full = local_offsets(2)
    with torch.no_grad():
        affinity = pair_affinity(embedding, full)
    # a(p, p + d) == a(p + d, p), and a(p, p) == 1
    for k, (dy, dx) in enumerate(full):
        back = full.index((-dy, -dx))
        torch.testing.assert_close(
            shift2d(affinity[:, back], dy, dx),
            affinity[:, k] * shift2d(torch.ones_like(affinity[:, k]), dy, dx),
        )
    torch.testing.assert_close(affinity[:, 0], torch.ones_like(affinity[:, 0]))


def test_pseudo_mask_from_seeds_methods():
    seeds = {1: np.array([[0.9, 0.1]], np.float32), 4: np.array([[0.2, 0.3]], np.float32)}
    assert pseudo_mask_from_seeds(seeds, "threshold", threshold=0.25).tolist() == [[2, 5]]
    probs = np.array([[[0.1, 0.8]], [[0.7, 0.1]], [[0.2, 0.1]]], np.float32)
    assert pseudo_mask_from_seeds(seeds, "rw", probs=probs, keys=[1, 4]).tolist() == [[2, 0]]
    with pytest.raises(InvalidValueError, match="method"):
        pseudo_mask_from_seeds(seeds, "magic")


def test_crf_pseudo_mask_keeps_a_clear_object():
    pytest.importorskip("pydensecrf")
    image = np.full((128, 128, 3), 30, np.uint8)
    image[32:96, 32:96] = 220
    seed = np.zeros((128, 128), np.float32)
    seed[38:90, 38:90] = 0.9
    mask = pseudo_mask_from_seeds({0: seed}, "crf", image=image, threshold=0.3)
    assert mask[64, 64] == 1 and mask[0, 0] == 0
    outside = np.ones((128, 128), bool)
    outside[32:96, 32:96] = False
    assert not mask[outside].any()
