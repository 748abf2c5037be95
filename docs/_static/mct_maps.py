"""The maps of a multi-class-token model on demo images: docs/_static/mct_maps.{jpg,json}.

Trains a small MCTSeedModel (DeiT-tiny layout, 6 blocks, 8-pixel patches, random
init) with MCTformer-V2's losses on the seedkit demo data through the seed stage,
then draws, for one present class of a few evaluation images, the class-to-patch
attention, the patch CAM, their fusion and the affinity-refined fused map, and
scores each kind as seeds (scale 1.0 + flip, best background threshold) on the
evaluation list. CPU only; run from the repository root:

    python docs/_static/mct_maps.py [--steps 300]

``--reuse-run DIR`` draws from a finished run of this script (its ``run`` folder,
printed at the start) instead of training again. ``--retitle`` redraws only the
layout and titles of the existing ``mct_maps.jpg`` (its panels are cropped from
it, the scores and rows read from ``mct_maps.json``): minutes instead of hours.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from seedkit.cam import MCTLocalizationMaps, infer_cams
from seedkit.data import VOC_CLASSES, make_demo_data, read_image
from seedkit.engine import (
    DistributedContext,
    SeedStageConfig,
    eval_dataset,
    load_config,
    load_seed_model,
    train_seed_model,
)
from seedkit.metrics import ThresholdSweep

KINDS = [
    ("class_attention", False, "class attention"),
    ("patch_cam", False, "patch CAM"),
    ("fused", False, "fused"),
    ("fused", True, "fused + refined"),
]
OUT = Path("docs/_static")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--eval-limit", type=int, default=48)
    parser.add_argument("--reuse-run", type=Path, help="a finished run folder of this script")
    parser.add_argument(
        "--retitle", action="store_true", help="redraw the titles of the existing figure only"
    )
    args = parser.parse_args()
    if args.retitle:
        retitle()
        return
    torch.set_num_threads(2)
    if args.reuse_run is not None:
        config = load_config(args.reuse_run / "config.json")
        voc = Path(config.voc_root)
        model = load_seed_model(config, torch.device("cpu")).eval()
        log = (args.reuse_run / "log.jsonl").read_text().splitlines()
        train_seconds = [json.loads(line) for line in log][-1]["elapsed"]
        args.steps, args.eval_limit = config.max_steps, config.eval_limit
        args.images = len(list((voc / "JPEGImages").glob("*.jpg")))
    else:
        model, config, voc, train_seconds = train(args)
    render(args, model, config, voc, train_seconds)


def train(args: argparse.Namespace) -> tuple[torch.nn.Module, SeedStageConfig, Path, float]:
    """Write the demo data and train the model; return it, its config, the data, seconds."""
    work = Path(tempfile.mkdtemp(prefix="mct_maps_"))
    print(f"run folder: {work / 'run'}", flush=True)
    voc = make_demo_data(work / "demo", num_images=args.images, seed=0)
    config = SeedStageConfig(
        voc_root=str(voc),
        train_split="train",
        eval_split="val",
        eval_limit=args.eval_limit,
        method="cam",  # MCTformer-V2's losses: class tokens + patch CAMs
        head="mct",
        backbone="deit_tiny_patch16_224",
        timm_kwargs={"depth": 6, "patch_size": 8, "img_size": 112},
        image_size=112,
        resize_long=(96, 160),
        batch_size=16,
        max_steps=args.steps,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        schedule="cosine",
        warmup_steps=20,
        head_lr_mult=1.0,
        num_workers=0,
        checkpoint_every=args.steps,
        progress=False,
        out=str(work / "run"),
    )
    started = time.time()
    model = train_seed_model(config, DistributedContext(), str(voc)).model.eval()
    return model, config, voc, time.time() - started


def render(
    args: argparse.Namespace,
    model: torch.nn.Module,
    config: SeedStageConfig,
    voc: Path,
    train_seconds: float,
) -> None:
    """Draw the figure and score each kind of map on the evaluation list."""
    dataset = eval_dataset(config, str(voc), with_masks=True)
    sweeps = {label: ThresholdSweep(num_labels=21) for _, _, label in KINDS}
    panels = []
    for index in range(len(dataset)):
        item = dataset[index]
        images, labels = item["image"][None], item["labels"][None]
        row = {}
        for kind, refine, label in KINDS:
            maps = MCTLocalizationMaps(model, kind=kind, refine=refine)
            seeds = infer_cams(maps, images, labels, scales=(1.0,))[0].numpy()
            sweeps[label].update(seeds, item["mask"].numpy())
            row[label] = seeds
        present = labels[0].nonzero().flatten().tolist()
        if len(panels) < 3 and present:
            panels.append((item["id"], present[0], row, item["mask"].numpy()))
    scores = {}
    for label, sweep in sweeps.items():
        result = sweep.result()
        scores[label] = {
            "miou": round(result.best_miou, 2),
            "threshold": round(result.best_threshold, 2),
            "fp_rate": round(result.fp_rate, 2),
            "fn_rate": round(result.fn_rate, 2),
        }

    tiles = []
    for image_id, cls, row, mask in panels:
        image = read_image(dataset.image_path(image_id))
        tiles.append(
            [(image, mask == cls + 1)] + [(image, row[label][cls]) for _, _, label in KINDS]
        )
    rows = [{"id": image_id, "class": VOC_CLASSES[cls]} for image_id, cls, _, _ in panels]
    draw(tiles, rows, scores, args.steps, len(dataset))
    record = {
        "command": "python docs/_static/mct_maps.py "
        + f"--steps {args.steps} --images {args.images} --eval-limit {args.eval_limit}",
        "train_seconds": round(train_seconds, 1),
        "eval_images": len(dataset),
        "seeds": scores,
        "rows": rows,
        "torch": torch.__version__,
    }
    (OUT / "mct_maps.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def draw(tiles: list, rows: list[dict], scores: dict, steps: int, eval_images: int) -> None:
    """Lay out the panels: one row per image, column titles once, titles readable in the page.

    ``tiles[r][0]`` is ``(image, outline mask)`` or an already drawn RGB panel
    (``(panel, None)``), ``tiles[r][1:]`` ``(image, map)`` or drawn panels, one per kind.
    """
    columns = ["image, class outlined"] + [
        f"{label}\nseed mIoU {scores[label]['miou']:.1f}" for _, _, label in KINDS
    ]
    figure, axes = plt.subplots(len(tiles), 5, figsize=(12.5, 2.3 * len(tiles) + 1.3), dpi=110)
    for r, (row_axes, row_tiles) in enumerate(zip(axes, tiles, strict=True)):
        for c, (axis, (image, overlay)) in enumerate(zip(row_axes, row_tiles, strict=True)):
            axis.imshow(image)
            if overlay is not None and c == 0:
                axis.contour(overlay, levels=[0.5], colors="white", linewidths=1.5)
            elif overlay is not None:
                axis.imshow(overlay, cmap="jet", alpha=0.55, vmin=0.0, vmax=1.0)
            axis.set_xticks([]), axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if r == 0:
                axis.set_title(columns[c], fontsize=15)
        row_axes[0].set_ylabel(f"{rows[r]['id']}\n{rows[r]['class']}", fontsize=15)
    figure.suptitle(
        f"MCTSeedModel (DeiT-tiny layout, 6 blocks, patch 8), random init, {steps} steps\n"
        f"on the demo data; seed mIoU on {eval_images} val images",
        fontsize=15,
    )
    figure.tight_layout()
    figure.savefig(OUT / "mct_maps.jpg", pil_kwargs={"quality": 90})  # noisy textures: JPEG


def retitle() -> None:
    """Redraw the existing figure's layout and titles from its own panels and record."""
    import numpy as np
    from PIL import Image

    record = json.loads((OUT / "mct_maps.json").read_text())
    figure = np.asarray(Image.open(OUT / "mct_maps.jpg").convert("RGB"))
    drawn = (figure < 235).any(-1)  # the panels are the rectangles that are not white

    def spans(profile: np.ndarray) -> list[tuple[int, int]]:
        edges = np.flatnonzero(np.diff(np.r_[0, (profile > 0.5).astype(int), 0]))
        return list(zip(edges[::2], edges[1::2], strict=True))

    columns, rows = spans(drawn.mean(0)), spans(drawn.mean(1))
    if (len(rows), len(columns)) != (len(record["rows"]), 5):
        raise SystemExit(
            f"expected {len(record['rows'])} x 5 panels, found {len(rows)} x {len(columns)}"
        )
    tiles = [[(figure[r0:r1, c0:c1], None) for c0, c1 in columns] for r0, r1 in rows]
    steps = int(record["command"].split("--steps ")[1].split()[0])
    draw(tiles, record["rows"], record["seeds"], steps, record["eval_images"])


if __name__ == "__main__":
    main()
