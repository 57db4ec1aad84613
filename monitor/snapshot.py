"""The data model of one crawl, shared by the rules, the store and the web.

A crawl flows through three shapes:

1. :class:`RawCrawl`: what the crawler got from the DHT (merged replicas, still bytes) plus what it measured
   (bootstrap peers, RPC counts). Nothing in it has been trusted yet.
2. :class:`Snapshot`: what the Petals rules (``monitor.rules.petals``) made of it: validated records, spans, server
   states, per-block coverage and model health. This is what the store persists and the web shows.
3. Rows in SQLite (``monitor.store.sqlite``), read back into :class:`Snapshot` for pages and the API.

Names follow Petals and hivemind (block UID, span, ServerInfo, dht_prefix, expiration). Times are DHT time:
float Unix seconds. Everything here is plain data; the rules live in pure functions elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Petals' ServerState values (src/petals/data_structures.py).
PETALS_OFFLINE, PETALS_JOINING, PETALS_ONLINE = 0, 1, 2
PETALS_STATE_NAMES = {PETALS_OFFLINE: "offline", PETALS_JOINING: "joining", PETALS_ONLINE: "online"}

# What a server row shows: Petals' state, or what we found out about it.
ServerState = Literal["online", "joining", "offline", "unreachable", "expired"]
SERVER_STATES: tuple[ServerState, ...] = ("online", "joining", "offline", "unreachable", "expired")

# healthy: every block has >= min_redundancy online servers; degraded: every block has one, some fewer than N;
# broken: some block has no online server.
ModelState = Literal["healthy", "degraded", "broken"]

CrawlStatus = Literal["started", "succeeded", "failed"]
PeerState = Literal["online", "unreachable"]


# ---- raw crawl input


@dataclass(slots=True)
class RawEntry:
    """One dictionary entry found under a block key (or ``_petals.models``), merged over replicas.

    ``subkey`` is the decoded msgpack subkey (a base58 PeerID ``str`` for Petals; anything else is invalid) and
    ``value`` the still-serialized msgpack value bytes, exactly as the DHT returned them.

    Read-only by convention, not ``frozen``: a crawl makes one per record (14,400 at 3 models x 80 blocks x 60
    servers) and a frozen dataclass's ``__init__`` costs 3x a plain one (1.5 vs 0.45 us).
    """

    key: str
    subkey: object
    value: bytes
    expiration: float


@dataclass(frozen=True, slots=True)
class BootstrapPeer:
    """An initial peer: ``online`` only if it answered a DHT query."""

    address: str
    peer_id: str | None
    state: PeerState
    latency: float | None = None  # seconds, for the DHT query that answered
    error: str | None = None


@dataclass(slots=True)
class CrawlStats:
    """What the crawl did on the network. Filled by the crawler, counted by the rules."""

    peers_contacted: int = 0  # DHT nodes that answered at least one call
    peers_failed: int = 0  # DHT nodes we tried and that did not answer
    rpcs: int = 0
    keys: int = 0  # keys asked for
    records: int = 0  # dictionary entries found (before validation)
    invalid_by_reason: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """The counters by name (what a stored crawl row and its JSON document both carry)."""
        return {
            "peers_contacted": self.peers_contacted,
            "peers_failed": self.peers_failed,
            "rpcs": self.rpcs,
            "keys": self.keys,
            "records": self.records,
        }


@dataclass(slots=True)
class RawCrawl:
    """The crawler's output for one swarm, before any Petals rule is applied."""

    swarm: str
    started_at: float
    finished_at: float
    dht_time: float  # the "now" expirations are judged against (median of peers' dht_time, or local time)
    bootstrap: list[BootstrapPeer]
    entries: list[RawEntry]  # every entry under every block key and `_petals.models`
    regular_values: dict[str, int] = field(default_factory=dict)  # key -> count of non-dictionary values seen
    stats: CrawlStats = field(default_factory=CrawlStats)
    error: str | None = None  # set when the crawl as a whole failed


# ---- validated data


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A validated Petals ``ServerInfo`` (PROTOCOL.md §6.2): the 3-tuple ``(state, throughput, extra_info)``."""

    state: int  # PETALS_OFFLINE / PETALS_JOINING / PETALS_ONLINE
    throughput: float
    start_block: int | None = None
    end_block: int | None = None
    public_name: str | None = None
    version: str | None = None
    network_rps: float | None = None
    forward_rps: float | None = None
    inference_rps: float | None = None
    adapters: tuple[str, ...] = ()
    torch_dtype: str | None = None
    quant_type: str | None = None
    using_relay: bool | None = None
    cache_tokens_left: int | None = None
    next_pings: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the monitor reports on: from config (official) or discovered via ``_petals.models``."""

    dht_prefix: str
    num_blocks: int
    repository: str | None = None
    name: str | None = None  # display name; defaults to the repository path or the prefix
    official: bool = False

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.repository and self.repository.startswith("https://huggingface.co/"):
            return self.repository.removeprefix("https://huggingface.co/")
        return self.dht_prefix


@dataclass(slots=True)
class ServerRecord:
    """One valid announcement: ``server`` serves ``block`` of ``dht_prefix`` until ``expiration``.

    Read-only by convention, not ``frozen``: one per record, like :class:`RawEntry` (and for the same reason)."""

    dht_prefix: str
    block: int
    peer_id: str
    info: ServerInfo
    expiration: float


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """An announcement kept out of coverage, with the reason (a short stable code) and a human detail."""

    key: str
    subkey: str | None  # repr-safe text of the subkey, if any
    reason: str  # e.g. "msgpack", "schema", "state", "throughput", "span", "subkey", "expired"
    detail: str


@dataclass(frozen=True, slots=True)
class Reachability:
    """Result of a ``TransformerConnectionHandler.rpc_info`` probe."""

    peer_id: str
    ok: bool
    checked_at: float
    latency: float | None = None
    error: str | None = None
    joining: bool = False  # "protocols not supported": up, but not serving yet
    version: str | None = None
    dht_client_mode: bool | None = None
    cache_tokens_available: int | None = None
    # where it is (``monitor.geo``): its public IP from the peerstore, or only private/loopback addresses known,
    # and the country/AS of that IP in the offline database
    public_ip: str | None = None
    private_only: bool = False
    country: str | None = None
    country_name: str | None = None
    asn: str | None = None


@dataclass(slots=True)
class ServerRow:
    """A server within one model: its span and what state we judge it to be in."""

    peer_id: str
    state: ServerState
    start: int  # span, block indices relative to the model, [start, end)
    end: int
    info: ServerInfo
    expiration: float  # latest expiration among its records for this model
    ttl: float  # seconds left at crawl time (negative when expired)
    pings_to_me: dict[str, float] = field(default_factory=dict)  # origin peer id -> RTT seconds
    reachability: Reachability | None = None
    show_public_name: bool = False
    cache_tokens_left_per_block: int | None = None

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class BlockStat:
    """Coverage of one block: how many servers in each state hold it, and the online throughput."""

    index: int
    online: int = 0
    joining: int = 0
    offline: int = 0
    unreachable: int = 0
    expired: int = 0
    throughput: float = 0.0  # sum of online servers' throughput


@dataclass(slots=True)
class ModelReport:
    model: ModelInfo
    state: ModelState
    servers: list[ServerRow]
    blocks: list[BlockStat]

    @property
    def min_online(self) -> int:
        """The smallest online redundancy over all blocks (0 means a hole)."""
        return min((b.online for b in self.blocks), default=0)

    @property
    def blocks_covered(self) -> int:
        return sum(1 for b in self.blocks if b.online > 0)


@dataclass(slots=True)
class Snapshot:
    """One crawl of one swarm, judged. ``crawl_id`` is set once the store has written it."""

    swarm: str
    status: CrawlStatus
    started_at: float
    finished_at: float
    dht_time: float
    bootstrap: list[BootstrapPeer]
    models: list[ModelReport]
    invalid: list[InvalidRecord]
    stats: CrawlStats
    top_contributors: list[tuple[str, int]] = field(default_factory=list)  # (public_name, blocks served)
    error: str | None = None
    crawl_id: int | None = None

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at
