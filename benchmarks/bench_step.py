"""Cost of one USAGE training step relative to one plain CAM step.

USAGE step: student strong view forward + backward, teacher weak view forward
without gradients, USAGE loss, optimizer step, EMA update.
Plain CAM step: model forward + backward (GAP logits, multilabel soft margin),
optimizer step. Same model, batch and input; the two are timed alternately in
one run; printed are the median of the per-pair ratios and the ratio of the
fastest times (less sensitive to a busy machine).

    PYTHONPATH=src python benchmarks/bench_step.py [--repeats 8] [--size 112] [--batch 8]

Target: ratio <= 1.6 for resnet18 and deit_tiny at 112 px, batch 8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F

import seedkit
from seedkit.backbones import create_seed_model

MODELS = {
    "resnet18": {},
    "deit_tiny_patch16_224": {"img_size": 112},
}


def bench(name: str, kwargs: dict, size: int, batch: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    model = create_seed_model(name, num_classes=20, **kwargs).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    strong = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)
    teacher = seedkit.EMATeacher(model, momentum=0.999)
    weak = seedkit.SelfAdaptiveView(teacher, drop_ratio=0.1)
    criterion = seedkit.USAGELoss.for_backbone(model)
    x = torch.randn(batch, 3, size, size, device=device)
    labels = (torch.rand(batch, 20, device=device) < 0.15).float()
    labels[:, 0] = 1.0

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def plain_step() -> None:
        out = model(x)
        loss = F.multilabel_soft_margin_loss(out.logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def usage_step() -> None:
        student = strong(x)
        with torch.no_grad():
            target = weak(x)
        loss = criterion(student.cams, labels, target.cams).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        teacher.update(model)

    def timed(step) -> float:
        sync()
        start = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - start

    for _ in range(2):  # warm-up
        plain_step()
        usage_step()
    plain, usage, ratios = [], [], []
    for i in range(repeats):
        if i % 2 == 0:  # alternate the order within a pair
            p, u = timed(plain_step), timed(usage_step)
        else:
            u, p = timed(usage_step), timed(plain_step)
        plain.append(p)
        usage.append(u)
        ratios.append(u / p)
    return {
        "plain_s": statistics.median(plain),
        "usage_s": statistics.median(usage),
        "ratio": statistics.median(ratios),
        "ratio_min": min(usage) / min(plain),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default). 1 by default: on a shared, busy CPU every "
        "multi-threaded op waits for all its threads to be scheduled, which inflates the cost of "
        "small ops (the view's hooks) far beyond their arithmetic",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"device={args.device} threads={torch.get_num_threads()} "
        f"size={args.size} batch={args.batch}"
    )
    print(
        f"{'model':<24} {'plain s':>9} {'usage s':>9} {'ratio':>7} {'min/min':>8}  (target <= 1.6)"
    )
    for name in args.models:
        result = bench(name, MODELS[name], args.size, args.batch, args.repeats, args.device)
        print(
            f"{name:<24} {result['plain_s']:9.4f} {result['usage_s']:9.4f} {result['ratio']:7.3f} "
            f"{result['ratio_min']:8.3f}"
        )


if __name__ == "__main__":
    main()
