"""Petals' ``compute_spans`` (``src/petals/utils/dht.py``, PROTOCOL.md §6.6), on validated records.

A span is the contiguous run of blocks one server serves in one model. Petals builds it by walking the blocks
in order and, within a block, the servers in base58 PeerID order; our version gives the same spans for the same
announcements (checked against the ``sim``/``live`` vectors), with one deliberate difference: when an announced
``start_block``/``end_block`` lies outside the model, Petals can produce a span with ``end < start``; we clip both
ends into ``[0, num_blocks]`` so such a span is empty (length 0) instead of negative.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..snapshot import PETALS_OFFLINE, ServerInfo, ServerRecord


@dataclass(frozen=True, slots=True)
class Span:
    """Blocks ``[start, end)`` (model-relative) served by ``peer_id``, with the ServerInfo that defined it.

    ``expiration`` is the latest expiration among the records of this peer that went into the span walk.
    """

    peer_id: str
    start: int
    end: int
    info: ServerInfo
    expiration: float

    @property
    def state(self) -> int:
        return self.info.state

    @property
    def length(self) -> int:
        return self.end - self.start


def records_by_block(records: Iterable[ServerRecord], num_blocks: int) -> list[dict[str, ServerRecord]]:
    """One ``peer_id -> record`` map per block ``0..num_blocks-1`` (Petals' ``RemoteModuleInfo.servers``).

    Records outside the model are ignored; if a peer appears twice under one block, the later expiration wins
    (the DHT's own merge rule).
    """
    blocks: list[dict[str, ServerRecord]] = [{} for _ in range(max(num_blocks, 0))]
    for record in records:
        if 0 <= record.block < num_blocks:
            current = blocks[record.block].get(record.peer_id)
            if current is None or record.expiration > current.expiration:
                blocks[record.block][record.peer_id] = record
    return blocks


def compute_spans(records: Iterable[ServerRecord], num_blocks: int, min_state: int = PETALS_OFFLINE) -> dict[str, Span]:
    """``peer_id -> Span`` for the records of one model, with Petals' exact rules:

    * servers whose state is below ``min_state`` are ignored;
    * a peer's first entry, or an entry with a *higher* state than its current span, starts a new span
      ``[i, i+1)``, overridden by the entry's ``[start_block, end_block)`` when both are set;
    * an entry with the *same* state extends the span to ``max(end, i+1)``; a lower state is ignored.
    """
    # working state per peer: [start, end, info, latest expiration]; Spans are built once at the end (a crawl
    # extends ~14,000 spans block by block, and a frozen dataclass per step cost more than the walk itself)
    spans: dict[str, list] = {}
    for index, servers in enumerate(records_by_block(records, num_blocks)):
        for peer_id in sorted(servers):
            record = servers[peer_id]
            info = record.info
            if info.state < min_state:
                continue
            span = spans.get(peer_id)
            if span is None or span[2].state < info.state:
                start, end = index, index + 1
                if info.start_block is not None and info.end_block is not None:
                    start = min(max(info.start_block, 0), num_blocks)
                    end = max(min(info.end_block, num_blocks), start)
                latest = record.expiration if span is None else max(span[3], record.expiration)
                spans[peer_id] = [start, end, info, latest]
            else:
                if span[2].state == info.state and span[1] < index + 1:
                    span[1] = index + 1
                if record.expiration > span[3]:
                    span[3] = record.expiration
    return {peer_id: Span(peer_id, start, end, info, latest) for peer_id, (start, end, info, latest) in spans.items()}
