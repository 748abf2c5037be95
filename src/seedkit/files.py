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

import contextlib
import hashlib
import importlib
import io
import json
import os
import pickle
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from seedkit.errors import DataError, DataFileError, OutputError, RunConflictError

__all__ = [
    "LOCK_NAME",
    "TEMPORARY_SUFFIX",
    "ContentDigests",
    "atomic_write",
    "check_writable_directory",
    "ensure_directory",
    "ensure_writable_directory",
    "file_digest",
    "folder_lock",
    "load_npy",
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


def check_writable_directory(path: str | os.PathLike) -> None:
    """Check that ``path`` is, or could be created as, a writable folder, creating nothing.

    A command that may still refuse checks its output folder with this; the folder is
    made only once it acts (:func:`ensure_writable_directory`).

    Raises:
        OutputError: ``path`` (or its nearest existing parent) is not a folder, or
            that folder is read-only.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = "it exists and is not a folder" if existing == path else f"{existing} is a file"
        raise OutputError(path, reason)
    _probe(existing, path)


def _probe(folder: Path, named: Path) -> None:
    """Create and remove a file in ``folder``; an error names ``named``."""
    probe = folder / f".write-probe.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as error:
        raise OutputError(named, error) from error


def ensure_writable_directory(path: str | os.PathLike) -> Path:
    """:func:`ensure_directory`, then create and remove a file in it: fail now, naming ``path``.

    Raises:
        OutputError: ``path`` is not a folder, cannot be created, or is read-only.
    """
    path = ensure_directory(path)
    _probe(path, path)
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
        with contextlib.suppress(OSError):  # e.g. a read-only file system: keep the real error
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


# ---------------------------------------------------------------- content digests


class ContentDigests:
    """SHA-256 digests of files, cached by their identity on disk.

    A digest is recomputed whenever the file's inode, size, modification or change
    time differs from the cached entry (the change time cannot be set back by a
    user), so an edited, truncated or replaced file is read again; an untouched
    one is not. The cache can live in a JSON file (a run folder's ``digests.json``).

    Args:
        path: the cache file (read if it exists; :meth:`save` writes it), or ``None``.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> name = os.path.join(folder, "a.txt")
        >>> _ = atomic_write(name, b"abc")
        >>> ContentDigests().digest(name)[:12]
        'ba7816bf8f01'
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list[Any]] = {}
        if self.path is not None and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError):
                loaded = {}  # a damaged cache costs a re-read, nothing else
            if isinstance(loaded, dict):
                self.entries = {k: v for k, v in loaded.items() if isinstance(v, list)}
        self.used: set[str] = set()

    def digest(self, path: str | os.PathLike) -> str:
        """The SHA-256 (hex) of a file's bytes.

        Raises:
            DataFileError: the file does not exist.
        """
        key = str(Path(path).absolute())
        try:
            stat = os.stat(key)
        except FileNotFoundError as error:
            raise DataFileError(path, "file") from error
        identity = [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        cached = self.entries.get(key)
        if cached is None or cached[:4] != identity:
            cached = [*identity, file_digest(key)]
            self.entries[key] = cached
        self.used.add(key)
        return str(cached[4])

    def save(self) -> None:
        """Write the entries used since loading to :attr:`path` (no-op without a path)."""
        if self.path is not None and self.used:
            used = {key: self.entries[key] for key in sorted(self.used) if key in self.entries}
            atomic_write(self.path, json.dumps(used).encode())


# ---------------------------------------------------------------- safe .npy reading

#: What an object ``.npy`` (a psa / IRN seed file, ``cls_labels.npy``) may hold:
#: containers, numbers, strings, numpy arrays, scalars and dtypes, torch tensors.
SAFE_GLOBALS = {
    ("builtins", name) for name in ("set", "frozenset", "complex", "bytearray", "slice")
} | {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
}


class _Refused(pickle.UnpicklingError):
    """A global outside :data:`SAFE_GLOBALS` (its dotted name is the message)."""


def _tensor_storage(data: bytes) -> Any:
    """Torch's storage reader, but with ``weights_only=True`` (torch's own runs any pickle)."""
    import re

    import torch

    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"(?:Unsupported global|GLOBAL)[:\s]+(?:GLOBAL\s+)?([\w.]+)", str(error))
        raise _Refused(found.group(1) if found else "a torch storage that holds code") from None


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in SAFE_GLOBALS or (
            module == "numpy.dtypes" and name.endswith("DType")
        )
        if not allowed:
            raise _Refused(f"{module}.{name}")
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _tensor_storage
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core in numpy 2
            return getattr(importlib.import_module(module), name)


def load_npy(path: str | os.PathLike, what: str = "a .npy file") -> Any:
    """Read a ``.npy`` file without running code; an object array's content is returned.

    Plain arrays are read with ``allow_pickle=False``. Object arrays (``np.save`` of a
    dict: psa / SEAM / MCTformer / IRN seed files, ``cls_labels.npy``) are unpickled
    with an allow-list (:data:`SAFE_GLOBALS`: containers, numbers, strings, numpy
    arrays, scalars and dtypes, torch tensors); anything else is refused before it
    is built, so a file from elsewhere cannot run code.

    Args:
        path: the file.
        what: what the file should be, for the error message.

    Returns:
        The array, or for a 0-d object array its item (e.g. the dict).

    Raises:
        DataFileError: the file does not exist.
        DataError: the file is unreadable, or its pickle refers to anything else
            (named in the message).

    Example:
        >>> import numpy as np, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
        >>> np.save(path, {3: np.ones(2, np.float32)})
        >>> load_npy(path)
        {3: array([1., 1.], dtype=float32)}
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "file")
    try:
        with open(path, "rb") as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                dtype = np.lib.format.read_array_header_1_0(stream)[2]
            elif version == (2, 0):
                dtype = np.lib.format.read_array_header_2_0(stream)[2]
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if not dtype.hasobject:
                stream.seek(0)
                return np.lib.format.read_array(stream, allow_pickle=False)
            loaded = _AllowListUnpickler(stream).load()
    except _Refused as error:
        raise DataError(
            path,
            f"{what} of arrays, numbers, strings and containers",
            f"a pickle that would run code (it refers to {error}); seedkit does not load it",
        ) from error
    except Exception as error:  # numpy and pickle raise many types for a damaged file
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(path, what, f"an unreadable file ({text})") from error
    if isinstance(loaded, np.ndarray) and loaded.dtype == object and loaded.shape == ():
        return loaded.item()
    return loaded


# ---------------------------------------------------------------- folder lock

#: The lock file :func:`folder_lock` keeps in a folder while a run uses it.
LOCK_NAME = ".seedkit-lock"
_HELD: dict[str, int] = {}


def _holder_is_dead(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process: cannot tell
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` for this process: a second run into it is refused in one line.

    The folder (and missing parents) is created; on exit the lock is released and the
    folders this call created are removed again if they are still empty, so a command
    that refuses leaves nothing behind. A lock left by a killed process of this
    machine is taken over. Re-entrant within a process.

    Raises:
        RunConflictError: another live process holds the folder.
        OutputError: the folder cannot be created or written.
    """
    folder = Path(folder)
    key = str(folder.absolute())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    created = []
    missing = folder.absolute()
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    ensure_directory(folder)
    lock = folder / LOCK_NAME
    token = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%H:%M:%S")}
    try:
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                try:
                    holder = json.loads(lock.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                if _holder_is_dead(holder):
                    lock.unlink(missing_ok=True)
                    continue
                raise RunConflictError(
                    folder,
                    f"is in use by another seedkit run (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('since')})",
                    hint=f"wait for it to finish, or choose another `out` (if that run is dead, "
                    f"delete {lock})",
                ) from None
            except OSError as error:
                raise OutputError(folder, error) from error
            with os.fdopen(fd, "w") as stream:
                stream.write(json.dumps(token))
            break
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
            lock.unlink(missing_ok=True)
    finally:
        for path in created:  # innermost first
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty
