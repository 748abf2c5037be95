"""A run's numbers belong to its config: reruns, resumes, kills, missing data, full disks.

Through ``examples/train_voc.py`` (its ``main`` in this process, or a subprocess
where the process must die) on a tiny VOC-layout set: a dozen 64-px images,
the CAM baseline, 2-6 steps.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seedkit.data import make_demo_data, read_id_list

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_voc.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_voc_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_voc = _load_example()


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_data(
        tmp_path_factory.mktemp("runs_data"), num_images=12, seed=0, image_size=(64, 80)
    )


def _args(voc: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--voc-root", str(voc), "--recipe", "demo", "--method", "cam", "--train-split", "train",
        "--image-size", "64", "--batch-size", "4", "--eval-limit", "2", "--cam-scales", "1.0",
        "--num-workers", "0", "--no-progress", "--log-every", "1", "--checkpoint-every", "2",
        "--out", str(out), *extra,
    ]  # fmt: skip


def _main(capsys, voc: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Run train_voc.py's main; return its exit code and its error line ('' on success)."""
    try:
        code = train_voc.main(_args(voc, out, *extra))
    except SystemExit as stop:  # --stop-after-steps
        code = 1
        print(stop, file=sys.stderr)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # Seed warnings of 2-step runs (a best threshold at the sweep's edge) are no errors.
    lines = [line for line in err.splitlines() if line.strip() and ": warning" not in line]
    return code, lines[-1] if lines else ""


@pytest.fixture(scope="module")
def finished(voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-step run; tests work on copies of it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train_voc.main(_args(voc, out, "--max-steps", "3")) == 0
    return out


@pytest.fixture(scope="module")
def reference(voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 4-step run, for the interrupted ones to match."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert train_voc.main(_args(voc, out, "--max-steps", "4")) == 0
    return out


def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _train_log(out: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["event"] == "train"]


def _seeds(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["seeds"]


def _same_weights(a: Path, b: Path) -> bool:
    first = torch.load(a, weights_only=True)["model"]
    second = torch.load(b, weights_only=True)["model"]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_rerun_reuses_only_its_own_run_and_refuses_another(tmp_path, voc, finished, capsys):
    out, fresh = _copy_run(finished, tmp_path), tmp_path / "fresh"
    first = _seeds(out)
    stamp = (out / "model.pt").stat().st_mtime_ns
    # the same command again: the finished model is reused, the numbers are the same
    assert _main(capsys, voc, out, "--max-steps", "3") == (0, "")
    assert (out / "model.pt").stat().st_mtime_ns == stamp and _seeds(out) == first
    # another config into the same folder: refused, nothing touched
    code, error = _main(capsys, voc, out, "--max-steps", "2")
    assert code == 2 and error.startswith("train_voc.py: error: ")
    assert "--max-steps 3 -> 2" in error and "--overwrite" in error and str(out) in error
    assert (out / "model.pt").stat().st_mtime_ns == stamp and _seeds(out) == first
    # --overwrite: the new config's own numbers, as a fresh run gives them (seeds included)
    assert _main(capsys, voc, out, "--max-steps", "2", "--overwrite") == (0, "")
    assert _main(capsys, voc, fresh, "--max-steps", "2") == (0, "")
    assert _same_weights(out / "model.pt", fresh / "model.pt")
    assert _seeds(out) == _seeds(fresh) != first
    assert json.loads((out / "config.json").read_text())["max_steps"] == 2
    assert [step for step, _ in _train_log(out)] == [1, 2]


def test_resume_refuses_training_changes_and_extends_truthfully(tmp_path, voc, finished, capsys):
    assert _main(capsys, voc, tmp_path / "empty", "--max-steps", "3", "--resume")[1].endswith(
        "nothing to resume: no run has started here (no checkpoint.pt, no run.json); "
        "run without --resume to start it"
    )
    out = _copy_run(finished, tmp_path)
    for flag, value, shown in (
        ("--lr", "0.5", "--lr 0.001 -> 0.5"),
        ("--backbone", "resnet34", "--backbone 'resnet18' -> 'resnet34'"),
    ):
        code, error = _main(capsys, voc, out, "--max-steps", "3", "--resume", flag, value)
        assert code == 2 and "cannot resume with other training settings" in error
        assert shown in error and "--overwrite" in error
    # more steps: training continues from the checkpoint, on a schedule of the new length
    assert _main(capsys, voc, out, "--max-steps", "5", "--resume") == (0, "")
    assert [step for step, _ in _train_log(out)] == [1, 2, 3, 4, 5]
    run = json.loads((out / "run.json").read_text())
    segments = [{"steps": [0, 3], "total_steps": 3}, {"steps": [3, 5], "total_steps": 5}]
    assert run["segments"] == segments and run["step"] == 5
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["max_steps"] == 5 and results["provenance"]["segments"] == segments
    assert results["provenance"]["model"] == run["model"]
    starts = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r.get("changes") for r in starts if r["event"] == "start"] == [
        None,
        {"max_steps": [3, 5]},
    ]
    code, error = _main(capsys, voc, out, "--max-steps", "4", "--resume")
    assert code == 2 and "trained 5 steps" in error and "--max-steps 5 -> 4" in error
    # settings used after training apply to the same model: new seeds, same model.pt
    stamp = (out / "model.pt").stat().st_mtime_ns
    assert _main(capsys, voc, out, "--max-steps", "5", "--resume", "--eval-limit", "3") == (0, "")
    assert (out / "model.pt").stat().st_mtime_ns == stamp
    assert _seeds(out)["num_images"] == 3 and len(list((out / "seeds").glob("*.npy"))) == 3


def test_an_interrupted_run_is_neither_overwritten_nor_silently_continued(tmp_path, voc, capsys):
    out = tmp_path / "run"
    code, error = _main(capsys, voc, out, "--max-steps", "4", "--stop-after-steps", "3")
    assert code == 1 and "--resume" in error and not (out / "model.pt").exists()
    log = (out / "log.jsonl").read_bytes()
    code, error = _main(capsys, voc, out, "--max-steps", "4")
    assert code == 2 and "holds an unfinished run of these settings (step 3 of 4)" in error
    assert "--resume" in error and "--overwrite" in error
    assert (out / "log.jsonl").read_bytes() == log and not (out / "model.pt").exists()
    assert _main(capsys, voc, out, "--max-steps", "4", "--resume") == (0, "")
    assert [step for step, _ in _train_log(out)] == [1, 2, 3, 4]


DRIVER = """
import os, runpy, signal, sys
mode, target, script, *argv = sys.argv[1:]
target = int(target)
if mode == "train":  # killed right after logging step `target`
    from seedkit.engine import RunLogger
    log = RunLogger.log
    def killing_log(self, event, step=None, **values):
        log(self, event, step, **values)
        if event == "train" and step == target:
            os.kill(os.getpid(), signal.SIGKILL)
    RunLogger.log = killing_log
else:  # killed half-way through writing the `target`-th checkpoint
    write, seen = os.write, set()
    def killing_write(fd, data):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "/.checkpoint.pt." in name and name.endswith(".seedkit-tmp"):
            seen.add(name)
            if len(seen) == target:
                write(fd, bytes(data)[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return write(fd, data)
    os.write = killing_write
sys.argv = [script, *argv]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize("moment", ["training", "checkpoint write"])
def test_kill_9_then_resume_is_bit_exact_without_duplicate_records(
    tmp_path, voc, reference, capsys, moment
):
    out = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # the threads of this process: float sums, hence losses, depend on their number
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    mode, target = ("train", "3") if moment == "training" else ("write", "2")
    command = [sys.executable, str(driver), mode, target, str(SCRIPT)]
    killed = subprocess.run(
        [*command, *_args(voc, out, "--max-steps", "4")], env=env, capture_output=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    temporaries = sorted(p.name for p in out.glob(".*.seedkit-tmp"))
    steps_logged = [step for step, _ in _train_log(out)]
    if moment == "training":  # killed after logging step 3; the last checkpoint is step 2
        assert steps_logged == [1, 2, 3] and not temporaries
        assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    else:  # killed writing the step-4 checkpoint: the step-2 one is intact, a temp is left
        assert steps_logged == [1, 2, 3, 4] and len(temporaries) == 1
        assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert _main(capsys, voc, out, "--max-steps", "4", "--resume") == (0, "")
    assert not list(out.glob(".*.seedkit-tmp"))  # the killed write's temp file is gone
    assert _train_log(out) == _train_log(reference)  # steps 1..4, once each, same losses
    assert _same_weights(out / "model.pt", reference / "model.pt")
    assert _seeds(out) == _seeds(reference)


def _copy(voc: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "VOC2012"
    shutil.copytree(voc, copy)
    return copy


def test_missing_or_broken_data_stops_before_the_first_step(tmp_path, voc, capsys):
    out = tmp_path / "run"
    train = read_id_list(voc, "train")

    def refused(data: Path, *extra: str) -> str:
        code, error = _main(capsys, data, out, "--max-steps", "2", *extra)
        assert code == 2 and error.startswith("train_voc.py: error: ")
        assert not (out / "log.jsonl").exists() and not (out / "checkpoint.pt").exists()
        return error

    no_gt = _copy(voc, tmp_path / "a")
    shutil.rmtree(no_gt / "SegmentationClass")
    assert "SegmentationClass: ground-truth mask folder not found" in refused(no_gt)
    truncated = _copy(voc, tmp_path / "b")
    mask = truncated / "SegmentationClass" / f"{train[1]}.png"
    mask.write_bytes(mask.read_bytes()[:60])
    assert str(mask) in refused(truncated)
    unlisted = _copy(voc, tmp_path / "c")
    image = unlisted / "JPEGImages" / f"{train[-1]}.jpg"
    image.unlink()
    error = refused(unlisted)
    assert f"{image}: image not found; listed in list 'train'" in error
    for flag, value in (
        ("--eval-limit", "0"),
        ("--max-steps", "0"),
        ("--max-steps", "-3"),
        ("--batch-size", "0"),
        ("--checkpoint-every", "-1"),
        ("--stop-after-steps", "0"),
    ):
        assert f"error: {flag}: expected an integer >= 1" in refused(voc, flag, value)


def test_full_disk_and_unwritable_out_name_the_path_and_keep_the_last_checkpoint(
    tmp_path, voc, reference, capsys, monkeypatch
):
    out = tmp_path / "run"
    write, seen = os.write, set()

    def full_disk(fd, data):  # the second checkpoint write finds the disk full
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "/.checkpoint.pt." in name:
            seen.add(name)
            if len(seen) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    code, error = _main(capsys, voc, out, "--max-steps", "4")
    assert code == 2
    assert error == (
        f"train_voc.py: error: {out / 'checkpoint.pt'}: cannot write: "
        "No space left on device (ENOSPC)"
    )
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not list(out.glob(".*.seedkit-tmp"))
    monkeypatch.setattr(os, "write", write)
    assert _main(capsys, voc, out, "--max-steps", "4", "--resume") == (0, "")
    assert _train_log(out) == _train_log(reference)
    # every file of the run has the process's usual mode, like the log
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}
    assert {p.name for p in files} >= {"model.pt", "checkpoint.pt", "run.json", "log.jsonl"}
    # --out is a file, or a read-only folder
    code, error = _main(capsys, voc, out / "log.jsonl", "--max-steps", "2")
    assert (code, error) == (
        2,
        f"train_voc.py: error: {out / 'log.jsonl'}: cannot write: it exists and is not a folder",
    )
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if str(path).startswith(str(read_only)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    code, error = _main(capsys, voc, read_only, "--max-steps", "2")
    assert (code, error) == (
        2,
        f"train_voc.py: error: {read_only}: cannot write: Read-only file system (EROFS)",
    )
