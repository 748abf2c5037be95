"""One way to run a stage: a :class:`Stage` says what it reads, trains and writes.

:func:`run_stage` runs any stage the same way: validate the config, check the network
(on the ``meta`` device), paths and data (:meth:`Stage.check`), digest the inputs and
let the run folder decide, all without writing; then, with ``OUT`` locked, train
through the one loop or load (:func:`load_stage_model`), write and evaluate the
stage's files (:meth:`Stage.produce`) and record in ``results.json`` the digests of
everything the numbers came from (:func:`current_results` checks them later).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import seedkit
from seedkit.data import class_names_for
from seedkit.engine.checkpoint import load_checkpoint
from seedkit.engine.config import LENGTH, TRAINING, StageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.loop import (
    MODEL_FORMAT,
    StepInfo,
    StepOutput,
    Trainer,
    micro_batch_size,
    total_steps,
)
from seedkit.engine.run import RunFolder, files_digest, setting_differences
from seedkit.errors import DataError, DataFileError, InvalidValueError, RunConflictError
from seedkit.files import ContentDigests, atomic_write, folder_lock

__all__ = [
    "Stage", "TrainingState", "check_evaluation_list", "class_names_for", "current_results",
    "gt_dir", "load_stage_model", "run_stage", "train_stage",
]  # fmt: skip


def gt_dir(voc_root: Path) -> Path:
    """Ground-truth folder of a VOC-layout root (``SegmentationClass`` first)."""
    for name in ("SegmentationClass", "SegmentationClassAug"):
        if (voc_root / name).is_dir():
            return voc_root / name
    return voc_root / "SegmentationClass"


def check_evaluation_list(
    voc_root: Any, split: str | list[str], num_classes: int, limit: int | None = None
) -> list[str]:
    """Check the images and ground-truth masks (read in full) an evaluation reads; its ids.

    Raises:
        DataFileError: the list, the ground-truth folder, an image or a mask is missing.
        DataError: a file is unreadable or a mask does not match its image.
    """
    return list(evaluation_dataset(voc_root, split, num_classes, limit, check=True).ids)


def evaluation_dataset(
    voc_root: Any, split: Any, num_classes: int, limit: int | None = None, check: bool = False
) -> Any:
    """The (unaugmented) evaluation list with its ground truth, first ``limit`` ids."""
    from seedkit.data import VOCSegmentation, resolve_voc_root

    root = resolve_voc_root(voc_root)
    folder = gt_dir(root)
    if not folder.is_dir():
        hint = f"needed to evaluate on list {split!r}" if isinstance(split, str) else ""
        raise DataFileError(folder, "ground-truth mask folder", hint)
    # mask_dir is relative to the VOC root (the root itself may be relative to the cwd).
    names = class_names_for(num_classes)[1:]
    dataset = VOCSegmentation(root, split, with_masks=True, mask_dir=folder.name, class_names=names)
    dataset.ids = dataset.ids[:limit]
    return dataset.check_files(masks=True) or dataset if check else dataset


def evaluation_list(config: Any, voc_root: Any, check: bool = False) -> Any:
    """:func:`evaluation_dataset` of a config's ``eval_split`` and ``eval_limit``."""
    split, limit = config.eval_split, config.eval_limit
    return evaluation_dataset(voc_root, split, config.num_classes, limit, check)


def evaluation_digest(dataset: Any, digests: ContentDigests) -> str:
    """Digest of an evaluation list: ids, images and ground-truth masks by content."""
    paths = [p for i in dataset.ids for p in (dataset.image_path(i), dataset.mask_path(i))]
    return files_digest(paths, digests)


def check_network(config: Any, context: DistributedContext, build: Callable[..., Any]) -> Any:
    """Build a stage's network on the ``meta`` device and look up its pretrained weights.

    No memory is allocated; a missing ``checkpoint_path``, an unknown model or weights
    that cannot be had are named now, not after the earlier stages trained. Also checks
    that the batch splits over processes and ``grad_accum``. Returns the meta model.
    """
    micro_batch_size(config, context)
    if config.checkpoint_path is not None and not Path(config.checkpoint_path).is_file():
        raise DataFileError(config.checkpoint_path, "checkpoint_path file")
    with torch.device("meta"):
        model = build(config, weights=False)
        if config.pretrained:
            build(config, weights=True)  # reads the weights from the cache (or fails now)
    return model


class TrainingState:
    """The network, the :class:`~seedkit.engine.Trainer` and the step hook of a stage's training.

    Attributes:
        trainer: optimiser, schedule, AMP, DDP and checkpoint state.
        model: the network (``trainer.model``).
        run: the :class:`~seedkit.engine.RunFolder` (set by :func:`train_stage`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: StageConfig,
        context: DistributedContext,
        num_samples: int,
        stateful: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.context = config, context
        self.trainer = Trainer(model, config, context, num_samples, stateful=stateful)
        self.model = self.trainer.model
        self.run: RunFolder | None = None

    @property
    def step(self) -> int:
        """Optimiser steps done."""
        return self.trainer.step

    @property
    def total_steps(self) -> int:
        """The schedule's length."""
        return self.trainer.total_steps

    def training_step(self, batch: dict[str, Any], info: StepInfo) -> torch.Tensor | StepOutput:
        """The loss of one micro-batch."""
        raise NotImplementedError

    def after_step(self, info: StepInfo) -> None:
        """Called after every optimiser step (e.g. an EMA teacher update)."""

    def evaluate(self) -> dict[str, Any] | None:
        """Values of an ``eval`` log record (``eval_every``)."""
        return None


class Stage:
    """What one stage reads, trains and writes; :func:`run_stage` runs any of them.

    Attributes:
        name: the stage (``"seeds"``, ``"pseudo_masks"``, ``"segmentation"``).
        model_file: the finished network's file in ``OUT``.
        owned: the other files and folders the stage writes into ``OUT``.
    """

    name = ""
    model_file = "model.pt"
    owned: tuple[str, ...] = ("results.json",)

    def check(self, config: Any, context: DistributedContext, voc_root: Any, produced: bool):
        """Check all the stage needs (``produced``: what an earlier stage still makes is not)."""
        self.check_settings(config, context, produced)
        self.check_data(config, voc_root, produced)

    def check_settings(self, config: Any, context: DistributedContext, produced: bool) -> None:
        """What needs no data: the network (built on the ``meta`` device), its weights, paths."""
        raise NotImplementedError

    def check_data(self, config: Any, voc_root: Any, produced: bool) -> None:
        """Every file of the training and evaluation lists the stage reads."""
        raise NotImplementedError

    def inputs(self, config: Any, voc_root: Any, digests: ContentDigests) -> dict[str, Any]:
        """Content digests of what the network trains from besides its settings and weights."""
        raise NotImplementedError

    def all_inputs(self, config: Any, voc_root: Any, digests: ContentDigests) -> dict[str, Any]:
        """:meth:`inputs` and the starting weights (``checkpoint_path``), by content."""
        inputs = self.inputs(config, voc_root, digests)
        if config.checkpoint_path:
            inputs["checkpoint_path"] = digests.digest(config.checkpoint_path)[:16]
        return inputs

    def build_model(self, config: Any, weights: bool = True) -> torch.nn.Module | None:
        """The stage's network (``weights``: with its starting weights)."""
        raise NotImplementedError

    def training(self, config: Any, context: DistributedContext, voc_root: Any) -> tuple[Any, Any]:
        """``(training dataset, TrainingState)`` of a stage that trains a network."""
        raise NotImplementedError

    def produce(
        self, config: Any, context: DistributedContext, voc_root: Any, state: Any, run: RunFolder
    ) -> dict[str, Any] | None:
        """Write and evaluate the stage's files with the trained ``state``: results (rank 0)."""
        raise NotImplementedError

    def result_inputs(
        self, config: Any, voc_root: Any, run: RunFolder, digests: ContentDigests
    ) -> dict[str, Any]:
        """Digests of everything the stage's results come from (see :func:`current_results`)."""
        model = run.record.get("model", {}).get("sha256")
        return {"model": model, **self.all_inputs(config, voc_root, digests)}

    def run_folder(
        self, config: Any, context: DistributedContext, voc_root: Any, produced: bool = False
    ) -> RunFolder:
        """Its :class:`~seedkit.engine.RunFolder`, with its inputs' digests unless ``produced``."""
        from seedkit.data import read_id_list

        digests = ContentDigests(Path(config.out) / "digests.json")
        inputs = None
        if not produced:
            inputs = self.all_inputs(config, voc_root, digests) if context.is_main else None
            inputs = context.broadcast(inputs)
        steps = 0
        if config.trains() and voc_root is not None:
            steps = total_steps(config, len(read_id_list(voc_root, config.train_split)))
        return RunFolder(config, context, self.model_file, self.owned, inputs, steps, digests)


@contextlib.contextmanager
def locked(context: DistributedContext, folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` (rank 0) while a stage writes into it."""
    with folder_lock(folder) if context.is_main else contextlib.nullcontext():
        yield


def train_stage(
    stage: Stage,
    config: Any,
    context: DistributedContext,
    voc_root: Any,
    resume: bool = False,
    overwrite: bool = False,
    *,
    step: Callable[..., Any] | None = None,
    evaluate: Callable[..., Any] | None = None,
    stop_after_steps: int | None = None,
) -> tuple[Any, RunFolder]:
    """Check, decide, then train (or load) a stage's network: ``(state, run folder)``.

    Args:
        stage: the stage.
        config: its configuration (validated here).
        context: the process's distributed context.
        voc_root: the VOC-layout data folder.
        resume: continue the run in ``config.out``.
        overwrite: delete the run in ``config.out`` first.
        step: the step hook ``step(state, batch, info) -> loss | StepOutput``
            (default: the state's ``training_step``).
        evaluate: ``evaluate(state) -> dict``, the ``eval`` records every
            ``eval_every`` steps (default: the state's ``evaluate``).
        stop_after_steps: testing aid; see :meth:`~seedkit.engine.Trainer.fit`.

    Returns:
        The :class:`TrainingState` after training (a finished run's network loaded
        into one), or ``None`` for a stage that trains no network.
    """
    config.validate()
    stage.check(config, context, voc_root, produced=False)
    run = stage.run_folder(config, context, voc_root)
    plan = run.decide(resume=resume, overwrite=overwrite)
    if plan.note and context.is_main:
        print(f"{run.out}: {plan.note}", flush=True)
    with locked(context, run.out):
        run.apply(plan)
        torch.manual_seed(config.seed)
        if not config.trains():
            if plan.train:
                run.finish_training(0)
            return None, run
        dataset, state = stage.training(config, context, voc_root)
        state.run = run
        if not plan.train:
            trained = load_stage_model(stage, config, context.device)
            state.model.load_state_dict(trained.state_dict())
            state.trainer.step = int(run.record["step"])
            return state, run
        from seedkit.data import collate

        hook, monitor = step or type(state).training_step, evaluate or type(state).evaluate
        every = getattr(config, "eval_every", None)
        torch.manual_seed(config.seed)
        state.trainer.fit(
            dataset, lambda batch, info: hook(state, batch, info), run, collate=collate,
            resume=plan.resume, after_step=state.after_step,
            evaluate=(lambda: monitor(state)) if every else None, eval_every=every,
            stop_after_steps=stop_after_steps, desc=f"train {stage.name}",
            log_start={"stage": stage.name, "seedkit_version": seedkit.__version__},
        )  # fmt: skip
        state.trainer.save_model(run, family=getattr(state.model, "family", None))
    return state, run


def run_stage(
    stage: Stage,
    config: Any,
    context: DistributedContext,
    voc_root: Any,
    resume: bool = False,
    overwrite: bool = False,
    **hooks: Any,
) -> dict[str, Any] | None:
    """Run a stage: :func:`train_stage`, then its files, evaluation and ``results.json``.

    Returns:
        ``results.json``'s content on rank 0 (``None`` on other ranks).
    """
    state, run = train_stage(stage, config, context, voc_root, resume, overwrite, **hooks)
    with locked(context, run.out):
        if state is not None:
            state.model.eval()
        results = stage.produce(config, context, voc_root, state, run)
        if results is None:
            return None
        record = run.record
        results["provenance"] = {
            "run": record.get("fingerprint"), "model": record.get("model"),
            "steps": record.get("step"), "segments": record.get("segments"),
            "inputs": stage.result_inputs(config, voc_root, run, run.digests),
            "seedkit_version": seedkit.__version__,
        }  # fmt: skip
        atomic_write(run.out / "results.json", (json.dumps(results, indent=2) + "\n").encode())
        run.digests.save()
    return results


def load_stage_model(stage: Stage, config: Any, device: torch.device | str) -> torch.nn.Module:
    """Rebuild a stage's finished network from ``config.out`` (the one model loader).

    Raises:
        DataFileError: the stage has not finished (no model file).
        RunConflictError: the file was trained with other settings than ``config``.
        DataError: the file does not hold this network's weights.
    """
    path = Path(config.out) / stage.model_file
    if not path.is_file():
        raise DataFileError(path, f"{stage.name} model", "train that stage first")
    state = load_checkpoint(path, map_location=device, required=("model",))
    recorded = state.get("run", {}).get("fields") if isinstance(state.get("run"), dict) else None
    if state.get("format") != MODEL_FORMAT or recorded is None:
        raise RunConflictError(path, "has no record of the settings that trained it")
    differences = setting_differences(recorded, config.values(TRAINING, LENGTH))
    if differences:
        hint = "pass the settings it was trained with, or retrain it (`overwrite`)"
        raise RunConflictError(path, "was trained with other settings", differences, hint)
    model = stage.build_model(config, weights=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise DataError(path, f"the weights of a {stage.name} network", str(error)) from None
    return model.to(device)


def current_results(stage: Stage, config: Any, voc_root: Any) -> tuple[dict | None, str]:
    """A stage's ``results.json`` if everything it came from is still what it was.

    Returns:
        ``(results, "")``, or ``(None, reason)``: no results yet (``"not run"``), the
        network was retrained since, or an input or a derived file changed.
    """
    out = Path(config.out)
    try:
        document = json.loads((out / "results.json").read_text())
        record = json.loads((out / "run.json").read_text())
    except FileNotFoundError:
        return None, "not run"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"{out} holds a damaged results.json or run.json"
    provenance = document.get("provenance", {})
    recorded = (provenance.get("run"), provenance.get("model"))
    if recorded != (record.get("fingerprint"), record.get("model")):
        return None, "its network was retrained since"
    run = stage.run_folder(config, DistributedContext(), voc_root, produced=True)
    run.record = record
    try:
        now = stage.result_inputs(config, voc_root, run, run.digests)
    except (DataError, DataFileError, InvalidValueError) as error:
        return None, str(error)
    changed = [name for name, _, _ in setting_differences(provenance.get("inputs", {}), now)]
    return (None, f"{', '.join(changed)} changed since") if changed else (document, "")
