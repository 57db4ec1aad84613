"""Reachability probes under a caller's deadline, their freshness, and the crawl's one deadline (fake clients,
trio's autojump clock, a fake wall clock for the cache)."""

from __future__ import annotations

import random
import time

import pytest
import trio
from factories import make_peer_id
from petals_fixtures import server_info_bytes

from dht.errors import AddressLookupTimeout, CallTimeout, PeerUnreachable
from dht.protocol import build_info_response
from dht.serializer import dumps
from dht.swarm import BootstrapResult, Lookup
from dht.traverse import TraversalResult
from dht.value import DHTValue, DictionaryValue
from monitor.config import ReachabilityConfig, SwarmConfig
from monitor.crawl.crawler import EarlyProbes, Prober, ReachabilityCache, crawl_swarm, probe, probe_slots
from monitor.snapshot import ModelInfo

FAST, SLOW = "fast-peer", "slow-peer"


class FakeClient:
    rpcs = 0
    host = None  # no peerstore: no address recorded

    async def rpc_info(self, peer_id: str, *, timeout: float):
        if peer_id == FAST:
            await trio.sleep(0.1)
            return build_info_response({"version": "2.3.0", "dht_client_mode": False}), 0.1
        await trio.sleep(timeout)  # a silent peer: the real client's deadline ends the call
        raise CallTimeout(f"rpc_info to {peer_id}: no answer within {timeout} s")


async def test_a_deadline_keeps_the_probes_that_finished(autojump_clock):
    results: dict = {}
    with trio.move_on_after(1.0):
        await probe(FakeClient(), [FAST, SLOW], timeout=30, concurrency=4, cache=ReachabilityCache(60), into=results)
    assert set(results) == {FAST}
    assert results[FAST].ok and results[FAST].version == "2.3.0"


async def test_a_probe_past_its_own_timeout_is_unreachable(autojump_clock):
    results = await probe(FakeClient(), [FAST, SLOW], timeout=2, concurrency=4, cache=ReachabilityCache(60))
    assert results[FAST].ok
    assert not results[SLOW].ok and "Failed to connect in 2 sec" in results[SLOW].error


# ---- freshness: a cached success never outlives evidence against it


LOOK_UP_TIMEOUT = 2.0  # the client's own deadline for an address look-up, shorter than a probe's


class ScriptedClient:
    """Each peer answers ``rpc_info`` as its script says now: "ok", "refused" (a crashed server), "silent", "busy"
    (its address look-up times out after ``LOOK_UP_TIMEOUT``) or "swamped" (the look-up takes the whole time)."""

    rpcs = 0
    host = None

    def __init__(self, **script: str) -> None:
        self.script = dict(script)
        self.asked: list[str] = []
        self.timeouts: list[float] = []

    async def rpc_info(self, peer_id: str, *, timeout: float):
        self.asked.append(peer_id)
        self.timeouts.append(timeout)
        self.rpcs += 1
        behaviour = self.script[peer_id]
        if behaviour == "ok":
            await trio.sleep(0.05)
            return build_info_response({"version": "2.3.0"}), 0.05
        if behaviour == "refused":
            await trio.sleep(0.05)
            raise PeerUnreachable(f"cannot connect to {peer_id}: [Errno 111] Connection refused")
        if behaviour.startswith("busy") or behaviour == "swamped":
            if behaviour == "busy-once":
                self.script[peer_id] = "ok"
            await trio.sleep(timeout if behaviour == "swamped" else min(timeout, LOOK_UP_TIMEOUT))
            raise AddressLookupTimeout(f"the look-up of {peer_id}'s address got no answer within {timeout} s")
        await trio.sleep(timeout)
        raise CallTimeout(f"rpc_info to {peer_id}: no answer within {timeout} s")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_crashed_server_is_unreachable_at_the_next_crawl_despite_a_cached_success(autojump_clock):
    clock = FakeClock()
    cache = ReachabilityCache(300, clock)
    client = ScriptedClient(**{FAST: "ok"})
    assert (await probe(client, [FAST], timeout=5, concurrency=4, cache=cache))[FAST].ok
    client.script[FAST] = "refused"  # SIGKILLed: its port refuses connections
    clock.now += 60  # the next crawl, well within the cache's 300 s
    again = await probe(client, [FAST], timeout=5, concurrency=4, cache=cache)
    assert not again[FAST].ok and "refused" in again[FAST].error
    assert client.asked == [FAST, FAST]


async def test_a_failed_probe_is_reused_within_the_ttl_and_retried_after(autojump_clock):
    clock = FakeClock()
    cache = ReachabilityCache(300, clock)
    client = ScriptedClient(**{SLOW: "refused"})
    assert not (await probe(client, [SLOW], timeout=5, concurrency=4, cache=cache))[SLOW].ok
    client.script[SLOW] = "ok"
    clock.now += 60
    assert not (await probe(client, [SLOW], timeout=5, concurrency=4, cache=cache))[SLOW].ok  # not asked again
    assert client.asked == [SLOW]
    clock.now += 300
    assert (await probe(client, [SLOW], timeout=5, concurrency=4, cache=cache))[SLOW].ok
    assert client.asked == [SLOW, SLOW]


async def test_a_server_back_after_a_leave_is_probed_afresh_not_shown_unreachable_for_a_ttl(autojump_clock):
    """Measured on real Petals (bench/freshness.py): a server stopped with SIGINT failed its probe while its record
    still said online; rejoining a minute later, it showed unreachable for ~300 s. A crawl that sees it without an
    online span (offline, joining, gone) forgets that failure; one that still announces online keeps it."""
    clock = FakeClock()
    cache = ReachabilityCache(300, clock)
    client = ScriptedClient(**{FAST: "ok", SLOW: "refused"})
    await probe(client, [FAST, SLOW], timeout=5, concurrency=4, cache=cache)  # both fail or succeed once
    client.script[FAST] = "refused"  # FAST leaves: its handlers are gone before its OFFLINE announcement lands
    clock.now += 15
    assert not (await probe(client, [FAST, SLOW], timeout=5, concurrency=4, cache=cache))[FAST].ok
    clock.now += 15
    await probe(client, [SLOW], timeout=5, concurrency=4, cache=cache)  # FAST announces OFFLINE: not probed
    client.script.update({FAST: "ok", SLOW: "ok"})  # FAST is back online; SLOW (announcing all along) too
    clock.now += 30
    again = await probe(client, [FAST, SLOW], timeout=5, concurrency=4, cache=cache)
    assert again[FAST].ok, "a server back online is probed afresh"
    assert not again[SLOW].ok, "a failure of a server that never stopped announcing is still reused"
    assert client.asked.count(FAST) == 3 and client.asked.count(SLOW) == 1


@pytest.mark.parametrize(
    ("behaviour", "deadline"),
    [("silent", 1.0), ("busy", 60.0)],  # the caller's deadline cut it short; our address look-ups timed out twice
)
async def test_a_recheck_that_did_not_finish_keeps_the_cached_success(autojump_clock, behaviour, deadline):
    clock = FakeClock()
    cache = ReachabilityCache(300, clock)
    client = ScriptedClient(**{FAST: "ok"})
    await probe(client, [FAST], timeout=5, concurrency=4, cache=cache)
    client.script[FAST] = behaviour
    clock.now += 60
    results: dict = {}
    with trio.move_on_after(deadline):
        await probe(client, [FAST], timeout=5, concurrency=4, cache=cache, into=results)
    assert results[FAST].ok  # no evidence against it yet: the re-check did not finish


# ---- our own slowness is no verdict on a server (issue 21: probes that failed under load)


async def test_a_probe_whose_address_look_up_timed_out_is_tried_again_within_what_is_left(autojump_clock):
    client = ScriptedClient(**{FAST: "busy-once"})
    cache = ReachabilityCache(300, FakeClock())
    results = await probe(client, [FAST], timeout=5, concurrency=4, cache=cache)
    assert results[FAST].ok and client.asked == [FAST, FAST]
    assert client.timeouts == [5, 5 - LOOK_UP_TIMEOUT]  # one budget per probe: the retry gets what is left


async def test_a_probe_whose_look_up_used_its_whole_time_is_not_tried_again(autojump_clock):
    """A retry with a fresh timeout let one probe hold its slot twice its timeout (and more, see dht.swarm)."""
    client = ScriptedClient(**{FAST: "swamped"})
    cache = ReachabilityCache(300, FakeClock())
    t0 = trio.current_time()
    assert await probe(client, [FAST], timeout=5, concurrency=4, cache=cache) == {}
    assert client.asked == [FAST] and trio.current_time() - t0 <= 5


async def test_a_probe_our_look_ups_never_reached_is_neither_unreachable_nor_cached(autojump_clock):
    clock = FakeClock()
    cache = ReachabilityCache(300, clock)
    client = ScriptedClient(**{FAST: "busy", SLOW: "busy"})
    prober_results = await probe(client, [FAST, SLOW], timeout=5, concurrency=4, cache=cache)
    assert prober_results == {} and cache.get(FAST) is None and cache.get(SLOW) is None
    client.script[FAST] = "ok"
    clock.now += 60  # the next crawl asks again (a cached failure would not have been asked for 300 s)
    assert (await probe(client, [FAST], timeout=5, concurrency=4, cache=cache))[FAST].ok


# ---- one deadline for the whole crawl (issue 18 item 8)


MODEL = ModelInfo("m", 2, official=True)


class SilentSwarmClient(ScriptedClient):
    """A swarm whose DHT answers at once, and whose servers (all announcing ONLINE) never answer a probe."""

    def __init__(self, servers: list[str]) -> None:
        super().__init__(**dict.fromkeys(servers, "silent"))
        self.servers = servers

    async def bootstrap(self, addresses, *, timeout):
        return [BootstrapResult(a, "boot-peer", True, 0.01, None, None) for a in addresses]

    async def lookup(self, keys, seeds, *, timeout, on_found=None, quorum=3):
        payload = server_info_bytes(2, 10.0, start_block=0, end_block=MODEL.num_blocks)
        values = {}
        for key in keys:
            if key.startswith("m."):
                expiration = time.time() + 600
                values[key] = DictionaryValue([(s, DHTValue(payload, expiration)) for s in self.servers])
                if on_found is not None:
                    on_found(key, values[key])
        return Lookup(values, TraversalResult())


async def test_silent_servers_cannot_stretch_a_crawl_past_its_deadline(autojump_clock):
    rng = random.Random(8)
    servers = [make_peer_id(rng) for _ in range(20)]
    swarm = SwarmConfig(
        name="silent",
        initial_peers=("/ip4/127.0.0.1/tcp/1/p2p/boot-peer",),
        models=(MODEL,),
        discover_models=False,
        crawl_timeout=12.0,
        rpc_timeout=5.0,
        reachability=ReachabilityConfig(enabled=True, timeout=5.0, concurrency=2),  # 10 waves of 5 s
    )
    started = trio.current_time()
    outcome = await crawl_swarm(SilentSwarmClient(servers), swarm)
    assert trio.current_time() - started <= swarm.crawl_timeout + 1e-6  # before: 12 s + 10 x 5 s + 5 s
    assert outcome.raw.error is None and len(outcome.raw.entries) == 2 * len(servers)
    failed = [r for r in outcome.reachability.values() if not r.ok]
    assert 0 < len(failed) < len(servers)  # the probes that ran to their timeout are kept; the rest were cut


class RoundTripSwarmClient(SilentSwarmClient):
    """Every call takes one 1 s round trip; the host holds a connection to the seed after the first crawl."""

    def __init__(self, servers: list[str], *, pings_ok: bool = True) -> None:
        super().__init__(servers)
        self.pings_ok = pings_ok
        self.connected: set[str] = set()
        self.host = self

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self.connected

    def known_addrs(self, peer_id: str) -> list[str]:
        return []

    async def bootstrap(self, addresses, *, timeout):
        await trio.sleep(1.0)
        self.connected.add(SEED)
        return [BootstrapResult(a, SEED, self.pings_ok, 1.0, None, None) for a in addresses]

    async def lookup(self, keys, seeds, *, timeout, on_found=None, quorum=3):
        assert seeds == [SEED]
        await trio.sleep(1.0)
        return await super().lookup(keys, seeds, timeout=timeout, on_found=on_found, quorum=quorum)


SEED = make_peer_id(random.Random(1))


def _swarm(**changes) -> SwarmConfig:
    return SwarmConfig(
        name="rtt",
        initial_peers=(f"/ip4/127.0.0.1/tcp/1/p2p/{SEED}",),
        models=(MODEL,),
        discover_models=False,
        crawl_timeout=30.0,
        rpc_timeout=5.0,
        **{"reachability": ReachabilityConfig(enabled=False), **changes},
    )


async def test_a_later_crawl_does_not_wait_for_the_seeds_ping_before_its_lookup(autojump_clock):
    client = RoundTripSwarmClient([make_peer_id(random.Random(3))])
    t0 = trio.current_time()
    first = await crawl_swarm(client, _swarm())
    t1 = trio.current_time()
    again = await crawl_swarm(client, _swarm())
    assert (t1 - t0, trio.current_time() - t1) == (2.0, 1.0)  # ping, then lookup; then both at once
    assert first.raw.error is None and again.raw.error is None and len(again.raw.entries) == 2


async def test_a_later_crawl_whose_seeds_no_longer_answer_pings_fails_as_before(autojump_clock):
    client = RoundTripSwarmClient([make_peer_id(random.Random(3))])
    await crawl_swarm(client, _swarm())
    client.pings_ok = False
    again = await crawl_swarm(client, _swarm())
    assert again.raw.error.startswith("no bootstrap peer answered: ") and not again.raw.entries


class IndexSwarmClient(SilentSwarmClient):
    """A DHT whose ``_petals.models`` names one custom model, in an entry that expires ``ahead`` seconds from now."""

    def __init__(self, ahead: float) -> None:
        super().__init__([])
        self.ahead = ahead
        self.asked: list[list[str]] = []
        self.quorums: list[int | None] = []

    async def lookup(self, keys, seeds, *, timeout, on_found=None, quorum=3):
        self.asked.append(list(keys))
        self.quorums.append(quorum)
        index = DHTValue(dumps({"num_blocks": 2, "repository": None}), time.time() + self.ahead)
        values = {key: DictionaryValue([("found", index)]) if key == "_petals.models" else None for key in keys}
        return Lookup(values, TraversalResult())


def index_swarm(**settings) -> SwarmConfig:
    """A swarm of one seed whose models all come from ``_petals.models`` (IndexSwarmClient and its kin)."""
    return SwarmConfig(
        name="index",
        initial_peers=("/ip4/127.0.0.1/tcp/1/p2p/boot-peer",),
        models=(),
        discover_models=True,
        custom_model_policy="any",
        **settings,
    )


async def test_model_discovery_honours_the_swarms_expiration_limit(autojump_clock):
    """An index entry two days ahead is valid under a three-day limit: its model's block keys are looked up."""
    client = IndexSwarmClient(ahead=2 * 86400)
    swarm = index_swarm(
        max_expiration_ahead=3 * 86400,
        reachability=ReachabilityConfig(enabled=False),
    )
    outcome = await crawl_swarm(client, swarm, clock=time.time)
    assert outcome.raw.error is None
    assert ["found.0", "found.1"] in client.asked  # before: judged too far ahead by the default day, never asked


def test_probes_take_at_most_half_the_hosts_call_slots():
    """A call's deadline includes its wait for a slot: more probes than slots would time out healthy servers
    unasked, and the lookup's FINDs would queue behind probes of black-holed servers."""

    class Host:
        max_concurrent_calls = 64

    class Client:
        host = Host()

    assert probe_slots(Client(), 128) == 32 and probe_slots(Client(), 8) == 8
    assert probe_slots(FakeClient(), 128) == 128  # a stand-in without a host: as configured


def test_early_probes_start_only_for_well_formed_live_announcements_and_at_most_max_servers():
    started: list[str] = []

    class Recorder:
        def start(self, peer: str) -> None:
            started.append(peer)

    now = 1_000_000.0
    rng = random.Random(5)
    good = [make_peer_id(rng) for _ in range(5)]
    online = server_info_bytes(2, 10.0, start_block=0, end_block=2)
    early = EarlyProbes(Recorder(), max_servers=3, now=lambda: now, max_expiration_ahead=86400)  # type: ignore[arg-type]
    early.saw(
        "m.0",
        DictionaryValue(
            [
                ("not-a-peer-id", DHTValue(online, now + 60)),
                (good[0], DHTValue(online, now - 1)),  # expired
                (good[1], DHTValue(online, float("inf"))),  # never expires: invalid
                *[(peer, DHTValue(online, now + 60)) for peer in good[2:]],
            ]
        ),
    )
    assert started == good[2:5]
    early.saw("m.1", DictionaryValue([(make_peer_id(rng), DHTValue(online, now + 60))]))
    assert started == good[2:5]  # max_servers reached: the rest wait for the judged list


async def test_an_early_probe_of_a_server_not_chosen_leaves_nothing_in_the_cache(autojump_clock):
    """An older replica said ONLINE, a newer one OFFLINE: the early probe's failure must not be cached, or the
    server's return within the ttl would show unreachable without being asked."""
    cache = ReachabilityCache(300, FakeClock())
    client = ScriptedClient(**{SLOW: "refused", FAST: "ok"})
    async with trio.open_nursery() as nursery:
        prober = Prober(client, nursery, timeout=5, concurrency=4, cache=cache)
        prober.start(SLOW)  # seen announcing ONLINE in the first reply
        await trio.sleep(1)  # its probe has failed by now
        results = await prober.wait([FAST])  # once merged, only FAST is to be probed
    assert set(results) == {FAST} and cache.get(FAST) is not None
    assert cache.get(SLOW) is None


class SlowSecondLookupClient(IndexSwarmClient):
    """The lookup of a discovered model's blocks never answers."""

    async def lookup(self, keys, seeds, *, timeout, on_found=None, quorum=3):
        if "_petals.models" not in keys:
            self.asked.append(list(keys))
            await trio.sleep_forever()
        return await super().lookup(keys, seeds, timeout=timeout, on_found=on_found, quorum=quorum)


async def test_a_slow_lookup_of_discovered_models_keeps_what_the_first_found_within_the_deadline(autojump_clock):
    client = SlowSecondLookupClient(ahead=60)
    swarm = index_swarm(
        crawl_timeout=20.0,
        rpc_timeout=5.0,
        reachability=ReachabilityConfig(enabled=True, timeout=5.0),
    )
    started = trio.current_time()
    outcome = await crawl_swarm(client, swarm)
    assert trio.current_time() - started <= swarm.crawl_timeout + 1e-6
    assert ["found.0", "found.1"] in client.asked
    assert outcome.raw.error is None and [e.key for e in outcome.raw.entries] == ["_petals.models"]


class ProbedRoundTripClient(RoundTripSwarmClient):
    """As RoundTripSwarmClient, and every server answers its probe after one 1 s round trip."""

    async def rpc_info(self, peer_id: str, *, timeout: float):
        self.asked.append(peer_id)
        await trio.sleep(1.0)
        return build_info_response({"version": "2.3.0"}), 1.0


async def test_a_later_crawl_rechecks_the_servers_found_reachable_from_its_first_moment(autojump_clock):
    """The lookup's first answer no longer gates the re-check of last crawl's reachable servers: at one round trip
    per call, the next crawl takes 1 round (lookup beside ping beside probes), not 2 (then the probes)."""
    servers = [make_peer_id(random.Random(i)) for i in (3, 4)]
    client = ProbedRoundTripClient(servers)
    swarm = _swarm(reachability=ReachabilityConfig(enabled=True, timeout=5.0))
    cache = ReachabilityCache(300)
    t0 = trio.current_time()
    first = await crawl_swarm(client, swarm, cache=cache)
    t1 = trio.current_time()
    again = await crawl_swarm(client, swarm, cache=cache)
    assert (t1 - t0, trio.current_time() - t1) == (3.0, 1.0)  # ping, lookup, probes; then all at once
    for outcome in (first, again):
        assert sorted(outcome.reachability) == sorted(servers) and all(r.ok for r in outcome.reachability.values())
    assert sorted(client.asked) == sorted(servers * 2)  # every server probed once per crawl, no more


@pytest.mark.parametrize(("replica_quorum", "asked_with"), [(3, 3), (2, 2), (0, None)])
async def test_the_swarms_replica_quorum_reaches_every_lookup(autojump_clock, replica_quorum, asked_with):
    """``replica_quorum = 0`` (an operator who distrusts the nodes nearest some keys) reads every key from its whole
    beam, in the first lookup and in the discovered models' one."""
    client = IndexSwarmClient(ahead=600)
    swarm = index_swarm(
        replica_quorum=replica_quorum,
        reachability=ReachabilityConfig(enabled=False),
    )
    outcome = await crawl_swarm(client, swarm, clock=time.time)
    assert outcome.raw.error is None and len(client.asked) == 2
    assert client.quorums == [asked_with, asked_with]
