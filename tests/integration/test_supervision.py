"""A crashed loop ends the process, loudly and non-zero, so a supervisor restarts it.

The crash is injected with ``XLMATE_FAULT_INJECT=<point>:<seconds>`` (off by
default; see xlmate/supervision.py and docs/reliability.md), into real
``xlmate`` processes.
"""

from __future__ import annotations

import signal

from tests.integration.cluster import Cluster, Proc, http_get, wait_until

EXIT_DEADLINE_S = 15.0  # crash -> 503 -> drain (at most its 5 s timeout) -> exit


def watch_until_exit(proc: Proc, health_url: str, deadline_s: float) -> tuple[int, list[int]]:
    """Poll ``/healthz`` until the process exits; its exit code and the statuses seen."""
    statuses: list[int] = []

    def exited() -> bool:
        if not proc.alive():
            return True
        status = http_get(health_url, timeout=1)[0]
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        return False

    wait_until(exited, deadline_s, f"{proc.name} to exit")
    return proc.wait_exit(1), statuses


def test_a_crashed_edge_loop_is_logged_and_exits_non_zero(cluster: Cluster) -> None:
    """The edge's resend loop raising is logged with its traceback and the edge exits non-zero.

    (The edge stops listening as it drains, so /healthz mostly goes from 200 to
    refused; the 503 of a failed supervisor is covered in tests/unit.)
    """
    cluster.start_broker()
    edge = cluster.start_edge("eu-west", env={"XLMATE_FAULT_INJECT": "edge.resend_loop:2"})
    code, statuses = watch_until_exit(edge.proc, f"{edge.http}/healthz", EXIT_DEADLINE_S)
    log = edge.proc.log()
    assert code != 0, f"exit status {code}:\n{log[-3000:]}"
    assert statuses[0] == 200 and 200 not in statuses[1:], statuses
    assert "edge.resend_loop crashed" in log and "Traceback" in log, log[-3000:]
    assert "InjectedFault" in log, log[-3000:]


def test_a_crashed_broker_loop_exits_non_zero(cluster: Cluster) -> None:
    """The broker's heartbeat loop raising logs the traceback and exits non-zero."""
    broker = cluster.start_broker(env={"XLMATE_FAULT_INJECT": "broker.heartbeat_loop:2"})
    code, statuses = watch_until_exit(broker, f"{cluster.broker_http}/healthz", EXIT_DEADLINE_S)
    log = broker.log()
    assert code != 0, f"exit status {code}:\n{log[-3000:]}"
    assert statuses[0] == 200 and 200 not in statuses[1:], statuses
    assert "broker.heartbeat_loop crashed" in log and "Traceback" in log, log[-3000:]


def test_without_a_fault_a_stopped_edge_exits_zero(cluster: Cluster) -> None:
    """The control: the same edge, no fault injected, exits 0 on SIGTERM."""
    cluster.start_broker()
    edge = cluster.start_edge("eu-west")
    edge.proc.signal(signal.SIGTERM)
    assert edge.proc.wait_exit(EXIT_DEADLINE_S) == 0, edge.proc.log()[-3000:]
    assert "crashed" not in edge.proc.log()
