"""examples/train_coco.py through all three stages on a tiny COCO-format set the test writes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seedkit.data import COCO_CLASSES, VOC_CLASSES, make_demo_data, read_id_list, read_mask
from seedkit.data.coco import COCO_CATEGORY_IDS

pytest.importorskip("pycocotools")

ROOT = Path(__file__).resolve().parents[1]
# the demo's VOC classes under their COCO names
VOC_TO_COCO = {"aeroplane": "airplane", "tvmonitor": "tv"}


def _write_tiny_coco(base: Path) -> Path:
    """COCO 2014 layout (train2014/, val2014/, annotations/) of demo scenes, RLE masks."""
    from pycocotools import mask as mask_utils

    voc = make_demo_data(base / "demo", num_images=12, seed=5, image_size=(64, 80), border=0)
    coco = base / "coco"
    categories = [
        {"id": cid, "name": name, "supercategory": "x"}
        for cid, name in zip(COCO_CATEGORY_IDS, COCO_CLASSES, strict=True)
    ]
    for split, folder in (("train", "train2014"), ("val", "val2014")):
        (coco / folder).mkdir(parents=True)
        images, annotations = [], []
        for number, image_id in enumerate(read_id_list(voc, split)):
            file_name = f"COCO_{folder}_{number:012d}.jpg"
            shutil.copy(voc / "JPEGImages" / f"{image_id}.jpg", coco / folder / file_name)
            gt = read_mask(voc / "SegmentationClass" / f"{image_id}.png")
            images.append(
                {
                    "id": number + 1,
                    "file_name": file_name,
                    "height": gt.shape[0],
                    "width": gt.shape[1],
                }
            )
            for value in np.unique(gt):
                if value == 0:
                    continue
                name = VOC_CLASSES[int(value) - 1]
                region = np.asfortranarray((gt == value).astype(np.uint8))
                rle = mask_utils.encode(region)
                rle["counts"] = rle["counts"].decode("ascii")
                annotations.append(
                    {
                        "id": len(annotations) + 1 + 1000 * (split == "val"),
                        "image_id": number + 1,
                        "category_id": COCO_CATEGORY_IDS[
                            COCO_CLASSES.index(VOC_TO_COCO.get(name, name))
                        ],
                        "segmentation": rle,
                        "area": float(region.sum()),
                        "iscrowd": 0,
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    }
                )
        (coco / "annotations").mkdir(exist_ok=True)
        document = {"images": images, "annotations": annotations, "categories": categories}
        (coco / "annotations" / f"instances_{folder}.json").write_text(json.dumps(document))
    return coco


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_train_coco_runs_all_stages_on_a_tiny_coco(tmp_path: Path) -> None:
    coco = _write_tiny_coco(tmp_path)
    out = tmp_path / "run"
    command = [
        sys.executable, str(ROOT / "examples" / "train_coco.py"),
        "--coco-root", str(coco), "--out", str(out),
        "--stages", "1,2,3", "--recipe", "demo-scratch", "--backbone", "resnet18",
        "--image-size", "64",
        "--batch-size", "4", "--max-steps", "2", "--cam-scales", "1.0", "--num-workers", "0",
        "--no-progress", "--pm-backbone", "resnet18", "--pm-steps", "2", "--pm-batch-size", "4",
        "--pm-image-size", "48",
        "--exp-times", "3", "--seg-arch", "deeplabv3_mobilenet_v3_large", "--seg-steps", "2",
        "--seg-batch-size", "2", "--seg-image-size", "64", "--seg-eval-scales", "1.0",
    ]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    view = out / "coco_voc"
    train = read_id_list(view, "train")
    assert len(train) == 8 and all(i.startswith("COCO_train2014_") for i in train)
    # masks rendered once from the annotations: COCO class ids (airplane is index 4 -> value 5)
    rendered = {
        int(v) for i in train for v in np.unique(read_mask(view / "SegmentationClass" / f"{i}.png"))
    }
    assert rendered <= {
        0,
        *(
            COCO_CLASSES.index(VOC_TO_COCO.get(n, n)) + 1
            for n in VOC_CLASSES
            if VOC_TO_COCO.get(n, n) in COCO_CLASSES
        ),
    }
    labels = np.load(view / "cls_labels.npy", allow_pickle=True).item()
    assert all(np.asarray(v).shape == (80,) for v in labels.values())
    results = json.loads((out / "results.json").read_text())
    # the seeded tiny COCO reproduces these (CPU, measured twice)
    assert results["seeds"]["miou"] == pytest.approx(12.1638, abs=0.01)
    assert results["seeds"]["threshold"] == 0.59
    assert results["pseudo_masks"]["miou"] == pytest.approx(7.92, abs=0.01)
    assert results["segmentation"]["miou"] == pytest.approx(9.73, abs=0.01)
    segmentation = results["segmentation"]
    assert len(segmentation["iou"]) == 81 and "airplane" in segmentation["per_class"]
    assert len(list((out / "pseudo_masks" / "masks").glob("*.png"))) == len(train)
    seed_files = list((out / "usage" / "seeds").glob("*.npy"))
    assert len(seed_files) == len(train)
    assert max(np.load(seed_files[0], allow_pickle=True).item()) < 80


def _load_train_coco():
    spec = importlib.util.spec_from_file_location("train_coco", ROOT / "examples" / "train_coco.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_coco_applies_the_recipes(tmp_path: Path, monkeypatch) -> None:
    coco = _write_tiny_coco(tmp_path)
    train_coco = _load_train_coco()
    small = [
        "--coco-root", str(coco), "--no-pretrained", "--max-steps", "1", "--image-size", "64",
        "--batch-size", "2", "--cam-scales", "1.0", "--eval-limit", "2", "--num-workers", "0",
        "--timm-kwargs", '{"depth": 1, "dynamic_img_pad": true}', "--no-progress",
    ]  # fmt: skip
    for out, extra, folder, expected in (
        (tmp_path / "v2", ["--recipe", "mctformer-v2"], "cam", ("mctformer-v2", "mct", "cam")),
        (tmp_path / "default", [], "usage", ("mctformer-deit-s", "cam", "usage")),
    ):
        assert train_coco.main([*small, *extra, "--out", str(out)]) == 0
        config = json.loads((out / folder / "config.json").read_text())
        assert (config["recipe"], config["head"], config["method"]) == expected
        assert (config["num_classes"], config["pretrained"]) == (80, False)
    # the recipe's hub weights, offline and without a cache: one line naming the flags, no folder
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    refused = tmp_path / "refused"
    argv = ["--coco-root", str(coco), "--recipe", "mctformer-v2", "--method", "usage"]
    assert train_coco.main([*argv, "--out", str(refused)]) == 2
    assert not refused.exists()
