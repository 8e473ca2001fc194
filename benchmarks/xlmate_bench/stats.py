"""What a run counts: moves landed and their latencies, acks, errors, anomalies.

Latencies only count inside the measurement window (``open_window`` ..
``close_window``); everything else (moves, games, errors) counts for the whole
run.  The driver, the planners and the idle pool write here; the runner reads.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Final

MAX_SAMPLES: Final = 10  # error details kept for the report


class Stats:
    """Counters of a run; latencies only count inside the measurement window."""

    def __init__(self) -> None:
        self.window: tuple[float, float] | None = None
        self.measuring = False
        self.latencies: list[float] = []
        self.acks: list[float] = []
        self.errors: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.samples: list[str] = []
        self.moves_all = 0
        self.offered = 0
        self.unserved = 0
        self.games_started = 0
        self.games_finished = 0
        self.phase = "setup"

    def open_window(self) -> float:
        """Start measuring now; forget what the previous window counted."""
        self.latencies, self.acks = [], []
        self.offered = self.unserved = 0
        self.measuring = True
        return time.perf_counter()

    def close_window(self) -> float:
        """Stop measuring now."""
        self.measuring = False
        return time.perf_counter()

    def landed(self, latency: float) -> None:
        """A move reached the opponent ``latency`` seconds after it was sent."""
        self.moves_all += 1
        if self.measuring:
            self.latencies.append(latency)

    def acked(self, latency: float) -> None:
        """The mover's own ack came ``latency`` seconds after the send."""
        if self.measuring:
            self.acks.append(latency)

    def error(self, kind: str, detail: str | None = None) -> None:
        """Count one error of ``kind``; keep the first few ``detail`` texts as evidence."""
        self.errors[kind] += 1
        if detail is not None and len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{kind}: {detail}")

    def anomaly(self, kind: str, detail: str) -> None:
        """Count something the target did that a correct client absorbs (a duplicate ``v``)."""
        self.anomalies[kind] += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{kind}: {detail}")
