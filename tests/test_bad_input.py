"""Bad input, one table per entry point: one clear line (a typed error, or ``error:`` and exit 2).

Each command-line case asserts exit status 2, a single stderr line that starts with
``<prog>: error:`` and names the flag or the file, and no traceback. Each API case
asserts the typed error of :mod:`seedkit.errors` and the argument it names.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seedkit.cli import main as seedkit_main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"bad_input_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Tiny images, psa seeds, masks and lists; ``bad*`` files hold one defect each."""
    root = tmp_path_factory.mktemp("bad_input")
    for folder in ("img", "cams", "gt"):
        (root / folder).mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    for image_id in ("a", "b", "big"):
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(root / "img" / f"{image_id}.jpg")
        Image.fromarray(mask).save(root / "gt" / f"{image_id}.png")
        np.save(root / "cams" / f"{image_id}.npy", {0: np.full((8, 8), 0.5, np.float32)})
    np.save(root / "cams" / "big.npy", {0: np.full((8, 8), 5.0, np.float32)})  # not in [0, 1]
    jpeg = (root / "img" / "a.jpg").read_bytes()
    (root / "img" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    np.save(root / "cams" / "cut.npy", {0: np.full((8, 8), 0.5, np.float32)})
    (root / "list.txt").write_text("a\nb\n")
    (root / "repeated.txt").write_text("a\nb\na\n")
    (root / "big.txt").write_text("big\n")
    (root / "names3.txt").write_text("background\ncat\ndog\n")
    (root / "a_file").write_text("x")
    # a seed file whose pickle would run code (write a marker file) if it were unpickled
    Image.fromarray(mask).save(root / "gt" / "trap.png")
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(root / "img" / "trap.jpg")
    np.save(root / "cams" / "trap.npy", {0: _RunsCode(root / "ran")}, allow_pickle=True)
    (root / "trap.txt").write_text("trap\n")
    coco = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg"}],
        "annotations": [],
        "categories": [],
    }
    (root / "empty_coco.json").write_text(json.dumps(coco))
    return root


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w')",))


def _run_cli(main, argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err


def _assert_one_line(code: int, err: str, prog: str, message: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error:"), err
    assert message in lines[0], err


RUNS_CODE = (
    "holding a pickled dict of arrays, numbers, strings and containers, "
    "got a pickle that would run code (it refers to builtins.exec)"
)
VIZ_CASES = [
    (["--ids", "cut"], "img/cut.jpg: expected a readable JPEG or PNG image"),
    (["--ids", "a", "--out", "{root}/a_file"], "a_file: cannot write: it exists and is not a"),
    (["--ids", "a", "--class-names", "{root}/missing.txt"], "missing.txt: class-name file"),
    (["--ids", "a", "--class-names", "{root}/names3.txt"], "names3.txt: expected 1 foreground"),
    (["--ids", "a", "--threshold", "nan"], "--threshold: expected a finite number in [0.0, 1.0]"),
    (["--ids", "a", "--threshold", "-1"], "--threshold: expected a finite number in [0.0, 1.0]"),
    (["--ids", "a", "--threshold", "5"], "--threshold: expected a finite number in [0.0, 1.0]"),
    (["--ids", "a", "--max-images", "0"], "--max-images: expected an integer >= 1, got 0"),
    (["--ids", "a", "--num-classes", "0"], "--num-classes: expected an integer >= 2, got 0"),
    (["--ids", "a", "a"], "--ids: expected distinct image ids, got 'a more than once'"),
    (["--list", "{root}/repeated.txt"], "repeated.txt: expected each image id once"),
    (["--ids", "big"], "big.npy: expected values in [0, 1]"),
    (["--ids", "trap"], f"trap.npy: expected a .npy file {RUNS_CODE}"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), VIZ_CASES)
def test_viz_bad_input(files, capsys, argv, message):
    argv = [part.format(root=files) for part in argv]
    base = ["viz", "--image-dir", str(files / "img"), "--cams", str(files / "cams")]
    if "--num-classes" not in argv:
        base += ["--num-classes", "2"]
    if "--out" not in argv:
        base += ["--out", str(files / "viz_out")]
    code, err = _run_cli(seedkit_main, base + argv, capsys)
    _assert_one_line(code, err, "seedkit viz", message)
    assert not (files / "ran").exists()  # no code from a seed file ran


EVAL_CASES = [
    (["--json", "{root}"], "cannot write: it is a folder; --json takes a file path"),
    (["--class-names", "{root}/missing.txt"], "missing.txt: class-name file (--class-names)"),
    (["--class-names", "{root}/names3.txt"], "names3.txt: expected 1 foreground names or 2"),
    (["--list", "{root}/repeated.txt"], "repeated.txt: expected each image id once, got a on"),
    (["--list", "{root}/big.txt"], "big.npy: expected values in [0, 1] in the map of class 0"),
    (["--step", "1e-9"], "--step: expected a finite number in [0.001, 1.0], got 1e-09"),
    (["--step", "0"], "--step: expected a finite number in [0.001, 1.0]"),
    (["--max-threshold", "nan"], "--max-threshold: expected a finite number in [0.0, 1.0]"),
    (["--num-classes", "1"], "--num-classes: expected an integer >= 2, got 1"),
    (["--list", "{root}/trap.txt"], f"trap.npy: expected a .npy file {RUNS_CODE}"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), EVAL_CASES)
def test_eval_seeds_bad_input(files, capsys, argv, message):
    argv = [part.format(root=files) for part in argv]
    base = ["eval-seeds", "--cams", str(files / "cams"), "--gt", str(files / "gt"), "--quiet"]
    if "--num-classes" not in argv:
        base += ["--num-classes", "2"]
    if "--list" not in argv:
        base += ["--list", str(files / "list.txt")]
    code, err = _run_cli(seedkit_main, base + argv, capsys)
    _assert_one_line(code, err, "seedkit eval-seeds", message)
    assert not (files / "ran").exists()  # no code from a seed file ran


def test_eval_seeds_json_on_a_read_only_file_system_is_one_line(files, capsys, monkeypatch):
    import errno
    import os

    real_open = os.open

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def refuse(path, flags, *args):  # creating a file fails; reading works
        return read_only() if flags & os.O_CREAT else real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr(os, "unlink", read_only)  # the clean-up fails too
    argv = ["eval-seeds", "--cams", str(files / "cams"), "--gt", str(files / "gt"), "--quiet",
            "--num-classes", "2", "--list", str(files / "list.txt"),
            "--json", str(files / "ro" / "r.json")]  # fmt: skip
    (files / "ro").mkdir(exist_ok=True)
    code, err = _run_cli(seedkit_main, argv, capsys)
    _assert_one_line(code, err, "seedkit eval-seeds", "r.json: cannot write: Read-only file system")


CLS_LABEL_CASES = [
    (["--voc-root", "{root}", "--out", "{root}"], "cannot write: it is a folder; --out takes"),
    (
        ["--coco-json", "{root}/empty_coco.json", "--out", "{root}/labels.npy"],
        "empty_coco.json: expected at least one image with a class label, got none",
    ),
]


@pytest.mark.parametrize(("argv", "message"), CLS_LABEL_CASES)
def test_make_cls_labels_bad_input(files, capsys, argv, message):
    argv = ["make-cls-labels", *(part.format(root=files) for part in argv)]
    code, err = _run_cli(seedkit_main, argv, capsys)
    _assert_one_line(code, err, "seedkit make-cls-labels", message)
    assert not (files / "labels.npy").exists()


DEMO_DATA_CASES = [
    (["{root}/a_file"], "a_file: cannot write: it exists and is not a folder; root takes"),
    (["{root}/demo", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["{root}/demo", "--num-images", "0"], "--num-images: expected an integer >= 1, got 0"),
    (["{root}/demo", "--image-size", "8", "8"], "--image-size: expected an integer >= 32"),
]


@pytest.mark.parametrize(("argv", "message"), DEMO_DATA_CASES)
def test_make_demo_data_bad_input(files, capsys, argv, message):
    argv = ["make-demo-data", *(part.format(root=files) for part in argv)]
    code, err = _run_cli(seedkit_main, argv, capsys)
    _assert_one_line(code, err, "seedkit make-demo-data", message)


SEED = "--seed: expected an integer in [0, 2147483647]"
# The same training flags and the same one line from both example scripts; every case
# stops before a model is built or a file is written (issue 22's rows among them).
TRAINING_CASES = [
    (["--lr", "-1"], "--lr: expected a finite number > 0.0, got -1.0"),
    (["--lr", "nan"], "--lr: expected a finite number > 0.0, got nan"),
    (["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["--num-workers", "-1"], "--num-workers: expected an integer >= 0, got -1"),
    (["--seed", "-1"], f"{SEED}, got -1"),
    (["--seed", "99999999999999999999999"], f"{SEED}, got 99999999999999999999999"),
    (["--max-steps", "-5"], "--max-steps: expected an integer >= 1, got -5"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["--eval-limit", "0"], "--eval-limit: expected an integer >= 1, got 0"),
    (["--consistency-weight", "-1"], "--consistency-weight: expected a finite number >= 0.0"),
    (["--output-stride", "4"], "--output-stride: expected one of None, 8, 16, 32, got 4"),
    (["--cam-scales", "1e9"], "--cam-scales: expected a finite number in [0.1, 4.0], got 10"),
    (["--momentum", "1"], "--momentum: expected a finite number in [0.0, 1.0), got 1.0"),
    (["--timm-kwargs", "[1]"], "argument --timm-kwargs: expected a JSON object, got '[1]'"),
    (["--timm-kwargs", '{"num_classes": 3}'], "--timm-kwargs: expected no keys that have"),
    (["--walk-bg-threshold", "nan"], "--walk-bg-threshold: expected a finite number in [0.0, 1.0]"),
    (["--exp-times", "100"], "--exp-times: expected an integer in [0, 16], got 100"),
    (["--pm-stride", "3"], "--pm-stride: expected one of 2, 4, 8, 16, got 3"),
    (["--fg-threshold", "0.01"], "--bg-threshold / --fg-threshold: expected bg <= fg"),
    (["--seg-eval-scales", "0"], "--seg-eval-scales: expected a finite number in [0.1, 4.0]"),
    (["--seg-arch", "unet"], "--seg-arch: expected one of 'deeplabv3_resnet50'"),
    (["--stages", "1,4"], "--stages: expected comma-separated stage numbers 1, 2, 3, got '1,4'"),
    (["--stop-after-steps", "0"], "--stop-after-steps: expected an integer >= 1, got 0"),
    (["--stages", "1,2", "--pm-backbone", "deit_tiny_patch16_224"],
     "--pm-backbone: expected a CNN with features at stride 4"),
    (["--output-stride", "8", "--backbone", "deit_tiny_patch16_224"],
     "--output-stride: expected None for a ViT"),
    (["--stages", "1,2,3", "--seg-checkpoint-path", "{tmp}/missing.pt"],
     "missing.pt: --seg-checkpoint-path file not found"),
    (["--stages", "3", "--seg-arch", "deeplabv3_resnet50", "--seg-backbone", "resnet18"],
     "--seg-backbone: expected None for torchvision's deeplabv3_resnet50"),
]  # fmt: skip
TRAIN_VOC_CASES = [
    *TRAINING_CASES,
    (["--demo-images", "0"], "--demo-images: expected an integer >= 1, got 0"),
    (["--demo-images", "7"], "demo_data: holds demo data of other settings (--demo-images 6 -> 7)"),
]


@pytest.mark.parametrize(("argv", "message"), TRAIN_VOC_CASES)
def test_train_voc_bad_input(tmp_path, capsys, argv, message):
    train_voc = _load_example("train_voc")
    out = tmp_path / "run"
    demo = out / "demo_data"
    (demo / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    (demo / "VOCdevkit" / "VOC2012" / "cls_labels.npy").write_bytes(b"")
    (demo / "demo.json").write_text(json.dumps({"num_images": 6, "seed": 0}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    code, err = _run_cli(train_voc.main, [*argv, "--out", str(out)], capsys)
    _assert_one_line(code, err, "train_voc.py", message)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


TRAIN_COCO_CASES = [
    *TRAINING_CASES,
    (["--limit-images", "0"], "--limit-images: expected an integer >= 1, got 0"),
    ([], "train2014: COCO image folder not found"),
]


@pytest.mark.parametrize(("argv", "message"), TRAIN_COCO_CASES)
def test_train_coco_bad_input(tmp_path, capsys, argv, message):
    train_coco = _load_example("train_coco")
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    base = ["--coco-root", str(tmp_path), "--out", str(tmp_path / "run"), "--no-pretrained"]
    code, err = _run_cli(train_coco.main, [*base, *argv], capsys)
    _assert_one_line(code, err, "train_coco.py", message)
    assert not (tmp_path / "run").exists()  # a refused command leaves no folder


def test_both_example_scripts_take_the_same_training_flags():
    flags = {}
    for name in ("train_voc", "train_coco"):
        parser = _load_example(name).build_parser()
        flags[name] = {f for action in parser._actions for f in action.option_strings}
    from seedkit.engine import SETTINGS

    declared = {s.flag(stage) for s in SETTINGS for stage in s.stages} - {None}
    assert declared - {"--voc-root"} <= flags["train_voc"] & flags["train_coco"]
    assert flags["train_voc"] ^ flags["train_coco"] == {
        "--voc-root", "--demo-images", "--coco-root", "--limit-images",
    }


# ---------------------------------------------------------------------------- API


def _empty_coco(path: Path) -> Path:
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    return path


def _api_cases():
    import torch

    import seedkit
    from seedkit.backbones import create_seed_model
    from seedkit.data import load_cls_labels, make_demo_data, read_id_list
    from seedkit.engine import load_checkpoint, save_checkpoint
    from seedkit.errors import DataError, InvalidValueError, ShapeError
    from seedkit.losses import (
        SeedGenerationLoss,
        USAGELoss,
        consistency_loss,
        global_average_pool,
    )
    from seedkit.metrics import ThresholdSweep, default_thresholds, load_psa_maps

    maps, labels = torch.rand(2, 3, 4, 4), torch.ones(2, 3)

    def scalar_distance(student, teacher, valid):
        return (student - teacher).abs().mean()

    def checkpoint_without_model(tmp: Path):
        save_checkpoint(tmp / "model.pt", {"format": "seedkit.model", "steps": 3})
        return load_checkpoint(tmp / "model.pt", required=("model",))

    def seeds_out_of_range(tmp: Path):
        np.save(tmp / "x.npy", {0: np.full((2, 2), 1.5, np.float32)})
        return load_psa_maps(tmp / "x.npy", 20)

    def pickle_that_runs_code(tmp: Path, reader):
        class Trap:
            def __reduce__(self):
                return (exec, ("open('ran', 'w')",))

        np.save(tmp / "trap.npy", {0: Trap()}, allow_pickle=True)
        return reader(tmp / "trap.npy")

    def repeated_ids(tmp: Path):
        (tmp / "ids.txt").write_text("2007_000032\n2007_000039\n2007_000032\n")
        return read_id_list(None, tmp / "ids.txt")

    return [
        ("empty batch", lambda tmp: SeedGenerationLoss()(torch.rand(0, 3, 4, 4), labels[:0]),
         ShapeError, r"cams: .*B >= 1 and C >= 1, got \(0, 3, 4, 4\)"),
        ("zero classes", lambda tmp: SeedGenerationLoss()(torch.rand(2, 0, 4, 4), labels[:, :0]),
         ShapeError, r"cams: .*B >= 1 and C >= 1, got \(2, 0, 4, 4\)"),
        ("USAGE empty batch", lambda tmp: USAGELoss()(maps[:0], maps[:0], labels[:0]),
         ShapeError, r"cams: .*B >= 1 and C >= 1"),
        ("GAP empty batch", lambda tmp: global_average_pool(maps[:0]), ShapeError, r"cams: "),
        ("scalar distance", lambda tmp: consistency_loss(maps, maps, labels, scalar_distance),
         ShapeError, r"distance: expected shape \(B, C\) = \(2, 3\) .*got \(\)"),
        ("float distance",
         lambda tmp: consistency_loss(maps, maps, labels, lambda s, t, v: 1.0),
         InvalidValueError, r"distance: expected a callable returning a \(B, C\) tensor"),
        ("output_stride 4",
         lambda tmp: create_seed_model("resnet18", num_classes=2, output_stride=4),
         InvalidValueError, r"output_stride: expected 8, 16 or 32"),
        ("consistency_weight -1", lambda tmp: USAGELoss(consistency_weight=-1),
         InvalidValueError, r"consistency_weight: expected a finite number >= 0, got -1"),
        ("checkpoint without model", checkpoint_without_model,
         DataError, r"model\.pt: .* got no 'model'"),
        ("seed values above 1", seeds_out_of_range,
         DataError, r"x\.npy: expected values in \[0, 1\] in the map of class 0"),
        ("repeated ids", repeated_ids,
         DataError, r"ids\.txt: expected each image id once, got 2007_000032 on lines 1 and 3"),
        ("demo seed -1", lambda tmp: make_demo_data(tmp / "demo", num_images=1, seed=-1),
         InvalidValueError, r"seed: expected an integer >= 0, got -1"),
        ("class_names length", lambda tmp: ThresholdSweep(3, class_names=["a", "b", "c", "d"]),
         InvalidValueError, r"class_names: expected 3 or 2 names, got '4 names'"),
        ("step 1e-9", lambda tmp: default_thresholds(0.59, 1e-9),
         InvalidValueError, r"step: expected a spacing that gives at most 1001 thresholds"),
        ("check mode", lambda tmp: seedkit.set_input_checks("sometimes"),
         InvalidValueError, r"enabled: expected True, False or one of"),
        ("1-channel input",
         lambda tmp: create_seed_model("resnet10t", 3)(torch.randn(2, 1, 64, 64)),
         ShapeError, r"x: expected shape \(B, 3, H, W\), got \(2, 1, 64, 64\) \(1 channels\)"),
        ("a training batch of one 1x1 map",
         lambda tmp: create_seed_model("resnet10t", 3).train()(torch.randn(1, 3, 32, 32)),
         ShapeError, r"x: expected shape \(B, 3, H, W\) with B >= 2, or an image large enough"),
        ("seed file that runs code",
         lambda tmp: pickle_that_runs_code(tmp, lambda path: load_psa_maps(path, 20)),
         DataError, r"trap\.npy: .*a pickle that would run code \(it refers to builtins\.exec\)"),
        ("label file that runs code", lambda tmp: pickle_that_runs_code(tmp, load_cls_labels),
         DataError, r"trap\.npy: .*a pickle that would run code"),
    ]  # fmt: skip


API_CASES = _api_cases()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [case[1:] for case in API_CASES],
    ids=[case[0] for case in API_CASES],
)
def test_api_bad_input(tmp_path, call, error, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        call(tmp_path)
    assert not (tmp_path / "ran").exists()  # no code from a data file ran


def test_pooling_near_the_float_maximum_is_finite_and_right():
    import torch

    from seedkit.losses import global_average_pool, temperature_pool

    generator = torch.Generator().manual_seed(0)
    big = torch.finfo(torch.float32).max
    maps = ((torch.rand(2, 3, 6, 5, generator=generator) * 2 - 1) * 0.99 * big).float()
    maps[0, 0] = 0.99 * big  # a constant map: its sum overflows float32
    mask = torch.rand(2, 1, 6, 5, generator=generator) > 0.3
    # float64 holds every sum of these float32 values: an independent reference.
    for valid in (None, mask):
        expected = global_average_pool(maps.double(), valid).float()
        torch.testing.assert_close(global_average_pool(maps, valid), expected, rtol=1e-5, atol=0)
        for temperature in (1e-3, 1.0, 1e36):
            for scale in ("raw", "max"):
                got = temperature_pool(maps, temperature, valid, scale)
                want = temperature_pool(maps.double(), temperature, valid, scale).float()
                torch.testing.assert_close(got, want, rtol=1e-5, atol=0)

    # A redone row keeps its gradient: d mean / dA = 1 / N, not 2**128 * 2**-128.
    constant = torch.full((1, 1, 6, 5), 0.99 * big, requires_grad=True)
    (gradient,) = torch.autograd.grad(global_average_pool(constant).sum(), constant)
    torch.testing.assert_close(gradient, torch.full_like(constant, 1 / 30))

    # float64 maps near its maximum: within [min, max] of each map; tau -> 0+ is the max.
    huge = torch.finfo(torch.float64).max
    maps64 = (torch.rand(2, 3, 6, 5, generator=generator, dtype=torch.float64) * 2 - 1) * huge
    for temperature in (1e-300, 1.0, 1e300):
        for scale in ("raw", "max"):
            pooled = temperature_pool(maps64, temperature, scale=scale)
            flat = maps64.flatten(2)
            assert torch.isfinite(pooled).all()
            assert (pooled >= flat.amin(2) * (1 + 1e-12)).all()
            assert (pooled <= flat.amax(2) * (1 + 1e-12)).all()
    sharp = temperature_pool(maps64, 1e-300)
    torch.testing.assert_close(sharp, maps64.flatten(2).amax(2), rtol=1e-12, atol=0)
    mean = global_average_pool(maps64)
    scaled_mean = (maps64 / 2.0**64).mean(dim=(2, 3)) * 2.0**64
    torch.testing.assert_close(mean, scaled_mean, rtol=1e-12, atol=0)


def test_self_adaptive_view_drops_channel_segments_of_mlp_mixer_tokens():
    """A Mixer's branches return (B, N, C) tokens: the segment runs over C, in both branches."""
    import torch
    import torch.nn as nn
    from timm.models.mlp_mixer import MlpMixer

    from seedkit.views import SelfAdaptiveView

    mixer = MlpMixer(num_classes=3, img_size=64, patch_size=16, num_blocks=2, embed_dim=32).eval()
    view = SelfAdaptiveView(mixer, 0.5, generator=torch.Generator().manual_seed(0))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = view(images)
    segments = view.last_segments
    assert sorted(segments) == ["blocks.0", "blocks.1"]
    assert all(segment.channels == mixer.embed_dim for segment in segments.values())

    class ZeroChannels(nn.Module):
        def __init__(self, start: int, stop: int) -> None:
            super().__init__()
            self.start, self.stop = start, stop

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            tokens = tokens.clone()
            tokens[..., self.start : self.stop] = 0
            return tokens

    for name, segment in segments.items():
        mixer.get_submodule(name).drop_path = ZeroChannels(segment.start, segment.stop)
    with torch.no_grad():
        torch.testing.assert_close(out, mixer(images), rtol=0, atol=0)
