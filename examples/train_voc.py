"""Train seed models on PASCAL VOC 2012 (or the built-in demo data) and evaluate their seeds.

Single process:
    python examples/train_voc.py --voc-root VOCdevkit/VOC2012 --recipe irn-resnet50 --out runs/irn

The whole WSSS pipeline (1 seeds -> 2 pseudo masks -> 3 segmentation); each
stage reads the previous stage's files, so ``--stages 2,3`` reruns the later
ones on an existing OUT:
    python examples/train_voc.py --voc-root ... --recipe irn-resnet50 --stages 1,2,3 --out runs/irn

Several processes (DDP; gloo on CPU, NCCL on GPU):
    torchrun --nproc_per_node=4 examples/train_voc.py --voc-root ... --recipe mctformer-deit-s

MCTformer-V2 (one class token per class; docs/mctformer.rst), its own losses or with USAGE:
    python examples/train_voc.py --voc-root ... --recipe mctformer-v2 --out runs/mct
    python examples/train_voc.py --voc-root ... --recipe mctformer-v2-usage --out runs/mct-usage

Without --voc-root it writes the demo dataset (real VOC layout) and trains the
CAM baseline and USAGE with the same model, data, schedule and seed, then prints
their seed mIoU side by side. Every run writes OUT/config.json (the resolved
configuration), OUT/log.jsonl, atomic checkpoints, OUT/seeds/<id>.npy (psa format),
OUT/overlays/*.png and OUT/results.json. Stage 2 adds OUT/pseudo_masks/ (affinity
network, masks/<id>.png) and stage 3 OUT/segmentation/ (DeepLabV3, per-class
IoU on val); OUT/results.json then also holds pseudo_masks.miou and
segmentation.miou. In the demo the later stages start from the USAGE seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import seedkit
from seedkit.engine import (
    RECIPES,
    SeedStageConfig,
    apply_recipe,
    init_distributed,
    load_config,
    run_seed_stage,
)
from seedkit.engine.pipeline import add_pipeline_arguments, parse_stages, run_later_stages
from seedkit.errors import PretrainedWeightsError, SeedkitError

DEMO_IMAGES = 160


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--voc-root", help="the VOC2012 folder (holding JPEGImages); omit for the demo"
    )
    parser.add_argument(
        "--method", choices=["usage", "cam"], help="USAGE or the plain CAM baseline"
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="named reference settings")
    parser.add_argument("--config", help="a config.json of an earlier run (flags override it)")
    parser.add_argument("--backbone", help="any timm CNN or ViT name")
    parser.add_argument(
        "--head",
        choices=["cam", "mct"],
        help="seed-model head: 1x1-conv CAMs, or one class token per class (MCTformer-V2, ViTs)",
    )
    pretrained = parser.add_mutually_exclusive_group()
    pretrained.add_argument("--pretrained", action="store_true", default=None, help="timm weights")
    pretrained.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        default=None,
        help="random initialisation, also when the recipe loads timm weights",
    )
    pretrained.add_argument(
        "--checkpoint-path", help="local weights file for the backbone (instead of timm's)"
    )
    parser.add_argument("--output-stride", type=int, choices=[8, 16, 32], help="CNN output stride")
    parser.add_argument(
        "--timm-kwargs",
        type=json.loads,
        help="extra timm.create_model arguments as JSON, e.g. '{\"patch_size\": 8}'",
    )
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch per optimizer step")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int)
    length.add_argument("--max-steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    parser.add_argument(
        "--temperature", type=float, help="generation temperature (default: the family's preset)"
    )
    parser.add_argument(
        "--consistency-temperature", type=float, help="student's, in L_REG (default: --temperature)"
    )
    parser.add_argument(
        "--teacher-temperature", type=float, help="teacher's, in L_REG (default: the student's)"
    )
    parser.add_argument("--consistency-weight", type=float, help="lambda (default: the preset)")
    parser.add_argument(
        "--consistency-start", type=float, help="fraction of the run with L_REG off (preset)"
    )
    parser.add_argument(
        "--consistency-ramp", type=float, help="fraction of the run L_REG ramps in over (preset)"
    )
    parser.add_argument("--train-split")
    parser.add_argument("--eval-split")
    parser.add_argument(
        "--eval-limit", type=int, help="evaluate only the first N images of the list"
    )
    parser.add_argument(
        "--eval-every", type=int, help="score the seeds every N steps (eval records in log.jsonl)"
    )
    parser.add_argument(
        "--max-threshold", type=float, help="last background threshold of the sweep (0.59)"
    )
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--log-every", type=int)
    parser.add_argument(
        "--cam-scales", type=float, nargs="+", help="inference scales (default 1.0 0.5 1.5 2.0)"
    )
    parser.add_argument("--out", help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--tensorboard", action="store_true", default=None)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--demo-images", type=int, default=DEMO_IMAGES, help="demo dataset size")
    parser.add_argument(
        "--stop-after-steps",
        type=int,
        help="stop training after this many steps as if interrupted (to try --resume)",
    )
    add_pipeline_arguments(parser)
    return parser


FLAG_FIELDS = (
    "method", "backbone", "pretrained", "checkpoint_path", "image_size", "batch_size", "epochs",
    "max_steps", "lr", "grad_accum", "temperature", "consistency_weight", "train_split", "head",
    "eval_split", "eval_limit", "num_workers", "checkpoint_every", "log_every", "out", "seed",
    "tensorboard", "output_stride", "timm_kwargs", "consistency_temperature",
    "teacher_temperature", "consistency_start", "consistency_ramp", "eval_every", "max_threshold",
)  # fmt: skip


def resolve_config(args: argparse.Namespace, demo: bool) -> SeedStageConfig:
    """Defaults < recipe < --config file < command-line flags."""
    config = SeedStageConfig()
    recipe = args.recipe or ("demo" if demo else None)
    if recipe:
        config = apply_recipe(config, recipe)
    if args.config:
        config = load_config(args.config)
    overrides = {
        name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name) is not None
    }
    if args.checkpoint_path is not None:
        overrides["pretrained"] = False  # the local file replaces the recipe's timm weights
    if "epochs" in overrides:
        overrides["max_steps"] = None
    if "max_steps" in overrides:
        overrides["epochs"] = None
    if args.cam_scales:
        overrides["cam_scales"] = tuple(args.cam_scales)
    if args.stop_after_steps is not None:
        overrides["extra"] = {**config.extra, "stop_after_steps": args.stop_after_steps}
    if args.no_progress:
        overrides["progress"] = False
    if args.voc_root:
        overrides["voc_root"] = args.voc_root
    if demo:
        overrides.setdefault("train_split", "train")
    config = dataclasses.replace(config, **overrides)
    if config.epochs is None and config.max_steps is None:
        config.epochs = 8
    return config.validate()


def demo_root(out: Path, num_images: int, seed: int, is_main: bool, context) -> str:
    from seedkit.data import make_demo_data

    root = out / "demo_data"
    marker = root / "VOCdevkit" / "VOC2012" / "cls_labels.npy"
    if is_main and not marker.is_file():
        print(f"writing {num_images} demo images to {root}", flush=True)
        make_demo_data(root, num_images=num_images, seed=seed)
    context.barrier()
    return str(root / "VOCdevkit" / "VOC2012")


def print_comparison(results: dict[str, dict]) -> None:
    print("\nseed mIoU on the evaluation list (best background threshold):")
    print(f"{'method':<8}{'mIoU':>8}{'thr':>6}{'FP':>8}{'FN':>8}")
    for method, result in results.items():
        seeds = result["seeds"]
        print(
            f"{method:<8}{seeds['miou']:>8.2f}{seeds['threshold']:>6.2f}{seeds['fp_rate']:>8.2f}{seeds['fn_rate']:>8.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    demo = args.voc_root is None and args.config is None
    context = init_distributed()
    try:
        config = resolve_config(args, demo)
        out = Path(config.out if args.out else ("runs/demo" if demo else config.out))
        if demo:
            voc_root = demo_root(out, args.demo_images, config.seed, context.is_main, context)
            methods = [args.method] if args.method else ["cam", "usage"]
        else:
            from seedkit.data import resolve_voc_root

            voc_root = str(resolve_voc_root(config.voc_root))
            methods = [config.method]
        stages = parse_stages(args.stages)
        results = {}
        run_configs = {}
        for method in methods:
            run_out = out / method if len(methods) > 1 or demo else out
            run_config = dataclasses.replace(
                config, method=method, out=str(run_out), voc_root=voc_root
            )
            run_configs[method] = run_config
            if 1 not in stages:
                continue
            if context.is_main:
                print(
                    f"\n[{method}] {run_config.backbone}, "
                    f"{run_config.max_steps or run_config.epochs} "
                    f"{'steps' if run_config.max_steps else 'epochs'} -> {run_out}",
                    flush=True,
                )
            result = run_seed_stage(run_config, context, voc_root, resume=args.resume)
            if result is not None:
                results[method] = result
                print((run_out / "seeds_table.txt").read_text())
        if context.is_main and results:
            if len(results) > 1:
                summary = {"methods": results, "seeds": results["usage"]["seeds"]}
                (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
            print_comparison(results)
        later = 2 in stages or 3 in stages
        if later:
            seed_config = run_configs["usage" if "usage" in run_configs else methods[0]]
            run_later_stages(args, stages, demo, out, seed_config, context, voc_root, args.resume)
        if context.is_main:
            summary_path = (
                out / "results.json"
                if len(methods) > 1 or later
                else Path(run_configs[methods[0]].out) / "results.json"
            )
            print(f"\nresults: {summary_path}")
    except PretrainedWeightsError as error:
        print(
            f"train_voc.py: error: {error.model_name}: could not load timm's pretrained weights "
            f"({error.reason}); run with --no-pretrained (random initialisation) or "
            "--checkpoint-path FILE (local weights), or point HF_HOME at a cache that has them",
            file=sys.stderr,
        )
        return 2
    except SeedkitError as error:
        print(f"train_voc.py: error: {error}", file=sys.stderr)
        return 2
    finally:
        context.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"seedkit {seedkit.__version__}", flush=True)
    sys.exit(main())
