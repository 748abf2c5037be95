"""One way to run a stage: a :class:`Stage` says what it reads, trains and writes;
:func:`run_stage` checks everything, decides, then acts through the one training loop.

Every stage runs the same way:

1. the config is validated and :meth:`Stage.check` checks the data files, the
   model (built on the ``meta`` device, weights looked up) and the paths it reads;
2. the content digests of its inputs are taken and the run folder decides
   (:meth:`~seedkit.engine.RunFolder.decide`) what to do, changing nothing;
3. only then, with ``OUT`` locked (a second run into it is refused), the folder is
   prepared, the network trained or loaded (:func:`load_stage_model`), and
   :meth:`Stage.produce` writes the stage's files and evaluates them;
4. ``OUT/results.json`` records the numbers with the digests of everything they
   came from (:func:`current_results` tells later whether that chain still holds).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import seedkit
from seedkit.engine.checkpoint import load_checkpoint
from seedkit.engine.config import StageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.engine.loop import MODEL_FORMAT, StepInfo, StepOutput, Trainer, total_steps
from seedkit.engine.run import RunFolder, RunPlan, setting_differences
from seedkit.errors import DataError, DataFileError, InvalidValueError, RunConflictError
from seedkit.files import ContentDigests, atomic_write, folder_lock

__all__ = [
    "Stage",
    "TrainingState",
    "check_evaluation_list",
    "class_names_for",
    "current_results",
    "gt_dir",
    "load_stage_model",
    "run_stage",
    "train_stage",
]


def class_names_for(num_classes: int) -> list[str]:
    """Background plus the class names of a ``num_classes`` foreground data set."""
    from seedkit.data import class_names_for as names

    return names(num_classes)


def gt_dir(voc_root: Path) -> Path:
    """Ground-truth folder of a VOC-layout root (``SegmentationClass`` first)."""
    for name in ("SegmentationClass", "SegmentationClassAug"):
        if (voc_root / name).is_dir():
            return voc_root / name
    return voc_root / "SegmentationClass"


def check_evaluation_list(
    voc_root: Any, split: str | list[str], num_classes: int, limit: int | None = None
) -> list[str]:
    """Check the images and ground-truth masks an evaluation will read; return its ids.

    The masks are read from :func:`gt_dir` in full (a truncated file fails here,
    before any training).

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
        raise DataFileError(
            folder,
            "ground-truth mask folder",
            f"needed to evaluate on list {split!r}" if isinstance(split, str) else "",
        )
    # mask_dir is relative to the VOC root (the root itself may be relative to the cwd).
    dataset = VOCSegmentation(
        root, split, with_masks=True, mask_dir=folder.name,
        class_names=class_names_for(num_classes)[1:],
    )  # fmt: skip
    dataset.ids = dataset.ids[:limit]
    if check:
        dataset.check_files(masks=True)
    return dataset


def evaluation_digest(dataset: Any, digests: ContentDigests) -> str:
    """Digest of an evaluation list: ids, images and ground-truth masks by content."""
    from seedkit.engine.run import files_digest

    paths = [p for i in dataset.ids for p in (dataset.image_path(i), dataset.mask_path(i))]
    return files_digest(paths, digests)


class TrainingState:
    """The network, the :class:`~seedkit.engine.Trainer` and the step hook of a stage's training.

    Subclasses define :meth:`training_step` (and :meth:`after_step` /
    :meth:`evaluate` where they need them).

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
        self.config = config
        self.context = context
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
        """Values of an ``eval`` log record (``eval_every``), or ``None``: no evaluation."""
        return None


class Stage:
    """What one stage reads, trains and writes; :func:`run_stage` runs any of them.

    Attributes:
        name: the stage (``"seeds"``, ``"pseudo_masks"``, ``"segmentation"``).
        model_file: the finished network's file in ``OUT``.
        owned: the other files and folders the stage writes into ``OUT``.
        artefacts: the derived folders whose files are recorded by content.
    """

    name = ""
    model_file = "model.pt"
    owned: tuple[str, ...] = ("results.json",)
    artefacts: tuple[str, ...] = ()

    def check(self, config: Any, context: DistributedContext, voc_root: Any, produced: bool) -> None:
        """Check the stage's model, data and paths before anything is written.

        ``produced``: the files it reads from an earlier stage are still to be made
        by this command (they are checked when the stage runs).
        """
        self.check_settings(config, context, produced)
        self.check_data(config, voc_root, produced)

    def check_settings(self, config: Any, context: DistributedContext, produced: bool) -> None:
        """What needs no data: the network (built on the ``meta`` device), its weights, paths."""
        raise NotImplementedError

    def check_data(self, config: Any, voc_root: Any, produced: bool) -> None:
        """Every file of the training and evaluation lists the stage will read."""
        raise NotImplementedError

    def inputs(self, config: Any, voc_root: Any, digests: ContentDigests) -> dict[str, Any]:
        """Content digests of what the network trains from besides its settings."""
        raise NotImplementedError

    def build_model(self, config: Any, weights: bool = True) -> torch.nn.Module | None:
        """The stage's network (``weights``: with its starting weights); ``None``: no network."""
        raise NotImplementedError

    def training(self, config: Any, context: DistributedContext, voc_root: Any) -> tuple[Any, Any]:
        """``(training dataset, TrainingState)`` of a run that trains."""
        raise NotImplementedError

    def produce(
        self, config: Any, context: DistributedContext, voc_root: Any, state: Any, run: RunFolder
    ) -> dict[str, Any] | None:
        """Write the stage's files and evaluate them with the trained ``state`` (``None``: the
        stage trains no network): the results (rank 0), else ``None``."""
        raise NotImplementedError

    def result_inputs(
        self, config: Any, voc_root: Any, run: RunFolder, digests: ContentDigests
    ) -> dict[str, Any]:
        """Digests of everything the stage's results come from (see :func:`current_results`)."""
        return {"model": run.record.get("model", {}).get("sha256"), **self.inputs(
            config, voc_root, digests
        )}  # fmt: skip

    def run_folder(
        self, config: Any, context: DistributedContext, voc_root: Any, produced: bool = False
    ) -> RunFolder:
        """The stage's :class:`~seedkit.engine.RunFolder`, with its inputs' digests.

        ``produced``: the inputs are still to be made (not digested); without
        ``voc_root`` the folder is only read (no schedule length).
        """
        from seedkit.data import read_id_list

        digests = ContentDigests(Path(config.out) / "digests.json")
        inputs = None
        if not produced:
            inputs = context.broadcast(
                self.inputs(config, voc_root, digests) if context.is_main else None
            )
        steps = 0
        if config.trains() and voc_root is not None:
            steps = total_steps(config, len(read_id_list(voc_root, config.train_split)))
        return RunFolder(config, context, self.model_file, self.owned, inputs, steps, digests)


@contextlib.contextmanager
def locked(context: DistributedContext, folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` (rank 0) while a stage writes into it."""
    with folder_lock(folder) if context.is_main else contextlib.nullcontext():
        yield


def prepare(
    stage: Stage,
    config: Any,
    context: DistributedContext,
    voc_root: Any,
    resume: bool = False,
    overwrite: bool = False,
) -> tuple[RunFolder, RunPlan]:
    """Steps 1 and 2 of :func:`run_stage`: validate, check, take digests, decide."""
    config.validate()
    stage.check(config, context, voc_root, produced=False)
    run = stage.run_folder(config, context, voc_root)
    return run, run.decide(resume=resume, overwrite=overwrite)


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
    """Check, decide, then train (or load) the stage's network: ``(state or model, run)``.

    Args:
        stage: the stage.
        config: its configuration (validated here).
        context: the process's distributed context.
        voc_root: the VOC-layout data folder.
        resume: continue the run in ``config.out``.
        overwrite: delete the run in ``config.out`` first.
        step: the step hook ``step(state, batch, info) -> loss | StepOutput``
            (default: the state's ``training_step``).
        evaluate: ``evaluate(state) -> dict`` for the ``eval`` records every
            ``eval_every`` steps (default: the state's ``evaluate``).
        stop_after_steps: testing aid; see :meth:`~seedkit.engine.Trainer.fit`.

    Returns:
        The :class:`TrainingState` after training (a finished run's network is
        loaded into one), or ``None`` for a stage that trains no network.
    """
    run, plan = prepare(stage, config, context, voc_root, resume, overwrite)
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
            state.model.load_state_dict(load_stage_model(stage, config, context.device).state_dict())
            state.trainer.step = int(run.record["step"])
            return state, run
        from seedkit.data import collate

        hook = step or type(state).training_step
        monitor = evaluate or type(state).evaluate
        every = getattr(config, "eval_every", None)
        torch.manual_seed(config.seed)
        state.trainer.fit(
            dataset,
            lambda batch, info: hook(state, batch, info),
            run,
            collate=collate,
            resume=plan.resume,
            after_step=state.after_step,
            evaluate=(lambda: monitor(state)) if every else None,
            eval_every=every,
            stop_after_steps=stop_after_steps,
            desc=f"train {stage.name}",
            log_start={"stage": stage.name, "seedkit_version": seedkit.__version__},
        )
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
        document = {
            **results,
            "provenance": {
                "run": run.record.get("fingerprint"),
                "model": run.record.get("model"),
                "steps": run.record.get("step"),
                "segments": run.record.get("segments"),
                "inputs": stage.result_inputs(config, voc_root, run, run.digests),
                "seedkit_version": seedkit.__version__,
            },
        }
        atomic_write(run.out / "results.json", (json.dumps(document, indent=2) + "\n").encode())
        run.digests.save()
    return document


def load_stage_model(stage: Stage, config: Any, device: torch.device | str) -> torch.nn.Module:
    """Rebuild a stage's finished network from ``config.out`` (the one model loader).

    Raises:
        DataFileError: the stage has not finished (no model file).
        RunConflictError: the file was trained with other settings than ``config``.
        DataError: the file is not a seedkit model file.
    """
    path = Path(config.out) / stage.model_file
    if not path.is_file():
        raise DataFileError(path, f"{stage.name} model", "train that stage first")
    state = load_checkpoint(path, map_location=device, required=("model",))
    recorded = state.get("run", {}).get("fields") if isinstance(state.get("run"), dict) else None
    if state.get("format") not in (MODEL_FORMAT, None) or recorded is None:
        raise RunConflictError(path, "has no record of the settings that trained it")
    from seedkit.engine.config import LENGTH, TRAINING

    differences = setting_differences(recorded, config.values(TRAINING, LENGTH))
    if differences:
        raise RunConflictError(
            path,
            "was trained with other settings",
            differences,
            "pass the settings it was trained with, or retrain it (`overwrite`)",
        )
    model = stage.build_model(config, weights=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise DataError(path, f"the weights of a {stage.name} network", str(error)) from None
    return model.to(device)


def current_results(
    stage: Stage, config: Any, voc_root: Any
) -> tuple[dict[str, Any] | None, str]:
    """A stage's ``results.json`` if everything it came from is still what it was.

    Returns:
        ``(results, "")``, or ``(None, reason)``: no results yet, the network was
        retrained since, or an input or a derived file changed (by content).
    """
    out = Path(config.out)
    path = out / "results.json"
    if not path.is_file() or not (out / "run.json").is_file():
        return None, "not run"
    try:
        document = json.loads(path.read_text())
        record = json.loads((out / "run.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"{path} is damaged"
    provenance = document.get("provenance", {})
    if provenance.get("run") != record.get("fingerprint") or provenance.get("model") != record.get(
        "model"
    ):
        return None, "its network was retrained since"
    run = stage.run_folder(config, DistributedContext(), voc_root, produced=True)
    run.record = record
    try:
        now = stage.result_inputs(config, voc_root, run, run.digests)
    except (DataError, DataFileError, InvalidValueError) as error:
        return None, str(error)
    changed = setting_differences(provenance.get("inputs", {}), now)
    if changed:
        return None, f"{', '.join(name for name, _, _ in changed)} changed since it was evaluated"
    return document, ""

