"""Drop seedkit into ToCo: the CAM it already has, the loss line, views, seeds.

Runs on its own (``python examples/dropin/toco.py``) against the stand-in of ToCo's
network in ``standins.py``; the docs page "Drop into your codebase" shows the
parts between the ``# [name]`` markers, and ``tests/test_dropin.py`` runs them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from standins import NUM_CLASSES, ToCoNet

import seedkit
import seedkit.cam

# [loss]
criterion = seedkit.SeedGenerationLoss.for_backbone("vit")


def toco_cls_loss(model, inputs, cls_label):  # ToCo: scripts/dist_train_voc_seg_neg.py
    fmap = model(inputs)[1]  # ToCo: cls, segs, fmap, cls_aux = model(inputs)
    cams = model.classifier(fmap)  # the CAM (B, 20, h, w), as ToCo's cam_only path computes it
    return criterion(cams, cls_label)  # was: F.multilabel_soft_margin_loss(cls, cls_label)


# [/loss]


# [views]
def make_usage(model, momentum=0.999):
    usage = seedkit.USAGELoss.for_backbone("vit", consistency_weight=0.1)
    teacher = seedkit.EMATeacher(model, momentum=momentum)
    strong = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)  # finds the ViT blocks
    weak = seedkit.SelfAdaptiveView(teacher, drop_ratio=0.1)
    return usage, teacher, strong, weak


def usage_cls_loss(model, teacher, inputs, cls_label, usage, strong, weak):
    cams = model.classifier(strong(inputs)[1])
    with torch.no_grad():
        teacher_cams = teacher.module.classifier(weak(inputs)[1])
    return usage(cams, cls_label, teacher_cams).loss


# [/views]


# [seeds]
def write_seeds(model, img, cls_label, name, cam_dir):
    model.eval()
    seeds = seedkit.cam.infer_cams(lambda x: model.classifier(model(x)[1]), img, cls_label)
    present = cls_label[0].nonzero().flatten().tolist()
    maps = {c: seeds[0, c].numpy() for c in present}
    seedkit.cam.save_seeds(maps, Path(cam_dir) / f"{name}.npy")  # psa format


# [/seeds]


def main() -> None:
    torch.manual_seed(0)
    model = ToCoNet()
    inputs = torch.randn(2, 3, 32, 48)
    cls_label = torch.zeros(2, NUM_CLASSES)
    cls_label[0, 14] = cls_label[1, [2, 7]] = 1
    loss = toco_cls_loss(model, inputs, cls_label)
    loss.backward()
    print("loss", loss.item())
    usage, teacher, strong, weak = make_usage(model)
    print("usage", usage_cls_loss(model, teacher, inputs, cls_label, usage, strong, weak).item())
    with tempfile.TemporaryDirectory() as cam_dir:
        write_seeds(model, inputs[:1], cls_label[:1], "2007_000032", cam_dir)
        seeds = np.load(Path(cam_dir) / "2007_000032.npy", allow_pickle=True).item()
        print({c: m.shape for c, m in seeds.items()})


if __name__ == "__main__":
    main()
