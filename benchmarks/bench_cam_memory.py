"""Peak memory of multi-scale CAM inference of one VOC-sized image, up to scale 2.0.

ResNet-50 (``pretrained=False``: the weights do not change the memory) at output
stride 16 and 8, one 500 x 375 image, scales (1.0, 0.5, 1.5, 2.0) with flips.
For each variant it reports the peak extra memory of one whole inference (the
peak of the allocator's ``Total Allocated`` counter in a ``torch.profiler``
trace, relative to its value just before; CPU) and its time:

- ``all at once``: the naive batch, all 8 views padded to the scale-2.0 size
  (1000 x 750) in one forward pass;
- ``IRN loop``: IRN's ``make_cam.py`` pattern, one forward per scale of the
  image and its flip, every scale's output kept, then upsampled (all classes,
  stride-4 and full-size maps) and summed;
- ``infer_cams``: :func:`seedkit.cam.infer_cams`, one forward per scale of the
  image and its flip, present classes only;
- ``infer_cams max_pixels=1e6``: the same with ``max_pixels=1_000_000``: one
  view per forward at scales 1.5 and 2.0.

The bounded run's seeds are compared with the unbounded run's (largest absolute
difference printed). On a CUDA device (``--device cuda``) the peak is
``torch.cuda.max_memory_allocated``.

Run: ``PYTHONPATH=src python benchmarks/bench_cam_memory.py [--strides 16 8] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bench_kernels import profiled_peak  # noqa: E402  (this folder: one trace reader)

from seedkit.backbones import create_seed_model  # noqa: E402
from seedkit.cam import cams_of, infer_cams  # noqa: E402

SCALES = (1.0, 0.5, 1.5, 2.0)
HEIGHT, WIDTH = 375, 500
NUM_CLASSES = 20


def scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def all_at_once(model: torch.nn.Module, image: torch.Tensor, labels: torch.Tensor) -> None:
    """Every view in one batch, padded to the largest scale's size (the naive bound)."""
    size = scaled((HEIGHT, WIDTH), max(SCALES))
    views = []
    for scale in SCALES:
        x = F.interpolate(image, size=scaled((HEIGHT, WIDTH), scale), mode="bilinear")
        for view in (x, x.flip(-1)):
            pad = (0, size[1] - view.shape[-1], 0, size[0] - view.shape[-2])
            views.append(F.pad(view, pad))
    with torch.inference_mode():
        cams_of(model(torch.cat(views)))


def irn_loop(model: torch.nn.Module, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IRN's make_cam.py: outputs of every scale kept, then stride-4 and full-size maps."""
    with torch.inference_mode():
        outputs = []
        for scale in SCALES:
            x = F.interpolate(image, size=scaled((HEIGHT, WIDTH), scale), mode="bilinear")
            cams = F.relu(cams_of(model(torch.cat([x, x.flip(-1)]))))
            outputs.append(cams[0] + cams[1].flip(-1))
        strided_size = (-(-HEIGHT // 4), -(-WIDTH // 4))
        strided_up_size = (strided_size[0] * 4, strided_size[1] * 4)
        strided = torch.sum(
            torch.stack(
                [F.interpolate(o[None], strided_size, mode="bilinear")[0] for o in outputs]
            ),
            0,
        )
        highres = [F.interpolate(o.unsqueeze(1), strided_up_size, mode="bilinear") for o in outputs]
        highres = torch.sum(torch.stack(highres, 0), 0)[:, 0, :HEIGHT, :WIDTH]
        valid = torch.nonzero(labels[0])[:, 0]
        strided = strided[valid] / (F.adaptive_max_pool2d(strided[valid], (1, 1)) + 1e-5)
        highres = highres[valid] / (F.adaptive_max_pool2d(highres[valid], (1, 1)) + 1e-5)
        return highres


def cpu_peak(function: Callable[[], object]) -> tuple[int, float]:
    """Peak extra bytes of the CPU allocator during ``function()``, and its seconds."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        start = time.perf_counter()
        function()
        seconds = time.perf_counter() - start
    return profiled_peak(prof), seconds


def cuda_peak(function: Callable[[], object]) -> tuple[int, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    function()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before, time.perf_counter() - start


def run(stride: int, device: str, variants: list[str]) -> list[dict[str, object]]:
    torch.manual_seed(0)
    model = create_seed_model("resnet50", NUM_CLASSES, pretrained=False, output_stride=stride)
    model = model.to(device).eval()
    image = torch.randn(1, 3, HEIGHT, WIDTH, device=device)
    labels = torch.zeros(1, NUM_CLASSES, device=device)
    labels[0, [4, 14]] = 1.0
    measure = cuda_peak if device.startswith("cuda") else cpu_peak
    with torch.inference_mode():  # warm-up at a small size (allocator, oneDNN primitives)
        model(torch.randn(2, 3, 64, 64, device=device))
    calls = {
        "all at once": lambda: all_at_once(model, image, labels),
        "IRN loop": lambda: irn_loop(model, image, labels),
        "infer_cams": lambda: infer_cams(model, image, labels, SCALES),
        "infer_cams max_pixels=1e6": lambda: infer_cams(
            model, image, labels, SCALES, max_pixels=1_000_000
        ),
    }
    rows = []
    for name in variants:
        peak, seconds = measure(calls[name])
        rows.append({"stride": stride, "variant": name, "peak_bytes": peak, "seconds": seconds})
        print(
            f"  output stride {stride}, {name}: {peak / 2**20:.0f} MB, {seconds:.1f} s", flush=True
        )
    if "infer_cams" in variants and "infer_cams max_pixels=1e6" in variants:
        unbounded = calls["infer_cams"]()
        bounded = calls["infer_cams max_pixels=1e6"]()
        difference = float((unbounded - bounded).abs().max())
        rows.append({"stride": stride, "variant": "max |bounded - unbounded|", "value": difference})
        print(f"  output stride {stride}, seeds max |bounded - unbounded| = {difference:.2g}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strides", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["all at once", "IRN loop", "infer_cams", "infer_cams max_pixels=1e6"],
    )
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.device}, {args.threads} threads, ResNet-50, one "
        f"{WIDTH}x{HEIGHT} image, scales {SCALES} + flips, load average {os.getloadavg()[0]:.1f}"
    )
    rows = [row for stride in args.strides for row in run(stride, args.device, args.variants)]
    print("| output stride | variant | peak extra MB | time s | peak / infer_cams |")
    print("|---|---|---|---|---|")
    for stride in args.strides:
        these = [r for r in rows if r["stride"] == stride and "peak_bytes" in r]
        base = next((r["peak_bytes"] for r in these if r["variant"] == "infer_cams"), None)
        for row in these:
            ratio = f"{row['peak_bytes'] / base:.2f}x" if base else "-"
            print(
                f"| {stride} | {row['variant']} | {row['peak_bytes'] / 2**20:.0f} "
                f"| {row['seconds']:.1f} | {ratio} |"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
