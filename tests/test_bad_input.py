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
    coco = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg"}],
        "annotations": [],
        "categories": [],
    }
    (root / "empty_coco.json").write_text(json.dumps(coco))
    return root


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
]


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
]


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


# Every case stops before a model is built or a file is written.
TRAIN_VOC_CASES = [
    (["--lr", "-1"], "--lr: expected a finite number > 0.0, got -1.0"),
    (["--lr", "nan"], "--lr: expected a finite number > 0.0, got nan"),
    (["--num-workers", "-1"], "--num-workers: expected an integer >= 0, got -1"),
    (["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["--max-steps", "-5"], "--max-steps: expected an integer >= 1, got -5"),
    (["--eval-limit", "0"], "--eval-limit: expected an integer >= 1, got 0"),
    (["--consistency-weight", "-1"], "--consistency-weight: expected a finite number >= 0.0"),
    (["--output-stride", "4"], "--output-stride: invalid choice"),
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
    code, err = _run_cli(train_voc.main, [*argv, "--out", str(out)], capsys)
    if "invalid choice" in message:  # argparse's own: a usage line, then the error
        assert code == 2 and message in err and "Traceback" not in err
        return
    _assert_one_line(code, err, "train_voc.py", message)


TRAIN_COCO_CASES = [
    (["--lr", "-1"], "--lr: expected a finite number > 0.0, got -1.0"),
    (["--num-workers", "-1"], "--num-workers: expected an integer >= 0, got -1"),
    (["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["--max-steps", "-5"], "--max-steps: expected an integer >= 1, got -5"),
    (["--eval-limit", "0"], "--eval-limit: expected an integer >= 1, got 0"),
    (["--limit-images", "0"], "--limit-images: expected an integer >= 1, got 0"),
    ([], "train2014: COCO image folder not found"),
]


@pytest.mark.parametrize(("argv", "message"), TRAIN_COCO_CASES)
def test_train_coco_bad_input(tmp_path, capsys, argv, message):
    train_coco = _load_example("train_coco")
    argv = ["--coco-root", str(tmp_path), "--out", str(tmp_path / "run"), *argv]
    code, err = _run_cli(train_coco.main, argv, capsys)
    _assert_one_line(code, err, "train_coco.py", message)
