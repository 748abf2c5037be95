"""The training loop shared by stages 2 and 3: resumable, sharded, logged, checkpointed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.logger import RunLogger
from seedkit.engine.sampler import EpochIndexedDataset, ResumableShardSampler
from seedkit.errors import InvalidValueError

CHECKPOINT_NAME = "checkpoint.pt"


def poly_or_cosine(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then poly (0.9) / cosine / constant."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "poly":
            return (1.0 - progress) ** 0.9
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(
    model: Any,
    name: str,
    lr: float,
    weight_decay: float,
    head_lr_mult: float,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over ``model.param_groups()`` (head at ``lr * head_lr_mult``)."""
    backbone, head = model.param_groups()
    groups = [{"params": backbone, "lr": lr}, {"params": head, "lr": lr * head_lr_mult}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise InvalidValueError("optimizer", "'sgd' or 'adamw'", name)


class LoopSettings(Protocol):
    """The optimisation fields :func:`train_loop` reads from a stage config."""

    batch_size: int
    max_steps: int | None
    epochs: int | None
    optimizer: str
    lr: float
    weight_decay: float
    head_lr_mult: float
    schedule: str
    warmup_steps: int
    seed: int
    num_workers: int
    checkpoint_every: int
    log_every: int
    progress: bool


def train_loop(
    *,
    model: torch.nn.Module,
    dataset: Any,
    loss_fn: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor],
    out: Path,
    context: DistributedContext,
    settings: LoopSettings,
    resume: bool,
    desc: str,
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    extra_log: dict[str, Any] | None = None,
) -> int:
    """Train ``model`` in place; return the number of steps done.

    ``OUT/checkpoint.pt`` (model, optimiser, schedule, step, RNG) is written
    atomically every ``checkpoint_every`` steps and at the end; with
    ``resume=True`` training continues from it at the same sample of the same
    epoch. ``OUT/log.jsonl`` gets one record per ``log_every`` steps (rank 0).
    The optimisation settings come from the stage config (see :class:`LoopSettings`).
    """
    batch_size, seed = settings.batch_size, settings.seed
    total_steps, epochs = settings.max_steps, settings.epochs
    num_workers, progress = settings.num_workers, settings.progress
    checkpoint_every, log_every = settings.checkpoint_every, settings.log_every
    torch.manual_seed(seed)
    if batch_size % context.world_size:
        raise InvalidValueError(
            "batch_size", f"a multiple of the process count {context.world_size}", batch_size
        )
    sampler = ResumableShardSampler(
        len(dataset), batch_size, context.rank, context.world_size, seed=seed
    )
    total = total_steps if total_steps is not None else int(epochs or 1) * sampler.steps_per_epoch
    opt = make_optimizer(
        model, settings.optimizer, settings.lr, settings.weight_decay, settings.head_lr_mult
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, poly_or_cosine(settings.schedule, settings.warmup_steps, total)
    )
    wrapped: torch.nn.Module = model
    if context.distributed:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
    step = 0
    checkpoint = out / CHECKPOINT_NAME
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, map_location=context.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step = int(state["step"])
    logger = None
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(out, append=resume and step > 0)
        logger.log(
            "start", step, total_steps=total, world_size=context.world_size, **(extra_log or {})
        )
    bar = tqdm(
        total=total,
        initial=step,
        desc=desc,
        disable=not (context.is_main and progress),
        dynamic_ncols=True,
    )
    started = time.time()
    # (epoch, index) requests: augmentations depend on (seed, epoch, index), also in
    # persistent workers
    loader = DataLoader(
        EpochIndexedDataset(dataset),
        batch_size=sampler.per_rank_batch,
        sampler=EpochIndexedDataset.sampler(sampler),
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )
    while step < total:
        epoch, in_epoch = divmod(step, sampler.steps_per_epoch)
        sampler.set_epoch(epoch)
        sampler.set_start_step(in_epoch)
        for batch in loader:
            wrapped.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(wrapped, batch)
            loss.backward()
            opt.step()
            scheduler.step()
            step += 1
            value = float(context.mean(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if logger is not None and (step % log_every == 0 or step == total):
                logger.log(
                    "train",
                    step,
                    epoch=epoch,
                    loss=value,
                    lr=opt.param_groups[0]["lr"],
                    elapsed=round(time.time() - started, 2),
                )
            if step % checkpoint_every == 0 or step == total:
                if context.is_main:
                    save_checkpoint(
                        checkpoint,
                        {
                            "model": model.state_dict(),
                            "optimizer": opt.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "step": step,
                            "rng": torch.get_rng_state(),
                        },
                    )
                context.barrier()
            if step >= total:
                break
    bar.close()
    if logger is not None:
        logger.log("end", step, elapsed=round(time.time() - started, 2))
        logger.close()
    return step


def class_names_for(num_fg_classes: int) -> list[str]:
    """``["background", *classes]`` for VOC (20) and COCO (80), generic names otherwise."""
    from seedkit.data import COCO_CLASSES, VOC_CLASSES

    classes = {len(VOC_CLASSES): VOC_CLASSES, len(COCO_CLASSES): COCO_CLASSES}.get(
        num_fg_classes, tuple(f"class_{k}" for k in range(num_fg_classes))
    )
    return ["background", *classes]


def gt_dir(voc_root: Path) -> Path:
    """Ground-truth folder of a VOC-layout root (``SegmentationClass`` first, as the seed stage)."""
    for name in ("SegmentationClass", "SegmentationClassAug"):
        if (voc_root / name).is_dir():
            return voc_root / name
    return voc_root / "SegmentationClass"
