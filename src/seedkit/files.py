"""The one atomic file writer of seedkit, and the clean-up of what a killed write leaves.

Every file seedkit writes (checkpoints, seeds, masks, JSON, PNG, logs aside) goes
through :func:`atomic_write`: the content goes to a temporary file in the
destination folder (``.<name>.<random>.seedkit-tmp``), is flushed to disk and
renamed onto the destination, so a reader never sees half a file and a killed
write leaves the previous file intact. A failed write (full disk, read-only
folder, a path that is not a folder) removes its temporary file and raises one
:class:`~seedkit.errors.OutputError` naming the destination. Files get the
process's usual mode (``0o666`` minus the umask, like ``open()``), not the
``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from seedkit.errors import OutputError

__all__ = [
    "TEMPORARY_SUFFIX",
    "atomic_write",
    "ensure_directory",
    "ensure_writable_directory",
    "file_digest",
    "remove_stale_temporaries",
]

#: Suffix of the temporary files of :func:`atomic_write`; anything ending in it is
#: the remainder of a killed write.
TEMPORARY_SUFFIX = ".seedkit-tmp"

_CHUNK = 1 << 20


class _Sink(io.RawIOBase):
    """A raw writer on a file descriptor that keeps the first ``OSError`` it met.

    ``torch.save`` turns a failed ``write`` into ``RuntimeError: [enforce fail at
    inline_container.cc] ... unexpected pos``; the kept error lets the caller say
    what really happened.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as error:
            self.error = self.error or error
            raise
        return done


def ensure_directory(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) as a folder, or raise :class:`OutputError` naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:
        raise OutputError(path, "it exists and is not a folder") from error
    except OSError as error:
        raise OutputError(path, error) from error
    if not path.is_dir():
        raise OutputError(path, "it exists and is not a folder")
    return path


def ensure_writable_directory(path: str | os.PathLike) -> Path:
    """:func:`ensure_directory`, then create and remove a file in it: fail now, naming ``path``.

    Raises:
        OutputError: ``path`` is not a folder, cannot be created, or is read-only.
    """
    path = ensure_directory(path)
    probe = path / f".write-probe.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as error:
        raise OutputError(path, error) from error
    return path


def atomic_write(path: str | os.PathLike, content: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``content`` to ``path`` atomically: a temporary file, fsync, then a rename.

    Args:
        path: destination file; missing parent folders are created.
        content: the bytes, or a function that writes them to the binary file object
            it is given (e.g. ``lambda f: torch.save(state, f)``).

    Returns:
        The destination path.

    Raises:
        OutputError: the file or its folder cannot be written (the message names
            ``path`` and the reason, e.g. ``No space left on device (ENOSPC)``);
            the previous file at ``path``, if any, is untouched.

    Example:
        >>> import os, tempfile
        >>> from seedkit.files import atomic_write
        >>> path = atomic_write(os.path.join(tempfile.mkdtemp(), "a", "b.txt"), b"hello")
        >>> path.read_bytes(), sorted(os.listdir(path.parent))
        (b'hello', ['b.txt'])
    """
    target = Path(path)
    ensure_directory(target.parent)
    temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
    sink: _Sink | None = None
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        sink = _Sink(fd)
        try:
            with io.BufferedWriter(sink, buffer_size=_CHUNK) as stream:
                if isinstance(content, (bytes, bytearray, memoryview)):
                    stream.write(content)
                else:
                    content(stream)
                stream.flush()
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        cause = sink.error if sink is not None and sink.error is not None else error
        if isinstance(cause, OSError) and not isinstance(cause, OutputError):
            raise OutputError(target, cause) from error
        raise
    _sync_directory(target.parent)
    return target


def _sync_directory(folder: Path) -> None:
    """Make the rename durable (POSIX); harmless where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write` calls left in ``folder``.

    Only call this when no other process is writing into ``folder``.

    Returns:
        The removed files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f"**/.*{TEMPORARY_SUFFIX}" if recursive else f".*{TEMPORARY_SUFFIX}"
    removed = []
    for path in folder.glob(pattern):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
