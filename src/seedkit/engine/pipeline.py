"""The example scripts' driver: flags from the settings, every stage checked before any acts.

``examples/train_voc.py`` and ``examples/train_coco.py`` build a :class:`DataAdapter`
and call :func:`run_command`: it resolves and validates every stage's settings (one
flag per setting of :data:`~seedkit.engine.SETTINGS`), builds every network on the
``meta`` device, locks ``--out``, prepares the data, checks every file and lets every
run folder decide; only then it runs the stages and writes ``OUT/results.json`` with
each stage's numbers while everything they came from is unchanged.
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

from seedkit.data import read_id_list
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
from seedkit.engine.pseudo_mask_stage import PSEUDO_MASK_STAGE
from seedkit.engine.run import has_run
from seedkit.engine.seed_stage import SEED_STAGE, ensure_seeds, list_dataset, seeds_current
from seedkit.engine.segmentation_stage import SEGMENTATION_STAGE
from seedkit.engine.stages import Stage, current_results, locked, run_stage
from seedkit.errors import (
    DataFileError,
    InvalidValueError,
    PretrainedWeightsError,
    RunConflictError,
    SeedkitError,
)
from seedkit.files import atomic_write, check_writable_directory

__all__ = ["CommandParser", "DataAdapter", "add_command_arguments", "parse_stages", "run_command"]

STAGE_OBJECTS = dict(zip(STAGES, (SEED_STAGE, PSEUDO_MASK_STAGE, SEGMENTATION_STAGE), strict=True))
NUMBERS = {SEEDS: 1, PSEUDO_MASKS: 2, SEGMENTATION: 3}
COMMAND_FLAGS = {"resume": "--resume", "overwrite": "--overwrite", "out": "--out"}


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


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _argument(setting: Any, stage: str) -> dict[str, Any]:
    """The argparse arguments of a setting's flag (values are checked by the setting)."""
    choices = [str(c) for c in setting.choices or () if c is not None]
    default = "as stage 1" if setting.inherits(stage) else f"default {setting.default_for(stage)}"
    text = "; ".join([setting.help, *([", ".join(choices)] if choices else []), default])
    kwargs: dict[str, Any] = {"help": text.replace("%", "%%"), "default": None}
    kind = setting.type
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind in ("scales", "pair", "jitter"):
        nargs = {"scales": "+", "pair": 2, "jitter": 4}[kind]
        kwargs.update(type=int if kind == "pair" else float, nargs=nargs, metavar="X")
    else:
        types = {int: (int, "N"), float: (float, "X"), "json": (_json_object, "JSON")}
        kwargs["type"], kwargs["metavar"] = types.get(kind, (str, "NAME"))
    return kwargs


def add_command_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per setting (:data:`~seedkit.engine.SETTINGS`) and the command's own flags.

    Stage 1's settings have plain flags, stage 2's ``--pm-...`` and stage 3's
    ``--seg-...`` (a few keep older names); a setting of the whole command (seed,
    data, workers...) has one flag for every stage. ``skip`` leaves settings out.
    """
    parser.add_argument("--stages", default="1", help="stages to run: 1 seeds, 2 pseudo masks, "
                        "3 segmentation (e.g. 1,2,3); each reads the previous stage's files")
    parser.add_argument("--out", help="the command's folder (the stages write inside it)")
    parser.add_argument("--config", help="a stage-1 config.json of an earlier run (flags override)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the runs in OUT (also a finished one, with more steps)")
    again.add_argument("--overwrite", action="store_true", help="replace the runs in OUT")
    parser.add_argument("--stop-after-steps", type=int, metavar="N",
                        help="stop training after N steps as if interrupted (to try --resume)")
    groups = {key: parser.add_argument_group(title) for key, title in (
        ("command", "every stage"), (SEEDS, "stage 1: seeds"),
        (PSEUDO_MASKS, "stage 2: pseudo masks"), (SEGMENTATION, "stage 3: segmentation"),
    )}  # fmt: skip
    seen: set[str] = set()
    for setting in SETTINGS:
        for stage in setting.stages if setting.name not in skip else ():
            flag = setting.flag(stage)
            if flag is not None and flag not in seen:
                seen.add(flag)
                group = groups["command" if setting.command else stage]
                group.add_argument(flag, *setting.aliases.get(stage, ()), dest=_dest(flag),
                                   **_argument(setting, stage))  # fmt: skip


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def flag_of(stage: str, name: str) -> str:
    """The flag of setting ``name`` in ``stage`` (a setting without one: ``stage-N name``)."""
    setting = settings_of(stage).get(name)
    flag = setting.flag(stage) if setting is not None else None
    if name.startswith("--"):
        return name
    return flag or COMMAND_FLAGS.get(name) or f"stage-{NUMBERS[stage]} {name}"


def named(error: SeedkitError, stage: str) -> SeedkitError:
    """The same error with the settings it names spelled as ``stage``'s flags."""
    if isinstance(error, RunConflictError):
        renamed = [(flag_of(stage, n), old, new) for n, old, new in error.differences]
        hint = error.hint
        for name in {*settings_of(stage), *COMMAND_FLAGS}:
            hint = hint.replace(f"`{name}`", f"`{flag_of(stage, name)}`")
        return RunConflictError(error.path, error.problem, renamed, hint)
    if isinstance(error, DataFileError) and error.what.split(" ")[0] in settings_of(stage):
        name, _, rest = error.what.partition(" ")
        return DataFileError(error.path, f"{flag_of(stage, name)} {rest}")
    if type(error) is InvalidValueError and not error.argument.startswith("--"):
        parts = [flag_of(stage, part.strip()) for part in error.argument.split("/")]
        return InvalidValueError(" / ".join(parts), error.expected, error.actual)
    return error


@contextlib.contextmanager
def naming(stage: str) -> Iterator[None]:
    """Re-raise the errors of ``stage``'s settings with their flags."""
    try:
        yield
    except (InvalidValueError, RunConflictError, DataFileError) as error:
        raise named(error, stage) from None


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
        """The stage-1 run the later stages start from (the last variant)."""
        return list(self.seeds.values())[-1]



@dataclass
class DataAdapter:
    """Where a command's VOC-layout data comes from, and the defaults that go with it.

    Attributes:
        prog: the script's name (for messages).
        prepare: ``prepare(command, context) -> voc_root`` makes the data once (with
            ``--out`` locked, after every setting was checked).
        defaults: per stage, settings below the recipe and the flags (or a function of
            the resolved stage-1 config returning them).
        recipe: the recipe applied when ``--recipe`` is not given.
        variants: stage-1 runs side by side, ``{name: settings}`` in ``OUT/name`` (the
            later stages start from the last); empty: one run, in ``seed_folder``.
        report: prints the stage-1 results of the variants (the demo's table).
        default_out: ``--out`` when it is not given, from the stage-1 config.
    """

    prog: str
    prepare: Callable[[Command, DistributedContext], str]
    defaults: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed_folder: Callable[[Path, StageConfig], Path] = lambda out, config: out
    report: Callable[[dict[str, Any]], None] | None = None
    default_out: Callable[[StageConfig], str] = lambda config: str(config.out)


def _given(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings the command line gives, per stage."""
    given: dict[str, dict[str, Any]] = {stage: {} for stage in STAGES}
    for setting in SETTINGS:
        for stage in setting.stages:
            flag = setting.flag(stage)
            value = getattr(args, _dest(flag), None) if flag else None
            if value is not None:
                given[stage][setting.name] = tuple(value) if isinstance(value, list) else value
    return given


def _with(config: StageConfig, values: dict[str, Any]) -> StageConfig:
    if values.get("checkpoint_path") and "pretrained" not in values:
        values = {**values, "pretrained": False}  # local weights replace the recipe's timm ones
    with naming(config.STAGE):
        return config.replace(**values)


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
        return config  # the stage's check names the problem
    return config.replace(output_stride=None) if family == "vit" else config


def resolve(args: argparse.Namespace, adapter: DataAdapter) -> Command:
    """Every stage's config: defaults < adapter < recipe < ``--config`` < flags, validated."""
    stages, given = parse_stages(args.stages), _given(args)
    seed = _with(SeedStageConfig(), adapter.defaults.get(SEEDS, {}))
    recipe = given[SEEDS].get("recipe") or adapter.recipe
    seed = apply_recipe(seed, recipe) if recipe else seed
    if args.config:
        seed = load_config(args.config)
        if not isinstance(seed, SeedStageConfig):
            raise InvalidValueError("--config", "a stage-1 config.json", seed.STAGE)
    seed = _with(seed, given[SEEDS])
    with naming(SEEDS):
        seed = _drop_vit_output_stride(seed.validate(), given[SEEDS])
    out = Path(args.out or adapter.default_out(seed))
    seeds = {}
    for name, values in (adapter.variants or {"": {}}).items():
        config = _with(seed, values)
        folder = out / name if adapter.variants else adapter.seed_folder(out, config)
        seeds[name] = _with(config, {"out": str(folder)})
    resolved: dict[str, StageConfig] = {SEEDS: seeds[name]}
    derived = {
        PSEUDO_MASKS: lambda: {"seeds_dir": str(Path(resolved[SEEDS].out) / "seeds")},
        SEGMENTATION: lambda: {"mask_dir": str(Path(resolved[PSEUDO_MASKS].out) / "masks")},
    }
    classes = (PseudoMaskStageConfig, SegmentationStageConfig)
    for stage, cls in zip(STAGES[1:], classes, strict=True):
        settings = settings_of(stage)
        values = {n: getattr(resolved[s.inherits(stage)], n)
                  for n, s in settings.items() if s.inherits(stage)}  # fmt: skip
        defaults = adapter.defaults.get(stage, {})
        values.update(defaults(resolved[SEEDS]) if callable(defaults) else defaults)
        values.update({n: getattr(resolved[SEEDS], n) for n, s in settings.items() if s.command})
        values.update(derived[stage](), out=str(out / stage))
        resolved[stage] = _with(_with(cls(), values), given[stage])
    for config in [*seeds.values(), resolved[PSEUDO_MASKS], resolved[SEGMENTATION]]:
        with naming(config.STAGE):
            config.validate()
    return Command(stages, out, seeds, resolved[PSEUDO_MASKS], resolved[SEGMENTATION])


def _decide(stage: Stage, config: Any, context: Any, voc_root: str, args: Any, produced: bool):
    """Check a stage's data and decide what its folder will do (nothing is written)."""
    with naming(stage.name):
        stage.check_data(config, voc_root, produced)
        run = stage.run_folder(config, context, voc_root, produced=produced)
        return run.decide(resume=args.resume and has_run(config.out), overwrite=args.overwrite)


def _upstream(stage: Stage, config: Any, context: Any, voc_root: str) -> None:
    """A stage the command reads from but does not run: it must hold a current, finished run."""
    number = NUMBERS[stage.name]
    hint = f"run stage {number} too (e.g. --stages {number},{number + 1}) or pass its settings"
    try:
        with naming(stage.name):
            plan = stage.run_folder(config, context, voc_root).decide()
    except RunConflictError as error:
        problem = f"holds no finished stage-{number} run of these settings ({error.problem})"
        if error.differences:
            problem = f"holds a stage-{number} run of other settings"
        raise RunConflictError(error.path, problem, error.differences, hint) from None
    if plan.train:
        problem = f"holds no current stage-{number} run ({plan.note or 'not started'})"
        raise RunConflictError(config.out, problem, hint=hint)


def _seed_threshold(command: Command, voc_root: str, given: dict[str, Any], strict: bool) -> Any:
    """Stage 2's config at stage 1's best threshold (its crf / threshold methods), unless set."""
    pm = command.pseudo_masks
    if pm.method == "rw" or "seed_threshold" in given:
        return pm
    document, why = current_results(SEED_STAGE, command.seed, voc_root)
    if document is not None:
        return pm.replace(seed_threshold=document["seeds"]["threshold"])
    if strict:
        hint = "run stage 1 (--stages 1,2), or pass --pm-seed-threshold"
        problem = f"has no current stage-1 results ({why})"
        raise RunConflictError(command.seed.out, problem, hint=hint)
    return pm


def check_command(command: Command, context: Any, voc_root: str, args: Any) -> Command:
    """Check every stage's data and decide every run folder before any stage acts.

    Returns the command with stage 2 at stage 1's best threshold where it is known.
    """
    stages, pm, seg = command.stages, command.pseudo_masks, command.segmentation
    plans = [_decide(SEED_STAGE, config, context, voc_root, args, False)
             for config in command.seeds.values()] if 1 in stages else []  # fmt: skip
    if 2 not in stages and 3 not in stages:
        return command
    if 1 not in stages:
        _upstream(SEED_STAGE, command.seed, context, voc_root)
    retrained = bool(plans) and plans[-1].train
    pm = _seed_threshold(command, voc_root, _given(args)[PSEUDO_MASKS], strict=False)
    pm_ids = read_id_list(voc_root, pm.train_split)
    seeds_change = retrained or not seeds_current(command.seed, pm_ids)
    masks_change = False
    if 2 in stages:
        plan = _decide(PSEUDO_MASK_STAGE, pm, context, voc_root, args, seeds_change)
        masks_change = seeds_change or plan.train or not _masks_current(pm, context, voc_root)
    else:
        _upstream(PSEUDO_MASK_STAGE, pm, context, voc_root)
    if 3 in stages:
        from_seeds = seg.checkpoint_path == str(Path(command.seed.out) / SEED_STAGE.model_file)
        produced = masks_change or (retrained and from_seeds)
        _decide(SEGMENTATION_STAGE, seg, context, voc_root, args, produced)
    return Command(stages, command.out, command.seeds, pm, seg)


def _masks_current(config: Any, context: Any, voc_root: str) -> bool:
    run = PSEUDO_MASK_STAGE.run_folder(config, context, voc_root)
    run.record = run.read() or {}
    names = [f"{i}.png" for i in read_id_list(voc_root, config.train_split)]
    return run.artefact_current("masks", PSEUDO_MASK_STAGE.masks_fingerprint(config, run), names)


def _run(stage: Stage, config: Any, context: Any, voc_root: str, args: Any) -> dict | None:
    resume = args.resume and has_run(config.out)
    if context.is_main:
        unit = "steps" if config.max_steps else "epochs"
        what = (f"{config.backbone or config.architecture}, {config.max_steps or config.epochs} "
                f"{unit}" if config.trains() else config.method)  # fmt: skip
        note = " (not started: starts now)" if args.resume and not resume else ""
        print(f"\n[stage {NUMBERS[stage.name]}] {what} -> {config.out}{note}", flush=True)
    with naming(stage.name):
        return run_stage(stage, config, context, voc_root, resume, args.overwrite,
                         stop_after_steps=args.stop_after_steps)  # fmt: skip


def compose_results(command: Command, voc_root: str, prog: str) -> dict[str, Any]:
    """``OUT/results.json``: each stage's numbers while everything they came from is current."""
    document: dict[str, Any] = {}
    stale: dict[str, str] = {}
    found = {}
    for name, config in command.seeds.items():
        found[name], why = current_results(SEED_STAGE, config, voc_root)
        if found[name] is None and why != "not run":
            stale["seeds" + (f" ({name})" if name else "")] = why
    if (main := found[list(command.seeds)[-1]]) is not None:  # stage 1's own entries
        own = Path(command.seed.out) == command.out  # OUT/results.json is stage 1's file
        skip = (*STAGES[1:], "stale", "methods", *(() if own else ("provenance",)))
        document.update({k: v for k, v in main.items() if k not in skip})
    if len(command.seeds) > 1:
        document["methods"] = {name: doc for name, doc in found.items() if doc is not None}
    for stage, config in ((PSEUDO_MASK_STAGE, command.pseudo_masks),
                          (SEGMENTATION_STAGE, command.segmentation)):  # fmt: skip
        results, why = current_results(stage, config, voc_root)
        if results is not None:
            document[stage.name] = results[stage.name]
        elif why != "not run":
            stale[stage.name] = why
    for name, why in stale.items():
        number = NUMBERS.get(name.split(" ")[0], 1)
        print(f"{prog}: note: results.json leaves out {name}: {why}; rerun --stages {number}")
    return {**document, "stale": stale} if stale else document


def run_command(args: argparse.Namespace, adapter: DataAdapter) -> int:
    """Run the stages of ``args`` on ``adapter``'s data: check all, then act; the exit status.

    Errors are one line ``<prog>: error: ...`` naming the flag or file (status 2).
    """
    prog, context = adapter.prog, None
    try:
        if args.stop_after_steps is not None and args.stop_after_steps < 1:
            raise InvalidValueError("--stop-after-steps", "an integer >= 1", args.stop_after_steps)
        command = resolve(args, adapter)
        context = init_distributed(command.seed.device)
        seed_model = str(Path(command.seed.out) / SEED_STAGE.model_file)
        for config in [*command.seeds.values(), command.pseudo_masks, command.segmentation]:
            if NUMBERS[config.STAGE] in command.stages:
                with naming(config.STAGE):
                    produced = getattr(config, "checkpoint_path", None) == seed_model
                    STAGE_OBJECTS[config.STAGE].check_settings(config, context, produced)
        if context.is_main:
            check_writable_directory(command.out)
        with locked(context, command.out):
            voc_root = adapter.prepare(command, context)
            for config in (*command.seeds.values(), command.pseudo_masks, command.segmentation):
                config.voc_root = voc_root  # recorded in config.json
            folders = [c.out for c in command.seeds.values()] if 1 in command.stages else []
            folders += [c.out for c in (command.pseudo_masks, command.segmentation)
                        if NUMBERS[c.STAGE] in command.stages]  # fmt: skip
            if args.resume and not any(has_run(folder) for folder in folders):
                raise RunConflictError(
                    command.out, "nothing to resume: no run has started here (no checkpoint.pt, "
                    "no run.json)", hint="run without --resume to start it",
                )  # fmt: skip
            _act(check_command(command, context, voc_root, args), context, voc_root, args, adapter)
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


def _act(command: Command, context: Any, voc_root: str, args: Any, adapter: DataAdapter) -> None:
    prog, results = adapter.prog, {}
    for name, config in command.seeds.items() if 1 in command.stages else ():
        if (found := _run(SEED_STAGE, config, context, voc_root, args)) is not None:
            results[name] = found
            print((Path(config.out) / "seeds_table.txt").read_text())
            for message in found["seeds"]["warnings"]:
                print(f"{prog}: warning{f' [{name}]' if name else ''}: {message}", file=sys.stderr)
    if context.is_main and adapter.report is not None and results:
        adapter.report(results)
    if 2 in command.stages:
        pm = _seed_threshold(command, voc_root, _given(args)[PSEUDO_MASKS], strict=True)
        with naming(SEEDS):  # the stage-1 seeds of stage 2's list
            dataset = list_dataset(command.seed, voc_root, pm.train_split)
            ensure_seeds(command.seed, context, dataset)
        found = _run(PSEUDO_MASK_STAGE, pm, context, voc_root, args)
        if found is not None and "miou" in found["pseudo_masks"]:
            print(f"pseudo-mask mIoU on {pm.eval_split}: {found['pseudo_masks']['miou']:.2f}")
    seg = command.segmentation
    if 3 in command.stages and _run(SEGMENTATION_STAGE, seg, context, voc_root, args) is not None:
        print((Path(seg.out) / "table.txt").read_text(), flush=True)
    if context.is_main:
        document = compose_results(command, voc_root, prog)
        atomic_write(command.out / "results.json", (json.dumps(document, indent=2) + "\n").encode())
        print(f"\nresults: {command.out / 'results.json'}")
