"""A run folder and the records that tie every file in it to what produced it, by content.

``OUT/run.json`` holds the ``training`` settings of the stage's network, the content
digests of its inputs, the steps trained (in *segments*), the SHA-256 of the model
and, per derived folder, its fingerprint and the digest of every file and of its
source. :meth:`RunFolder.decide` finds what to do without touching anything (the
rules of docs/reproducing.rst); only then does :meth:`RunFolder.apply` act.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedkit.engine.config import ARTEFACT, LENGTH, TRAINING, StageConfig, save_config
from seedkit.engine.distributed import DistributedContext
from seedkit.errors import DataError, InvalidValueError, OutputError, RunConflictError
from seedkit.files import (
    TEMPORARY_SUFFIX,
    ContentDigests,
    atomic_write,
    ensure_writable_directory,
    remove_stale_temporaries,
)

__all__ = [
    "CHECKPOINT_NAME", "RUN_RECORD", "RunFolder", "RunPlan", "dataset_digest", "files_digest",
    "fingerprint", "has_run", "setting_differences",
]  # fmt: skip

CHECKPOINT_NAME = "checkpoint.pt"
RUN_RECORD = "run.json"
RECORD_FORMAT = "seedkit.run"
LENGTHS = ("max_steps", "epochs")

#: Descriptions of the inputs a run records, as its messages name them.
INPUT_NAMES = {
    "train_data": "training data (images and labels of the training list)",
    "checkpoint_path": "content of checkpoint_path",
    "seeds": "seeds (stage-1 output)",
    "masks": "pseudo masks (stage-2 output)",
}


def fingerprint(values: Any) -> str:
    """A short SHA-256 of a JSON-able value (keys sorted): equal settings, equal print.

    Example:
        >>> fingerprint({"a": 1, "b": [2, 3]}) == fingerprint({"b": [2, 3], "a": 1})
        True
    """
    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_digest(paths: list[Path], digests: ContentDigests) -> str:
    """Digest of files by name and content (a missing file is an error naming it)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}:{digests.digest(path)}\n".encode())
    return digest.hexdigest()[:16]


def dataset_digest(dataset: Any, digests: ContentDigests) -> str:
    """Content digest of a VOC-layout dataset: its ids, each image and each id's labels.

    Labels are the label table's row, else the content of the mask or XML file they
    come from: a copy of the data with edited images or masks has another digest.
    """
    from seedkit.data import voc_mask_path

    table = getattr(dataset, "cls_labels", None)
    digest = hashlib.sha256()
    for image_id in dataset.ids:
        digest.update(f"{image_id}:{digests.digest(dataset.image_path(image_id))}".encode())
        if table is not None:
            digest.update(table[image_id].tobytes())
        else:
            label = voc_mask_path(dataset.root, image_id, getattr(dataset, "mask_dir", None))
            label = label or dataset.root / "Annotations" / f"{image_id}.xml"
            digest.update(digests.digest(label).encode())
    return digest.hexdigest()[:16]


def has_run(out: str | Path) -> bool:
    """Whether ``out`` holds a run a stage could resume or reuse (a record or a checkpoint)."""
    out = Path(out)
    return (out / RUN_RECORD).is_file() or (out / CHECKPOINT_NAME).is_file()


@dataclass
class RunPlan:
    """What a stage will do in its run folder, as :meth:`RunFolder.decide` found.

    Attributes:
        train: whether the network must be (further) trained.
        resume: whether training continues from ``checkpoint.pt``.
        changes: ``(setting, recorded, requested)`` for settings a resume changed.
        fresh: whether the folder's files are deleted first (a new run).
        note: why a run of these settings starts over (its inputs changed).
    """

    train: bool
    resume: bool
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    fresh: bool = False
    note: str = ""


class RunFolder:
    """The run folder of one stage: its decision, records and the files the stage owns.

    Args:
        config: the stage's validated config (``config.out`` is the folder).
        context: the process's distributed context (rank 0 writes, all ranks read).
        model_name: the finished model's file name (``model.pt``...).
        owned: the other files and folders the stage writes into ``OUT``.
        inputs: content digests of what the network trains from besides its settings
            (``{"train_data": ..., "seeds": ...}``); ``None``: an earlier stage of the
            command still remakes them.
        total_steps: the schedule length the config asks for.
        digests: the content-digest cache (default: ``OUT/digests.json``).
    """

    def __init__(
        self,
        config: StageConfig,
        context: DistributedContext,
        model_name: str,
        owned: tuple[str, ...],
        inputs: dict[str, Any] | None,
        total_steps: int,
        digests: ContentDigests | None = None,
    ) -> None:
        self.config, self.context, self.out = config, context, Path(config.out)
        self.model_name = model_name
        self.owned = (CHECKPOINT_NAME, model_name, "config.json", "log.jsonl", "tensorboard")
        self.owned += (RUN_RECORD, "digests.json", *owned)
        self.digests = digests or ContentDigests(self.out / "digests.json")
        self.inputs = None if inputs is None else dict(inputs)
        self.total_steps = int(total_steps)
        self.record: dict[str, Any] = {}
        self.changes: list[tuple[str, Any, Any]] = []

    @property
    def model_path(self) -> Path:
        """The finished model's file."""
        return self.out / self.model_name

    @property
    def checkpoint_path(self) -> Path:
        """The training checkpoint."""
        return self.out / CHECKPOINT_NAME

    def read(self) -> dict[str, Any] | None:
        """The recorded run in ``OUT``: run.json, else the record inside the model/checkpoint."""
        path = self.out / RUN_RECORD
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DataError(path, "a run record (JSON)", f"invalid JSON ({error})") from error
            if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
                raise DataError(path, "a seedkit run record", "another file")
            return record
        from seedkit.engine.checkpoint import load_checkpoint

        for name, status in ((self.model_name, "trained"), (CHECKPOINT_NAME, "training")):
            if (self.out / name).is_file():
                state = load_checkpoint(self.out / name)
                if not isinstance(state.get("run"), dict):
                    return {"format": None}
                record = {**state["run"], "status": status, "artefacts": {}}
                if status == "trained":  # a model file alone (copied from a finished run)
                    sha = self.digests.digest(self.out / name)
                    record["model"] = {"file": name, "sha256": sha}
                return record
        return {"format": None} if any((self.out / n).exists() for n in self.owned) else None

    def decide(self, resume: bool = False, overwrite: bool = False) -> RunPlan:
        """What the stage will do with ``OUT``; changes nothing on disk.

        A run of these settings whose inputs changed by content starts over
        (:attr:`RunPlan.note` says why): its numbers would not be its inputs'.

        Raises:
            RunConflictError: ``OUT`` holds a run of other settings, an unfinished one
                (without ``resume``), nothing to resume (with it), or a model file
                that was changed since training; the message names what differs.
        """
        if resume and overwrite:
            raise InvalidValueError("resume / overwrite", "at most one of them", (True, True))
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(self.out, "it exists and is not a folder")
        prior = None if overwrite else self.read()
        started = prior is not None and (prior.get("status") != "training" or any(
            p.exists() for p in (self.checkpoint_path, self.model_path)
        ))  # fmt: skip
        if not started:  # nothing, or a run killed before its first checkpoint
            if resume and prior is None:
                raise RunConflictError(
                    self.out, f"nothing to resume: no {CHECKPOINT_NAME} or run record",
                    hint="run without `resume` to start it",
                )  # fmt: skip
            return RunPlan(train=True, resume=False, fresh=True)
        if prior.get("format") != RECORD_FORMAT:
            raise RunConflictError(
                self.out, "holds files of a run without a run record (an older seedkit's, or "
                "not a run)", hint="pass `overwrite` to replace it, or choose another `out`",
            )  # fmt: skip
        fields = self.config.values(TRAINING)
        training = setting_differences(prior.get("fields", {}), fields, LENGTHS)
        if prior.get("stage") != self.config.STAGE:
            training.insert(0, ("stage", prior.get("stage"), self.config.STAGE))
        done = int(prior.get("step", 0))
        recorded = self.config.values(TRAINING, LENGTH, ARTEFACT)
        everything = setting_differences(prior.get("recorded", {}), recorded)
        if not resume and (everything or training):
            hint = (
                "pass `resume` to continue it with these changes, `overwrite` to start over"
                if not training and self.total_steps >= done
                else "pass `overwrite` to replace it, or choose another `out`"
            )
            named = {name for name, _, _ in everything}
            differences = [*everything, *(d for d in training if d[0] not in named)]
            raise RunConflictError(self.out, "holds a different run", differences, hint)
        if training:
            hint = "they cannot change mid-run; pass `overwrite` to start over with them, or " \
                   "choose another `out`"  # fmt: skip
            problem = "cannot resume with other training settings"
            raise RunConflictError(self.out, problem, training, hint)
        if self.inputs is None:
            changed = ["files an earlier stage of this command remakes"]
        else:
            inputs = setting_differences(prior.get("inputs") or {}, self.inputs)
            changed = [INPUT_NAMES.get(name, name) for name, _, _ in inputs]
        if changed:
            note = f"its inputs changed since it was trained ({'; '.join(changed)}): it starts over"
            return RunPlan(train=True, resume=False, fresh=True, note=note)
        finished = prior.get("status") == "trained" and (
            self.model_path.is_file() or not self.config.trains()
        )
        if finished and self.config.trains() and "model" in prior:
            actual = self.digests.digest(self.model_path)
            if prior["model"].get("sha256") not in (None, actual):
                raise RunConflictError(
                    self.model_path, "was changed since it was trained (by content)",
                    [("sha256", prior["model"]["sha256"][:16], actual[:16])],
                    "pass `overwrite` to retrain it",
                )  # fmt: skip
        if not resume:
            if not finished:
                total = int(prior.get("total_steps", 0))
                raise RunConflictError(
                    self.out, f"holds an unfinished run of these settings (step {done} of {total})",
                    hint="pass `resume` to continue it, or `overwrite` to start over",
                )  # fmt: skip
            return RunPlan(train=False, resume=False)
        if self.total_steps < done:
            raise RunConflictError(
                self.out, f"cannot resume: the run has trained {done} steps, more than the "
                f"{self.total_steps} asked for", [d for d in everything if d[0] in LENGTHS],
                "ask for at least as many steps, or pass `overwrite` to start over",
            )  # fmt: skip
        if finished and self.total_steps == done:
            return RunPlan(train=False, resume=False, changes=everything)
        if not self.checkpoint_path.is_file():
            raise RunConflictError(
                self.out, f"cannot extend the finished run: {CHECKPOINT_NAME} is missing",
                hint="pass `overwrite` to start over",
            )  # fmt: skip
        return RunPlan(train=True, resume=True, changes=everything)

    def apply(self, plan: RunPlan) -> None:
        """Carry out ``plan``: clean ``OUT``, write ``config.json`` and ``run.json``.

        Call on every rank, with ``OUT`` locked (:func:`seedkit.files.folder_lock`).
        """
        self.changes = plan.changes
        prior = None if plan.fresh else self.read()
        self.context.barrier()  # every rank has read OUT before rank 0 changes it
        if self.context.is_main:
            ensure_writable_directory(self.out)
            remove_stale_temporaries(self.out, recursive=True)
            if plan.fresh:
                for name in self.owned:
                    _delete(self.out / name)
            elif plan.train:
                self.model_path.unlink(missing_ok=True)  # the model of the old length is stale
        self.record = self._new_record(prior, plan)
        if self.context.is_main:
            save_config(self.config, self.out / "config.json")
            self.write_record()
        self.context.barrier()

    def _new_record(self, prior: dict[str, Any] | None, plan: RunPlan) -> dict[str, Any]:
        import seedkit

        identity = {"stage": self.config.STAGE, "fields": self.config.values(TRAINING)}
        record: dict[str, Any] = {
            "format": RECORD_FORMAT, "stage": self.config.STAGE,
            "seedkit_version": seedkit.__version__,
            "fingerprint": fingerprint({**identity, "inputs": self.inputs}),
            "fields": self.config.values(TRAINING, LENGTH),
            "recorded": self.config.values(TRAINING, LENGTH, ARTEFACT), "inputs": self.inputs,
            "total_steps": self.total_steps, "step": 0, "segments": [], "status": "training",
            "artefacts": {},
        }  # fmt: skip
        if prior is not None:
            record.update({k: prior.get(k, record[k]) for k in ("step", "segments", "artefacts")})
            if not plan.train:
                record["status"] = prior.get("status", "trained")
                record["total_steps"] = int(prior.get("total_steps", self.total_steps))
                if "model" in prior:
                    record["model"] = prior["model"]
        if plan.changes:
            record["changes"] = [
                {"setting": name, "recorded": old, "now": new, "at_step": record["step"]}
                for name, old, new in plan.changes
            ]
        return record

    def write_record(self) -> None:
        """Write ``run.json`` (rank 0 only)."""
        if self.context.is_main:
            self.record["updated"] = round(time.time(), 3)
            text = json.dumps(self.record, indent=2, sort_keys=True, default=str) + "\n"
            atomic_write(self.out / RUN_RECORD, text.encode())

    def model_record(self) -> dict[str, Any]:
        """What a checkpoint or model file embeds about the run that wrote it."""
        record = {k: self.record[k] for k in ("format", "stage", "fingerprint", "fields")}
        record.update({k: self.record[k] for k in ("recorded", "inputs", "segments", "step")})
        return {**record, "total_steps": self.total_steps}

    def start_segment(self, step: int) -> None:
        """Record that training runs from ``step`` towards the current ``total_steps``."""
        segments = self.record["segments"]
        if segments and segments[-1]["total_steps"] == self.total_steps:
            segments[-1]["steps"][1] = step
        else:
            segments.append({"steps": [step, step], "total_steps": self.total_steps})
        self.record.update(step=step, total_steps=self.total_steps, status="training")

    def trained_to(self, step: int, status: str = "training") -> None:
        """Record a checkpoint (or the finished model) at ``step``, once it is on disk."""
        self.record.update(step=step, status=status)
        if self.record["segments"]:
            self.record["segments"][-1]["steps"][1] = step
        if status == "trained" and self.context.is_main and self.model_path.is_file():
            sha = self.digests.digest(self.model_path)
            self.record["model"] = {"file": self.model_name, "sha256": sha}
        self.write_record()

    def finish_training(self, step: int) -> None:
        """Record the finished model (called after it is on disk)."""
        self.trained_to(step, "trained")

    def model_digest(self) -> str | None:
        """SHA-256 of the finished model file (``None``: the stage trains none)."""
        return self.record.get("model", {}).get("sha256")

    def open_artefact(self, name: str, print_: str, sources: dict[str, str] | None = None) -> None:
        """Prepare the derived folder ``OUT/name`` for (more) files of fingerprint ``print_``.

        A folder of another fingerprint is deleted. Of a folder of this fingerprint,
        every file whose content is not the recorded one (edited, truncated, NaN
        written into it) or whose source changed (``sources``: ``{file name: digest of
        what it is made from}``) is deleted, and so is a file the record does not know
        once the folder was complete: the stage writes the missing files again. Call
        on every rank.
        """
        folder, sources = self.out / name, sources or {}
        recorded = self.record.setdefault("artefacts", {}).get(name)
        self.context.barrier()
        if self.context.is_main:
            if not recorded or recorded.get("fingerprint") != print_:
                _delete(folder)
                recorded = {"fingerprint": print_, "files": {}, "complete": False}
            files, made_from = recorded.setdefault("files", {}), recorded.get("sources", {})
            complete = recorded["complete"]
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                known = files.get(path.name)
                stale = path.name.endswith(TEMPORARY_SUFFIX) or (known is None and complete)
                if known is not None and path.name in sources:
                    stale = made_from.get(path.name) != sources[path.name]
                if stale or (known is not None and self.digests.digest(path)[:16] != known):
                    _delete(path)
            recorded["files"] = {k: v for k, v in files.items() if (folder / k).is_file()}
            recorded.update(sources={**made_from, **sources}, complete=False)
            self.record["artefacts"][name] = recorded
            self.write_record()
        self.context.barrier()

    def artefact_current(self, name: str, print_: str, names: list[str]) -> bool:
        """Whether ``OUT/name`` holds files ``names`` of fingerprint ``print_``, unchanged."""
        recorded = (self.read() or {}).get("artefacts", {}).get(name, {})
        files, folder = recorded.get("files", {}), self.out / name

        def unchanged(file: str) -> bool:
            path = folder / file
            return path.is_file() and self.digests.digest(path)[:16] == files.get(file)

        return recorded.get("fingerprint") == print_ and all(unchanged(n) for n in names)

    def close_artefact(self, name: str) -> None:
        """Record the content of every file of ``OUT/name`` and mark it complete (rank 0)."""
        if self.context.is_main:
            recorded, folder = self.record["artefacts"][name], self.out / name
            files = {
                p.name: self.digests.digest(p)[:16]
                for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
            }  # fmt: skip
            sources = {k: v for k, v in recorded.get("sources", {}).items() if k in files}
            recorded.update(files=files, sources=sources, complete=True)
            self.write_record()
            self.digests.save()


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def setting_differences(
    old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every key whose JSON value differs, in ``new``'s order."""
    result = []
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key), new.get(key)
        if key not in skip and json.dumps(a, sort_keys=True, default=str) != json.dumps(
            b, sort_keys=True, default=str
        ):
            result.append((key, a, b))
    return result
