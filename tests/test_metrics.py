from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _seed_helpers import fixed_set_curve, naive_sweep, plain_confusion, plain_miou
from seedkit.errors import DataError, DataFileError, InvalidValueError, ShapeError
from seedkit.metrics import (
    ThresholdSweep,
    confusion_matrix,
    default_thresholds,
    fp_fn_rates,
    iou_from_confusion,
    load_psa_cam,
    load_psa_maps,
)

THRESHOLDS = default_thresholds()
# Values that sit exactly on (or next to) a threshold in float32 and float64.
EDGE_VALUES = sorted(
    {float(np.float32(t)) for t in THRESHOLDS[::7]}
    | {float(t) for t in THRESHOLDS[::7]}
    | {float(np.nextafter(np.float32(t), np.float32(1))) for t in THRESHOLDS[::11]}
    | {0.0, -0.25, 0.595, 0.6, 1.0}
)
values = st.one_of(st.sampled_from(EDGE_VALUES), st.floats(-0.5, 1.0, width=32))


@st.composite
def image_pair(draw, num_classes=5):
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    stack = draw(hnp.arrays(np.float64, (num_classes - 1, h, w), elements=values))
    gt = draw(hnp.arrays(np.uint8, (h, w), elements=st.sampled_from([*range(num_classes), 255])))
    return stack, gt


def test_default_thresholds_match_reference_loop():
    assert len(THRESHOLDS) == 60
    assert THRESHOLDS.tolist() == [i / 100.0 for i in range(60)]
    assert len(default_thresholds(0.99)) == 100
    with pytest.raises(InvalidValueError, match="step"):
        default_thresholds(0.5, 0.0)


@given(
    hnp.arrays(np.int64, st.integers(0, 40), elements=st.integers(0, 3)),
    st.data(),
)
def test_confusion_matrix_matches_plain_loop(pred, data):
    gt = data.draw(hnp.arrays(np.int64, pred.shape, elements=st.sampled_from([0, 1, 2, 3, 255])))
    cm = confusion_matrix(pred, gt, 4)
    expected = np.zeros((4, 4), np.int64)
    for p, g in zip(pred.tolist(), gt.tolist(), strict=True):
        if g != 255:
            expected[g, p] += 1
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ShapeError, match="pred"):
        confusion_matrix(np.zeros(3, int), np.zeros(4, int), 3)
    with pytest.raises(InvalidValueError, match=r"gt.*\[7\]"):
        confusion_matrix(np.zeros(2, int), np.array([0, 7]), 3)


@given(hnp.arrays(np.int64, (4, 4), elements=st.integers(0, 50)))
def test_iou_plus_fp_plus_fn_is_one(cm):
    iou, miou = iou_from_confusion(cm)
    fp, fn = fp_fn_rates(cm)
    plain, plain_mean = plain_miou(cm)
    present = ~np.isnan(iou)
    np.testing.assert_allclose(iou[present], np.array(plain)[present])
    np.testing.assert_allclose((iou + fp + fn)[present], 1.0)
    assert np.isnan(fp[~present]).all() and np.isnan(fn[~present]).all()
    if present.any():
        assert miou * 100 == pytest.approx(plain_mean)
    every, every_mean = iou_from_confusion(cm, mean_over="all")
    np.testing.assert_array_equal(every, np.nan_to_num(iou))
    assert every_mean == pytest.approx(np.nansum(iou) / 4)


def test_fp_and_fn_have_the_meaning_of_over_and_under_activation():
    # class 1 predicted on 3 background pixels (over-activation), misses 1 of its own.
    gt = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([1, 1, 1, 0, 1, 0])
    fp, fn = fp_fn_rates(confusion_matrix(pred, gt, 2))
    # class 1: TP 1, FP 3, FN 1 -> union 5
    assert fp[1] == pytest.approx(3 / 5) and fn[1] == pytest.approx(1 / 5)


@settings(max_examples=60)
@given(st.lists(image_pair(), min_size=1, max_size=3))
def test_one_pass_sweep_equals_per_threshold_argmax(pairs):
    stacks = [p[0] for p in pairs]
    gts = [p[1] for p in pairs]
    if all((gt == 255).all() for gt in gts):
        return
    sweep = ThresholdSweep(num_labels=5)
    for stack, gt in pairs:
        sweep.update(stack, gt)
    confusions = sweep.confusion_matrices()
    curve, expected = naive_sweep(stacks, gts, THRESHOLDS, 5)
    for j in range(len(THRESHOLDS)):
        np.testing.assert_array_equal(confusions[j], expected[j])
    result = sweep.result()
    stable = fixed_set_curve(expected)
    np.testing.assert_allclose(result.miou_curve, stable)
    assert result.best_index == int(np.argmax(stable))
    in_gt = {int(c) for gt in gts for c in np.unique(gt)}
    predicted = {c for cm in expected for c in np.nonzero(cm.sum(axis=0))[0]}
    if predicted <= in_gt:  # no class outside the masks: IRN's per-threshold nanmean
        np.testing.assert_allclose(result.miou_curve, curve)
    every = ThresholdSweep(num_labels=5, mean_over="all")
    for stack, gt in pairs:
        every.update(stack, gt)
    every_result = every.result()
    np.testing.assert_allclose(every_result.miou_curve, fixed_set_curve(expected, "all"))
    assert every_result.best_index == result.best_index  # one class set: the same argmax


# Negative thresholds make the argmax class of all-zero / negative pixels matter.
ODD_THRESHOLDS = [-0.3, -0.25, -1e-9, 0.0, 0.07, 0.5]


@settings(max_examples=80)
@given(image_pair(), st.sets(st.integers(0, 3)))
def test_sparse_maps_equal_dense_stack_with_zeros(pair, present):
    stack, gt = pair
    dense = np.zeros_like(stack)
    for c in present:
        dense[c] = stack[c]
    for thresholds in (None, ODD_THRESHOLDS):
        a = ThresholdSweep(num_labels=5, thresholds=thresholds)
        a.update(dense, gt)
        b = ThresholdSweep(num_labels=5, thresholds=thresholds)
        b.update_maps({c: stack[c] for c in present}, gt)
        np.testing.assert_array_equal(a.confusion_matrices(), b.confusion_matrices())
        if thresholds is not None and not (gt == 255).all():
            _, expected = naive_sweep([dense], [gt], thresholds, 5)
            np.testing.assert_array_equal(b.confusion_matrices(), np.stack(expected))


def test_explicit_thresholds_and_edge_warning():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2] = 1
    stack = np.zeros((20, 4, 4), np.float32)
    # over-activated: the object's map leaks into the background at rising levels
    stack[0, 2:] = np.array([0.1, 0.3, 0.59, 0.9] * 2, np.float32).reshape(2, 4)
    stack[0, :2] = 1.0
    sweep = ThresholdSweep()
    sweep.update(stack, gt)
    result = sweep.result()
    assert result.best_threshold == pytest.approx(0.59)
    assert result.warnings and "largest" in result.warnings[0]
    wide = ThresholdSweep(max_threshold=0.99)
    wide.update(stack, gt)
    wide_result = wide.result()
    assert wide_result.best_miou == pytest.approx(100.0)
    assert 0.9 <= wide_result.best_threshold < 1.0 and not wide_result.warnings
    custom = ThresholdSweep(thresholds=[0.2, 0.95])
    custom.update(stack, gt)
    assert custom.result().best_threshold == 0.95
    with pytest.raises(InvalidValueError, match="thresholds"):
        ThresholdSweep(thresholds=[0.3, 0.2])


def test_sweep_input_errors():
    sweep = ThresholdSweep(num_labels=3)
    with pytest.raises(ShapeError, match="cam_stack"):
        sweep.update(np.zeros((3, 2, 2)), np.zeros((2, 2), np.uint8))
    with pytest.raises(ShapeError, match="gt"):
        sweep.update(np.zeros((2, 2, 2)), np.zeros((3, 2), np.uint8))
    with pytest.raises(InvalidValueError, match=r"ids \[9\]"):
        sweep.update(np.zeros((2, 2, 2)), np.full((2, 2), 9, np.uint8))
    with pytest.raises(InvalidValueError, match="NaN"):
        sweep.update(np.full((2, 2, 2), np.nan), np.zeros((2, 2), np.uint8))
    with pytest.raises(InvalidValueError, match="at least one update"):
        sweep.result()


def test_json_dict_schema_and_identities():
    rng = np.random.default_rng(0)
    sweep = ThresholdSweep()
    gt = rng.integers(0, 3, size=(20, 30)).astype(np.uint8)
    stack = np.zeros((20, 20, 30), np.float32)
    stack[:2] = rng.random((2, 20, 30))
    sweep.update(stack, gt)
    result = sweep.result()
    doc = result.to_json_dict()
    assert doc == sweep.to_json_dict()
    assert set(doc) >= {"best", "curve", "fp_rate", "fn_rate", "warnings"}
    assert set(doc["best"]) == {"threshold", "miou", "iou"}
    assert len(doc["curve"]) == 60 and doc["curve"][7][0] == 0.07
    assert len(doc["best"]["iou"]) == 21 and doc["best"]["iou"][5] is None  # empty union -> null
    assert doc["best"]["miou"] + doc["fp_rate"] + doc["fn_rate"] == pytest.approx(100.0)
    assert doc["mean_over"] == "present" and doc["mean_classes"] == 3
    assert doc["zero_images"] == 0
    every = ThresholdSweep(mean_over="all")
    every.update(stack, gt)
    doc_all = every.to_json_dict()
    assert doc_all["mean_over"] == "all" and doc_all["mean_classes"] == 21
    assert doc_all["best"]["iou"][5] == 0.0  # counted in the mean: 0, not null
    assert doc_all["best"]["miou"] == pytest.approx(doc["best"]["miou"] * 3 / 21)
    assert doc_all["fp_rate"] == pytest.approx(doc["fp_rate"] * 3 / 21)
    with pytest.raises(InvalidValueError, match="mean_over"):
        ThresholdSweep(mean_over="nanmean")
    cm = result.confusion
    assert doc["fp_pixels"][1] == int(cm[:, 1].sum() - cm[1, 1])
    assert "background" in result.format_table()


def test_load_psa_cam_formats_and_errors(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, {0: np.full((3, 4), 0.5, np.float16), 19: np.ones((3, 4))})
    stack = load_psa_cam(good, 20)
    assert stack.shape == (20, 3, 4) and stack.dtype == np.float32
    assert stack[0, 0, 0] == 0.5 and stack[19].sum() == 12 and stack[1:19].sum() == 0

    irn = tmp_path / "irn.npy"
    np.save(
        irn, {"keys": np.array([4, 7]), "cam": np.zeros((2, 1, 1)), "high_res": np.ones((2, 3, 4))}
    )
    assert sorted(load_psa_maps(irn, 20)) == [4, 7]

    with pytest.raises(DataFileError, match=r"missing\.npy"):
        load_psa_cam(tmp_path / "missing.npy", 20)
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match=r"corrupt\.npy"):
        load_psa_cam(corrupt, 20)
    wrong = tmp_path / "index.npy"
    np.save(wrong, {20: np.ones((3, 4))})
    with pytest.raises(DataError, match=r"index.npy.*class index 20"):
        load_psa_cam(wrong, 20)
    with pytest.raises(DataError, match=r"good.npy.*ground-truth size \(5, 4\)"):
        load_psa_cam(good, 20, shape=(5, 4))
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((20, 3, 4)))
    with pytest.raises(DataError, match=r"plain.npy.*array of shape"):
        load_psa_cam(plain, 20)
    nan = tmp_path / "nan.npy"
    np.save(nan, {1: np.full((3, 4), np.nan)})
    with pytest.raises(DataError, match=r"nan\.npy"):
        load_psa_cam(nan, 20)


def test_plain_confusion_helper_agrees_with_bincount():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 4, (10, 10))
    gt = rng.choice([0, 1, 2, 3, 255], (10, 10))
    np.testing.assert_array_equal(plain_confusion(pred, gt, 4), confusion_matrix(pred, gt, 4))


def test_num_labels_counts_background_and_the_old_spelling_shifts_nothing():
    # num_classes means foreground classes in seedkit's Python API; what counts mask
    # labels (background included) is num_labels. The old keyword still means that count.
    with pytest.warns(DeprecationWarning, match=r"num_classes= is deprecated, use num_labels="):
        old = ThresholdSweep(num_classes=21)
    assert old.num_labels == ThresholdSweep(num_labels=21).num_labels == 21
    assert ThresholdSweep().num_labels == 21
    with pytest.warns(DeprecationWarning, match="num_labels"):
        assert old.num_classes == 21
    pred, gt = np.array([0, 2, 1]), np.array([0, 2, 2])
    with pytest.warns(DeprecationWarning):
        matrix = confusion_matrix(pred, gt, num_classes=3)
    np.testing.assert_array_equal(matrix, confusion_matrix(pred, gt, 3))
    with pytest.raises(InvalidValueError, match=r"^num_classes: expected only num_labels="):
        ThresholdSweep(num_labels=21, num_classes=21)
    with pytest.raises(InvalidValueError, match=r"^num_labels: expected an integer >= 2"):
        confusion_matrix(pred, gt)
