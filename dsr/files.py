"""Publishing files that must never be overwritten (signing keys, sealed evidence bundles)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

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
