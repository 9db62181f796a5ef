"""Replacing a whole file at once: a reader, a second process or a kill -9 finds the old file or
the new one, never half of one."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path


def replace_file(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to a temporary file beside `path`, flush it to the disk, then
    rename it over `path`. A symbolic link is followed, not replaced; an existing file keeps its
    permissions and a new one gets the umask's, as open() would give it; anything but a regular
    file in its place is refused. Raises OSError, after removing the temporary file; callers
    decide whether a failed write is an error (a user's file) or only costs work next time (a
    cache)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    target = path.resolve()
    if target.exists() and not target.is_file():  # a folder, a device, a FIFO: renaming over it would replace it
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    # a random name, created exclusively: two processes writing one file never share a temporary
    temp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
