"""The edge: terminates players' WebSockets in one region and relays to the broker.

Stateless by design (docs/architecture.md): every game it serves can be rebuilt
from the broker, and ``discovery_client`` keeps it registered at discovery.
"""
