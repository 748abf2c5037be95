"""The multi-class-token model through the seed stage, eval-seeds and the example scripts."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seedkit.backbones import create_seed_model
from seedkit.cam import as_seed_map_model, infer_cams
from seedkit.cli import main as seedkit_main
from seedkit.data import make_demo_data
from seedkit.engine import (
    RECIPES,
    DistributedContext,
    SeedStageConfig,
    apply_recipe,
    eval_dataset,
    load_seed_model,
    run_seed_stage,
    token_classification_loss,
)
from seedkit.errors import RunConflictError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_data(
        tmp_path_factory.mktemp("mct") / "demo", num_images=10, seed=3, image_size=(64, 96)
    )


def test_token_loss_hook():
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    model = create_seed_model("deit_tiny_patch16_224", 3, head="mct", depth=1, img_size=32)
    out = model(torch.randn(1, 3, 32, 48))
    expected = F.multilabel_soft_margin_loss(out.token_logits, labels)
    torch.testing.assert_close(token_classification_loss(out, labels), expected)
    plain = create_seed_model("deit_tiny_patch16_224", 3, depth=1, img_size=32)
    assert token_classification_loss(plain(torch.randn(1, 3, 32, 48)), labels) is None


def test_deit_tiny_mct_trains_with_usage_and_writes_seeds_eval_seeds_scores(demo_voc, tmp_path):
    """Done-when: create_seed_model(deit_tiny, 20, head="mct") + USAGELoss through the engine."""
    config = SeedStageConfig(
        voc_root=str(demo_voc),
        train_split="train",
        eval_split="train",
        eval_limit=3,
        method="usage",
        head="mct",
        backbone="deit_tiny_patch16_224",
        image_size=64,
        resize_long=(64, 96),
        batch_size=2,
        max_steps=2,
        optimizer="adamw",
        lr=1e-3,
        consistency_weight=0.1,
        consistency_start=0.0,
        consistency_ramp=0.0,
        cam_scales=(1.0, 0.5),
        out=str(tmp_path / "run"),
        num_workers=0,
        log_every=1,
        progress=False,
        num_overlays=1,
    )
    results = run_seed_stage(config, DistributedContext(), str(demo_voc))
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in steps] == [1, 2]
    for record in steps:  # USAGE's terms on the patch CAMs plus the class-token loss
        assert record["token"] > 0 and record["consistency_weight"] == pytest.approx(0.1)
        total = record["generation"] + 0.1 * record["consistency"] + record["token"]
        assert record["loss"] == pytest.approx(total, rel=1e-5)
    ids = eval_dataset(config, str(demo_voc)).ids
    assert len(ids) == 3 and sorted(p.stem for p in (run / "seeds").glob("*.npy")) == sorted(ids)
    # psa format: {present class: HxW float map in [0, 1]}, the fused + refined maps.
    model = load_seed_model(config, torch.device("cpu")).eval()
    dataset = eval_dataset(config, str(demo_voc))
    for index in range(len(dataset)):
        item = dataset[index]
        maps = np.load(run / "seeds" / f"{item['id']}.npy", allow_pickle=True).item()
        present = item["labels"].nonzero().flatten().tolist()
        assert sorted(maps) == present
        expected = infer_cams(
            as_seed_map_model(model), item["image"][None], item["labels"][None], config.cam_scales
        )
        for cls, seed in maps.items():
            assert seed.dtype == np.float32 and seed.shape == tuple(item["image"].shape[-2:])
            assert seed.min() >= 0.0 and seed.max() <= 1.0
            np.testing.assert_allclose(seed, expected[0, cls].numpy(), atol=1e-5)
    # seedkit eval-seeds scores the files, with the number the stage reported (its mean).
    report = tmp_path / "eval.json"
    (tmp_path / "list.txt").write_text("\n".join(ids) + "\n")
    code = seedkit_main(
        [
            "eval-seeds",
            "--cams", str(run / "seeds"),
            "--gt", str(demo_voc / "SegmentationClass"),
            "--list", str(tmp_path / "list.txt"),
            "--json", str(report),
            "--mean-over", results["seeds"]["mean_over"],
        ]
    )  # fmt: skip
    assert code == 0
    document = json.loads(report.read_text())
    assert document["best"]["miou"] == pytest.approx(results["seeds"]["miou"])
    assert len(document["curve"]) == 60
    # The head is a training setting: the run folder refuses the other head's run,
    # and the model file refuses to load as the other head.
    other = dataclasses.replace(config, head="cam")
    with pytest.raises(RunConflictError, match=r"head 'mct' -> 'cam'"):
        run_seed_stage(other, DistributedContext(), str(demo_voc))
    with pytest.raises(RunConflictError, match=r"head 'mct' -> 'cam'"):
        load_seed_model(other, torch.device("cpu"))
    # seed_format="irn": the same maps in IRN's dict, from the same model, scored the same.
    psa = {p.stem: np.load(p, allow_pickle=True).item() for p in (run / "seeds").glob("*.npy")}
    irn_config = dataclasses.replace(config, seed_format="irn")  # after training: resume
    irn_results = run_seed_stage(irn_config, DistributedContext(), str(demo_voc), resume=True)
    for image_id, maps in psa.items():
        irn = np.load(run / "seeds" / f"{image_id}.npy", allow_pickle=True).item()
        assert irn["keys"].tolist() == sorted(maps)
        for row, cls in enumerate(irn["keys"].tolist()):
            np.testing.assert_array_equal(irn["high_res"][row], maps[cls])
    assert irn_results["seeds"]["miou"] == pytest.approx(results["seeds"]["miou"])


def test_recipes_hold_mctformer_v2_settings():
    v2, usage = RECIPES["mctformer-v2"], RECIPES["mctformer-v2-usage"]
    assert {k: v for k, v in usage.items() if k != "method"} == {
        k: v for k, v in v2.items() if k != "method"
    }
    assert (v2["method"], usage["method"]) == ("cam", "usage")
    assert v2["head"] == "mct" and v2["backbone"] == "deit_small_patch16_224"
    assert v2["lr"] == pytest.approx(5e-4 * 64 / 512) and v2["batch_size"] == 64
    assert (v2["epochs"], v2["warmup_epochs"], v2["image_size"]) == (60, 5, 224)
    assert (v2["optimizer"], v2["weight_decay"], v2["schedule"]) == ("adamw", 0.05, "cosine")
    assert v2["pretrained"] is True and v2["cam_scales"] == (1.0,)
    config = apply_recipe(SeedStageConfig(), "mctformer-v2-usage").validate()
    assert config.head == "mct" and config.warmup_epochs == 5
    config.timm_kwargs["depth"] = 1  # a config never edits the recipe table
    assert "depth" not in RECIPES["mctformer-v2-usage"]["timm_kwargs"]
    with pytest.raises(ValueError, match="head"):
        dataclasses.replace(config, head="cls").validate()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _train_voc(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_voc.py"), *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_voc_recipe_runs_without_hub_weights(demo_voc, tmp_path):
    args = [
        "--voc-root", str(demo_voc), "--recipe", "mctformer-v2-usage", "--no-pretrained",
        "--max-steps", "2", "--image-size", "64", "--batch-size", "2", "--train-split", "train",
        "--eval-limit", "2", "--num-workers", "0", "--no-progress", "--out", str(tmp_path / "r"),
        "--timm-kwargs", '{"depth": 2, "dynamic_img_pad": true}',
    ]  # fmt: skip
    result = _train_voc(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["recipe"] == "mctformer-v2-usage" and config["pretrained"] is False
    assert (config["head"], config["method"], config["cam_scales"]) == ("mct", "usage", [1.0])
    assert len(list((tmp_path / "r" / "seeds").glob("*.npy"))) == 2
    # A recipe that loads hub weights, offline and without a cache: one line naming the flags.
    offline = _train_voc(
        [*args[:2], "--recipe", "mctformer-v2", "--max-steps", "1", "--batch-size", "2"],
        tmp_path,
        HF_HOME=str(tmp_path / "empty-cache"),
    )
    assert offline.returncode == 2
    assert "--no-pretrained" in offline.stderr and "--checkpoint-path" in offline.stderr
    assert "Traceback" not in offline.stderr and "create_seed_model(" not in offline.stderr
