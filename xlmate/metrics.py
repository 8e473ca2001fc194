"""Prometheus metrics: one registry per process, helpers to declare on it.

Each component builds its own ``CollectorRegistry`` (never the global one, so
tests can run several components in one process) and serves it on ``/metrics``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


def new_registry() -> CollectorRegistry:
    """A fresh registry with no default collectors."""
    return CollectorRegistry(auto_describe=True)


def counter(
    registry: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...] = ()
) -> Counter:
    """A counter named ``xlmate_<name>``."""
    return Counter(f"xlmate_{name}", doc, labels, registry=registry)


def gauge(registry: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    """A gauge named ``xlmate_<name>``."""
    return Gauge(f"xlmate_{name}", doc, labels, registry=registry)


def histogram(
    registry: CollectorRegistry, name: str, doc: str, buckets: tuple[float, ...]
) -> Histogram:
    """A histogram named ``xlmate_<name>`` (seconds)."""
    return Histogram(f"xlmate_{name}", doc, buckets=buckets, registry=registry)


class FastCounters(Collector):
    """Counters kept as plain ints by the hot path, exposed as Prometheus counters.

    A ``prometheus_client`` counter takes a lock on every ``inc``; for counts
    bumped once or more per move (frames, events, commands) a plain attribute
    read at scrape time is enough and costs nothing.  ``read`` maps a metric
    name (``xlmate_`` is prefixed) to its help text and a function reading it.
    """

    def __init__(self, read: dict[str, tuple[str, Callable[[], int]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, (doc, value) in self.read.items():
            yield CounterMetricFamily(f"xlmate_{name}", doc, value=value())


def fast_counters(
    registry: CollectorRegistry, read: dict[str, tuple[str, Callable[[], int]]]
) -> None:
    """Register ``FastCounters(read)`` on ``registry``."""
    registry.register(FastCounters(read))


_SAMPLE = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{)?", re.MULTILINE)


def constant_labels(labels: Mapping[str, str]) -> bytes:
    """``{"shard": "1"}`` -> ``b'shard="1"'``, for ``with_labels``; values are escaped."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{name}="{escape(value)}"' for name, value in labels.items()).encode()


def with_labels(exposition: bytes, labels: bytes) -> bytes:
    """Add ``labels`` (``constant_labels``) to every sample of a text exposition.

    Comment lines (``# HELP``, ``# TYPE``) are left alone; a sample ``name value``
    becomes ``name{labels} value`` and ``name{a="b"} value`` becomes
    ``name{labels,a="b"} value``.  Used where every metric of a process shares
    a label (a broker's shard) without declaring it on each metric.
    """

    def add(match: re.Match[bytes]) -> bytes:
        name = match.group(1)
        if match.group(2):
            return name + b"{" + labels + b","
        return name + b"{" + labels + b"}"

    return _SAMPLE.sub(add, exposition)
