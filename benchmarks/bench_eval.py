"""Benchmark seed evaluation and multi-scale CAM inference against plain reference loops.

Part 1 (evaluation): the whole ``seedkit eval-seeds`` process (interpreter start,
imports, reading every file, all thresholds, JSON) against the per-threshold loop
of psa / SEAM / MCTformer (for every image: load the files once, then for each of
the 60 thresholds build the prediction with ``np.argmax`` over
``[t, map_1, ..., map_20]`` and add its confusion matrix, here with a fast
``np.bincount`` rather than their per-class sums). Synthetic psa files of VOC
size are written once to a temporary directory. The reference costs about
0.5-0.8 s per image on this machine, so by default it runs on the first
``--reference-images`` images and its time is scaled to all images (printed as
such); ``--reference-images 500`` runs it on everything. The confusion matrices
of both are required to be identical on the images the reference saw.

Part 2 (inference): :func:`seedkit.cam.infer_cams` (one forward per scale for
the image and its flip together, or for several equal-size images and their
flips; only present classes upsampled) against a per-image, per-view loop (one
forward per scale and flip, every class upsampled), same outputs required.

Run: ``PYTHONPATH=src python benchmarks/bench_eval.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from seedkit import seeds_from_cams  # noqa: E402
from seedkit.cam import infer_cams  # noqa: E402
from seedkit.metrics import default_thresholds, evaluate_seeds  # noqa: E402

NUM_CLASSES = 21
SIZES = [(375, 500), (500, 375), (333, 500), (375, 500)]


def voc_palette() -> list[int]:
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def smooth_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.random((6, 8), dtype=np.float32) ** 3
    image = Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32)
    return array / max(float(array.max()), 1e-6)


def make_data(root: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    (root / "cams").mkdir(parents=True)
    (root / "gt").mkdir()
    palette = voc_palette()
    ids = []
    for index in range(count):
        height, width = SIZES[index % len(SIZES)]
        classes = rng.choice(20, size=int(rng.integers(1, 4)), replace=False)
        maps = {int(c): smooth_map(rng, height, width) for c in classes}
        # ground truth: where the true object is (a shifted, sharper version of the map)
        truth = np.zeros((height, width), np.uint8)
        for c, m in maps.items():
            shifted = np.roll(m, int(rng.integers(-20, 20)), axis=1)
            truth[shifted > rng.uniform(0.3, 0.6)] = c + 1
        edge = np.zeros(truth.shape, bool)
        edge[:-1] |= truth[:-1] != truth[1:]
        edge[:, :-1] |= truth[:, :-1] != truth[:, 1:]
        truth[edge] = 255
        image_id = f"{2007 + index % 5}_{index:06d}"
        np.save(root / "cams" / f"{image_id}.npy", maps)
        png = Image.fromarray(truth, mode="P")
        png.putpalette(palette)
        png.save(root / "gt" / f"{image_id}.png")
        ids.append(image_id)
    (root / "list.txt").write_text("\n".join(ids) + "\n")
    return ids


def reference_eval(root: Path, ids: list[str], thresholds: np.ndarray) -> np.ndarray:
    """psa / SEAM / MCTformer style: per image, per threshold, argmax then confusion."""
    k = NUM_CLASSES
    confusions = np.zeros((len(thresholds), k, k), np.int64)
    for image_id in ids:
        maps = np.load(root / "cams" / f"{image_id}.npy", allow_pickle=True).item()
        gt = np.array(Image.open(root / "gt" / f"{image_id}.png"))
        height, width = gt.shape
        tensor = np.zeros((k, height, width), np.float32)
        for key, value in maps.items():
            tensor[key + 1] = value
        valid = gt < 255
        g = gt[valid].astype(np.int64) * k
        for j, t in enumerate(thresholds):
            tensor[0, :, :] = t
            predict = np.argmax(tensor, axis=0)
            confusions[j] += np.bincount(g + predict[valid], minlength=k * k).reshape(k, k)
    return confusions


def miou_curve(confusions: np.ndarray) -> np.ndarray:
    tp = np.diagonal(confusions, axis1=1, axis2=2).astype(np.float64)
    union = confusions.sum(1) + confusions.sum(2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return np.nanmean(iou, axis=1) * 100


def bench_evaluation(args: argparse.Namespace) -> None:
    thresholds = default_thresholds()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        ids = make_data(root, args.images)
        print(
            f"[eval] wrote {len(ids)} synthetic psa seed files + masks "
            f"in {time.perf_counter() - start:.1f} s"
        )
        ref_ids = ids[: args.reference_images]

        # identical numbers on the images the reference sees
        ours = evaluate_seeds(root / "cams", root / "gt", ref_ids, progress=False)
        ref_confusions = reference_eval(root, ref_ids, thresholds)
        assert ours.confusions is not None
        if not np.array_equal(ours.confusions, ref_confusions):
            raise SystemExit("[eval] MISMATCH: confusion matrices differ from the reference loop")
        ref_curve = miou_curve(ref_confusions)
        np.testing.assert_allclose(ours.miou_curve, ref_curve, rtol=0, atol=1e-9)
        print(
            f"[eval] identical confusion matrices at all {len(thresholds)} thresholds "
            f"on {len(ref_ids)} images "
            f"(best t={ours.best_threshold:.2f}, mIoU {ours.best_miou:.3f})"
        )

        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        command = [
            sys.executable,
            "-m",
            "seedkit.cli",
            "eval-seeds",
            "--cams",
            str(root / "cams"),
            "--gt",
            str(root / "gt"),
            "--list",
            str(root / "list.txt"),
            "--json",
            str(root / "out.json"),
            "--quiet",
        ]
        ours_times, ref_times, inproc_times = [], [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            ours_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            evaluate_seeds(root / "cams", root / "gt", ids, progress=False)
            inproc_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference_eval(root, ref_ids, thresholds)
            ref_times.append(time.perf_counter() - start)
            print(
                f"[eval] repeat {repeat}: seedkit eval-seeds process {ours_times[-1]:.2f} s "
                f"({len(ids)} images); in-process {inproc_times[-1]:.2f} s; "
                f"reference {ref_times[-1]:.2f} s ({len(ref_ids)} images)"
            )
        ours_t = float(np.median(ours_times))
        inproc_t = float(np.median(inproc_times))
        ref_t = float(np.median(ref_times)) * len(ids) / len(ref_ids)
        scaled = "" if len(ref_ids) == len(ids) else f" (scaled from {len(ref_ids)} images)"
        print(
            f"[eval] {len(ids)} maps, {len(thresholds)} thresholds: seedkit eval-seeds process "
            f"{ours_t:.2f} s, reference per-threshold loop {ref_t:.1f} s{scaled}: "
            f"{ref_t / ours_t:.1f}x faster (target >= 10x); in-process evaluate_seeds "
            f"{inproc_t:.2f} s ({ref_t / inproc_t:.1f}x)"
        )


class BenchCNN(nn.Module):
    """A small stride-8 CNN with a CAM head (stands in for a seed model on CPU)."""

    def __init__(self, classes: int = 20, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(2 * width, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def per_image_reference(model, image, labels, scales) -> torch.Tensor:
    """One forward per image, scale and flip; every class upsampled (psa-style loop)."""
    height, width = image.shape[-2:]
    total = None
    views = 0
    with torch.inference_mode():
        for scale in scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
            for flip in (False, True):
                cam = model(x.flip(-1) if flip else x)
                cam = F.relu(cam.flip(-1) if flip else cam)
                cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)
                total = cam if total is None else total + cam
                views += 1
        return seeds_from_cams(total / views, labels[None], None)[0]


def bench_inference(args: argparse.Namespace) -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    scales = (1.0, 0.5, 1.5, 2.0)
    generator = torch.Generator().manual_seed(0)
    height, width = args.infer_size
    images = torch.randn(args.infer_images, 3, height, width, generator=generator)
    labels = torch.zeros(args.infer_images, 20)
    for index in range(args.infer_images):
        labels[index, torch.randperm(20, generator=generator)[: 1 + index % 3]] = 1
    models = {"BenchCNN (stride 8)": BenchCNN().eval()}
    if args.timm_model:
        import timm

        backbone = timm.create_model(
            args.timm_model, pretrained=False, num_classes=0, global_pool=""
        )
        head = nn.Conv2d(backbone.num_features, 20, 1, bias=False)
        models[f"timm {args.timm_model} (stride 32)"] = nn.Sequential(backbone, head).eval()
    for name, model in models.items():
        with torch.inference_mode():
            model(images[:1])  # warm-up
        batched = torch.cat(
            [
                infer_cams(model, images[i : i + 1], labels[i : i + 1], scales)
                for i in range(len(images))
            ]
        )
        grouped = torch.cat(
            [
                infer_cams(model, images[i : i + args.batch], labels[i : i + args.batch], scales)
                for i in range(0, len(images), args.batch)
            ]
        )
        reference = torch.stack(
            [per_image_reference(model, images[i], labels[i], scales) for i in range(len(images))]
        )
        torch.testing.assert_close(batched, reference, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(grouped, reference, atol=1e-4, rtol=1e-4)
        last = torch.cat(
            [
                infer_cams(model, images[i : i + 1], labels[i : i + 1], scales, channels_last=True)
                for i in range(len(images))
            ]
        )
        torch.testing.assert_close(last, reference, atol=1e-4, rtol=1e-4)
        times: dict[str, list[float]] = {
            "reference": [],
            "batch 1": [],
            f"batch {args.batch}": [],
            "batch 1 channels_last": [],
        }
        for _ in range(args.repeats):
            start = time.perf_counter()
            for i in range(len(images)):
                per_image_reference(model, images[i], labels[i], scales)
            times["reference"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(len(images)):
                infer_cams(model, images[i : i + 1], labels[i : i + 1], scales)
            times["batch 1"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(0, len(images), args.batch):
                infer_cams(model, images[i : i + args.batch], labels[i : i + args.batch], scales)
            times[f"batch {args.batch}"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(len(images)):
                infer_cams(model, images[i : i + 1], labels[i : i + 1], scales, channels_last=True)
            times["batch 1 channels_last"].append(time.perf_counter() - start)
        ref = float(np.median(times["reference"]))
        report = ", ".join(
            f"{key} {float(np.median(v)):.2f} s ({ref / float(np.median(v)):.2f}x)"
            for key, v in times.items()
            if key != "reference"
        )
        print(
            f"[infer] {name}, {len(images)} images {height}x{width}, scales {scales} + flip: "
            f"per-image loop {ref:.2f} s; infer_cams {report} (target >= 1.5x); "
            "same seeds (atol 1e-4)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--reference-images", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--infer-images", type=int, default=8)
    parser.add_argument("--infer-size", type=int, nargs=2, default=(375, 500))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--timm-model", default="", help="also time a timm backbone, e.g. resnet18")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-infer", action="store_true")
    args = parser.parse_args()
    args.reference_images = max(1, min(args.reference_images, args.images))
    if not args.skip_eval:
        bench_evaluation(args)
    if not args.skip_infer:
        bench_inference(args)


if __name__ == "__main__":
    main()
