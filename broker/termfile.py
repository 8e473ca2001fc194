"""A paired broker's durable identity: its term (``<journal dir>/term``) and member id.

``member`` (``<journal dir>/member``) names the journal, not the process: a
random id written once, when a paired broker first uses the directory.  A
broker restarted on the same journal keeps its name in the pair (so discovery
can hand back the lease it held, or recognise the standby it named in sync);
a broker whose disk was replaced gets a new name, and counts as a new, empty
standby.

``boots`` counts the starts of a paired broker on this journal: with a
number per heartbeat it orders the broker's heartbeats across restarts, so
discovery can ignore one that arrives after a newer one.

``term`` and ``boots`` hold one line, a decimal integer.  Written as a temporary file,
fsynced, renamed over the old one and the directory fsynced, so a crash
leaves either the old term or the new one, never a torn file.  A broker
persists a term before it acts in it (before it acks anything as active in a
new term), so after a restart it never reports a term lower than one it used.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import Final

log = logging.getLogger("xlmate.broker")

TERM_NAME: Final = "term"
MEMBER_NAME: Final = "member"
BOOTS_NAME: Final = "boots"


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


def next_boot(directory: Path) -> int:
    """Count one more start on this journal (durably); the new count.

    An unreadable count must not go back (discovery would ignore our heartbeats
    as older than those of an earlier start), so it is replaced by the Unix time
    in seconds, above any count of starts.
    """
    path = directory / BOOTS_NAME
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = "0"
    except (OSError, UnicodeError):
        text = ""
    if not text.isdigit():
        text = str(int(time.time()))
        log.error("%s is unreadable: counting starts from %s", path, text)
    boot = int(text) + 1
    _write_durably(directory, BOOTS_NAME, str(boot))
    return boot


def store_term(directory: Path, term: int) -> None:
    """Persist ``term`` durably (tmp + fsync + rename + directory fsync)."""
    _write_durably(directory, TERM_NAME, str(term))


def _write_durably(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{text}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_member(directory: Path) -> str:
    """This journal's member id, created (durably) on first use."""
    path = directory / MEMBER_NAME
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeError) as exc:
        log.error("cannot read %s (%s): making a new member id", path, exc)
        text = ""
    if len(text) == 12 and all(c in "0123456789abcdef" for c in text):
        return text
    member = secrets.token_hex(6)
    _write_durably(directory, MEMBER_NAME, member)
    return member
