"""From spans to what a person reads: server rows, per-block coverage, model health, top contributors
(PROTOCOL.md §6.7).

Model health is a superset of health.petals.dev's. It knows only ``healthy`` (every block has an online server)
and ``broken``; that is our rule with ``min_redundancy = 1``. With the default ``min_redundancy = 2`` we add
``degraded``: every block is served, but some block by fewer than two online servers, so one departure would
break the model.

Row states, in order of precedence:

* ``expired``: every record of the server for this model is past its expiration (health.petals.dev reads with
  ``latest=True`` and never notices);
* ``unreachable``: its Petals state is ONLINE but the ``rpc_info`` probe failed;
* ``joining``: its Petals state is JOINING, or it is ONLINE but answered the probe with "protocol(s) not
  supported" (up, handler not registered yet);
* otherwise its Petals state: ``online``, ``joining`` or ``offline``.

health.petals.dev applies a failed probe to any row of a probed peer; we apply it only to rows whose own span
is ONLINE, so a server that just went OFFLINE shows ``offline`` rather than a cached ``unreachable``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from ..snapshot import (
    PETALS_JOINING,
    PETALS_ONLINE,
    PETALS_STATE_NAMES,
    BlockStat,
    ModelInfo,
    ModelReport,
    ModelState,
    Reachability,
    ServerRow,
    ServerState,
)
from .spans import Span

SHOW_PUBLIC_NAME_MIN_BLOCKS = 10  # health.petals.dev: names are shown only for servers holding >= 10 blocks


def row_state(span: Span, reachability: Reachability | None, *, expired: bool = False) -> ServerState:
    if expired:
        return "expired"
    if span.state == PETALS_ONLINE and reachability is not None:
        if reachability.joining:
            return PETALS_STATE_NAMES[PETALS_JOINING]  # type: ignore[return-value]
        if not reachability.ok:
            return "unreachable"
    return PETALS_STATE_NAMES[span.state]  # type: ignore[return-value]


def pings_by_target(spans: Iterable[Span]) -> dict[str, dict[str, float]]:
    """``target -> {origin -> RTT}``: every server's ``next_pings`` inverted in one pass (asking
    :func:`pings_to` once per server is quadratic: 3 000 servers of one model took seconds)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for origin in spans:
        if origin.info.next_pings is not None:
            for target, rtt in origin.info.next_pings.items():
                out[target][origin.peer_id] = rtt
    return out


def pings_to(peer_id: str, spans: Iterable[Span]) -> dict[str, float]:
    """``origin -> RTT`` for every server of the model whose ``next_pings`` names ``peer_id``."""
    return {
        origin.peer_id: origin.info.next_pings[peer_id]
        for origin in spans
        if origin.info.next_pings is not None and peer_id in origin.info.next_pings
    }


def server_rows(
    live: Mapping[str, Span],
    expired: Mapping[str, Span],
    reachability: Mapping[str, Reachability],
    dht_time: float,
) -> list[ServerRow]:
    """One row per server of a model, sorted by PeerID as health.petals.dev does.

    ``live`` are spans computed from unexpired records; ``expired`` from the records of peers that have no
    unexpired record left in this model.
    """
    rows: list[ServerRow] = []
    pings = pings_by_target(live.values())
    for is_expired, spans in ((False, live), (True, expired)):
        for peer_id, span in spans.items():
            if is_expired and peer_id in live:
                continue
            reach = reachability.get(peer_id)
            state = row_state(span, reach, expired=is_expired)
            cache_left = span.info.cache_tokens_left
            rows.append(
                ServerRow(
                    peer_id=peer_id,
                    state=state,
                    start=span.start,
                    end=span.end,
                    info=span.info,
                    expiration=span.expiration,
                    ttl=span.expiration - dht_time,
                    pings_to_me=dict(pings.get(peer_id, {})),
                    reachability=reach,
                    show_public_name=state == "online" and span.length >= SHOW_PUBLIC_NAME_MIN_BLOCKS,
                    # keys and values each take a slot per token per block, hence the * 2
                    cache_tokens_left_per_block=(
                        cache_left // (span.length * 2) if cache_left is not None and span.length > 0 else None
                    ),
                )
            )
    rows.sort(key=lambda row: row.peer_id)
    return rows


def block_stats(rows: Iterable[ServerRow], num_blocks: int) -> list[BlockStat]:
    """Per block: how many servers in each row state cover it, and the summed throughput of the online ones."""
    counts = [Counter[str]() for _ in range(num_blocks)]
    throughput = [0.0] * num_blocks
    for row in rows:
        for index in range(max(row.start, 0), min(row.end, num_blocks)):
            counts[index][row.state] += 1
            if row.state == "online":
                throughput[index] += row.info.throughput
    return [
        BlockStat(
            index=index,
            online=count["online"],
            joining=count["joining"],
            offline=count["offline"],
            unreachable=count["unreachable"],
            expired=count["expired"],
            throughput=throughput[index],
        )
        for index, count in enumerate(counts)
    ]


def model_state(blocks: Iterable[BlockStat], min_redundancy: int = 2) -> ModelState:
    """``healthy`` when every block has >= ``min_redundancy`` online servers, ``degraded`` when every block has
    at least one, ``broken`` when some block has none (or the model has no known blocks)."""
    online = [block.online for block in blocks]
    if not online or min(online) == 0:
        return "broken"
    return "healthy" if min(online) >= min_redundancy else "degraded"


def model_report(
    model: ModelInfo,
    live: Mapping[str, Span],
    expired: Mapping[str, Span],
    reachability: Mapping[str, Reachability],
    dht_time: float,
    min_redundancy: int = 2,
) -> ModelReport:
    rows = server_rows(live, expired, reachability, dht_time)
    blocks = block_stats(rows, model.num_blocks)
    return ModelReport(model=model, state=model_state(blocks, min_redundancy), servers=rows, blocks=blocks)


def top_contributors(reports: Iterable[ModelReport]) -> list[tuple[str, int]]:
    """``(public_name, blocks served)`` over official models, counting rows that show their public name;
    most blocks first, then by name."""
    counter: Counter[str] = Counter()
    for report in reports:
        if not report.model.official:
            continue
        for row in report.servers:
            if row.show_public_name and row.info.public_name:
                counter[row.info.public_name] += row.length
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))
