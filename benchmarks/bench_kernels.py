"""Benchmark the fused kernels against the naive autograd composition.

For each shape (B, C, H, W) it times one forward + backward of

- ``naive``: ``(softmax(A / tau, dim=2) * A).sum(2)`` in plain autograd ops,
- ``fused``: :func:`seedkit.kernels.fused_temperature_pool` (``backend="fused"``,
  or ``--backend``), the kernel called directly,
- ``public``: :func:`seedkit.temperature_pool` on the ``(B, C, H, W)`` map, the
  function users call (input checks on, backend ``"auto"``),
- ``unchecked``: the same with ``seedkit.input_checks(False)``,
- ``floor``: ``A.sum(2)``, the bandwidth floor (one read of A, one write of A.grad),

and the same for the KL consistency loss: ``naive`` is seedkit's reference
composition of :class:`seedkit.losses.KLDivergence` followed by the mean over
present classes, ``public`` is :func:`seedkit.losses.consistency_loss` (KL,
``reduction="mean"``) with multi-hot labels, and ``fused`` the kernel followed by
the same mean. Variants are measured alternately in one run (rep by rep,
rotating the order) and the median is reported. Extra peak memory is the peak
of the CPU allocator's ``Total Allocated`` counter during one forward + backward, read from a
``torch.profiler`` trace (``profile_memory=True``), relative to its value
just before; it includes the ``A.grad`` every variant allocates.

Usage::

    PYTHONPATH=src python benchmarks/bench_kernels.py [--reps 200] [--threads 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

import seedkit
from seedkit.kernels import compile_seconds, fused_kl_consistency, fused_temperature_pool

SHAPES = [(16, 21, 56, 56), (8, 81, 64, 64)]
TAU = 2.0


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
    for name in names:  # warm-up (and compilation) outside the timed region
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
    summary |= {f"{name}_min": min(values) for name, values in times.items()}
    # Ratio within each rep (the variants ran back to back), then the median: robust to
    # the machine's drift between reps, which the ratio of two medians is not.
    for name in names:
        if name not in ("naive", "floor"):
            summary[f"paired_{name}"] = statistics.median(
                naive / other for naive, other in zip(times["naive"], times[name], strict=True)
            )
    return summary


def unchecked(function: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        with seedkit.input_checks(False):
            return function()

    return call


def run_shape(shape: tuple[int, int, int, int], reps: int, backend: str) -> list[dict[str, object]]:
    batch, classes, height, width = shape
    generator = torch.Generator().manual_seed(0)
    a = (3 * torch.randn(batch, classes, height * width, generator=generator)).requires_grad_()
    teacher = 3 * torch.randn(batch, classes, height * width, generator=generator)
    labels = (torch.rand(batch, classes, generator=generator) < 0.3).float()
    labels[:, 0] = 1.0
    present = labels > 0

    def present_mean(per_class: torch.Tensor) -> torch.Tensor:
        per_class = torch.where(present, per_class, torch.zeros_like(per_class))
        return per_class.sum() / labels.sum().clamp_min(1.0)

    def naive_pool() -> torch.Tensor:
        return (torch.softmax(a / TAU, dim=2) * a).sum(dim=2)

    def public_pool() -> torch.Tensor:
        return seedkit.temperature_pool(a.view(shape), TAU)

    def naive_kl() -> torch.Tensor:
        return present_mean(fused_kl_consistency(a, teacher, None, TAU, 1.0, backend="reference"))

    def public_kl() -> torch.Tensor:
        return seedkit.losses.consistency_loss(
            a.view(shape), teacher.view(shape), labels, temperature=TAU, teacher_temperature=1.0
        )

    pools = {
        "naive": naive_pool,
        "fused": lambda: fused_temperature_pool(a, None, TAU, backend=backend),
        "public": public_pool,
        "unchecked": unchecked(public_pool),
        "floor": lambda: a.sum(dim=2),
    }
    kls = {
        "naive": naive_kl,
        "fused": lambda: present_mean(
            fused_kl_consistency(a, teacher, None, TAU, 1.0, backend=backend)
        ),
        "public": public_kl,
        "unchecked": unchecked(public_kl),
        "floor": lambda: a.sum(dim=2),
    }
    rows = []
    for op, variants in (("temperature_pool", pools), ("kl_consistency", kls)):
        times = measure(variants, a, reps)
        memory = {name: peak_bytes(function, a) for name, function in variants.items()}
        rows.append(
            {"shape": shape, "op": op, "times": times, "memory": memory, "bytes": a.numel() * 4}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="fused", choices=["fused", "triton"])
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, backend {args.backend}, "
        f"{args.reps} reps (median unless said), load average {os.getloadavg()[0]:.1f}"
    )
    rows = [row for shape in SHAPES for row in run_shape(shape, args.reps, args.backend)]
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("Time, ms (median) and naive/variant ratio (paired: median over reps of the ratio)")
    header = (
        "| op | (B, C, H, W) | naive | fused | public | unchecked | floor "
        "| naive/fused (paired) | naive/public (paired) | (best of reps) "
        "| naive/unchecked (paired) |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        t = row["times"]
        print(
            f"| {row['op']} | {row['shape']} | {t['naive'] * 1e3:.2f} | {t['fused'] * 1e3:.2f} "
            f"| {t['public'] * 1e3:.2f} | {t['unchecked'] * 1e3:.2f} | {t['floor'] * 1e3:.2f} "
            f"| {t['paired_fused']:.2f}x | {t['paired_public']:.2f}x "
            f"| {t['naive_min'] / t['public_min']:.2f}x | {t['paired_unchecked']:.2f}x |"
        )
    print("Extra peak memory during one forward + backward, MB (includes A.grad)")
    header = "| op | (B, C, H, W) | naive | fused | public | floor | fused/naive | public/naive |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        m = {k: v / 2**20 for k, v in row["memory"].items()}
        print(
            f"| {row['op']} | {row['shape']} | {m['naive']:.1f} | {m['fused']:.1f} "
            f"| {m['public']:.1f} | {m['floor']:.1f} | {m['fused'] / m['naive']:.2f}x "
            f"| {m['public'] / m['naive']:.2f}x |"
        )
    size = {str(r["shape"]): r["bytes"] / 2**20 for r in rows}
    print("tensor size (MB):", ", ".join(f"{k}: {v:.1f}" for k, v in size.items()))
    print(
        "first-call (compile or cache load) seconds:",
        {k: round(v, 2) for k, v in compile_seconds().items()},
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([{**row, "shape": list(row["shape"])} for row in rows], handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
