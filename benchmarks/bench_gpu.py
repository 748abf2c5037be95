"""seedkit on the first CUDA machine it meets: kernels, losses, training steps, CAM inference.

Run it once on any CUDA machine and send back the JSON it writes::

    PYTHONPATH=src python benchmarks/bench_gpu.py [--json bench_gpu.json] [--quick]

On a machine without a CUDA device it says so and exits 0. Nothing is
downloaded: every model is built with ``pretrained=False`` (the weights do not
change time or memory). Each section runs on its own: a failure (an error, an
out-of-memory) is printed and recorded in the JSON, and the next section runs;
the exit status is 1 if any section failed.

Sections:

1. ``environment``: GPU, torch, triton, and :func:`seedkit.kernels.self_check`
   of the Triton kernels and of the compiled path on this GPU (float32,
   float64), so a broken kernel shows up here first.
2. ``kernels``: one forward + backward at ``(16, 21, 56, 56)``, ``(8, 81, 64,
   64)`` and ``(16, 21, 112, 112)`` of the temperature pooling and the KL
   consistency loss: the naive autograd composition against the Triton kernel,
   the compiled (``torch.compile``) kernel and the public functions
   (:func:`seedkit.temperature_pool`, :func:`seedkit.losses.consistency_loss`)
   with the input checks in their default mode (deferred on CUDA: no host
   synchronisation), ``"immediate"`` (one synchronisation per call) and off;
   also the public functions on bfloat16 maps (what AMP gives them). Time:
   median over repeats of a timed loop; peak extra memory:
   ``torch.cuda.max_memory_allocated`` above the memory in use before. Largest
   differences of the Triton outputs and gradients from the reference.
3. ``steps``: one USAGE training step (strong view forward + backward, EMA
   teacher weak view forward, generation + 0.1 x consistency loss, optimizer
   step, EMA update) against one plain CAM step (forward, GAP multilabel soft
   margin, backward, step), AMP on (bfloat16, or float16 with a GradScaler),
   ResNet-50 at 448 px (batch 16) and DeiT-S at 224 px (batch 64); the two
   step kinds alternate, the ratio is the median of per-pair ratios.
4. ``inference``: multi-scale CAM inference of 500 x 375 images (scales 1.0,
   0.5, 1.5, 2.0 and flips, ResNet-50 at output stride 16, 20 classes) in
   images per second and peak memory: a per-image loop like IRN's
   ``make_cam.py`` against :func:`seedkit.cam.infer_cams` per image, with
   ``max_pixels=1_000_000``, on batches of 8 equal-size images, and on batches
   of 8 channels-last under bfloat16 autocast; plus the peak memory of one
   image at output stride 8 and 16 for the naive all-views batch, the IRN loop,
   ``infer_cams`` and ``infer_cams(max_pixels=1_000_000)``.

``--cpu-smoke`` runs every section with tiny sizes on the CPU to test this
script itself (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import seedkit  # noqa: E402
from seedkit import kernels  # noqa: E402
from seedkit.backbones import create_seed_model  # noqa: E402
from seedkit.cam import infer_cams  # noqa: E402
from seedkit.kernels import fused_kl_consistency, fused_temperature_pool  # noqa: E402
from seedkit.reference import scale_divisor  # noqa: E402

KERNEL_SHAPES = [(16, 21, 56, 56), (8, 81, 64, 64), (16, 21, 112, 112)]
TAU = 2.0
SCALE = "std"  # the losses' default temperature scale (divide by each map's spread)
SCALES = (1.0, 0.5, 1.5, 2.0)
VOC_SIZE = (375, 500)
NUM_CLASSES = 20


class Bench:
    """Device-specific timing and memory, and the sizes of this run."""

    def __init__(self, device: str, quick: bool, smoke: bool) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.smoke = smoke
        self.reps = 3 if smoke else (10 if quick else 30)
        self.inner = 2 if smoke else (10 if quick else 20)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time_loop(self, function: Callable[[], Any]) -> list[float]:
        """Seconds per call: ``inner`` calls per timed loop, ``reps`` loops."""
        for _ in range(3):
            function()
        self.sync()
        times = []
        for _ in range(self.reps):
            start = time.perf_counter()
            for _ in range(self.inner):
                function()
            self.sync()
            times.append((time.perf_counter() - start) / self.inner)
        return times

    def peak(self, function: Callable[[], Any]) -> int | None:
        """Peak bytes allocated above those in use before one call (CUDA only)."""
        if not self.cuda:
            function()
            return None
        self.sync()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        function()
        self.sync()
        return torch.cuda.max_memory_allocated(self.device) - before


def mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


# --------------------------------------------------------------------------------------
# 1. environment


def section_environment(bench: Bench) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "seedkit": seedkit.__version__,
        "triton": None,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as error:  # not installed, or broken
        info["triton"] = f"unavailable ({type(error).__name__}: {error})"
    if bench.cuda:
        props = torch.cuda.get_device_properties(bench.device)
        info |= {
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported(),
        }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks = {}
        for backend in ("triton", "fused"):
            if backend == "triton" and not (bench.cuda and kernels.triton_available()):
                continue
            for dtype in (torch.float32, torch.float64):
                start = time.perf_counter()
                passed = kernels.self_check(backend, bench.device, dtype)
                checks[f"{backend} {str(dtype)[6:]}"] = {
                    "passed": passed,
                    "seconds": round(time.perf_counter() - start, 2),
                }
    info["self_checks"] = checks
    info["self_check_results"] = kernels.self_check_results()
    info["warnings"] = [str(w.message) for w in caught]
    shape = torch.empty(*KERNEL_SHAPES[0], device=bench.device)
    info["auto_backend_for_kernel_shapes"] = kernels.resolve_backend(shape)
    for key, value in info.items():
        print(f"  {key}: {value}")
    return info


# --------------------------------------------------------------------------------------
# 2. kernels and public losses


def kernel_variants(
    shape: tuple[int, int, int, int], bench: Bench, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, dict[str, dict[str, Callable[[], torch.Tensor]]]]:
    batch, classes, height, width = shape
    generator = torch.Generator().manual_seed(0)
    a = (3 * torch.randn(batch, classes, height * width, generator=generator)).to(bench.device)
    a = a.to(dtype).requires_grad_()
    teacher = (3 * torch.randn(batch, classes, height * width, generator=generator)).to(a)
    labels = (torch.rand(batch, classes, generator=generator) < 0.3).float().to(bench.device)
    labels[:, 0] = 1.0
    present = labels > 0

    def present_mean(per_class: torch.Tensor) -> torch.Tensor:
        per_class = torch.where(present, per_class, torch.zeros_like(per_class))
        return per_class.sum() / labels.sum().clamp_min(1.0)

    def with_checks(mode: object, function: Callable[[], torch.Tensor]) -> Callable:
        def call() -> torch.Tensor:
            with seedkit.input_checks(mode):
                return function()

        return call

    def public_pool() -> torch.Tensor:
        return seedkit.temperature_pool(a.view(shape), TAU, scale=SCALE)

    def public_kl() -> torch.Tensor:
        return seedkit.losses.consistency_loss(
            a.view(shape),
            teacher.view(shape),
            labels,
            temperature=TAU,
            teacher_temperature=1.0,
            scale=SCALE,
        )

    def naive_pool() -> torch.Tensor:
        x = a.float()
        divisor = scale_divisor(x, None, SCALE)
        logits = x / TAU if divisor is None else x / divisor / TAU
        return (torch.softmax(logits, dim=2) * x).sum(dim=2)

    pools: dict[str, Callable[[], torch.Tensor]] = {
        "naive": naive_pool,
        "public": public_pool,
        "public immediate": with_checks("immediate", public_pool),
        "public unchecked": with_checks(False, public_pool),
    }
    kls: dict[str, Callable[[], torch.Tensor]] = {
        "naive": lambda: present_mean(
            fused_kl_consistency(a, teacher, None, TAU, 1.0, SCALE, backend="reference")
        ),
        "public": public_kl,
        "public immediate": with_checks("immediate", public_kl),
        "public unchecked": with_checks(False, public_kl),
    }
    if dtype == torch.float32:
        backends = ["eager", "fused"]
        backends += ["triton"] if bench.cuda and kernels.triton_available() else []
        for backend in backends:
            pools[backend] = lambda b=backend: fused_temperature_pool(
                a, None, TAU, SCALE, backend=b
            )
            kls[backend] = lambda b=backend: present_mean(
                fused_kl_consistency(a, teacher, None, TAU, 1.0, SCALE, backend=b)
            )
    return a, {"temperature_pool": pools, "kl_consistency": kls}


def forward_backward(leaf: torch.Tensor, function: Callable[[], torch.Tensor]) -> None:
    leaf.grad = None
    function().sum().backward()


def section_kernels(bench: Bench) -> dict[str, Any]:
    shapes = [(2, 3, 8, 8)] if bench.smoke else KERNEL_SHAPES
    rows = []
    for shape in shapes:
        for dtype in (torch.float32, torch.bfloat16):
            leaf, operations = kernel_variants(shape, bench, dtype)
            for op, variants in operations.items():
                row: dict[str, Any] = {"op": op, "shape": list(shape), "dtype": str(dtype)[6:]}
                for name, function in variants.items():
                    try:
                        step = partial(forward_backward, leaf, function)
                        times = bench.time_loop(step)
                        peak = bench.peak(step)
                        row[name] = {
                            "ms": statistics.median(times) * 1e3,
                            "ms_min": min(times) * 1e3,
                            "peak_mb": None if peak is None else peak / 2**20,
                        }
                    except Exception as error:
                        row[name] = {"error": f"{type(error).__name__}: {error}"}
                if "triton" in variants:
                    # What "triton" ran on: itself, or its fallback after a failed self-check.
                    row["triton_ran_as"] = kernels.resolve_backend(leaf, "triton")
                    row["triton_vs_reference"] = triton_differences(variants, leaf)
                rows.append(row)
                print_kernel_row(row)
    seedkit.flush_input_checks()
    return {"rows": rows}


def triton_differences(
    variants: dict[str, Callable[[], torch.Tensor]], leaf: torch.Tensor
) -> dict[str, float]:
    results = {}
    for name in ("triton", "naive"):
        leaf.grad = None
        out = variants[name]()
        out.sum().backward()
        results[name] = (out.detach().double(), leaf.grad.double())
    (out, grad), (ref, ref_grad) = results["triton"], results["naive"]
    return {
        "output_rel": float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6)),
        "grad_rel": float((grad - ref_grad).abs().max() / ref_grad.abs().max().clamp_min(1e-12)),
    }


def print_kernel_row(row: dict[str, Any]) -> None:
    naive = row.get("naive", {}).get("ms")
    parts = []
    for name, value in row.items():
        if not isinstance(value, dict) or name.startswith("triton_"):
            continue
        if "error" in value:
            parts.append(f"{name}: {value['error'][:80]}")
            continue
        ratio = f" ({naive / value['ms']:.2f}x)" if naive and name != "naive" else ""
        peak = value.get("peak_mb")
        memory = "" if peak is None else f", {peak:.1f} MB"
        parts.append(f"{name} {value['ms']:.3f} ms{ratio}{memory}")
    print(f"  {row['op']} {tuple(row['shape'])} {row['dtype']}: " + "; ".join(parts))
    if "triton_vs_reference" in row:
        print(
            f"    triton (ran as {row['triton_ran_as']!r}) vs naive, largest relative "
            f"difference: {row['triton_vs_reference']}"
        )


# --------------------------------------------------------------------------------------
# 3. training steps


def usage_criterion(family: str) -> torch.nn.Module:
    try:
        return seedkit.USAGELoss.for_backbone(family, consistency_weight=0.1)
    except TypeError:  # an older or newer signature: build it from its parts
        return seedkit.USAGELoss(
            seedkit.SeedGenerationLoss.for_backbone(family),
            seedkit.ConsistencyLoss(),
            consistency_weight=0.1,
        )


def step_pair(
    name: str, size: int, batch: int, bench: Bench, kwargs: dict[str, Any]
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_seed_model(name, num_classes=NUM_CLASSES, pretrained=False, **kwargs)
    model = model.to(bench.device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    strong = seedkit.SelfAdaptiveView(model, drop_ratio=0.3)
    teacher = seedkit.EMATeacher(model, momentum=0.999)
    weak = seedkit.SelfAdaptiveView(teacher, drop_ratio=0.1)
    criterion = usage_criterion(model.family)
    x = torch.randn(batch, 3, size, size, device=bench.device)
    labels = (torch.rand(batch, NUM_CLASSES, device=bench.device) < 0.15).float()
    labels[:, 0] = 1.0
    amp_dtype = torch.bfloat16
    if bench.cuda and not torch.cuda.is_bf16_supported():
        amp_dtype = torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=bench.cuda and amp_dtype == torch.float16)

    def autocast() -> torch.autocast:
        return torch.autocast(bench.device.type, dtype=amp_dtype)

    def finish(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def cam_step() -> None:
        with autocast():
            out = model(x)
            loss = F.multilabel_soft_margin_loss(out.logits.float(), labels)
        finish(loss)

    def usage_step() -> None:
        with autocast():
            student = strong(x)
            with torch.no_grad():
                target = weak(x)
            loss = criterion(student.cams, target.cams, labels).loss
        finish(loss)
        teacher.update(model)

    for _ in range(2):
        cam_step()
        usage_step()
    bench.sync()

    def timed(step: Callable[[], None]) -> float:
        bench.sync()
        start = time.perf_counter()
        step()
        bench.sync()
        return time.perf_counter() - start

    cam, usage, ratios = [], [], []
    for i in range(bench.reps):
        if i % 2 == 0:
            c, u = timed(cam_step), timed(usage_step)
        else:
            u, c = timed(usage_step), timed(cam_step)
        cam.append(c)
        usage.append(u)
        ratios.append(u / c)
    seedkit.flush_input_checks()
    cam_peak, usage_peak = bench.peak(cam_step), bench.peak(usage_step)
    result = {
        "model": name,
        "size": size,
        "batch": batch,
        "amp": str(amp_dtype)[6:],
        "cam_ms": statistics.median(cam) * 1e3,
        "usage_ms": statistics.median(usage) * 1e3,
        "ratio": statistics.median(ratios),
        "ratio_min": min(usage) / min(cam),
        "cam_peak_mb": None if cam_peak is None else cam_peak / 2**20,
        "usage_peak_mb": None if usage_peak is None else usage_peak / 2**20,
    }
    print(
        f"  {name} {size}px batch {batch} ({result['amp']} autocast): "
        f"CAM step {result['cam_ms']:.1f} ms ({mb(cam_peak)} MB peak), "
        f"USAGE step {result['usage_ms']:.1f} ms ({mb(usage_peak)} MB peak), "
        f"USAGE/CAM {result['ratio']:.2f}x (min/min {result['ratio_min']:.2f}x)"
    )
    return result


def section_steps(bench: Bench) -> dict[str, Any]:
    configs = [("resnet50", 448, 16, {}), ("deit_small_patch16_224", 224, 64, {})]
    if bench.smoke:
        configs = [("resnet18", 64, 2, {}), ("deit_tiny_patch16_224", 64, 2, {"img_size": 64})]
    rows = []
    for name, size, batch, kwargs in configs:
        try:
            rows.append(step_pair(name, size, batch, bench, kwargs))
        except Exception as error:
            rows.append({"model": name, "error": f"{type(error).__name__}: {error}"})
            print(f"  {name}: failed: {type(error).__name__}: {error}")
        if bench.cuda:
            torch.cuda.empty_cache()
    return {"rows": rows}


# --------------------------------------------------------------------------------------
# 4. CAM inference


def section_inference(bench: Bench) -> dict[str, Any]:
    from bench_cam_memory import irn_loop
    from bench_cam_memory import run as memory_run

    count = 2 if bench.smoke else 16
    height, width = (47, 63) if bench.smoke else VOC_SIZE
    torch.manual_seed(0)
    model = create_seed_model("resnet50", NUM_CLASSES, pretrained=False, output_stride=16)
    model = model.to(bench.device).eval()
    images = torch.randn(count, 3, height, width, device=bench.device)
    labels = torch.zeros(count, NUM_CLASSES, device=bench.device)
    for index in range(count):
        labels[index, [(index * 7) % NUM_CLASSES, (index * 3 + 1) % NUM_CLASSES]] = 1.0

    def per_image(function: Callable[[torch.Tensor, torch.Tensor], Any]) -> Callable[[], None]:
        def run() -> None:
            for i in range(count):
                function(images[i : i + 1], labels[i : i + 1])

        return run

    def batched(size: int, **kwargs: Any) -> Callable[[], None]:
        def run() -> None:
            for i in range(0, count, size):
                infer_cams(model, images[i : i + size], labels[i : i + size], SCALES, **kwargs)

        return run

    def batched_amp() -> None:
        with torch.autocast(bench.device.type, dtype=torch.bfloat16):
            batched(8, channels_last=True)()

    def irn(image: torch.Tensor, label: torch.Tensor) -> None:
        if not bench.smoke:
            irn_loop(model, image, label)
        else:  # the IRN loop is written for 500 x 375 images
            infer_cams(model, image, label, SCALES)

    variants = {
        "IRN make_cam loop": per_image(irn),
        "infer_cams, 1 image": per_image(lambda i, y: infer_cams(model, i, y, SCALES)),
        "infer_cams, 1 image, max_pixels=1e6": per_image(
            lambda i, y: infer_cams(model, i, y, SCALES, max_pixels=1_000_000)
        ),
        "infer_cams, batch 8": batched(8),
        "infer_cams, batch 8, channels_last, bf16 autocast": batched_amp,
    }
    rows = []
    reps = 2 if bench.smoke else 3
    for name, function in variants.items():
        try:
            function()  # warm-up (cudnn autotuning, allocator)
            bench.sync()
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                function()
                bench.sync()
                times.append(time.perf_counter() - start)
            peak = bench.peak(function)
            row = {
                "variant": name,
                "images_per_s": count / statistics.median(times),
                "peak_mb": None if peak is None else peak / 2**20,
            }
        except Exception as error:
            row = {"variant": name, "error": f"{type(error).__name__}: {error}"}
        rows.append(row)
    base = rows[0].get("images_per_s")
    for row in rows:
        if "error" in row:
            print(f"  {row['variant']}: failed: {row['error']}")
            continue
        ratio = f" ({row['images_per_s'] / base:.2f}x the IRN loop)" if base else ""
        peak = "" if row["peak_mb"] is None else f", peak {row['peak_mb']:.0f} MB"
        print(f"  {row['variant']}: {row['images_per_s']:.2f} images/s{ratio}{peak}")
    memory = []
    if not bench.smoke:
        for stride in (16, 8):
            try:
                memory += memory_run(
                    stride,
                    str(bench.device),
                    ["all at once", "IRN loop", "infer_cams", "infer_cams max_pixels=1e6"],
                )
            except Exception as error:
                memory.append({"stride": stride, "error": f"{type(error).__name__}: {error}"})
                print(f"  output stride {stride}: failed: {type(error).__name__}: {error}")
            torch.cuda.empty_cache()
    return {"throughput": rows, "one_image_memory": memory}


# --------------------------------------------------------------------------------------

SECTIONS = {
    "environment": section_environment,
    "kernels": section_kernels,
    "steps": section_steps,
    "inference": section_inference,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench_gpu.json", help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--device", default="cuda", help="a CUDA device, e.g. cuda:1")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="test this script on the CPU with tiny sizes"
    )
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        device = "cpu"
    elif not torch.cuda.is_available():
        print(
            "bench_gpu.py: no CUDA device here (torch.cuda.is_available() is False), so there "
            "is nothing to measure. Run it on a machine with an NVIDIA GPU; "
            "benchmarks/bench_kernels.py and bench_cam_memory.py measure the CPU."
        )
        return 0
    else:
        device = args.device
        torch.backends.cudnn.benchmark = True
    bench = Bench(device, args.quick, args.cpu_smoke)
    results: dict[str, Any] = {"argv": sys.argv[1:], "device": device, "started": time.time()}
    failed = []
    for name in args.sections:
        print(f"[{name}]", flush=True)
        start = time.perf_counter()
        try:
            results[name] = SECTIONS[name](bench)
        except Exception as error:
            failed.append(name)
            results[name] = {"error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
            print(f"  section {name} failed: {type(error).__name__}: {error}")
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
        if bench.cuda:
            torch.cuda.empty_cache()
    results["self_check_results"] = kernels.self_check_results()
    results["failed_sections"] = failed
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1, default=str)
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
