"""Typed exceptions raised by seedkit.

Every error names the offending argument (or file) and states what was expected
and what was received, so a failing training loop can be fixed from the message
alone. All of them derive from :class:`SeedkitError`, and each also derives from
the built-in exception a user would naturally catch (``ValueError``,
``FileNotFoundError``...).
"""

from __future__ import annotations

__all__ = [
    "BackboneError",
    "DataError",
    "DataFileError",
    "InvalidValueError",
    "NonFiniteError",
    "OutputError",
    "PretrainedWeightsError",
    "RunConflictError",
    "SeedkitError",
    "ShapeError",
]


class SeedkitError(Exception):
    """Base class of every error seedkit raises on purpose."""


class ShapeError(SeedkitError, ValueError):
    """A tensor argument has the wrong rank, size or layout.

    Example:
        >>> raise ShapeError("cams", "(B, C, H, W)", (3, 4))
        Traceback (most recent call last):
        ...
        seedkit.errors.ShapeError: cams: expected shape (B, C, H, W), got (3, 4)
    """

    def __init__(self, argument: str, expected: str, actual: object, detail: str = "") -> None:
        self.argument = argument
        self.expected = expected
        self.actual = tuple(actual) if isinstance(actual, (tuple, list)) else actual
        message = f"{argument}: expected shape {expected}, got {self.actual}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class InvalidValueError(SeedkitError, ValueError):
    """An argument has a value outside its allowed range or set.

    Example:
        >>> raise InvalidValueError("temperature", "a finite number > 0", -1.0)
        Traceback (most recent call last):
        ...
        seedkit.errors.InvalidValueError: temperature: expected a finite number > 0, got -1.0
    """

    def __init__(self, argument: str, expected: str, actual: object) -> None:
        self.argument = argument
        self.expected = expected
        self.actual = actual
        super().__init__(f"{argument}: expected {expected}, got {actual!r}")


class NonFiniteError(InvalidValueError):
    """A tensor argument holds NaN or infinite values."""

    def __init__(self, argument: str, count: int, total: int) -> None:
        super().__init__(argument, "finite values only", f"{count} of {total} values NaN or inf")


class DataError(SeedkitError, ValueError):
    """A data file exists but its content is not what seedkit expects."""

    def __init__(self, path: object, expected: str, actual: object) -> None:
        self.path = str(path)
        self.expected = expected
        self.actual = actual
        super().__init__(f"{self.path}: expected {expected}, got {actual}")


class DataFileError(SeedkitError, FileNotFoundError):
    """A file or directory that seedkit needs is missing."""

    def __init__(self, path: object, what: str, hint: str = "") -> None:
        self.path = str(path)
        self.what = what
        message = f"{self.path}: {what} not found"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class BackboneError(SeedkitError, ValueError):
    """A model cannot be built, wrapped or adjusted as requested."""


class PretrainedWeightsError(BackboneError):
    """A model's pretrained weights cannot be fetched (offline, no cache) or do not load.

    The message names the Python way out; command-line tools catch the error and
    name their flags instead (``--no-pretrained``, ``--checkpoint-path``).

    Attributes:
        model_name: the timm model name.
        reason: what went wrong (the underlying error).
    """

    def __init__(self, model_name: str, reason: str) -> None:
        self.model_name = model_name
        self.reason = reason
        super().__init__(
            f"{model_name}: could not load timm's pretrained weights ({reason}). Offline? "
            f"Download the weights elsewhere and pass create_seed_model({model_name!r}, "
            "num_classes, checkpoint_path='/path/to/weights.pth' or '.safetensors') with "
            "pretrained=False, or point HF_HOME at a cache that has them"
        )


class OutputError(SeedkitError, OSError):
    """A file or folder that seedkit writes cannot be written (full disk, read-only, not a folder).

    Example:
        >>> import errno
        >>> raise OutputError("runs/a/model.pt", OSError(errno.ENOSPC, "No space left on device"))
        Traceback (most recent call last):
        ...
        seedkit.errors.OutputError: runs/a/model.pt: cannot write: No space left on device (ENOSPC)
    """

    def __init__(self, path: object, cause: BaseException | str) -> None:
        self.path = str(path)
        if isinstance(cause, OSError) and cause.errno is not None:
            import errno as errno_names

            name = errno_names.errorcode.get(cause.errno, str(cause.errno))
            reason = f"{cause.strerror or cause} ({name})"
            super().__init__(cause.errno, f"{self.path}: cannot write: {reason}")
        else:
            reason = str(cause)
            super().__init__(f"{self.path}: cannot write: {reason}")
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: cannot write: {self.reason}"


class RunConflictError(SeedkitError, ValueError):
    """A run folder holds another run than the one asked for (or nothing to resume).

    Attributes:
        path: the run folder.
        differences: ``(setting, recorded value, requested value)`` for each setting
            that differs (empty when the conflict is not about settings).
        hint: what to do about it.

    Example:
        >>> raise RunConflictError("runs/a", "another run", [("lr", 0.01, 0.5)], "overwrite it")
        Traceback (most recent call last):
        ...
        seedkit.errors.RunConflictError: runs/a: another run (lr 0.01 -> 0.5); overwrite it
    """

    def __init__(
        self,
        path: object,
        problem: str,
        differences: list[tuple[str, object, object]] | None = None,
        hint: str = "",
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.differences = list(differences or [])
        self.hint = hint
        super().__init__(self.describe())

    def describe(self, names: dict[str, str] | None = None) -> str:
        """The message, with settings renamed through ``names`` (e.g. to command-line flags)."""
        names = names or {}
        message = f"{self.path}: {self.problem}"
        if self.differences:
            shown = ", ".join(
                f"{names.get(name, name)} {_short(old)} -> {_short(new)}"
                for name, old, new in self.differences
            )
            message += f" ({shown})"
        if self.hint:
            hint = self.hint
            for name, flag in names.items():
                hint = hint.replace(f"`{name}`", flag)
            message += f"; {hint.replace('`', '')}"
        return message


def _short(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
