"""Drop seedkit into ToCo: the CAM it already has, the loss line, views, seeds.

Checked against ToCo at commit e13514d (``model.model_seg_neg.network``):
``check_reference.py`` runs this file's ``main()`` with ``ToCoNet`` bound to that
class. In CI (``python examples/dropin/toco.py``, ``tests/test_dropin.py``) it is
the stand-in of ``standins.py``. The docs page "Drop into your codebase" shows
the parts between the ``# [name]`` markers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from standins import NUM_CLASSES, ToCoNet  # ToCo's model.model_seg_neg.network, see above

import seedkit
import seedkit.backbones
import seedkit.cam

# [loss]
criterion = seedkit.SeedGenerationLoss.for_backbone("vit")


def toco_cls_loss(model, inputs, cls_label):  # ToCo: scripts/dist_train_voc_seg_neg.py
    _cls, _segs, fmap, _cls_aux = model(inputs)  # ToCo's forward, unchanged; fmap (B, D, h, w)
    classifier = seedkit.backbones.unwrap_model(model).classifier  # through DDP
    cams = classifier(fmap)  # the CAM (B, 20, h, w), as ToCo's cam_only path computes it
    return criterion(cams, cls_label)  # was: F.multilabel_soft_margin_loss(cls, cls_label)


# [/loss]


# [views]
def make_usage(model, momentum=0.999):
    usage = seedkit.USAGELoss.for_backbone("vit", consistency_weight=0.1)
    teacher = seedkit.EMATeacher(model, momentum=momentum)  # copies the weight_norm heads too
    strong = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)  # finds the ViT blocks
    weak = seedkit.SelfAdaptiveView(teacher, drop_ratio=0.1)
    return usage, teacher, strong, weak


def usage_cls_loss(model, teacher, inputs, cls_label, usage, strong, weak):
    classifier = seedkit.backbones.unwrap_model(model).classifier
    cams = classifier(strong(inputs)[2])  # fmap is ToCo's third output
    with torch.no_grad():
        teacher_cams = teacher.module.classifier(weak(inputs)[2])
    return usage(cams, teacher_cams, cls_label).loss


# [/views]


# [seeds]
def write_seeds(model, img, cls_label, name, cam_dir):
    model.eval()
    classifier = seedkit.backbones.unwrap_model(model).classifier
    seeds = seedkit.cam.infer_cams(lambda x: classifier(model(x)[2]), img, cls_label)
    present = cls_label[0].nonzero().flatten().tolist()
    maps = {c: seeds[0, c].numpy() for c in present}
    seedkit.cam.save_seeds(maps, Path(cam_dir) / f"{name}.npy")  # psa format


# [/seeds]


def main() -> None:
    torch.manual_seed(0)
    # as ToCo's training script builds it (num_classes counts the background)
    model = ToCoNet(
        backbone="deit_tiny_patch16_224", num_classes=NUM_CLASSES + 1, pretrained=False,
        init_momentum=0.9999, aux_layer=-3,
    )  # fmt: skip
    inputs = torch.randn(2, 3, 64, 96)
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
