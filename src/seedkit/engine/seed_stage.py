"""Stage 1 of the WSSS pipeline: train a seed model, write seeds, evaluate them.

:func:`train_seed_model` trains the CAM baseline or USAGE (student under a strong
network adjustment, EMA teacher under a weak one, generation + consistency
loss) on one process or under ``torchrun``. :func:`run_seed_stage` adds
multi-scale CAM inference on the evaluation list, the background-threshold
sweep, overlays and ``results.json``.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import seedkit
from seedkit.engine._loop import class_names_for, gt_dir, poly_or_cosine
from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.config import SeedStageConfig, save_config
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.logger import RunLogger
from seedkit.engine.sampler import EpochIndexedDataset, ResumableShardSampler
from seedkit.errors import DataFileError, InvalidValueError

__all__ = [
    "SeedTrainingState",
    "eval_dataset",
    "evaluate_model_seeds",
    "load_seed_model",
    "run_seed_stage",
    "token_classification_loss",
    "train_seed_model",
]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"


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


class SeedTrainingState:
    """The model, teacher, optimiser and schedule of a seed-stage run."""

    def __init__(
        self, config: SeedStageConfig, context: DistributedContext, steps_per_epoch: int
    ) -> None:
        from seedkit.backbones import create_seed_model

        self.config = config
        self.context = context
        self.model = create_seed_model(
            config.backbone,
            num_classes=config.num_classes,
            pretrained=config.pretrained,
            checkpoint_path=config.checkpoint_path,
            head=config.head,
            **backbone_kwargs(config),
        ).to(context.device)
        self.total_steps = config.max_steps or config.epochs * steps_per_epoch  # type: ignore[operator]
        self.steps_per_epoch = steps_per_epoch
        backbone_params, head_params = self.model.param_groups()
        groups = [
            {"params": backbone_params, "lr": config.lr},
            {"params": head_params, "lr": config.lr * config.head_lr_mult},
        ]
        if config.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
            )
        else:
            self.optimizer = torch.optim.AdamW(
                groups, lr=config.lr, weight_decay=config.weight_decay
            )
        warmup = config.warmup_steps or int(config.extra.get("warmup_epochs", 0) * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, poly_or_cosine(config.schedule, warmup, self.total_steps)
        )
        self.teacher = None
        self.criterion: torch.nn.Module
        if config.method == "usage":
            self.teacher = seedkit.EMATeacher(
                self.model,
                momentum=config.ema_momentum,
                schedule=config.ema_schedule,
                total_steps=self.total_steps,
            )
            self.criterion = seedkit.USAGELoss.for_backbone(
                self.model.family,
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
        use_amp = context.device.type == "cuda" and config.amp != "off"
        self.amp_dtype = (
            torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        )
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=use_amp and self.amp_dtype == torch.float16
        )
        self.ddp: torch.nn.Module = self.model
        if context.distributed:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
        self.student_view = self.teacher_view = None
        if self.teacher is not None:
            student_drop, teacher_drop = view_drops(config, self.full_weight)
            self.student_view = seedkit.SelfAdaptiveView(self.ddp, student_drop)
            self.teacher_view = seedkit.SelfAdaptiveView(self.teacher.module, teacher_drop)
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "config": self.config.to_dict(),
            "rng": {"torch": torch.get_rng_state()},
        }
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.teacher is not None and "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step = int(state["step"])


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


def _cam_mask(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A CAM cell is valid if any pixel under it is (so no image is ever fully masked)."""
    return F.adaptive_max_pool2d(valid[:, None].float(), size) > 0


def _view_generator(config: SeedStageConfig, step: int, micro: int) -> torch.Generator:
    # Seeded by (seed, step, micro-batch), not by rank: every process drops the same
    # segments, as one process at the full batch would.
    return torch.Generator().manual_seed(config.seed * 1_000_003 + step * 101 + micro)


def train_seed_model(
    config: SeedStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool = False,
) -> SeedTrainingState:
    """Train the seed model of ``config`` and return the final training state.

    Writes ``config.json``, ``log.jsonl`` (one record per logged step), periodic
    atomic checkpoints ``checkpoint.pt`` and the final ``model.pt`` into
    ``config.out`` (rank 0 only). With ``resume=True`` and a checkpoint present,
    training continues exactly where it stopped: the data order, augmentations
    and network-adjustment segments are functions of ``(seed, epoch, step)``.

    Args:
        config: the run's configuration (validated here).
        context: the process's distributed context.
        voc_root: the VOC2012 folder.
        resume: continue from ``config.out/checkpoint.pt`` if it exists.

    Returns:
        The :class:`SeedTrainingState` after the last step.
    """
    from seedkit.data import collate

    config.validate()
    out = Path(config.out)
    torch.manual_seed(config.seed)
    dataset = _train_dataset(config, voc_root)
    per_rank, remainder = divmod(config.batch_size, context.world_size * config.grad_accum)
    if remainder or per_rank < 1:
        raise InvalidValueError(
            "batch_size",
            f"a multiple of processes x grad_accum ({context.world_size} x {config.grad_accum})",
            config.batch_size,
        )
    sampler = ResumableShardSampler(
        len(dataset), config.batch_size, context.rank, context.world_size, seed=config.seed
    )
    state = SeedTrainingState(config, context, sampler.steps_per_epoch)
    checkpoint = out / CHECKPOINT_NAME
    if resume and checkpoint.is_file():
        state.load_state_dict(load_checkpoint(checkpoint, map_location=context.device))
    logger = None
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.json")
        logger = RunLogger(out, tensorboard=config.tensorboard, append=resume and state.step > 0)
        logger.log(
            "start",
            state.step,
            world_size=context.world_size,
            total_steps=state.total_steps,
            family=state.model.family,
            seedkit_version=seedkit.__version__,
        )
    bar = tqdm(
        total=state.total_steps,
        initial=state.step,
        desc=f"train {config.method}",
        disable=not (context.is_main and config.progress),
        dynamic_ncols=True,
    )
    # The masks of the evaluation list, read once, for eval_every (rank 0 only).
    monitor = eval_dataset(config, voc_root, with_masks=True) if config.eval_every else None
    started = time.time()
    # Testing aid: leave the run as a kill at this step would (checkpoint written, no model.pt).
    stop_after = config.extra.get("stop_after_steps")
    loader = DataLoader(
        EpochIndexedDataset(dataset),
        batch_size=per_rank * config.grad_accum,
        sampler=EpochIndexedDataset.sampler(sampler),
        num_workers=config.num_workers,
        collate_fn=collate,
        drop_last=True,
        persistent_workers=config.num_workers > 0,
    )
    while state.step < state.total_steps:
        epoch, step_in_epoch = divmod(state.step, sampler.steps_per_epoch)
        sampler.set_epoch(epoch)
        sampler.set_start_step(step_in_epoch)
        for batch in loader:
            record = _train_step(state, batch, per_rank)
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if logger is not None and (
                state.step % config.log_every == 0 or state.step == state.total_steps
            ):
                logger.log(
                    "train",
                    state.step,
                    epoch=epoch,
                    **record,
                    elapsed=round(time.time() - started, 2),
                )
            if config.eval_every and (
                state.step % config.eval_every == 0 or state.step == state.total_steps
            ):
                if logger is not None:
                    logger.log("eval", state.step, **_quick_eval(state, monitor))
                context.barrier()
            if state.step % config.checkpoint_every == 0 or state.step == state.total_steps:
                if context.is_main:
                    save_checkpoint(checkpoint, state.state_dict())
                context.barrier()
            if state.step >= state.total_steps or state.step == stop_after:
                break
        if state.step == stop_after:
            break
    bar.close()
    if state.step == stop_after and state.step < state.total_steps:
        if context.is_main:
            save_checkpoint(checkpoint, state.state_dict())
            if logger is not None:
                logger.close()
        context.barrier()
        raise SystemExit(
            f"stopped after {stop_after} steps (--stop-after-steps); continue with --resume"
        )
    if context.is_main:
        save_checkpoint(
            out / MODEL_NAME,
            {
                "model": state.model.state_dict(),
                "config": config.to_dict(),
                "family": state.model.family,
            },
        )
        if logger is not None:
            logger.log("end", state.step, elapsed=round(time.time() - started, 2))
            logger.close()
    context.barrier()
    return state


def _quick_eval(state: SeedTrainingState, dataset: Any) -> dict[str, Any]:
    """Seed mIoU / FP / FN of the student (and the teacher, if any) at the current step."""
    config = state.config
    record: dict[str, Any] = {}
    models = {"": state.model}
    if state.teacher is not None:
        models["teacher_"] = state.teacher.module
    for prefix, model in models.items():
        result = evaluate_model_seeds(
            model, dataset, config.num_classes, config.max_threshold, device=state.context.device
        )
        record.update(
            {
                f"{prefix}miou": round(result.best_miou, 4),
                f"{prefix}threshold": round(result.best_threshold, 4),
                f"{prefix}fp_rate": round(result.fp_rate, 5),
                f"{prefix}fn_rate": round(result.fn_rate, 5),
            }
        )
    return record


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


def _train_step(
    state: SeedTrainingState, batch: dict[str, Any], micro_size: int
) -> dict[str, float]:
    config, context = state.config, state.context
    model = state.ddp
    model.train()
    weight = 0.0
    if config.method == "usage":
        weight = state.criterion.weight_at(state.step / state.total_steps)
    totals = {"loss": 0.0, "generation": 0.0, "consistency": 0.0}
    state.optimizer.zero_grad(set_to_none=True)
    images_all = batch["image"].to(context.device, non_blocking=True)
    labels_all = batch["labels"].to(context.device, non_blocking=True)
    valid_all = batch["valid"].to(context.device, non_blocking=True)
    for micro in range(config.grad_accum):
        part = slice(micro * micro_size, (micro + 1) * micro_size)
        images, labels, valid = images_all[part], labels_all[part], valid_all[part]
        last = micro == config.grad_accum - 1
        sync = contextlib.nullcontext() if last or not context.distributed else model.no_sync()
        autocast = torch.autocast(context.device.type, dtype=state.amp_dtype, enabled=state.use_amp)
        with sync, autocast:
            if config.method == "usage":
                generator = _view_generator(config, state.step, micro)
                state.teacher_view.generator = state.student_view.generator = generator
                teacher_cams = None  # at lambda = 0 the term adds nothing: skip the teacher
                if weight > 0:
                    with torch.no_grad():
                        teacher_cams = state.teacher_view(images).cams
                output = state.student_view(images)
                cams = output.cams
                mask = _cam_mask(valid, cams.shape[-2:])
                out = state.criterion(
                    cams, labels, teacher_cams, mask, progress=state.step / state.total_steps
                )
                loss, generation, consistency = out.loss, out.generation, out.consistency
            else:
                output = model(images)
                cams = output.cams
                mask = _cam_mask(valid, cams.shape[-2:])
                loss = generation = state.criterion(cams, labels, mask)
                consistency = loss.new_zeros(())
            token = token_classification_loss(output, labels)
            if token is not None:
                loss = loss + token
            state.scaler.scale(loss / config.grad_accum).backward()
        totals["loss"] += float(context.mean(loss)) / config.grad_accum
        totals["generation"] += float(context.mean(generation)) / config.grad_accum
        totals["consistency"] += float(context.mean(consistency)) / config.grad_accum
        if token is not None:
            totals["token"] = (
                totals.get("token", 0.0) + float(context.mean(token)) / config.grad_accum
            )
    if config.grad_clip:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    if state.teacher is not None:
        state.teacher.update(state.model, step=state.step)
    totals["lr"] = state.optimizer.param_groups[0]["lr"]
    totals["consistency_weight"] = weight
    return totals


def load_seed_model(config: SeedStageConfig, device: torch.device) -> torch.nn.Module:
    """Rebuild the stage-1 model of ``config`` from ``config.out/model.pt``.

    Raises:
        DataFileError: stage 1 has not finished (no ``model.pt``).
    """
    from seedkit.backbones import create_seed_model

    path = Path(config.out) / MODEL_NAME
    if not path.is_file():
        raise DataFileError(path, "stage-1 model", "run stage 1 first (--stages 1)")
    model = create_seed_model(
        config.backbone, num_classes=config.num_classes, head=config.head, **backbone_kwargs(config)
    )
    model.load_state_dict(load_checkpoint(path)["model"])
    return model.to(device)


def write_seeds(
    model: torch.nn.Module,
    dataset: Any,
    seeds_dir: Path,
    config: SeedStageConfig,
    context: DistributedContext,
) -> None:
    """Write psa-format seeds of ``dataset`` with the config's scales, sharded by rank."""
    from seedkit.cam import as_seed_map_model, write_cams

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
    )
    context.barrier()


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

    sweep = ThresholdSweep(num_classes=num_classes + 1, max_threshold=max_threshold)
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


def write_and_evaluate_seeds(
    model: torch.nn.Module,
    config: SeedStageConfig,
    context: DistributedContext,
    voc_root: str,
) -> dict[str, Any] | None:
    """Write multi-scale seeds for the evaluation list, sweep the threshold, draw overlays.

    Seed writing is sharded across processes; rank 0 evaluates and returns the
    ``"seeds"`` entry of ``results.json`` (other ranks return ``None``).
    """
    from seedkit.data import read_image
    from seedkit.metrics import evaluate_seeds, load_psa_maps
    from seedkit.viz import save_overlay

    out = Path(config.out)
    names = class_names_for(config.num_classes)
    dataset = eval_dataset(config, voc_root)
    seeds_dir = out / "seeds"
    write_seeds(model, dataset, seeds_dir, config, context)
    if not context.is_main:
        return None
    result = evaluate_seeds(
        seeds_dir,
        gt_dir(dataset.root),
        dataset.ids,
        num_classes=config.num_classes + 1,
        max_threshold=config.max_threshold,
        progress=config.progress,
        class_names=names,
    )
    (out / "seeds_eval.json").write_text(_json(result.to_json_dict()))
    for image_id in dataset.ids[: config.num_overlays]:
        maps = load_psa_maps(seeds_dir / f"{image_id}.npy", config.num_classes)
        save_overlay(
            read_image(dataset.image_path(image_id)),
            maps,
            out / "overlays" / f"{image_id}.png",
            threshold=result.best_threshold,
            class_names=names,
        )
    return {
        "miou": result.best_miou,
        "threshold": result.best_threshold,
        "fp_rate": result.fp_rate,
        "fn_rate": result.fn_rate,
        "activation_state": result.activation_state,
        "recommended_temperature": result.recommended_temperature,
        "iou": [None if math.isnan(v) else float(v) for v in result.iou],
        "num_images": result.num_images,
        "warnings": list(result.warnings),
        "table": result.format_table(),
    }


def _json(document: Any) -> str:
    import json

    return json.dumps(document, indent=2) + "\n"


def run_seed_stage(
    config: SeedStageConfig,
    context: DistributedContext,
    voc_root: str,
    resume: bool = False,
) -> dict[str, Any] | None:
    """Train, write seeds, evaluate; write ``OUT/results.json`` on rank 0 and return it.

    A resumed run whose training had already finished goes straight to the seeds,
    and seed files already written are skipped.
    """
    out = Path(config.out)
    finished = resume and (out / MODEL_NAME).is_file()
    if finished:
        model = load_seed_model(config, context.device)
    else:
        model = train_seed_model(config, context, voc_root, resume=resume).model
    seeds = write_and_evaluate_seeds(model, config, context, voc_root)
    if seeds is None:
        return None
    table = seeds.pop("table")
    results = {
        "seeds": seeds,
        "method": config.method,
        "backbone": config.backbone,
        "config": config.to_dict(),
    }
    from seedkit.data import atomic_write_bytes

    atomic_write_bytes(out / "results.json", _json(results).encode())
    (out / "seeds_table.txt").write_text(table + "\n")
    return results
