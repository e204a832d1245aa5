"""Racing two registry writers at the worst moment: :class:`CheckedAtOnce`."""
import threading

from minibatch_kmeans.lifecycle.registry import CHAMPION, Registry


class CheckedAtOnce(Registry):
    """The same registry (and store) as ``reg``, for racing threads (:meth:`race`): their
    promotions and rollbacks of ``alias`` start together (a first barrier), and each one's
    first read of the alias, its check, waits at a second barrier, so that both racers
    check before either moves the alias. When a lock keeps the second racer from checking
    until the first is done, the second barrier times out after ``timeout`` seconds and the
    first goes on alone."""

    def __init__(self, reg: Registry, alias: str = CHAMPION, timeout: float = 3.0):
        self.__dict__.update(vars(reg))
        self.alias = alias
        self.start = threading.Barrier(2, timeout=120)
        self.checked = threading.Barrier(2, timeout=timeout)
        self.racer = threading.local()

    def version_for(self, name, alias=CHAMPION):
        mv = super().version_for(name, alias)
        if alias == self.alias and getattr(self.racer, "check", False):
            self.racer.check = False
            wait(self.checked)
        return mv

    def promote(self, name, version, alias=CHAMPION, **kwargs):
        self.arrive(alias)
        return super().promote(name, version, alias, **kwargs)

    def rollback(self, name, alias=CHAMPION, reason=None, **kwargs):
        self.arrive(alias)
        return super().rollback(name, alias, reason, **kwargs)

    def arrive(self, alias):
        if alias == self.alias and getattr(self.racer, "start", False):
            self.racer.start = False
            self.racer.check = True
            wait(self.start)

    def race(self, *calls):
        """Run each call in its own thread; returns each one's result or exception."""
        results = [None] * len(calls)

        def run(i, call):
            self.racer.start = True
            try:
                results[i] = call()
            except Exception as e:  # noqa: BLE001 - the race's loser
                results[i] = e

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        return results


def wait(barrier):
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
