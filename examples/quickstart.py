"""Quick start: train a tiny seed model for a few steps with the USAGE objective.

Builds a timm ResNet-18 seed model (random weights, nothing is downloaded), a
strong student view and a weak EMA-teacher view, and trains on random images
with random multi-hot labels, printing the generation and consistency losses.
It shows the moving parts in 60 lines; ``examples/train_voc.py`` is the real job.

Run:  python examples/quickstart.py [--steps 20] [--backbone resnet18]
"""

from __future__ import annotations

import argparse

import torch

import seedkit
from seedkit.backbones import create_seed_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    num_classes = 20
    model = create_seed_model(args.backbone, num_classes=num_classes)
    student = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)  # strong view
    teacher = seedkit.EMATeacher(model, momentum=0.99)
    teacher_view = seedkit.SelfAdaptiveView(teacher.module, drop_ratio=0.1)  # weak view
    # The full objective: the presets leave the consistency term off (weight 0).
    criterion = seedkit.USAGELoss.for_backbone(model, consistency_weight=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    print(f"{args.backbone}: family={model.family}, criterion={criterion}")

    for step in range(1, args.steps + 1):
        images = torch.randn(4, 3, args.image_size, args.image_size)
        labels = (torch.rand(4, num_classes) < 0.15).float()
        labels[torch.arange(4), torch.randint(num_classes, (4,))] = 1.0
        with torch.no_grad():
            teacher_cams = teacher_view(images).cams
        out = criterion(student(images).cams, teacher_cams, labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        teacher.update(model)
        print(
            f"step {step:3d}  loss {out.loss.item():.4f}  "
            f"generation {out.generation.item():.4f}  consistency {out.consistency.item():.4f}"
        )


if __name__ == "__main__":
    main()
