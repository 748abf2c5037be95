"""Benchmark the fused kernels and the public functions against the naive composition.

For each shape (B, C, H, W) and scale (``"std"``, the default, and ``"raw"``) it
times one forward + backward of

- ``naive``: ``(softmax(A / (d tau), dim=2) * A).sum(2)`` in plain autograd ops
  (``d``: :func:`seedkit.reference.scale_divisor`, 1 for ``"raw"``),
- ``eager`` / ``fused``: :func:`seedkit.kernels.fused_temperature_pool` with that
  backend, the kernel called directly,
- ``public``: :func:`seedkit.temperature_pool` on the ``(B, C, H, W)`` map, the
  function users call (input checks on, backend ``"auto"``: the eager path on
  the CPU, nothing compiled),
- ``public_fused``: the same with ``seedkit.kernels.use_backend("fused")`` (the
  compiled path a user asks for),
- ``floor``: ``A.sum(2)``, the bandwidth floor (one read of A, one write of A.grad),

and the same for the KL consistency loss: ``naive`` is seedkit's reference
composition of :class:`seedkit.losses.KLDivergence` followed by the mean over
present classes, ``public`` is :class:`seedkit.ConsistencyLoss` (KL, student at
tau, teacher at 1) with multi-hot labels, and ``eager`` / ``fused`` the kernel
followed by the same mean. Variants are measured alternately in one run (rep by
rep, rotating the order); reported are medians and the paired ratio (the median
over reps of naive / variant within the rep). Extra peak memory is the peak of
the CPU allocator's ``Total Allocated`` counter during one forward + backward,
read from a ``torch.profiler`` trace, relative to its value just before; it
includes the ``A.grad`` every variant allocates.

First-call latency: for each backend a fresh Python process times the first and
the second forward + backward of ``SeedGenerationLoss.for_backbone("cnn")`` on a
(16, 20, 56, 56) map and of ``ConsistencyLoss`` at the first shape; ``fused`` runs
twice, with an empty inductor cache and with the cache the first run left.

Usage (the machine is shared: pin the run to one core and read the ratios)::

    PYTHONPATH=src taskset -c 1 python benchmarks/bench_kernels.py --threads 1 [--reps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import seedkit
from seedkit import kernels
from seedkit.kernels import fused_kl_consistency, fused_temperature_pool
from seedkit.reference import scale_divisor

SHAPES = [(16, 21, 56, 56), (8, 81, 64, 64)]
SCALES = ("std", "raw")
TAU = 2.0
VARIANTS = ("naive", "eager", "fused", "public", "public_fused", "floor")
SRC = Path(__file__).resolve().parents[1] / "src"


def step(function: Callable[[], torch.Tensor], leaf: torch.Tensor) -> None:
    leaf.grad = None
    function().sum().backward()


def peak_bytes(function: Callable[[], torch.Tensor], leaf: torch.Tensor) -> int:
    """Peak extra bytes allocated during one forward + backward (profiler memory events)."""
    leaf.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        function().sum().backward()
    leaf.grad = None
    return profiled_peak(prof)


def profiled_peak(prof: profile) -> int:
    """Peak extra bytes of the CPU allocator over a finished ``profile_memory`` session."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as handle:
            events = json.load(handle)["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    if not memory:
        return 0
    # The counter carries over between profiling sessions: measure from its value
    # just before the first event of this one.
    baseline = memory[0]["args"]["Total Allocated"] - memory[0]["args"]["Bytes"]
    return max(0, *(e["args"]["Total Allocated"] - baseline for e in memory))


def measure(
    variants: dict[str, Callable[[], torch.Tensor]], leaf: torch.Tensor, reps: int
) -> dict[str, float]:
    names = list(variants)
    for name in names:  # warm-up (and the compilation of "fused") outside the timed region
        for _ in range(3):
            step(variants[name], leaf)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            start = time.perf_counter()
            step(variants[name], leaf)
            times[name].append(time.perf_counter() - start)
    summary = {name: statistics.median(values) for name, values in times.items()}
    # Ratio within each rep (the variants ran back to back), then the median: robust to
    # the machine's drift between reps, which the ratio of two medians is not.
    for name in names:
        summary[f"paired_{name}"] = statistics.median(
            naive / other for naive, other in zip(times["naive"], times[name], strict=True)
        )
    return summary


def fused_backend(function: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        with kernels.use_backend("fused"):
            return function()

    return call


def run_shape(shape: tuple[int, int, int, int], scale: str, reps: int) -> list[dict[str, object]]:
    batch, classes, height, width = shape
    generator = torch.Generator().manual_seed(0)
    a = (3 * torch.randn(batch, classes, height * width, generator=generator)).requires_grad_()
    teacher = 3 * torch.randn(batch, classes, height * width, generator=generator)
    labels = (torch.rand(batch, classes, generator=generator) < 0.3).float()
    labels[:, 0] = 1.0
    present = labels > 0
    consistency = seedkit.ConsistencyLoss(temperature=TAU, teacher_temperature=1.0, scale=scale)

    def present_mean(per_class: torch.Tensor) -> torch.Tensor:
        per_class = torch.where(present, per_class, torch.zeros_like(per_class))
        return per_class.sum() / labels.sum().clamp_min(1.0)

    def naive_pool() -> torch.Tensor:
        divisor = scale_divisor(a, None, scale)
        logits = a / TAU if divisor is None else a / divisor / TAU
        return (torch.softmax(logits, dim=2) * a).sum(dim=2)

    def public_pool() -> torch.Tensor:
        return seedkit.temperature_pool(a.view(shape), TAU, scale=scale)

    def kl(backend: str) -> Callable[[], torch.Tensor]:
        return lambda: present_mean(
            fused_kl_consistency(a, teacher, None, TAU, 1.0, scale, backend=backend)
        )

    def public_kl() -> torch.Tensor:
        return consistency(a.view(shape), teacher.view(shape), labels)

    pools = {
        "naive": naive_pool,
        "eager": lambda: fused_temperature_pool(a, None, TAU, scale, backend="eager"),
        "fused": lambda: fused_temperature_pool(a, None, TAU, scale, backend="fused"),
        "public": public_pool,
        "public_fused": fused_backend(public_pool),
        "floor": lambda: a.sum(dim=2),
    }
    kls = {
        "naive": kl("reference"),
        "eager": kl("eager"),
        "fused": kl("fused"),
        "public": public_kl,
        "public_fused": fused_backend(public_kl),
        "floor": lambda: a.sum(dim=2),
    }
    rows = []
    for op, variants in (("temperature_pool", pools), ("kl_consistency", kls)):
        times = measure(variants, a, reps)
        memory = {name: peak_bytes(function, a) for name, function in variants.items()}
        rows.append(
            {
                "shape": shape,
                "scale": scale,
                "op": op,
                "times": times,
                "memory": memory,
                "bytes": a.numel() * 4,
            }
        )
    return rows


_FIRST_CALL = """
import json, sys, time
import torch
torch.set_num_threads({threads})
import seedkit
from seedkit import kernels
kernels.set_backend({backend!r})
torch.manual_seed(0)
cams = torch.randn(16, 20, 56, 56, requires_grad=True)
labels = (torch.rand(16, 20) < 0.2).float()
student = torch.randn(16, 21, 56, 56, requires_grad=True)
teacher = torch.randn(16, 21, 56, 56)
labels21 = (torch.rand(16, 21) < 0.3).float()
generation = seedkit.SeedGenerationLoss.for_backbone("cnn")
consistency = seedkit.ConsistencyLoss(temperature=2.0, teacher_temperature=1.0)
result = {{}}
for name, call in (
    ("SeedGenerationLoss", lambda: generation(cams, labels)),
    ("ConsistencyLoss", lambda: consistency(student, teacher, labels21)),
):
    times = []
    for _ in range(2):
        start = time.perf_counter()
        call().backward()
        times.append(time.perf_counter() - start)
    result[name] = times
result["backend"] = kernels.resolve_backend(cams)
print(json.dumps(result))
"""


def first_call(backend: str, threads: int, cache: str | None) -> dict[str, object]:
    """First and second forward + backward in a fresh process (what a new script pays)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("SEEDKIT_KERNELS", None)
    if cache is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL.format(threads=threads, backend=backend)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:]}
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["process_s"] = wall
    report["printed"] = len(result.stderr.strip())  # what the process wrote on stderr
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=SCALES)
    parser.add_argument("--no-first-call", action="store_true", help="skip the fresh processes")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"torch {torch.__version__}, {args.threads} thread(s) on cores {cores}, "
        f"{args.reps} reps, tau {TAU}, load average before: "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    rows = [
        row
        for shape in SHAPES
        for scale in args.scales
        for row in run_shape(shape, scale, args.reps)
    ]
    print("load average after: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print("\nTime of one forward + backward, ms (median); naive/variant (paired median)")
    header = (
        "| op | (B, C, H, W) | scale | naive | eager | fused | public | public_fused | floor "
        "| naive/eager | naive/fused | naive/public | naive/public_fused |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        t = row["times"]
        cells = " | ".join(f"{t[v] * 1e3:.2f}" for v in VARIANTS)
        ratios = " | ".join(
            f"{t['paired_' + v]:.2f}x" for v in ("eager", "fused", "public", "public_fused")
        )
        print(f"| {row['op']} | {row['shape']} | {row['scale']} | {cells} | {ratios} |")
    print("\nExtra peak memory of one forward + backward, MB (includes A.grad); variant/naive")
    header = (
        "| op | (B, C, H, W) | scale | naive | eager | fused | public | public_fused | floor "
        "| public/naive | public_fused/naive |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        m = {k: v / 2**20 for k, v in row["memory"].items()}
        cells = " | ".join(f"{m[v]:.1f}" for v in VARIANTS)
        print(
            f"| {row['op']} | {row['shape']} | {row['scale']} | {cells} "
            f"| {m['public'] / m['naive']:.2f}x | {m['public_fused'] / m['naive']:.2f}x |"
        )
    print("\nTargets (public >= 2x naive at <= 0.5x its extra memory):")
    for row in rows:
        t, m = row["times"], row["memory"]
        for variant in ("public", "public_fused"):
            speed, memory = t[f"paired_{variant}"], m[variant] / m["naive"]
            verdict = "met" if speed >= 2.0 and memory <= 0.5 else "NOT met"
            print(
                f"  {row['op']:<16} {row['shape']!s:<17} {row['scale']:<4} {variant:<13} "
                f"{speed:.2f}x, {memory:.2f}x memory: {verdict}"
            )
    calls: dict[str, object] = {}
    if not args.no_first_call:
        print("\nFirst call in a fresh process (forward + backward, s): first / second")
        with tempfile.TemporaryDirectory() as cache:
            for label, backend, cache_dir in (
                ("auto (default)", "auto", None),
                ("reference", "reference", None),
                ("eager", "eager", None),
                ("fused, empty inductor cache", "fused", cache),
                ("fused, inductor cache of the run above", "fused", cache),
            ):
                report = first_call(backend, args.threads, cache_dir)
                calls[label] = report
                if "error" in report:
                    print(f"  {label}: error {report['error']}")
                    continue
                generation, kl = report["SeedGenerationLoss"], report["ConsistencyLoss"]
                print(
                    f"  {label:<40} SeedGenerationLoss (16, 20, 56, 56) "
                    f"{generation[0]:.3f} / {generation[1]:.3f}   ConsistencyLoss (16, 21, 56, 56) "
                    f"{kl[0]:.3f} / {kl[1]:.3f}   (ran as {report['backend']!r}; "
                    f"stderr: {report['printed']} characters)"
                )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "rows": [{**row, "shape": list(row["shape"])} for row in rows],
                    "first_call": calls,
                },
                handle,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
