"""The one training loop of every stage: AMP, accumulation, clipping, DDP, checkpoints, logs.

A stage supplies a *step hook* ``step(batch, info) -> loss | StepOutput``, the loss
of one micro-batch; :class:`Trainer` owns everything around it: the optimiser (the
head at ``lr * head_lr_mult``), the warm-up + poly / cosine / constant schedule,
the AMP scaler and DDP wrap; the resumable sharded sampler (``w`` processes at
batch ``B / w`` see what one process sees at ``B``); gradient accumulation,
autocast, clipping; atomic checkpoints with the RNG state and the log position (a
resumed run is bit-identical, its log has no duplicate record); ``log.jsonl``
(and TensorBoard), a progress bar and periodic evaluation records.

Example:
    >>> from seedkit.engine import lr_schedule
    >>> [round(lr_schedule("cosine", 2, 10)(s), 3) for s in (0, 1, 2, 10)]
    [0.5, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.config import StageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.logger import RunLogger
from seedkit.engine.run import RunFolder
from seedkit.engine.sampler import EpochIndexedDataset, ResumableShardSampler
from seedkit.errors import InvalidValueError, RunConflictError

__all__ = [
    "StepFunction", "StepInfo", "StepOutput", "Trainer", "build_optimizer", "lr_schedule",
    "total_steps", "wrap_model",
]  # fmt: skip

TRAINING_FORMAT = "seedkit.training"
# What a resume reads from a training checkpoint (see Trainer.state_dict).
TRAINING_KEYS = ("model", "optimizer", "scheduler", "scaler", "step", "rng", "state")
MODEL_FORMAT = "seedkit.model"


def lr_schedule(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then poly (power 0.9), cosine or constant.

    Args:
        kind: ``"poly"``, ``"cosine"`` or ``"constant"``.
        warmup: warm-up steps (factor ``(step + 1) / warmup``).
        total: schedule length in steps.
    """

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


def build_optimizer(model: Any, config: StageConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over ``model.param_groups()`` (head at ``lr * head_lr_mult``)."""
    backbone, head = model.param_groups()
    lr = config.lr
    groups = [{"params": backbone, "lr": lr}, {"params": head, "lr": lr * config.head_lr_mult}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay)
    raise InvalidValueError("optimizer", "'sgd' or 'adamw'", config.optimizer)


def wrap_model(model: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    """The model itself in one process; a ``DistributedDataParallel`` wrap of it under DDP."""
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


@dataclass(frozen=True)
class StepInfo:
    """Where a step hook is called.

    Attributes:
        step: optimiser steps finished before this one (0-based).
        total_steps: the schedule's length.
        epoch: the epoch of this step's batch.
        micro_batch: index of this micro-batch in the step (``grad_accum`` of them).
        micro_batches: micro-batches per step.
    """

    step: int
    total_steps: int
    epoch: int = 0
    micro_batch: int = 0
    micro_batches: int = 1

    @property
    def progress(self) -> float:
        """Fraction of the run done before this step, ``step / total_steps``."""
        return self.step / self.total_steps


@dataclass
class StepOutput:
    """What a step hook returns: the loss to minimise and values to log.

    Tensor values are averaged over micro-batches and processes like the loss;
    other values are logged as the last micro-batch gave them.
    """

    loss: torch.Tensor
    logs: dict[str, Any] = field(default_factory=dict)


#: ``step(batch, info) -> loss`` (or a :class:`StepOutput`): the step a training loop runs.
StepFunction = Callable[[dict[str, Any], StepInfo], "torch.Tensor | StepOutput"]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def _micro(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {
        key: value[start:stop] if isinstance(value, (torch.Tensor, list, tuple)) else value
        for key, value in batch.items()
    }


class Trainer:
    """Optimiser, schedule, AMP scaler and DDP wrap of a model, and the loop that trains it.

    Args:
        model: the network; it needs ``param_groups() -> (backbone, head)``.
        config: the stage config (its optimisation and run fields are read).
        context: the process's distributed context.
        num_samples: length of the training dataset (for the sampler and the
            schedule length of ``epochs``).
        stateful: other objects with ``state_dict`` / ``load_state_dict`` that the
            checkpoint must hold (e.g. ``{"teacher": ema_teacher}``).

    Attributes:
        model: the network (on the context's device).
        wrapped: what the step hook should call: the model, or its DDP wrap.
        optimizer, scheduler, scaler: built from the config.
        total_steps, steps_per_epoch: the schedule in optimiser steps.
        step: optimiser steps done.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: StageConfig,
        context: DistributedContext,
        num_samples: int,
        stateful: Mapping[str, Any] | None = None,
    ) -> None:
        self.config, self.context = config, context
        self.micro_batch_size = micro_batch_size(config, context)
        self.sampler = ResumableShardSampler(
            num_samples, config.batch_size, context.rank, context.world_size, seed=config.seed
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = total_steps(config, num_samples)
        self.model = model.to(context.device)
        self.optimizer = build_optimizer(self.model, config)
        warmup = config.warmup_steps or int(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_schedule(config.schedule, warmup, self.total_steps)
        )
        self.use_amp = context.device.type == "cuda" and config.amp != "off"
        bf16 = self.use_amp and torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and not bf16)
        self.wrapped = wrap_model(self.model, context)
        self.stateful = dict(stateful or {})
        self.step = 0

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The training state of the checkpoint format (tensors and plain containers)."""
        rng = {"torch": torch.get_rng_state()}
        if self.context.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.context.device)
        parts = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                 "scaler": self.scaler}  # fmt: skip
        return {
            "format": TRAINING_FORMAT, **{key: part.state_dict() for key, part in parts.items()},
            "step": self.step, "rng": rng,
            "state": {name: part.state_dict() for name, part in self.stateful.items()},
        }  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (model, optimiser, schedule, RNG, parts)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for name, part in self.stateful.items():
            part.load_state_dict(state["state"][name])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.context.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.context.device)
        self.step = int(state["step"])

    def save_model(self, run: RunFolder, **extra: Any) -> None:
        """Write the finished model file of ``run`` and record it (rank 0 writes)."""
        if self.context.is_main:
            save_checkpoint(run.model_path, {
                "format": MODEL_FORMAT, "model": self.model.state_dict(),
                "config": self.config.to_dict(), "run": run.model_record(), "steps": self.step,
                **extra,
            })  # fmt: skip
            run.finish_training(self.step)
        self.context.barrier()

    # ------------------------------------------------------------------ one step

    def train_step(
        self,
        batch: dict[str, Any],
        step: StepFunction,
        epoch: int = 0,
        after_step: Callable[[StepInfo], None] | None = None,
    ) -> dict[str, Any]:
        """One optimiser step on one (per-process) batch: its values to log.

        The batch is moved to the device and split into ``grad_accum``
        micro-batches; ``step`` runs on each under autocast, without DDP gradient
        sync but for the last; then clipping, the optimiser, scaler and schedule
        steps, and ``after_step`` (e.g. an EMA teacher update).
        """
        config, context = self.config, self.context
        accum = config.grad_accum
        self.wrapped.train()
        self.optimizer.zero_grad(set_to_none=True)
        batch = _to_device(batch, context.device)
        size = self.micro_batch_size
        totals: dict[str, Any] = {"loss": 0.0}
        last: dict[str, Any] = {}
        for micro in range(accum):
            part = batch if accum == 1 else _micro(batch, micro * size, (micro + 1) * size)
            sync = (
                self.wrapped.no_sync()
                if context.distributed and micro < accum - 1
                else contextlib.nullcontext()
            )
            autocast = torch.autocast(
                context.device.type, dtype=self.amp_dtype, enabled=self.use_amp
            )
            info = StepInfo(self.step, self.total_steps, epoch, micro, accum)
            with sync, autocast:
                output = step(part, info)
                if not isinstance(output, StepOutput):
                    output = StepOutput(output)
                self.scaler.scale(output.loss / accum).backward()
            totals["loss"] += float(context.mean(output.loss)) / accum
            for key, value in output.logs.items():
                if isinstance(value, torch.Tensor):
                    totals[key] = totals.get(key, 0.0) + float(context.mean(value)) / accum
                else:
                    last[key] = value
        if config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if after_step is not None:
            after_step(StepInfo(self.step, self.total_steps, epoch, accum - 1, accum))
        totals["lr"] = self.optimizer.param_groups[0]["lr"]
        totals.update(last)
        return totals

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        dataset: Any,
        step: StepFunction,
        run: RunFolder,
        *,
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        resume: bool = False,
        after_step: Callable[[StepInfo], None] | None = None,
        evaluate: Callable[[], dict[str, Any]] | None = None,
        eval_every: int | None = None,
        stop_after_steps: int | None = None,
        desc: str = "train",
        log_start: dict[str, Any] | None = None,
    ) -> int:
        """Train until ``total_steps``; return the steps done.

        Args:
            dataset: a dataset with ``set_epoch(epoch)`` whose items ``collate`` batches.
            step: the step hook, called per micro-batch.
            run: the prepared :class:`~seedkit.engine.RunFolder` (checkpoint, records).
            collate: the DataLoader's collate function.
            resume: continue from ``run``'s checkpoint (its run fingerprint must match).
            after_step: called after every optimiser step.
            evaluate: returns values for an ``eval`` log record (rank 0 only), every
                ``eval_every`` steps and at the end; it must not change the training.
            eval_every: see ``evaluate``.
            stop_after_steps: testing aid: stop after this many steps as a kill would
                (checkpoint written, no model file) and raise ``SystemExit``.
            desc: progress-bar label.
            log_start: extra values of the ``start`` record.
        """
        config, context = self.config, self.context
        log_offset = None
        if resume:
            path = run.checkpoint_path
            state = load_checkpoint(path, map_location=context.device, required=TRAINING_KEYS)
            recorded = state.get("run") if isinstance(state.get("run"), dict) else {}
            if (state.get("format"), recorded.get("fingerprint")) != (
                TRAINING_FORMAT, run.record["fingerprint"],
            ):  # fmt: skip
                problem = "belongs to another run than the run record of its folder"
                raise RunConflictError(path, problem, hint="pass `overwrite` to start over")
            self.load_state_dict(state)
            log_offset = state.get("log_offset")
        run.start_segment(self.step)
        run.write_record()
        logger = None
        if context.is_main:
            logger = RunLogger(
                run.out, tensorboard=config.tensorboard, append=resume, truncate_to=log_offset,
                purge_step=self.step if resume else None,
            )  # fmt: skip
            changes = {name: [old, new] for name, old, new in run.changes}
            logger.log(
                "start", self.step, world_size=context.world_size, total_steps=self.total_steps,
                **({"resumed": True, "changes": changes} if resume else {}), **(log_start or {}),
            )  # fmt: skip
        bar = tqdm(
            total=self.total_steps, initial=self.step, desc=desc, dynamic_ncols=True,
            disable=not (context.is_main and config.progress),
        )  # fmt: skip
        started = time.time()
        # (epoch, index) requests: augmentations depend on (seed, epoch, index), also in
        # persistent workers
        loader = DataLoader(
            EpochIndexedDataset(dataset),
            batch_size=self.micro_batch_size * config.grad_accum,
            sampler=EpochIndexedDataset.sampler(self.sampler),
            num_workers=config.num_workers,
            collate_fn=collate,
            drop_last=True,
            persistent_workers=config.num_workers > 0,
        )
        stopped = False
        try:
            while self.step < self.total_steps and not stopped:
                epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch)
                self.sampler.set_start_step(in_epoch)
                for batch in loader:
                    record = self.train_step(batch, step, epoch, after_step)
                    self.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                    end = self.step == self.total_steps
                    if logger is not None and (self.step % config.log_every == 0 or end):
                        elapsed = round(time.time() - started, 2)
                        logger.log("train", self.step, epoch=epoch, **record, elapsed=elapsed)
                    if evaluate is not None and eval_every and (self.step % eval_every == 0 or end):
                        if logger is not None:
                            logger.log("eval", self.step, **evaluate())
                        context.barrier()
                    stopped = self.step == stop_after_steps and not end
                    if self.step % config.checkpoint_every == 0 or end or stopped:
                        self._checkpoint(run, logger)
                    if end or stopped:
                        break
        finally:
            bar.close()
            if logger is not None:
                if not stopped and self.step >= self.total_steps:
                    logger.log("end", self.step, elapsed=round(time.time() - started, 2))
                logger.close()
        if stopped:
            raise SystemExit(
                f"stopped after {stop_after_steps} steps (--stop-after-steps); "
                "continue with --resume"
            )
        return self.step

    def _checkpoint(self, run: RunFolder, logger: RunLogger | None) -> None:
        if self.context.is_main:
            state = self.state_dict()
            state.update(
                run=run.model_record(),
                config=self.config.to_dict(),
                log_offset=logger.position if logger is not None else None,
            )
            save_checkpoint(run.checkpoint_path, state)
            run.trained_to(self.step)
        self.context.barrier()


def micro_batch_size(config: StageConfig, context: DistributedContext) -> int:
    """Samples per process and micro-batch; the batch must split over both evenly."""
    per_rank, remainder = divmod(config.batch_size, context.world_size * config.grad_accum)
    if remainder or per_rank < 1:
        processes = f"{context.world_size} x {config.grad_accum}"
        expected = f"a multiple of processes x grad_accum ({processes})"
        raise InvalidValueError("batch_size", expected, config.batch_size)
    return per_rank


def total_steps(config: StageConfig, num_samples: int) -> int:
    """Optimiser steps of a config: ``max_steps``, or ``epochs`` x steps per epoch."""
    if config.max_steps is not None:
        return int(config.max_steps)
    return int(config.epochs or 1) * max(1, num_samples // config.batch_size)
