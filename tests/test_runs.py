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
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
        "--voc-root", str(voc), "--recipe", "demo-scratch", "--method", "cam",
        "--train-split", "train",
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


# ------------------------------------------------------------------ issue 22's cases

LATER = [
    "--pm-split", "train", "--pm-steps", "2", "--pm-batch-size", "4", "--pm-image-size", "48",
    "--pm-embed-dim", "16", "--exp-times", "3", "--pm-backbone", "resnet18", "--seg-steps", "2",
    "--seg-batch-size", "2", "--seg-image-size", "64", "--seg-eval-scales", "1.0",
    "--seg-arch", "deeplabv3_timm", "--seg-backbone", "resnet18",
]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _numbers(out: Path) -> dict:
    document = json.loads((out / "results.json").read_text())
    found = {k: round(v["miou"], 4) for k, v in document.items() if "miou" in v}
    return {**found, **({"stale": sorted(document["stale"])} if "stale" in document else {})}


def _masks(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "pseudo_masks" / "masks").glob("*.png"))}


@pytest.fixture(scope="module")
def three_stages(voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1,2,3 run; tests work on copies of it."""
    out = tmp_path_factory.mktemp("three") / "run"
    assert train_voc.main(_args(voc, out, "--max-steps", "3", "--stages", "1,2,3", *LATER)) == 0
    return out


def _trap(path: Path, marker: Path, payload) -> None:
    class Trap:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.save(path, payload(Trap()), allow_pickle=True)


def test_a_label_file_that_would_run_code_is_refused_and_never_run(tmp_path, voc, capsys):
    data, marker = _copy(voc, tmp_path), tmp_path / "ran"
    _trap(data / "cls_labels.npy", marker, lambda trap: {"x": trap})
    code, error = _main(capsys, data, tmp_path / "run", "--max-steps", "2")
    assert code == 2 and f"{data / 'cls_labels.npy'}: expected" in error
    assert "a pickle that would run code (it refers to posix.system)" in error
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_other_data_under_the_same_flags_is_trained_again_with_its_own_numbers(
    tmp_path, voc, finished, capsys
):
    out, mirrored = _copy_run(finished, tmp_path), _copy(voc, tmp_path / "m")
    for folder in ("JPEGImages", "SegmentationClass"):
        for path in (mirrored / folder).iterdir():
            image = Image.open(path)
            flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if image.mode == "P":
                flipped.putpalette(image.getpalette())
            flipped.save(path, quality=95) if path.suffix == ".jpg" else flipped.save(path)
    before = _seeds(out)
    assert _main(capsys, mirrored, out, "--max-steps", "3") == (0, "")
    assert _main(capsys, mirrored, tmp_path / "fresh", "--max-steps", "3") == (0, "")
    assert _seeds(out) == _seeds(tmp_path / "fresh") != before
    assert _same_weights(out / "model.pt", tmp_path / "fresh" / "model.pt")


SEED_EDITS = {
    "hand-edited": lambda p: np.save(p, {0: np.full((64, 80), 0.9, np.float32)}),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "NaN": lambda p: np.save(p, {0: np.full((64, 80), np.nan, np.float32)}),
}


@pytest.mark.parametrize("edit", sorted(SEED_EDITS))
def test_an_edited_seed_file_is_written_again_never_scored(tmp_path, voc, finished, capsys, edit):
    out = _copy_run(finished, tmp_path)
    before, path = _seeds(out), sorted((out / "seeds").glob("*.npy"))[0]
    content = path.read_bytes()
    SEED_EDITS[edit](path)
    assert _main(capsys, voc, out, "--max-steps", "3") == (0, "")
    assert _seeds(out) == before and path.read_bytes() == content


MASK_EDITS = {
    "hand-edited": lambda p: Image.new("L", Image.open(p).size, 1).save(p),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:40]),
}


@pytest.mark.parametrize("edit", sorted(MASK_EDITS))
def test_an_edited_pseudo_mask_is_made_again_and_stage_3_retrained(
    tmp_path, voc, three_stages, capsys, edit
):
    out = _copy_run(three_stages, tmp_path)
    first, masks = _numbers(out), _masks(out)
    path = out / "pseudo_masks" / "masks" / sorted(masks)[0]
    MASK_EDITS[edit](path)
    assert _main(capsys, voc, out, "--max-steps", "3", "--stages", "1,2,3", *LATER) == (0, "")
    assert _masks(out) == masks and _numbers(out) == first


def test_results_json_holds_only_current_numbers(tmp_path, voc, three_stages, capsys):
    out = _copy_run(three_stages, tmp_path)
    first, masks = _numbers(out), _masks(out)
    assert masks
    assert set(first) == {"seeds", "pseudo_masks", "segmentation"}
    extra = ("--max-steps", "3", "--stages", "2", "--resume", "--walk-bg-threshold", "0.5", *LATER)
    assert _main(capsys, voc, out, *extra) == (0, "")
    second = _numbers(out)
    # the masks are remade (their mIoU may round to the same value on this tiny set) ...
    assert second["seeds"] == first["seeds"] and _masks(out) != masks
    # ... and the network trained on the old ones is no longer reported
    assert "segmentation" not in second and second["stale"] == ["segmentation"]
    # stage 3 again: its numbers come back, from the new masks
    again = ("--max-steps", "3", "--stages", "3", *LATER, "--walk-bg-threshold", "0.5")
    assert _main(capsys, voc, out, *again) == (0, "")
    assert set(_numbers(out)) == {"seeds", "pseudo_masks", "segmentation"}


# Each refused command: one line naming the flag or file, nothing on disk changed.
REFUSED = [
    (["--stages", "2", "--cam-scales", "1.0", "0.5"],
     "holds a stage-1 run of other settings (--cam-scales [1.0] -> [1.0, 0.5]); run stage 1 too"),
    (["--stages", "1,2,3", "--lr", "0.5"], "holds a different run (--lr 0.001 -> 0.5)"),
    (["--stages", "3", "--seg-lr", "0.1"], "holds a different run (--seg-lr 0.01 -> 0.1)"),
    (["--stages", "2,3", "--resume", "--pm-lr", "0.5"],
     "cannot resume with other training settings (--pm-lr 0.1 -> 0.5)"),
    (["--stages", "1,2,3", "--exp-times", "100"], "--exp-times: expected an integer in [0, 16]"),
    (["--stages", "1,2,3", "--seg-checkpoint-path", "missing.pt"],
     "missing.pt: --seg-checkpoint-path file not found"),
    (["--stages", "1,2,3", "--pm-backbone", "deit_tiny_patch16_224"],
     "--pm-backbone: expected a CNN with features at stride 4"),
    (["--stages", "1,2,3", "--walk-bg-threshold", "nan"],
     "--walk-bg-threshold: expected a finite number in [0.0, 1.0]"),
    (["--stages", "1,2,3", "--cam-scales", "1e9"], "--cam-scales: expected a finite number in"),
    (["--stages", "1,2,3", "--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), REFUSED)
def test_a_refused_command_changes_nothing(tmp_path, voc, three_stages, capsys, extra, message):
    out = _copy_run(three_stages, tmp_path)
    before = _snapshot(out)
    code, error = _main(capsys, voc, out, "--max-steps", "3", *LATER, *extra)
    assert code == 2 and message in error, error
    assert _snapshot(out) == before


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, voc, finished, capsys):
    for again in ((), ("--resume",)):
        out = tmp_path / f"run{len(again)}"
        code, _ = _main(capsys, voc, out, "--max-steps", "3", "--stop-after-steps", "1",
                        "--checkpoint-every", "10")  # fmt: skip
        (out / "checkpoint.pt").unlink()  # as if killed before writing it
        (out / ".checkpoint.pt.dead.seedkit-tmp").write_bytes(b"half")
        assert code == 1 and (out / "run.json").is_file()
        assert _main(capsys, voc, out, "--max-steps", "3", *again) == (0, "")
        assert _seeds(out) == _seeds(finished) and not list(out.glob(".*.seedkit-tmp"))


def test_a_second_command_into_a_busy_out_is_refused(tmp_path, voc, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "since": "12:00:00"}
    (out / ".seedkit-lock").write_text(json.dumps(holder))
    code, error = _main(capsys, voc, out, "--max-steps", "2")
    assert code == 2 and f"{out}: is in use by another seedkit run (pid {os.getppid()}" in error
    assert "choose another --out" in error and sorted(os.listdir(out)) == [".seedkit-lock"]
    # a lock left by a dead process is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (out / ".seedkit-lock").write_text(json.dumps({**holder, "pid": int(dead)}))
    assert _main(capsys, voc, out, "--max-steps", "2") == (0, "")
    assert not (out / ".seedkit-lock").exists()
