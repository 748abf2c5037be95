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
    "PretrainedWeightsError",
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
