"""Prometheus metrics: one registry per process, helpers to declare on it.

Each component builds its own ``CollectorRegistry`` (never the global one, so
tests can run several components in one process) and serves it on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
