"""The public API: a snapshot of every ``__all__``, documented names, and imports that run one way.

The source scan reads ``src/seedkit`` with :mod:`ast` (no import; imports inside
functions count like the others) and fails on

- an import cycle between seedkit's packages (``losses``, ``kernels``, ...,
  and the top-level modules ``checks``, ``errors``, ``files``, ``reference``, ``viz``),
- an import cycle between modules, a name imported from a package counting as an
  import of the module that defines it,
- an import against the layering (see the Architecture notes of the docs'
  API page): examples -> engine -> cam / refine / metrics / segmentation ->
  losses / backbones / views / teacher -> kernels -> reference math / checks / errors,
- an underscore name (or a module under an underscore path) imported from another package,
- ``kernels`` importing ``losses``.

A change to a snapshot below is a change of the public API: update it with the
CHANGELOG entry that announces it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import types
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "seedkit"

# fmt: off
PUBLIC_API: dict[str, list[str]] = {
    "seedkit": [
        "ConsistencyLoss", "EMATeacher", "SeedGenerationLoss", "SelfAdaptiveView", "USAGELoss",
        "USAGELossOutput", "__version__", "backbones", "consistency_loss", "errors",
        "flush_input_checks", "input_checks", "input_checks_enabled", "losses",
        "seed_generation_loss", "seeds_from_cams", "set_input_checks",
        "spatial_activation_distribution", "temperature_pool",
    ],
    "seedkit.backbones": [
        "HEADS", "LOCAL_WEIGHT_PACKAGES", "MCTSeedModel", "MCTSeedModelOutput",
        "MCT_ATTENTION_BLOCKS", "SeedModel", "SeedModelOutput", "create_seed_model",
        "detect_family", "is_transformer_block", "local_pretrained_weights", "unwrap_model",
        "with_output_stride",
    ],
    "seedkit.cam": [
        "DEFAULT_SCALES", "MAP_KINDS", "MCTLocalizationMaps", "SEED_FORMATS", "as_seed_map_model",
        "cams_of", "fuse_attention_cams", "infer_cams", "localization_maps",
        "refine_with_affinity", "save_psa_maps", "save_seeds", "write_cams",
    ],
    "seedkit.checks": [
        "flush_input_checks", "input_checks", "input_checks_enabled", "set_input_checks",
    ],
    "seedkit.cli": [
        "COMMAND_MODULES", "build_parser", "main",
    ],
    "seedkit.data": [
        "COCOSegmentation", "COCO_CLASSES", "DEMO_CLASSES", "IGNORE_INDEX", "IMAGENET_MEAN",
        "IMAGENET_STD", "InferenceTransform", "KEY_TYPES", "TrainTransform", "VOCSegmentation",
        "VOC_CLASSES", "VOC_PALETTE", "atomic_write_bytes", "class_names_for", "coco_category_map",
        "collate", "labels_from_mask", "labels_from_xml", "load_cls_labels", "make_cls_labels",
        "make_coco_cls_labels", "make_demo_data", "normalize_image", "parse_voc_xml",
        "read_id_list", "read_image", "read_mask", "render_coco_masks", "resolve_voc_root",
        "sample_generator", "save_cls_labels", "voc_mask_path", "voc_palette", "write_mask_png",
    ],
    "seedkit.engine": [
        "AffinityDataset", "DEMO_PSEUDO_MASKS", "DEMO_SEGMENTATION", "DistributedContext",
        "KINDS", "PSEUDO_MASK_STAGE", "PseudoMaskStageConfig", "RECIPES",
        "ResumableShardSampler", "RunFolder", "RunLogger", "RunPlan", "SEED_STAGE",
        "SEGMENTATION_STAGE", "SETTINGS", "STAGES", "STRONG_DROP", "SeedStageConfig",
        "SeedTrainingState", "SegmentationStageConfig", "Setting", "Stage", "StageConfig",
        "StepFunction", "StepInfo", "StepOutput", "Trainer", "TrainingState", "WEAK_DROP",
        "apply_recipe", "backbone_kwargs", "build_optimizer", "cam_validity_mask",
        "check_evaluation_list", "class_names_for", "current_results", "ensure_seeds",
        "ensure_writable_directory", "eval_dataset", "evaluate_model_seeds", "fingerprint",
        "gt_dir", "has_run", "init_distributed", "load_checkpoint", "load_config",
        "load_seed_model", "load_stage_model", "lr_schedule", "pooling_fraction",
        "run_pseudo_mask_stage", "run_seed_stage", "run_segmentation_stage", "run_stage",
        "save_checkpoint", "save_config", "token_classification_loss", "total_steps",
        "train_seed_model", "train_stage", "view_drops", "wrap_model",
    ],
    "seedkit.errors": [
        "BackboneError", "DataError", "DataFileError", "InvalidValueError", "NonFiniteError",
        "OutputError", "PretrainedWeightsError", "RunConflictError", "SeedkitError", "ShapeError",
    ],
    "seedkit.files": [
        "ContentDigests", "LOCK_NAME", "TEMPORARY_SUFFIX", "atomic_write",
        "check_writable_directory", "ensure_directory", "ensure_writable_directory",
        "file_digest", "folder_lock", "load_npy", "remove_stale_temporaries",
    ],
    "seedkit.kernels": [
        "AUTO_MIN_NUMEL", "BACKENDS", "compile_seconds", "compiled_available",
        "fused_kl_consistency", "fused_temperature_pool", "get_backend", "kl_rows", "pool_rows",
        "resolve_backend", "self_check", "self_check_results", "set_backend", "triton_available",
        "use_backend",
    ],
    "seedkit.losses": [
        "ACTIVATION_PRESETS", "ACTIVATION_STATES", "CONSISTENCY_PRESETS",
        "CONSISTENCY_WEIGHT", "ConsistencyLoss", "JSDivergence", "KLDivergence",
        "MaxNormL1", "SeedGenerationLoss", "TEMPERATURE_PRESETS", "USAGELoss",
        "USAGELossOutput", "activation_state", "consistency_loss", "consistency_ramp",
        "effective_fraction", "global_average_pool", "make_distance",
        "seed_generation_loss", "seeds_from_cams", "spatial_activation_distribution",
        "spatial_log_distribution", "temperature_pool", "temperature_pool_reference",
    ],
    "seedkit.metrics": [
        "MEAN_OVER", "SweepResult", "TRIVIAL_BASELINES", "ThresholdSweep", "as_seed_maps",
        "centred_blob", "confusion_matrix", "default_thresholds", "evaluate_seeds",
        "fp_fn_rates", "iou_from_confusion", "load_gt_mask", "load_psa_cam",
        "load_psa_maps", "seed_labels", "trivial_baselines",
    ],
    "seedkit.reference": [
        "MAX_NORM_EPS", "SCALES", "flatten_maps", "kl_consistency", "kl_divergence",
        "log_distribution", "max_normalize", "neff_fraction", "scale_divisor",
        "scaled_logits", "temperature_pool_flat", "upcast",
    ],
    "seedkit.refine": [
        "AffinityLabels", "AffinityNet", "IRN_BETA", "IRN_BG_THRESHOLD", "IRN_EXP_TIMES",
        "IRN_FG_THRESHOLD", "PSA_BETA", "PSA_LOGT", "RandomWalkSettings", "affinity_labels",
        "affinity_loss", "background_scores", "confident_labels", "crf_refine_seeds", "dense_crf",
        "dense_random_walk", "dense_transition_matrix", "evaluate_pseudo_masks", "local_offsets",
        "local_transition", "pair_affinity", "propagate_seeds", "pseudo_mask_from_seeds",
        "random_walk", "shift2d", "write_pseudo_masks",
    ],
    "seedkit.segmentation": [
        "SEGMENTATION_ARCHITECTURES", "SegmentationNet", "SegmentationResult", "TimmDeepLabV3",
        "create_segmentation_model", "evaluate_segmentation", "predict_probs",
    ],
    "seedkit.teacher": [
        "EMATeacher",
    ],
    "seedkit.views": [
        "AdjustableBlock", "Segment", "SelfAdaptiveView", "Sites", "find_adjustable_blocks",
    ],
    "seedkit.viz": [
        "overlay_panel", "save_overlay", "seed_labels",
    ],
}
# fmt: on

#: Layer of each package (a top-level module counts as a package): a module may
#: import from its own layer or a lower one, never from a higher one.
LAYERS: dict[str, int] = {
    "__main__": 7, "cli": 7,
    "engine": 6,
    "seedkit": 5, "cam": 5, "refine": 5, "metrics": 5, "segmentation": 5, "viz": 5,
    "losses": 4, "backbones": 4, "views": 4, "teacher": 4, "data": 4,
    "kernels": 3,
    "reference": 2, "checks": 2, "files": 2,
    "errors": 1,
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(module: str) -> str:
    """``seedkit.losses.activation`` -> ``losses``; ``seedkit`` -> ``seedkit``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "seedkit"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every seedkit module (or ``module.name``) a file imports, lazily or not, with its line."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            found += [(f"{source}.{alias.name}", node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.split(".")[0] == "seedkit"]


def _edges() -> list[tuple[str, str, str, int]]:
    """``(importer module, imported dotted name, file, line)`` over ``src/seedkit``."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, line in _imports(path):
            edges.append((_module_name(path), name, str(path.relative_to(ROOT)), line))
    return edges


def _target_module(name: str) -> str:
    """The module an imported dotted name lives in (``seedkit.errors.ShapeError`` -> its module)."""
    return name if _is_module(name) else name.rsplit(".", 1)[0]


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_all_matches_the_snapshot(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == PUBLIC_API[module_name]


def test_every_public_package_is_in_the_snapshot() -> None:
    public = {"seedkit"} | {
        f"seedkit.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").is_file())
    }
    assert public == set(PUBLIC_API)


@functools.cache
def _documented_constants() -> set[str]:
    """Module-level names with a comment right above their assignment (or its group)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        docstrings = " ".join(
            ast.get_docstring(node) or ""
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
        )
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                targets = [node.target.id]
            else:
                continue
            above = node.lineno - 2
            # a comment above a group of assignments documents the group
            while above >= 0 and lines[above] and not lines[above].lstrip().startswith("#"):
                if lines[above][0] in " )]}" or "=" not in lines[above]:
                    break
                above -= 1
            commented = above >= 0 and lines[above].lstrip().startswith("#")
            names |= {t for t in targets if commented or f"``{t}``" in docstrings}
    return names


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_every_listed_name_resolves_and_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert inspect.getdoc(module), f"{module_name} has no docstring"
    constants = _documented_constants()
    undocumented = []
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name} is listed but does not resolve"
        value = getattr(module, name)
        if (
            isinstance(value, types.ModuleType)
            or inspect.isclass(value)
            or inspect.isroutine(value)
        ):
            if not inspect.getdoc(value):
                undocumented.append(name)
        elif name not in constants and name != "__version__":
            undocumented.append(name)
    assert not undocumented, f"{module_name}: no docstring or comment for {undocumented}"


def test_no_underscore_name_is_imported_from_another_package() -> None:
    offending = []
    for importer, name, file, line in _edges():
        parts = name.split(".")
        if _package_of(importer) == _package_of(_target_module(name)):
            continue
        if any(_private(part) for part in parts[1:]):
            offending.append(f"{file}:{line} imports {name}")
    assert not offending, "\n".join(offending)


def test_kernels_never_import_losses() -> None:
    offending = [
        f"{file}:{line} imports {name}"
        for importer, name, file, line in _edges()
        if _package_of(importer) == "kernels" and _package_of(_target_module(name)) == "losses"
    ]
    assert not offending, "\n".join(offending)


def test_imports_run_one_way() -> None:
    packages = {_package_of(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert packages <= set(LAYERS), f"packages without a layer: {packages - set(LAYERS)}"
    upward = []
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, name, file, line in _edges():
        source, target = _package_of(importer), _package_of(_target_module(name))
        if source == target:
            continue
        graph[source].add(target)
        if LAYERS[target] > LAYERS[source]:
            upward.append(f"{file}:{line} ({source}, layer {LAYERS[source]}) imports {name}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)
    # no cycle among packages (imports within one layer must not go round)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def _defining_module(name: str) -> str:
    """The module an imported dotted name comes from, following a package's re-exports."""
    module = _target_module(name)
    path = PACKAGE.parent.joinpath(*module.split(".")) / "__init__.py"
    leaf = name.rsplit(".", 1)[-1]
    if module == name or not path.is_file():
        return module
    for node in ast.parse(path.read_text()).body:
        names = [a.asname or a.name for a in getattr(node, "names", [])]
        if isinstance(node, ast.ImportFrom) and node.module and not node.level and leaf in names:
            return _defining_module(f"{node.module}.{leaf}")
    return module


#: Module cycles known and not yet fixed (none).
KNOWN_CYCLES: set[frozenset[str]] = set()


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, name, _, _ in _edges():
        target = _defining_module(name)
        if target != importer:
            graph[importer].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 and frozenset(component) not in KNOWN_CYCLES:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_examples_and_benchmarks_import_no_private_name() -> None:
    offending = []
    for folder in ("examples", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("seedkit"):
                    names = [*node.module.split("."), *(a.name for a in node.names)]
                elif isinstance(node, ast.Import):
                    names = [
                        p
                        for a in node.names
                        if a.name.startswith("seedkit")
                        for p in a.name.split(".")
                    ]
                else:
                    continue
                if any(_private(n) for n in names):
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offending, "\n".join(offending)


#: The writer itself, and the append-only run log (one line per record, see docs/pipeline.rst).
WRITERS = {"src/seedkit/files.py", "src/seedkit/engine/logger.py"}


def test_files_are_written_only_through_the_atomic_writer() -> None:
    offending = []
    for folder in ("src/seedkit", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            if name in WRITERS:
                continue
            for node in ast.walk(ast.parse(path.read_text(), name)):
                if not isinstance(node, ast.Call):
                    continue
                function = node.func
                called = getattr(function, "attr", getattr(function, "id", ""))
                mode = node.args[1] if len(node.args) > 1 else None
                for keyword in node.keywords:
                    if keyword.arg == "mode":
                        mode = keyword.value
                writes = isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+")
                owner = getattr(getattr(function, "value", None), "id", "")
                moves = owner in {"os", "shutil"} and called in {"replace", "rename", "move"}
                copies = owner == "shutil" and called.startswith("copy")
                if (
                    called in {"write_text", "write_bytes"}
                    or moves
                    or copies
                    or (called == "open" and writes)
                ):
                    offending.append(f"{name}:{node.lineno} calls {called}")
    assert not offending, "write through seedkit.files.atomic_write:\n" + "\n".join(offending)


#: Import name of each distribution whose import name differs from its own.
IMPORT_NAMES = {"pillow": "PIL"}


def test_every_declared_dependency_is_imported() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add((node.module or "").split(".")[0])
    unused = []
    for requirement in project["dependencies"]:
        name = requirement.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
        if IMPORT_NAMES.get(name, name.replace("-", "_")) not in imported:
            unused.append(name)
    assert not unused, f"declared but never imported by src/seedkit: {unused}"


def test_no_two_public_functions_share_a_name_with_different_signatures() -> None:
    # One meaning per name: a public function or class name means one thing across
    # the package (re-exports of one object are fine; the command modules' register /
    # run protocol has one signature).
    import inspect
    import pkgutil

    import seedkit

    seen: dict[str, dict[int, tuple[str, object]]] = {}
    for info in pkgutil.walk_packages(seedkit.__path__, "seedkit."):
        if info.name.endswith("__main__") or any(
            _private(part) for part in info.name.split(".")[1:]
        ):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith(
                "seedkit"
            ):
                seen.setdefault(name, {})[id(obj)] = (info.name, obj)

    def parameters(obj: object) -> list[tuple[str, object]]:
        if inspect.isclass(obj):
            return [("class", obj.__qualname__)]
        return [(p.name, p.kind) for p in inspect.signature(obj).parameters.values()]

    clashes = {
        name: sorted(module for module, _ in objects.values())
        for name, objects in seen.items()
        if len({str(parameters(obj)) for _, obj in objects.values()}) > 1
    }
    assert clashes == {}
