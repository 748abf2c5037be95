from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from seedkit.cam import cams_of, infer_cams, save_seeds, write_cams
from seedkit.errors import InvalidValueError, ShapeError
from seedkit.metrics import load_psa_cam

NUM_CLASSES = 5


class TinyCamNet(nn.Module):
    """Deterministic stride-4 conv net returning CAMs (tensor or an object with .cams)."""

    def __init__(self, wrap: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
        )
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)
        self.wrap = wrap
        self.calls = 0
        self.images_seen = 0

    def forward(self, x: torch.Tensor):
        self.calls += 1
        self.images_seen += x.shape[0]
        cams = self.head(self.features(x))
        return SimpleNamespace(cams=cams, logits=cams.mean((2, 3))) if self.wrap else cams


def reference_seeds(model, image, labels, scales, flip, temperature):
    """Per-image, per-view loop: one forward per (scale, flip)."""
    height, width = image.shape[-2:]
    views = []
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        inputs = [x, x.flip(-1)] if flip else [x]
        for k, view in enumerate(inputs):
            cam = cams_of(model(view))
            if k == 1:
                cam = cam.flip(-1)
            if temperature is None:
                cam = F.relu(cam)
            views.append(
                F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)
            )
    mean = torch.stack(views).mean(0)[0]
    out = torch.zeros_like(mean)
    for c in range(mean.shape[0]):
        if labels[c] > 0:
            if temperature is None:
                out[c] = mean[c] / (mean[c].max() + 1e-5)
            else:
                # the default scale-free form: tau in units of the map's spatial spread
                spread = mean[c].std(unbiased=False)
                out[c] = torch.exp((mean[c] - mean[c].max()) / (temperature * spread))
    return out


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("temperature", [None, 0.5])
def test_batched_multiscale_equals_per_image_loop(wrap, temperature):
    model = TinyCamNet(wrap).eval()
    torch.manual_seed(1)
    images = torch.randn(3, 3, 30, 44)
    labels = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 1, 1, 0, 0]], dtype=torch.float32)
    seeds = infer_cams(model, images, labels, temperature=temperature)
    assert model.calls == 4  # one forward per scale: all images and flips together
    assert seeds.shape == (3, NUM_CLASSES, 30, 44)
    for b in range(3):
        expected = reference_seeds(
            model, images[b], labels[b], (1.0, 0.5, 1.5, 2.0), True, temperature
        )
        torch.testing.assert_close(seeds[b], expected, atol=1e-5, rtol=1e-4)
        assert (seeds[b][labels[b] == 0] == 0).all()
        present = seeds[b][labels[b] > 0]
        assert present.min() >= 0 and present.amax(dim=(1, 2)).sub(1).abs().max() < 1e-3


def test_scales_flip_and_output_size():
    model = TinyCamNet().eval()
    images = torch.randn(1, 3, 20, 28)
    labels = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]])
    seeds = infer_cams(model, images, labels, scales=(1.0,), flip=False, output_size=(40, 56))
    expected = reference_seeds(model, images[0], labels[0], (1.0,), False, None)
    # same as the single view upsampled to the output size
    up = F.interpolate(F.relu(model(images)), size=(40, 56), mode="bilinear", align_corners=False)[
        0, 1
    ]
    torch.testing.assert_close(seeds[0, 1], up / (up.max() + 1e-5), atol=1e-5, rtol=1e-4)
    assert expected.shape[-2:] == (20, 28) and seeds.shape[-2:] == (40, 56)


@pytest.mark.parametrize("temperature", [None, 0.5])
def test_max_pixels_bounds_each_forward_and_keeps_the_seeds(temperature):
    model = TinyCamNet().eval()
    torch.manual_seed(3)
    images = torch.randn(3, 3, 20, 28)
    labels = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 1, 1, 0, 0]], dtype=torch.float32)
    unbounded = infer_cams(model, images, labels, temperature=temperature)
    sizes = []
    model.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape))
    # 2 views at scale 1.0 (20 x 28 = 560 px); a 10 x 14 view at 0.5; one view at 1.5 and 2.0.
    bounded = infer_cams(model, images, labels, temperature=temperature, max_pixels=1200)
    per_scale = [(s[0], s[2], s[3]) for s in sizes]
    assert per_scale == [(2, 20, 28)] * 3 + [(6, 10, 14)] + [(1, 30, 42)] * 6 + [(1, 40, 56)] * 6
    assert all(n * h * w <= 1200 or n == 1 for n, h, w in per_scale)
    # The same seeds, up to the float rounding of the model on batches of another size
    # (which the scale-free temperature form divides by the map's spread: 1e-5).
    torch.testing.assert_close(bounded, unbounded, atol=1e-5, rtol=0)
    sizes.clear()
    one_view = infer_cams(model, images, labels, temperature=temperature, max_pixels=1)
    assert len(sizes) == 4 * 6 and {s[0] for s in sizes} == {1}  # one view per forward
    torch.testing.assert_close(one_view, unbounded, atol=1e-5, rtol=0)


def test_bad_model_output_and_arguments():
    images = torch.randn(1, 3, 8, 8)
    labels = torch.ones(1, NUM_CLASSES)
    with pytest.raises(InvalidValueError, match="model output"):
        infer_cams(lambda x: [x], images, labels)
    with pytest.raises(ShapeError, match="model output cams"):
        infer_cams(lambda x: torch.zeros(x.shape[0], 3, 2, 2), images, labels)
    with pytest.raises(InvalidValueError, match="scales"):
        infer_cams(TinyCamNet(), images, labels, scales=(0.0,))
    with pytest.raises(ShapeError, match="labels"):
        infer_cams(TinyCamNet(), images, torch.ones(2, NUM_CLASSES))
    for bad in (0, 2.5, True):
        with pytest.raises(InvalidValueError, match="max_pixels"):
            infer_cams(TinyCamNet(), images, labels, max_pixels=bad)


class DictDataset(torch.utils.data.Dataset):
    def __init__(self, sizes, expose_ids=True):
        generator = torch.Generator().manual_seed(2)
        self.items = []
        for index, (h, w) in enumerate(sizes):
            labels = torch.zeros(NUM_CLASSES)
            labels[index % NUM_CLASSES] = 1
            labels[(index + 2) % NUM_CLASSES] = 1
            self.items.append(
                {
                    "id": f"img{index}",
                    "image": torch.randn(3, h, w, generator=generator),
                    "labels": labels,
                }
            )
        if expose_ids:
            self.ids = [item["id"] for item in self.items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_write_cams_psa_files_resume_shards_and_batches(tmp_path):
    sizes = [(24, 32), (24, 32), (16, 20), (24, 32), (24, 32)]
    dataset = DictDataset(sizes)
    model = TinyCamNet(wrap=True).train()
    written = write_cams(model, dataset, tmp_path, batch_size=2, progress=False)
    assert model.training  # mode restored
    assert written == [f"img{i}" for i in range(5)]
    assert model.calls == 3 * 4  # batches [img0, img1], [img2] (other size), [img3, img4]; 4 scales
    assert model.images_seen == 5 * 4 * 2  # every image once per scale and flip
    for index, item in enumerate(dataset.items):
        maps = np.load(tmp_path / f"{item['id']}.npy", allow_pickle=True).item()
        assert sorted(maps) == sorted(torch.nonzero(item["labels"]).flatten().tolist())
        assert all(m.shape == sizes[index] and m.dtype == np.float32 for m in maps.values())
        expected = infer_cams(model.eval(), item["image"][None], item["labels"][None])[0]
        model.train()
        stack = load_psa_cam(tmp_path / f"{item['id']}.npy", NUM_CLASSES)
        np.testing.assert_allclose(stack, expected.numpy(), atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".npy"]  # no temp files left

    # resume: nothing left to do, model never called
    model.calls = 0
    assert write_cams(model, dataset, tmp_path, progress=False) == []
    assert model.calls == 0
    # datasets without .ids still resume (after loading the item)
    (tmp_path / "img3.npy").unlink()
    assert write_cams(model, DictDataset(sizes, expose_ids=False), tmp_path, progress=False) == [
        "img3"
    ]
    # overwrite and sharding
    shard = tmp_path / "shard"
    assert write_cams(model, dataset, shard, rank=1, world_size=2, progress=False) == [
        "img1",
        "img3",
    ]
    assert write_cams(
        model, dataset, shard, overwrite=True, rank=0, world_size=2, progress=False
    ) == ["img0", "img2", "img4"]
    with pytest.raises(InvalidValueError, match="rank"):
        write_cams(model, dataset, shard, rank=2, world_size=2, progress=False)


def test_write_cams_float16_and_valid_crop(tmp_path):
    dataset = DictDataset([(16, 24)])
    valid = torch.zeros(16, 24, dtype=torch.bool)
    valid[:12, :20] = True
    dataset.items[0]["valid"] = valid
    write_cams(TinyCamNet(), dataset, tmp_path, dtype=np.float16, progress=False)
    maps = np.load(tmp_path / "img0.npy", allow_pickle=True).item()
    assert all(m.shape == (12, 20) and m.dtype == np.float16 for m in maps.values())


def test_channels_last_gives_the_same_seeds():
    model = TinyCamNet().eval()
    images = torch.randn(2, 3, 20, 28)
    labels = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
    torch.testing.assert_close(
        infer_cams(model, images, labels, channels_last=True),
        infer_cams(model, images, labels),
        atol=1e-5,
        rtol=1e-4,
    )


def test_write_cams_irn_format_loads_as_irn_reads_it(tmp_path):
    dataset = DictDataset([(18, 26), (16, 24)])
    valid = torch.zeros(16, 24, dtype=torch.bool)
    valid[:13, :21] = True  # a padded image: files hold the unpadded 13 x 21 region
    dataset.items[1]["valid"] = valid
    model = TinyCamNet()
    write_cams(model, dataset, tmp_path / "psa", progress=False)
    write_cams(model, dataset, tmp_path / "irn", progress=False, format="irn")
    for item, size in zip(dataset.items, [(18, 26), (13, 21)], strict=True):
        path = tmp_path / "irn" / f"{item['id']}.npy"
        cam_dict = np.load(path, allow_pickle=True).item()
        assert sorted(cam_dict) == ["cam", "high_res", "keys"]
        keys = cam_dict["keys"]
        assert keys.tolist() == torch.nonzero(item["labels"]).flatten().tolist()
        high_res = cam_dict["high_res"]
        assert high_res.shape == (len(keys), *size) and high_res.dtype == np.float32
        strided = cam_dict["cam"]  # IRN's random walk calls .cuda() on it: a tensor
        assert isinstance(strided, torch.Tensor) and strided.dtype == torch.float32
        assert tuple(strided.shape) == (len(keys), -(-size[0] // 4), -(-size[1] // 4))
        assert float(strided.max()) < 1.0 and float(strided.amax(dim=(1, 2)).min()) > 0.99
        # IRN's eval / cam_to_ir_label: background plane at t, argmax, index into keys + 1.
        psa = np.load(tmp_path / "psa" / f"{item['id']}.npy", allow_pickle=True).item()
        for t in (0.05, 0.3):
            padded = np.pad(high_res, ((1, 0), (0, 0), (0, 0)), constant_values=t)
            labels = np.pad(keys + 1, (1, 0))[np.argmax(padded, axis=0)]
            stack = np.zeros((NUM_CLASSES + 1, *size), np.float32)
            for key, value in psa.items():
                stack[key + 1] = value
            stack[0] = t
            np.testing.assert_array_equal(labels, np.argmax(stack, axis=0))
        np.testing.assert_array_equal(
            load_psa_cam(path, NUM_CLASSES), load_psa_cam(tmp_path / "psa" / path.name, NUM_CLASSES)
        )


def test_save_seeds_checks_its_input(tmp_path):
    path = tmp_path / "a.npy"
    ok = np.zeros((4, 6), np.float32)
    for maps, fmt, match in [
        ({0: ok}, "png", "format"),
        ({"person": ok}, "psa", "class indices"),
        ({-1: ok}, "psa", "class indices"),
        ({0: np.zeros((2, 4, 6), np.float32)}, "psa", r"maps\[0\]"),
        ({0: ok, 3: np.zeros((6, 4), np.float32)}, "irn", r"maps\[3\]"),
        ({0: np.full((4, 6), np.nan, np.float32)}, "irn", "NaN"),
        ({0: np.zeros((4, 6), np.int64)}, "psa", "floating-point"),
        ({}, "irn", "size"),
    ]:
        with pytest.raises((InvalidValueError, ShapeError), match=match):
            save_seeds(maps, path, format=fmt)
    assert not path.exists() and not list(tmp_path.iterdir())
    save_seeds({}, path, format="irn", size=(5, 7))
    empty = np.load(path, allow_pickle=True).item()
    assert empty["high_res"].shape == (0, 5, 7) and tuple(empty["cam"].shape) == (0, 2, 2)
    assert load_psa_cam(path, NUM_CLASSES, shape=(5, 7)).sum() == 0
    save_seeds({2: torch.ones(4, 6)}, path)  # tensors are saved as numpy arrays
    assert isinstance(np.load(path, allow_pickle=True).item()[2], np.ndarray)


class NegativeCamNet(nn.Module):
    """CAMs below zero everywhere: every max-normalised seed map is zero."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NUM_CLASSES, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -1.0 - self.head(x).abs()


def test_write_cams_warns_when_every_seed_map_is_zero(tmp_path):
    dataset = DictDataset([(16, 20), (16, 20)])
    with pytest.warns(RuntimeWarning, match="every seed map of the 2 images"):
        write_cams(NegativeCamNet(), dataset, tmp_path, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_cams(TinyCamNet(), dataset, tmp_path / "ok", progress=False)
