"""One crawl of one swarm, on trio: bootstrap, batched lookup of every block key, reachability probes.

The crawler only gathers; it trusts nothing it reads. Everything it returns is judged later by the pure rules
in ``monitor.petals`` (validation, spans, health). The whole crawl runs under one deadline
(``crawl_timeout``); a part cut short is recorded, never hung on.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from dht.errors import DHTError
from dht.swarm import BootstrapResult, Lookup, SwarmClient
from dht.value import DictionaryValue

from .bootstrap_errors import no_bootstrap_answered
from .config import SwarmConfig
from .geo import with_address
from .petals import MODELS_KEY, Classified, block_uids, classify, discover_models, peers_to_probe
from .reachability import parse_rpc_info, reachability_from_error
from .snapshot import BootstrapPeer, CrawlStats, ModelInfo, RawCrawl, RawEntry, Reachability

log = logging.getLogger(__name__)

MAX_CLOCK_SKEW_TRUSTED = 3600.0  # peers' dht_time further off than this are ignored when estimating DHT time


@dataclass(slots=True)
class CrawlOutcome:
    """What the crawler hands to the rules: the raw crawl, the model list it asked for, the probe results."""

    raw: RawCrawl
    models: list[ModelInfo]
    reachability: dict[str, Reachability] = field(default_factory=dict)
    classified: Classified | None = None  # made once to choose the probes, reused by the judge


class ReachabilityCache:
    """Probe results kept for ``ttl`` seconds, failures included (as health.petals.dev). One per process."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.time, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, Reachability] = {}

    def get(self, peer_id: str) -> Reachability | None:
        hit = self._entries.get(peer_id)
        if hit is not None and self._clock() - hit.checked_at < self.ttl:
            return hit
        return None

    def put(self, result: Reachability) -> None:
        if len(self._entries) >= self._max:
            now = self._clock()
            self._entries = {k: v for k, v in self._entries.items() if now - v.checked_at < self.ttl}
            if len(self._entries) >= self._max:
                self._entries.clear()
        self._entries[result.peer_id] = result


def estimate_dht_time(local_now: float, boot: Sequence[BootstrapResult], sent_at: float) -> float:
    """The DHT's clock, as the median offset of the peers that answered our ping (each node judges
    expirations by its own clock; so do we, but corrected when peers agree we are off)."""
    offsets = [
        r.dht_time - (sent_at + (r.latency or 0.0) / 2)
        for r in boot
        if r.ok and r.dht_time and abs(r.dht_time - sent_at) < MAX_CLOCK_SKEW_TRUSTED
    ]
    if not offsets:
        return local_now
    offset = statistics.median(offsets)
    return local_now + (offset if abs(offset) > 1.0 else 0.0)


def lookup_entries(lookup: Lookup) -> tuple[list[RawEntry], dict[str, int]]:
    """Flatten merged values into one :class:`RawEntry` per dictionary entry; count regular values per key."""
    entries: list[RawEntry] = []
    regular: dict[str, int] = {}
    for key, value in lookup.values.items():
        if value is None:
            continue
        if isinstance(value, DictionaryValue):
            for subkey, item in value.items():
                entries.append(RawEntry(str(key), subkey, item.payload, item.expiration))
        else:
            regular[str(key)] = regular.get(str(key), 0) + 1
    return entries, regular


async def probe(
    client: SwarmClient,
    peers: Sequence[str],
    *,
    timeout: float,
    concurrency: int,
    cache: ReachabilityCache,
    into: dict[str, Reachability] | None = None,
) -> dict[str, Reachability]:
    """``rpc_info`` on every peer not in the cache, in parallel, each with its own deadline.

    Results land in ``into`` as they come, so a caller's deadline keeps every probe that had finished."""
    results: dict[str, Reachability] = {} if into is None else into
    todo = []
    for peer in peers:
        hit = cache.get(peer)
        if hit is not None:
            results[peer] = hit
        else:
            todo.append(peer)
    limiter = trio.CapacityLimiter(max(1, concurrency))

    async def one(peer: str) -> None:
        async with limiter:
            t0 = trio.current_time()
            try:
                reply, rtt = await client.rpc_info(peer, timeout=timeout)
            except (DHTError, ValueError) as e:
                result = reachability_from_error(
                    peer, e, time.time(), timeout=timeout, latency=trio.current_time() - t0
                )
            else:
                result = parse_rpc_info(reply, peer, time.time(), rtt)
            result = with_address(result, _known_addrs(client, peer))
        cache.put(result)
        results[peer] = result

    async with trio.open_nursery() as nursery:
        for peer in todo:
            nursery.start_soon(one, peer)
    return results


def _known_addrs(client: SwarmClient, peer_id: str) -> list[str]:
    """What the libp2p peerstore knows of ``peer_id`` after the probe dialled it (cheap: no network)."""
    try:
        return list(client.host.known_addrs(peer_id))
    except Exception:  # a stand-in client or host without a peerstore: no address, nothing else changes
        return []


async def crawl_swarm(
    client: SwarmClient,
    swarm: SwarmConfig,
    *,
    cache: ReachabilityCache | None = None,
    clock: Callable[[], float] = time.time,
) -> CrawlOutcome:
    """Crawl ``swarm`` once. Never raises for network trouble: a crawl that could not start has ``raw.error``."""
    started = clock()
    cache = cache or ReachabilityCache(swarm.reachability.cache_ttl, clock)
    stats = CrawlStats()
    models = list(swarm.models)
    raw = RawCrawl(swarm.name, started, started, started, [], [], stats=stats)
    rpcs_before = client.rpcs
    with trio.move_on_after(swarm.crawl_timeout) as deadline:
        sent_at = clock()
        boot = await client.bootstrap(list(swarm.initial_peers), timeout=swarm.rpc_timeout)
        raw.bootstrap = [
            BootstrapPeer(r.address, r.peer_id, "online" if r.ok else "unreachable", r.latency, r.error) for r in boot
        ]
        seeds = [r.peer_id for r in boot if r.ok and r.peer_id]
        log.info("%s: %d/%d bootstrap peers answered", swarm.name, len(seeds), len(boot))
        if not seeds:
            raw.error = no_bootstrap_answered(raw.bootstrap)
        else:
            raw.dht_time = estimate_dht_time(clock(), boot, sent_at)
            keys = [uid for model in models for uid in block_uids(model)]
            if swarm.discover_models:
                keys.append(MODELS_KEY)
            lookup = await client.lookup(keys, seeds, timeout=max(1.0, swarm.crawl_timeout * 0.6))
            entries, regular = lookup_entries(lookup)
            lookups = [lookup]
            if swarm.discover_models:  # a second pass for the block keys of models found in `_petals.models`
                known = {m.dht_prefix for m in models}
                found, _invalid = discover_models(
                    entries, models, dht_time=raw.dht_time, policy=swarm.custom_model_policy
                )
                extra = [m for m in found if m.dht_prefix not in known]
                extra_keys = [uid for m in extra for uid in block_uids(m)]
                if extra_keys:
                    seeds2 = [v.peer_id for v in lookup.traversal.contacted] or seeds
                    more = await client.lookup(extra_keys, seeds2, timeout=max(1.0, swarm.crawl_timeout * 0.3))
                    more_entries, more_regular = lookup_entries(more)
                    entries += more_entries
                    for k, n in more_regular.items():
                        regular[k] = regular.get(k, 0) + n
                    lookups.append(more)
                    keys += extra_keys
            _count_nodes(stats, lookups)
            stats.keys = len(keys)
            stats.records = len(entries)
            raw.entries, raw.regular_values = entries, regular
            log.info(
                "%s: %d keys, %d records from %d DHT nodes (%d failed)",
                swarm.name,
                len(keys),
                len(entries),
                stats.peers_contacted,
                stats.peers_failed,
            )
    outcome = CrawlOutcome(raw, models)
    if deadline.cancelled_caught and raw.error is None and not raw.entries:
        raw.error = f"crawl did not finish within {swarm.crawl_timeout:.0f} s"
    if raw.error is None and swarm.reachability.enabled:
        policy = swarm.custom_model_policy
        outcome.classified = classify(raw, models, custom_model_policy=policy)
        peers = peers_to_probe(raw, models, classified=outcome.classified, custom_model_policy=policy)
        waves = -(-len(peers) // max(1, swarm.reachability.concurrency))  # probes beyond the limit wait a turn
        with trio.move_on_after(waves * swarm.reachability.timeout + 5):
            await probe(
                client,
                peers,
                timeout=swarm.reachability.timeout,
                concurrency=swarm.reachability.concurrency,
                cache=cache,
                into=outcome.reachability,
            )
        log.info("%s: probed %d servers", swarm.name, len(peers))
    stats.rpcs = client.rpcs - rpcs_before
    raw.finished_at = clock()
    return outcome


def _count_nodes(stats: CrawlStats, lookups: Sequence[Lookup]) -> None:
    """Distinct DHT nodes over all passes: answered at least once, or never answered."""
    ok = {v.peer_id for lk in lookups for v in lk.traversal.contacted}
    failed = {v.peer_id for lk in lookups for v in lk.traversal.failed} - ok
    stats.peers_contacted, stats.peers_failed = len(ok), len(failed)
