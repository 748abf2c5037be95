"""examples/train_voc.py end to end on tiny demo data: both methods, CNN and ViT, resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_voc.py"
TINY = [
    "--demo-images", "14", "--image-size", "64", "--batch-size", "4", "--eval-limit", "3",
    "--cam-scales", "1.0", "0.5", "--num-workers", "0", "--no-progress",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _run(args: list[str], cwd: Path, launcher: list[str] | None = None, check: bool = True):
    command = [*(launcher or [sys.executable]), str(SCRIPT), *args]
    result = subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["event"] == "train"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    done = _run([*TINY, "--max-steps", "3", "--log-every", "1", "--out", str(out)], cwd=out.parent)
    (out.parent / "stdout.txt").write_text(done.stdout)
    return out


def test_demo_prints_the_table_the_readme_shows(demo_run: Path) -> None:
    # The rows of the README's expected output, with this run's pinned numbers.
    printed = (demo_run.parent / "stdout.txt").read_text()
    table = printed[printed.index("seed mIoU on the 3 images") :]
    rows = {
        "trivial: all background": "14.88",
        "trivial: centred blob": "17.09",
        "CAM baseline": "28.78   0.69",
        "USAGE (family preset)": "28.24   0.69",
        "USAGE - CAM": "-0.54",
    }
    for label, numbers in rows.items():
        line = next(line for line in table.splitlines() if line.startswith(label))
        assert line[len(label) :].split()[: len(numbers.split())] == numbers.split(), line
    assert "N_eff/N 0.7" in table and "localise" in table


# Seed mIoU and best threshold of the 3-step demo run (CPU; the ImageNet-pretrained
# EfficientNet-Lite0 of the demo recipe): the two methods differ by 0.54, so the
# tolerance tells them apart.
DEMO_SEEDS = {"cam": (28.7754, 0.69), "usage": (28.2359, 0.69)}


def test_demo_runs_both_methods_and_writes_everything(demo_run: Path) -> None:
    summary = json.loads((demo_run / "results.json").read_text())
    assert set(summary["methods"]) == {"cam", "usage"}
    for method in ("cam", "usage"):
        run = demo_run / method
        results = json.loads((run / "results.json").read_text())
        seeds = results["seeds"]
        miou, threshold = DEMO_SEEDS[method]
        assert seeds["miou"] == pytest.approx(miou, abs=0.005)
        assert seeds["threshold"] == threshold
        assert seeds["miou"] + seeds["fp_rate"] + seeds["fn_rate"] == pytest.approx(100.0, abs=1e-3)
        # the trivial baselines of the same list, beside the seeds
        trivial = {"background": 14.8834, "blob": 17.0889}
        assert seeds["trivial"] == pytest.approx(trivial, abs=0.005)
        config = json.loads((run / "config.json").read_text())
        assert config["method"] == method and config["seed"] == 0 and config["recipe"] == "demo"
        # the demo fine-tunes ImageNet weights (the local package's, converted once)
        assert config["backbone"] == "tf_efficientnet_lite0" and not config["pretrained"]
        assert Path(config["checkpoint_path"]).name == "tf_efficientnet_lite0.pth"
        assert len(list((run / "seeds").glob("*.npy"))) == 3
        assert len(list((run / "overlays").glob("*.png"))) == 3
        assert (run / "checkpoint.pt").is_file() and (run / "model.pt").is_file()
        assert [step for step, _ in _losses(run)] == [1, 2, 3]
    # same model, data and seed: the first step of both methods sees the same batch and
    # the CAM baseline's loss equals USAGE's generation part only if the views were off,
    # so the two runs must differ after training
    assert _losses(demo_run / "cam") != _losses(demo_run / "usage")


def test_vit_backbone_and_rerun_is_reproducible(tmp_path: Path, demo_run: Path) -> None:
    args = [
        *TINY,
        "--max-steps",
        "2",
        "--log-every",
        "1",
        "--method",
        "usage",
        "--backbone",
        "deit_tiny_patch16_224",
    ]
    first = _run([*args, "--out", str(tmp_path / "a")], cwd=tmp_path)
    _run([*args, "--out", str(tmp_path / "b")], cwd=tmp_path)
    assert "usage" in first.stdout
    assert _losses(tmp_path / "a" / "usage") == _losses(tmp_path / "b" / "usage")
    config = json.loads((tmp_path / "a" / "usage" / "config.json").read_text())
    assert config["backbone"] == "deit_tiny_patch16_224"


def test_resume_continues_exactly(tmp_path: Path) -> None:
    args = [
        *TINY,
        "--method",
        "usage",
        "--max-steps",
        "6",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
    ]
    _run([*args, "--out", str(tmp_path / "full")], cwd=tmp_path)
    stopped = _run(
        [*args, "--out", str(tmp_path / "cut"), "--stop-after-steps", "3"],
        cwd=tmp_path,
        check=False,
    )
    assert stopped.returncode != 0 and "--resume" in stopped.stderr
    assert not (tmp_path / "cut" / "usage" / "model.pt").exists()
    _run([*args, "--out", str(tmp_path / "cut"), "--resume"], cwd=tmp_path)
    full, cut = _losses(tmp_path / "full" / "usage"), _losses(tmp_path / "cut" / "usage")
    assert [s for s, _ in cut] == [1, 2, 3, 4, 5, 6]
    assert cut == full
    a = json.loads((tmp_path / "full" / "usage" / "results.json").read_text())["seeds"]
    b = json.loads((tmp_path / "cut" / "usage" / "results.json").read_text())["seeds"]
    assert a == b


def test_wrong_voc_root_names_what_was_expected(tmp_path: Path) -> None:
    missing = _run(
        ["--voc-root", str(tmp_path / "nowhere"), "--max-steps", "1"], cwd=tmp_path, check=False
    )
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr and "VOC2012" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _run(
        ["--voc-root", str(tmp_path / "empty"), "--max-steps", "1"], cwd=tmp_path, check=False
    )
    assert empty.returncode == 2
    assert "empty" in empty.stderr and "JPEGImages" in empty.stderr


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path: Path, demo_run: Path) -> None:
    # ViT: no batch norm, so two half batches give the same gradients as one full batch
    args = [
        *TINY, "--method", "usage", "--backbone", "deit_tiny_patch16_224", "--max-steps", "3",
        "--log-every", "1", "--batch-size", "4",
    ]  # fmt: skip
    _run([*args, "--out", str(tmp_path / "one")], cwd=tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    _run([*args, "--out", str(tmp_path / "two")], cwd=tmp_path, launcher=torchrun)
    one, two = _losses(tmp_path / "one" / "usage"), _losses(tmp_path / "two" / "usage")
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 2, 3]
    for (_, a), (_, b) in zip(one, two, strict=True):
        assert b == pytest.approx(a, rel=1e-3)
    assert len(list((tmp_path / "two" / "usage" / "seeds").glob("*.npy"))) == 3


def test_each_example_run_has_its_own_folder_and_a_refused_one_leaves_none(tmp_path: Path) -> None:
    # the MCTformer smoke test of docs/mctformer.rst: demo data, not the main demo's runs/demo
    smoke = [
        "--recipe", "mctformer-v2-usage", "--no-pretrained", "--max-steps", "1",
        "--image-size", "64", "--batch-size", "2", "--demo-images", "6", "--eval-limit", "2",
        "--cam-scales", "1.0", "--timm-kwargs", '{"depth": 1, "dynamic_img_pad": true}',
        "--num-workers", "0", "--no-progress",
    ]  # fmt: skip
    _run(smoke, cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["demo-mctformer-v2-usage"]
    # a recipe whose hub weights cannot be had offline: refused before any folder is made
    other = tmp_path / "other"
    other.mkdir()
    voc = tmp_path / "runs" / "demo-mctformer-v2-usage" / "demo_data"
    env_home = str(tmp_path / "empty-cache")
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--recipe", "mctformer-v2", "--voc-root", str(voc)],
        cwd=other, env={**_env(), "HF_HOME": env_home}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert refused.returncode == 2 and "--no-pretrained" in refused.stderr
    assert "Traceback" not in refused.stderr and list(other.iterdir()) == []
