"""Removing files and folders only where the daemon made them for that purpose.

Every removal the daemon and the store make goes through ``remove_inside``: the entry
to remove must be strictly inside the folder made for it (the spool folder, a
collection's ``.done/``, the demo's folder), checked on the real paths, every link on
the way resolved, so that a name such as ``..`` or a link planted in that folder can
never turn a removal into one of something else. A link found there is removed itself,
never what it points to; a folder is removed with what is in it (``shutil.rmtree``
never follows a link inside).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .errors import OutsideFolder


def place_inside(target: Path, folder: Path) -> Path:
    """Where ``target`` (the entry itself, not what a link points to) really is.

    Raises OutsideFolder unless that place is strictly inside ``folder``'s real path.
    """
    purpose = Path(os.path.realpath(folder))
    name = target.name
    where = Path(os.path.realpath(target.parent)) / name
    if name in ("", ".", "..") or purpose not in where.parents:
        raise OutsideFolder(
            f"not removing {target}: it is not inside {folder}"
            + ("" if purpose == folder else f" ({purpose})")
            + f", the folder made for it (it is {where})"
        )
    return where


def remove_inside(target: Path, folder: Path) -> bool:
    """Remove ``target`` (a file, a link, or a folder and all in it) if strictly inside ``folder``.

    False if there was nothing to remove; OutsideFolder (removing nothing) if ``target``
    is not inside ``folder``; other OSErrors as the file system raises them.
    """
    where = place_inside(target, folder)
    try:
        mode = os.lstat(where).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        shutil.rmtree(where)
    else:
        os.unlink(where)
    return True
