"""What changed between two snapshots of a swarm (a pure function; the store only loads the two crawls).

Servers are matched by ``(dht_prefix, peer_id)``. A server present in both that moved its span *and* changed state
is listed in both ``moved`` and ``state_changed``. Every list is sorted by ``(dht_prefix, peer_id)`` so the result
is deterministic. If a model lists one peer twice, its first row counts.
"""

from __future__ import annotations

from ..snapshot import ServerState, Snapshot
from .history import CrawlDiff, ServerChange

_Key = tuple[str, str]
_Shape = tuple[ServerState, int, int]


def _servers(snapshot: Snapshot) -> dict[_Key, _Shape]:
    shapes: dict[_Key, _Shape] = {}
    for report in snapshot.models:
        for row in report.servers:
            shapes.setdefault((report.model.dht_prefix, row.peer_id), (row.state, row.start, row.end))
    return shapes


def diff_snapshots(a: Snapshot, b: Snapshot) -> CrawlDiff:
    """Changes from ``a`` (before) to ``b`` (after). ``CrawlDiff.a``/``.b`` are their crawl ids (0 if unset)."""
    before, after = _servers(a), _servers(b)
    joined, left, moved, state_changed = [], [], [], []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        change = ServerChange(dht_prefix=key[0], peer_id=key[1], before=old, after=new)
        if old is None:
            joined.append(change)
        elif new is None:
            left.append(change)
        else:
            if old[1:] != new[1:]:
                moved.append(change)
            if old[0] != new[0]:
                state_changed.append(change)
    states_before = {r.model.dht_prefix: r.state for r in a.models}
    states_after = {r.model.dht_prefix: r.state for r in b.models}
    model_changes = [
        (prefix, states_before.get(prefix), states_after.get(prefix))
        for prefix in sorted(states_before.keys() | states_after.keys())
        if states_before.get(prefix) != states_after.get(prefix)
    ]
    return CrawlDiff(
        a=a.crawl_id or 0,
        b=b.crawl_id or 0,
        joined=joined,
        left=left,
        moved=moved,
        state_changed=state_changed,
        model_state_changed=model_changes,
    )
