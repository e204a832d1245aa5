"""The step fit's cache kept spread over the live executors (issue 18): when it caches
again, and that caching again keeps the rows. The real executor loss is
tests/test_cluster.py::test_train_survives_an_executor_killed_mid_fit."""
import numpy as np
import pytest

from helpers import blobs, cols, columns_df
from minibatch_kmeans.spark.features import resolve
from minibatch_kmeans.spark.fit import FitParams, fit
from minibatch_kmeans.spark.prepare import prepare
from minibatch_kmeans.spark.rebalance import BlockView, CacheBalancer


@pytest.fixture(scope="module")
def df(spark):
    X, _, _ = blobs(n=1200, k=3, d=3, seed=4)
    return columns_df(spark, X, partitions=3)


class FakeView:
    """Executors and block holders as a test says."""

    def __init__(self, live, holders=None, missing=0):
        self.live, self.held, self.missing = frozenset(live), holders, missing

    def live_executors(self):
        return self.live

    def holders(self):
        return frozenset(self.held if self.held is not None else self.live), self.missing


class FakeData:
    n_partitions = 2

    def __init__(self):
        self.recached = 0

    def recache(self):
        self.recached += 1


def _balancer(view):
    data = FakeData()
    return CacheBalancer(data, view, every_seconds=0), data


def test_a_replacement_after_a_loss_rebuilt_on_the_survivor_recaches_once():
    view = FakeView({"a", "b"})
    balancer, data = _balancer(view)
    assert not balancer.check()  # nothing changed
    view.live, view.held, view.missing = frozenset({"a"}), {"a"}, 1  # b lost
    assert not balancer.check()  # its partition is not rebuilt yet
    view.missing = 0  # rebuilt on the survivor: nowhere else to go yet
    assert not balancer.check()
    view.live = frozenset({"a", "c"})  # the replacement registers
    assert balancer.check() and data.recached == 1 and balancer.rebalances == 1
    view.held = {"a", "c"}  # the new cache spread over both
    assert not balancer.check() and data.recached == 1


def test_a_partition_rebuilt_on_the_replacement_needs_no_recache():
    view = FakeView({"a", "b"})
    balancer, data = _balancer(view)
    view.live, view.held, view.missing = frozenset({"a", "c"}), {"a"}, 1
    assert not balancer.check()  # waits for the lost partition
    view.held, view.missing = {"a", "c"}, 0  # rebuilt on the replacement
    assert not balancer.check() and data.recached == 0


def test_more_executors_than_before_do_not_recache():
    """Executors joining (dynamic allocation) leave a cache that is as spread as it was."""
    view = FakeView({"a"}, holders={"a"})
    balancer, data = _balancer(view)
    view.live = frozenset({"a", "b", "c"})
    assert not balancer.check() and data.recached == 0


def test_a_failing_view_stops_watching():
    class Broken(FakeView):
        def holders(self):
            raise RuntimeError("no such method")

    view = Broken({"a", "b"})
    balancer, data = _balancer(view)
    view.live = frozenset({"a", "c"})
    assert not balancer.check() and not balancer.watching and data.recached == 0

    class Refused(FakeView):  # a session that refuses py4j calls
        def live_executors(self):
            raise RuntimeError("py4j security")

    balancer, data = _balancer(Refused({"a"}))
    assert not balancer.watching and not balancer.check() and data.recached == 0


def test_recache_keeps_the_rows_and_local_mode_is_watched_cheaply(spark, df):
    """``recache`` fills a new cache with the same rows in the same order; in local mode
    the view sees the driver alone, which holds every partition, so no re-cache."""
    prep = prepare(df, resolve(df, "features", cols(3)), 3, partitions=2)
    try:
        view = BlockView.of(prep)
        assert view is not None and len(view.live_executors()) == 1
        held, missing = view.holders()
        assert held == view.live_executors() and missing == 0
        before = prep.df.toArrow()
        prep.recache()
        assert prep.df.is_cached and view.holders() == (held, 0)
        assert prep.df.toArrow().equals(before)
        balancer = CacheBalancer(prep, every_seconds=0)
        assert balancer.watching and not balancer.check() and balancer.rebalances == 0
    finally:
        prep.unpersist()


def test_step_fit_reports_no_rebalance_without_executor_changes(spark, df):
    params = FitParams(k=3, batch_size=200, max_iter=1, seed=2, fit_mode="step").validate()
    result = fit(df, resolve(df, "features", cols(3)), params)
    assert result.summary["cacheRebalances"] == 0
    assert np.isfinite(result.summary["trainingCost"])
