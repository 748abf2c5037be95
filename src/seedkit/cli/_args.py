"""Checks of command-line arguments shared by the ``seedkit`` commands.

Each raises a typed error naming the flag or the file, which :func:`seedkit.cli.main`
prints as one ``seedkit <command>: error:`` line (exit status 2).
"""

from __future__ import annotations

from pathlib import Path

from seedkit.errors import DataError, DataFileError, OutputError


def read_class_names(flag: str, path: str, num_classes: int) -> list[str]:
    """Read one name per line: ``num_classes`` names, or ``num_classes - 1`` without background.

    Raises:
        DataFileError: the file does not exist.
        DataError: unreadable, or another number of names (both counts named).
    """
    file = Path(path)
    if not file.is_file():
        raise DataFileError(file, f"class-name file ({flag})")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(file, "a UTF-8 text file with one class name per line", error) from error
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) == num_classes - 1:
        names = ["background", *names]
    if len(names) != num_classes:
        raise DataError(
            file,
            f"{num_classes - 1} foreground names or {num_classes} with background "
            f"(--num-classes {num_classes})",
            f"{len(names)} names",
        )
    return names


def check_output_file(flag: str, path: str) -> Path:
    """Refuse an output file path that is an existing folder, before any work is done."""
    file = Path(path)
    if file.is_dir():
        raise OutputError(file, f"it is a folder; {flag} takes a file path")
    return file


def check_output_folder(flag: str, path: str) -> Path:
    """Create the output folder now (or refuse a file or a read-only folder), naming ``flag``."""
    from seedkit.engine import ensure_writable_directory

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, f"it exists and is not a folder; {flag} takes a folder")
    return ensure_writable_directory(folder)
