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
configuration), OUT/run.json (what produced each file), OUT/log.jsonl, atomic
checkpoints, OUT/seeds/<id>.npy (psa format), OUT/overlays/*.png and
OUT/results.json. Stage 2 adds OUT/pseudo_masks/ (affinity network,
masks/<id>.png) and stage 3 OUT/segmentation/ (DeepLabV3, per-class IoU on val);
OUT/results.json then also holds pseudo_masks.miou and segmentation.miou. In the
demo the later stages start from the USAGE seeds.

An OUT that holds a run is reused only for the same settings: rerunning a finished
run reuses its model (and its seeds, if still valid); --resume continues an
unfinished one (or a finished one with more --max-steps); anything else stops with
an error naming what differs, unless --overwrite replaces the run.
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
    ensure_writable_directory,
    has_run,
    init_distributed,
    load_config,
    run_seed_stage,
)
from seedkit.engine.pipeline import (
    add_pipeline_arguments,
    name_flags,
    parse_stages,
    prepare_later_stages,
    run_later_stages,
)
from seedkit.engine.run import setting_differences
from seedkit.errors import (
    InvalidValueError,
    PretrainedWeightsError,
    RunConflictError,
    SeedkitError,
)

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
    parser.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="timm's ImageNet weights (the reference recipes' default; --no-pretrained: none)",
    )
    parser.add_argument(
        "--checkpoint-path", help="local weights file for the backbone (instead of --pretrained)"
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
    parser.add_argument(
        "--seed-format",
        choices=["psa", "irn"],
        help="seed files: psa dicts (psa / SEAM / MCTformer; default) or IRN's "
        "{keys, cam, high_res} for IRN's later steps",
    )
    parser.add_argument("--out", help="output directory")
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT (also a finished one, with more --max-steps)",
    )
    again.add_argument(
        "--overwrite", action="store_true", help="delete the run in OUT and start over"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None)
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
    "seed_format",
)  # fmt: skip


def resolve_config(args: argparse.Namespace, demo: bool) -> SeedStageConfig:
    """Defaults < recipe < --config file < command-line flags."""
    config = SeedStageConfig()
    recipe = args.recipe or ("demo" if demo else None)
    if recipe:
        config = apply_recipe(config, recipe)
    if args.config:
        config = load_config(args.config)
        if not isinstance(config, SeedStageConfig):
            raise InvalidValueError("--config", "a seed-stage config.json", config.STAGE)
    overrides = {
        name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name) is not None
    }
    if "epochs" in overrides:
        overrides["max_steps"] = None
    if "max_steps" in overrides:
        overrides["epochs"] = None
    if args.checkpoint_path is not None and args.pretrained is None:
        overrides["pretrained"] = False  # local weights instead of the recipe's timm ones
    if args.cam_scales:
        overrides["cam_scales"] = tuple(args.cam_scales)
    if args.no_progress:
        overrides["progress"] = False
    if args.voc_root:
        overrides["voc_root"] = args.voc_root
    if demo:
        overrides.setdefault("train_split", "train")
    config = dataclasses.replace(config, **overrides)
    if config.epochs is None and config.max_steps is None:
        config.epochs = 8
    if config.pretrained and config.checkpoint_path:
        raise InvalidValueError("--pretrained / --checkpoint-path", "at most one of them", "both")
    return config.validate()


#: Seed-stage settings and their flags, for error messages.
FLAGS = {name: "--" + name.replace("_", "-") for name in (*FLAG_FIELDS, "cam_scales")}


def check_counts(args: argparse.Namespace) -> None:
    """Counts that are not config fields: one-line errors naming the flag."""
    for flag, value in (
        ("--demo-images", args.demo_images),
        ("--stop-after-steps", args.stop_after_steps),
    ):
        if value is not None and value < 1:
            raise InvalidValueError(flag, "an integer >= 1", value)


def demo_root(out: Path, num_images: int, seed: int, overwrite: bool, context) -> str:
    """Write the demo dataset under ``OUT/demo_data`` once; refuse data of other settings."""
    from seedkit.data import atomic_write_bytes, make_demo_data

    root = out / "demo_data"
    marker = root / "VOCdevkit" / "VOC2012" / "cls_labels.npy"
    record_path = root / "demo.json"
    wanted = {"num_images": num_images, "seed": seed}
    recorded = json.loads(record_path.read_text()) if record_path.is_file() else {}
    flags = {"num_images": "--demo-images", "seed": "--seed"}
    differences = [
        (flags.get(key, key), before, now)
        for key, before, now in setting_differences(recorded, wanted)
    ]
    if marker.is_file() and differences and not overwrite:
        raise RunConflictError(
            root,
            "holds demo data of other settings",
            differences,
            "pass --overwrite to write it again (and retrain), or choose another --out",
        )
    if context.is_main and (differences or not marker.is_file()):
        if root.exists():
            import shutil

            shutil.rmtree(root)
        print(f"writing {num_images} demo images to {root}", flush=True)
        atomic_write_bytes(record_path, (json.dumps(wanted) + "\n").encode())
        make_demo_data(root, num_images=num_images, seed=seed)  # its label file last
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
    context = None
    try:
        check_counts(args)
        try:
            config = resolve_config(args, demo)
        except InvalidValueError as error:
            raise name_flags(error, FLAGS) from None
        context = init_distributed(config.device)
        out = Path(config.out if args.out else ("runs/demo" if demo else config.out))
        if context.is_main:
            ensure_writable_directory(out)  # a file, a read-only folder: say so now
        if demo:
            voc_root = demo_root(out, args.demo_images, config.seed, args.overwrite, context)
            methods = [args.method] if args.method else ["cam", "usage"]
        else:
            from seedkit.data import resolve_voc_root

            voc_root = str(resolve_voc_root(config.voc_root))
            methods = [config.method]
        stages = parse_stages(args.stages)
        run_configs = {}
        for method in methods:
            run_out = out / method if len(methods) > 1 or demo else out
            run_configs[method] = dataclasses.replace(
                config, method=method, out=str(run_out), voc_root=voc_root
            )
        seed_config = run_configs["usage" if "usage" in run_configs else methods[0]]
        later = None
        if 2 in stages or 3 in stages:  # checked before anything trains
            later = prepare_later_stages(args, stages, demo, out, seed_config, voc_root)
        # --resume continues each stage that has started and starts the others (the demo
        # trains its methods one after the other); with nothing started it is an error.
        folders = [c.out for c in run_configs.values()] if 1 in stages else []
        if later is not None:
            folders += [c.out for c in (later.pseudo_masks, later.segmentation) if c is not None]
        if args.resume and not any(has_run(folder) for folder in folders):
            raise RunConflictError(
                out,
                "nothing to resume: no run has started here (no checkpoint.pt, no run.json)",
                hint="run without --resume to start it",
            )
        resume = {method: args.resume and has_run(run_configs[method].out) for method in methods}
        results = {}
        for method in methods if 1 in stages else []:
            run_config = run_configs[method]
            if context.is_main:
                length = run_config.max_steps or run_config.epochs
                unit = "steps" if run_config.max_steps else "epochs"
                note = "" if resume[method] or not args.resume else " (not started: starts now)"
                print(
                    f"\n[{method}] {run_config.backbone}, {length} {unit} -> "
                    f"{run_config.out}{note}",
                    flush=True,
                )
            try:
                result = run_seed_stage(
                    run_config,
                    context,
                    voc_root,
                    resume=resume[method],
                    overwrite=args.overwrite,
                    stop_after_steps=args.stop_after_steps,
                )
            except (RunConflictError, InvalidValueError) as error:
                raise name_flags(error, FLAGS) from None
            if result is not None:
                results[method] = result
                print((Path(run_config.out) / "seeds_table.txt").read_text())
                for message in result["seeds"]["warnings"]:
                    print(f"train_voc.py: warning [{method}]: {message}", file=sys.stderr)
        if context.is_main and results:
            if len(results) > 1:
                from seedkit.data import atomic_write_bytes

                summary = {"methods": results, "seeds": results["usage"]["seeds"]}
                atomic_write_bytes(
                    out / "results.json", (json.dumps(summary, indent=2) + "\n").encode()
                )
            print_comparison(results)
        if later is not None:
            run_later_stages(
                args,
                stages,
                demo,
                out,
                seed_config,
                context,
                voc_root,
                args.resume,
                overwrite=args.overwrite,
                later=later,
            )
        if context.is_main:
            summary_path = (
                out / "results.json"
                if len(methods) > 1 or later is not None
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
        if context is not None:
            context.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"seedkit {seedkit.__version__}", flush=True)
    sys.exit(main())
