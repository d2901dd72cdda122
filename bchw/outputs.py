"""Writing output files so that a failure never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bchw.errors import BchwError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    The rename is atomic on POSIX, so readers see the old file or the complete new one. On any
    exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise BchwError(f"output folder {directory} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise BchwError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions an ordinary open() would.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):  # a full disk, a folder turned read-only meanwhile
            raise BchwError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(data)


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work is done, an output file that could not be written."""
    target = Path(path)
    if target.is_dir():
        raise BchwError(f"output {target} is a folder; name the file to write")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise BchwError(f"output folder {directory} does not exist")
    try:  # a read-only file system or folder: found now, not after the work
        fd, probe = tempfile.mkstemp(prefix=".bchw-", suffix=".probe", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BchwError(f"cannot write into the folder {directory}: {exc.strerror}") from None
    return target


def make_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the user's output folder (and parents); refuse a path that is a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise BchwError(f"output path {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BchwError(f"cannot create output folder {out}: {exc.strerror}") from None
    return out
