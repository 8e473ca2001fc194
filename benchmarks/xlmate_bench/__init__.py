"""``xlmate bench``: a load generator and scenarios for the cluster and for baselines.

Modules:

- ``config``   -- ``BenchConfig``, what one run does (the CLI only builds it);
- ``games``    -- seeded legal games (python-chess random playouts);
- ``launcher`` -- starts a local cluster (broker, discovery, edges) as subprocesses;
- ``links``    -- the client side of one player's socket (thin, or ``GameClient``);
- ``runner``   -- closed-loop and open-loop drivers, idle connections, scaling;
- ``report``   -- latency percentiles, per-process CPU/RSS, the table and the JSON.

Errors: ``BenchError`` (an ``XLMateError``, so the CLI turns it into a clean
exit) for anything that stops a run before it can report.
"""

from __future__ import annotations

from xlmate.errors import XLMateError


class BenchError(XLMateError):
    """A benchmark could not run: bad options, a cluster that did not start, no edges."""
