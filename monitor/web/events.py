"""Live events for ``GET /api/v1/events`` (Server-Sent Events): one hub per app, fanned out to its clients.

What fires them: the crawl job (:func:`monitor.app.crawl_job`), the place where the app learns that the writer
stored a crawl (``crawl``, succeeded or failed) and that the alert service recorded alert changes (one ``alert``
per firing or resolved event). It calls :meth:`EventHub.publish` on the event loop; the hub never touches the store.

Bounds: at most ``max_clients`` subscribers (the endpoint answers 503 beyond) and at most ``max_per_client`` from
one client address (429 beyond: one address cannot take every slot), each holding at most ``queue_size`` frames not
yet written; a client that falls that far behind is dropped (its browser reconnects and resumes). Frames are
encoded once and shared by every subscriber. The last ``replay`` events are kept, so a client that reconnects
with ``Last-Event-ID`` gets what it missed; an id from another process (ids carry a random epoch), or older than
what is kept, gets one ``resync`` event instead: "you missed events, fetch the page again".
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from .. import report
from ..alerts.delivery import event_document
from ..alerts.rules import AlertEvent
from ..store.history import CrawlSummary

DEFAULT_MAX_CLIENTS = 1000
DEFAULT_MAX_PER_CLIENT = 20  # streams from one address (IPv6: one /64); a browser holds one per open page
DEFAULT_QUEUE_SIZE = 64  # frames a client may have waiting; a crawl or an alert change is one frame
DEFAULT_REPLAY = 256
MAX_TEXT = 300  # characters of a text field (an alert's message) carried in an event


def crawl_event(summary: CrawlSummary) -> dict[str, Any]:
    """A ``crawl`` event: the stored crawl's log entry (as in ``/api/v1/crawls``), its error cut short."""
    doc = report.crawl_summary_document(summary)
    doc["error"] = _short(doc["error"])
    return doc


def alert_event(event: AlertEvent) -> dict[str, Any]:
    """An ``alert`` event: the alert change as webhooks and ``/api/v1/alerts`` carry it, its message cut short."""
    doc = event_document(event)
    doc["message"] = _short(doc["message"])
    return doc


def _short(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


# Why a subscriber was refused (the ``reason`` label of ``petals_events_clients_refused_total``).
HUB_FULL = "max_clients"  # the hub has ``max_clients`` subscribers
CLIENT_FULL = "per_client"  # this client address has ``max_per_client`` subscribers
SHUTTING_DOWN = "shutting_down"  # the hub is closed
REFUSAL_REASONS = (HUB_FULL, CLIENT_FULL, SHUTTING_DOWN)


class TooManyClients(Exception):
    """The hub refused a subscriber; ``reason`` is one of :data:`REFUSAL_REASONS`."""

    def __init__(self, reason: str = HUB_FULL) -> None:
        super().__init__(reason)
        self.reason = reason


def client_key(address: str | None) -> str:
    """What the per-client limit counts streams by: the IP address, an IPv6 one by its /64 (one subscriber's LAN
    usually has a whole /64, so counting single addresses would not limit anyone), an IPv4-mapped one as IPv4."""
    try:
        ip = ipaddress.ip_address((address or "").partition("%")[0])
    except ValueError:
        return address or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def encode_event(kind: str, data: dict[str, Any], event_id: str | None) -> bytes:
    """One SSE frame. ``data`` is JSON on one line: json.dumps escapes CR and LF, so text from the network
    can never end the frame early or inject a field."""
    body = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {body}\n\n".encode()


@dataclass(frozen=True, slots=True)
class HubStats:
    """The hub's gauges and counters at one moment (``/metrics``): taken on the event loop, read anywhere."""

    clients: int
    max_clients: int
    published: int
    clients_dropped: int
    frames_dropped: int
    refused: tuple[tuple[str, int], ...]  # (reason, count) for every one of REFUSAL_REASONS


@dataclass(frozen=True, slots=True)
class _Event:
    seq: int
    frame: bytes


class Subscriber:
    """One client's frames waiting to be written, and what wakes its writer."""

    __slots__ = ("client", "dropped", "pending", "wake")

    def __init__(self, client: str | None = None) -> None:
        self.client = client  # its client_key, when the hub limits streams per client
        self.pending: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.dropped = False

    def offer(self, frame: bytes, limit: int) -> int:
        """Queue ``frame``; returns how many frames this discarded (0, or all it held and this one: it fell
        ``limit`` frames behind and is dropped)."""
        if self.dropped:
            return 0
        if len(self.pending) >= limit:
            discarded = len(self.pending) + 1
            self.drop()
            return discarded
        self.pending.append(frame)
        self.wake.set()
        return 0

    def drop(self) -> None:
        """Stop this client: its pending frames are freed and its writer ends the stream."""
        self.dropped = True
        self.pending.clear()
        self.wake.set()

    async def next_frames(self, timeout: float) -> list[bytes] | None:
        """The frames waiting (possibly after waiting up to ``timeout`` s for one); None when the wait timed
        out (time for a keep-alive); ``[]`` once the client was dropped or the hub closed."""
        if not self.pending and not self.dropped:
            self.wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                return None
        if self.dropped:
            return []
        frames = list(self.pending)
        self.pending.clear()
        return frames


class EventHub:
    """Fan-out of events to subscribers. Use it from the event loop only (publish, subscribe, unsubscribe)."""

    def __init__(
        self,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_per_client: int = DEFAULT_MAX_PER_CLIENT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        replay: int = DEFAULT_REPLAY,
        epoch: str | None = None,
    ) -> None:
        self.max_clients = max_clients
        self.max_per_client = max_per_client
        self.queue_size = queue_size
        self.epoch = epoch or secrets.token_hex(4)
        self._seq = 0
        self._recent: deque[_Event] = deque(maxlen=replay)
        self._subscribers: set[Subscriber] = set()
        self._per_client: Counter[str] = Counter()  # only keys with a stream open: at most max_clients of them
        self._changed = asyncio.Event()
        self.closed = False
        # since start, for /metrics
        self.dropped = 0  # clients dropped for falling behind
        self.frames_dropped = 0  # frames those clients never got (what they held, and the one that overflowed)
        self.refused: Counter[str] = Counter()  # subscribers refused, by reason (REFUSAL_REASONS)

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    @property
    def published(self) -> int:
        """Events published since start."""
        return self._seq

    @property
    def last_id(self) -> str:
        return f"{self.epoch}-{self._seq}"

    def stats(self) -> HubStats:
        return HubStats(
            clients=len(self._subscribers),
            max_clients=self.max_clients,
            published=self._seq,
            clients_dropped=self.dropped,
            frames_dropped=self.frames_dropped,
            refused=tuple((reason, self.refused[reason]) for reason in REFUSAL_REASONS),
        )

    def clients_of(self, client: str) -> int:
        """Streams open now from ``client`` (a :func:`client_key`)."""
        return self._per_client.get(client, 0)

    def publish(self, kind: str, data: dict[str, Any]) -> str:
        """Send an event to every subscriber; returns its id."""
        self._seq += 1
        event_id = self.last_id
        event = _Event(self._seq, encode_event(kind, data, event_id))
        self._recent.append(event)
        for sub in self._subscribers:
            discarded = sub.offer(event.frame, self.queue_size)
            if discarded:
                self.dropped += 1
                self.frames_dropped += discarded
        return event_id

    def subscribe(self, last_event_id: str | None = None, *, client: str | None = None) -> Subscriber:
        """A new subscriber, already holding what it should see first (:meth:`catch_up`). ``client`` (a
        :func:`client_key`) puts it under the per-client limit; raises :class:`TooManyClients` with the reason."""
        reason = self._refusal(client)
        if reason is not None:
            self.refused[reason] += 1
            raise TooManyClients(reason)
        sub = Subscriber(client)
        sub.pending.extend(self.catch_up(last_event_id))
        self._subscribers.add(sub)
        if client is not None:
            self._per_client[client] += 1
        self._notify()
        return sub

    def _refusal(self, client: str | None) -> str | None:
        if self.closed:
            return SHUTTING_DOWN
        if len(self._subscribers) >= self.max_clients:
            return HUB_FULL
        if client is not None and self._per_client.get(client, 0) >= self.max_per_client:
            return CLIENT_FULL
        return None

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.drop()
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            if sub.client is not None:
                self._per_client[sub.client] -= 1
                if self._per_client[sub.client] <= 0:
                    del self._per_client[sub.client]
            self._notify()

    def catch_up(self, last_event_id: str | None) -> list[bytes]:
        """What a client connecting with ``last_event_id`` sees first: a ``hello`` carrying the current id (no
        id: a new client), the events after its id (none when it missed nothing), or one ``resync``."""
        if not last_event_id:
            return [encode_event("hello", {"last_event_id": self.last_id}, self.last_id)]
        epoch, _, seq_text = last_event_id.partition("-")
        seq = int(seq_text) if seq_text.isdigit() and len(seq_text) < 19 else -1
        if epoch == self.epoch and 0 <= seq <= self._seq:
            missed = [e.frame for e in self._recent if e.seq > seq]
            if len(missed) == self._seq - seq:
                return missed
        reason = "unknown event id" if epoch != self.epoch or seq < 0 else "missed events no longer kept"
        return [encode_event("resync", {"reason": reason, "last_event_id": self.last_id}, self.last_id)]

    def close(self) -> None:
        """Shutdown: every stream ends (their handlers return); new subscribers are refused."""
        self.closed = True
        for sub in self._subscribers:
            sub.drop()

    async def wait_for_clients(self, count: int) -> None:
        """Until exactly ``count`` clients are subscribed (tests; shutdown)."""
        while len(self._subscribers) != count:
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
