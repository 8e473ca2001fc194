"""How far regions are from each other, for placement's "nearest region" fallback.

Distances are round-trip times in milliseconds between the cloud regions'
usual locations (public inter-region latency tables, rounded); only their
order matters.  The built-in table covers::

    eu-west       Ireland            us-east       N. Virginia
    eu-central    Frankfurt          us-west       Oregon / California
    ap-south      Mumbai             ap-northeast  Tokyo
    sa-east       Sao Paulo

An operator can replace it with a JSON file (``xlmate discovery --regions``)::

    {"distances": {"eu-west": {"us-east": 80, "eu-central": 20}, ...}}

Each pair needs to be written only once (the table is symmetric); a pair
written twice must agree.  A pair missing from the table counts as farther
than every pair in it.  A region not in the table at all still works: edges in
it serve clients who ask for it, and clients asking for it with no edge there
get the least-loaded edge anywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from xlmate.errors import ConfigError
from xlmate.heartbeat import REGION_RE

_DEFAULT_PAIRS: Final[dict[tuple[str, str], float]] = {
    ("eu-west", "eu-central"): 25,
    ("eu-west", "us-east"): 75,
    ("eu-west", "us-west"): 140,
    ("eu-west", "ap-south"): 120,
    ("eu-west", "ap-northeast"): 210,
    ("eu-west", "sa-east"): 180,
    ("eu-central", "us-east"): 90,
    ("eu-central", "us-west"): 150,
    ("eu-central", "ap-south"): 110,
    ("eu-central", "ap-northeast"): 225,
    ("eu-central", "sa-east"): 200,
    ("us-east", "us-west"): 65,
    ("us-east", "ap-south"): 190,
    ("us-east", "ap-northeast"): 150,
    ("us-east", "sa-east"): 115,
    ("us-west", "ap-south"): 220,
    ("us-west", "ap-northeast"): 100,
    ("us-west", "sa-east"): 175,
    ("ap-south", "ap-northeast"): 120,
    ("ap-south", "sa-east"): 300,
    ("ap-northeast", "sa-east"): 255,
}

UNKNOWN: Final = math.inf


class RegionTable:
    """A symmetric table of distances between named regions."""

    __slots__ = ("_distances", "_regions")

    def __init__(self, pairs: Mapping[tuple[str, str], float]) -> None:
        """Build from ``{(a, b): distance}``; each unordered pair at most once or agreeing."""
        distances: dict[str, dict[str, float]] = {}
        for (a, b), dist in pairs.items():
            for region in (a, b):
                if not isinstance(region, str) or not REGION_RE.fullmatch(region):
                    raise ConfigError(f"region name {region!r} is not 1-32 characters of [a-z0-9-]")
            if isinstance(dist, bool) or not isinstance(dist, int | float):
                raise ConfigError(f"distance {a} -> {b} must be a number, not {dist!r}")
            if not math.isfinite(dist) or dist < 0:
                raise ConfigError(f"distance {a} -> {b} must be a finite number >= 0")
            if a == b:
                if dist != 0:
                    raise ConfigError(f"distance {a} -> {a} must be 0, not {dist}")
                distances.setdefault(a, {})
                continue
            known = distances.get(a, {}).get(b)
            if known is not None and known != dist:
                raise ConfigError(
                    f"distance {a} -> {b} is given as both {known} and {dist}: "
                    "the table is symmetric, write each pair once or make them agree"
                )
            distances.setdefault(a, {})[b] = float(dist)
            distances.setdefault(b, {})[a] = float(dist)
        self._distances = distances
        self._regions = frozenset(distances)

    @property
    def regions(self) -> frozenset[str]:
        """Every region named in the table."""
        return self._regions

    def __contains__(self, region: object) -> bool:
        return region in self._regions

    def distance(self, a: str, b: str) -> float:
        """The distance from ``a`` to ``b``: 0 for the same region, ``inf`` when unknown."""
        if a == b:
            return 0.0
        return self._distances.get(a, {}).get(b, UNKNOWN)

    def by_distance(self, origin: str, regions: Iterable[str]) -> list[str]:
        """``regions`` nearest to ``origin`` first; unknown distances last; ties by name."""
        return sorted(set(regions), key=lambda r: (self.distance(origin, r), r))

    def to_json(self) -> dict[str, Any]:
        """The table in the file format (every pair written both ways)."""
        rows = sorted(self._distances.items())
        return {"distances": {a: dict(sorted(row.items())) for a, row in rows}}


def default_table() -> RegionTable:
    """The built-in table (see the module docstring)."""
    return RegionTable(_DEFAULT_PAIRS)


def parse_table(obj: object) -> RegionTable:
    """``{"distances": {"a": {"b": 80, ...}, ...}}`` -> a table, or ``ConfigError``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("distances"), dict):
        raise ConfigError('a region table is a JSON object {"distances": {"<region>": {...}}}')
    pairs: dict[tuple[str, str], float] = {}
    for a, row in obj["distances"].items():
        if not isinstance(row, dict):
            raise ConfigError(f'"distances"."{a}" must be an object of region -> distance')
        for b, dist in row.items():
            key = (a, b) if a <= b else (b, a)
            if key in pairs and pairs[key] != dist:
                raise ConfigError(
                    f"distance {a} -> {b} is given as both {pairs[key]} and {dist}: "
                    "the table is symmetric, write each pair once or make them agree"
                )
            pairs[key] = dist
    if not pairs:
        raise ConfigError("the region table has no distances")
    return RegionTable(pairs)


def load_table(path: Path) -> RegionTable:
    """Read a region table file; any problem is a ``ConfigError`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read region table {path}: {exc.strerror or exc}") from exc
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"region table {path} is not valid JSON: {exc}") from exc
    try:
        return parse_table(obj)
    except ConfigError as exc:
        raise ConfigError(f"region table {path}: {exc}") from exc
