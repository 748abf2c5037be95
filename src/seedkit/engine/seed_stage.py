"""Stage 1 of the WSSS pipeline: train a seed model, write seeds, evaluate them.

:func:`train_seed_model` trains the CAM baseline or USAGE (student under a strong
network adjustment, EMA teacher under a weak one, generation + consistency
loss) with the engine's one training loop (:class:`~seedkit.engine.Trainer`), on
one process or under ``torchrun``. :func:`run_seed_stage` adds multi-scale CAM
inference on the evaluation list, the background-threshold sweep, overlays and
``results.json``. Every file records what produced it (``run.json``, see
docs/reproducing.rst); a stale one is recomputed, never reused.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import seedkit
from seedkit.engine.checkpoint import load_checkpoint
from seedkit.engine.config import SeedStageConfig
from seedkit.engine.datasets import check_evaluation_list, class_names_for, gt_dir
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.loop import StepInfo, StepOutput, Trainer, total_steps
from seedkit.engine.run import (
    RUN_RECORD,
    RunFolder,
    dataset_digest,
    fingerprint,
    setting_differences,
)
from seedkit.errors import DataFileError, RunConflictError
from seedkit.files import atomic_write

__all__ = [
    "MODEL_NAME",
    "STRONG_DROP",
    "WEAK_DROP",
    "SeedTrainingState",
    "backbone_kwargs",
    "cam_validity_mask",
    "ensure_seeds",
    "eval_dataset",
    "evaluate_model_seeds",
    "load_seed_model",
    "pooling_fraction",
    "run_seed_stage",
    "seed_run_folder",
    "token_classification_loss",
    "train_seed_model",
    "view_drops",
    "write_and_evaluate_seeds",
]

MODEL_NAME = "model.pt"
#: Files and folders of a seed-stage run besides the checkpoint, model, config and logs.
SEED_STAGE_FILES = (
    "seeds",
    "overlays",
    "results.json",
    "seeds_eval.json",
    "seeds_table.txt",
)

SeedStep = Callable[["SeedTrainingState", dict[str, Any], StepInfo], "torch.Tensor | StepOutput"]


def backbone_kwargs(config: SeedStageConfig) -> dict[str, Any]:
    """Timm keyword arguments of the config: ``timm_kwargs``, plus ``output_stride`` for CNNs."""
    from seedkit.backbones import with_output_stride

    return with_output_stride(config.backbone, config.output_stride, **config.timm_kwargs)


STRONG_DROP = 0.3
WEAK_DROP = 0.1


def view_drops(config: SeedStageConfig, consistency_weight: float) -> tuple[float, float]:
    """Student and teacher drop ratios: the config's, else the defaults of the term's state.

    The network-adjusted views serve the consistency term. With the term on, the
    student gets ``STRONG_DROP`` and the teacher ``WEAK_DROP``; with its weight at 0
    there is no adjustment (on the seed-quality benchmark a strong view without the
    term was neutral for the CNN and cost the ViT 6.5 seed mIoU).
    """
    on = consistency_weight > 0
    student = (
        config.student_drop if config.student_drop is not None else (STRONG_DROP if on else 0.0)
    )
    teacher = config.teacher_drop if config.teacher_drop is not None else (WEAK_DROP if on else 0.0)
    return student, teacher


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


class SeedTrainingState:
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
        run: the run folder (set by :func:`train_seed_model`).
    """

    def __init__(
        self, config: SeedStageConfig, context: DistributedContext, num_samples: int
    ) -> None:
        from seedkit.backbones import create_seed_model

        self.config = config
        self.context = context
        model = create_seed_model(
            config.backbone,
            num_classes=config.num_classes,
            pretrained=config.pretrained,
            checkpoint_path=config.checkpoint_path,
            head=config.head,
            **backbone_kwargs(config),
        )
        steps = total_steps(config, num_samples)
        self.teacher = None
        self.criterion: torch.nn.Module
        if config.method == "usage":
            self.teacher = seedkit.EMATeacher(
                model,
                momentum=config.ema_momentum,
                schedule=config.ema_schedule,
                total_steps=steps,
            )
            self.criterion = seedkit.USAGELoss.for_backbone(
                model.family,
                generation_temperature=config.temperature,
                consistency_temperature=config.consistency_temperature,
                teacher_temperature=config.teacher_temperature,
                consistency_weight=config.consistency_weight,
                consistency_start=config.consistency_start,
                consistency_ramp=config.consistency_ramp,
                distance=config.distance,
                scale=config.scale,
                consistency_scale=config.consistency_scale,
                normalize=config.normalize_consistency,
            )
            self.full_weight = self.criterion.consistency_weight
        else:
            self.criterion = seedkit.SeedGenerationLoss(temperature=None)
            self.full_weight = 0.0
        generation = getattr(self.criterion, "generation", self.criterion)
        #: ``(temperature, scale)`` of the generation term's pooling; temperature None: GAP.
        self.pooling = (generation.temperature, generation.scale)
        stateful = {"teacher": self.teacher} if self.teacher is not None else {}
        self.trainer = Trainer(model, config, context, num_samples, stateful=stateful)
        self.model = self.trainer.model
        if self.teacher is not None:
            self.teacher.to(context.device)
        self.run: RunFolder | None = None
        self.student_view = self.teacher_view = None
        if self.teacher is not None:
            student_drop, teacher_drop = view_drops(config, self.full_weight)
            self.student_view = seedkit.SelfAdaptiveView(self.trainer.wrapped, student_drop)
            self.teacher_view = seedkit.SelfAdaptiveView(self.teacher.module, teacher_drop)

    @property
    def step(self) -> int:
        """Optimiser steps done."""
        return self.trainer.step

    @property
    def total_steps(self) -> int:
        """The schedule's length."""
        return self.trainer.total_steps

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
            cams = output.cams
            loss = generation = self.criterion(
                cams, labels, cam_validity_mask(valid, cams.shape[-2:])
            )
            logs = {
                "generation": generation,
                "consistency": loss.new_zeros(()),
                "consistency_weight": 0.0,
            }
        else:
            weight = self.criterion.weight_at(info.progress)
            self.seed_views(info)
            teacher_cams = None  # at lambda = 0 the term adds nothing: skip the teacher
            if weight > 0:
                with torch.no_grad():
                    teacher_cams = self.teacher_view(images).cams
            output = self.student_view(images)
            cams = output.cams
            mask = cam_validity_mask(valid, cams.shape[-2:])
            out = self.criterion(cams, teacher_cams, labels, mask, progress=info.progress)
            loss = out.loss
            logs = {
                "generation": out.generation,
                "consistency": out.consistency,
                "consistency_weight": weight,
            }
        mask = cam_validity_mask(valid, cams.shape[-2:])
        logs["neff_fraction"] = self.neff_fraction(cams, labels, mask)
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

    def evaluate(self, dataset: Any) -> dict[str, Any]:
        """Seed mIoU / FP / FN of the student (and the teacher, if any) now: a log record."""
        config = self.config
        record: dict[str, Any] = {}
        models = {"": self.model}
        if self.teacher is not None:
            models["teacher_"] = self.teacher.module
        for prefix, model in models.items():
            result = evaluate_model_seeds(
                model, dataset, config.num_classes, config.max_threshold, device=self.context.device
            )
            record.update(
                {
                    f"{prefix}miou": round(result.best_miou, 4),
                    f"{prefix}threshold": round(result.best_threshold, 4),
                    f"{prefix}fp_rate": round(result.fp_rate, 5),
                    f"{prefix}fn_rate": round(result.fn_rate, 5),
                }
            )
        temperature, scale = self.pooling
        record["neff_fraction"] = round(
            pooling_fraction(self.model, dataset, temperature, scale, self.context.device), 5
        )
        return record


def _train_dataset(config: SeedStageConfig, voc_root: str):
    from seedkit.data import TrainTransform, VOCSegmentation

    resize = config.resize_long or (config.image_size, int(config.image_size * 1.7))
    transform = TrainTransform(
        config.image_size, resize_long=resize, color_jitter=config.color_jitter
    )
    return VOCSegmentation(
        voc_root,
        config.train_split,
        transform=transform,
        with_masks=False,
        seed=config.seed,
        class_names=class_names_for(config.num_classes)[1:],
    )


def seed_run_folder(
    config: SeedStageConfig, context: DistributedContext, train_dataset: Any
) -> RunFolder:
    """The :class:`~seedkit.engine.RunFolder` of a seed-stage run on ``train_dataset``."""
    return RunFolder(
        config,
        context,
        MODEL_NAME,
        SEED_STAGE_FILES,
        inputs={"train_data": dataset_digest(train_dataset)},
        total_steps=total_steps(config, len(train_dataset)),
    )


def train_seed_model(
    config: SeedStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool = False,
    overwrite: bool = False,
    *,
    step: SeedStep | None = None,
    stop_after_steps: int | None = None,
    evaluate: Callable[[SeedTrainingState], dict[str, Any]] | None = None,
) -> SeedTrainingState:
    """Train the seed model of ``config`` (if ``config.out`` has no finished one); return its state.

    Checks every id of the training and evaluation lists, then ``config.out``
    (see :class:`~seedkit.engine.RunFolder`), then trains: ``config.json``,
    ``run.json``, ``log.jsonl``, atomic checkpoints ``checkpoint.pt`` and the final
    ``model.pt`` (rank 0 writes). With ``resume=True`` training continues exactly
    where it stopped: the data order, augmentations and network-adjustment
    segments are functions of ``(seed, epoch, step)``, and the RNG state is in the
    checkpoint. A finished run of the same settings is not trained again.

    Args:
        config: the run's configuration (validated here).
        context: the process's distributed context.
        voc_root: the VOC2012 folder.
        resume: continue the run in ``config.out`` (it must exist).
        overwrite: delete the run in ``config.out`` first.
        step: the step hook ``step(state, batch, info) -> loss | StepOutput``;
            default :meth:`SeedTrainingState.training_step`.
        stop_after_steps: testing aid; see :meth:`~seedkit.engine.Trainer.fit`.
        evaluate: the ``eval_every`` hook ``evaluate(state) -> values`` of the
            ``eval`` log records (rank 0 only; it must not change the training);
            default :meth:`SeedTrainingState.evaluate` on the evaluation list.

    Returns:
        The :class:`SeedTrainingState` after the last step.
    """
    config.validate()
    torch.manual_seed(config.seed)
    dataset = _train_dataset(config, voc_root)
    dataset.check_files()
    check_evaluation_list(voc_root, config.eval_split, config.num_classes, config.eval_limit)
    run = seed_run_folder(config, context, dataset)
    plan = run.prepare(resume=resume, overwrite=overwrite)
    state = SeedTrainingState(config, context, len(dataset))
    state.run = run
    if not plan.train:
        state.model.load_state_dict(load_seed_model(config, context.device).state_dict())
        state.trainer.step = int(run.record["step"])
        return state
    if config.eval_every and evaluate is None:
        # The masks of the evaluation list, read once, for eval_every (rank 0 only).
        monitor = eval_dataset(config, voc_root, with_masks=True)
        evaluate = functools.partial(SeedTrainingState.evaluate, dataset=monitor)
    hook = step or SeedTrainingState.training_step
    from seedkit.data import collate

    state.trainer.fit(
        dataset,
        lambda batch, info: hook(state, batch, info),
        run,
        collate=collate,
        resume=plan.resume,
        after_step=state.after_step,
        evaluate=(lambda: evaluate(state)) if config.eval_every and evaluate else None,
        eval_every=config.eval_every,
        stop_after_steps=stop_after_steps,
        desc=f"train {config.method}",
        log_start={"family": state.model.family, "seedkit_version": seedkit.__version__},
    )
    state.trainer.save_model(run, family=state.model.family)
    return state


def load_seed_model(config: SeedStageConfig, device: torch.device) -> torch.nn.Module:
    """Rebuild the stage-1 model of ``config`` from ``config.out/model.pt``.

    Raises:
        DataFileError: stage 1 has not finished (no ``model.pt``).
        RunConflictError: ``model.pt`` was trained with other settings than ``config``.
    """
    from seedkit.backbones import create_seed_model

    path = Path(config.out) / MODEL_NAME
    if not path.is_file():
        raise DataFileError(path, "stage-1 model", "run stage 1 first (--stages 1)")
    state = load_checkpoint(path, required=("model",))
    recorded = state.get("run", {}).get("fields") if isinstance(state.get("run"), dict) else None
    if recorded is None:
        raise RunConflictError(path, "has no record of the settings that trained it")
    differences = setting_differences(recorded, config.training_fields())
    if differences:
        raise RunConflictError(
            path,
            "was trained with other settings",
            differences,
            "pass the settings it was trained with, or retrain it (`overwrite`)",
        )
    model = create_seed_model(
        config.backbone, num_classes=config.num_classes, head=config.head, **backbone_kwargs(config)
    )
    model.load_state_dict(state["model"])
    return model.to(device)


def eval_dataset(config: SeedStageConfig, voc_root: str, with_masks: bool = False) -> Any:
    """The evaluation list of ``config`` (``eval_split``, first ``eval_limit`` ids), unaugmented."""
    from seedkit.data import InferenceTransform, VOCSegmentation

    dataset = VOCSegmentation(
        voc_root,
        config.eval_split,
        transform=InferenceTransform(),
        with_masks=with_masks,
        class_names=class_names_for(config.num_classes)[1:],
    )
    if config.eval_limit is not None:
        dataset.ids = dataset.ids[: config.eval_limit]
    return dataset


def evaluate_model_seeds(
    model: torch.nn.Module,
    dataset: Any,
    num_classes: int,
    max_threshold: float = 0.59,
    scales: tuple[float, ...] = (1.0,),
    device: torch.device | str = "cpu",
) -> Any:
    """Score a model's seeds on a dataset with masks in memory (no files): a ``SweepResult``.

    The quick check of :attr:`SeedStageConfig.eval_every`: seeds from
    :func:`seedkit.cam.infer_cams` at ``scales`` with flips, swept against the
    masks as ``seedkit eval-seeds`` does. The model's train / eval mode is restored.
    """
    from seedkit.cam import as_seed_map_model, infer_cams
    from seedkit.metrics import ThresholdSweep

    sweep = ThresholdSweep(num_labels=num_classes + 1, max_threshold=max_threshold)
    was_training = model.training
    model.eval()
    seed_maps = as_seed_map_model(model)
    try:
        for index in range(len(dataset)):
            item = dataset[index]
            seeds = infer_cams(
                seed_maps,
                item["image"][None].to(device),
                item["labels"][None].to(device),
                scales=scales,
            )
            sweep.update(seeds[0].cpu().numpy(), item["mask"].numpy())
    finally:
        model.train(was_training)
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
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    try:
        with torch.no_grad():
            for index in range(len(dataset)):
                item = dataset[index]
                cams = model(item["image"][None].to(device)).cams.float()
                labels = item["labels"][None].to(cams.device).float()
                fraction = seedkit.losses.effective_fraction(cams, temperature, scale=scale)
                total += float((fraction * labels).sum())
                count += float(labels.sum())
    finally:
        model.train(was_training)
    return total / max(count, 1.0)


def seeds_fingerprint(config: SeedStageConfig, model_digest: str) -> str:
    """What the seed files depend on: the model file and the inference settings."""
    return fingerprint(
        {
            "model": model_digest,
            "cam_scales": list(config.cam_scales),
            "seed_temperature": config.seed_temperature,
            "num_classes": config.num_classes,
            "seed_format": config.seed_format,
        }
    )


def _open_run(config: SeedStageConfig, context: DistributedContext) -> RunFolder:
    """The finished stage-1 run folder of ``config``, without changing it."""
    run = RunFolder(config, context, MODEL_NAME, SEED_STAGE_FILES, inputs={}, total_steps=0)
    path = run.out / RUN_RECORD
    if not path.is_file():
        raise DataFileError(path, "stage-1 run record", "run stage 1 first (--stages 1)")
    run.record = json.loads(path.read_text())
    return run


def ensure_seeds(
    config: SeedStageConfig,
    context: DistributedContext,
    dataset: Any,
    run: RunFolder | None = None,
    model: torch.nn.Module | None = None,
) -> Path:
    """Write the seeds of ``dataset``'s ids that ``config.out/seeds`` lacks; return the folder.

    Seed files of another model or other inference settings (their fingerprint
    is in ``run.json``) are deleted first, never reused. Writing is sharded over
    processes. A multi-class-token model's seeds are its localisation maps
    (:func:`seedkit.cam.as_seed_map_model`).
    """
    from seedkit.cam import as_seed_map_model, write_cams

    run = run or _open_run(config, context)
    seeds_dir = run.out / "seeds"
    model = model if model is not None else load_seed_model(config, context.device)
    run.begin_artefact("seeds", seeds_fingerprint(config, run.model_digest()))
    model.eval()
    write_cams(
        as_seed_map_model(model),  # MCT models: their localisation maps; others: CAMs
        dataset,
        seeds_dir,
        scales=config.cam_scales,
        device=context.device,
        temperature=config.seed_temperature,
        progress=context.is_main and config.progress,
        rank=context.rank,
        world_size=context.world_size,
        format=config.seed_format,
    )
    context.barrier()
    run.finish_artefact("seeds")
    return seeds_dir


def write_and_evaluate_seeds(
    model: torch.nn.Module,
    config: SeedStageConfig,
    context: DistributedContext,
    voc_root: str,
    run: RunFolder | None = None,
) -> dict[str, Any] | None:
    """Write multi-scale seeds for the evaluation list, sweep the threshold, draw overlays.

    Seed writing is sharded across processes; rank 0 evaluates and returns the
    ``"seeds"`` entry of ``results.json`` (other ranks return ``None``).
    """
    from seedkit.data import read_image
    from seedkit.files import remove_stale_temporaries
    from seedkit.metrics import evaluate_seeds, load_psa_maps
    from seedkit.viz import save_overlay

    run = run or _open_run(config, context)
    out = run.out
    names = class_names_for(config.num_classes)
    dataset = eval_dataset(config, voc_root)
    seeds_dir = ensure_seeds(config, context, dataset, run=run, model=model)
    if not context.is_main:
        return None
    result = evaluate_seeds(
        seeds_dir,
        gt_dir(dataset.root),
        dataset.ids,
        num_labels=config.num_classes + 1,
        max_threshold=config.max_threshold,
        progress=config.progress,
        class_names=names,
    )
    atomic_write(out / "seeds_eval.json", _json(result.to_json_dict()).encode())
    overlays = out / "overlays"
    if overlays.is_dir():  # drawn again at this run's threshold, for this run's list
        for old in overlays.glob("*.png"):
            old.unlink()
        remove_stale_temporaries(overlays)
    for image_id in dataset.ids[: config.num_overlays]:
        maps = load_psa_maps(seeds_dir / f"{image_id}.npy", config.num_classes)
        save_overlay(
            read_image(dataset.image_path(image_id)),
            maps,
            overlays / f"{image_id}.png",
            threshold=result.best_threshold,
            class_names=names,
        )
    return {
        "miou": result.best_miou,
        "threshold": result.best_threshold,
        "fp_rate": result.fp_rate,
        "fn_rate": result.fn_rate,
        "activation_state": result.activation_state,
        "mean_over": result.mean_over,
        "iou": [None if math.isnan(v) else float(v) for v in result.iou],
        "num_images": result.num_images,
        "warnings": list(result.warnings),
        "table": result.format_table(),
    }


def _json(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def provenance(run: RunFolder) -> dict[str, Any]:
    """The ``"provenance"`` entry of a stage's ``results.json``: what produced the numbers."""
    record = run.record
    return {
        "run": record.get("fingerprint"),
        "model": record.get("model"),
        "steps": record.get("step"),
        "segments": record.get("segments"),
        "artefacts": {k: v.get("fingerprint") for k, v in record.get("artefacts", {}).items()},
        "seedkit_version": seedkit.__version__,
    }


def run_seed_stage(
    config: SeedStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool = False,
    overwrite: bool = False,
    *,
    step: SeedStep | None = None,
    stop_after_steps: int | None = None,
    evaluate: Callable[[SeedTrainingState], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Train (unless finished), write seeds, evaluate; write ``OUT/results.json`` on rank 0.

    A finished run of the same settings in ``config.out`` is reused; seed files are
    reused only if they come from this model with these inference settings; the
    evaluation always runs. See :func:`train_seed_model` for the arguments.

    Returns:
        ``results.json``'s content on rank 0 (``None`` on other ranks).
    """
    state = train_seed_model(
        config,
        context,
        voc_root,
        resume=resume,
        overwrite=overwrite,
        step=step,
        stop_after_steps=stop_after_steps,
        evaluate=evaluate,
    )
    run = state.run
    seeds = write_and_evaluate_seeds(state.model, config, context, voc_root, run=run)
    if seeds is None:
        return None
    temperature, scale = state.pooling
    seeds["neff_fraction"] = pooling_fraction(
        state.model, eval_dataset(config, voc_root), temperature, scale, context.device
    )
    table = seeds.pop("table")
    results = {
        "seeds": seeds,
        "method": config.method,
        "backbone": config.backbone,
        "config": config.to_dict(),
        "provenance": provenance(run),
    }
    out = Path(config.out)
    atomic_write(out / "results.json", _json(results).encode())
    atomic_write(out / "seeds_table.txt", (table + "\n").encode())
    return results
