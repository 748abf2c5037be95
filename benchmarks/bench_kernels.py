"""Benchmark the fused kernels against the naive autograd composition.

For each shape (B, C, H, W) it times one forward + backward of

- ``naive``: ``(softmax(A / tau, dim=2) * A).sum(2)`` in plain autograd ops,
- ``fused``: :func:`seedkit.kernels.fused_temperature_pool` (``backend="fused"``,
  or ``--backend``),
- ``floor``: ``A.sum(2)``, the bandwidth floor (one read of A, one write of A.grad),

and the same for the KL consistency loss (``naive`` = seedkit's reference
composition of :class:`seedkit.losses.KLDivergence`). Variants are measured
alternately in one run (rep by rep, rotating the order) and the median is
reported. Extra peak memory is the peak of the CPU allocator's ``Total
Allocated`` counter during one forward + backward, read from a
``torch.profiler`` trace (``profile_memory=True``), relative to its value
just before; it includes the ``A.grad`` every variant allocates.

Usage::

    PYTHONPATH=src python benchmarks/bench_kernels.py [--reps 200] [--threads 2]
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
    summary["paired"] = statistics.median(
        naive / fused for naive, fused in zip(times["naive"], times["fused"], strict=True)
    )
    return summary


def run_shape(shape: tuple[int, int, int, int], reps: int, backend: str) -> list[dict[str, object]]:
    batch, classes, height, width = shape
    generator = torch.Generator().manual_seed(0)
    a = (3 * torch.randn(batch, classes, height * width, generator=generator)).requires_grad_()
    teacher = 3 * torch.randn(batch, classes, height * width, generator=generator)

    def naive_pool() -> torch.Tensor:
        return (torch.softmax(a / TAU, dim=2) * a).sum(dim=2)

    pools = {
        "naive": naive_pool,
        "fused": lambda: fused_temperature_pool(a, None, TAU, backend=backend),
        "floor": lambda: a.sum(dim=2),
    }
    kls = {
        "naive": lambda: fused_kl_consistency(a, teacher, None, TAU, 1.0, backend="reference"),
        "fused": lambda: fused_kl_consistency(a, teacher, None, TAU, 1.0, backend=backend),
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, backend {args.backend}, "
        f"{args.reps} reps (median unless said), load average {os.getloadavg()[0]:.1f}"
    )
    rows = [row for shape in SHAPES for row in run_shape(shape, args.reps, args.backend)]
    header = (
        "| op | (B, C, H, W) | naive ms | fused ms | floor ms | naive/fused time "
        "| (paired) | (best of reps) | fused/floor time | naive extra MB | fused extra MB "
        "| fused/naive memory |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        t, m = row["times"], row["memory"]
        print(
            f"| {row['op']} | {row['shape']} | {t['naive'] * 1e3:.2f} | {t['fused'] * 1e3:.2f} "
            f"| {t['floor'] * 1e3:.2f} | {t['naive'] / t['fused']:.2f}x "
            f"| {t['paired']:.2f}x | {t['naive_min'] / t['fused_min']:.2f}x "
            f"| {t['fused'] / t['floor']:.2f}x "
            f"| {m['naive'] / 2**20:.1f} | {m['fused'] / 2**20:.1f} "
            f"| {m['fused'] / m['naive']:.2f}x |"
        )
    size = {str(r["shape"]): r["bytes"] / 2**20 for r in rows}
    print("tensor size (MB):", ", ".join(f"{k}: {v:.1f}" for k, v in size.items()))
    print(
        "first-call (compile or cache load) seconds:",
        {k: round(v, 2) for k, v in compile_seconds().items()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
