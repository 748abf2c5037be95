"""Run the drop-in recipes against the real psa, SEAM, IRN, MCTformer and ToCo code.

Each recipe imports its reference classes from ``standins``. This script builds a
``standins`` module whose names are bound to the *real* classes of local clones
of the reference repositories, then runs the recipe's ``main()`` unchanged, one
recipe per process (psa and SEAM both name their package ``network``). Clone the
repositories into one folder, check out the commits the recipes name, and run::

    /tmp/refs/psa          jiwoon-ahn/psa        9493e59
    /tmp/refs/SEAM         YudeWang/SEAM         3212261
    /tmp/refs/irn          jiwoon-ahn/irn        a2ece00
    /tmp/refs/MCTformer    xulianuwa/MCTformer   9606597 (the last commit with MCTformer-V2)
    /tmp/refs/ToCo         rulixiang/ToCo        e13514d

    python examples/dropin/check_reference.py --refs /tmp/refs

It runs on the CPU with torch 2 and timm 1 (the models are built from random
weights, ``pretrained=False``). One thing is stubbed: IRN's ``resnet50_cam.Net``
downloads ImageNet weights in its constructor (``model_zoo.load_url``); the
stub returns the state dict of a randomly initialised torchvision ResNet-50
(same keys) instead. Nothing of the reference code is edited or copied.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import types
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: recipe -> [(name in standins, repository folder, module, attribute)]
BINDINGS: dict[str, list[tuple[str, str, str, str]]] = {
    "psa_seam": [
        ("PsaClassifier", "psa", "network.resnet38_cls", "Net"),
        ("SEAMNet", "SEAM", "network.resnet38_SEAM", "Net"),
    ],
    "irn": [("IRNClassifier", "irn", "net.resnet50_cam", "Net")],
    "mctformer": [("MCTformerV2", "MCTformer", "models", "MCTformerV2")],
    "toco": [("ToCoNet", "ToCo", "model.model_seg_neg", "network")],
}


def _load(repo: Path, module: str, attribute: str) -> object:
    """Import ``module`` from ``repo`` and forget its top-level package afterwards."""
    top = module.split(".")[0]
    sys.path.insert(0, str(repo))
    try:
        with warnings.catch_warnings():  # timm's deprecated import paths, registry overwrites
            warnings.simplefilter("ignore")
            value = getattr(importlib.import_module(module), attribute)
    finally:
        sys.path.remove(str(repo))
        for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
            del sys.modules[name]
    return value


def _stub_irn_download() -> None:
    """IRN's constructor downloads ImageNet weights: hand it random ones with the same keys."""
    import torch.utils.model_zoo
    import torchvision

    def load_url(url: str, *args: object, **kwargs: object) -> dict:
        print(f"  (stub: random ResNet-50 weights instead of downloading {url})")
        return torchvision.models.resnet50(weights=None).state_dict()

    torch.utils.model_zoo.load_url = load_url


def run_recipe(recipe: str, refs: Path) -> None:
    """Bind the recipe's reference names to the real classes and run its ``main()``."""
    if recipe == "irn":
        _stub_irn_download()
    standins = types.ModuleType("standins")
    standins.NUM_CLASSES = 20
    for name, repo, module, attribute in BINDINGS[recipe]:
        setattr(standins, name, _load(refs / repo, module, attribute))
        print(f"  {name} = {repo}: {module}.{attribute}")
    sys.modules["standins"] = standins
    sys.path.insert(0, str(HERE))
    importlib.import_module(recipe).main()


def _commit(repo: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return result.stdout.strip() or "unknown commit"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refs", type=Path, required=True, help="folder with the clones")
    parser.add_argument("--recipes", nargs="+", choices=sorted(BINDINGS), default=sorted(BINDINGS))
    parser.add_argument("--one", choices=sorted(BINDINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_recipe(args.one, args.refs)
        return 0
    failed = []
    for recipe in args.recipes:
        repos = sorted({repo for _, repo, _, _ in BINDINGS[recipe]})
        print(
            f"== {recipe}.py against " + ", ".join(f"{r} {_commit(args.refs / r)}" for r in repos)
        )
        command = [sys.executable, __file__, "--refs", str(args.refs), "--one", recipe]
        if subprocess.run(command).returncode != 0:
            failed.append(recipe)
    print("failed: " + ", ".join(failed) if failed else "all recipes ran on the reference code")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
