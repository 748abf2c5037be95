from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from seedkit.cam import cams_of, infer_cams, write_cams
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
                out[c] = torch.exp((mean[c] - mean[c].max()) / temperature)
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
