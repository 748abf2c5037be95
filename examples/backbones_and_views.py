"""One USAGE training step with a student view, a weak teacher view and an EMA teacher.

Runs on CPU in a few seconds with a tiny ViT and random data:

    python examples/backbones_and_views.py
"""

from __future__ import annotations

import torch

import seedkit
from seedkit.backbones import create_seed_model

torch.manual_seed(0)

# A ViT of any timm family; depth=2 keeps the demo fast. Input sizes are free
# (multiples of the patch size, here 16) and need not be square.
model = create_seed_model("deit_tiny_patch16_224", num_classes=20, depth=2, img_size=96)
print(model.family, model.output_stride, model.out_channels)  # vit 16 192

backbone, head = model.param_groups()  # 10x learning rate for the new head
optimizer = torch.optim.AdamW([{"params": backbone, "lr": 1e-4}, {"params": head, "lr": 1e-3}])

generator = torch.Generator().manual_seed(0)
student = seedkit.SelfAdaptiveView(model, drop_ratio=0.3, generator=generator)  # strong
teacher = seedkit.EMATeacher(model, momentum=0.999, schedule="cosine", total_steps=1000)
weak = seedkit.SelfAdaptiveView(teacher, drop_ratio=0.1, generator=generator)  # weak
criterion = seedkit.USAGELoss.for_backbone(model)

images = torch.randn(4, 3, 96, 128)
labels = torch.zeros(4, 20)
labels[:, 3] = 1

out = student(images)  # SeedModelOutput(cams, features, logits)
with torch.no_grad():
    target = weak(images)  # the teacher stays in eval mode and still drops channels
loss = criterion(out.cams, target.cams, labels).loss
with torch.no_grad():  # the same call again, with the same dropped channels
    replayed = student(images, segments=student.last_segments)
print("replay identical:", torch.allclose(replayed.cams, out.cams, atol=1e-6))
optimizer.zero_grad()
loss.backward()
optimizer.step()
teacher.update(model)  # t = m * t + (1 - m) * s

print(tuple(out.cams.shape))  # (4, 20, 6, 8)
print(len(student.last_segments), "blocks adjusted;", student.last_segments["encoder.blocks.0"])
print(f"loss {loss.item():.4f}, teacher momentum {teacher.momentum:.6f}")
