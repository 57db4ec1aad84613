"""One crawl of one swarm, on trio: bootstrap, batched lookup of every block key, reachability probes.

The crawler only gathers; it trusts nothing it reads. Everything it returns is judged later by the pure rules
in ``monitor.rules.petals`` (validation, spans, health). The whole crawl, bootstrap, lookups and probes, runs under
one deadline (``crawl_timeout``); a part cut short is recorded, never hung on. (Judging what was gathered is
CPU only, after the deadline: ~0.1 s for 3 x 80 x 60, ~2 s for 10,000 servers, see bench/README.md.)

Latency multiplies sequential round trips, so the crawl overlaps what it can: servers seen in the lookup's
first replies are dialled while the lookup goes on (their probe is then one call on an open connection), and
servers the last crawl found reachable are re-checked from the crawl's first moment.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from dht.errors import AddressLookupTimeout, DHTError
from dht.net.transport import split_p2p_addr
from dht.peerid import is_peer_id
from dht.swarm import BootstrapResult, Lookup, SwarmClient
from dht.value import DictionaryValue

from ..config import SwarmConfig
from ..geo import with_address
from ..rules.bootstrap_errors import no_bootstrap_answered
from ..rules.petals import MODELS_KEY, Classified, block_uids, classify, discover_models, peers_to_probe
from ..rules.reachability import parse_rpc_info, reachability_from_error
from ..rules.serverinfo import is_online_announcement
from ..snapshot import BootstrapPeer, CrawlStats, ModelInfo, RawCrawl, RawEntry, Reachability

log = logging.getLogger(__name__)

# Calls in flight at once on the monitor's host. Probes take at most half of them (see probe_slots): a call's
# deadline includes its wait for a slot, so probes of black-holed servers must never starve the lookup's FINDs.
HOST_CALL_SLOTS = 256
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

    def now(self) -> float:
        """The clock results are stamped with (the one their age is judged by)."""
        return self._clock()

    def get(self, peer_id: str) -> Reachability | None:
        hit = self._entries.get(peer_id)
        if hit is not None and self._clock() - hit.checked_at < self.ttl:
            return hit
        return None

    def forget_failures_except(self, peers: set[str]) -> None:
        """Drop the cached failures of servers not in ``peers`` (those announcing an online span now): one that
        left, or was seen joining, is probed afresh when it is back online, not shown unreachable for a ttl."""
        self._entries = {k: v for k, v in self._entries.items() if v.ok or k in peers}

    def reachable(self) -> list[str]:
        """Peers whose last probe succeeded within the ttl, oldest first."""
        now = self._clock()
        return [peer for peer, hit in self._entries.items() if hit.ok and now - hit.checked_at < self.ttl]

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


class Prober:
    """``rpc_info`` probes, each started at most once per crawl, in parallel within ``concurrency``, each with its
    own deadline; results land in ``results`` as they come (a caller's deadline keeps the finished ones).

    A peer whose last probe FAILED within the cache's ttl is not asked again while it keeps announcing an online
    span (as health.petals.dev: a dead server is not asked every minute); once a crawl sees it without one (gone,
    offline, joining), that failure is forgotten, so a server that comes back shows online at its next crawl.
    A cached success is re-checked every crawl: on the connection kept from the last crawl that costs one round
    trip and a few hundred bytes, and a server that crashed since (its connection dropped, its dial refused)
    shows as unreachable at this crawl, not one cache ttl later. When the caller's deadline cuts a re-check
    short, the cached success stands (there is no evidence against it)."""

    def __init__(
        self,
        client: SwarmClient,
        nursery: trio.Nursery,
        *,
        timeout: float,
        concurrency: int,
        cache: ReachabilityCache,
        results: dict[str, Reachability] | None = None,
    ) -> None:
        self._client = client
        self._nursery = nursery
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(probe_slots(client, concurrency))
        self._cache = cache
        self.results: dict[str, Reachability] = {} if results is None else results
        self._done: dict[str, trio.Event] = {}
        # The peers the crawl chose to probe (wait()'s), once known. Until then results wait here, not in the
        # cache: an early probe of a server a newer record says is offline must not leave a failure cached that
        # would hide the server's return for a ttl.
        self._chosen: set[str] | None = None
        self._uncached: dict[str, Reachability] = {}
        self.unchecked = 0  # probes not made: their address look-up timed out (no verdict, nothing cached)

    def start(self, peer: str) -> None:
        if peer in self._done:
            return
        done = self._done[peer] = trio.Event()
        hit = self._cache.get(peer)
        if hit is not None and not hit.ok:
            self.results[peer] = hit
            done.set()
        else:
            self._nursery.start_soon(self._probe, peer, done)

    async def wait(self, peers: Sequence[str]) -> dict[str, Reachability]:
        """Probe ``peers`` (those not started yet), and return their results once all are in. Only these peers'
        results are cached (see ``_chosen``), and only their cached failures are kept."""
        self._chosen = set(peers)
        self._cache.forget_failures_except(self._chosen)
        for peer in self._chosen & self._uncached.keys():
            self._cache.put(self._uncached[peer])
        self._uncached.clear()
        try:
            for peer in peers:
                self.start(peer)
            for peer in peers:
                await self._done[peer].wait()
        finally:
            for peer in peers:
                if peer not in self.results and (hit := self._cache.get(peer)) is not None:
                    self.results[peer] = hit
        return {peer: self.results[peer] for peer in peers if peer in self.results}

    async def _probe(self, peer: str, done: trio.Event) -> None:
        async with self._limiter:
            t0 = trio.current_time()
            try:
                reply, rtt = await self._rpc_info(peer)
            except AddressLookupTimeout as e:
                # We were too busy to learn its address: no verdict on the server (not cached; a cached success
                # stands, see wait()); the next crawl asks again
                log.info("probe of %s not made: %s", peer, e)
                self.unchecked += 1
                done.set()
                return
            except (DHTError, ValueError) as e:
                result = reachability_from_error(
                    peer, e, self._cache.now(), timeout=self._timeout, latency=trio.current_time() - t0
                )
            else:
                result = parse_rpc_info(reply, peer, self._cache.now(), rtt)
            result = with_address(result, _known_addrs(self._client, peer))
        if self._chosen is None:
            self._uncached[peer] = result
        elif peer in self._chosen:
            self._cache.put(result)
        self.results[peer] = result
        done.set()

    async def _rpc_info(self, peer: str) -> tuple[bytes, float]:
        """``rpc_info``, its address look-up tried again once if that timed out (our queue or the nodes we asked
        were slow, not the server): a fresh look-up starts with the nodes that have answered since, and often finds
        the address already in the peerstore, brought by another look-up's answer. One budget per probe: the retry
        gets what the first attempt left of ``timeout`` (none when its look-up used it all: then no retry), so a
        probe holds its slot at most ``timeout``."""
        deadline = trio.current_time() + self._timeout
        try:
            return await self._client.rpc_info(peer, timeout=self._timeout)
        except AddressLookupTimeout:
            left = deadline - trio.current_time()
            if left <= 0:
                raise
            return await self._client.rpc_info(peer, timeout=left)


def probe_slots(client: SwarmClient, concurrency: int) -> int:
    """Probes in flight at once: ``concurrency``, but at most half the host's call slots (the rest stay for the
    lookup's calls, which share them, and for the probes' own address look-ups)."""
    host_slots = getattr(getattr(client, "host", None), "max_concurrent_calls", None)
    if isinstance(host_slots, int):
        return max(1, min(concurrency, host_slots // 2))
    return max(1, concurrency)


async def probe(
    client: SwarmClient,
    peers: Sequence[str],
    *,
    timeout: float,
    concurrency: int,
    cache: ReachabilityCache,
    into: dict[str, Reachability] | None = None,
) -> dict[str, Reachability]:
    """Probe ``peers`` once (see :class:`Prober`); results also land in ``into`` as they come."""
    async with trio.open_nursery() as nursery:
        prober = Prober(client, nursery, timeout=timeout, concurrency=concurrency, cache=cache, results=into)
        return await prober.wait(peers)


class EarlyProbes:
    """Starts the probe of each server the lookup's replies show announcing ONLINE, while the lookup goes on:
    on a long round trip, its address lookup, dial and call then overlap the lookup instead of following it.

    Each distinct payload is decoded once; nothing past ``max_servers``. A server probed early but not chosen
    for probing once every replica is merged (a newer record says offline) has its result dropped."""

    def __init__(
        self,
        prober: Prober,
        *,
        max_servers: int,
        now: Callable[[], float] = time.time,
        max_expiration_ahead: float = 86400.0,
    ) -> None:
        self._prober = prober
        self._max = max_servers
        self._now = now
        self._max_ahead = max_expiration_ahead
        self._online_payload: dict[bytes, bool] = {}
        self.started: set[str] = set()

    def recheck(self, peers: Sequence[str]) -> None:
        """The servers the last crawl found reachable: their re-check starts with the crawl (one round trip on
        the connection kept from that crawl), not one round trip later with the lookup's first answers. One no
        longer announced is probed for nothing, once (its result is dropped: it is not chosen)."""
        for peer in peers:
            if len(self.started) >= self._max:
                return
            if peer not in self.started:
                self.started.add(peer)
                self._prober.start(peer)

    def saw(self, key: object, value: object) -> None:
        """Only what the rules would accept starts early (a PeerID-shaped subkey, a live expiration within the
        swarm's limit), and at most ``max_servers`` in all: a hostile node's thousands of made-up ONLINE entries
        cost the crawl no more than that many look-ups; the rest wait for the judged list."""
        if not isinstance(value, DictionaryValue) or key == MODELS_KEY:
            return
        now = self._now()
        for subkey, item in value.items():
            if len(self.started) >= self._max:
                return
            if subkey in self.started or not now < item.expiration <= now + self._max_ahead:
                continue
            if is_online_announcement(item.payload, self._online_payload) and is_peer_id(subkey):
                self.started.add(subkey)
                self._prober.start(subkey)


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
    """Crawl ``swarm`` once, within ``swarm.crawl_timeout`` in all. Never raises for network trouble: a crawl
    that could not start has ``raw.error``."""
    started = clock()
    deadline_at = trio.current_time() + swarm.crawl_timeout
    cache = cache or ReachabilityCache(swarm.reachability.cache_ttl, clock)
    stats = CrawlStats()
    models = list(swarm.models)
    raw = RawCrawl(swarm.name, started, started, started, [], [], stats=stats)
    outcome = CrawlOutcome(raw, models)
    rpcs_before = client.rpcs
    probing = swarm.reachability.enabled
    async with trio.open_nursery() as background:
        prober = Prober(
            client,
            background,
            timeout=swarm.reachability.timeout,
            concurrency=swarm.reachability.concurrency,
            cache=cache,
        )
        early = None
        if probing:
            early = EarlyProbes(
                prober,
                max_servers=4 * probe_slots(client, swarm.reachability.concurrency),
                now=clock,
                max_expiration_ahead=swarm.max_expiration_ahead,
            )
            early.recheck(cache.reachable())
        with trio.move_on_at(deadline_at) as deadline:
            await _gather(client, swarm, raw, models, clock, early.saw if early else None, deadline_at)
        if deadline.cancelled_caught and raw.error is None and not raw.entries:
            raw.error = f"crawl did not finish within {swarm.crawl_timeout:.0f} s"
        if raw.error is None and probing:
            policy = swarm.custom_model_policy
            limit = swarm.max_expiration_ahead
            outcome.classified = classify(raw, models, custom_model_policy=policy, max_expiration_ahead=limit)
            peers = peers_to_probe(
                raw, models, classified=outcome.classified, custom_model_policy=policy, max_expiration_ahead=limit
            )
            with trio.move_on_at(deadline_at) as probes_deadline:
                await prober.wait(peers)
            outcome.reachability = {peer: prober.results[peer] for peer in peers if peer in prober.results}
            if probes_deadline.cancelled_caught:
                log.warning("%s: the crawl's deadline cut %d of %d probes short", swarm.name,
                            len(peers) - len(outcome.reachability), len(peers))  # fmt: skip
            if prober.unchecked:
                log.warning("%s: %d probes not made: their address look-up timed out twice (no verdict kept)",
                            swarm.name, prober.unchecked)  # fmt: skip
            log.info("%s: probed %d servers", swarm.name, len(peers))
        background.cancel_scope.cancel()  # early probes still running: their servers are not to be probed
    stats.rpcs = client.rpcs - rpcs_before
    raw.finished_at = clock()
    return outcome


async def _gather(
    client: SwarmClient,
    swarm: SwarmConfig,
    raw: RawCrawl,
    models: list[ModelInfo],
    clock: Callable[[], float],
    on_found: Callable[[object, object], None] | None,
    deadline_at: float,
) -> None:
    """Bootstrap, then one lookup of every block key (and of models found in ``_petals.models``), into ``raw``.

    What the first lookup found is in ``raw`` before the second starts, and the second gets only the time left
    before ``deadline_at`` less one probe timeout: cut short, it costs the discovered models, never the rest."""
    stats = raw.stats
    keys = [uid for model in models for uid in block_uids(model)]
    if swarm.discover_models:
        keys.append(MODELS_KEY)
    lookup_timeout = max(1.0, swarm.crawl_timeout * 0.6)
    quorum = swarm.replica_quorum or None  # 0: every key from its whole beam
    sent_at = clock()
    connected = _connected_seeds(client, swarm.initial_peers)
    if connected:  # a later crawl: the seeds' connections are open, so the lookup need not wait for their pings
        boot, lookup = await _together(
            client.bootstrap(list(swarm.initial_peers), timeout=swarm.rpc_timeout),
            client.lookup(keys, connected, timeout=lookup_timeout, on_found=on_found, quorum=quorum),
        )
    else:
        boot, lookup = await client.bootstrap(list(swarm.initial_peers), timeout=swarm.rpc_timeout), None
    raw.bootstrap = [
        BootstrapPeer(r.address, r.peer_id, "online" if r.ok else "unreachable", r.latency, r.error) for r in boot
    ]
    seeds = [r.peer_id for r in boot if r.ok and r.peer_id]
    log.info("%s: %d/%d bootstrap peers answered", swarm.name, len(seeds), len(boot))
    if not seeds:
        raw.error = no_bootstrap_answered(raw.bootstrap)
        return
    raw.dht_time = estimate_dht_time(clock(), boot, sent_at)
    if lookup is None:
        lookup = await client.lookup(keys, seeds, timeout=lookup_timeout, on_found=on_found, quorum=quorum)
    entries, regular = lookup_entries(lookup)
    lookups = [lookup]
    _record_lookups(raw, lookups, keys, entries, regular)
    if swarm.discover_models:  # a second pass for the block keys of models found in `_petals.models`
        known = {m.dht_prefix for m in models}
        found, _invalid = discover_models(
            entries,
            models,
            dht_time=raw.dht_time,
            policy=swarm.custom_model_policy,
            max_expiration_ahead=swarm.max_expiration_ahead,
        )
        extra = [m for m in found if m.dht_prefix not in known]
        extra_keys = [uid for m in extra for uid in block_uids(m)]
        if extra_keys:
            seeds2 = [v.peer_id for v in lookup.traversal.contacted] or seeds
            left = deadline_at - trio.current_time() - swarm.reachability.timeout
            more = await client.lookup(
                extra_keys,
                seeds2,
                timeout=max(1.0, min(swarm.crawl_timeout * 0.3, left)),
                on_found=on_found,
                quorum=quorum,
            )
            more_entries, more_regular = lookup_entries(more)
            entries += more_entries
            for k, n in more_regular.items():
                regular[k] = regular.get(k, 0) + n
            lookups.append(more)
            keys += extra_keys
            _record_lookups(raw, lookups, keys, entries, regular)
    log.info(
        "%s: %d keys, %d records from %d DHT nodes (%d failed)",
        swarm.name,
        len(keys),
        len(entries),
        stats.peers_contacted,
        stats.peers_failed,
    )


def _record_lookups(
    raw: RawCrawl, lookups: Sequence[Lookup], keys: list[str], entries: list[RawEntry], regular: dict[str, int]
) -> None:
    _count_nodes(raw.stats, lookups)
    raw.stats.keys = len(keys)
    raw.stats.records = len(entries)
    raw.entries, raw.regular_values = list(entries), dict(regular)


def _connected_seeds(client: SwarmClient, initial_peers: Sequence[str]) -> list[str]:
    """Initial peers we still hold a connection to (from the last crawl); none for a fresh client."""
    out = []
    for address in initial_peers:
        try:
            peer_id, _ = split_p2p_addr(address)
            if client.host.is_connected(peer_id):
                out.append(peer_id)
        except Exception:  # a bad address (the bootstrap reports it), or a stand-in client without a host
            continue
    return out


async def _together(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    results: list[Any] = [None, None]

    async def run(i: int, job: Awaitable[Any]) -> None:
        results[i] = await job

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0, first)
        nursery.start_soon(run, 1, second)
    return results[0], results[1]


def _count_nodes(stats: CrawlStats, lookups: Sequence[Lookup]) -> None:
    """Distinct DHT nodes over all passes: answered at least once, or never answered."""
    ok = {v.peer_id for lk in lookups for v in lk.traversal.contacted}
    failed = {v.peer_id for lk in lookups for v in lk.traversal.failed} - ok
    stats.peers_contacted, stats.peers_failed = len(ok), len(failed)
