"""Configuration of the seed stage, with named recipes of the reference codebases."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedkit.errors import DataError, DataFileError, InvalidValueError

__all__ = ["RECIPES", "SeedStageConfig", "apply_recipe", "load_config", "save_config"]


@dataclass
class SeedStageConfig:
    """Everything that determines a seed-stage run; saved as ``OUT/config.json``.

    ``None`` in a field means "derive it": from the backbone family's preset
    (temperatures, consistency weight) or from the other fields (learning rate,
    resize range). The resolved values are what gets saved.
    """

    # data
    voc_root: str | None = None
    train_split: str = "train_aug"
    eval_split: str = "train"
    num_classes: int = 20
    eval_limit: int | None = None
    # model
    method: str = "usage"
    backbone: str = "resnet18"
    # The seed model's head (create_seed_model's ``head``): "cam" (1x1-conv CAM classifier)
    # or "mct" (one class token per class + patch-CAM head, MCTformer-V2; ViTs only).
    head: str = "cam"
    pretrained: bool = False
    checkpoint_path: str | None = None
    output_stride: int | None = None
    # Extra keyword arguments of ``timm.create_model`` (e.g. ``{"patch_size": 8}`` or
    # ``{"drop_path_rate": 0.1}``); ``output_stride`` has its own field.
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    # augmentation
    image_size: int = 224
    resize_long: tuple[int, int] | None = None
    color_jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)
    # optimisation
    batch_size: int = 8
    epochs: int | None = None
    max_steps: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "poly"
    warmup_steps: int = 0
    head_lr_mult: float = 10.0
    grad_accum: int = 1
    amp: str = "auto"
    grad_clip: float | None = None
    # USAGE
    temperature: float | None = None
    scale: str = "raw"
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
    max_threshold: float = 0.59
    num_overlays: int = 4
    # Score the seeds of the evaluation list every N training steps (one scale + flip;
    # ``eval`` records in log.jsonl, the teacher's too for USAGE runs); None: never.
    eval_every: int | None = None
    # run
    out: str = "runs/seed"
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    checkpoint_every: int = 200
    log_every: int = 10
    tensorboard: bool = False
    progress: bool = True
    recipe: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> SeedStageConfig:
        """Check choices and ranges; return ``self``."""
        choices = {
            "method": ("usage", "cam"),
            "head": ("cam", "mct"),
            "optimizer": ("sgd", "adamw"),
            "schedule": ("poly", "cosine", "constant"),
            "amp": ("auto", "on", "off"),
            "scale": ("raw", "max"),
            "consistency_scale": (None, "raw", "max"),
            "distance": ("kl", "js", "l1"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                expected = "one of " + ", ".join(map(str, allowed))
                raise InvalidValueError(name, expected, getattr(self, name))
        if (self.epochs is None) == (self.max_steps is None):
            raise InvalidValueError(
                "epochs / max_steps", "exactly one of them", (self.epochs, self.max_steps)
            )
        for name in ("batch_size", "grad_accum", "image_size", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise InvalidValueError(name, "an integer >= 1", getattr(self, name))
        for name in ("student_drop", "teacher_drop"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) < 1.0:
                raise InvalidValueError(name, "a ratio in [0, 1)", getattr(self, name))
        for name in ("consistency_start", "consistency_ramp"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InvalidValueError(name, "a fraction of the run in [0, 1]", value)
        if self.eval_every is not None and int(self.eval_every) < 1:
            raise InvalidValueError("eval_every", "an integer >= 1 or None", self.eval_every)
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
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# MCTformer-V2: its DeiT-S with one class token per class and a patch-CAM head
# (docs/mctformer.rst). Seeds: class attention x patch CAM, refined by attention
# affinity, at scale 1.0 + flip (MCTformer's published command). Stochastic depth 0.1
# is MCTformer's default; padding lets images of any size through the 16-pixel patches.
_MCTFORMER_V2: dict[str, Any] = {
    "head": "mct",
    "backbone": "deit_small_patch16_224",
    "timm_kwargs": {"drop_path_rate": 0.1, "dynamic_img_pad": True},
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
    "cam_scales": (1.0,),
    "pretrained": True,
}

# Reference settings (DESIGN section 5). Learning rates scale with the batch as the
# codebases do; `lr` here is the value at the recipe's own batch size.
RECIPES: dict[str, dict[str, Any]] = {
    # MCTformer: DeiT-S, AdamW lr 5e-4 x batch / 512, wd 0.05, cosine, 5 warm-up epochs, 60 epochs.
    "mctformer-deit-s": {
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
    },
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
    values = copy.deepcopy(RECIPES[recipe])
    warmup_epochs = values.pop("warmup_epochs", None)
    if "max_steps" in values:
        values.setdefault("epochs", None)
    if "epochs" in values and values["epochs"] is not None:
        values.setdefault("max_steps", None)
    updated = dataclasses.replace(config, recipe=recipe, **values)
    if warmup_epochs is not None:
        updated.extra = {**updated.extra, "warmup_epochs": warmup_epochs}
    return updated


def save_config(config: SeedStageConfig, path: str | os.PathLike) -> Path:
    """Write the config as indented JSON (atomically)."""
    from seedkit.data import atomic_write_bytes

    return atomic_write_bytes(
        path, (json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    )


def load_config(path: str | os.PathLike) -> SeedStageConfig:
    """Read a config written by :func:`save_config` (unknown keys are an error)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "config file")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(path, "a JSON config", f"invalid JSON ({error})") from error
    known = {f.name for f in dataclasses.fields(SeedStageConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DataError(path, "only SeedStageConfig fields", f"unknown keys {unknown}")
    for name in ("resize_long", "color_jitter", "cam_scales"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return SeedStageConfig(**values)
