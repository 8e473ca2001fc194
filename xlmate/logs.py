"""Operator logs: one line per event, as text for people or JSON for machines.

Theory of operation.  Components log through their named logger as always
(``logging.getLogger("xlmate.edge")``); a line that an operator may want to
count, alert on or search carries an *event* name and fields, written with
``event(log, "conn_closed", game=..., code=...)``.  Only the CLI configures
logging (``setup``), so the components do not know the output format:

- ``text`` (the default): ``TIME LEVEL LOGGER: message key=value ...``.  The
  time is left out when something in front of the process stamps every line
  already (honcho's ``HONCHO_PROCESS_NAME`` or journald's ``JOURNAL_STREAM``
  in the environment, and stderr is not a terminal), so no line has two.
- ``json``: one object per line with ``time`` (UTC, ISO 8601), ``level``,
  ``component`` (broker, edge, discovery), ``node`` (the edge id, for example),
  ``logger``, ``event`` (``log`` for plain lines), ``msg`` and the event's fields.

Secrets never reach a log line: callers pass reasons, not tokens, and the
websockets library's debug output (raw request lines and headers, which
carry seat tokens in the query string) is capped at INFO whatever the level.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, Literal, TextIO

LogFormat = Literal["text", "json"]
LogTime = Literal["auto", "on", "off"]
FORMATS: Final = ("text", "json")
TIME_CHOICES: Final = ("auto", "on", "off")

# Who is logging: set once at start by the CLI, and by a server that learns its id.
_context: dict[str, str] = {"component": "xlmate", "node": ""}


def set_context(*, component: str | None = None, node: str | None = None) -> None:
    """Name the process in every JSON line (``component``, ``node``)."""
    if component is not None:
        _context["component"] = component
    if node is not None:
        _context["node"] = node


def event(
    logger: logging.Logger, name: str, message: str, level: int = logging.INFO, **fields: Any
) -> None:
    """Log one operator event: ``message`` for people, ``name`` and ``fields`` for machines."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"xl_event": name, "xl_fields": fields})


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "xl_fields", None)
    return fields if isinstance(fields, dict) else {}


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or " " in text or '"' in text) else text


class TextFormatter(logging.Formatter):
    """``[TIME ]LEVEL LOGGER: message key=value ...``."""

    def __init__(self, with_time: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(("%(asctime)s " + fmt) if with_time else fmt)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        extra = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)
        return f"{head} {extra}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        obj: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": _context["component"],
            "node": _context["node"],
            "logger": record.name,
            "event": getattr(record, "xl_event", "log"),
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, separators=(",", ":"))


def stamped_by_supervisor(environ: Mapping[str, str], stream: TextIO) -> bool:
    """True when honcho or journald already put a time on each line we write."""
    supervised = "HONCHO_PROCESS_NAME" in environ or "JOURNAL_STREAM" in environ
    return supervised and not stream.isatty()


def setup(level: str, fmt: LogFormat = "text", timestamps: LogTime = "auto") -> None:
    """Configure the root logger for a process (only the CLI calls this)."""
    stream = sys.stderr
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        with_time = timestamps == "on" or (
            timestamps == "auto" and not stamped_by_supervisor(os.environ, stream)
        )
        formatter = TextFormatter(with_time)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # websockets logs one line per HTTP request or WebSocket at INFO (noise) and dumps
    # raw request lines and headers at DEBUG (seat tokens): keep only its warnings.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
