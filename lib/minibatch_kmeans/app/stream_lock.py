"""One query per stream state directory (:mod:`minibatch_kmeans.app.stream_job`).

Two queries updating the same ``output.state`` would both apply their micro-batches to
the one model, and each overwrite the other's state. :func:`hold_state_dir` takes the
directory for one query and refuses a second with :class:`ConcurrentWriteError`, naming
the directory and the holder (host, pid, when it started, its input):

- a driver-local directory (a plain or ``file:`` path) by an OS lock (``flock``) on
  ``<state>/.lock``, held by an open file of this process. The kernel releases it when the
  process ends, however it ends (SIGKILL included), so a stale lock cannot exist; the file
  stays, holding the last owner's description for the message.
- any other path (``s3a:``, ``abfss:``, ``hdfs:``, ``dbfs:``, whose FUSE mount offers no
  lock shared between machines) by a lease: ``<state>/lease``, one JSON line written and
  read through Spark (in two alternating slots, so that one always reads) (so also on Spark Connect) with the owner's host, pid, a token and
  a heartbeat time, renewed every third of ``stream.lease_seconds`` while the query runs.
  A lease is stale, and taken over, once its heartbeat is older than ``lease_seconds``, or
  at once when its owner is a process of this host that no longer exists (SIGKILL).
  Object stores give Spark's writer no compare-and-set: after writing its lease the taker
  reads it back a moment later and gives up when another owner's is there, and a holder
  whose heartbeat finds another owner's lease stops its query.

Either is released when the query stops, also when it fails: by :meth:`StateDirLock.release`
where the job stops it, and otherwise by a watcher thread that sees the query end.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from ..errors import ConcurrentWriteError
from ..paths import driver_path, is_remote

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
LEASE_DIR = "lease"
#: A lease alternates between two slots, as the stream state does on such paths.
LEASE_SLOTS = ("slot-0", "slot-1")
#: How often the watcher looks whether the query ended (seconds).
WATCH_SECONDS = 1.0
#: How long a lease taker waits before reading its lease back (seconds).
SETTLE_SECONDS = 1.0


def owner_info(what: str) -> dict:
    """This process as a lock or lease records it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "since": time.time(), "what": what}


def describe_owner(owner: Optional[dict]) -> str:
    if not owner:
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner.get("since", 0))))
    return (f"pid {owner.get('pid')} on host {owner.get('host')}, since {since}"
            + (f", for {owner['what']}" if owner.get("what") else ""))


def held_error(directory: str, owner: Optional[dict]) -> ConcurrentWriteError:
    return ConcurrentWriteError(
        f"the stream state directory {directory} is held by another query "
        f"({describe_owner(owner)}): one query at a time may update a stream's state; stop "
        "that query first, or give this one another output.state and output.checkpoint")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class StateDirLock:
    """The OS lock on a driver-local state directory (see the module's docstring)."""

    def __init__(self, directory: str, what: str = ""):
        self.directory = directory
        self.path = os.path.join(driver_path(directory), LOCK_FILE)
        self.what = what
        self._fd: Optional[int] = None
        self._mutex = threading.Lock()

    def acquire(self) -> "StateDirLock":
        """Take the lock; ConcurrentWriteError when another open file holds it."""
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise held_error(self.directory, self._read_owner()) from None
            raise
        text = json.dumps(owner_info(self.what)).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        self._fd = fd
        return self

    def _read_owner(self) -> Optional[dict]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.loads(f.read() or "null")
        except (OSError, ValueError):
            return None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let the lock go (closing the file releases it); a second call does nothing."""
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                logger.info("released the lock on the stream state %s", self.directory)


class StateDirLease:
    """The lease on a state directory written through Spark (see the module's docstring).

    Parameters
    ----------
    spark : SparkSession
    directory : str
        The state directory; the lease is ``<directory>/lease``.
    seconds : float
        How long a lease lives without a heartbeat.
    what : str
        What holds it (shown to a query refused).
    """

    def __init__(self, spark, directory: str, seconds: float = 60.0, what: str = ""):
        self.spark = spark
        self.directory = directory
        self.path = directory.rstrip("/") + "/" + LEASE_DIR
        self.seconds = float(seconds)
        self.what = what
        self.owner: Optional[dict] = None
        self._next = 0
        self._mutex = threading.Lock()

    def _slot(self, slot: int) -> Optional[dict]:
        from pyspark.errors import AnalysisException

        path = f"{self.path}/{LEASE_SLOTS[slot]}"
        try:
            rows = self.spark.read.option("wholetext", "true").text(path).collect()
        except AnalysisException:  # never written, or being overwritten right now
            return None
        for row in rows:
            try:
                doc = json.loads(row[0])
            except (TypeError, ValueError):
                continue
            if isinstance(doc, dict):
                return doc
        return None

    def read(self) -> Optional[dict]:
        """The newest lease document of the two slots (None: none, or released)."""
        docs = [(float(d.get("at", 0)), slot, d)
                for slot, d in ((s, self._slot(s)) for s in range(len(LEASE_SLOTS))) if d]
        if not docs:
            return None
        _, slot, doc = max(docs, key=lambda t: t[0])
        self._next = 1 - slot
        return None if doc.get("released") else doc

    def _write(self, doc: dict) -> None:
        """Overwrite the slot not holding the newest document: while it is rewritten the
        other one still reads."""
        doc = dict(doc, at=time.time())
        (self.spark.createDataFrame([(json.dumps(doc),)], "value string").coalesce(1)
         .write.mode("overwrite").text(f"{self.path}/{LEASE_SLOTS[self._next]}"))
        self._next = 1 - self._next

    def is_stale(self, lease: dict) -> bool:
        """Whether ``lease`` may be taken over: no heartbeat for ``seconds``, or an owner
        process of this host that no longer exists."""
        if time.time() - float(lease.get("heartbeat", 0)) > self.seconds:
            return True
        return lease.get("host") == socket.gethostname() and not pid_alive(lease.get("pid", 0))

    def acquire(self) -> "StateDirLease":
        """Take the lease; ConcurrentWriteError when a live one is another's."""
        current = self.read()
        if current is not None and not self.is_stale(current):
            raise held_error(self.directory, current)
        if current is not None:
            logger.warning("taking over the stale lease on %s (%s, last heartbeat %.0f s "
                           "ago)", self.directory, describe_owner(current),
                           time.time() - float(current.get("heartbeat", 0)))
        owner = dict(owner_info(self.what), heartbeat=time.time())
        self._write(owner)
        time.sleep(SETTLE_SECONDS)
        back = self.read()
        if back is None or back.get("token") != owner["token"]:
            raise held_error(self.directory, back)
        self.owner = owner
        return self

    @property
    def held(self) -> bool:
        return self.owner is not None

    def renew(self) -> bool:
        """Write a new heartbeat; False (and the lease given up) when another owner's
        lease is there."""
        with self._mutex:
            if self.owner is None:
                return False
            there = self.read()
            if there is not None and there.get("token") != self.owner["token"]:
                logger.error("the lease on %s was taken by %s", self.directory,
                             describe_owner(there))
                self.owner = None
                return False
            self.owner = dict(self.owner, heartbeat=time.time())
            self._write(self.owner)
            return True

    def release(self) -> None:
        """Mark the lease released (when it is still ours); a second call does nothing."""
        with self._mutex:
            if self.owner is None:
                return
            owner, self.owner = self.owner, None
            try:
                there = self.read()
                if there is None or there.get("token") == owner["token"]:
                    self._write({"released": True, "token": owner["token"]})
                logger.info("released the lease on the stream state %s", self.directory)
            except Exception as e:  # the session may be stopping: the lease then expires
                logger.warning("could not release the lease on %s (%s): it expires after "
                               "%.0f s", self.directory, e, self.seconds)


def hold_state_dir(spark, directory: str, lease_seconds: float = 60.0, what: str = ""):
    """The lock (driver-local paths) or lease (any other) on a stream state directory,
    taken: :class:`StateDirLock` or :class:`StateDirLease`. Raises ConcurrentWriteError
    naming the directory and the query that holds it."""
    if is_remote(directory) or directory.lower().startswith("dbfs:"):
        return StateDirLease(spark, directory, lease_seconds, what).acquire()
    return StateDirLock(directory, what).acquire()


def watch(lock, is_active: Callable[[], bool], stop_query: Callable[[], None]) -> threading.Thread:
    """A daemon thread that releases ``lock`` once ``is_active()`` is false (the query
    stopped or failed), renews a lease every third of its life meanwhile, and calls
    ``stop_query`` when the lease was lost to another owner."""
    seconds = getattr(lock, "seconds", None)  # a lease's life; None for an OS lock
    every = WATCH_SECONDS if seconds is None else min(WATCH_SECONDS, seconds / 3)
    renew_every = 0.0 if seconds is None else seconds / 3

    def run():
        last = time.monotonic()
        while lock.held:
            time.sleep(every)
            try:
                active = is_active()
            except Exception as e:  # the session is stopping
                logger.warning("stream lock watcher: %s", e)
                active = False
            if not active:
                lock.release()
                return
            if renew_every and time.monotonic() - last >= renew_every:
                last = time.monotonic()
                try:
                    kept = lock.renew()
                except Exception as e:  # a passing storage error: try again next time
                    logger.warning("could not renew the lease on %s: %s", lock.directory, e)
                    continue
                if not kept:
                    logger.error("stopping the query: its lease on %s was lost",
                                 lock.directory)
                    stop_query()
                    return

    thread = threading.Thread(target=run, name=f"stream-lock {lock.directory}", daemon=True)
    thread.start()
    return thread
