"""Every background task has an owner: one rule for every process.

A server creates its tasks through one ``Supervisor`` and never with a bare
``asyncio.create_task``.  Two kinds:

* ``loop(coro, name)``: a task that must live as long as the server (a socket
  reader, a timer, a heartbeat).  If it ends while the server is not closing,
  by an exception or by returning, the supervisor logs it with its traceback,
  records ``failure`` (``/healthz`` answers 503 from then on) and calls
  ``on_failure``, which closes the server; ``lifecycle.run_server`` then makes
  the process exit non-zero, so systemd or Kubernetes restart it.  A process
  that limps on without its resend loop would look healthy and lose commands.
* ``spawn(coro, name)``: a short-lived task (a fetch, a heartbeat sent now).
  It is kept until it ends; an exception is logged with its traceback and
  counted in ``crashed``; it does not stop the server (one request's bug must
  not drop every socket).

``close()`` cancels every task and waits for all of them; it is idempotent.

Fault injection (off by default): ``XLMATE_FAULT_INJECT`` is a comma-separated
list of fault points, read once when a server starts (``Faults.from_env``).  A
loop that calls ``faults.check("edge.resend_loop")`` raises ``InjectedFault``
when that point is listed; the tests use it to prove that a crashed loop ends
the process.  See docs/reliability.md for the points.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

from xlmate.errors import ConfigError, XLMateError

log = logging.getLogger("xlmate.supervision")

FAULT_ENV: Final = "XLMATE_FAULT_INJECT"


class InjectedFault(XLMateError):
    """Raised at a fault point named in ``XLMATE_FAULT_INJECT`` (tests only)."""


class Faults:
    """The fault points enabled for this process (none unless the variable is set).

    ``XLMATE_FAULT_INJECT=edge.resend_loop`` fails that point on its first
    check; ``edge.resend_loop:3`` only once 3 seconds have passed since the
    variable was read (so a test can see the process healthy first).
    """

    __slots__ = ("points",)

    def __init__(self, points: dict[str, float] | None = None) -> None:
        self.points = points or {}  # point -> monotonic time from which it fails

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults:
        """Read ``XLMATE_FAULT_INJECT`` once; log loudly when it enables anything."""
        now = time.monotonic()
        points: dict[str, float] = {}
        for item in environ.get(FAULT_ENV, "").split(","):
            name, _, after = item.strip().partition(":")
            if not name:
                continue
            try:
                points[name] = now + float(after or 0)
            except ValueError:
                raise ConfigError(f"{FAULT_ENV}: {item!r} is not point[:seconds]") from None
        if points:
            log.warning("%s: fault points enabled: %s", FAULT_ENV, ", ".join(sorted(points)))
        return cls(points)

    def check(self, point: str) -> None:
        """Raise ``InjectedFault`` if ``point`` is enabled (and its delay has passed)."""
        if self.points:
            due = self.points.get(point)
            if due is not None and time.monotonic() >= due:
                raise InjectedFault(f"fault injected at {point} ({FAULT_ENV})")


class Supervisor:
    """Owns one server's tasks: see the module docstring."""

    def __init__(self, component: str, on_failure: Callable[[], None]) -> None:
        self.component = component
        self.failure: str | None = None  # the name of the loop that ended, if one did
        self.crashed = 0  # short-lived tasks that raised
        self._on_failure = on_failure
        self._loops: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._loops) + len(self._tasks)

    @property
    def closing(self) -> bool:
        """True once ``close()`` was called: no new tasks start."""
        return self._closing

    def loop(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a task that must run until ``close()``; its end is a failure."""
        task = asyncio.create_task(coro, name=name)
        if self._closing:
            task.cancel()
        self._loops.add(task)
        task.add_done_callback(self._loop_done)
        return task

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a short-lived task; kept until it ends, its exception logged."""
        task = asyncio.create_task(coro, name=name)
        if self._closing:
            task.cancel()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _loop_done(self, task: asyncio.Task[Any]) -> None:
        self._loops.discard(task)
        if task.cancelled() or self._closing:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "%s: %s failed while closing",
                    self.component,
                    task.get_name(),
                    exc_info=task.exception(),
                )
            return
        exc = task.exception()
        if exc is not None:
            log.critical(
                "%s: %s crashed; shutting down to be restarted",
                self.component,
                task.get_name(),
                exc_info=exc,
            )
        else:
            log.critical(
                "%s: %s ended unexpectedly; shutting down to be restarted",
                self.component,
                task.get_name(),
            )
        if self.failure is None:
            self.failure = task.get_name()
            self._on_failure()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crashed += 1
            log.error("%s: task %s failed", self.component, task.get_name(), exc_info=exc)

    async def close(self) -> None:
        """Cancel every task and wait for all of them; idempotent."""
        self._closing = True
        while self._loops or self._tasks:
            tasks = self._loops | self._tasks
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._closed = True
