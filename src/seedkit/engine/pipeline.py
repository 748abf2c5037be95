"""The example scripts' driver: flags from :data:`~seedkit.engine.SETTINGS`, every stage
checked before any acts, one ``results.json`` of current numbers only.

``examples/train_voc.py`` and ``examples/train_coco.py`` are thin: each builds a
:class:`DataAdapter` (where the VOC-layout data comes from and the defaults that
come with it) and calls :func:`run_command`. Stage 1 writes ``<seed run>/seeds``,
stage 2 reads them and writes ``OUT/pseudo_masks/masks``, stage 3 reads those; any
stage can be (re)run on its own with ``--stages``. Before anything is written:

1. every setting of every stage is resolved (defaults < recipe < ``--config`` <
   flags) and validated, and every network is built on the ``meta`` device (its
   pretrained weights looked up);
2. ``--out`` is locked (a second command into it is refused), the data prepared
   and every file of every stage checked;
3. each stage's run folder decides what it will do; a stage whose inputs an
   earlier stage of the command remakes may only start fresh.

Only then do the stages run. ``OUT/results.json`` holds each stage's numbers only
while everything they came from is unchanged (by content).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedkit.engine.config import (
    PSEUDO_MASKS,
    SEEDS,
    SEGMENTATION,
    SETTINGS,
    STAGES,
    PseudoMaskStageConfig,
    SeedStageConfig,
    SegmentationStageConfig,
    StageConfig,
    apply_recipe,
    load_config,
    settings_of,
)
from seedkit.engine.distributed import DistributedContext, init_distributed
from seedkit.engine.run import RunConflictError, RunFolder, has_run
from seedkit.engine.seed_stage import SEED_STAGE, ensure_seeds, list_dataset, seeds_current
from seedkit.engine.pseudo_mask_stage import PSEUDO_MASK_STAGE
from seedkit.engine.segmentation_stage import SEGMENTATION_STAGE
from seedkit.engine.stages import Stage, current_results, locked, run_stage
from seedkit.data import read_id_list
from seedkit.errors import DataFileError, InvalidValueError, PretrainedWeightsError, SeedkitError
from seedkit.files import atomic_write, check_writable_directory

__all__ = [
    "DataAdapter",
    "CommandParser",
    "add_command_arguments",
    "parse_stages",
    "run_command",
]

STAGE_OBJECTS: dict[str, Stage] = {
    SEEDS: SEED_STAGE, PSEUDO_MASKS: PSEUDO_MASK_STAGE, SEGMENTATION: SEGMENTATION_STAGE,
}  # fmt: skip
NUMBERS = {SEEDS: 1, PSEUDO_MASKS: 2, SEGMENTATION: 3}
_COMMAND_FLAGS = {"resume": "--resume", "overwrite": "--overwrite", "out": "--out"}


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: ...``, exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print the one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_stages(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (sorted, each of 1, 2, 3).

    Example:
        >>> parse_stages("3,1")
        [1, 3]
    """
    try:
        stages = sorted({int(part) for part in str(text).split(",") if part.strip()})
    except ValueError:
        stages = []
    if not stages or any(s not in (1, 2, 3) for s in stages):
        raise InvalidValueError("--stages", "comma-separated stage numbers 1, 2, 3", text)
    return stages


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _argument(setting: Any, stage: str) -> dict[str, Any]:
    """argparse keyword arguments of a setting (values are checked by the setting itself)."""
    default = setting.default_for(stage)
    text = setting.help
    if setting.choices is not None:
        text += "; " + ", ".join(str(c) for c in setting.choices if c is not None)
    shown = "; as stage 1" if setting.inherits(stage) else f"; default {default}"
    kwargs: dict[str, Any] = {"help": (text + shown).replace("%", "%%"), "default": None}
    kind = setting.type
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind in (int, float):
        kwargs.update(type=kind, metavar="N" if kind is int else "X")
    elif kind in ("scales", "pair", "jitter"):
        kwargs.update(
            type=int if kind == "pair" else float,
            nargs={"scales": "+", "pair": 2, "jitter": 4}[kind],
            metavar="X",
        )
    elif kind == "json":
        kwargs.update(type=_json_object, metavar="JSON")
    else:
        kwargs["metavar"] = "NAME"
    return kwargs


def add_command_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add a flag per setting (:data:`~seedkit.engine.SETTINGS`) and the command's own flags.

    Stage 1's settings have plain flags, stage 2's ``--pm-...`` and stage 3's
    ``--seg-...`` (a few keep older names); a setting of the whole command (seed,
    data, workers...) has one flag for every stage. ``skip`` leaves settings out
    (``voc_root`` where an adapter derives it).
    """
    parser.add_argument(
        "--stages", default="1", help="stages to run: 1 seeds, 2 pseudo masks, 3 segmentation "
        "(e.g. 1,2,3); each reads the previous stage's files",
    )  # fmt: skip
    parser.add_argument("--out", help="the command's folder (the stages write inside it)")
    parser.add_argument("--config", help="a stage-1 config.json of an earlier run (flags override)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true",
        help="continue the runs in OUT (also a finished one, with more steps)",
    )  # fmt: skip
    again.add_argument("--overwrite", action="store_true", help="delete the runs in OUT, start over")
    parser.add_argument(
        "--stop-after-steps", type=int, metavar="N",
        help="stop training after N steps as if interrupted (to try --resume)",
    )  # fmt: skip
    groups = {
        "command": parser.add_argument_group("every stage"),
        SEEDS: parser.add_argument_group("stage 1: seeds"),
        PSEUDO_MASKS: parser.add_argument_group("stage 2: pseudo masks"),
        SEGMENTATION: parser.add_argument_group("stage 3: segmentation"),
    }
    seen: set[str] = set()
    for setting in SETTINGS:
        if setting.name in skip:
            continue
        for stage in setting.stages:
            flag = setting.flag(stage)
            if flag is None or flag in seen:
                continue
            seen.add(flag)
            group = groups["command" if setting.command else stage]
            names = [flag, *setting.aliases.get(stage, ())]
            group.add_argument(*names, dest=_dest(flag), **_argument(setting, stage))


def flag_of(stage: str, name: str) -> str:
    """The flag of ``name`` in ``stage`` (a derived setting: ``stage-N name``)."""
    if name.startswith("--"):
        return name
    setting = settings_of(stage).get(name)
    flag = setting.flag(stage) if setting is not None else None
    return flag or _COMMAND_FLAGS.get(name) or f"stage-{NUMBERS[stage]} {name}"


def named(error: SeedkitError, stage: str) -> SeedkitError:
    """The same error with the settings it names spelled as ``stage``'s flags."""
    if isinstance(error, RunConflictError):
        renamed = [(flag_of(stage, n), old, new) for n, old, new in error.differences]
        hint = error.hint
        for name in {*settings_of(stage), *_COMMAND_FLAGS}:
            hint = hint.replace(f"`{name}`", f"`{flag_of(stage, name)}`")
        return RunConflictError(error.path, error.problem, renamed, hint)
    if isinstance(error, DataFileError) and error.what.split(" ")[0] in settings_of(stage):
        name, _, rest = error.what.partition(" ")
        return DataFileError(error.path, f"{flag_of(stage, name)} {rest}")
    if type(error) is InvalidValueError and not error.argument.startswith("--"):
        parts = [flag_of(stage, part.strip()) for part in error.argument.split("/")]
        expected = error.expected.removesuffix(" or None")
        return InvalidValueError(" / ".join(parts), expected, error.actual)
    return error


@contextlib.contextmanager
def naming(stage: str) -> Iterator[None]:
    """Re-raise the errors of ``stage``'s settings with their flags."""
    try:
        yield
    except (InvalidValueError, RunConflictError, DataFileError) as error:
        raise named(error, stage) from None


@dataclass
class DataAdapter:
    """Where a command's VOC-layout data comes from, and the defaults that go with it.

    Attributes:
        prog: the script's name (for messages).
        prepare: ``prepare(command, context) -> voc_root``: makes the data (the demo
            set, a COCO view) once; called with ``--out`` locked, after every setting
            was checked.
        defaults: per stage, settings below the recipe and the flags, or a function of
            the resolved stage-1 config returning them.
        recipe: the recipe applied when ``--recipe`` is not given.
        variants: several stage-1 runs side by side (``{name: settings}``, each in
            ``OUT/name``; the later stages start from the last); empty: one run.
        seed_folder: the stage-1 run's folder for one run, a function of ``OUT``
            and the stage-1 config.
        report: prints the stage-1 results of the variants (the demo's table).
        default_out: ``--out`` when it is not given (a function of the stage-1 config).
    """

    prog: str
    prepare: Callable[[Command, DistributedContext], str]
    defaults: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed_folder: Callable[[Path, StageConfig], Path] = lambda out, config: out
    report: Callable[[dict[str, Any]], None] | None = None
    default_out: Callable[[StageConfig], str] = lambda config: str(config.out)


@dataclass
class Command:
    """The resolved and validated configs of one command."""

    stages: list[int]
    out: Path
    seeds: dict[str, StageConfig]  # variant name -> stage-1 config
    pseudo_masks: StageConfig
    segmentation: StageConfig

    @property
    def seed(self) -> StageConfig:
        """The stage-1 run the later stages start from."""
        return list(self.seeds.values())[-1]

    def located(self, voc_root: str) -> Command:
        """The same command with ``voc_root`` recorded in every config."""
        seeds = {name: config.replace(voc_root=voc_root) for name, config in self.seeds.items()}
        pm, seg = (c.replace(voc_root=voc_root) for c in (self.pseudo_masks, self.segmentation))
        return Command(self.stages, self.out, seeds, pm, seg)


def _given(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    given: dict[str, dict[str, Any]] = {stage: {} for stage in STAGES}
    for setting in SETTINGS:
        for stage in setting.stages:
            flag = setting.flag(stage)
            value = getattr(args, _dest(flag), None) if flag else None
            if value is not None:
                given[stage][setting.name] = tuple(value) if isinstance(value, list) else value
    return given


def _with(config: StageConfig, values: dict[str, Any], stage: str) -> StageConfig:
    values = dict(values)
    if values.get("checkpoint_path") and "pretrained" not in values:
        values["pretrained"] = False  # local weights replace the recipe's timm ones
    with naming(stage):
        return config.replace(**values)


def _defaults(adapter: DataAdapter, stage: str, seed: StageConfig | None) -> dict[str, Any]:
    values = adapter.defaults.get(stage, {})
    return dict(values(seed) if callable(values) else values)


def _drop_vit_output_stride(config: StageConfig, given: dict[str, Any]) -> StageConfig:
    """A recipe's output stride is for CNNs: a ViT backbone not given one gets ``None``."""
    if config.output_stride is None or "output_stride" in given:
        return config
    import torch

    from seedkit.backbones import create_seed_model

    try:
        with torch.device("meta"):
            family = create_seed_model(config.backbone, 1, **config.timm_kwargs).family
    except SeedkitError:
        return config  # the stage check names the problem
    return config.replace(output_stride=None) if family == "vit" else config


def resolve(args: argparse.Namespace, adapter: DataAdapter) -> Command:
    """Every stage's config: defaults < adapter < recipe < ``--config`` < flags, validated."""
    stages = parse_stages(args.stages)
    given = _given(args)
    seed = _with(SeedStageConfig(), _defaults(adapter, SEEDS, None), SEEDS)
    recipe = given[SEEDS].get("recipe") or adapter.recipe
    if recipe:
        seed = apply_recipe(seed, recipe)
    if args.config:
        seed = load_config(args.config)
        if not isinstance(seed, SeedStageConfig):
            raise InvalidValueError("--config", "a stage-1 config.json", seed.STAGE)
    seed = _with(seed, given[SEEDS], SEEDS)
    with naming(SEEDS):
        seed = _drop_vit_output_stride(seed.validate(), given[SEEDS])
    out = Path(args.out or adapter.default_out(seed))
    variants = adapter.variants or {"": {}}
    seeds = {}
    for name, values in variants.items():
        config = _with(seed, values, SEEDS)
        folder = out / name if adapter.variants else adapter.seed_folder(out, config)
        seeds[name] = _with(config, {"out": str(folder)}, SEEDS)
    last = list(seeds.values())[-1]
    later: dict[str, StageConfig] = {SEEDS: last}
    derived = {
        PSEUDO_MASKS: lambda: {"seeds_dir": str(Path(last.out) / "seeds"),
                               "out": str(out / "pseudo_masks")},
        SEGMENTATION: lambda: {"mask_dir": str(Path(later[PSEUDO_MASKS].out) / "masks"),
                               "out": str(out / "segmentation")},
    }  # fmt: skip
    for stage, cls in ((PSEUDO_MASKS, PseudoMaskStageConfig), (SEGMENTATION, SegmentationStageConfig)):
        settings = settings_of(stage)
        values = {n: getattr(later[s.inherits(stage)], n) for n, s in settings.items() if s.inherits(stage)}
        values.update(_defaults(adapter, stage, last))
        values.update({n: getattr(last, n) for n, s in settings.items() if s.command})
        values.update(derived[stage]())
        later[stage] = _with(_with(cls(), values, stage), given[stage], stage)
    for config in [*seeds.values(), later[PSEUDO_MASKS], later[SEGMENTATION]]:
        with naming(config.STAGE):
            config.validate()
    return Command(stages, out, seeds, later[PSEUDO_MASKS], later[SEGMENTATION])


def _decide(
    stage: Stage, config: StageConfig, context: DistributedContext, voc_root: str,
    args: argparse.Namespace, produced: bool,
) -> Any:  # fmt: skip
    """Check a stage's data and decide what its folder will do (nothing is written)."""
    with naming(stage.name):
        stage.check_data(config, voc_root, produced)
        run = stage.run_folder(config, context, voc_root, produced=produced)
        return run.decide(resume=args.resume and has_run(config.out), overwrite=args.overwrite)


def _upstream(stage: Stage, config: StageConfig, context: DistributedContext, voc_root: str) -> None:
    """A stage this command does not run but reads from: it must hold a finished run of
    these settings."""
    number = NUMBERS[stage.name]
    hint = f"run stage {number} too (e.g. --stages {number},{number + 1}) or pass its settings"
    try:
        with naming(stage.name):
            plan = stage.run_folder(config, context, voc_root).decide()
    except RunConflictError as error:
        problem = (
            f"holds a stage-{number} run of other settings" if error.differences
            else f"holds no finished stage-{number} run of these settings ({error.problem})"
        )  # fmt: skip
        raise RunConflictError(error.path, problem, error.differences, hint) from None
    if plan.train:
        problem = f"holds no current stage-{number} run ({plan.note or 'not started'})"
        raise RunConflictError(config.out, problem, hint=hint)


def check_command(command: Command, context: DistributedContext, voc_root: str, args: Any) -> None:
    """Check every stage's data and decide every run folder before any stage acts.

    Raises:
        SeedkitError: the first problem, naming the flag or file.
    """
    stages = command.stages
    seed_plans = [
        _decide(SEED_STAGE, config, context, voc_root, args, False)
        for config in command.seeds.values()
    ] if 1 in stages else []  # fmt: skip
    if 2 not in stages and 3 not in stages:
        return
    pm, seg = command.pseudo_masks, command.segmentation
    if 1 not in stages:
        _upstream(SEED_STAGE, command.seed, context, voc_root)
    model_changes = bool(seed_plans) and seed_plans[-1].train
    seeds_change = model_changes or not seeds_current(
        command.seed, read_id_list(voc_root, pm.train_split)
    )
    if 2 in stages:
        pm_plan = _decide(PSEUDO_MASK_STAGE, pm, context, voc_root, args, seeds_change)
        masks_change = seeds_change or pm_plan.train or not _masks_current(pm, context, voc_root)
    else:
        _upstream(PSEUDO_MASK_STAGE, pm, context, voc_root)
        masks_change = False
    if 3 in stages:
        seed_model = str(Path(command.seed.out) / SEED_STAGE.model_file)
        produced = masks_change or (model_changes and seg.checkpoint_path == seed_model)
        _decide(SEGMENTATION_STAGE, seg, context, voc_root, args, produced)


def _masks_current(config: StageConfig, context: DistributedContext, voc_root: str) -> bool:
    run = PSEUDO_MASK_STAGE.run_folder(config, context, voc_root)
    run.record = run.read() or {}
    names = [f"{i}.png" for i in read_id_list(voc_root, config.train_split)]
    return run.artefact_current("masks", PSEUDO_MASK_STAGE.masks_fingerprint(config, run), names)


def _seed_threshold(command: Command, voc_root: str, given: dict[str, Any]) -> StageConfig:
    """Stage 2 at stage 1's best threshold (its crf / threshold methods), unless set."""
    pm = command.pseudo_masks
    if pm.method == "rw" or "seed_threshold" in given:
        return pm
    document, why = current_results(SEED_STAGE, command.seed, voc_root)
    if document is None:
        raise RunConflictError(
            command.seed.out, f"has no current stage-1 results ({why})",
            hint="run stage 1 (--stages 1,2), or pass --pm-seed-threshold",
        )  # fmt: skip
    return pm.replace(seed_threshold=document["seeds"]["threshold"])


def _run(stage: Stage, config: StageConfig, context: DistributedContext, voc_root: str,
         args: argparse.Namespace, adapter: DataAdapter) -> dict[str, Any] | None:  # fmt: skip
    resume = args.resume and has_run(config.out)
    if context.is_main:
        length = config.max_steps or config.epochs
        note = " (not started: starts now)" if args.resume and not resume else ""
        what = f"{config.backbone or config.architecture}, {length} " + (
            "steps" if config.max_steps else "epochs"
        ) if config.trains() else getattr(config, "method", "")  # fmt: skip
        print(f"\n[stage {NUMBERS[stage.name]}] {what} -> {config.out}{note}", flush=True)
    with naming(stage.name):
        return run_stage(
            stage, config, context, voc_root, resume=resume, overwrite=args.overwrite,
            stop_after_steps=args.stop_after_steps,
        )  # fmt: skip


def compose_results(command: Command, voc_root: str, prog: str) -> dict[str, Any]:
    """``OUT/results.json``: each stage's numbers while everything they came from is current."""
    document: dict[str, Any] = {}
    stale: dict[str, str] = {}
    seed_results = {}
    for name, config in command.seeds.items():
        found, why = current_results(SEED_STAGE, config, voc_root)
        if found is not None:
            seed_results[name] = found
        elif why != "not run":
            stale[f"seeds{f' ({name})' if name else ''}"] = why
    main = seed_results.get(list(command.seeds)[-1])
    if main is not None:  # stage 1's own entries (OUT/results.json may be its file)
        main = {k: v for k, v in main.items() if k not in (*STAGES[1:], "stale", "methods")}
        if Path(command.seed.out) == command.out:
            document.update(main)
        else:
            document.update({k: v for k, v in main.items() if k != "provenance"})
    if len(command.seeds) > 1:
        document["methods"] = seed_results
    for stage, config in ((PSEUDO_MASK_STAGE, command.pseudo_masks),
                          (SEGMENTATION_STAGE, command.segmentation)):  # fmt: skip
        found, why = current_results(stage, config, voc_root)
        if found is not None:
            document[stage.name] = found[stage.name]
        elif why != "not run":
            stale[stage.name] = why
    if stale:
        document["stale"] = stale
        for name, why in stale.items():
            number = NUMBERS.get(name.split(" ")[0], 1)
            print(f"{prog}: note: results.json leaves out {name}: {why}; rerun --stages {number}")
    return document


def run_command(args: argparse.Namespace, adapter: DataAdapter) -> int:
    """Run the stages of ``args`` on ``adapter``'s data: check all, then act; exit status.

    Errors are one line ``<prog>: error: ...`` naming the flag or file (status 2).
    """
    prog = adapter.prog
    context = None
    try:
        if args.stop_after_steps is not None and args.stop_after_steps < 1:
            raise InvalidValueError("--stop-after-steps", "an integer >= 1", args.stop_after_steps)
        command = resolve(args, adapter)
        context = init_distributed(command.seed.device)
        seed_model = str(Path(command.seed.out) / SEED_STAGE.model_file)
        for config in [*command.seeds.values(), command.pseudo_masks, command.segmentation]:
            stage = STAGE_OBJECTS[config.STAGE]
            if NUMBERS[stage.name] in command.stages:
                with naming(stage.name):
                    produced = getattr(config, "checkpoint_path", None) == seed_model
                    stage.check_settings(config, context, produced)
        if context.is_main:
            check_writable_directory(command.out)
        with locked(context, command.out):
            voc_root = adapter.prepare(command, context)
            command = command.located(voc_root)
            folders = [c.out for c in command.seeds.values()] if 1 in command.stages else []
            folders += [c.out for c, n in ((command.pseudo_masks, 2), (command.segmentation, 3))
                        if n in command.stages]  # fmt: skip
            if args.resume and not any(has_run(folder) for folder in folders):
                raise RunConflictError(
                    command.out,
                    "nothing to resume: no run has started here (no checkpoint.pt, no run.json)",
                    hint="run without --resume to start it",
                )
            check_command(command, context, voc_root, args)
            _act(command, context, voc_root, args, adapter)
    except PretrainedWeightsError as error:
        print(
            f"{prog}: error: {error.model_name}: could not load timm's pretrained weights "
            f"({error.reason}); run with --no-pretrained (random initialisation) or "
            "--checkpoint-path FILE (local weights), or point HF_HOME at a cache that has them",
            file=sys.stderr,
        )
        return 2
    except SeedkitError as error:
        print(f"{prog}: error: {named(error, SEEDS)}", file=sys.stderr)
        return 2
    finally:
        if context is not None:
            context.close()
    return 0


def _act(command: Command, context: DistributedContext, voc_root: str,
         args: argparse.Namespace, adapter: DataAdapter) -> None:  # fmt: skip
    prog, results = adapter.prog, {}
    if 1 in command.stages:
        for name, config in command.seeds.items():
            found = _run(SEED_STAGE, config, context, voc_root, args, adapter)
            if found is not None:
                results[name] = found
                print((Path(config.out) / "seeds_table.txt").read_text())
                for message in found["seeds"]["warnings"]:
                    print(f"{prog}: warning{f' [{name}]' if name else ''}: {message}", file=sys.stderr)
        if context.is_main and adapter.report is not None and results:
            adapter.report(results)
    if 2 in command.stages:
        pm = _seed_threshold(command, voc_root, _given(args)[PSEUDO_MASKS])
        with naming(SEEDS):
            ensure_seeds(command.seed, context, list_dataset(command.seed, voc_root, pm.train_split))
        found = _run(PSEUDO_MASK_STAGE, pm, context, voc_root, args, adapter)
        if found is not None and "miou" in found["pseudo_masks"]:
            print(f"pseudo-mask mIoU on {pm.eval_split}: {found['pseudo_masks']['miou']:.2f}")
    if 3 in command.stages:
        found = _run(SEGMENTATION_STAGE, command.segmentation, context, voc_root, args, adapter)
        if found is not None:
            print((Path(command.segmentation.out) / "table.txt").read_text(), flush=True)
    if context.is_main:
        document = compose_results(command, voc_root, prog)
        summary = command.out / "results.json"
        atomic_write(summary, (json.dumps(document, indent=2) + "\n").encode())
        print(f"\nresults: {summary}")
