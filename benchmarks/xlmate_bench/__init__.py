"""``xlmate bench``: a load generator and scenarios for the cluster and for baselines.

It lives next to the baselines (``benchmarks/``) and installs as ``xlmate_bench``;
its own dependencies are the ``bench`` extra.  Modules, one job each:

- ``config``   -- ``BenchConfig``, what one run does (the CLI only builds it);
- ``games``    -- seeded legal games (python-chess random playouts);
- ``cluster``  -- the local cluster launcher, shared with the integration tests;
- ``targets``  -- what a run drives, and starting (and stopping) a local cluster;
- ``planners`` -- where the two players of each game connect;
- ``links``    -- the client side of one player's socket (thin, or ``GameClient``);
- ``driver``   -- keeps the measured games going, closed or open loop;
- ``idle``     -- sockets nobody plays on;
- ``stats``    -- what a run counts;
- ``report``   -- latency percentiles, per-process CPU/RSS, the table and the JSON;
- ``runner``   -- the phases of a run, in order.

Errors: ``BenchError`` (an ``XLMateError``, so the CLI turns it into a clean
exit) for anything that stops a run before it can report.
"""

from __future__ import annotations

from xlmate.errors import XLMateError


class BenchError(XLMateError):
    """A benchmark could not run: bad options, a cluster that did not start, no edges."""
