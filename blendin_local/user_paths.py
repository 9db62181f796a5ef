"""Paths as a user writes them: `~` and `~user` expanded as a shell expands them."""

from __future__ import annotations

import os
from pathlib import Path


def user_path(text: str | os.PathLike[str]) -> Path:
    """`text` with a leading `~` or `~user` expanded. Path.expanduser raises RuntimeError for a
    user who does not exist (`/save ~0`), and the user lookup ValueError for a NUL in the name;
    such a name is left as written, as a shell leaves it, to fail later as the path it is, with
    the caller's one-line error."""
    try:
        return Path(os.path.expanduser(text))
    except ValueError:
        return Path(text)
