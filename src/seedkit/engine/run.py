"""A run folder and the records that tie every file in it to what produced it.

Each stage's ``OUT`` holds ``run.json``: the settings that determine its trained
network, the digests of its inputs (training list, starting weights, the previous
stage's files), the steps trained (in *segments*: a ``--resume`` that extends the
schedule starts a new one), the digest of the finished model and the fingerprint
of every derived folder (seeds, pseudo masks). :class:`RunFolder` reads it before
anything runs and decides, for the settings asked for:

- a new run (empty ``OUT``, or ``overwrite``: the stage's files are deleted first);
- a finished run of the same settings: its model is reused; derived files whose
  fingerprint matches are reused, stale ones recomputed;
- a resumed run: only the length and the settings used after training may
  differ; anything else is refused with the differences named;
- anything else (another run, an unfinished one without ``resume``, ``resume``
  with nothing to resume) is refused with a :class:`~seedkit.errors.RunConflictError`.

See docs/reproducing.rst for the rules as users see them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedkit.engine.config import StageConfig
from seedkit.engine.distributed import DistributedContext
from seedkit.errors import DataError, DataFileError, InvalidValueError, RunConflictError
from seedkit.files import (
    atomic_write,
    ensure_directory,
    ensure_writable_directory,
    file_digest,
    remove_stale_temporaries,
)

__all__ = [
    "CHECKPOINT_NAME",
    "RUN_RECORD",
    "RunFolder",
    "RunPlan",
    "dataset_digest",
    "fingerprint",
    "folder_fingerprint",
    "has_run",
    "setting_differences",
]

CHECKPOINT_NAME = "checkpoint.pt"
RUN_RECORD = "run.json"
RECORD_FORMAT = "seedkit.run"

#: Descriptions of the inputs a run records, as its error messages name them.
INPUT_NAMES = {
    "train_data": "training data (ids and labels of the training list)",
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


def dataset_digest(dataset: Any) -> str:
    """Fingerprint of a dataset's ids (in order) and, where it has a label table, their labels."""
    digest = hashlib.sha256("\n".join(map(str, dataset.ids)).encode())
    table = getattr(dataset, "cls_labels", None)
    if table is not None:
        for image_id in dataset.ids:
            digest.update(table[image_id].tobytes())
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: str | Path) -> str | None:
    """The recorded fingerprint of a folder a seedkit stage wrote, else one of its file listing.

    A folder named ``NAME`` inside a run folder with a ``run.json`` that records a
    complete artefact ``NAME`` has that artefact's fingerprint; any other folder is
    identified by the names, sizes and modification times of its files.
    """
    folder = Path(folder)
    record_path = folder.parent / RUN_RECORD
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
            artefact = record.get("artefacts", {}).get(folder.name)
        except (json.JSONDecodeError, AttributeError):
            artefact = None
        if artefact and artefact.get("complete"):
            return str(artefact["fingerprint"])
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return "files:" + digest.hexdigest()[:16]


def has_run(out: str | Path) -> bool:
    """Whether ``out`` holds a run a stage could resume or reuse (a record or a checkpoint)."""
    out = Path(out)
    return (out / RUN_RECORD).is_file() or (out / CHECKPOINT_NAME).is_file()


@dataclass
class RunPlan:
    """What a stage does in its run folder, as :meth:`RunFolder.prepare` decided.

    Attributes:
        train: whether the network must be (further) trained.
        resume: whether training continues from ``checkpoint.pt``.
        changes: ``(setting, recorded, requested)`` for settings a resume changed.
    """

    train: bool
    resume: bool
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)


class RunFolder:
    """The run folder of one stage: checks, records, and the files the stage owns.

    Args:
        config: the stage's validated config (``config.out`` is the folder).
        context: the process's distributed context (rank 0 writes, all ranks read).
        model_name: the finished model's file name (``model.pt``...).
        owned: the other files and folders the stage writes into ``OUT``; they are
            deleted by ``overwrite`` and by a new run.
        inputs: digests of what the run reads besides its settings
            (``{"train_data": dataset_digest(...), ...}``).
        total_steps: the schedule length the config asks for.
    """

    def __init__(
        self,
        config: StageConfig,
        context: DistributedContext,
        model_name: str,
        owned: tuple[str, ...],
        inputs: dict[str, Any],
        total_steps: int,
    ) -> None:
        self.config = config
        self.context = context
        self.out = Path(config.out)
        self.model_name = model_name
        self.owned = (
            CHECKPOINT_NAME,
            model_name,
            "config.json",
            "log.jsonl",
            "tensorboard",
            RUN_RECORD,
            *owned,
        )
        self.inputs = dict(inputs)
        if config.checkpoint_path:
            if not Path(config.checkpoint_path).is_file():
                raise DataFileError(config.checkpoint_path, "checkpoint_path file")
            self.inputs["checkpoint_path"] = file_digest(config.checkpoint_path)[:16]
        self.total_steps = int(total_steps)
        self.record: dict[str, Any] = {}
        self.changes: list[tuple[str, Any, Any]] = []

    # ------------------------------------------------------------------ reading

    @property
    def model_path(self) -> Path:
        """The finished model's file."""
        return self.out / self.model_name

    @property
    def checkpoint_path(self) -> Path:
        """The training checkpoint."""
        return self.out / CHECKPOINT_NAME

    def _identity(self) -> dict[str, Any]:
        fields = {
            k: v for k, v in self.config.training_fields().items() if k not in self.config.LENGTH
        }
        return {"stage": self.config.STAGE, "fields": fields, "inputs": self.inputs}

    def _read_prior(self) -> dict[str, Any] | None:
        """The recorded run in ``OUT``: run.json, else the record inside the model/checkpoint."""
        path = self.out / RUN_RECORD
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise DataError(path, "a run record (JSON)", f"invalid JSON ({error})") from error
            if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
                raise DataError(path, "a seedkit run record", "another file")
            return record
        from seedkit.engine.checkpoint import load_checkpoint

        for name, status in ((self.model_name, "trained"), (CHECKPOINT_NAME, "training")):
            file = self.out / name
            if file.is_file():
                state = load_checkpoint(file)
                if isinstance(state.get("run"), dict):
                    return {**state["run"], "status": status, "artefacts": {}}
                return {"format": None}
        if any((self.out / name).exists() for name in self.owned):
            return {"format": None}
        return None

    # ------------------------------------------------------------------ deciding

    def prepare(self, resume: bool = False, overwrite: bool = False) -> RunPlan:
        """Check ``OUT`` against the config; clean it; write ``config.json`` and ``run.json``.

        Raises:
            OutputError: ``OUT`` is not a folder or cannot be written.
            RunConflictError: ``OUT`` holds another run, an unfinished one (without
                ``resume``) or nothing to resume (with it); the message names the
                settings that differ.
        """
        from seedkit.engine.config import save_config

        if resume and overwrite:
            raise InvalidValueError("resume / overwrite", "at most one of them", (True, True))
        if self.out.exists() and not self.out.is_dir():
            ensure_directory(self.out)  # raises OutputError naming OUT
        prior = None if overwrite else self._read_prior()
        plan = self._decide(prior, resume)
        self.changes = plan.changes
        self.context.barrier()  # every rank has read OUT before rank 0 changes it
        if self.context.is_main:
            ensure_writable_directory(self.out)
            remove_stale_temporaries(self.out, recursive=True)
            if plan.train and not plan.resume:
                self._delete_owned()
                prior = None
            elif plan.train:
                self.model_path.unlink(missing_ok=True)  # the model of the old length is stale
            self.record = self._new_record(prior, plan)
            save_config(self.config, self.out / "config.json")
            self.write_record()
        self.context.barrier()
        if not self.context.is_main:
            self.record = self._new_record(None if plan.train and not plan.resume else prior, plan)
        return plan

    def _decide(self, prior: dict[str, Any] | None, resume: bool) -> RunPlan:
        overwrite_hint = "pass `overwrite` to replace it, or choose another `out`"
        if prior is None:
            if resume:
                raise RunConflictError(
                    self.out,
                    f"nothing to resume: no {CHECKPOINT_NAME} or run record",
                    hint="run without `resume` to start it",
                )
            return RunPlan(train=True, resume=False)
        if not resume and self._never_trained(prior):
            return RunPlan(train=True, resume=False)  # a start that failed: nothing to keep
        if prior.get("format") != RECORD_FORMAT:
            raise RunConflictError(
                self.out,
                "holds files of a run without a run record (an older seedkit's, or not a run)",
                hint=overwrite_hint,
            )
        identity = self._identity()
        training = setting_differences(
            prior.get("fields", {}), identity["fields"], self.config.LENGTH
        )
        training += [
            (INPUT_NAMES.get(k, k), old, new)
            for k, old, new in setting_differences(prior.get("inputs", {}), identity["inputs"])
        ]
        if prior.get("stage") != self.config.STAGE:
            training.insert(0, ("stage", prior.get("stage"), self.config.STAGE))
        done = int(prior.get("step", 0))
        recorded_total = int(prior.get("total_steps", 0))
        finished = prior.get("status") == "trained" and (
            self.model_path.is_file() or not self.config.trains()
        )
        everything = setting_differences(prior.get("recorded", {}), self.config.recorded_fields())
        if not resume:
            differences = [*everything, *(d for d in training if d[0] not in _names(everything))]
            if differences:
                hint = (
                    "pass `resume` to continue it with these changes, `overwrite` to start over"
                    if not training and self.total_steps >= done
                    else overwrite_hint
                )
                raise RunConflictError(self.out, "holds a different run", differences, hint)
            if not finished:
                raise RunConflictError(
                    self.out,
                    f"holds an unfinished run of these settings (step {done} of {recorded_total})",
                    hint="pass `resume` to continue it, or `overwrite` to start over",
                )
            return RunPlan(train=False, resume=False)
        if training:
            raise RunConflictError(
                self.out,
                "cannot resume with other training settings",
                training,
                "they cannot change mid-run; pass `overwrite` to start over with them, "
                "or choose another `out`",
            )
        length = [d for d in everything if d[0] in self.config.LENGTH]
        if self.total_steps < done:
            raise RunConflictError(
                self.out,
                f"cannot resume: the run has trained {done} steps, more than the {self.total_steps}"
                " asked for",
                length,
                "ask for at least as many steps, or pass `overwrite` to start over",
            )
        if finished and self.total_steps == done:
            return RunPlan(train=False, resume=False, changes=everything)
        if not self.checkpoint_path.is_file():
            problem = (
                f"cannot extend the finished run: {CHECKPOINT_NAME} is missing"
                if finished
                else f"nothing to resume: the run stopped before its first {CHECKPOINT_NAME}"
            )
            raise RunConflictError(self.out, problem, hint="pass `overwrite` to start over")
        return RunPlan(train=True, resume=True, changes=everything)

    def _never_trained(self, prior: dict[str, Any]) -> bool:
        """A run that stopped before its first step (e.g. a backbone name timm does not know)."""
        if prior.get("format") != RECORD_FORMAT or prior.get("status") != "training":
            return False
        if self.checkpoint_path.exists() or self.model_path.exists():
            return False
        log = self.out / "log.jsonl"
        return not (log.is_file() and '"event": "train"' in log.read_text())

    # ------------------------------------------------------------------ records

    def _new_record(self, prior: dict[str, Any] | None, plan: RunPlan) -> dict[str, Any]:
        import seedkit

        identity = self._identity()
        record: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "stage": self.config.STAGE,
            "seedkit_version": seedkit.__version__,
            "fingerprint": fingerprint(identity),
            "fields": self.config.training_fields(),
            "recorded": self.config.recorded_fields(),
            "inputs": self.inputs,
            "total_steps": self.total_steps,
            "step": 0,
            "segments": [],
            "status": "training",
            "artefacts": {},
        }
        if prior is not None:
            record["step"] = int(prior.get("step", 0))
            record["segments"] = list(prior.get("segments", []))
            record["artefacts"] = dict(prior.get("artefacts", {}))
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
        keys = ("format", "stage", "fingerprint", "fields", "recorded", "inputs", "segments")
        return {
            **{k: self.record[k] for k in keys},
            "step": self.record["step"],
            "total_steps": self.total_steps,
        }

    def start_segment(self, step: int) -> None:
        """Record that training runs from ``step`` towards the current ``total_steps``."""
        segments = self.record["segments"]
        if segments and segments[-1]["total_steps"] == self.total_steps:
            segments[-1]["steps"][1] = step
        else:
            segments.append({"steps": [step, step], "total_steps": self.total_steps})
        self.record.update(step=step, total_steps=self.total_steps, status="training")

    def trained_to(self, step: int) -> None:
        """Record a checkpoint at ``step`` (called after the checkpoint is on disk)."""
        self.record["step"] = step
        self.record["segments"][-1]["steps"][1] = step
        self.write_record()

    def finish_training(self, step: int) -> None:
        """Record the finished model (called after it is on disk)."""
        self.record["step"] = step
        if self.record["segments"]:
            self.record["segments"][-1]["steps"][1] = step
        self.record["status"] = "trained"
        if self.context.is_main and self.model_path.is_file():
            self.record["model"] = {
                "file": self.model_name,
                "sha256": file_digest(self.model_path),
            }
        self.write_record()

    def model_digest(self) -> str:
        """SHA-256 of the finished model file (what derived files are fingerprinted by)."""
        return file_digest(self.model_path)

    def begin_artefact(self, name: str, print_: str) -> bool:
        """Start (or continue) writing the derived folder or file ``OUT/name``.

        If ``run.json`` records ``name`` with another fingerprint (or not at all while
        it exists), the stale copy is deleted first. Returns whether a complete copy
        of this fingerprint is already there. Call on every rank.
        """
        recorded = self.record.get("artefacts", {}).get(name)
        complete = bool(recorded and recorded.get("fingerprint") == print_ and recorded["complete"])
        self.context.barrier()
        if self.context.is_main and not (recorded and recorded.get("fingerprint") == print_):
            _delete(self.out / name)
            self.record.setdefault("artefacts", {})[name] = {
                "fingerprint": print_,
                "complete": False,
            }
            self.write_record()
        self.context.barrier()
        self.record.setdefault("artefacts", {})[name] = {
            "fingerprint": print_,
            "complete": complete,
        }
        return complete

    def finish_artefact(self, name: str) -> None:
        """Mark ``OUT/name`` complete (rank 0 writes the record)."""
        self.record["artefacts"][name]["complete"] = True
        self.write_record()

    def _delete_owned(self) -> None:
        for name in self.owned:
            _delete(self.out / name)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _names(differences: list[tuple[str, Any, Any]]) -> set[str]:
    return {name for name, _, _ in differences}


def setting_differences(
    old: dict[str, Any], new: dict[str, Any], skip: frozenset[str] = frozenset()
) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every key whose JSON value differs, in ``new``'s order."""
    keys = [*new, *(k for k in old if k not in new)]
    result = []
    for key in keys:
        if key in skip:
            continue
        a, b = old.get(key), new.get(key)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            result.append((key, a, b))
    return result
