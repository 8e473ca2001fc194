"""The broker's side of the three votes (broker.election): pure, time passed by hand."""

from __future__ import annotations

from xlmate.broker.election import AdoptTerm, Demote, Election, Promote
from xlmate.heartbeat import Lease

LEASE_MS = 1000


def standby(me: str = "b", *, term: int = 1, now: int = 0, empty: bool = False) -> Election:
    return Election(me, term=term, lease_ms=LEASE_MS, now=now, empty=empty)


def active(me: str = "a", *, term: int = 1, now: int = 0) -> Election:
    e = standby(me, term=term - 1, now=now)
    assert e.on_lease(Lease(me, term, LEASE_MS), now, now) == Promote(term)
    return e


def test_a_synced_standby_claims_only_after_a_whole_lease_of_silence() -> None:
    """Claim iff in sync and nothing heard from the active for lease_ms (exact boundary)."""
    e = standby()
    assert not e.report(5000).claim  # not in sync, a holder may exist
    e.in_sync("a", 100)
    assert not e.report(100 + LEASE_MS - 1).claim
    assert e.report(100 + LEASE_MS).claim
    e.active_frame("a", 1000)
    assert not e.report(1500).claim
    e.out_of_sync()
    assert not e.report(9000).claim


def test_an_unsynced_standby_claims_only_while_discovery_knows_no_holder() -> None:
    """Cold start: no holder -> claim (an empty journal waits two leases); a holder -> never."""
    e = standby(term=0)
    e.on_lease(Lease(None, 0, 0), 0, 10)
    assert e.report(10).claim
    e.on_lease(Lease("a", 1, 0), 20, 20)
    assert not e.report(10_000).claim
    empty = standby(term=0, empty=True)
    empty.on_lease(Lease(None, 0, 0), 0, 10)
    assert not empty.report(10 + 2 * LEASE_MS - 1).claim
    assert empty.report(10 + 2 * LEASE_MS).claim


def test_a_grant_promotes_and_acking_alone_waits_for_an_unprotected_report() -> None:
    """A lease naming us promotes us in its term; we accept until sent_at + ms; we ack
    alone only after discovery answered our first report as active (in_sync=false)."""
    e = standby(term=1)
    assert e.on_lease(Lease("b", 2, 800), 1000, 1010) == Promote(2)
    assert e.role == "active" and e.term == 2
    assert e.accepting(1799) and not e.accepting(1800)
    assert not e.may_ack_alone()
    report = e.report(1020)
    assert report.role == "active" and report.claim and not report.in_sync
    e.sent(report)
    e.on_lease(Lease("b", 2, 1000), 1020, 1030)
    assert e.may_ack_alone()
    e.standby_synced("a", 1500)
    assert not e.may_ack_alone()
    assert e.report(1500).in_sync and e.report(1500).peer == "a"


def test_an_active_broker_hears_nobody_for_a_lease_and_fences_itself() -> None:
    """Accepting needs discovery's lease or the in-sync standby heard within lease_ms."""
    e = active(now=0)
    e.standby_synced("b", 0)
    e.on_lease(Lease("a", 1, LEASE_MS), 0, 5)
    assert e.accepting(999)
    e.standby_frame("b", 1500)  # the standby alone keeps it going
    assert e.accepting(2499) and not e.accepting(2500)
    e.on_lease(Lease("a", 1, LEASE_MS), 2600, 2610)
    assert e.accepting(2700)


def test_a_lost_standby_holds_acks_until_discovery_answers_an_unprotected_report() -> None:
    """After standby_lost: not alone until a reply to a heartbeat that said in_sync=false."""
    e = active(now=0)
    e.standby_synced("b", 0)
    report = e.report(100)
    assert report.in_sync
    e.sent(report)
    e.standby_lost()
    e.on_lease(Lease("a", 1, LEASE_MS), 100, 110)  # answers the protected report
    assert not e.may_ack_alone()
    report = e.report(200)
    assert not report.in_sync
    e.sent(report)
    e.on_lease(Lease("a", 1, LEASE_MS), 200, 210)
    assert e.may_ack_alone()


def test_a_higher_term_demotes_an_active_broker_and_is_adopted_by_a_standby() -> None:
    """From discovery or the peer, a higher term wins; a stale active peer is refused."""
    e = active(term=3)
    assert e.on_peer_term("active", 3) == (None, True)  # two actives in one term: refuse
    assert e.on_peer_term("standby", 1) == (None, False)
    effect = e.on_lease(Lease("b", 4, 900), 0, 10)
    assert isinstance(effect, Demote) and effect.term == 4
    assert e.role == "standby" and not e.accepting(10)
    assert e.on_peer_term("active", 5) == (AdoptTerm(5), False)
    assert e.term == 5


def test_a_stale_grant_does_not_promote() -> None:
    """A lease naming us in a term below the one we know is ignored."""
    e = standby(term=4)
    assert e.on_lease(Lease("b", 3, 500), 0, 1) is None
    assert e.role == "standby"


def test_a_holder_restarted_on_its_journal_claims_and_resumes_in_its_term() -> None:
    """Discovery still names us holder (we restarted): claim, and its renewal promotes us;
    we ack alone only once discovery answered a report saying we are unprotected (it
    may still record the standby we named before the restart)."""
    e = standby("a", term=3)
    e.on_lease(Lease("a", 3, 0), 0, 5)
    assert e.report(5).claim
    assert e.on_lease(Lease("a", 3, LEASE_MS), 5, 10) == Promote(3)
    assert not e.may_ack_alone()
    e.on_lease(Lease("a", 3, LEASE_MS), 5, 20)  # a late answer to the standby's report
    assert not e.may_ack_alone()
    report = e.report(30)
    assert not report.in_sync
    e.sent(report)
    e.on_lease(Lease("a", 3, LEASE_MS), 30, 40)
    assert e.may_ack_alone()
