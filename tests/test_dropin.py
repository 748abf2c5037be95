"""The recipes of the docs page "Drop into your codebase" (examples/dropin/*.py), run on stand-ins.

Each recipe is checked the way a user of that codebase would: the changed model
still gives the old logits when its CAM is average-pooled, the loss line gives
finite losses and gradients (and the old loss at the GAP limit), the views find
the blocks, and the seed files load the way the codebase's own scripts read them.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import seedkit
from seedkit.cli import main
from seedkit.data import write_mask_png
from seedkit.errors import InvalidValueError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "dropin"))
import irn  # noqa: E402  (the recipes, importable by name like the scripts they are)
import mctformer  # noqa: E402
import psa_seam  # noqa: E402
import standins  # noqa: E402
import toco  # noqa: E402

NUM_CLASSES = standins.NUM_CLASSES


def _labels() -> torch.Tensor:
    labels = torch.zeros(2, NUM_CLASSES)
    labels[0, 14] = 1  # person
    labels[1, [2, 7]] = 1  # bird, cat
    return labels


def _finite_grads(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    return bool(grads) and all(torch.isfinite(g).all() for g in grads)


def _eval_seeds(cam_dir: Path, shape: tuple[int, int], tmp_path: Path, *extra: str) -> dict:
    """Score the seed file 2007_000032.npy against a person mask with `seedkit eval-seeds`."""
    mask = np.zeros(shape, np.uint8)
    mask[: shape[0] // 2] = 15
    write_mask_png(tmp_path / "gt" / "2007_000032.png", mask)
    (tmp_path / "list.txt").write_text("2007_000032\n")
    out = tmp_path / "eval.json"
    args = ["eval-seeds", "--cams", str(cam_dir), "--gt", str(tmp_path / "gt")]
    args += ["--list", str(tmp_path / "list.txt"), "--quiet", "--json", str(out), *extra]
    assert main(args) == 0
    return json.loads(out.read_text())


def test_psa_seam_recipe(tmp_path):
    torch.manual_seed(0)
    model = psa_seam.Net()
    x = torch.randn(2, 3, 32, 40)
    model.eval()
    cams = model(x)
    assert cams.shape == (2, NUM_CLASSES, 4, 5)  # ResNet-38: output stride 8
    shipped = standins.PsaClassifier.forward(model, x)  # psa's forward on the same weights
    torch.testing.assert_close(cams.mean((2, 3)), shipped)  # pooling the CAM = the old logits
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01)
    loss = psa_seam.psa_step(model, x, _labels(), optimizer)
    assert torch.isfinite(loss) and _finite_grads(model)
    # SEAM: at the GAP limit the new line is SEAM's classification loss.
    cam1, _cam_rv1 = standins.SEAMNet()(x)
    assert cam1.shape == (2, NUM_CLASSES + 1, 32, 40)
    label = torch.cat([torch.ones(2, 1), _labels()], dim=1)[:, :, None, None]
    old = F.multilabel_soft_margin_loss(F.adaptive_avg_pool2d(cam1, (1, 1))[:, 1:], label[:, 1:])
    gap = seedkit.SeedGenerationLoss(temperature=None)
    original = psa_seam.criterion
    try:
        psa_seam.criterion = gap
        torch.testing.assert_close(psa_seam.seam_classification_loss(cam1, label), old)
    finally:
        psa_seam.criterion = original
    usage, teacher, strong, weak = psa_seam.make_usage(model)
    names = [b.name for b in strong.blocks]
    assert names[:3] == ["b2", "b2_1", "b2_2"] and names[-2:] == ["b6", "b7"]
    out = psa_seam.usage_step(model, x, _labels(), optimizer, usage, teacher, strong, weak)
    assert torch.isfinite(out.loss) and out.consistency > 0 and teacher.num_updates == 1
    cam_dir = tmp_path / "out_cam"
    cam_dir.mkdir()
    psa_seam.write_seeds(model, x[:1], _labels()[:1], "2007_000032", cam_dir)
    seeds = np.load(cam_dir / "2007_000032.npy", allow_pickle=True).item()  # as psa reads it
    assert list(seeds) == [14] and seeds[14].shape == (32, 40)
    assert seeds[14].min() >= 0.0 and seeds[14].max() == pytest.approx(1.0, abs=1e-2)
    doc = _eval_seeds(cam_dir, (32, 40), tmp_path)
    assert doc["mean_over"] == "all" and doc["mean_classes"] == 21


def test_irn_recipe(tmp_path):
    torch.manual_seed(0)
    model = irn.Net()
    x = torch.randn(2, 3, 32, 48)
    model.eval()
    cams = model(x)
    assert cams.shape == (2, NUM_CLASSES, 2, 3)  # output stride 16
    shipped = standins.IRNClassifier.forward(model, x)
    torch.testing.assert_close(cams.mean((2, 3)), shipped, atol=1e-5, rtol=1e-4)
    backbone, new = model.trainable_parameters()
    optimizer = torch.optim.SGD([*backbone, *new], lr=0.01)
    loss = irn.irn_step(model, x, _labels(), optimizer)
    assert torch.isfinite(loss) and _finite_grads(model)
    usage, _teacher, strong, weak = irn.make_usage(model)
    assert len(strong.blocks) == 16 and all(b.name.startswith("resnet50.") for b in strong.blocks)
    with torch.no_grad():
        teacher_cams = weak(x)
    out = usage(strong(x), teacher_cams, _labels())
    out.loss.backward()
    assert torch.isfinite(out.loss) and _finite_grads(model)
    cam_dir = tmp_path / "cam"
    cam_dir.mkdir()
    irn.write_seeds(model, x[1:], _labels()[1:], "2007_000032", cam_dir)
    cam_dict = np.load(cam_dir / "2007_000032.npy", allow_pickle=True).item()  # IRN's reading
    assert cam_dict["high_res"].shape == (2, 32, 48)  # at the image size
    assert cam_dict["keys"].tolist() == [2, 7]
    assert tuple(cam_dict["cam"].shape) == (2, 8, 12)  # IRN's stride-4 boundary-map size
    assert isinstance(cam_dict["cam"], torch.Tensor)  # make_sem_seg_labels calls .cuda() on it
    doc = _eval_seeds(cam_dir, (32, 48), tmp_path, "--mean-over", "present")
    assert doc["mean_over"] == "present"


def _mctformer() -> mctformer.Net:
    return mctformer.Net(patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=NUM_CLASSES)


def test_mctformer_recipe(tmp_path):
    torch.manual_seed(0)
    model = _mctformer().eval()
    samples = torch.randn(2, 3, 32, 48)
    cls_logits, patch_cams = model(samples)
    old_cls, old_patch = standins.MCTformerV2.forward(model, samples)
    assert patch_cams.shape == (2, NUM_CLASSES, 4, 6)
    torch.testing.assert_close(cls_logits, old_cls)
    torch.testing.assert_close(patch_cams.mean((2, 3)), old_patch)
    _, fused, patch_attn = model(samples, return_att=True, n_layers=2)  # MCTformer's seed step
    assert fused.shape == (2, NUM_CLASSES, 4, 6) and patch_attn.shape == (2, 2, 24, 24)
    targets = _labels()
    loss = mctformer.mctformer_loss(model, samples, targets)
    loss.backward()
    assert torch.isfinite(loss) and _finite_grads(model)
    original = mctformer.patch_criterion
    try:  # at the GAP limit: MCTformer-V2's two multi-label losses
        mctformer.patch_criterion = seedkit.SeedGenerationLoss(temperature=None)
        expected = F.multilabel_soft_margin_loss(old_cls, targets)
        expected = expected + F.multilabel_soft_margin_loss(old_patch, targets)
        torch.testing.assert_close(mctformer.mctformer_loss(model, samples, targets), expected)
    finally:
        mctformer.patch_criterion = original
    usage, _teacher, strong, weak = mctformer.make_usage(model)
    assert strong.family == "vit" and [b.name for b in strong.blocks] == ["blocks.0", "blocks.1"]
    model.zero_grad()
    loss = mctformer.usage_loss(samples, targets, usage, strong, weak)
    loss.backward()
    assert torch.isfinite(loss) and _finite_grads(model)
    cam_dir = tmp_path / "cam_npy"
    cam_dir.mkdir()
    mctformer.write_seeds(model, samples[:1], targets[:1], "2007_000032", cam_dir)
    seeds = np.load(cam_dir / "2007_000032.npy", allow_pickle=True).item()
    assert list(seeds) == [14] and seeds[14].shape == (32, 48)
    doc = _eval_seeds(cam_dir, (32, 48), tmp_path)
    assert doc["mean_over"] == "all"


def _toco() -> standins.ToCoNet:
    return standins.ToCoNet(
        "deit_tiny_patch16_224", num_classes=NUM_CLASSES + 1, pretrained=False,
        init_momentum=0.9999, aux_layer=-3,
    )  # fmt: skip


def test_toco_recipe(tmp_path):
    torch.manual_seed(0)
    model = _toco()
    inputs = torch.randn(2, 3, 32, 48)
    _cls, _seg, fmap, _cls_aux = model(inputs)
    loss = toco.toco_cls_loss(model, inputs, _labels())
    loss.backward()
    assert torch.isfinite(loss) and _finite_grads(model)
    usage, teacher, strong, weak = toco.make_usage(model)
    assert strong.family == "vit" and len(strong.blocks) == 12
    assert hasattr(teacher.module.proj_head.last_layer, "weight_g")  # the weight_norm head
    model.zero_grad()
    loss = toco.usage_cls_loss(model, teacher, inputs, _labels(), usage, strong, weak)
    loss.backward()
    assert torch.isfinite(loss) and _finite_grads(model)
    cam_dir = tmp_path / "cam"
    cam_dir.mkdir()
    toco.write_seeds(model, inputs[:1], _labels()[:1], "2007_000032", cam_dir)
    seeds = np.load(cam_dir / "2007_000032.npy", allow_pickle=True).item()
    assert list(seeds) == [14] and seeds[14].shape == (32, 48)
    assert fmap.shape == (2, 192, 2, 3)


def test_standins_have_the_reference_interfaces():
    """What users of the reference code meet: CI fails where they would."""
    psa = standins.PsaClassifier()
    assert not hasattr(psa, "feature_channels") and psa.fc8.in_channels == 4096
    assert psa.train() is None and psa.eval() is None  # psa's train() returns nothing
    assert not any(p.requires_grad for p in psa.conv1a.parameters())
    x = torch.randn(1, 3, 32, 32)
    features = psa.forward_as_dict(x)
    assert [features[k].shape[1] for k in ("conv4", "conv5", "conv6")] == [512, 1024, 4096]
    irn_model = standins.IRNClassifier()
    assert irn_model.eval() is None and irn_model.training  # IRN's train() switches nothing
    mct = standins.MCTformerV2(patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=20)
    outputs = mct.forward_features(torch.randn(2, 3, 32, 48))
    assert len(outputs) == 3 and outputs[0].shape == (2, 20, 32) and outputs[1].shape == (2, 24, 32)
    assert len(outputs[2]) == 2 and outputs[2][0].shape == (2, 2, 44, 44)
    assert [o.shape for o in mct(torch.randn(2, 3, 32, 48))] == [(2, 20), (2, 20)]
    toco_model = _toco()
    outputs = toco_model(torch.randn(2, 3, 32, 48))
    assert [tuple(o.shape) for o in outputs] == [(2, 20), (2, 21, 2, 3), (2, 192, 2, 3), (2, 20)]
    assert toco_model.classifier.out_channels == 20 and hasattr(
        toco_model.proj_head.last_layer, "weight_v"
    )
    with pytest.raises(RuntimeError, match="graph leaves"):  # why EMATeacher copies by hand
        copy.deepcopy(toco_model)


@pytest.mark.parametrize("recipe", [psa_seam, irn, mctformer, toco], ids=lambda m: m.__name__)
def test_recipe_main_runs(recipe, capsys):
    """Each recipe's ``main()``: what ``check_reference.py`` runs on the real classes."""
    recipe.main()
    assert "usage" in capsys.readouterr().out


def test_soft_labels_error_names_the_switch_and_the_switch_works():
    cams = torch.randn(2, NUM_CLASSES, 4, 4)
    soft = _labels() * 0.7
    gap = seedkit.SeedGenerationLoss(temperature=None)
    with pytest.raises(InvalidValueError, match=r"seedkit\.input_checks\(False\)"):
        gap(cams, soft)
    with seedkit.input_checks(False):  # soft targets of the BCE, as in multilabel_soft_margin
        expected = F.multilabel_soft_margin_loss(cams.mean((2, 3)), soft)
        torch.testing.assert_close(gap(cams, soft), expected)


def test_train_voc_writes_irn_seeds(tmp_path):
    """examples/train_voc.py --seed-format irn: IRN's files, read back by the evaluation."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    args = [
        "--demo-images", "8", "--image-size", "64", "--batch-size", "4", "--eval-limit", "2",
        "--cam-scales", "1.0", "--num-workers", "0", "--no-progress", "--method", "cam",
        "--max-steps", "1", "--seed-format", "irn", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_voc.py"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run" / "cam"
    config = json.loads((run / "config.json").read_text())
    assert config["seed_format"] == "irn"
    files = sorted((run / "seeds").glob("*.npy"))
    assert len(files) == 2
    gt_dir = tmp_path / "run" / "demo_data" / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    for path in files:
        cam_dict = np.load(path, allow_pickle=True).item()
        height, width = np.asarray(seedkit.data.read_mask(gt_dir / f"{path.stem}.png")).shape
        assert cam_dict["high_res"].shape[1:] == (height, width)
    seeds = json.loads((run / "results.json").read_text())["seeds"]
    assert seeds["mean_over"] == "present" and seeds["num_images"] == 2
