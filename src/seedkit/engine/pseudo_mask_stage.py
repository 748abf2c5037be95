"""Stage 2 of the WSSS pipeline: seeds -> pseudo masks.

Reads stage 1's psa-format seeds (``<id>.npy``), trains an affinity network on
the confident seed regions (method ``"rw"``), propagates the seeds by a random
walk on its affinities (or refines them with a dense CRF, or just thresholds
them), writes one index PNG per image and evaluates the masks against the
ground truth with the metrics of the seeds. Every step is resumable: the
affinity training from its checkpoint, the masks per image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from seedkit.engine.checkpoint import load_checkpoint
from seedkit.engine.config import StageConfig, _check_choice, _check_int
from seedkit.engine.datasets import check_evaluation_list, class_names_for, gt_dir
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.loop import MODEL_FORMAT, Trainer, total_steps
from seedkit.engine.run import RunFolder, dataset_digest, fingerprint, folder_fingerprint
from seedkit.errors import DataFileError, InvalidValueError, RunConflictError
from seedkit.files import atomic_write

__all__ = ["AffinityDataset", "PseudoMaskStageConfig", "run_pseudo_mask_stage"]

AFFINITY_MODEL = "affinity.pt"
#: What the masks depend on besides the affinity net and the seeds.
MASK_SETTINGS = (
    "method",
    "num_classes",
    "beta",
    "exp_times",
    "bg_mode",
    "walk_bg_threshold",
    "alpha",
    "seed_threshold",
    "crf",
)


@dataclass
class PseudoMaskStageConfig(StageConfig):
    """Everything that determines a stage-2 run; saved as ``OUT/config.json``.

    The defaults are IRN's (ResNet-50 at stride 4, radius 5, 512 crops, SGD
    poly lr 0.1, 3 epochs, conf_fg_thres 0.30, conf_bg_thres 0.05, beta 10,
    exp_times 8, sem_seg_bg_thres 0.25); the demo recipe shrinks them. Pseudo
    masks are made for ``train_split`` (the affinity network trains on it too).
    """

    STAGE: ClassVar[str] = "pseudo_masks"
    AFTER_TRAINING: ClassVar[frozenset[str]] = frozenset(
        {"eval_split", "eval_limit", "beta", "exp_times", "bg_mode", "walk_bg_threshold"}
        | {"alpha", "seed_threshold", "crf"}
    )
    INPUT_PATHS: ClassVar[frozenset[str]] = frozenset({"checkpoint_path", "seeds_dir"})

    seeds_dir: str = "runs/seed/seeds"
    out: str = "runs/pseudo"
    train_split: str = "train"
    method: str = "rw"
    # affinity network
    backbone: str = "resnet50"
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
    lr: float = 0.1
    weight_decay: float = 1e-4
    # random walk and masks
    beta: float = 10.0
    exp_times: int = 8
    bg_mode: str = "threshold"
    walk_bg_threshold: float = 0.25
    alpha: float = 6.0
    seed_threshold: float = 0.25
    crf: bool = False

    def trains(self) -> bool:
        """Only the random walk (``"rw"``) trains a network (the affinity net)."""
        return self.method == "rw"

    def check_stage(self) -> None:
        """Choices and ranges of stage 2's own fields."""
        _check_choice("method", self.method, ("rw", "crf", "threshold"))
        _check_choice("bg_mode", self.bg_mode, ("threshold", "power"))
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
        for name in ("radius", "embed_dim", "stride"):
            _check_int(name, getattr(self, name), 1)
        _check_int("exp_times", self.exp_times, 0)
        if self.timm_kwargs:
            raise InvalidValueError(
                "timm_kwargs",
                "{} (the affinity network takes no extra timm arguments)",
                self.timm_kwargs,
            )
        if self.output_stride is not None:
            raise InvalidValueError(
                "output_stride",
                "None (the affinity network's stride is `stride`)",
                self.output_stride,
            )


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


def _affinity_step(
    trainer: Trainer, config: PseudoMaskStageConfig, batch: dict[str, Any]
) -> torch.Tensor:
    from seedkit.refine import affinity_labels, affinity_loss, local_offsets, pair_affinity

    stride = config.stride
    labels = batch["labels"][:, stride // 2 :: stride, stride // 2 :: stride]
    embedding = trainer.wrapped(batch["image"])
    affinity = pair_affinity(embedding, local_offsets(config.radius, half=True))
    return affinity_loss(affinity, affinity_labels(labels, config.radius))


def _load_model_file(model: torch.nn.Module, run: RunFolder, device: torch.device) -> None:
    state = load_checkpoint(run.model_path, map_location=device)
    if state.get("format") != MODEL_FORMAT:
        raise RunConflictError(
            run.model_path, "is not a model file of this seedkit", hint="pass `overwrite`"
        )
    model.load_state_dict(state["model"])


def run_pseudo_mask_stage(
    config: PseudoMaskStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool = False,
    overwrite: bool = False,
    *,
    stop_after_steps: int | None = None,
) -> dict[str, Any] | None:
    """Train the affinity net (``"rw"``), write ``OUT/masks/<id>.png``, evaluate.

    Writes ``OUT/config.json``, ``OUT/run.json``, ``OUT/log.jsonl``,
    ``OUT/affinity.pt`` and ``OUT/results.json`` (``{"pseudo_masks": {"miou",
    "iou", "per_class", ..., "provenance"}}``) on rank 0 and returns that dict there
    (``None`` on other ranks). Every id's image and seeds (and the evaluated ids'
    ground truth) are checked first. A finished run of the same settings in
    ``OUT`` is reused, masks only if made from the same seeds and settings (an
    interrupted mask writing continues); the run folder rules are
    :class:`~seedkit.engine.RunFolder`'s.

    Args:
        config: stage settings (validated here).
        context: distributed context; mask writing is sharded over ranks.
        voc_root: the ``VOC2012`` folder (or a VOC-layout view of COCO).
        resume: continue the run in ``OUT``.
        overwrite: delete the run in ``OUT`` first.
        stop_after_steps: testing aid; see :meth:`~seedkit.engine.Trainer.fit`.

    Returns:
        The ``"pseudo_masks"`` results on rank 0.
    """
    from seedkit.data import TrainTransform, VOCSegmentation, collate, resolve_voc_root
    from seedkit.refine import RandomWalkSettings, evaluate_pseudo_masks, write_pseudo_masks

    config.validate()
    root = resolve_voc_root(voc_root)
    names = class_names_for(config.num_classes)
    base = VOCSegmentation(root, config.train_split, with_masks=False, class_names=names[1:])
    base.check_files()
    seeds_dir = Path(config.seeds_dir)
    for image_id in base.ids:
        if not (seeds_dir / f"{image_id}.npy").is_file():
            raise DataFileError(
                seeds_dir / f"{image_id}.npy",
                "seeds",
                f"listed in {config.train_split!r}; write the seeds of that list first",
            )
    eval_ids: list[str] = []
    if config.eval_split:
        train_ids = set(base.ids)
        listed = VOCSegmentation(root, config.eval_split, with_masks=False, class_names=names[1:])
        eval_ids = [i for i in listed.ids if i in train_ids][: config.eval_limit]
        if eval_ids:
            check_evaluation_list(root, eval_ids, config.num_classes)
    seeds_print = folder_fingerprint(seeds_dir)
    run = RunFolder(
        config,
        context,
        AFFINITY_MODEL,
        ("masks", "results.json"),
        inputs={"train_data": dataset_digest(base), "seeds": seeds_print},
        total_steps=total_steps(config, len(base)) if config.trains() else 0,
    )
    plan = run.prepare(resume=resume, overwrite=overwrite)
    model = None
    if config.trains():
        torch.manual_seed(config.seed)  # the net's initialisation, whatever ran before
        model = build_affinity_net(config)
        if plan.train:
            trainer = Trainer(model, config, context, len(base))
            dataset = AffinityDataset(
                base,
                seeds_dir,
                config.num_classes,
                TrainTransform(config.image_size, resize_long=config.resize_long),
                config.fg_threshold,
                config.bg_threshold,
                seed=config.seed,
            )
            torch.manual_seed(config.seed)
            trainer.fit(
                dataset,
                lambda batch, info: _affinity_step(trainer, config, batch),
                run,
                collate=collate,
                resume=plan.resume,
                stop_after_steps=stop_after_steps,
                desc="train affinity",
                log_start={"stage": "pseudo_masks", "backbone": config.backbone},
            )
            trainer.save_model(run)
        else:
            model = model.to(context.device)
            _load_model_file(model, run, context.device)
    elif plan.train:
        run.finish_training(0)
    mask_print = fingerprint(
        {
            "affinity": run.model_digest() if model is not None else None,
            "seeds": seeds_print,
            **{name: getattr(config, name) for name in MASK_SETTINGS},
        }
    )
    run.begin_artefact("masks", mask_print)
    settings = RandomWalkSettings(
        beta=config.beta,
        exp_times=config.exp_times,
        bg_mode=config.bg_mode,
        bg_threshold=config.walk_bg_threshold,
        alpha=config.alpha,
    )
    write_pseudo_masks(
        base,
        seeds_dir,
        run.out / "masks",
        config.num_classes,
        method=config.method,
        model=model,
        settings=settings,
        threshold=config.seed_threshold,
        crf=config.crf,
        device=context.device,
        overwrite=False,  # masks of another fingerprint were deleted; finished ids are kept
        progress=config.progress and context.is_main,
        rank=context.rank,
        world_size=context.world_size,
    )
    context.barrier()
    run.finish_artefact("masks")
    if not context.is_main:
        return None
    results: dict[str, Any] = {"method": config.method, "masks": str(run.out / "masks")}
    if eval_ids:
        results.update(
            evaluate_pseudo_masks(
                run.out / "masks", gt_dir(root), eval_ids, config.num_classes + 1, names
            )
        )
    from seedkit.engine.seed_stage import provenance

    results["provenance"] = provenance(run)
    atomic_write(
        run.out / "results.json",
        (json.dumps({"pseudo_masks": results}, indent=2) + "\n").encode(),
    )
    return results
