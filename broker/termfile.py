"""The highest term a paired broker has seen, kept in ``<journal dir>/term``.

One line, the term as a decimal integer.  Written as a temporary file,
fsynced, renamed over the old one and the directory fsynced, so a crash
leaves either the old term or the new one, never a torn file.  A broker
persists a term before it acts in it (before it acks anything as active in a
new term), so after a restart it never reports a term lower than one it used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

log = logging.getLogger("xlmate.broker")

TERM_NAME: Final = "term"


def load_term(directory: Path) -> int:
    """The persisted term (0 when there is none, or it is unreadable: logged)."""
    path = directory / TERM_NAME
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeError) as exc:
        log.error("cannot read %s (%s): starting from term 0", path, exc)
        return 0
    if not text.isdigit():
        log.error("%s holds %r, not a term: starting from term 0", path, text[:32])
        return 0
    return int(text)


def store_term(directory: Path, term: int) -> None:
    """Persist ``term`` durably (tmp + fsync + rename + directory fsync)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TERM_NAME
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{term}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
