"""Petals' ``compute_spans`` (``src/petals/utils/dht.py``, HIVEMIND_DHT.md §6.6), on validated records.

A span is the contiguous run of blocks one server serves in one model. Petals builds it by walking the blocks
in order and, within a block, the servers in base58 PeerID order; our version gives the same spans for the same
announcements (checked against the ``sim``/``live`` vectors), with one deliberate difference: when an announced
``start_block``/``end_block`` lies outside the model, Petals can produce a span with ``end < start``; we clip both
ends into ``[0, num_blocks]`` so such a span is empty (length 0) instead of negative.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .snapshot import PETALS_OFFLINE, ServerInfo, ServerRecord


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
    spans: dict[str, Span] = {}
    expirations: dict[str, float] = {}
    for index, servers in enumerate(records_by_block(records, num_blocks)):
        for peer_id in sorted(servers):
            record = servers[peer_id]
            info = record.info
            if info.state < min_state:
                continue
            expirations[peer_id] = max(expirations.get(peer_id, record.expiration), record.expiration)
            span = spans.get(peer_id)
            if span is None or span.state < info.state:
                start, end = index, index + 1
                if info.start_block is not None and info.end_block is not None:
                    start = min(max(info.start_block, 0), num_blocks)
                    end = max(min(info.end_block, num_blocks), start)
                spans[peer_id] = Span(peer_id, start, end, info, record.expiration)
            elif span.state == info.state:
                spans[peer_id] = Span(peer_id, span.start, max(span.end, index + 1), span.info, span.expiration)
    return {
        peer_id: Span(span.peer_id, span.start, span.end, span.info, expirations[peer_id])
        for peer_id, span in spans.items()
    }
