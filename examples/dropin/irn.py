"""Drop seedkit into IRN (ResNet-50): the model change, the loss line, views, IRN-format seeds.

Checked against IRN at commit a2ece00 (``net.resnet50_cam.Net``, its ImageNet
download replaced by random weights): ``check_reference.py`` runs this file's
``main()`` with ``IRNClassifier`` bound to that class. In CI (``python
examples/dropin/irn.py``, ``tests/test_dropin.py``) it is the stand-in of
``standins.py``. The docs page "Drop into your codebase" shows the parts between
the ``# [name]`` markers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from standins import NUM_CLASSES, IRNClassifier  # IRN's net.resnet50_cam.Net, see above

import seedkit
import seedkit.cam


# [model]
class Net(IRNClassifier):  # IRN: net/resnet50_cam.py, Net; replace its forward by this one
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(x)
        x = self.stage2(x).detach()
        x = self.stage3(x)
        x = self.stage4(x)
        return self.classifier(x)  # the CAM (B, 20, h, w): was gap2d -> classifier -> view


# [/model]


# [loss]
criterion = seedkit.SeedGenerationLoss.for_backbone("cnn")


def irn_step(model, img, label, optimizer):  # IRN: step/train_cam.py
    cams = model(img)
    loss = criterion(cams, label)  # was: F.multilabel_soft_margin_loss(x, label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


# [/loss]


# [views]
def make_usage(model, momentum=0.999):
    usage = seedkit.USAGELoss.for_backbone("cnn", consistency_weight=0.1)
    teacher = seedkit.EMATeacher(model, momentum=momentum)
    strong = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)  # finds the 16 Bottlenecks
    weak = seedkit.SelfAdaptiveView(teacher, drop_ratio=0.1)
    return usage, teacher, strong, weak


# [/views]


# [seeds]
def write_seeds(model, img, label, name, cam_out_dir):  # IRN: step/make_cam.py
    model.eval()
    seeds = seedkit.cam.infer_cams(model, img, label)  # (1, 20, H, W) in [0, 1]
    present = label[0].nonzero().flatten().tolist()
    maps = {c: seeds[0, c].numpy() for c in present}
    seedkit.cam.save_seeds(maps, Path(cam_out_dir) / f"{name}.npy", format="irn")


# [/seeds]


def main() -> None:
    torch.manual_seed(0)
    model = Net()
    img = torch.randn(2, 3, 48, 64)
    label = torch.zeros(2, NUM_CLASSES)
    label[0, 14] = label[1, [2, 7]] = 1
    param_groups = model.trainable_parameters()  # as IRN's train_cam.py
    optimizer = torch.optim.SGD([*param_groups[0], *param_groups[1]], lr=0.01)
    print("loss", irn_step(model, img, label, optimizer).item())
    with torch.no_grad():  # pooling the CAM gives the logits IRN's forward returned
        pooled = model(img).mean((2, 3))
        torch.testing.assert_close(pooled, IRNClassifier.forward(model, img), atol=1e-5, rtol=1e-4)
    usage, _teacher, strong, weak = make_usage(model)
    with torch.no_grad():
        teacher_cams = weak(img)
    out = usage(strong(img), teacher_cams, label)
    out.loss.backward()
    print("usage", out.generation.item(), out.consistency.item())
    with tempfile.TemporaryDirectory() as cam_out_dir:
        write_seeds(model, img[1:], label[1:], "2007_000032", cam_out_dir)
        cam_dict = np.load(Path(cam_out_dir) / "2007_000032.npy", allow_pickle=True).item()
        print(cam_dict["keys"], cam_dict["high_res"].shape, tuple(cam_dict["cam"].shape))


if __name__ == "__main__":
    main()
