"""What a write transaction tells every replica's change watch (PostgreSQL ``NOTIFY`` payloads), and reading it back.

Each commit NOTIFYs ``monitor.store.pg.CHANGES_CHANNEL``; a commit that ended a crawl or recorded alert events says
which, so every replica's web can publish the live event (``monitor.web.live_feed``), not only the one that crawled:
``{"crawl": [id, swarm, status]}`` or ``{"alerts": [id, ...]}``. The events themselves are read back from the store
by id: a payload stays small (PostgreSQL refuses one of 8000 bytes or more), whatever an error message or an
alert's text holds. Alert ids go ``ALERT_IDS_PER_NOTICE`` to a payload.

Payloads are untrusted as far as the reader is concerned (anyone who may connect can NOTIFY the channel):
:func:`parse_notice` accepts only the shapes above, and ignores anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_PAYLOAD_BYTES = 7999  # PostgreSQL's limit is "shorter than 8000 bytes"
ALERT_IDS_PER_NOTICE = 300  # 300 ids of at most 19 digits, with commas: ~6 KB
MAX_SWARM_CHARS = 200  # config names are at most 64 characters; anything longer is not ours


@dataclass(frozen=True, slots=True)
class Notice:
    """A commit's news: the crawl it ended (id, swarm, status), or the alert events it recorded (ids)."""

    crawl: tuple[int, str, str] | None = None
    alert_ids: tuple[int, ...] = ()


def _dump(doc: dict) -> str:
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=True)
    if len(text) > MAX_PAYLOAD_BYTES:  # ASCII only: characters are bytes
        raise ValueError(f"change notice of {len(text)} bytes")
    return text


def crawl_notice(crawl_id: int, swarm: str, status: str) -> str:
    return _dump({"crawl": [crawl_id, swarm[:MAX_SWARM_CHARS], status]})


def alert_notices(ids: list[int]) -> list[str]:
    return [_dump({"alerts": ids[i : i + ALERT_IDS_PER_NOTICE]}) for i in range(0, len(ids), ALERT_IDS_PER_NOTICE)]


def _is_id(value: object) -> bool:
    return type(value) is int and 0 < value < 2**63


def parse_notice(payload: str) -> Notice | None:
    """The notice in ``payload``, or None (an empty payload: a commit with nothing to announce; or not ours)."""
    if not payload or len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: a few thousand nested brackets
        return None
    if not isinstance(doc, dict):
        return None
    crawl = doc.get("crawl")
    if isinstance(crawl, list) and len(crawl) == 3 and _is_id(crawl[0]):
        crawl_id, swarm, status = crawl
        if isinstance(swarm, str) and isinstance(status, str):
            return Notice(crawl=(crawl_id, swarm, status))
    alerts = doc.get("alerts")
    if isinstance(alerts, list) and 0 < len(alerts) <= ALERT_IDS_PER_NOTICE and all(map(_is_id, alerts)):
        return Notice(alert_ids=tuple(alerts))
    return None
