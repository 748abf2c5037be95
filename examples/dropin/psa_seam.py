"""Drop seedkit into psa / SEAM (ResNet-38): the model change, the loss line, views, seeds.

Runs on its own (``python examples/dropin/psa_seam.py``) against the stand-in of
psa's ResNet-38 in ``standins.py``; the docs page "Drop into your codebase" shows
the parts between the ``# [name]`` markers, and ``tests/test_dropin.py`` runs them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from standins import NUM_CLASSES, ResNet38

import seedkit
import seedkit.cam


# [model]
class Net(ResNet38):  # psa: network/resnet38_cls.py
    def __init__(self) -> None:
        super().__init__()
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(self.feature_channels, NUM_CLASSES, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)  # the ResNet-38 features ("conv6")
        x = self.dropout7(x)
        return self.fc8(x)  # the CAM (B, 20, h, w): no pooling, no view; the loss pools


# [/model]


# [loss]
criterion = seedkit.SeedGenerationLoss.for_backbone("cnn")


def psa_step(model, img, label, optimizer):  # psa: train_cls.py
    cams = model(img)
    loss = criterion(cams, label)  # was: F.multilabel_soft_margin_loss(x, label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def seam_classification_loss(cam1, label):  # SEAM: train_SEAM.py, cam1 has background first
    # was: F.multilabel_soft_margin_loss(F.adaptive_avg_pool2d(cam1, (1, 1))[:, 1:], label[:, 1:])
    return criterion(cam1[:, 1:], label[:, 1:, 0, 0])


# [/loss]


# [views]
def make_usage(model, momentum=0.999):
    usage = seedkit.USAGELoss.for_backbone("cnn", consistency_weight=0.1)  # the full objective
    teacher = seedkit.EMATeacher(model, momentum=momentum)  # a frozen copy, eval mode
    strong = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)  # finds the ResNet-38 blocks
    weak = seedkit.SelfAdaptiveView(teacher, drop_ratio=0.1)
    return usage, teacher, strong, weak


def usage_step(model, img, label, optimizer, usage, teacher, strong, weak):
    cams = strong(img)
    with torch.no_grad():
        teacher_cams = weak(img)
    out = usage(cams, label, teacher_cams)
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    teacher.update(model)
    return out


# [/views]


# [seeds]
def write_seeds(model, img, label, name, out_cam):  # psa: infer_cls.py, SEAM: infer_SEAM.py
    model.eval()
    seeds = seedkit.cam.infer_cams(model, img, label)  # scales 1, .5, 1.5, 2 + flips, in [0, 1]
    present = label[0].nonzero().flatten().tolist()
    maps = {c: seeds[0, c].numpy() for c in present}
    seedkit.cam.save_seeds(maps, Path(out_cam) / f"{name}.npy")  # psa format {class: HxW map}


# [/seeds]


def main() -> None:
    torch.manual_seed(0)
    model = Net()
    img = torch.randn(2, 3, 32, 32)
    label = torch.zeros(2, NUM_CLASSES)
    label[0, 14] = label[1, [2, 7]] = 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    print("loss", psa_step(model, img, label, optimizer).item())
    parts = make_usage(model)
    out = usage_step(model, img, label, optimizer, *parts)
    print("usage", out.generation.item(), out.consistency.item())
    with tempfile.TemporaryDirectory() as out_cam:
        write_seeds(model, img[:1], label[:1], "2007_000032", out_cam)
        seeds = np.load(Path(out_cam) / "2007_000032.npy", allow_pickle=True).item()
        print({c: m.shape for c, m in seeds.items()})


if __name__ == "__main__":
    main()
