"""Keep long-lived objects out of CPython's full collections; GC metrics for every process.

Theory of operation: CPython's cycle collector runs a full (generation 2)
collection whenever the objects promoted to the oldest generation since the last
one exceed 25 % of those it holds, and a full collection walks every tracked
object with the event loop stopped.  An edge holding 5,000 WebSockets keeps about
half a million tracked objects alive (sockets, protocol state, sessions, rooms),
and every socket keeps promoting a few more (keepalive pings, pending reads), so
a full collection came every 10-100 s and stopped the loop for 300-600 ms,
whatever the event loop (BENCHMARKS.md, "The GC pause").

``gc.freeze()`` moves every object alive into a permanent generation that no
collection scans (a list splice, O(1)).  ``GcFreezer`` does that every second,
after a young collection (``gc.collect(1)``, a few ms) so that short-lived cycles
are freed first: the oldest generation then only ever holds objects younger than
a second, and a full collection costs next to nothing whatever the number of
sockets.

What it could leak: objects frozen while alive are never collected once they
become cyclic garbage.  A real edge on uvloop used to leave ~11 frozen objects
per socket closed after it was frozen (~13 when the client just dropped the TCP
connection): websockets' protocol <-> parser cycles, which ``edge/wsconn.py`` now
breaks when a connection is lost, so a closed socket is freed by reference
counting (``benchmarks/freeze_leak.py`` measures it).  On asyncio's own loop the
selector transport and its bound ``_read_ready`` make 6 more per closed socket,
so ``freeze_wanted`` says no on any loop but uvloop.  For cycles nobody has
found yet, the freezer still *thaws* every ``thaw_every`` seconds (10 minutes by
default): ``gc.unfreeze()`` then one full collection, one full-collection pause
(300-600 ms at 5,000 sockets) per thaw instead of one every 10-100 s.
``xlmate_gc_frozen_objects`` shows what is frozen: it should follow the open
connections; growing with connections closed, something leaks.

``XLMATE_GC_FREEZE`` overrides: ``auto`` (the default: on with uvloop, off
otherwise) or ``off``; ``XLMATE_GC_THAW_S`` sets the thaw period (seconds).

``GcStats`` (installed once per process) times every collection through
``gc.callbacks``; ``GcCollector`` exposes, at scrape time:

- ``xlmate_gc_collections_total{generation}`` (counter, from ``gc.get_stats``),
- ``xlmate_gc_pause_seconds_total{generation}`` and
  ``xlmate_gc_pause_max_seconds{generation}`` (wall time the collections took,
  i.e. stopped the loop: total and longest),
- ``xlmate_gc_frozen_objects`` (gauge, ``gc.get_freeze_count``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from xlmate.errors import ConfigError
from xlmate.supervision import Supervisor

log = logging.getLogger("xlmate.gcfreeze")

FREEZE_ENV: Final = "XLMATE_GC_FREEZE"
THAW_ENV: Final = "XLMATE_GC_THAW_S"
INTERVAL_S: Final = 1.0
THAW_EVERY_S: Final = 600.0
GENERATIONS: Final = (0, 1, 2)


def freeze_wanted(loop: asyncio.AbstractEventLoop, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to run the freezer on ``loop``: uvloop only, unless ``XLMATE_GC_FREEZE=off``."""
    choice = environ.get(FREEZE_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "off"):
        raise ConfigError(f"{FREEZE_ENV} must be auto or off, not {choice!r}")
    return choice == "auto" and type(loop).__module__.split(".")[0] == "uvloop"


def thaw_every(environ: Mapping[str, str] = os.environ) -> float:
    """The thaw period: ``XLMATE_GC_THAW_S`` or 10 minutes."""
    text = environ.get(THAW_ENV, "").strip()
    try:
        value = float(text) if text else THAW_EVERY_S
    except ValueError:
        raise ConfigError(f"{THAW_ENV} must be a number of seconds, not {text!r}") from None
    if value <= 0:
        raise ConfigError(f"{THAW_ENV} must be positive")
    return value


class GcFreezer:
    """Every ``interval`` s: a young collection, then ``gc.freeze()``; every ``thaw``
    s: ``gc.unfreeze()`` and a full collection instead (module docstring)."""

    def __init__(
        self,
        interval: float = INTERVAL_S,
        thaw: float = THAW_EVERY_S,
        *,
        collect: Callable[[int], int] = gc.collect,
        freeze: Callable[[], None] = gc.freeze,
        unfreeze: Callable[[], None] = gc.unfreeze,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval <= 0 or thaw <= 0:
            raise ValueError("interval and thaw must be positive")
        self.interval = interval
        self.rounds_per_thaw = max(1, round(thaw / interval))
        self.freezes = 0
        self.thaws = 0
        self._collect = collect
        self._freeze = freeze
        self._unfreeze = unfreeze
        self._sleep = sleep

    def start(self, supervisor: Supervisor, name: str) -> asyncio.Task[Any]:
        """Run the freezer as one of ``supervisor``'s loops (its end is a failure)."""
        return supervisor.loop(self.run(), name)

    async def run(self, rounds: int | None = None) -> None:
        """Freeze until cancelled (or ``rounds`` rounds, for tests)."""
        done = 0
        while rounds is None or done < rounds:
            await self._sleep(self.interval)
            done += 1
            if done % self.rounds_per_thaw == 0:
                self._unfreeze()  # what closed sockets left in frozen cycles is freed
                self._collect(2)
                self.thaws += 1
            else:
                self._collect(1)  # young cycles first: they are garbage, not state to keep
            self._freeze()
            self.freezes += 1


class GcStats:
    """Counts and times every collection of this process (``gc.callbacks``)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.pause_total = [0.0, 0.0, 0.0]
        self.pause_max = [0.0, 0.0, 0.0]
        self._clock = clock
        self._started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """The ``gc.callbacks`` hook: ``start`` / ``stop`` of one collection."""
        if phase == "start":
            self._started = self._clock()
            return
        generation = info.get("generation", 2)
        took = max(0.0, self._clock() - self._started)
        self.pause_total[generation] += took
        if took > self.pause_max[generation]:
            self.pause_max[generation] = took


_installed: GcStats | None = None


def install() -> GcStats:
    """This process's ``GcStats``, hooked into ``gc.callbacks`` once."""
    global _installed
    if _installed is None:
        _installed = GcStats()
        gc.callbacks.append(_installed.on_gc)
    return _installed


class GcCollector(Collector):
    """The GC metrics of the module docstring, read at scrape time."""

    def __init__(self, stats: GcStats, prefix: str = "xlmate_") -> None:
        self.stats = stats
        self._prefix = prefix

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p, stats = self._prefix, self.stats
        collections = CounterMetricFamily(
            f"{p}gc_collections", "garbage collections", labels=("generation",)
        )
        paused = CounterMetricFamily(
            f"{p}gc_pause_seconds", "wall time spent in collections", labels=("generation",)
        )
        longest = GaugeMetricFamily(
            f"{p}gc_pause_max_seconds", "longest collection", labels=("generation",)
        )
        for generation, counts in zip(GENERATIONS, gc.get_stats(), strict=True):
            label = [str(generation)]
            collections.add_metric(label, counts["collections"])
            paused.add_metric(label, stats.pause_total[generation])
            longest.add_metric(label, stats.pause_max[generation])
        yield collections
        yield paused
        yield longest
        yield GaugeMetricFamily(
            f"{p}gc_frozen_objects",
            "objects in the permanent generation (gc.freeze): flat per connection, or a leak",
            value=gc.get_freeze_count(),
        )


def watch(registry: CollectorRegistry, prefix: str = "xlmate_") -> GcStats:
    """Hook this process's collections and expose them on ``registry``."""
    stats = install()
    registry.register(GcCollector(stats, prefix=prefix))
    return stats
