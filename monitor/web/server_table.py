"""The model page's server table, filtered and sorted on the server: ``?q=&state=&version=&sort=&order=``.

Pure functions over :class:`~monitor.snapshot.ServerRow`, shared by the page and its JSON twin, so the table works
without JavaScript and a filtered view is a link anyone can share. What each parameter means:

- ``q``: free text, case-insensitive, found in the peer id, the contributor's public name (only where the table
  shows it: Petals hides names of servers with few blocks) or the version. At most ``MAX_QUERY`` characters.
- ``state``: one server state (``online``, ``joining``, ``unreachable``, ``offline``, ``expired``).
- ``version``: a Petals version exactly as announced; ``none`` for servers that announce none (older than 2.0.0).
- ``sort``: a column (``SORT_KEYS``), default ``span``; ``order``: ``asc`` (default) or ``desc``.

Unknown ``state``, ``sort`` or ``order`` values and a too long ``q`` are a 400 with the list of accepted values:
a typo should not silently show an unfiltered table. An unknown ``version`` simply matches nothing. Empty values
mean "no filter".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..report import cache_tokens_per_block
from ..snapshot import ServerRow
from .params import ClientError
from .templating import with_query

STATES = ("online", "joining", "unreachable", "offline", "expired")
ORDERS = ("asc", "desc")
NO_VERSION = "none"
MAX_QUERY = 200
PARAMS = ("q", "state", "version", "sort", "order")
DEFAULT_SORT = "span"
DEFAULT_ORDER = "asc"


def _relay(row: ServerRow) -> Any:
    return None if row.info.using_relay is None else ("relay" if row.info.using_relay else "direct")


# column -> the value it sorts by (None sorts after every value, in both orders)
SORT_KEYS: dict[str, Callable[[ServerRow], Any]] = {
    "state": lambda r: STATES.index(r.state) if r.state in STATES else len(STATES),
    "peer_id": lambda r: r.peer_id,
    "contributor": lambda r: contributor(r).lower() or None,
    "version": lambda r: r.info.version,
    "throughput": lambda r: r.info.throughput,
    "inference": lambda r: r.info.inference_rps,
    "forward": lambda r: r.info.forward_rps,
    "network": lambda r: r.info.network_rps,
    "precision": lambda r: r.info.quant_type or r.info.torch_dtype,
    "adapters": lambda r: len(r.info.adapters),
    "cache": cache_tokens_per_block,
    "relay": _relay,
    "pings": lambda r: len(r.pings_to_me),
    "ttl": lambda r: r.ttl,
    "span": lambda r: r.start,
}


@dataclass(frozen=True, slots=True)
class TableQuery:
    q: str = ""
    state: str = ""
    version: str = ""
    sort: str = DEFAULT_SORT
    order: str = DEFAULT_ORDER

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.state or self.version)

    def params(self) -> dict[str, str]:
        """The non-default parameters, for links that keep this view."""
        default = TableQuery()
        return {name: getattr(self, name) for name in PARAMS if getattr(self, name) != getattr(default, name)}

    def document(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in PARAMS}


def parse(query: Mapping[str, str]) -> TableQuery:
    """The table's parameters from a request's query string (400 for values it cannot mean)."""
    q = query.get("q", "").strip()
    if len(q) > MAX_QUERY:
        raise ClientError(f"invalid q: at most {MAX_QUERY} characters")
    state = query.get("state", "")
    if state and state not in STATES:
        raise ClientError(f"invalid state: one of {', '.join(STATES)}")
    sort = query.get("sort", "") or DEFAULT_SORT
    if sort not in SORT_KEYS:
        raise ClientError(f"invalid sort: one of {', '.join(SORT_KEYS)}")
    order = query.get("order", "") or DEFAULT_ORDER
    if order not in ORDERS:
        raise ClientError("invalid order: asc or desc")
    return TableQuery(q=q, state=state, version=query.get("version", "")[:MAX_QUERY], sort=sort, order=order)


def contributor(row: ServerRow) -> str:
    """The public name as the table shows it: only when Petals' rule lets it be shown."""
    return (row.info.public_name or "") if row.show_public_name else ""


def version_of(row: ServerRow) -> str:
    return row.info.version or NO_VERSION


def matches(row: ServerRow, tq: TableQuery) -> bool:
    if tq.state and row.state != tq.state:
        return False
    if tq.version and version_of(row) != tq.version:
        return False
    if tq.q:
        needle = tq.q.casefold()
        return any(needle in text.casefold() for text in (row.peer_id, contributor(row), row.info.version or ""))
    return True


def _by_span(row: ServerRow) -> tuple[int, int, str]:
    return (row.start, row.end, row.peer_id)


def apply(rows: Iterable[ServerRow], tq: TableQuery) -> list[ServerRow]:
    """The rows ``tq`` keeps, in its order; ties (and the default) by span, then peer id."""
    kept = sorted((r for r in rows if matches(r, tq)), key=_by_span)
    if tq.sort == DEFAULT_SORT and tq.order == DEFAULT_ORDER:
        return kept
    key = SORT_KEYS[tq.sort]
    present = [r for r in kept if key(r) is not None]
    missing = [r for r in kept if key(r) is None]
    return sorted(present, key=key, reverse=tq.order == "desc") + missing  # sorted() is stable: ties keep span order


def left_out(rows: Iterable[ServerRow], shown: list[ServerRow]) -> list[ServerRow]:
    """The rows ``shown`` (an :func:`apply` of ``rows``) does not have, by span then peer id."""
    kept = {id(r) for r in shown}
    return sorted((r for r in rows if id(r) not in kept), key=_by_span)


def facets(rows: Iterable[ServerRow]) -> dict[str, list[str]]:
    """The values the filter form offers: states and versions present in the (unfiltered) table."""
    rows = list(rows)
    return {
        "states": [s for s in STATES if any(r.state == s for r in rows)],
        "versions": sorted({version_of(r) for r in rows}),
    }


def sort_links(path: str, tq: TableQuery, keep: Mapping[str, object]) -> dict[str, str]:
    """Each column header's link: sort by it (ascending; descending when it is already the ascending sort),
    keeping the filter and ``keep`` (swarm, range, at...)."""
    links = {}
    for column in SORT_KEYS:
        order = "desc" if tq.sort == column and tq.order == "asc" else "asc"
        params = {**keep, **tq.params(), "sort": column, "order": order}
        if column == DEFAULT_SORT and order == DEFAULT_ORDER:
            del params["sort"], params["order"]
        links[column] = with_query(path, **params)
    return links
