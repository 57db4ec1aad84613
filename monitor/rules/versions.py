"""Petals versions across servers: parsing, the "outdated" rule and the rollout table (pure functions).

Versions are compared the way pip does (``packaging.version``: ``2.3.0.dev2 < 2.3.0 < 2.3.0.post1``). A version
string that does not parse (announced by a peer, so anything goes) is *unknown*, never outdated: we flag only
what we can prove. A server that announces no version at all predates Petals 2.0 (which added the field), so it
is outdated whenever a minimum is set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from ..snapshot import ServerRow, Snapshot

MAX_VERSION_TEXT = 64
NO_VERSION = "< 2.0.0"  # what a row without a version shows (Petals added the field in 2.0)


def parse_version(text: object) -> Version | None:
    """``"2.3.0.dev2"`` → ``Version``; a leading ``v`` is allowed; anything else that does not parse → None."""
    if not isinstance(text, str) or not text or len(text) > MAX_VERSION_TEXT:
        return None
    try:
        return Version(text.strip().removeprefix("v"))
    except InvalidVersion:
        return None


def row_version(row: ServerRow) -> str | None:
    """The version a server announces in its ServerInfo, else the one its ``rpc_info`` reply gave."""
    if row.info.version:
        return row.info.version
    if row.reachability is not None and row.reachability.version:
        return row.reachability.version
    return None


def is_outdated(version: str | None, min_version: str | None) -> bool | None:
    """True when ``version`` is older than ``min_version``; None when there is no rule or the version is unreadable."""
    minimum = parse_version(min_version)
    if minimum is None:
        return None
    if version is None:
        return True
    parsed = parse_version(version)
    if parsed is None:
        return None
    return parsed < minimum


def version_sort_key(version: str) -> tuple[int, Version | str]:
    """Newest first when sorted in reverse; unparsable strings sort below every real version."""
    parsed = parse_version(version)
    return (1, parsed) if parsed is not None else (0, version)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class VersionCount:
    version: str  # NO_VERSION for servers that announce none
    servers: int
    outdated: bool | None


def version_counts(snapshot: Snapshot, min_version: str | None) -> list[VersionCount]:
    """Distinct servers per version in one snapshot (a peer serving two models counts once), newest first."""
    by_peer: dict[str, str | None] = {}
    for report in snapshot.models:
        for row in report.servers:
            version = row_version(row)
            if by_peer.get(row.peer_id) is None:
                by_peer[row.peer_id] = version
    return count_versions(by_peer.values(), min_version)


def count_versions(versions: Iterable[str | None], min_version: str | None) -> list[VersionCount]:
    counts: dict[str, int] = {}
    outdated: dict[str, bool | None] = {}
    for version in versions:
        key = version if version else NO_VERSION
        counts[key] = counts.get(key, 0) + 1
        outdated[key] = is_outdated(version or None, min_version)
    ordered = sorted(counts, key=version_sort_key, reverse=True)
    return [VersionCount(v, counts[v], outdated[v]) for v in ordered]


@dataclass(frozen=True, slots=True)
class VersionPoint:
    """Distinct servers per version seen in one crawl or one time bucket."""

    ts: float
    counts: dict[str, int]  # version (NO_VERSION for none) -> servers

    @property
    def total(self) -> int:
        return sum(self.counts.values())
