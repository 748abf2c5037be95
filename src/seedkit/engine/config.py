"""Stage configurations: shared parts, one vocabulary, one ``validate`` / ``save`` / ``load``.

A stage config is a flat dataclass composed of the shared parts below (data,
model, input size, optimisation, run) plus the stage's own fields. A setting has
one name in every stage (``backbone``, ``checkpoint_path``, ``train_split``,
``max_steps``...), is checked by one rule, and falls in one of these groups,
which decide what a rerun or a ``--resume`` may change (docs/reproducing.rst):

- *training* settings: they determine the trained model; a resumed run must keep
  them, and they make the run's fingerprint;
- the *length* (``max_steps`` / ``epochs``): may grow on resume;
- *monitoring* (``log_every``, ``checkpoint_every``, ``eval_every``) and
  *after-training* settings (evaluation list, inference scales...): may change
  on resume; after-training ones make the fingerprints of the derived files;
- *operational* settings (``out``, ``num_workers``, ``device``, ``progress``...):
  never change a number.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from seedkit.errors import DataError, DataFileError, InvalidValueError
from seedkit.reference import SCALES

__all__ = [
    "RECIPES",
    "DataFields",
    "InputFields",
    "ModelFields",
    "OptimizationFields",
    "RunFields",
    "SeedStageConfig",
    "StageConfig",
    "apply_recipe",
    "load_config",
    "save_config",
]


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise InvalidValueError(name, expected, value)


def _check_number(
    name: str, value: Any, minimum: float, strict: bool = False, allow_none: bool = False
) -> None:
    if value is None and allow_none:
        return
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > minimum if strict else value >= minimum)
    )
    if not ok:
        relation = ">" if strict else ">="
        expected = f"a finite number {relation} {minimum}" + (" or None" if allow_none else "")
        raise InvalidValueError(name, expected, value)


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise InvalidValueError(name, "one of " + ", ".join(map(str, allowed)), value)


@dataclass
class DataFields:
    """Which images a stage reads: the dataset, its training and evaluation lists."""

    voc_root: str | None = None
    train_split: str = "train_aug"
    eval_split: str | None = "train"
    num_classes: int = 20
    # evaluate only the first N ids of the evaluation list (None: all of them)
    eval_limit: int | None = None

    def _check_data(self) -> None:
        _check_int("num_classes", self.num_classes, 1)
        _check_int("eval_limit", self.eval_limit, 1, allow_none=True)
        if not isinstance(self.train_split, str) or not self.train_split:
            raise InvalidValueError("train_split", "a list name or file", self.train_split)


@dataclass
class ModelFields:
    """The trained network's timm backbone and where its starting weights come from."""

    backbone: str = "resnet18"
    pretrained: bool = False
    checkpoint_path: str | None = None
    output_stride: int | None = None
    # Extra keyword arguments of ``timm.create_model`` (e.g. ``{"patch_size": 8}`` or
    # ``{"drop_path_rate": 0.1}``); ``output_stride`` has its own field.
    timm_kwargs: dict[str, Any] = field(default_factory=dict)

    def _check_model(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise InvalidValueError("backbone", "a timm model name", self.backbone)
        _check_choice("output_stride", self.output_stride, (None, 8, 16, 32))
        if not isinstance(self.timm_kwargs, dict) or not all(
            isinstance(key, str) for key in self.timm_kwargs
        ):
            raise InvalidValueError("timm_kwargs", "a dict with string keys", self.timm_kwargs)
        reserved = sorted(
            set(self.timm_kwargs) & {"output_stride", "num_classes", "pretrained", "model_name"}
        )
        if reserved:
            raise InvalidValueError(
                "timm_kwargs", "no keys that have their own setting", ", ".join(reserved)
            )


@dataclass
class InputFields:
    """Training crops: side of the square crop and the range of the random long side."""

    image_size: int = 224
    resize_long: tuple[int, int] | None = None

    def _check_input(self) -> None:
        _check_int("image_size", self.image_size, 1)
        if self.resize_long is not None:
            values = tuple(self.resize_long)
            if (
                len(values) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
                or not 1 <= values[0] <= values[1]
            ):
                raise InvalidValueError(
                    "resize_long", "two integers (low, high) with 1 <= low <= high", values
                )


@dataclass
class OptimizationFields:
    """The optimiser, schedule and step arithmetic of the training loop."""

    # global batch per optimiser step (over processes and accumulated micro-batches)
    batch_size: int = 8
    epochs: int | None = None
    max_steps: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "poly"
    # linear warm-up: steps, or epochs when warmup_steps is 0
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    head_lr_mult: float = 10.0
    grad_accum: int = 1
    amp: str = "auto"
    grad_clip: float | None = None

    def _check_optimization(self, trains: bool = True) -> None:
        _check_choice("optimizer", self.optimizer, ("sgd", "adamw"))
        _check_choice("schedule", self.schedule, ("poly", "cosine", "constant"))
        _check_choice("amp", self.amp, ("auto", "on", "off"))
        if trains and (self.epochs is None) == (self.max_steps is None):
            raise InvalidValueError(
                "epochs / max_steps", "exactly one of them", (self.epochs, self.max_steps)
            )
        _check_int("epochs", self.epochs, 1, allow_none=True)
        _check_int("max_steps", self.max_steps, 1, allow_none=True)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("grad_accum", self.grad_accum, 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_number("warmup_epochs", self.warmup_epochs, 0.0)
        _check_number("lr", self.lr, 0.0, strict=True)
        _check_number("weight_decay", self.weight_decay, 0.0)
        _check_number("head_lr_mult", self.head_lr_mult, 0.0, strict=True)
        _check_number("grad_clip", self.grad_clip, 0.0, strict=True, allow_none=True)
        if not (
            isinstance(self.momentum, (int, float))
            and not isinstance(self.momentum, bool)
            and 0.0 <= self.momentum < 1.0
        ):
            raise InvalidValueError("momentum", "a number in [0, 1)", self.momentum)


@dataclass
class RunFields:
    """Where a run writes and how it reports; none of these change a number."""

    out: str = "runs/seed"
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    checkpoint_every: int = 200
    log_every: int = 10
    tensorboard: bool = False
    progress: bool = True

    def _check_run(self) -> None:
        _check_int("seed", self.seed, 0)
        _check_int("num_workers", self.num_workers, 0)
        _check_int("checkpoint_every", self.checkpoint_every, 1)
        _check_int("log_every", self.log_every, 1)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu") or self.device.startswith("cuda")
        ):
            raise InvalidValueError("device", "'auto', 'cpu' or 'cuda[:N]'", self.device)
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
            raise InvalidValueError("out", "a folder path", self.out)


@dataclass
class StageConfig(DataFields, ModelFields, InputFields, OptimizationFields, RunFields):
    """Base of the three stage configs: the shared parts and their one ``validate``.

    Subclasses set :attr:`STAGE`, their own fields, :attr:`AFTER_TRAINING` (settings
    used only after training) and :attr:`INPUT_PATHS` (folders or files whose
    *content*, not their path, identifies the run), and add checks in
    :meth:`check_stage`.
    """

    STAGE: ClassVar[str] = "stage"
    #: Never change a number: where to write, how fast, what to show.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset(
        {"out", "num_workers", "device", "progress", "tensorboard", "voc_root", "recipe"}
    )
    #: What the training loop reports; may change on resume.
    MONITORING: ClassVar[frozenset[str]] = frozenset(
        {"log_every", "checkpoint_every", "eval_every"}
    )
    #: The schedule's length; may grow on resume.
    LENGTH: ClassVar[frozenset[str]] = frozenset({"max_steps", "epochs"})
    AFTER_TRAINING: ClassVar[frozenset[str]] = frozenset({"eval_split", "eval_limit"})
    INPUT_PATHS: ClassVar[frozenset[str]] = frozenset({"checkpoint_path"})

    def trains(self) -> bool:
        """Whether this configuration trains a network (stage 2's ``"crf"`` does not)."""
        return True

    def check_stage(self) -> None:
        """The stage's own checks (none here)."""

    def validate(self) -> StageConfig:
        """Check every field of every part; return ``self``.

        Raises:
            InvalidValueError: naming the field, what it expects and what it got.
        """
        self._check_data()
        self._check_model()
        self._check_input()
        self._check_optimization(trains=self.trains())
        self._check_run()
        self.check_stage()
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: object = "config") -> StageConfig:
        """Build a config from :meth:`to_dict` output (unknown keys are an error)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise DataError(source, f"only {cls.__name__} fields", f"unknown keys {unknown}")
        values = dict(values)
        for name, value in values.items():
            if isinstance(value, list) and "tuple" in str(known[name].type):
                values[name] = tuple(value)
        return cls(**values)

    def training_fields(self) -> dict[str, Any]:
        """The settings that determine the trained network (length included)."""
        skip = self.OPERATIONAL | self.MONITORING | self.AFTER_TRAINING | self.INPUT_PATHS
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def recorded_fields(self) -> dict[str, Any]:
        """Every setting but the operational ones (what a rerun must match)."""
        skip = self.OPERATIONAL | self.INPUT_PATHS
        return {k: v for k, v in self.to_dict().items() if k not in skip}


@dataclass
class SeedStageConfig(StageConfig):
    """Everything that determines a seed-stage run; saved as ``OUT/config.json``.

    ``None`` in a field means "derive it": from the backbone family's preset
    (temperatures, consistency weight) or from the other fields (learning rate,
    resize range). The resolved values are what gets saved.
    """

    STAGE: ClassVar[str] = "seeds"
    AFTER_TRAINING: ClassVar[frozenset[str]] = frozenset(
        {"eval_split", "eval_limit", "cam_scales", "seed_temperature", "max_threshold"}
        | {"num_overlays", "seed_format"}
    )

    method: str = "usage"
    # The seed model's head (create_seed_model's ``head``): "cam" (1x1-conv CAM classifier)
    # or "mct" (one class token per class + patch-CAM head, MCTformer-V2; ViTs only).
    head: str = "cam"
    # augmentation
    color_jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)
    # USAGE
    temperature: float | None = None
    scale: str = "std"
    consistency_weight: float | None = None
    # The consistency term's ramp, as fractions of the run (None: the preset): weight 0
    # until ``consistency_start``, then a sigmoid ramp over ``consistency_ramp``.
    consistency_start: float | None = None
    consistency_ramp: float | None = None
    teacher_temperature: float | None = None
    consistency_temperature: float | None = None
    consistency_scale: str | None = None
    distance: str = "kl"
    normalize_consistency: bool = False
    # None: STRONG_DROP / WEAK_DROP while the consistency term is on, 0 (no network
    # adjustment) when its weight is 0 -- the adjusted views exist for that term.
    student_drop: float | None = None
    teacher_drop: float | None = None
    ema_momentum: float = 0.999
    ema_schedule: str | None = "cosine"
    # inference and evaluation
    cam_scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    seed_temperature: float | None = None
    seed_format: str = "psa"  # "psa" (psa / SEAM / MCTformer) or "irn" (IRN's dict)
    max_threshold: float = 0.59
    num_overlays: int = 4
    # Score the seeds of the evaluation list every N training steps (one scale + flip;
    # ``eval`` records in log.jsonl, the teacher's too for USAGE runs); None: never.
    eval_every: int | None = None
    recipe: str | None = None

    def check_stage(self) -> None:
        """Choices and ranges of the seed stage's own fields."""
        choices = {
            "method": ("usage", "cam"),
            "head": ("cam", "mct"),
            "scale": SCALES,
            "consistency_scale": (None, *SCALES),
            "distance": ("kl", "js", "l1"),
            "seed_format": ("psa", "irn"),
            "ema_schedule": (None, "constant", "cosine"),
        }
        for name, allowed in choices.items():
            _check_choice(name, getattr(self, name), allowed)
        if self.eval_split is None:
            raise InvalidValueError("eval_split", "a list name or file", None)
        for name in ("student_drop", "teacher_drop"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise InvalidValueError(name, "a ratio in [0, 1)", value)
        for name in ("consistency_start", "consistency_ramp"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise InvalidValueError(name, "a fraction of the run in [0, 1]", value)
        for name in ("temperature", "teacher_temperature", "consistency_temperature"):
            _check_number(name, getattr(self, name), 0.0, strict=True, allow_none=True)
        _check_number("seed_temperature", self.seed_temperature, 0.0, strict=True, allow_none=True)
        _check_number("consistency_weight", self.consistency_weight, 0.0, allow_none=True)
        _check_int("eval_every", self.eval_every, 1, allow_none=True)
        _check_int("num_overlays", self.num_overlays, 0)
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise InvalidValueError("ema_momentum", "a number in [0, 1]", self.ema_momentum)
        if not 0.0 <= self.max_threshold < 1.0:
            raise InvalidValueError("max_threshold", "a threshold in [0, 1)", self.max_threshold)
        if not self.cam_scales or not all(
            isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in self.cam_scales
        ):
            raise InvalidValueError("cam_scales", "one or more scales > 0", self.cam_scales)
        if self.color_jitter is not None and len(self.color_jitter) != 4:
            raise InvalidValueError(
                "color_jitter", "(brightness, contrast, saturation, hue)", self.color_jitter
            )


# MCTformer's training: DeiT-S, AdamW lr 5e-4 x batch / 512, wd 0.05, cosine, 5 warm-up
# epochs, 60 epochs.
_MCTFORMER: dict[str, Any] = {
    "backbone": "deit_small_patch16_224",
    "optimizer": "adamw",
    "lr": 5e-4 * 64 / 512,
    "weight_decay": 0.05,
    "schedule": "cosine",
    "warmup_epochs": 5,
    "epochs": 60,
    "batch_size": 64,
    "image_size": 224,
    "resize_long": (224, 448),
    "head_lr_mult": 1.0,
    "pretrained": True,
}
# MCTformer-V2: its DeiT-S with one class token per class and a patch-CAM head
# (docs/mctformer.rst). Seeds: class attention x patch CAM, refined by attention
# affinity, at scale 1.0 + flip (MCTformer's published command). Stochastic depth 0.1
# is MCTformer's default; padding lets images of any size through the 16-pixel patches.
_MCTFORMER_V2: dict[str, Any] = {
    **_MCTFORMER,
    "head": "mct",
    "timm_kwargs": {"drop_path_rate": 0.1, "dynamic_img_pad": True},
    "cam_scales": (1.0,),
}

# Reference settings (the recipe table of docs/reproducing.rst). Learning rates scale
# with the batch as the codebases do; `lr` here is the value at the recipe's own batch size.
RECIPES: dict[str, dict[str, Any]] = {
    # MCTformer: its DeiT-S with one class token and a patch-token CAM head.
    "mctformer-deit-s": dict(_MCTFORMER),
    # MCTformer-V2 (docs/mctformer.rst): MCTformer's own losses (class tokens + patch CAMs).
    "mctformer-v2": {**_MCTFORMER_V2, "method": "cam"},
    # The same with USAGE's terms (the ViT presets) on the patch CAMs; class-token loss kept.
    "mctformer-v2-usage": {**_MCTFORMER_V2, "method": "usage"},
    # IRN / psa style ResNet-50: SGD poly, output stride 16, 512 crops, 5 epochs.
    "irn-resnet50": {
        "backbone": "resnet50",
        "output_stride": 16,
        "optimizer": "sgd",
        "lr": 0.1,
        "weight_decay": 1e-4,
        "schedule": "poly",
        "epochs": 5,
        "batch_size": 16,
        "image_size": 512,
        "resize_long": (320, 640),
        "head_lr_mult": 10.0,
        "pretrained": True,
    },
    # SEAM / psa style ResNet: SGD poly lr 0.01, wd 5e-4, 448 crops, 8 epochs.
    "seam-resnet50": {
        "backbone": "resnet50",
        "output_stride": 8,
        "optimizer": "sgd",
        "lr": 0.01,
        "weight_decay": 5e-4,
        "schedule": "poly",
        "epochs": 8,
        "batch_size": 8,
        "image_size": 448,
        "resize_long": (448, 768),
        "head_lr_mult": 10.0,
        "pretrained": True,
    },
    # The built-in demo: from scratch, small images, a few minutes on a 2-core CPU.
    "demo": {
        "backbone": "resnet18",
        "output_stride": 16,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "warmup_steps": 20,
        "max_steps": 240,
        "batch_size": 16,
        "image_size": 112,
        "resize_long": (96, 160),
        "head_lr_mult": 1.0,
        "ema_momentum": 0.99,
        "cam_scales": (1.0, 0.5, 1.5),
        "checkpoint_every": 100,
        "num_workers": 0,
        "pretrained": False,
    },
}


def apply_recipe(config: SeedStageConfig, recipe: str) -> SeedStageConfig:
    """Return a copy of ``config`` with a named recipe's values applied."""
    if recipe not in RECIPES:
        raise InvalidValueError("recipe", "one of " + ", ".join(RECIPES), recipe)
    values = copy.deepcopy(RECIPES[recipe])  # a recipe's dicts are not shared with configs
    if "max_steps" in values:
        values.setdefault("epochs", None)
    if "epochs" in values and values["epochs"] is not None:
        values.setdefault("max_steps", None)
    return dataclasses.replace(config, recipe=recipe, **values)


def _stage_classes() -> dict[str, type[StageConfig]]:
    from seedkit.engine.pseudo_mask_stage import PseudoMaskStageConfig
    from seedkit.engine.segmentation_stage import SegmentationStageConfig

    return {
        cls.STAGE: cls for cls in (SeedStageConfig, PseudoMaskStageConfig, SegmentationStageConfig)
    }


def save_config(config: StageConfig, path: str | os.PathLike) -> Path:
    """Write a stage config as indented JSON with its ``"stage"`` (atomically)."""
    from seedkit.files import atomic_write

    document = {"stage": config.STAGE, **config.to_dict()}
    return atomic_write(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def load_config(path: str | os.PathLike) -> StageConfig:
    """Read a config written by :func:`save_config`: the class its ``"stage"`` names.

    A file without ``"stage"`` is a seed-stage config. Unknown keys are an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "config file")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(path, "a JSON config", f"invalid JSON ({error})") from error
    if not isinstance(values, dict):
        raise DataError(path, "a JSON object", type(values).__name__)
    stage = values.pop("stage", SeedStageConfig.STAGE)
    classes = _stage_classes()
    if stage not in classes:
        raise DataError(path, "stage " + " / ".join(classes), repr(stage))
    return classes[stage].from_dict(values, path)
