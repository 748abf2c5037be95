"""Trivial seed baselines: the centred blob and all-background seeds through the sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seedkit.errors import InvalidValueError
from seedkit.metrics import ThresholdSweep, centred_blob, trivial_baselines


@given(st.integers(1, 40), st.integers(1, 40))
def test_centred_blob_is_the_documented_formula(height, width):
    blob = centred_blob(height, width)
    for y in {0, height // 2, height - 1}:
        for x in {0, width // 2, width - 1}:
            expected = math.exp(
                -(((y + 0.5 - height / 2) / (height / 3)) ** 2)
                - ((x + 0.5 - width / 2) / (width / 3)) ** 2
            )
            assert blob[y, x] == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(blob, blob[::-1, ::-1])  # symmetric about the centre


def _samples():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(5):
        mask = np.zeros((30, 40), np.uint8)
        labels = np.zeros(3, np.float32)
        for klass in rng.choice(3, size=2, replace=False):
            top, left = rng.integers(0, 20), rng.integers(0, 30)
            mask[top : top + 10, left : left + 10] = klass + 1
            labels[klass] = 1.0
        mask[0, :] = 255
        samples.append({"mask": mask, "labels": labels})
    return samples


def test_baselines_equal_their_seeds_through_a_plain_sweep():
    samples = _samples()
    scores = trivial_baselines(samples, 4, max_threshold=0.9)
    background, blob = ThresholdSweep(4, max_threshold=0.9), ThresholdSweep(4, max_threshold=0.9)
    for sample in samples:
        background.update(np.zeros((3, 30, 40), np.float32), sample["mask"])
        stack = np.zeros((3, 30, 40), np.float32)
        for c in np.flatnonzero(sample["labels"]):
            stack[c] = centred_blob(30, 40)
        blob.update(stack, sample["mask"])
    np.testing.assert_allclose(scores["background"].miou_curve, background.result().miou_curve)
    np.testing.assert_allclose(scores["blob"].miou_curve, blob.result().miou_curve)


def test_background_baseline_is_the_background_iou_over_the_classes():
    samples = _samples()
    result = trivial_baselines(samples, 4)["background"]
    masks = np.stack([s["mask"] for s in samples])
    scored = masks != 255
    background_iou = (masks[scored] == 0).sum() / scored.sum()
    present = len(np.unique(masks[scored]))
    assert result.best_miou == pytest.approx(100 * background_iou / present)


@pytest.mark.parametrize(
    ("sample", "argument"),
    [
        ({"mask": np.zeros((2, 3, 4)), "labels": np.zeros(3)}, "mask"),
        ({"mask": np.zeros((3, 4)), "labels": np.zeros(5)}, "labels"),
    ],
)
def test_bad_samples_name_the_field(sample, argument):
    with pytest.raises(InvalidValueError, match=argument):
        trivial_baselines([sample], 4)
