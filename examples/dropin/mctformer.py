"""Drop seedkit into MCTformer-V2: the patch CAM, the loss line, views, seeds.

Checked against MCTformer at commit 9606597 (the last with MCTformer-V2's
``models.MCTformerV2``; later commits replace it by MCTformer+):
``check_reference.py`` runs this file's ``main()`` with ``MCTformerV2`` bound to
that class. In CI (``python examples/dropin/mctformer.py``,
``tests/test_dropin.py``) it is the stand-in of ``standins.py``. The docs page
"Drop into your codebase" shows the parts between the ``# [name]`` markers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from standins import NUM_CLASSES, MCTformerV2  # MCTformer's models.MCTformerV2, see above

import seedkit
import seedkit.cam


# [model]
class Net(MCTformerV2):  # MCTformer: models.py, next to MCTformerV2 (build Net in its place)
    def forward(self, x, return_att=False, n_layers=12, attention_type="fused"):
        if return_att:  # MCTformer's seed step (--gen_attention_maps): unchanged
            return super().forward(x, return_att, n_layers, attention_type)
        h, w = (s // self.patch_embed.patch_size[0] for s in x.shape[2:])
        x_cls, x_patch, _attn_weights = self.forward_features(x)  # x_patch: (B, h * w, D)
        x_patch = x_patch.transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w)
        return x_cls.mean(-1), self.head(x_patch)  # the patch CAM (B, 20, h, w): was avgpool(...)


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
    out = usage(patch_cams, teacher_cams, targets)
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
    # deit_small_MCTformerV2_patch16_224's keywords, narrower and shallower to run anywhere
    model = Net(patch_size=16, embed_dim=64, depth=2, num_heads=2, num_classes=NUM_CLASSES)
    samples = torch.randn(2, 3, 64, 96)
    targets = torch.zeros(2, NUM_CLASSES)
    targets[0, 14] = targets[1, [2, 7]] = 1
    loss = mctformer_loss(model, samples, targets)
    loss.backward()
    print("loss", loss.item())
    usage, _teacher, strong, weak = make_usage(model)
    print("usage", usage_loss(samples, targets, usage, strong, weak).item())
    model.eval()
    with torch.no_grad():  # pooling the patch CAM gives MCTformer-V2's patch logits
        cls_logits, patch_cams = model(samples)
        old_cls_logits, old_patch_logits = MCTformerV2.forward(model, samples)
        torch.testing.assert_close(cls_logits, old_cls_logits)
        torch.testing.assert_close(patch_cams.mean((2, 3)), old_patch_logits)
    with torch.no_grad():  # MCTformer's own seed path still works
        _, cams, patch_attn = model(samples, return_att=True, n_layers=2)
    print("return_att", tuple(cams.shape), tuple(patch_attn.shape))
    with tempfile.TemporaryDirectory() as out:
        write_seeds(model, samples[:1], targets[:1], "2007_000032", out)
        seeds = np.load(Path(out) / "2007_000032.npy", allow_pickle=True).item()
        print({c: m.shape for c, m in seeds.items()})


if __name__ == "__main__":
    main()
