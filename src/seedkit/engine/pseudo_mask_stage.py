"""Stage 2 of the WSSS pipeline: seeds -> pseudo masks.

Reads stage 1's psa-format seeds (``<id>.npy``), trains an affinity network on
the confident seed regions (method ``"rw"``), propagates the seeds by a random
walk on its affinities (or refines them with a dense CRF, or just thresholds
them), writes one index PNG per image and evaluates the masks against the
ground truth with the metrics of the seeds. Every step is resumable: the
affinity training from its checkpoint, the masks per image.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedkit.engine._loop import class_names_for, gt_dir, train_loop
from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.distributed import DistributedContext
from seedkit.errors import InvalidValueError

__all__ = ["AffinityDataset", "PseudoMaskStageConfig", "run_pseudo_mask_stage"]

AFFINITY_MODEL = "affinity.pt"


@dataclass
class PseudoMaskStageConfig:
    """Everything that determines a stage-2 run; saved as ``OUT/config.json``.

    The defaults are IRN's (ResNet-50 at stride 4, radius 5, 512 crops, SGD
    poly lr 0.1, 3 epochs, conf_fg_thres 0.30, conf_bg_thres 0.05, beta 10,
    exp_times 8, sem_seg_bg_thres 0.25); the demo recipe shrinks them.
    """

    seeds_dir: str = "runs/seed/seeds"
    out: str = "runs/pseudo"
    split: str = "train"
    eval_split: str | None = "train"
    num_classes: int = 20
    eval_limit: int | None = None
    method: str = "rw"
    # affinity network
    backbone: str = "resnet50"
    pretrained: bool = False
    checkpoint_path: str | None = None
    stride: int = 4
    radius: int = 5
    embed_dim: int = 128
    fg_threshold: float = 0.30
    bg_threshold: float = 0.05
    image_size: int = 512
    resize_long: tuple[int, int] | None = (320, 640)
    batch_size: int = 16
    epochs: int | None = 3
    max_steps: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 1e-4
    head_lr_mult: float = 10.0
    schedule: str = "poly"
    warmup_steps: int = 0
    # random walk and masks
    beta: float = 10.0
    exp_times: int = 8
    bg_mode: str = "threshold"
    walk_bg_threshold: float = 0.25
    alpha: float = 6.0
    seed_threshold: float = 0.25
    crf: bool = False
    # run
    seed: int = 0
    num_workers: int = 2
    checkpoint_every: int = 200
    log_every: int = 10
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> PseudoMaskStageConfig:
        """Check choices and ranges; return ``self``."""
        if self.method not in ("rw", "crf", "threshold"):
            raise InvalidValueError("method", "one of rw, crf, threshold", self.method)
        if self.method == "rw" and (self.epochs is None) == (self.max_steps is None):
            raise InvalidValueError(
                "epochs / max_steps", "exactly one of them", (self.epochs, self.max_steps)
            )
        if not 0.0 <= self.bg_threshold <= self.fg_threshold <= 1.0:
            raise InvalidValueError(
                "bg_threshold / fg_threshold",
                "0 <= bg <= fg <= 1",
                (self.bg_threshold, self.fg_threshold),
            )
        if self.image_size % self.stride:
            raise InvalidValueError(
                "image_size", f"a multiple of stride {self.stride}", self.image_size
            )
        if self.bg_mode not in ("threshold", "power"):
            raise InvalidValueError("bg_mode", "'threshold' or 'power'", self.bg_mode)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


#: Stage-2 settings of the built-in demo: small enough for a 2-core CPU.
DEMO_PSEUDO_MASKS: dict[str, Any] = {
    "backbone": "resnet18",
    "stride": 4,
    "radius": 5,
    "embed_dim": 64,
    "image_size": 112,
    "resize_long": (96, 160),
    "batch_size": 8,
    "epochs": None,
    "max_steps": 150,
    "optimizer": "adamw",
    "lr": 1e-3,
    "head_lr_mult": 1.0,
    "schedule": "cosine",
    "warmup_steps": 10,
    "checkpoint_every": 50,
    "num_workers": 0,
}


class AffinityDataset(torch.utils.data.Dataset):
    """Images with the confident-region labels of their seeds, cropped together.

    Args:
        base: a :class:`~seedkit.data.VOCSegmentation` (``with_masks=False``),
            used for ids and image paths.
        seeds_dir: psa-format seeds of those ids.
        num_fg_classes: foreground classes.
        transform: a :class:`~seedkit.data.TrainTransform`; the label map goes
            through it as the mask.
        fg_threshold: confident foreground threshold.
        bg_threshold: confident background threshold.
        seed: augmentation seed.

    Sample:
        ``{"id", "image" (3, S, S), "labels" (S, S) int64 with 255 unsure}``.
    """

    def __init__(
        self,
        base: Any,
        seeds_dir: str | Path,
        num_fg_classes: int,
        transform: Any,
        fg_threshold: float,
        bg_threshold: float,
        seed: int = 0,
    ) -> None:
        self.base = base
        self.ids = list(base.ids)
        self.seeds_dir = Path(seeds_dir)
        self.num_fg_classes = num_fg_classes
        self.transform = transform
        self.fg_threshold, self.bg_threshold = fg_threshold, bg_threshold
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch that seeds the augmentation."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from seedkit.data import read_image, sample_generator
        from seedkit.metrics import load_psa_maps
        from seedkit.refine import confident_labels

        image_id = self.ids[index]
        image = read_image(self.base.image_path(image_id))
        seeds = load_psa_maps(
            self.seeds_dir / f"{image_id}.npy", self.num_fg_classes, shape=image.shape[:2]
        )
        keys = sorted(seeds)
        stack = (
            torch.from_numpy(np.stack([seeds[k] for k in keys]))
            if keys
            else torch.zeros(0, *image.shape[:2])
        )
        labels = confident_labels(
            stack, self.fg_threshold, self.bg_threshold, torch.tensor(keys, dtype=torch.long)
        )
        out = self.transform(
            image, labels.numpy().astype(np.uint8), sample_generator(self.seed, self.epoch, index)
        )
        return {
            "id": image_id,
            "image": torch.from_numpy(out["image"]),
            "labels": torch.from_numpy(out["mask"].astype(np.int64)),
        }


def build_affinity_net(config: PseudoMaskStageConfig) -> torch.nn.Module:
    """The :class:`~seedkit.refine.AffinityNet` of ``config``."""
    from seedkit.refine import AffinityNet

    return AffinityNet(
        config.backbone,
        pretrained=config.pretrained,
        stride=config.stride,
        embed_dim=config.embed_dim,
        radius=config.radius,
        checkpoint_path=config.checkpoint_path,
    )


def train_affinity(
    config: PseudoMaskStageConfig,
    context: DistributedContext,
    voc_root: str,
    class_names: list[str],
    resume: bool = False,
) -> torch.nn.Module:
    """Train the affinity net on the seeds' confident regions; save ``OUT/affinity.pt``."""
    from seedkit.data import TrainTransform, VOCSegmentation, collate
    from seedkit.refine import affinity_labels, affinity_loss

    out = Path(config.out)
    model = build_affinity_net(config).to(context.device)
    base = VOCSegmentation(voc_root, config.split, with_masks=False, class_names=class_names[1:])
    transform = TrainTransform(config.image_size, resize_long=config.resize_long)
    dataset = AffinityDataset(
        base,
        config.seeds_dir,
        config.num_classes,
        transform,
        config.fg_threshold,
        config.bg_threshold,
        seed=config.seed,
    )
    stride = config.stride

    def loss_fn(net: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        images = batch["image"].to(context.device)
        labels = batch["labels"].to(context.device)[:, stride // 2 :: stride, stride // 2 :: stride]
        embedding = net(images)
        from seedkit.refine import local_offsets, pair_affinity

        affinity = pair_affinity(embedding, local_offsets(config.radius, half=True))
        return affinity_loss(affinity, affinity_labels(labels, config.radius))

    train_loop(
        model=model,
        dataset=dataset,
        loss_fn=loss_fn,
        out=out,
        context=context,
        settings=config,
        resume=resume,
        desc="train affinity",
        collate=collate,
        extra_log={"stage": "pseudo_masks", "backbone": config.backbone},
    )
    if context.is_main:
        save_checkpoint(
            out / AFFINITY_MODEL, {"model": model.state_dict(), "config": config.to_dict()}
        )
    context.barrier()
    return model


def run_pseudo_mask_stage(
    config: PseudoMaskStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool = False,
) -> dict[str, Any] | None:
    """Train the affinity net (``"rw"``), write ``OUT/masks/<id>.png``, evaluate.

    Writes ``OUT/config.json``, ``OUT/log.jsonl``, ``OUT/affinity.pt`` and
    ``OUT/results.json`` (``{"pseudo_masks": {"miou", "iou", "per_class", ...}}``)
    on rank 0 and returns that dict there (``None`` on other ranks). With
    ``resume=True`` a finished affinity net is reused (an interrupted one
    continues from its checkpoint) and existing masks are skipped; without it
    everything is recomputed.

    Args:
        config: stage settings (validated here).
        context: distributed context; mask writing is sharded over ranks.
        voc_root: the ``VOC2012`` folder (or a VOC-layout view of COCO).
        resume: reuse what an earlier run of the same ``OUT`` finished.

    Returns:
        The ``"pseudo_masks"`` results on rank 0.
    """
    from seedkit.data import VOCSegmentation, atomic_write_bytes, resolve_voc_root
    from seedkit.engine.config import save_config
    from seedkit.refine import RandomWalkSettings, evaluate_pseudo_masks, write_pseudo_masks

    config.validate()
    out = Path(config.out)
    root = resolve_voc_root(voc_root)
    names = class_names_for(config.num_classes)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.json")  # type: ignore[arg-type]
    model = None
    if config.method == "rw":
        if resume and (out / AFFINITY_MODEL).is_file():
            model = build_affinity_net(config).to(context.device)
            model.load_state_dict(
                load_checkpoint(out / AFFINITY_MODEL, map_location=context.device)["model"]
            )
        else:
            model = train_affinity(config, context, str(root), names, resume=resume)
    dataset = VOCSegmentation(root, config.split, with_masks=False, class_names=names[1:])
    settings = RandomWalkSettings(
        beta=config.beta,
        exp_times=config.exp_times,
        bg_mode=config.bg_mode,
        bg_threshold=config.walk_bg_threshold,
        alpha=config.alpha,
    )
    write_pseudo_masks(
        dataset,
        config.seeds_dir,
        out / "masks",
        config.num_classes,
        method=config.method,
        model=model,
        settings=settings,
        threshold=config.seed_threshold,
        crf=config.crf,
        device=context.device,
        overwrite=not resume,  # a fresh run rewrites every mask; a resumed one keeps finished ids
        progress=config.progress and context.is_main,
        rank=context.rank,
        world_size=context.world_size,
    )
    context.barrier()
    if not context.is_main:
        return None
    results: dict[str, Any] = {"method": config.method, "masks": str(out / "masks")}
    if config.eval_split:
        eval_ids = [
            i
            for i in VOCSegmentation(
                root, config.eval_split, with_masks=False, class_names=names[1:]
            ).ids
            if i in set(dataset.ids)
        ]
        if config.eval_limit is not None:
            eval_ids = eval_ids[: config.eval_limit]
        folder = gt_dir(root)
        eval_ids = [i for i in eval_ids if (folder / f"{i}.png").is_file()]
        if eval_ids:
            results.update(
                evaluate_pseudo_masks(
                    out / "masks", folder, eval_ids, config.num_classes + 1, names
                )
            )
    atomic_write_bytes(
        out / "results.json", (json.dumps({"pseudo_masks": results}, indent=2) + "\n").encode()
    )
    return results
