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
their seed mIoU side by side (default --out runs/demo; runs/demo-<recipe> with
another --recipe). Every run writes OUT/config.json, OUT/run.json (what produced
each file, by content), OUT/log.jsonl, atomic checkpoints, OUT/seeds/<id>.npy
(psa format), OUT/overlays/*.png and OUT/results.json. Stage 2 adds
OUT/pseudo_masks/ and stage 3 OUT/segmentation/; OUT/results.json then also holds
pseudo_masks.miou and segmentation.miou, while everything they came from is
unchanged. Every flag below is a setting of docs/reproducing.rst's table.

An OUT that holds a run is reused only for the same settings and data: rerunning a
finished run reuses its model (and its seeds, if unchanged); --resume continues an
unfinished one (or a finished one with more --max-steps); anything else stops with
an error naming what differs, unless --overwrite replaces the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import seedkit
from seedkit.engine import DEMO_PSEUDO_MASKS, DEMO_SEGMENTATION, StageConfig
from seedkit.engine.pipeline import CommandParser, DataAdapter, add_command_arguments, run_command
from seedkit.engine.run import setting_differences
from seedkit.errors import InvalidValueError, RunConflictError

PROG = "train_voc.py"
DEMO_IMAGES = 160


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_command_arguments(parser)
    parser.add_argument(
        "--demo-images", type=int, default=DEMO_IMAGES, help="demo dataset size (no --voc-root)"
    )
    return parser


def voc(args: argparse.Namespace) -> DataAdapter:
    """Your VOC copy (``--voc-root``), or the data of a ``--config`` file."""

    def prepare(command, context) -> str:
        from seedkit.data import resolve_voc_root

        root = command.seed.voc_root
        if root is None:
            raise InvalidValueError("--voc-root", "the VOC2012 folder", None)
        return str(resolve_voc_root(root))

    return DataAdapter(
        PROG, prepare, default_out=lambda config: f"runs/{config.recipe or config.method}"
    )


# ------------------------------------------------------------------ the demo


def demo_weights(args: argparse.Namespace) -> dict:
    """The demo's starting weights: ImageNet's, from a local weights package, offline.

    Used when the backbone (the ``demo`` recipe's ``tf_efficientnet_lite0``, or
    ``--backbone``) has one (:data:`seedkit.backbones.LOCAL_WEIGHT_PACKAGES`) and no
    flag chose other weights (``--checkpoint-path``, ``--pretrained``,
    ``--no-pretrained``). The converted checkpoint is cached under
    ``$XDG_CACHE_HOME/seedkit/weights`` (``~/.cache/seedkit/weights``).
    """
    from seedkit.backbones import LOCAL_WEIGHT_PACKAGES, local_pretrained_weights
    from seedkit.engine import RECIPES

    if args.checkpoint_path is not None or args.pretrained is not None or args.config:
        return {}
    recipe = RECIPES.get(args.recipe or "demo", {})
    backbone = args.backbone or recipe.get("backbone")
    if backbone not in LOCAL_WEIGHT_PACKAGES or recipe.get("pretrained"):
        return {}
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seedkit"
    return {"checkpoint_path": str(local_pretrained_weights(backbone, cache / "weights"))}


def demo(args: argparse.Namespace) -> DataAdapter:
    """The built-in demo: demo data under OUT/demo_data, the CAM baseline and USAGE side by
    side (one ImageNet-pretrained EfficientNet-Lite0, same data, schedule and seed), their
    seed mIoU table beside the trivial baselines; stages 2 and 3 start from the USAGE run
    (stage 3's encoder from its model)."""
    methods = [args.method] if args.method else ["cam", "usage"]

    def segmentation(seed: StageConfig) -> dict:
        demo = {k: v for k, v in DEMO_SEGMENTATION.items() if k != "train_split"}  # stage 2's
        if args.seg_arch not in (None, demo["architecture"]):
            return {**demo, "architecture": args.seg_arch}
        # No ImageNet weights in the demo: the segmentation encoder starts from stage 1's.
        return {
            **demo, "backbone": seed.backbone, "timm_kwargs": dict(seed.timm_kwargs),
            "output_stride": seed.output_stride,
            "checkpoint_path": str(Path(seed.out) / "model.pt"),
        }  # fmt: skip

    return DataAdapter(
        PROG,
        lambda command, context: demo_data(command, args.demo_images, args.overwrite, context),
        defaults={
            "seeds": {"train_split": "train", **demo_weights(args)},
            "pseudo_masks": {**DEMO_PSEUDO_MASKS, "train_split": "train"},
            "segmentation": segmentation,
        },
        recipe="demo",
        variants={method: {"method": method} for method in methods},
        report=print_comparison,
        default_out=lambda c: "runs/demo" if c.recipe == "demo" else f"runs/demo-{c.recipe}",
    )


def demo_data(command, num_images: int, overwrite: bool, context) -> str:
    """Write the demo dataset under ``OUT/demo_data`` once; refuse data of other settings."""
    from seedkit.data import atomic_write_bytes, make_demo_data

    root = command.out / "demo_data"
    marker = root / "VOCdevkit" / "VOC2012" / "cls_labels.npy"
    record_path = root / "demo.json"
    wanted = {"num_images": num_images, "seed": command.seed.seed}
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
            shutil.rmtree(root)
        print(f"writing {num_images} demo images to {root}", flush=True)
        atomic_write_bytes(record_path, (json.dumps(wanted) + "\n").encode())
        make_demo_data(root, num_images=num_images, seed=command.seed.seed)  # labels last
    context.barrier()
    return str(root / "VOCdevkit" / "VOC2012")


def print_comparison(results: dict[str, dict]) -> None:
    """The seed table: the trivial baselines, each method, USAGE - CAM, what it means."""
    first = next(iter(results.values()))
    trivial = first["seeds"]["trivial"]
    print(
        f"\nseed mIoU on the {first['seeds']['num_images']} images of the evaluation list "
        f"({first['backbone']}; best background threshold):"
    )
    print(f"{'':<32}{'mIoU':>8}{'thr':>6}{'FP':>8}{'FN':>8}")
    print(f"{'trivial: all background':<32}{trivial['background']:>8.2f}")
    print(f"{'trivial: centred blob':<32}{trivial['blob']:>8.2f}")
    for method, result in results.items():
        seeds = result["seeds"]
        label = {"cam": "CAM baseline", "usage": "USAGE (family preset)"}.get(method, method)
        if method == "usage" and result["config"]["temperature"] is not None:
            label = f"USAGE (tau {result['config']['temperature']:g})"
        print(
            f"{label:<32}{seeds['miou']:>8.2f}{seeds['threshold']:>6.2f}"
            f"{seeds['fp_rate']:>8.2f}{seeds['fn_rate']:>8.2f}"
        )
    if {"cam", "usage"} <= set(results):
        cam, usage = results["cam"]["seeds"], results["usage"]["seeds"]
        difference = usage["miou"] - cam["miou"]
        print(f"{'USAGE - CAM':<32}{difference:>+8.2f}")
        floor = max(trivial.values())
        localise = min(cam["miou"], usage["miou"]) > floor + 5
        print(
            f"Same model, data, schedule and seed: USAGE's pooling (N_eff/N "
            f"{usage['neff_fraction']:.2f} of the positions; GAP is 1) changes the seeds by "
            f"{difference:+.2f} mIoU (FP {cam['fp_rate']:.1f} -> {usage['fp_rate']:.1f}); "
            + (
                f"both are well above the trivial baselines (best {floor:.2f}), so the maps "
                "localise the objects."
                if localise
                else f"one is near the trivial baselines (best {floor:.2f}): the maps barely "
                "localise yet, so train longer before reading the difference."
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo_images < 1:
        parser.error(f"--demo-images: expected an integer >= 1, got {args.demo_images}")
    is_demo = args.voc_root is None and args.config is None
    return run_command(args, demo(args) if is_demo else voc(args))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"seedkit {seedkit.__version__}", flush=True)
    sys.exit(main())
