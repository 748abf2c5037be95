"""Drop seedkit into psa / SEAM (ResNet-38): the model change, the loss line, views, seeds.

Checked against psa at commit 9493e59 (``network.resnet38_cls.Net``) and SEAM at
commit 3212261 (``network.resnet38_SEAM.Net``): ``check_reference.py`` runs this
file's ``main()`` with ``PsaClassifier`` and ``SEAMNet`` bound to those classes.
In CI (``python examples/dropin/psa_seam.py``, ``tests/test_dropin.py``) they are
the stand-ins of ``standins.py``. The docs page "Drop into your codebase" shows
the parts between the ``# [name]`` markers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from standins import NUM_CLASSES, PsaClassifier, SEAMNet  # psa's / SEAM's Net, see above

import seedkit
import seedkit.cam


# [model]
class Net(PsaClassifier):  # psa: network/resnet38_cls.py, Net; replace its forward by this one
    def forward(self, x):
        x = self.forward_as_dict(x)["conv6"]  # the ResNet-38 features (B, 4096, h, w)
        x = self.dropout7(x)
        return self.fc8(x)  # the CAM (B, 20, h, w); was: avg_pool2d -> fc8 -> view


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


def seam_classification_loss(cam1, label):  # SEAM: train_SEAM.py, cam1, cam_rv1 = model(img1)
    # was: F.multilabel_soft_margin_loss(F.adaptive_avg_pool2d(cam1, (1, 1))[:, 1:], label[:, 1:])
    return criterion(cam1[:, 1:], label[:, 1:, 0, 0])  # cam1: background first; label (N, 21, 1, 1)


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
    out = usage(cams, teacher_cams, label)
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    teacher.update(model)
    return out


def seam_usage_loss(img, label, usage, strong, weak):  # SEAM: the model returns (cam, cam_rv)
    cams = strong(img)[0][:, 1:]  # cam1 without the background channel
    with torch.no_grad():
        teacher_cams = weak(img)[0][:, 1:]
    return usage(cams, teacher_cams, label[:, 1:, 0, 0]).loss  # with loss_er, loss_ecr as before


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
    img = torch.randn(2, 3, 32, 40)
    label = torch.zeros(2, NUM_CLASSES)
    label[0, 14] = label[1, [2, 7]] = 1
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    print("psa loss", psa_step(model, img, label, optimizer).item())
    parts = make_usage(model)
    out = usage_step(model, img, label, optimizer, *parts)
    print("psa usage", out.generation.item(), out.consistency.item())
    with tempfile.TemporaryDirectory() as out_cam:
        write_seeds(model, img[:1], label[:1], "2007_000032", out_cam)
        seeds = np.load(Path(out_cam) / "2007_000032.npy", allow_pickle=True).item()
        print("psa seeds", {c: m.shape for c, m in seeds.items()})
    with torch.no_grad():  # eval mode: pooling the CAM gives the logits psa's forward returned
        torch.testing.assert_close(model(img).mean((2, 3)), PsaClassifier.forward(model, img))
    seam = SEAMNet()  # SEAM needs no model change
    cam1, _cam_rv1 = seam(img)
    seam_label = torch.cat([torch.ones(2, 1), label], dim=1)[:, :, None, None]
    loss = seam_classification_loss(cam1, seam_label)
    loss.backward()
    print("SEAM loss", loss.item(), tuple(cam1.shape))
    usage, _teacher, strong, weak = make_usage(seam)
    print("SEAM usage", seam_usage_loss(img, seam_label, usage, strong, weak).item())


if __name__ == "__main__":
    main()
