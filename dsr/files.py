"""Files on local disk: publishing files that must never be overwritten (signing keys, sealed
evidence bundles), and private directories and files for whatever holds a subject's data."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# Filesystems without hard links (SMB, some FUSE mounts) answer with one of these.
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)


def create_exclusive(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write `data` to `path` only if `path` does not exist yet; True if this call created it.

    Written to a temporary file first and published with a hard link, which fails on an existing
    name: a reader never sees a half-written file, and two concurrent writers can never replace
    each other's. Where hard links are missing: check, then rename (a narrow race, still atomic).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            if path.exists():
                return False
            os.replace(tmp, path)
        fsync_directory(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def fsync_directory(directory: Path) -> None:
    """Make a new name in `directory` durable; not every platform lets a directory be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: Modes of what holds personal data (exports, packages, attachments, discovered refs): the
#: service's user only. Files are created with their mode (never chmod'ed after the bytes are in),
#: so no other user can open them in between.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as a directory only its owner can enter; tighten it if
    an older install left it open. Parents that already exist are left as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
        if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR_MODE:
            os.chmod(path, PRIVATE_DIR_MODE)
    return path


def private_opener(path: str, flags: int) -> int:
    """An `open(..., opener=)` that creates files 0600 (the mode is set at creation, not after)."""
    return os.open(path, flags, PRIVATE_FILE_MODE)


@contextmanager
def open_private(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open `path` for writing as a new 0600 file. An existing file is unlinked first: O_CREAT keeps
    an existing file's mode, and a file left by an older run may be world-readable."""
    if not mode.startswith(("w", "x")):
        raise ValueError(f"open_private writes new files; mode {mode!r} is not one")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with open(path, "x" + mode[1:], opener=private_opener, **kwargs) as handle:
        yield handle


def remove_tree(path: Path) -> bool:
    """Remove a directory tree (or a file) if it exists; True if something was removed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=False, onerror=_ignore_missing)
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _ignore_missing(function: Any, name: str, exc_info: Any) -> None:
    # A concurrent cleaner (another run's sweep) may remove an entry first: that is the goal.
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
