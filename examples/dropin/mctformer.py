"""Drop seedkit into MCTformer-V2: the patch CAM, the loss line, views, seeds.

Runs on its own (``python examples/dropin/mctformer.py``) against the stand-in of
MCTformer-V2 in ``standins.py``; the docs page "Drop into your codebase" shows the
parts between the ``# [name]`` markers, and ``tests/test_dropin.py`` runs them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from standins import NUM_CLASSES, MCTformerV2

import seedkit
import seedkit.cam


# [model]
class Net(MCTformerV2):  # MCTformer: models.py, MCTformerV2
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_cls, x_patch = self.forward_features(x)  # class tokens; patch tokens as (B, D, h, w)
        x_cls_logits = x_cls.mean(-1)
        return x_cls_logits, self.head(x_patch)  # the patch CAM (B, 20, h, w): was avgpool(...)


# [/model]


# [loss]
patch_criterion = seedkit.SeedGenerationLoss.for_backbone("vit")


def mctformer_loss(model, samples, targets):  # MCTformer: engine.py, train_one_epoch
    outputs, patch_cams = model(samples)
    loss = F.multilabel_soft_margin_loss(outputs, targets)  # the class-token loss stays
    ploss = patch_criterion(patch_cams, targets)  # was: multilabel_soft_margin_loss(patch_outputs)
    return loss + ploss


# [/loss]


# [views]
def make_usage(model, momentum=0.999):
    usage = seedkit.USAGELoss.for_backbone("vit", consistency_weight=0.1)
    teacher = seedkit.EMATeacher(model, momentum=momentum)
    strong = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)  # finds MCTformer's blocks
    weak = seedkit.SelfAdaptiveView(teacher, drop_ratio=0.1)
    return usage, teacher, strong, weak


def usage_loss(samples, targets, usage, strong, weak):
    outputs, patch_cams = strong(samples)
    with torch.no_grad():
        _, teacher_cams = weak(samples)
    out = usage(patch_cams, targets, teacher_cams)
    return F.multilabel_soft_margin_loss(outputs, targets) + out.loss


# [/views]


# [seeds]
def write_seeds(model, img, label, name, cam_npy_dir):  # patch-CAM seeds, psa format
    model.eval()
    seeds = seedkit.cam.infer_cams(lambda x: model(x)[1], img, label)
    present = label[0].nonzero().flatten().tolist()
    maps = {c: seeds[0, c].numpy() for c in present}
    seedkit.cam.save_seeds(maps, Path(cam_npy_dir) / f"{name}.npy")


# [/seeds]


def main() -> None:
    torch.manual_seed(0)
    model = Net()
    samples = torch.randn(2, 3, 32, 48)
    targets = torch.zeros(2, NUM_CLASSES)
    targets[0, 14] = targets[1, [2, 7]] = 1
    loss = mctformer_loss(model, samples, targets)
    loss.backward()
    print("loss", loss.item())
    usage, _teacher, strong, weak = make_usage(model)
    print("usage", usage_loss(samples, targets, usage, strong, weak).item())
    with tempfile.TemporaryDirectory() as out:
        write_seeds(model, samples[:1], targets[:1], "2007_000032", out)
        seeds = np.load(Path(out) / "2007_000032.npy", allow_pickle=True).item()
        print({c: m.shape for c, m in seeds.items()})


if __name__ == "__main__":
    main()
