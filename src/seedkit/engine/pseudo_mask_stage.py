"""Stage 2 of the WSSS pipeline: seeds -> pseudo masks.

An affinity network trained on the confident seed regions (method ``"rw"``) and a
random walk on its affinities (or a dense CRF, or a threshold) turn stage 1's seeds
into one index PNG per image, evaluated against the ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedkit.engine.config import PSEUDO_MASKS, PseudoMaskStageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.run import RunFolder, dataset_digest, files_digest, fingerprint
from seedkit.engine.stages import (
    Stage,
    TrainingState,
    check_network,
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
        self.base, self.ids, self.seeds_dir = base, list(base.ids), Path(seeds_dir)
        self.num_fg_classes, self.transform, self.seed = num_fg_classes, transform, seed
        self.epoch = 0
        self.fg_threshold, self.bg_threshold = fg_threshold, bg_threshold

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
        path = self.seeds_dir / f"{image_id}.npy"
        seeds = load_psa_maps(path, self.num_fg_classes, shape=image.shape[:2])
        keys = sorted(seeds)
        stack = torch.from_numpy(np.stack([seeds[k] for k in keys])) if keys else torch.zeros(
            0, *image.shape[:2]
        )  # fmt: skip
        keys_tensor = torch.tensor(keys, dtype=torch.long)
        labels = confident_labels(stack, self.fg_threshold, self.bg_threshold, keys_tensor)
        rng = sample_generator(self.seed, self.epoch, index)
        out = self.transform(image, labels.numpy().astype(np.uint8), rng)
        return {"id": image_id, "image": torch.from_numpy(out["image"]),
                "labels": torch.from_numpy(out["mask"].astype(np.int64))}  # fmt: skip


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
        config.backbone, pretrained=config.pretrained and weights, stride=config.stride,
        embed_dim=config.embed_dim, radius=config.radius,
        checkpoint_path=config.checkpoint_path if weights else None,
    )  # fmt: skip


class AffinityTrainingState(TrainingState):
    """The affinity network's training: PSA's balanced loss on the confident seed pairs."""

    def training_step(self, batch: dict[str, Any], info: Any) -> torch.Tensor:
        """The affinity loss of one micro-batch."""
        from seedkit.refine import affinity_labels, affinity_loss, local_offsets, pair_affinity

        config, stride = self.config, self.config.stride
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

    def check_settings(self, config: Any, context: DistributedContext, produced: bool) -> None:
        """The affinity backbone: a CNN with features at the affinity stride; its weights."""
        if config.trains():
            import timm

            try:
                with torch.device("meta"):
                    features = timm.create_model(config.backbone, features_only=True)
                reductions = features.feature_info.reduction()
            except Exception as error:  # timm raises many types for unfit models
                expected = "a timm CNN with features_only support"
                raise InvalidValueError("backbone", expected, config.backbone) from error
            if config.stride < min(reductions):
                expected = f"a CNN with features at stride {config.stride} (the affinity stride)"
                actual = f"{config.backbone} (features at strides {sorted(set(reductions))})"
                raise InvalidValueError("backbone", expected, actual)
            check_network(config, context, build_affinity_net)

    def check_data(self, config: Any, voc_root: Any, produced: bool) -> None:
        """The training images, their seeds (unless still to be written) and the ground truth."""
        _base(config, voc_root).check_files()
        missing = [p for p in _seed_files(config, voc_root) if not p.is_file()]
        if missing and not produced:
            hint = f"listed in {config.train_split!r}; write them first"
            raise DataFileError(missing[0], "seeds", hint)
        if ids := _eval_ids(config, voc_root):
            evaluation_dataset(voc_root, ids, config.num_classes, check=True)

    def inputs(self, config: Any, voc_root: Any, digests: ContentDigests) -> dict[str, Any]:
        """The training list (images, labels) and its seeds, by content."""
        seeds = files_digest(_seed_files(config, voc_root), digests)
        return {"train_data": dataset_digest(_base(config, voc_root), digests), "seeds": seeds}

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
        state = AffinityTrainingState(build_affinity_net(config), config, context, len(base))
        return dataset, state

    def masks_fingerprint(self, config: Any, run: RunFolder) -> str:
        """What every mask depends on: the affinity net and the ``masks`` settings.

        (Each mask's own image and seeds are its recorded sources.)
        """
        affects = config.settings()
        settings = {n: v for n, v in config.values().items() if "masks" in affects[n].affects}
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
            base, config.seeds_dir, run.out / "masks", config.num_classes, method=config.method,
            model=state and state.model, settings=settings, threshold=config.seed_threshold,
            crf=config.crf, device=context.device, overwrite=False,
            progress=config.progress and context.is_main, rank=context.rank,
            world_size=context.world_size,
        )  # fmt: skip
        context.barrier()
        run.close_artefact("masks")
        if not context.is_main:
            return None
        results: dict[str, Any] = {"method": config.method, "masks": str(run.out / "masks")}
        if eval_ids := _eval_ids(config, voc_root):
            from seedkit.data import resolve_voc_root

            names, root = class_names_for(config.num_classes), resolve_voc_root(voc_root)
            masks = run.out / "masks"
            results.update(evaluate_pseudo_masks(masks, gt_dir(root), eval_ids, len(names), names))
        return {"pseudo_masks": results}

    def result_inputs(
        self, config: Any, voc_root: Any, run: RunFolder, digests: ContentDigests
    ) -> dict[str, Any]:
        """The model, training inputs, the masks and the ground truth of the evaluated ids."""
        masks = [run.out / "masks" / f"{i}.png" for i in _base(config, voc_root).ids]
        inputs = super().result_inputs(config, voc_root, run, digests)
        inputs["mask_files"] = files_digest(masks, digests)
        if ids := _eval_ids(config, voc_root):
            dataset = evaluation_dataset(voc_root, ids, config.num_classes)
            inputs["eval_data"] = evaluation_digest(dataset, digests)
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
    """Train the affinity net (``"rw"``), write ``OUT/masks/<id>.png``, evaluate them.

    :func:`~seedkit.engine.run_stage` of :data:`PSEUDO_MASK_STAGE` (its arguments;
    ``voc_root`` defaults to ``config.voc_root``): every id's image and seeds and the
    evaluated ids' ground truth are checked first; ``OUT`` gets ``config.json``,
    ``run.json``, ``log.jsonl``, ``affinity.pt``, ``masks/`` and ``results.json``.

    Returns:
        The ``"pseudo_masks"`` results with their ``"provenance"`` (rank 0, else ``None``).
    """
    root = voc_root or config.voc_root
    found = run_stage(PSEUDO_MASK_STAGE, config, context, root, resume, overwrite, **hooks)
    return None if found is None else {**found["pseudo_masks"], "provenance": found["provenance"]}
