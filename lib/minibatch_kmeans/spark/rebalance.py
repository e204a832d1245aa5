"""Keep the step fit's cached table spread over the live executors.

A step's job runs one task per cached partition, and each task prefers the executor that
holds its block (PROCESS_LOCAL): Spark waits ``spark.locality.wait`` (3 s) for that
executor before running the task elsewhere, far longer than a step. When an executor is
lost, its partitions are rebuilt wherever their next tasks run, most often on a survivor
before a replacement has registered. From then on the survivor holds them, runs every
step's tasks, and the replacement stays idle for the rest of the fit: one lost executor
halves the fit's parallelism (3 tasks against 714 in one run).

:class:`CacheBalancer` watches for that at little cost: before a step, at most once per
:data:`CHECK_SECONDS`, it asks the driver's block manager master which executors are
alive (one call on the driver, no job). Only when that set has changed does it look up
which executors hold the cached partitions. When fewer hold them than after caching,
and the live executors could hold more, it caches the table again
(:meth:`~minibatch_kmeans.spark.prepare.Prepared.recache`: one more pass over the
input), whose tasks run wherever a task slot is free, which spreads the new blocks over
the live executors; and logs it at INFO. A lost partition not rebuilt yet is waited
for: rebuilt on the replacement, it needs no second pass.

Classic Spark only (py4j): on Spark Connect, for the disk layout (which has no cache),
or when the calls fail (another Spark version), it does nothing, as before. It changes
no setting: ``spark.locality.wait=0s`` would do the same for every job of the
application.
"""
from __future__ import annotations

import logging
import time
from typing import FrozenSet, Optional, Tuple

from .prepare import Prepared
from .session import is_connect

logger = logging.getLogger(__name__)

#: Seconds at least between two looks at the executors.
CHECK_SECONDS = 1.0

_DEFAULT = object()


class BlockView:
    """Where a cached table's blocks and the live executors are, from the driver's block
    manager master (py4j calls on the driver, no job). Executors are named by their block
    manager's ``host:port``."""

    def __init__(self, df):
        self.df = df
        self.context = df.sparkSession.sparkContext._jsc.sc()

    @classmethod
    def of(cls, data: Prepared) -> Optional["BlockView"]:
        """The view of ``data``'s cache; None when there is nothing to watch: the disk
        layout, or Spark Connect."""
        if data.storage != "memory" or data.df is None or is_connect(data.df.sparkSession):
            return None
        return cls(data.df)

    def live_executors(self) -> FrozenSet[str]:
        """Every live executor (the driver only in local mode, where it is the only one)."""
        names = set(str(self.context.getExecutorMemoryStatus().keySet().mkString("\n"))
                    .split("\n")) - {""}
        if len(names) > 1:
            names.discard(str(self.context.env().blockManager().blockManagerId().hostPort()))
        return frozenset(names)

    def holders(self) -> Optional[Tuple[FrozenSet[str], int]]:
        """(the executors holding the cached partitions, how many partitions none holds),
        or None when the table is not cached."""
        rdd = self._cached_rdd()
        if rdd is None:
            return None
        jvm = self.df.sparkSession.sparkContext._jvm
        master = self.context.env().blockManager().master()
        holders, missing = set(), 0
        for i in range(rdd.getNumPartitions()):
            locations = master.getLocations(jvm.org.apache.spark.storage.RDDBlockId(rdd.id(), i))
            n = locations.size()
            missing += n == 0
            holders.update(str(locations.apply(j).hostPort()) for j in range(n))
        return frozenset(holders), missing

    def _cached_rdd(self):
        """The RDD of the table's cached batches (in the JVM), or None when not cached."""
        cache = self.df.sparkSession._jsparkSession.sharedState().cacheManager()
        found = cache.lookupCachedData(self.df._jdf)
        if found.isEmpty():
            return None
        return found.get().cachedRepresentation().cacheBuilder().cachedColumnBuffers()


class CacheBalancer:
    """Re-caches a prepared table whose partitions an executor loss left crowded on fewer
    executors than it had, once the live executors can hold them apart again.

    Create it right after the table was cached; call :meth:`check` before each job over
    it. ``view`` tells where executors and blocks are (default: :meth:`BlockView.of`;
    None: never re-cache). ``rebalances`` counts the re-caches."""

    def __init__(self, data: Prepared, view=_DEFAULT, every_seconds: float = CHECK_SECONDS):
        self.data = data
        self.rebalances = 0
        self.every_seconds = every_seconds
        self._next = 0.0
        self._pending = False  # a partition was lost and not rebuilt yet: look again
        self._executors: FrozenSet[str] = frozenset()
        self._spread = 0
        self._view = None
        try:  # a session may refuse py4j calls (shared Databricks clusters)
            self._view = BlockView.of(data) if view is _DEFAULT else view
            if self._view is not None:
                self._cached_now()
        except Exception as e:  # noqa: BLE001 - an optimisation only
            self._give_up(e)

    @property
    def watching(self) -> bool:
        """Whether it watches (classic Spark, a cache in memory, the calls work)."""
        return self._view is not None

    def check(self) -> bool:
        """Re-cache when the cache needs spreading (see the module); True when it did.
        Never fails: when the calls fail, it stops watching."""
        if self._view is None:
            return False
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every_seconds
        try:
            return self._check()
        except Exception as e:  # noqa: BLE001 - an optimisation only
            self._give_up(e)
            return False

    def _check(self) -> bool:
        live = self._view.live_executors()
        if live == self._executors and not self._pending:
            return False
        self._executors = live
        found = self._view.holders()
        if found is None:  # not cached (any more): nothing to spread
            return False
        holders, missing = found
        self._pending = missing > 0
        room = min(self._n_partitions(), len(live))
        if missing or len(holders) >= self._spread or len(holders) >= room:
            return False
        logger.info("rebalancing the cached training table: the executors changed, and "
                    "its %d partitions are on %d of the %d live executors (%d after "
                    "caching); caching it again (one pass over the input) so that every "
                    "executor runs its share of the steps", self._n_partitions(),
                    len(holders), len(live), self._spread)
        t0 = time.perf_counter()
        self.data.recache()
        self.rebalances += 1
        self._cached_now()
        logger.info("rebalanced the cached training table in %.2f s", time.perf_counter() - t0)
        return True

    def _cached_now(self) -> None:
        """The table was just cached: its tasks ran on every live executor they could."""
        self._executors = self._view.live_executors()
        self._spread = min(self._n_partitions(), len(self._executors))
        self._pending = False

    def _give_up(self, error: Exception) -> None:
        logger.info("not watching where the cached training table lies (%s)", error)
        self._view = None

    def _n_partitions(self) -> int:
        return max(1, int(self.data.n_partitions or 1))
