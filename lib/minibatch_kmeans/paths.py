"""Paths the driver can or cannot open: which URIs are remote (``s3a:``, ``abfss:``,
``hdfs:``...) and the driver-local file name of the others (``file:``, ``dbfs:``). Used by
every layer that reads or writes files; imports nothing of the library."""
from __future__ import annotations

import os
import re
from typing import Optional

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
