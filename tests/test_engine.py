"""Engine pieces: sampler sharding and resume, checkpoints, configs, schedules."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seedkit.engine import (
    RECIPES,
    PseudoMaskStageConfig,
    ResumableShardSampler,
    RunLogger,
    SeedStageConfig,
    SegmentationStageConfig,
    apply_recipe,
    load_checkpoint,
    load_config,
    lr_schedule,
    save_checkpoint,
    save_config,
)
from seedkit.errors import DataError, DataFileError, InvalidValueError


@given(
    st.integers(4, 60),
    st.sampled_from([1, 2, 4]),
    st.integers(1, 4),
    st.integers(0, 3),
    st.integers(0, 5),
)
def test_shards_together_equal_the_single_process_batches(
    num_samples, world_size, per_rank, epoch, seed
):
    global_batch = world_size * per_rank
    if global_batch > num_samples:
        return
    single = ResumableShardSampler(num_samples, global_batch, 0, 1, seed=seed)
    single.set_epoch(epoch)
    order = list(single)
    shards = []
    for rank in range(world_size):
        sampler = ResumableShardSampler(num_samples, global_batch, rank, world_size, seed=seed)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    for step in range(single.steps_per_epoch):
        together = sorted(x for s in shards for x in s[step * per_rank : (step + 1) * per_rank])
        assert together == sorted(order[step * global_batch : (step + 1) * global_batch])
    assert len(set(order)) == len(order)


@given(st.integers(8, 40), st.integers(0, 5), st.integers(0, 3))
def test_resume_skips_exactly_the_finished_steps(num_samples, start, seed):
    sampler = ResumableShardSampler(num_samples, 4, seed=seed)
    sampler.set_epoch(1)
    full = list(sampler)
    start = min(start, sampler.steps_per_epoch)
    sampler.set_start_step(start)
    assert list(sampler) == full[start * 4 :]


def test_epochs_reshuffle_and_seed_matters():
    sampler = ResumableShardSampler(50, 5, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    other = ResumableShardSampler(50, 5, seed=1)
    assert list(other) != first


def test_sampler_errors():
    with pytest.raises(InvalidValueError, match="global_batch_size"):
        ResumableShardSampler(10, 3, world_size=2)
    with pytest.raises(InvalidValueError, match="at most the number"):
        ResumableShardSampler(3, 4)


def test_checkpoint_round_trip_and_errors(tmp_path):
    state = {"weights": torch.arange(5.0), "step": 7}
    path = save_checkpoint(tmp_path / "a" / "ck.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], state["weights"])
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temporary left behind
    with pytest.raises(DataFileError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"bad\.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    # a pickle from elsewhere that would run code is refused, and its code never runs
    ran = []
    torch.save({"model": Trap(ran)}, tmp_path / "foreign.pt")
    ran.clear()
    with pytest.raises(DataError, match=r"foreign\.pt: .*would run code .*Trap"):
        load_checkpoint(tmp_path / "foreign.pt")
    assert ran == []


class Trap:
    """Unpickling calls the class: what ``weights_only=False`` would do with a foreign file."""

    def __init__(self, ran: list) -> None:
        ran.append(1)
        self.ran = ran

    def __reduce__(self):
        return (Trap, (self.ran,))


def test_interrupted_checkpoint_write_keeps_the_old_file(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", {"step": 1})

    class Exploding:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2, "bad": Exploding()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_config_round_trip_and_validation(tmp_path):
    config = apply_recipe(SeedStageConfig(), "mctformer-deit-s")
    assert config.optimizer == "adamw" and config.backbone == "deit_small_patch16_224"
    assert config.lr == pytest.approx(5e-4 * 64 / 512)
    path = save_config(config, tmp_path / "config.json")
    assert load_config(path) == config
    assert json.loads(path.read_text())["recipe"] == "mctformer-deit-s"
    with pytest.raises(InvalidValueError, match="method"):
        SeedStageConfig(method="seam", epochs=1).validate()
    with pytest.raises(InvalidValueError, match="exactly one"):
        SeedStageConfig(epochs=1, max_steps=3).validate()
    with pytest.raises(InvalidValueError, match="student_drop"):
        SeedStageConfig(epochs=1, student_drop=1.0).validate()
    with pytest.raises(InvalidValueError, match="recipe"):
        apply_recipe(config, "nope")
    (tmp_path / "bad.json").write_text('{"unknown_field": 1}')
    with pytest.raises(DataError, match="unknown_field"):
        load_config(tmp_path / "bad.json")
    # one save / load for every stage: the file names its stage
    for other in (PseudoMaskStageConfig(method="threshold"), SegmentationStageConfig()):
        assert load_config(save_config(other, tmp_path / "other.json")) == other
    for name in RECIPES:
        apply_recipe(SeedStageConfig(), name).validate()


def test_timm_kwargs_reach_the_backbone_and_reserved_keys_are_rejected(tmp_path):
    from seedkit.engine import backbone_kwargs

    vit = SeedStageConfig(
        backbone="deit_tiny_patch16_224",
        output_stride=16,  # ignored for a ViT, which has no output stride
        timm_kwargs={"patch_size": 8, "depth": 2},
        epochs=1,
    ).validate()
    assert backbone_kwargs(vit) == {"patch_size": 8, "depth": 2}
    assert load_config(save_config(vit, tmp_path / "vit.json")) == vit
    cnn = SeedStageConfig(output_stride=8, timm_kwargs={"drop_rate": 0.1}, epochs=1)
    assert backbone_kwargs(cnn.validate()) == {"drop_rate": 0.1, "output_stride": 8}
    with pytest.raises(InvalidValueError, match=r"timm_kwargs.*output_stride"):
        SeedStageConfig(epochs=1, timm_kwargs={"output_stride": 8}).validate()
    with pytest.raises(InvalidValueError, match="timm_kwargs"):
        SeedStageConfig(epochs=1, timm_kwargs=[("patch_size", 8)]).validate()


@pytest.mark.parametrize("kind", ["poly", "cosine", "constant"])
def test_schedules(kind):
    factor = lr_schedule(kind, warmup=10, total=100)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    values = [factor(s) for s in range(10, 100)]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values))
    if kind != "constant":
        assert factor(100) == pytest.approx(0.0, abs=1e-9)


def test_logger_writes_json_lines(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log("train", 1, loss=0.5)
    logger.log("train", 2, loss=0.25)
    logger.close()
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in lines] == [0.5, 0.25] and lines[0]["event"] == "train"
    appended = RunLogger(tmp_path, append=True)
    appended.log("train", 3, loss=0.1)
    appended.close()
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3


def test_consistency_temperature_sets_the_consistency_term_only():
    from seedkit.engine import DistributedContext, SeedTrainingState

    config = SeedStageConfig(
        backbone="resnet18",
        max_steps=2,
        device="cpu",
        temperature=1000.0,
        consistency_temperature=1.0,
        teacher_temperature=2.0,
        consistency_weight=1.0,
    ).validate()
    state = SeedTrainingState(config, DistributedContext(), num_samples=8)
    assert state.criterion.generation.temperature == 1000.0
    assert state.criterion.consistency.temperature == 1.0
    assert state.criterion.consistency.teacher_temperature == 2.0
    plain = SeedTrainingState(
        SeedStageConfig(backbone="resnet18", max_steps=2, device="cpu", temperature=3.0).validate(),
        DistributedContext(),
        num_samples=8,
    )
    assert plain.criterion.generation.temperature == plain.criterion.consistency.temperature == 3.0
    shaped = SeedTrainingState(
        SeedStageConfig(
            backbone="resnet18",
            max_steps=2,
            device="cpu",
            temperature=3.0,
            consistency_temperature=0.2,
            consistency_scale="max",
        ).validate(),
        DistributedContext(),
        num_samples=8,
    )
    # consistency_scale sets the consistency term only: the generation term keeps the
    # config's scale (the default "std").
    assert (
        shaped.criterion.generation.scale == "std" and shaped.criterion.consistency.scale == "max"
    )
    assert shaped.criterion.consistency.temperature == 0.2
    with pytest.raises(InvalidValueError, match="consistency_scale"):
        SeedStageConfig(max_steps=1, consistency_scale="min").validate()


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_the_teacher_runs_only_when_the_consistency_term_counts(weight):
    from seedkit.engine import DistributedContext, SeedTrainingState

    config = SeedStageConfig(
        backbone="resnet18", max_steps=1, device="cpu", consistency_weight=weight, batch_size=2
    ).validate()
    state = SeedTrainingState(config, DistributedContext(), num_samples=2)
    calls = []
    state.teacher_view.register_forward_hook(lambda *_: calls.append(1))
    batch = {
        "image": torch.randn(2, 3, 32, 40),
        "labels": torch.tensor([[1.0] + [0.0] * 19, [0.0, 1.0] + [0.0] * 18]),
        "valid": torch.ones(2, 32, 40, dtype=torch.bool),
    }
    totals = state.trainer.train_step(
        batch, lambda part, info: state.training_step(part, info), after_step=state.after_step
    )
    assert len(calls) == (1 if weight else 0)
    assert totals["consistency_weight"] == weight
    assert (totals["consistency"] == 0.0) == (weight == 0.0)
    assert all(p.grad is not None for p in state.model.parameters() if p.requires_grad)


def test_views_follow_the_consistency_term_unless_set():
    from seedkit.engine import STRONG_DROP, WEAK_DROP, view_drops

    plain = SeedStageConfig(max_steps=1).validate()
    assert view_drops(plain, 0.0) == (0.0, 0.0)  # the term off: no network adjustment
    assert view_drops(plain, 0.1) == (STRONG_DROP, WEAK_DROP)
    assert STRONG_DROP > WEAK_DROP
    forced = SeedStageConfig(max_steps=1, student_drop=0.2, teacher_drop=0.0).validate()
    assert view_drops(forced, 0.0) == (0.2, 0.0) == view_drops(forced, 1.0)
    with pytest.raises(InvalidValueError, match="teacher_drop"):
        SeedStageConfig(max_steps=1, teacher_drop=-0.1).validate()


def test_periodic_evaluation_logs_curves_and_leaves_training_unchanged(tmp_path):
    from seedkit.data import make_demo_data
    from seedkit.engine import (
        DistributedContext,
        apply_recipe,
        eval_dataset,
        evaluate_model_seeds,
        load_seed_model,
        run_seed_stage,
    )

    voc_root = str(make_demo_data(tmp_path / "data", num_images=12, seed=0))
    base = apply_recipe(SeedStageConfig(), "demo")
    runs = {}
    for name, every in (("plain", None), ("monitored", 2)):
        config = dataclasses.replace(
            base,
            train_split="train",
            max_steps=4,
            batch_size=4,
            image_size=64,
            eval_limit=3,
            cam_scales=(1.0,),
            num_overlays=0,
            progress=False,
            consistency_weight=0.1,
            eval_every=every,
            max_threshold=0.9,
            out=str(tmp_path / name),
        ).validate()
        run_seed_stage(config, DistributedContext(), voc_root)
        runs[name] = config
    plain = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)["model"]
    monitored = torch.load(tmp_path / "monitored" / "model.pt", weights_only=True)["model"]
    assert plain.keys() == monitored.keys()
    assert all(torch.equal(plain[k], monitored[k]) for k in plain)  # evaluation changes nothing
    records = [
        json.loads(line) for line in (tmp_path / "monitored" / "log.jsonl").read_text().splitlines()
    ]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    for record in evals:
        for prefix in ("", "teacher_"):  # a USAGE run scores its EMA teacher too
            parts = (record[f"{prefix}{key}"] for key in ("miou", "fp_rate", "fn_rate"))
            assert sum(parts) == pytest.approx(100.0, abs=1e-2)
            assert 0.0 <= record[f"{prefix}threshold"] <= 0.9
    config = runs["monitored"]
    again = evaluate_model_seeds(
        load_seed_model(config, torch.device("cpu")),
        eval_dataset(config, voc_root, with_masks=True),
        config.num_classes,
        config.max_threshold,
    )
    assert again.best_miou == pytest.approx(evals[-1]["miou"], abs=1e-3)


def test_a_step_hook_drives_the_one_training_loop(tmp_path):
    from seedkit.data import make_demo_data
    from seedkit.engine import DistributedContext, train_seed_model

    voc = str(make_demo_data(tmp_path / "data", num_images=8, seed=0, image_size=(64, 80)))
    base = dataclasses.replace(
        apply_recipe(SeedStageConfig(), "demo"),
        method="cam",
        train_split="train",
        max_steps=2,
        batch_size=4,
        grad_accum=2,
        image_size=64,
        eval_limit=1,
        progress=False,
    )
    seen = []

    def hook(state, batch, info):
        seen.append((info.step, info.micro_batch, info.micro_batches, batch["image"].shape[0]))
        return state.training_step(batch, info)

    hooked = train_seed_model(
        dataclasses.replace(base, out=str(tmp_path / "hook")), DistributedContext(), voc, step=hook
    )
    plain = train_seed_model(
        dataclasses.replace(base, out=str(tmp_path / "plain")), DistributedContext(), voc
    )
    assert seen == [(0, 0, 2, 2), (0, 1, 2, 2), (1, 0, 2, 2), (1, 1, 2, 2)]
    first, second = hooked.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_benchmarks_and_examples_use_public_engine_names_only():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("benchmarks/*.py"), *root.glob("examples/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("seedkit"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
                assert not any(p.startswith("_") for p in node.module.split(".")), path.name
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("seedkit"):
                        assert not any(p.startswith("_") for p in alias.name.split(".")), path.name


def test_evaluation_list_check_accepts_a_voc_root_relative_to_the_working_folder(
    tmp_path, monkeypatch
):
    # The README's demo run passes runs/demo/demo_data/...: a root relative to the cwd.
    from seedkit.data import make_demo_data
    from seedkit.engine import check_evaluation_list

    make_demo_data(tmp_path / "demo", num_images=6, seed=0)
    monkeypatch.chdir(tmp_path)
    ids = check_evaluation_list("demo", "train", 20)
    absolute = check_evaluation_list(tmp_path / "demo", "train", 20)
    assert ids == absolute and len(ids) >= 1


# ------------------------------------------------------------------ the one declaration


def test_every_setting_is_declared_once_and_makes_every_config_field():
    import dataclasses as dc

    from seedkit.engine import KINDS, SETTINGS, STAGES
    from seedkit.engine.config import CONFIG_CLASSES

    names = [(s.name, stage) for s in SETTINGS for stage in s.stages]
    assert len(names) == len(set(names))  # one declaration per setting and stage
    for stage, cls in CONFIG_CLASSES.items():
        declared = [s.name for s in SETTINGS if stage in s.stages]
        assert [f.name for f in dc.fields(cls)] == declared
        cls().validate() if stage != "seeds" else cls(max_steps=1).validate()  # defaults valid
    for setting in SETTINGS:
        assert setting.kind in KINDS and setting.help and set(setting.stages) <= set(STAGES)
        assert bool(setting.affects) == (setting.kind == "artefact"), setting.name
    flags = [s.flag(stage) for s in SETTINGS for stage in s.stages if not s.command]
    flags = [f for f in flags if f is not None]
    assert len(flags) == len(set(flags))  # no flag sets two settings


def test_the_docs_settings_table_is_generated_from_the_declaration():
    import importlib.util
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    script = docs / "_static" / "settings_table.py"
    spec = importlib.util.spec_from_file_location("settings_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (docs / "settings_table.inc").read_text() == module.settings_table(), (
        "run python docs/_static/settings_table.py"
    )
    assert ".. include:: settings_table.inc" in (docs / "reproducing.rst").read_text()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("epochs", 0, "epochs: expected an integer >= 1, got 0"),
        ("seed", 2**31, "seed: expected an integer in [0, 2147483647]"),
        ("cam_scales", (1e9,), "cam_scales: expected a finite number in [0.1, 4.0]"),
        ("cam_scales", (), "cam_scales: expected one or more numbers in [0.1, 4.0]"),
        ("resize_long", (9, 3), "resize_long: expected two integers (low, high)"),
        ("color_jitter", (0.1, 0.1), "color_jitter: expected four numbers >= 0"),
        ("momentum", 1.0, "momentum: expected a finite number in [0.0, 1.0)"),
        ("temperature", float("nan"), "temperature: expected a finite number > 0.0"),
        ("head", "cls", "head: expected one of 'cam', 'mct', got 'cls'"),
        ("pretrained", 1, "pretrained: expected true or false, got 1"),
        ("device", "tpu", "device: expected 'auto', 'cpu' or 'cuda[:N]'"),
    ],
)
def test_each_setting_is_checked_by_its_declaration(name, value, message):
    with pytest.raises(InvalidValueError, match=re.escape(message)):
        SeedStageConfig(max_steps=1, **{name: value}).validate()


def test_a_length_given_alone_replaces_the_other():
    config = apply_recipe(SeedStageConfig(), "mctformer-v2")
    assert (config.epochs, config.max_steps) == (60, None)
    shorter = config.replace(max_steps=5)
    assert (shorter.epochs, shorter.max_steps) == (None, 5)
    with pytest.raises(InvalidValueError, match="exactly one of them"):
        SeedStageConfig(epochs=2, max_steps=3).validate()


# ------------------------------------------------------------------ files: safe reading, locks


def test_load_npy_reads_seeds_and_labels_and_refuses_anything_that_would_run_code(tmp_path):
    import os

    import numpy as np

    from seedkit.cam import save_seeds
    from seedkit.files import load_npy

    save_seeds({2: np.full((4, 6), 0.5, np.float32)}, tmp_path / "irn.npy", format="irn")
    irn = load_npy(tmp_path / "irn.npy")
    assert irn["keys"].tolist() == [2] and isinstance(irn["cam"], torch.Tensor)
    np.save(tmp_path / "psa.npy", {np.int64(3): [1.5, "a", (1, 2), None, {4}]}, allow_pickle=True)
    assert load_npy(tmp_path / "psa.npy") == {3: [1.5, "a", (1, 2), None, {4}]}
    marker = tmp_path / "ran"
    for payload in (lambda t: {0: t}, lambda t: {"cam": TorchTrap(t)}):
        np.save(tmp_path / "trap.npy", payload(SystemTrap(marker)), allow_pickle=True)
        with pytest.raises(DataError, match=r"trap\.npy: .* would run code \(it refers to "):
            load_npy(tmp_path / "trap.npy")
    assert not marker.exists() and not os.path.exists(marker)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "irn.npy").read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut\.npy: expected .*unreadable file"):
        load_npy(tmp_path / "cut.npy")


class SystemTrap:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class TorchTrap:
    """A tensor-like object whose storage bytes are a torch pickle that runs code."""

    def __init__(self, trap) -> None:
        self.trap = trap

    def __reduce__(self):
        import io

        import torch.storage

        buffer = io.BytesIO()
        torch.save(self.trap, buffer)
        return (torch.storage._load_from_bytes, (buffer.getvalue(),))


def test_atomic_write_on_a_read_only_file_system_names_the_file(tmp_path, monkeypatch):
    import errno
    import os

    from seedkit.errors import OutputError
    from seedkit.files import atomic_write

    real_open = os.open

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def refuse(path, flags, *args):
        return read_only() if flags & os.O_CREAT else real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr(os, "unlink", read_only)
    message = r"a\.json: cannot write: Read-only file system \(EROFS\)"
    with pytest.raises(OutputError, match=message):
        atomic_write(tmp_path / "a.json", b"{}")


def test_folder_lock_refuses_a_live_holder_takes_over_a_dead_one_and_leaves_no_folder(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from seedkit.errors import RunConflictError
    from seedkit.files import LOCK_NAME, folder_lock

    out = tmp_path / "a" / "b"
    with folder_lock(out):
        assert (out / LOCK_NAME).is_file()
        with folder_lock(out):  # re-entrant within a process
            pass
    assert not (tmp_path / "a").exists()  # created for the lock, empty: removed again
    out.mkdir(parents=True)
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "since": "now"}
    (out / LOCK_NAME).write_text(json.dumps(holder))
    busy = f"in use by another seedkit run \\(pid {os.getppid()}"
    with pytest.raises(RunConflictError, match=busy), folder_lock(out):
        pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout  # fmt: skip
    (out / LOCK_NAME).write_text(json.dumps({**holder, "pid": int(dead)}))
    with folder_lock(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_content_digests_see_an_edit_that_keeps_size_and_modification_time(tmp_path):
    import os

    from seedkit.files import ContentDigests, file_digest

    path = tmp_path / "a.bin"
    path.write_bytes(b"abcd")
    cache = ContentDigests(tmp_path / "cache.json")
    first = cache.digest(path)
    stat = path.stat()
    path.write_bytes(b"abce")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert cache.digest(path) == file_digest(path) != first
    cache.save()
    assert ContentDigests(tmp_path / "cache.json").digest(path) == file_digest(path)
