"""XLMate realtime: shared code of the broker, the edges and discovery.

Modules: ``errors`` (the exception tree), ``constants`` (protocol numbers),
``messages`` (client commands parsed from WebSocket JSON), ``wire`` (the
internal msgpack bus format), ``tokens`` (seat JWTs), ``config`` (settings of
each process), ``httpd`` (the small GET-only HTTP layer), ``cli`` (click).
"""

__version__ = "0.1.0"
