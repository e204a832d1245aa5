"""A lock per registered model alias, so that checking an alias and moving it is one step.

MLflow has no conditional alias set: :meth:`~minibatch_kmeans.lifecycle.registry.Registry.
promote` and :meth:`~minibatch_kmeans.lifecycle.registry.Registry.rollback` read the alias,
check it, then move it, and another job's move landing in between would be lost (two
monitors would both "promote"). So they hold :func:`alias_lock` from the read to the move.
Which lock depends on where the registry lives:

- **A local store** (an SQLite URI ``sqlite:///<path>``, a file store given as a path or a
  ``file:`` URI): an exclusive ``flock`` on ``<store>.locks/<model>.<alias>.lock`` next to
  the store. The kernel releases it when its holder exits, even by SIGKILL, so a crashed
  job never leaves it held. It excludes threads and processes of one machine (and of
  machines sharing the store over a file system with working ``flock``).
- **Any other registry** (PostgreSQL or MySQL URIs, a tracking server, Databricks'
  workspace registry or Unity Catalog): a lease, the registered model
  ``<model>__<alias>__lock`` (in the same catalog and schema on Unity Catalog), created
  with the holder's token and expiry as tags. Creating a registered model is an insert
  under a unique name on MLflow's SQL stores and on Databricks, so exactly one creator
  holds it; the holder deletes it when done. A lease past its expiry (its holder died) is
  deleted by the next job, after re-reading that it is still the one found expired, and
  a holder that held it longer than half its ``ttl`` moves nothing (:meth:`AliasLock.check`).
  Behind a tracking server, the lease is atomic only when the server's registry is a
  database (its file store creates models as a check then a write).

The lock serialises the jobs that use this module; a tool moving the alias through the
MLflow API directly is not excluded.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import uuid
from typing import Iterator, Optional
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException

from ..errors import MiniBatchKMeansError

logger = logging.getLogger(__name__)

#: Seconds a lease holder may hold it before another job may break it (a crashed holder).
LEASE_TTL = 120.0
#: Seconds a job waits for the lock before giving up (longer than a lease's ttl, so that a
#: crashed holder's lease is broken by the waiter rather than failing it).
LOCK_WAIT = 180.0
POLL_SECONDS = 0.05
OWNER_TAG, EXPIRES_TAG = "lock_owner", "lock_expires"

#: Words of a unique-key conflict in the SQLite, PostgreSQL and MySQL stores' errors.
CONFLICT_WORDS = ("unique constraint", "duplicate key", "duplicate entry", "integrityerror")


class AliasLockError(MiniBatchKMeansError, RuntimeError):
    """The alias lock could not be taken in time, or was held too long to trust."""


def set_alias(client, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """``set_registered_model_alias``, retried on a unique-key conflict: MLflow's SQL
    store upserts the alias as a read then an insert, so two processes moving an alias
    that no version holds yet both insert, and the loser fails. On retry the row exists
    and the store updates it."""
    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as e:
            if attempt == attempts - 1 or not any(w in str(e).lower() for w in CONFLICT_WORDS):
                raise
            logger.info("%s: setting %r met a concurrent write; retrying", name, alias)
            time.sleep(0.05 * (attempt + 1))


def local_store_path(uri: Optional[str]) -> Optional[str]:
    """The local file or directory of a registry URI (SQLite database, file store), or
    None for any other store (database server, tracking server, Databricks)."""
    if not uri or uri in ("databricks", "databricks-uc", "uc"):  # MLflow's names, not paths
        return None
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]  # without ?timeout=... options
        return os.path.abspath(path) if path and path != ":memory:" else None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return os.path.abspath(parsed.path) if parsed.path else None
    if parsed.scheme == "" and parsed.path:
        return os.path.abspath(parsed.path)
    return None


def lock_name(name: str, alias: str) -> str:
    """The lease's registered model: ``<name>__<alias>__lock`` (the last part of a Unity
    Catalog name gets the suffix, so the lease lives in the model's schema)."""
    return f"{name}__{alias}__lock"


class AliasLock:
    """A held lock (from :func:`alias_lock`); :meth:`check` before writing."""

    def __init__(self, what: str, ttl: Optional[float]):
        self.what = what
        self.ttl = ttl
        self.since = time.monotonic()

    def check(self) -> None:
        """Raise :class:`AliasLockError` when a lease has been held for more than half its
        ttl, so that another job may soon take it as stale."""
        held = time.monotonic() - self.since
        if self.ttl is not None and held > self.ttl / 2:
            raise AliasLockError(
                f"{self.what} has been held for {held:.0f} s, more than half its ttl of "
                f"{self.ttl:g} s: moving nothing, as another job may take it as stale")


@contextlib.contextmanager
def alias_lock(client, registry_uri: Optional[str], name: str, alias: str, *,
               wait: float = LOCK_WAIT, ttl: float = LEASE_TTL) -> Iterator[AliasLock]:
    """Hold the lock of ``name``'s ``alias`` (see the module docstring) for the block.

    Raises
    ------
    AliasLockError
        Not taken within ``wait`` seconds.
    """
    store = local_store_path(registry_uri)
    if store is not None:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}.{alias}")
        path = os.path.join(store.rstrip(os.sep) + ".locks", safe + ".lock")
        with file_lock(path, wait):
            yield AliasLock(f"lock file {path}", None)
    else:
        with lease(client, lock_name(name, alias), wait, ttl) as held:
            yield held


@contextlib.contextmanager
def file_lock(path: str, wait: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created; never deleted, which would let two
    holders lock two different files of one name)."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AliasLockError(f"the lock file {path} is still held by another "
                                         f"job after {wait:g} s: expected it free") from None
                time.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_lease(client, lock: str):
    """``(owner token, expiry in epoch seconds)`` of the lease, or None when none is held."""
    try:
        rm = client.get_registered_model(lock)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise
    tags = dict(rm.tags or {})
    try:
        expires = float(tags[EXPIRES_TAG])
    except (KeyError, ValueError):  # tags not written (yet): count from its creation
        expires = (rm.creation_timestamp or 0) / 1000.0 + LEASE_TTL
    return tags.get(OWNER_TAG, ""), expires


@contextlib.contextmanager
def lease(client, lock: str, wait: float, ttl: float) -> Iterator[AliasLock]:
    """Hold the lease registered model ``lock`` for the block."""
    token = f"{uuid.uuid4().hex} {socket.gethostname()} pid {os.getpid()}"
    deadline = time.monotonic() + wait
    while True:
        held = AliasLock(f"the lease {lock!r}", ttl)
        try:
            client.create_registered_model(
                lock, tags={OWNER_TAG: token, EXPIRES_TAG: repr(time.time() + ttl)},
                description="minibatch_kmeans: held while an alias is checked and moved")
            break
        except MlflowException as e:
            holder = read_lease(client, lock)
            if holder is None and e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if holder is not None and holder[1] < time.time():
            break_stale_lease(client, lock, holder)
            continue
        if time.monotonic() > deadline:
            raise AliasLockError(f"the lease {lock!r} is still held by {holder and holder[0]!r}"
                                 f" after {wait:g} s: expected it free")
        time.sleep(POLL_SECONDS * 4)
    try:
        yield held
    finally:
        now = read_lease(client, lock)
        if now is not None and now[0] == token:
            client.delete_registered_model(lock)
        else:
            logger.warning("the lease %r was taken from this job (now %r) before it ended",
                           lock, now and now[0])


def break_stale_lease(client, lock: str, stale) -> None:
    """Delete an expired lease, after reading that it is still the one found expired."""
    again = read_lease(client, lock)
    if again != stale:
        return
    logger.warning("breaking the expired lease %r of %r (expired %.0f s ago)", lock, stale[0],
                   time.time() - stale[1])
    try:
        client.delete_registered_model(lock)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise
