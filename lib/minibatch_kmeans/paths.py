"""Paths the driver can or cannot open: which URIs are remote (``s3a:``, ``abfss:``,
``hdfs:``...) and the driver-local file name of the others (``file:``, ``dbfs:``); and how
the driver replaces a file whole (:func:`replace_file`). Used by every layer that reads or
writes files; imports nothing of the library."""
from __future__ import annotations

import os
import re
import tempfile
from typing import Callable, Optional

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def is_remote(path: str) -> bool:
    """True for a path the driver cannot open as a file (s3a:, abfss:, hdfs:...);
    local paths, ``file:`` and ``dbfs:`` (the /dbfs mount) are not remote."""
    m = _SCHEME.match(path)
    # one letter is a Windows drive; file: and dbfs: are reachable from the driver
    return bool(m) and len(m.group(1)) > 1 and m.group(1).lower() not in ("file", "dbfs")


def driver_path(path: str) -> str:
    """A driver-local filename for ``path``: ``file:/x`` is ``/x`` and ``dbfs:/x`` is
    ``/dbfs/x`` (the Databricks mount); other paths are returned unchanged."""
    m = _SCHEME.match(path)
    if m and m.group(1).lower() == "file":
        rest = path[len(m.group(0)):]
        return "/" + rest.lstrip("/") if rest.startswith("//") else rest
    if m and m.group(1).lower() == "dbfs":
        return "/dbfs/" + path[len(m.group(0)):].lstrip("/")
    return path


def local_dir(path: str) -> Optional[str]:
    """The absolute driver-local name of ``path`` (:func:`driver_path`), or None for a
    remote path."""
    return None if is_remote(path) else os.path.abspath(driver_path(path))


def replace_file(path: str, write: Callable, prefix: Optional[str] = None,
                 suffix: str = ".tmp") -> str:
    """Write a driver-local file by ``write(binary file)`` into a temporary file of its own
    beside ``path`` (a unique name: two writers never share one; ``prefix`` defaults to
    ``.<name>.``), synced, then renamed over ``path``: a reader sees the old file or the
    new one, never half of one. Parent folders are created. Returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{os.path.basename(path)}.", suffix=suffix,
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
