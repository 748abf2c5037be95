"""Stage 1 of the WSSS pipeline: train a seed model, write seeds, evaluate them.

:class:`SeedTrainingState` trains the CAM baseline or USAGE (student under a strong
network adjustment, EMA teacher under a weak one); :class:`SeedStage` adds
multi-scale CAM inference, the background-threshold sweep, overlays and results.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import seedkit
from seedkit.engine.config import SEEDS, SeedStageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.loop import StepInfo, StepOutput
from seedkit.engine.run import RUN_RECORD, RunFolder, dataset_digest, files_digest, fingerprint
from seedkit.engine.stages import (
    Stage,
    TrainingState,
    check_network,
    class_names_for,
    evaluation_digest,
    evaluation_list,
    gt_dir,
    load_stage_model,
    locked,
    run_stage,
    train_stage,
)
from seedkit.errors import DataFileError, InvalidValueError
from seedkit.files import ContentDigests, atomic_write, remove_stale_temporaries

__all__ = [
    "SEED_STAGE", "STRONG_DROP", "WEAK_DROP", "SeedStage", "SeedTrainingState",
    "backbone_kwargs", "cam_validity_mask", "ensure_seeds", "eval_dataset",
    "evaluate_model_seeds", "load_seed_model", "pooling_fraction", "run_seed_stage",
    "token_classification_loss", "train_seed_model", "view_drops",
]  # fmt: skip

STRONG_DROP = 0.3
WEAK_DROP = 0.1


def backbone_kwargs(config: SeedStageConfig) -> dict[str, Any]:
    """Timm keyword arguments of the config: ``timm_kwargs``, plus ``output_stride`` for CNNs."""
    from seedkit.backbones import with_output_stride

    return with_output_stride(config.backbone, config.output_stride, **config.timm_kwargs)


def view_drops(config: SeedStageConfig, consistency_weight: float) -> tuple[float, float]:
    """Student and teacher drop ratios: the config's, else the defaults of the term's state.

    The network-adjusted views serve the consistency term. With the term on, the
    student gets ``STRONG_DROP`` and the teacher ``WEAK_DROP``; with its weight at 0
    there is no adjustment (on the seed-quality benchmark a strong view without the
    term was neutral for the CNN and cost the ViT 6.5 seed mIoU).
    """
    on = consistency_weight > 0
    student, teacher = config.student_drop, config.teacher_drop
    return (
        student if student is not None else (STRONG_DROP if on else 0.0),
        teacher if teacher is not None else (WEAK_DROP if on else 0.0),
    )


def cam_validity_mask(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The CAM cells of a ``(B, H, W)`` pixel validity mask: valid if any pixel under them is.

    So no image of a padded batch is ever fully masked.
    """
    return F.adaptive_max_pool2d(valid[:, None].float(), size) > 0


def token_classification_loss(output: Any, labels: torch.Tensor) -> torch.Tensor | None:
    """The classification loss of a model output's class-token scores, if it has any.

    The hook by which a seed model adds its own classification term: an output
    with a ``token_logits`` field (:class:`seedkit.backbones.MCTSeedModelOutput`,
    one score per class token) adds MCTformer's multi-label soft margin loss on
    them to the seed-stage loss (``L = L_patch-CAM + L_token``, MCTformer-V2; with
    USAGE, ``L_GEN + lambda L_REG`` on the patch CAMs plus ``L_token``). Other
    outputs add nothing (``None``).
    """
    scores = getattr(output, "token_logits", None)
    if scores is None:
        return None
    return F.multilabel_soft_margin_loss(scores.float(), labels.float())


def build_seed_model(config: SeedStageConfig, weights: bool = True) -> torch.nn.Module:
    """The seed model of ``config`` (``weights``: timm's or ``checkpoint_path``'s, else random)."""
    from seedkit.backbones import create_seed_model

    return create_seed_model(
        config.backbone, num_classes=config.num_classes, pretrained=config.pretrained and weights,
        checkpoint_path=config.checkpoint_path if weights else None, head=config.head,
        **backbone_kwargs(config),
    )  # fmt: skip


class SeedTrainingState(TrainingState):
    """The model, EMA teacher, views, criterion and :class:`~seedkit.engine.Trainer` of a run.

    Args:
        config: the run's (validated) configuration.
        context: the process's distributed context.
        num_samples: length of the training list.

    Attributes:
        trainer: optimiser, schedule, AMP, DDP and checkpoint state.
        model: the student (``trainer.model``).
        teacher: the :class:`~seedkit.EMATeacher` of a USAGE run, else ``None``.
        criterion: :class:`~seedkit.USAGELoss` (USAGE) or
            :class:`~seedkit.SeedGenerationLoss` at GAP (CAM baseline).
        student_view, teacher_view: the network-adjusted views (USAGE).
        full_weight: the consistency weight after its ramp.
        pooling: ``(temperature, scale)`` of the generation term (temperature ``None``: GAP).
        run: the run folder; voc_root: the data of :meth:`evaluate` (set by the stage).
    """

    def __init__(self, config: SeedStageConfig, context: DistributedContext, num_samples: int):
        model = build_seed_model(config)
        self.teacher = None
        self.criterion: torch.nn.Module
        self.full_weight = 0.0
        if config.method == "usage":
            from seedkit.engine.loop import total_steps

            self.teacher = seedkit.EMATeacher(
                model, momentum=config.ema_momentum, schedule=config.ema_schedule,
                total_steps=total_steps(config, num_samples),
            )  # fmt: skip
            self.criterion = seedkit.USAGELoss.for_backbone(
                model.family, generation_temperature=config.temperature,
                consistency_temperature=config.consistency_temperature,
                teacher_temperature=config.teacher_temperature,
                consistency_weight=config.consistency_weight,
                consistency_start=config.consistency_start,
                consistency_ramp=config.consistency_ramp,
                distance=config.distance, scale=config.scale,
                consistency_scale=config.consistency_scale, normalize=config.normalize_consistency,
            )  # fmt: skip
            self.full_weight = self.criterion.consistency_weight
        else:
            self.criterion = seedkit.SeedGenerationLoss(temperature=None)
        generation = getattr(self.criterion, "generation", self.criterion)
        self.pooling = (generation.temperature, generation.scale)
        stateful = {"teacher": self.teacher} if self.teacher is not None else {}
        super().__init__(model, config, context, num_samples, stateful)
        self.student_view = self.teacher_view = None
        self.voc_root: Any = config.voc_root
        self._monitor: Any = None
        if self.teacher is not None:
            self.teacher.to(context.device)
            student_drop, teacher_drop = view_drops(config, self.full_weight)
            self.student_view = seedkit.SelfAdaptiveView(self.trainer.wrapped, student_drop)
            self.teacher_view = seedkit.SelfAdaptiveView(self.teacher.module, teacher_drop)

    def seed_views(self, info: StepInfo) -> None:
        """Seed both views' segments from ``(seed, step, micro-batch)``, not from the rank.

        Every process drops the same segments, as one process at the full batch would.
        """
        generator = torch.Generator().manual_seed(
            self.config.seed * 1_000_003 + info.step * 101 + info.micro_batch
        )
        self.teacher_view.generator = self.student_view.generator = generator

    def training_step(self, batch: dict[str, Any], info: StepInfo) -> StepOutput:
        """The default step hook: USAGE's (or the CAM baseline's) loss of one micro-batch.

        A model whose output has class-token scores (``head="mct"``) adds their
        classification loss (:func:`token_classification_loss`, logged as ``token``).
        """
        images, labels, valid = batch["image"], batch["labels"], batch["valid"]
        if self.config.method != "usage":
            output = self.trainer.wrapped(images)
            mask = cam_validity_mask(valid, output.cams.shape[-2:])
            loss = self.criterion(output.cams, labels, mask)
            logs = {"generation": loss, "consistency": 0 * loss, "consistency_weight": 0.0}
        else:
            weight = self.criterion.weight_at(info.progress)
            self.seed_views(info)
            teacher_cams = None  # at lambda = 0 the term adds nothing: skip the teacher
            if weight > 0:
                with torch.no_grad():
                    teacher_cams = self.teacher_view(images).cams
            output = self.student_view(images)
            mask = cam_validity_mask(valid, output.cams.shape[-2:])
            out = self.criterion(output.cams, teacher_cams, labels, mask, progress=info.progress)
            loss = out.loss
            logs = {"generation": out.generation, "consistency": out.consistency,
                    "consistency_weight": weight}  # fmt: skip
        logs["neff_fraction"] = self.neff_fraction(output.cams, labels, mask)
        token = token_classification_loss(output, labels)
        if token is not None:
            loss = loss + token
            logs["token"] = token
        return StepOutput(loss, logs)

    def neff_fraction(
        self, cams: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean ``N_eff / N`` of the generation pooling over the present classes (1 at GAP).

        How far from global average pooling the loss pools (see
        :func:`seedkit.losses.effective_fraction`); logged as ``neff_fraction``.
        """
        temperature, scale = self.pooling
        if temperature is None:
            return cams.new_ones((), dtype=torch.float32)
        cams = cams.detach().float()
        fraction = seedkit.losses.effective_fraction(cams, temperature, mask, scale)
        present = labels.detach().float()
        return (fraction * present).sum() / present.sum().clamp_min(1.0)

    def after_step(self, info: StepInfo) -> None:
        """Move the EMA teacher towards the student (USAGE)."""
        if self.teacher is not None:
            self.teacher.update(self.model, step=info.step)

    def evaluate(self, dataset: Any = None) -> dict[str, Any]:
        """Seed mIoU / FP / FN of the student (and the teacher, if any) now: a log record.

        ``dataset``: the evaluation list with masks (default: the config's, read once).
        """
        config, device = self.config, self.context.device
        if dataset is None:
            self._monitor = self._monitor or eval_dataset(config, self.voc_root, with_masks=True)
            dataset = self._monitor
        record: dict[str, Any] = {}
        models = {"": self.model, **({"teacher_": self.teacher.module} if self.teacher else {})}
        for prefix, model in models.items():
            result = evaluate_model_seeds(model, dataset, config.num_classes, config.max_threshold,
                                          device=device)  # fmt: skip
            for key, value, digits in (
                ("miou", result.best_miou, 4), ("threshold", result.best_threshold, 4),
                ("fp_rate", result.fp_rate, 5), ("fn_rate", result.fn_rate, 5),
            ):  # fmt: skip
                record[f"{prefix}{key}"] = round(value, digits)
        neff = pooling_fraction(self.model, dataset, *self.pooling, device)
        record["neff_fraction"] = round(neff, 5)
        return record


def _train_dataset(config: SeedStageConfig, voc_root: Any) -> Any:
    from seedkit.data import TrainTransform, VOCSegmentation

    resize = config.resize_long or (config.image_size, int(config.image_size * 1.7))
    jitter = config.color_jitter
    transform = TrainTransform(config.image_size, resize_long=resize, color_jitter=jitter)
    names = class_names_for(config.num_classes)[1:]
    return VOCSegmentation(
        voc_root, config.train_split, transform=transform, with_masks=False, seed=config.seed,
        class_names=names,
    )  # fmt: skip


def list_dataset(config: SeedStageConfig, voc_root: Any, split: Any) -> Any:
    """The images (and labels) of a list, unaugmented: what seeds are written for."""
    from seedkit.data import InferenceTransform, VOCSegmentation

    names = class_names_for(config.num_classes)[1:]
    return VOCSegmentation(voc_root, split, InferenceTransform(), None, False, class_names=names)


def eval_dataset(config: SeedStageConfig, voc_root: Any, with_masks: bool = False) -> Any:
    """The evaluation list of ``config`` (``eval_split``, first ``eval_limit`` ids), unaugmented."""
    if with_masks:
        return evaluation_list(config, voc_root)
    dataset = list_dataset(config, voc_root, config.eval_split)
    dataset.ids = dataset.ids[: config.eval_limit]
    return dataset


def trivial_seed_scores(config: SeedStageConfig, voc_root: Any, mean_over: str) -> dict:
    """Seed mIoU of all-background seeds and of a centred blob per labelled class.

    Scored on the same list, sweep and mean as the run's seeds
    (:func:`seedkit.metrics.trivial_baselines`): a model that does not beat them
    localises nothing.
    """
    from seedkit.metrics import trivial_baselines

    dataset = eval_dataset(config, voc_root, with_masks=True)
    samples = (dataset[index] for index in range(len(dataset)))
    scores = trivial_baselines(samples, config.num_classes + 1, config.max_threshold, mean_over)
    return {kind: result.best_miou for kind, result in scores.items()}


class SeedStage(Stage):
    """Stage 1: the seed model, its seeds on the evaluation list and their evaluation."""

    name = SEEDS
    model_file = "model.pt"
    owned = ("seeds", "overlays", "results.json", "seeds_eval.json", "seeds_table.txt")

    def check_settings(self, config: Any, context: DistributedContext, produced: bool) -> None:
        """The model: family, output stride, head, starting weights."""
        model = check_network(config, context, build_seed_model)
        if config.output_stride is not None and model.family == "vit":
            raise InvalidValueError(
                "output_stride", f"None for a ViT ({config.backbone}'s stride is its patch size)",
                config.output_stride,
            )  # fmt: skip

    def check_data(self, config: Any, voc_root: Any, produced: bool) -> None:
        """Every image and label of the training list, images and masks of the evaluation list."""
        _train_dataset(config, voc_root).check_files()
        evaluation_list(config, voc_root, check=True)

    def inputs(self, config: Any, voc_root: Any, digests: ContentDigests) -> dict[str, Any]:
        """The training data (images and labels), by content."""
        return {"train_data": dataset_digest(_train_dataset(config, voc_root), digests)}

    def build_model(self, config: Any, weights: bool = True) -> torch.nn.Module:
        """The seed model (:func:`seedkit.backbones.create_seed_model`)."""
        return build_seed_model(config, weights)

    def training(self, config: Any, context: DistributedContext, voc_root: Any) -> tuple[Any, Any]:
        """The augmented training list and a :class:`SeedTrainingState`."""
        dataset = _train_dataset(config, voc_root)
        state = SeedTrainingState(config, context, len(dataset))
        state.voc_root = voc_root
        return dataset, state

    def produce(
        self, config: Any, context: DistributedContext, voc_root: Any, state: Any, run: RunFolder
    ) -> dict[str, Any] | None:
        """Seeds of the evaluation list, the threshold sweep, overlays; the results (rank 0)."""
        from seedkit.data import read_image
        from seedkit.metrics import evaluate_seeds, load_psa_maps
        from seedkit.viz import save_overlay

        names = class_names_for(config.num_classes)
        dataset = eval_dataset(config, voc_root)
        seeds_dir = ensure_seeds(config, context, dataset, run=run, model=state.model)
        if not context.is_main:
            return None
        result = evaluate_seeds(
            seeds_dir, gt_dir(dataset.root), dataset.ids, num_labels=config.num_classes + 1,
            max_threshold=config.max_threshold, progress=config.progress, class_names=names,
        )  # fmt: skip
        report = json.dumps(result.to_json_dict(), indent=2)
        atomic_write(run.out / "seeds_eval.json", report.encode())
        atomic_write(run.out / "seeds_table.txt", (result.format_table() + "\n").encode())
        overlays = run.out / "overlays"
        if overlays.is_dir():  # drawn again at this run's threshold, for this run's list
            for old in overlays.glob("*.png"):
                old.unlink()
            remove_stale_temporaries(overlays)
        for image_id in dataset.ids[: config.num_overlays]:
            maps = load_psa_maps(seeds_dir / f"{image_id}.npy", config.num_classes)
            save_overlay(
                read_image(dataset.image_path(image_id)), maps, overlays / f"{image_id}.png",
                threshold=result.best_threshold, class_names=names,
            )  # fmt: skip
        seeds = {
            "miou": result.best_miou, "threshold": result.best_threshold,
            "fp_rate": result.fp_rate, "fn_rate": result.fn_rate,
            "activation_state": result.activation_state,
            "mean_over": result.mean_over,
            "iou": [None if math.isnan(v) else float(v) for v in result.iou],
            "num_images": result.num_images, "warnings": list(result.warnings),
            "neff_fraction": pooling_fraction(state.model, dataset, *state.pooling, context.device),
            "trivial": trivial_seed_scores(config, voc_root, result.mean_over),
        }  # fmt: skip
        return {"seeds": seeds, "method": config.method, "backbone": config.backbone,
                "config": config.to_dict()}  # fmt: skip

    def result_inputs(
        self, config: Any, voc_root: Any, run: RunFolder, digests: ContentDigests
    ) -> dict[str, Any]:
        """The model, training inputs, the evaluated seed files and the ground truth."""
        dataset = evaluation_list(config, voc_root)
        seeds = [run.out / "seeds" / f"{i}.npy" for i in dataset.ids]
        return {
            **super().result_inputs(config, voc_root, run, digests),
            "seed_files": files_digest(seeds, digests),
            "eval_data": evaluation_digest(dataset, digests),
        }


#: The seed stage (stage 1).
SEED_STAGE = SeedStage()


def train_seed_model(
    config: SeedStageConfig,
    context: DistributedContext,
    voc_root: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    **hooks: Any,
) -> SeedTrainingState:
    """Train the seed model of ``config`` (unless ``config.out`` has it); return its state.

    :func:`~seedkit.engine.train_stage` of :data:`SEED_STAGE` (its arguments and hooks:
    ``step(state, batch, info)``, ``evaluate(state) -> dict`` for the ``eval_every``
    records, ``stop_after_steps``; ``voc_root`` defaults to ``config.voc_root``). Every
    setting, the model, every id of the training and evaluation lists and
    ``config.out`` are checked first; ``resume`` continues exactly where the run
    stopped; a finished run of the same settings is not trained again.

    Returns:
        The :class:`SeedTrainingState` after the last step.
    """
    root = voc_root or config.voc_root
    return train_stage(SEED_STAGE, config, context, root, resume, overwrite, **hooks)[0]


def run_seed_stage(
    config: SeedStageConfig,
    context: DistributedContext,
    voc_root: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    **hooks: Any,
) -> dict[str, Any] | None:
    """Train (unless finished), write seeds, evaluate; write ``OUT/results.json`` on rank 0.

    Seed files are reused only if they come from this model with these settings and
    their content is the recorded one; the evaluation always runs. The arguments are
    :func:`train_seed_model`'s.

    Returns:
        ``results.json``'s content on rank 0 (``None`` on other ranks).
    """
    root = voc_root or config.voc_root
    return run_stage(SEED_STAGE, config, context, root, resume, overwrite, **hooks)


def load_seed_model(config: SeedStageConfig, device: torch.device | str) -> torch.nn.Module:
    """Rebuild the stage-1 model of ``config`` from ``config.out/model.pt``.

    Raises:
        DataFileError: stage 1 has not finished (no ``model.pt``).
        RunConflictError: ``model.pt`` was trained with other settings than ``config``.
    """
    return load_stage_model(SEED_STAGE, config, device)


def evaluate_model_seeds(
    model: torch.nn.Module,
    dataset: Any,
    num_classes: int,
    max_threshold: float = 0.59,
    scales: tuple[float, ...] = (1.0,),
    device: torch.device | str = "cpu",
) -> Any:
    """Score a model's seeds on a dataset with masks in memory (no files): a ``SweepResult``.

    The quick check of ``eval_every``: seeds from :func:`seedkit.cam.infer_cams` at
    ``scales`` with flips, swept against the masks as ``seedkit eval-seeds`` does.
    The model's train / eval mode is restored.
    """
    from seedkit.cam import as_seed_map_model, infer_cams
    from seedkit.metrics import ThresholdSweep

    sweep = ThresholdSweep(num_labels=num_classes + 1, max_threshold=max_threshold)
    with _evaluating(model):
        seed_maps = as_seed_map_model(model)
        for index in range(len(dataset)):
            item = dataset[index]
            images, labels = item["image"][None].to(device), item["labels"][None].to(device)
            seeds = infer_cams(seed_maps, images, labels, scales=scales)
            sweep.update(seeds[0].cpu().numpy(), item["mask"].numpy())
    return sweep.result()


def pooling_fraction(
    model: torch.nn.Module,
    dataset: Any,
    temperature: float | None,
    scale: str = "std",
    device: torch.device | str = "cpu",
) -> float:
    """Mean ``N_eff / N`` of a model's pooling weights on a dataset's present classes.

    Single-scale CAMs of each image; 1.0 for global average pooling
    (``temperature=None``). See :func:`seedkit.losses.effective_fraction`. The
    model's train / eval mode is restored.
    """
    if temperature is None:
        return 1.0
    total, count = 0.0, 0.0
    with _evaluating(model), torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            cams = model(item["image"][None].to(device)).cams.float()
            labels = item["labels"][None].to(cams.device).float()
            fraction = seedkit.losses.effective_fraction(cams, temperature, scale=scale)
            total, count = total + float((fraction * labels).sum()), count + float(labels.sum())
    return total / max(count, 1.0)


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def seeds_fingerprint(config: SeedStageConfig, model_digest: str | None) -> str:
    """What the seed files depend on: the model file and the ``seeds`` settings."""
    affects = config.settings()
    settings = {n: v for n, v in config.values().items() if "seeds" in affects[n].affects}
    return fingerprint({"model": model_digest, "num_classes": config.num_classes, **settings})


def seeds_current(config: SeedStageConfig, ids: list[str]) -> bool:
    """Whether ``config.out/seeds`` holds this model's seeds of every id, unchanged."""
    run = SEED_STAGE.run_folder(config, DistributedContext(), None, produced=True)
    model = (run.read() or {}).get("model", {}).get("sha256")
    names = [f"{i}.npy" for i in ids]
    return run.artefact_current("seeds", seeds_fingerprint(config, model), names)


def ensure_seeds(
    config: SeedStageConfig,
    context: DistributedContext,
    dataset: Any,
    run: RunFolder | None = None,
    model: torch.nn.Module | None = None,
) -> Path:
    """Write the seeds of ``dataset``'s ids that ``config.out/seeds`` lacks; return the folder.

    Seed files of another model or other inference settings are deleted first, and
    so is any file whose content is not the one recorded when it was written (an
    edited, truncated or NaN file): it is written again. Writing is sharded over
    processes. A multi-class-token model's seeds are its localisation maps
    (:func:`seedkit.cam.as_seed_map_model`).
    """
    from seedkit.cam import as_seed_map_model, write_cams

    if run is None:
        run = SEED_STAGE.run_folder(config, context, None, produced=True)
        run.record = run.read() or {}
        if run.record.get("status") != "trained":
            raise DataFileError(run.out / RUN_RECORD, "finished stage-1 run", "run stage 1 first")
    with locked(context, run.out):
        seeds_dir = run.out / "seeds"
        model = model if model is not None else load_seed_model(config, context.device)
        sources = {f"{i}.npy": run.digests.digest(dataset.image_path(i))[:16] for i in dataset.ids}
        run.open_artefact("seeds", seeds_fingerprint(config, run.model_digest()), sources)
        model.eval()
        write_cams(
            as_seed_map_model(model),  # MCT models: their localisation maps; others: CAMs
            dataset, seeds_dir, scales=config.cam_scales, device=context.device,
            temperature=config.seed_temperature, progress=context.is_main and config.progress,
            rank=context.rank, world_size=context.world_size, format=config.seed_format,
        )  # fmt: skip
        context.barrier()
        run.close_artefact("seeds")
    return seeds_dir
