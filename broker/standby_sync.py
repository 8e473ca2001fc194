"""When the active broker may count a standby as in sync.  Pure.

A standby that said hello gets a snapshot (the journal up to batch
``snapshot_seq``) and then the stream.  Acking its snapshot is not enough to
protect the active broker: while the snapshot travelled, the active broker may
have been acking batches alone (discovery then knew it as unprotected), and a
batch acked alone may still be in flight to the standby.  Were the active
broker to name the standby in sync now, discovery could hand the shard to a
standby that lacks an acked batch.

So the standby is in sync only once it has acked every batch the active broker
has acked to clients so far.  When its snapshot ack arrives, the session takes
that as its ``target`` and the active broker *freezes* what it acks alone at
that point (``frozen``); the batches up to the target are already on their way,
so the standby's acks reach it quickly and from then on every batch waits for
the standby.  A standby that does not reach the target within ``wait_ms`` is
given up (``expired``): the active broker goes on alone and the standby tries
again (the next ack starts a new target).

A hello from the standby this session serves, within one lease of its snapshot
(``repeats``), is a copy of the hello it answered: frames queued in ZeroMQ and
TCP while a link was cut arrive together when it heals.  Such a hello starts no
other snapshot and does not drop the standby's protection.  A standby that
really lost the stream asks again after a lease at most; until it acks, the
active broker holds its batches (it never acks on a hello), so ignoring a copy
can delay, never lose, anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class StandbySession:
    """The active broker's view of one standby's catch-up (module docstring)."""

    standby: str
    snapshot_seq: int
    sent_at: int  # when its snapshot went out (the election's clock)
    acked: int = 0
    target: int | None = None  # set once the snapshot is acked: ack this to be in sync
    since: int | None = None  # when the target was set

    def repeats(self, standby: str, now: int, lease_ms: int) -> bool:
        """Whether a hello from ``standby`` at ``now`` repeats the one this session
        answered (module docstring): the same standby, within one lease of its snapshot."""
        return standby == self.standby and now - self.sent_at < lease_ms

    def ack(self, seq: int, released: int, now: int) -> bool:
        """The standby acked up to ``seq``; ``released`` is the highest batch acked to
        clients so far.  Whether it is now in sync."""
        self.acked = max(self.acked, seq)
        if self.target is None:
            if self.acked < self.snapshot_seq:
                return False
            self.target, self.since = max(self.snapshot_seq, released), now
        return self.acked >= self.target

    @property
    def frozen(self) -> bool:
        """Whether acking alone must stop growing (the standby is catching up the tail)."""
        return self.target is not None

    def expired(self, now: int, wait_ms: int) -> bool:
        """Whether the catch-up of the tail took longer than ``wait_ms``: give it up."""
        return self.since is not None and now - self.since >= wait_ms

    def restart(self) -> None:
        """Give up the current target (acking alone resumes; the next ack sets a new one)."""
        self.target, self.since = None, None
