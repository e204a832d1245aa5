"""Paths the driver can or cannot open: which URIs are remote (``s3a:``, ``abfss:``,
``hdfs:``...) and the driver-local file name of the others (``file:``, ``dbfs:``); how
the driver replaces a file whole (:func:`replace_file`); and how a small report file (a
JSON summary, a PNG) is written to any path or URI (:func:`write_file`). Used by every
layer that reads or writes files; imports only :mod:`minibatch_kmeans.errors` of the
library (and pyspark, lazily, for Hadoop's FileSystem)."""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence

from .errors import InvalidParamError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def is_remote(path: str) -> bool:
    """True for a path the driver cannot open as a file (s3a:, abfss:, hdfs:...);
    local paths, ``file:`` and ``dbfs:`` (the /dbfs mount) are not remote."""
    # file: and dbfs: are reachable from the driver
    return has_scheme(path) and _SCHEME.match(path).group(1).lower() not in ("file", "dbfs")


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


# -- small report files at any path or URI ----------------------------------------------------


def has_scheme(path: str) -> bool:
    """True for a URI (``s3a://b/x``, ``file:/x``, ``dbfs:/x``); False for a plain path
    (``out/x``, ``/Volumes/...``, ``/dbfs/...``, ``C:\\x``)."""
    m = _SCHEME.match(path)
    return bool(m) and len(m.group(1)) > 1  # one letter is a Windows drive


def _hadoop():
    """(jvm, Hadoop Configuration) of the active classic SparkContext; None without one
    (no session, Spark Connect, or a cluster that blocks py4j)."""
    try:
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
        if sc is None or sc._jvm is None:
            return None
        return sc._jvm, sc._jsc.hadoopConfiguration()
    except Exception:  # noqa: BLE001 - py4j refused (e.g. shared clusters): no JVM access
        return None


def _no_jvm(path: str, doing: str) -> InvalidParamError:
    scheme = _SCHEME.match(path).group(1)
    return InvalidParamError(
        f"cannot {doing} {path!r}: a {scheme}: URI is reached through Hadoop's FileSystem in "
        "the Spark driver's JVM, and this session has none (Spark Connect, e.g. Databricks "
        "serverless, or no Spark session): give a path the driver can write, such as a "
        "Unity Catalog volume /Volumes/<catalog>/<schema>/<volume>/..., or null to skip it")


def _filesystem(jvm, conf, jpath):
    """Hadoop's FileSystem of ``jpath``; for a checksummed one (``file:``, Hadoop's
    LocalFileSystem) its raw file system, which writes no ``.crc`` files beside ours."""
    fs = jpath.getFileSystem(conf)
    if jvm.java.lang.Class.forName("org.apache.hadoop.fs.ChecksumFileSystem").isInstance(fs):
        fs = fs.getRawFileSystem()
    return fs


def _hadoop_replace(jvm, conf, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through Hadoop's FileSystem: into a temporary file of its
    own beside it, then renamed over it, atomically where the file system renames
    atomically (HDFS, local disks, ABFS with a hierarchical namespace; an object store's
    rename is a copy, and its upload is whole anyway)."""
    Path = jvm.org.apache.hadoop.fs.Path
    dst = Path(path)
    fs = _filesystem(jvm, conf, dst)
    parent = dst.getParent()
    if parent is not None:
        fs.mkdirs(parent)
    tmp = Path(parent, f".{dst.getName()}.{uuid.uuid4().hex}.tmp")
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()
    try:
        if not fs.rename(tmp, dst):  # HDFS and others do not rename over a file
            _rename_over(jvm, conf, fs, tmp, dst)
    except BaseException:
        fs.delete(tmp, False)
        raise


def _rename_over(jvm, conf, fs, tmp, dst) -> None:
    """Rename ``tmp`` over the existing ``dst``: FileContext's rename with OVERWRITE
    (atomic on HDFS) when the scheme has one, else delete then rename."""
    from pyspark import SparkContext

    try:
        rename = jvm.org.apache.hadoop.fs.Options.Rename
        opts = SparkContext._active_spark_context._gateway.new_array(rename, 1)
        opts[0] = rename.OVERWRITE
        jvm.org.apache.hadoop.fs.FileContext.getFileContext(dst.toUri(), conf).rename(
            tmp, dst, opts)
        return
    except Exception:  # noqa: BLE001 - no FileContext for this scheme: not atomic then
        pass
    fs.delete(dst, False)
    if not fs.rename(tmp, dst):
        raise OSError(f"cannot rename {tmp.toString()} to {dst.toString()}")


def write_file(path: str, write: Callable, doing: str = "write") -> str:
    """Write a small file whole by ``write(binary file)``, at any path or URI: a plain path
    (``out/x.json``, ``/Volumes/...``, ``/dbfs/...``) with the driver's file I/O
    (:func:`replace_file`); a URI (``s3a:``, ``abfss:``, ``gs:``, ``hdfs:``, ``dbfs:``,
    ``file:``) through Hadoop's FileSystem in the driver's JVM, into a temporary file then
    renamed over ``path``. Without a JVM (Spark Connect), ``file:`` and ``dbfs:`` (the
    ``/dbfs`` mount) are written on the driver, and other URIs raise an
    :class:`~minibatch_kmeans.errors.InvalidParamError` naming the path and saying to use
    a ``/Volumes`` path: nothing is lost silently. Parent folders are created. Returns
    ``path``."""
    if not has_scheme(path):
        return replace_file(path, write)
    hadoop = _hadoop()
    if hadoop is None:
        if not is_remote(path):
            replace_file(driver_path(path), write)
            return path
        raise _no_jvm(path, doing)
    buffer = io.BytesIO()
    write(buffer)
    _hadoop_replace(*hadoop, path, buffer.getvalue())
    return path


def read_file(path: str) -> bytes:
    """The bytes of a file :func:`write_file` wrote, by the same route."""
    if has_scheme(path):
        hadoop = _hadoop()
        if hadoop is not None:
            jvm, conf = hadoop
            jpath = jvm.org.apache.hadoop.fs.Path(path)
            stream = _filesystem(jvm, conf, jpath).open(jpath)
            try:
                return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
            finally:
                stream.close()
        if is_remote(path):
            raise _no_jvm(path, "read")
        path = driver_path(path)
    with open(path, "rb") as f:
        return f.read()


@contextmanager
def local_copies(paths: Sequence[str]) -> Iterator[List[str]]:
    """Driver-local file names of ``paths`` for the ``with`` block, for tools that read
    local files only (MLflow's ``log_artifact``): a plain path as it is, a URI's file
    copied to a temporary folder (removed afterwards). A URI that cannot be read is left
    as it is (the tool then reports it missing)."""
    folder = None
    out = []
    try:
        for path in paths:
            if not has_scheme(path):
                out.append(path)
                continue
            try:
                data = read_file(path)
            except Exception:  # noqa: BLE001 - missing or unreachable: the caller reports it
                out.append(path)
                continue
            folder = folder or tempfile.mkdtemp(prefix="mbkm-reports-")
            sub = tempfile.mkdtemp(dir=folder)  # one folder each: names may repeat
            local = os.path.join(sub, path.rstrip("/").rsplit("/", 1)[-1])
            with open(local, "wb") as f:
                f.write(data)
            out.append(local)
        yield out
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def join(base: str, name: str) -> str:
    """``base/name`` for a folder path or URI (``s3a://b/x`` and ``report.json``)."""
    return base.rstrip("/") + "/" + name
