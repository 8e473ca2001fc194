"""The one supervision rule (``xlmate.supervision``), without sockets."""

from __future__ import annotations

import asyncio
import logging

import pytest

from xlmate.errors import ConfigError
from xlmate.supervision import Faults, InjectedFault, Supervisor


async def crash() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("boom")


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_crashed_loop_is_logged_recorded_and_closes_the_owner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop that raises: traceback logged, ``failure`` set, ``on_failure`` called once."""
    calls: list[str] = []
    owner = Supervisor("test", lambda: calls.append("closed"))
    owner.loop(forever(), "test.forever")
    with caplog.at_level(logging.ERROR, "xlmate.supervision"):
        task = owner.loop(crash(), "test.crash")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert owner.failure == "test.crash" and calls == ["closed"]
    record = next(r for r in caplog.records if "test.crash crashed" in r.getMessage())
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])
    await owner.close()
    await owner.close()  # idempotent
    assert len(owner) == 0 and calls == ["closed"]


async def test_a_loop_that_returns_is_a_failure_too() -> None:
    """A loop must run until close: one that simply ends is a failure."""
    calls: list[int] = []
    owner = Supervisor("test", lambda: calls.append(1))
    await asyncio.gather(owner.loop(asyncio.sleep(0), "test.short"))
    await asyncio.sleep(0)
    assert owner.failure == "test.short" and calls == [1]


async def test_a_failed_short_task_is_logged_and_counted_but_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A per-request task that raises is logged with its traceback; the owner stays up."""
    owner = Supervisor("test", lambda: pytest.fail("a short task must not close the owner"))
    with caplog.at_level(logging.ERROR, "xlmate.supervision"):
        await asyncio.gather(owner.spawn(crash(), "test.fetch"), return_exceptions=True)
        await asyncio.sleep(0)
    assert owner.crashed == 1 and owner.failure is None and len(owner) == 0
    assert any(r.exc_info and "test.fetch" in r.getMessage() for r in caplog.records)


async def test_close_cancels_every_task_and_is_not_a_failure() -> None:
    """Closing cancels loops and short tasks alike, and that is no crash."""
    owner = Supervisor("test", lambda: pytest.fail("closing is not a failure"))
    loop_task = owner.loop(forever(), "test.loop")
    short = owner.spawn(forever(), "test.short")
    await owner.close()
    assert loop_task.cancelled() and short.cancelled() and owner.failure is None
    late = owner.spawn(forever(), "test.late")  # after close: cancelled at once
    await asyncio.gather(late, return_exceptions=True)
    assert late.cancelled()


def test_fault_points_are_off_unless_named() -> None:
    """No variable, no fault; a named point raises, after its delay if it has one."""
    Faults.from_env({}).check("edge.resend_loop")
    faults = Faults.from_env({"XLMATE_FAULT_INJECT": "edge.resend_loop, broker.x:3600"})
    with pytest.raises(InjectedFault):
        faults.check("edge.resend_loop")
    faults.check("broker.x")  # not yet
    faults.check("edge.beat_loop")
    with pytest.raises(ConfigError):
        Faults.from_env({"XLMATE_FAULT_INJECT": "edge.resend_loop:soon"})


async def test_an_edge_whose_loop_crashed_answers_healthz_503() -> None:
    """The edge's /healthz says 503 "failed" once its supervisor recorded a crash."""
    import json

    from xlmate.config import EdgeConfig
    from xlmate.edge.server import BrokerState, EdgeServer
    from xlmate.httpd import HttpRequest

    edge = EdgeServer(EdgeConfig(discovery=None))
    edge.brokers[1] = BrokerState(epoch="e", up=True)  # (as if its broker had beaten)
    request = HttpRequest("/healthz", {}, {}, "127.0.0.1")
    assert edge._healthz(request).status_code == 200
    edge.tasks.loop(crash(), "edge.resend_loop")
    for _ in range(500):  # a few loop turns; bounded, not a fixed sleep
        if edge.failure is not None:
            break
        await asyncio.sleep(0)
    response = edge._healthz(request)
    assert response.status_code == 503
    assert json.loads(response.body)["status"] == "failed"
    await edge.wait_closed()
    assert edge.failure == "edge.resend_loop"
