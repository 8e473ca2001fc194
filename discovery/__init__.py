"""Discovery: which edge should a client use?

Modules: ``heartbeat`` (the REQ/REP wire format edges heartbeat in),
``registry`` (live edges, pure, time injected), ``regions`` (the region
distance table), ``placement`` (the pure ``place`` function), ``server`` (the
REP socket, the sweep task and the HTTP API; ``main`` is ``xlmate discovery``).
See docs/discovery.md.
"""
