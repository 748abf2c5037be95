import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

fig, ax = plt.subplots(figsize=(10, 3.2), dpi=120)
ax.set_xlim(0, 10)
ax.set_ylim(0, 3.2)
ax.axis("off")
boxes = [
    (
        0.2,
        "Stage 1: seeds",
        "classifier (CAM / USAGE)\nmulti-scale + flip CAMs",
        "OUT/<method>/seeds/<id>.npy\nseeds.miou (train)",
    ),
    (
        3.55,
        "Stage 2: pseudo masks",
        "affinity net on confident regions\n(fg > 0.30, bg < 0.05)\n"
        "random walk (beta 10, 2^8 steps)",
        "OUT/pseudo_masks/masks/<id>.png\npseudo_masks.miou (train)",
    ),
    (
        6.9,
        "Stage 3: segmentation",
        "DeepLabV3 on pseudo masks\nmulti-scale + flip (+ CRF)",
        "OUT/segmentation/\nsegmentation.miou (val)",
    ),
]
colours = ["#dbe9f6", "#e3f1dc", "#fbe5d6"]
for (x, title, body, files), colour in zip(boxes, colours, strict=False):
    ax.add_patch(
        FancyBboxPatch((x, 0.9), 2.9, 2.1, boxstyle="round,pad=0.05", fc=colour, ec="#333333")
    )
    ax.text(x + 1.45, 2.7, title, ha="center", va="center", fontsize=11, weight="bold")
    ax.text(x + 1.45, 1.85, body, ha="center", va="center", fontsize=8.5)
    ax.text(
        x + 1.45,
        0.45,
        files,
        ha="center",
        va="center",
        fontsize=8,
        family="monospace",
        color="#333333",
    )
for x in (3.15, 6.5):
    ax.annotate("", xy=(x + 0.35, 1.95), xytext=(x, 1.95), arrowprops=dict(arrowstyle="->", lw=2))
fig.tight_layout()
fig.savefig("docs/_static/pipeline_stages.png")
