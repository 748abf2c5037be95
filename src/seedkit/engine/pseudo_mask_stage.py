"""Stage 2 of the WSSS pipeline: seeds -> pseudo masks.

Reads stage 1's psa-format seeds (``<id>.npy``), trains an affinity network on
the confident seed regions (method ``"rw"``), propagates the seeds by a random
walk on its affinities (or refines them with a dense CRF, or just thresholds
them), writes one index PNG per image and evaluates the masks against the
ground truth with the metrics of the seeds. Run by :func:`~seedkit.engine.run_stage`
like every stage: the affinity training resumes from its checkpoint, the masks per
image, and masks whose content is not the recorded one are made again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedkit.engine.config import PSEUDO_MASKS, PseudoMaskStageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.run import RunFolder, dataset_digest, files_digest, fingerprint
from seedkit.engine.seed_stage import check_model
from seedkit.engine.stages import (
    Stage,
    TrainingState,
    class_names_for,
    evaluation_dataset,
    evaluation_digest,
    gt_dir,
    run_stage,
)
from seedkit.errors import DataFileError, InvalidValueError
from seedkit.files import ContentDigests

__all__ = ["PSEUDO_MASK_STAGE", "AffinityDataset", "PseudoMaskStage", "run_pseudo_mask_stage"]


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


def _base(config: PseudoMaskStageConfig, voc_root: Any) -> Any:
    from seedkit.data import VOCSegmentation

    names = class_names_for(config.num_classes)
    return VOCSegmentation(voc_root, config.train_split, with_masks=False, class_names=names[1:])


def _seed_files(config: PseudoMaskStageConfig, voc_root: Any) -> list[Path]:
    return [Path(config.seeds_dir) / f"{i}.npy" for i in _base(config, voc_root).ids]


def build_affinity_net(config: PseudoMaskStageConfig, weights: bool = True) -> torch.nn.Module:
    """The :class:`~seedkit.refine.AffinityNet` of ``config``."""
    from seedkit.refine import AffinityNet

    return AffinityNet(
        config.backbone,
        pretrained=config.pretrained and weights,
        stride=config.stride,
        embed_dim=config.embed_dim,
        radius=config.radius,
        checkpoint_path=config.checkpoint_path if weights else None,
    )


class AffinityTrainingState(TrainingState):
    """The affinity network's training: PSA's balanced loss on the confident seed pairs."""

    def training_step(self, batch: dict[str, Any], info: Any) -> torch.Tensor:
        """The affinity loss of one micro-batch."""
        from seedkit.refine import affinity_labels, affinity_loss, local_offsets, pair_affinity

        config = self.config
        stride = config.stride
        labels = batch["labels"][:, stride // 2 :: stride, stride // 2 :: stride]
        embedding = self.trainer.wrapped(batch["image"])
        affinity = pair_affinity(embedding, local_offsets(config.radius, half=True))
        return affinity_loss(affinity, affinity_labels(labels, config.radius))


def _eval_ids(config: PseudoMaskStageConfig, voc_root: Any) -> list[str]:
    from seedkit.data import read_id_list

    if not config.eval_split:
        return []
    train_ids = set(_base(config, voc_root).ids)
    listed = read_id_list(voc_root, config.eval_split)
    return [i for i in listed if i in train_ids][: config.eval_limit]


class PseudoMaskStage(Stage):
    """Stage 2: the affinity network (``"rw"``), the pseudo masks and their evaluation."""

    name = PSEUDO_MASKS
    model_file = "affinity.pt"
    owned = ("masks", "results.json")
    artefacts = ("masks",)

    def check_settings(self, config: Any, context: DistributedContext, produced: bool) -> None:
        """The affinity backbone: a CNN with features at the affinity stride; its weights."""
        if config.trains():
            import timm

            try:
                with torch.device("meta"):
                    features = timm.create_model(config.backbone, features_only=True)
                reductions = features.feature_info.reduction()
            except Exception as error:  # timm raises many types for unfit models
                raise InvalidValueError(
                    "backbone", "a timm CNN with features_only support", config.backbone
                ) from error
            if config.stride < min(reductions):
                raise InvalidValueError(
                    "backbone",
                    f"a CNN with features at stride {config.stride} (the affinity stride)",
                    f"{config.backbone} (features at strides {sorted(set(reductions))})",
                )
            check_model(config, context, build_affinity_net)

    def check_data(self, config: Any, voc_root: Any, produced: bool) -> None:
        """The training images, their seeds (unless still to be written) and the ground truth."""
        _base(config, voc_root).check_files()
        if not produced:
            for path in _seed_files(config, voc_root):
                if not path.is_file():
                    raise DataFileError(
                        path, "seeds", f"listed in {config.train_split!r}; write them first"
                    )
        ids = _eval_ids(config, voc_root)
        if ids:
            evaluation_dataset(voc_root, ids, config.num_classes, check=True)

    def inputs(self, config: Any, voc_root: Any, digests: ContentDigests) -> dict[str, Any]:
        """The training list (images, labels) and its seeds, by content."""
        inputs = {
            "train_data": dataset_digest(_base(config, voc_root), digests),
            "seeds": files_digest(_seed_files(config, voc_root), digests),
        }
        if config.checkpoint_path:
            inputs["checkpoint_path"] = digests.digest(config.checkpoint_path)[:16]
        return inputs

    def build_model(self, config: Any, weights: bool = True) -> torch.nn.Module | None:
        """The affinity network (``"rw"``), else ``None``."""
        return build_affinity_net(config, weights) if config.trains() else None

    def training(self, config: Any, context: DistributedContext, voc_root: Any) -> tuple[Any, Any]:
        """The seeds' confident regions on augmented crops, and the affinity network."""
        from seedkit.data import TrainTransform

        base = _base(config, voc_root)
        dataset = AffinityDataset(
            base, config.seeds_dir, config.num_classes,
            TrainTransform(config.image_size, resize_long=config.resize_long),
            config.fg_threshold, config.bg_threshold, seed=config.seed,
        )  # fmt: skip
        return dataset, AffinityTrainingState(build_affinity_net(config), config, context, len(base))

    def masks_fingerprint(self, config: Any, run: RunFolder) -> str:
        """What every mask depends on: the affinity net and the ``masks`` settings (each mask's
        own image and seeds are its recorded sources)."""
        settings = {n: v for n, v in config.values().items() if "masks" in config.settings()[n].affects}
        return fingerprint({"affinity": run.model_digest(), "method": config.method,
                            "num_classes": config.num_classes, **settings})  # fmt: skip

    def produce(
        self, config: Any, context: DistributedContext, voc_root: Any, state: Any, run: RunFolder
    ) -> dict[str, Any] | None:
        """Write ``OUT/masks/<id>.png`` (the missing ones), evaluate them (rank 0)."""
        from seedkit.refine import RandomWalkSettings, evaluate_pseudo_masks, write_pseudo_masks

        base = _base(config, voc_root)
        sources = {  # each mask is made from its image and its seeds
            f"{i}.png": run.digests.digest(base.image_path(i))[:8]
            + run.digests.digest(Path(config.seeds_dir) / f"{i}.npy")[:8]
            for i in base.ids
        }
        run.open_artefact("masks", self.masks_fingerprint(config, run), sources)
        settings = RandomWalkSettings(
            beta=config.beta, exp_times=config.exp_times, bg_mode=config.bg_mode,
            bg_threshold=config.walk_bg_threshold, alpha=config.alpha,
        )  # fmt: skip
        write_pseudo_masks(
            base, config.seeds_dir, run.out / "masks", config.num_classes,
            method=config.method, model=state and state.model, settings=settings,
            threshold=config.seed_threshold,
            crf=config.crf, device=context.device, overwrite=False,
            progress=config.progress and context.is_main, rank=context.rank,
            world_size=context.world_size,
        )  # fmt: skip
        context.barrier()
        run.close_artefact("masks")
        if not context.is_main:
            return None
        results: dict[str, Any] = {"method": config.method, "masks": str(run.out / "masks")}
        eval_ids = _eval_ids(config, voc_root)
        if eval_ids:
            from seedkit.data import resolve_voc_root

            names = class_names_for(config.num_classes)
            root = resolve_voc_root(voc_root)
            results.update(
                evaluate_pseudo_masks(
                    run.out / "masks", gt_dir(root), eval_ids, config.num_classes + 1, names
                )
            )
        return {"pseudo_masks": results}

    def result_inputs(
        self, config: Any, voc_root: Any, run: RunFolder, digests: ContentDigests
    ) -> dict[str, Any]:
        """The model, training inputs, the masks and the ground truth of the evaluated ids."""
        masks = [run.out / "masks" / f"{i}.png" for i in _base(config, voc_root).ids]
        inputs = {**super().result_inputs(config, voc_root, run, digests),
                  "mask_files": files_digest(masks, digests)}  # fmt: skip
        ids = _eval_ids(config, voc_root)
        if ids:
            inputs["eval_data"] = evaluation_digest(
                evaluation_dataset(voc_root, ids, config.num_classes), digests
            )
        return inputs


#: The pseudo-mask stage (stage 2).
PSEUDO_MASK_STAGE = PseudoMaskStage()


def run_pseudo_mask_stage(
    config: PseudoMaskStageConfig,
    context: DistributedContext,
    voc_root: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    **hooks: Any,
) -> dict[str, Any] | None:
    """Train the affinity net (``"rw"``), write ``OUT/masks/<id>.png``, evaluate.

    Writes ``OUT/config.json``, ``OUT/run.json``, ``OUT/log.jsonl``,
    ``OUT/affinity.pt`` and ``OUT/results.json`` (``{"pseudo_masks": {"miou",
    "iou", "per_class", ...}, "provenance": ...}``) on rank 0 and returns the
    ``"pseudo_masks"`` entry there (``None`` on other ranks). Every id's image and
    seeds (and the evaluated ids' ground truth) are checked first; the run folder
    rules are :class:`~seedkit.engine.RunFolder`'s.

    Args:
        config: stage settings (validated here).
        context: distributed context; mask writing is sharded over ranks.
        voc_root: the ``VOC2012`` folder (or a VOC-layout view of COCO).
        resume: continue the run in ``OUT``.
        overwrite: delete the run in ``OUT`` first.
        **hooks: see :func:`~seedkit.engine.train_stage` (``stop_after_steps``...).

    Returns:
        The ``"pseudo_masks"`` results on rank 0.
    """
    root = voc_root or config.voc_root
    document = run_stage(PSEUDO_MASK_STAGE, config, context, root, resume, overwrite, **hooks)
    return None if document is None else {**document["pseudo_masks"], "provenance": document["provenance"]}
