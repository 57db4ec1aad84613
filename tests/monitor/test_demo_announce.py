"""Demo announcements decode with Petals' layout, and a crawl of them yields the designed model states."""

from __future__ import annotations

import itertools
import math

import msgpack
import pytest

from dht.ids import dhtid_of
from dht.serializer import dumps, loads
from dht.storage import DictionaryItem, TimedStore
from monitor.demo.announce import server_info_tuple, store_ops
from monitor.demo.peer_routing import find_node_reply
from monitor.demo.scenario import MODELS_KEY, XSS_NAME, Announcement, Scenario, ScenarioParams
from monitor.rules.petals import build_snapshot
from monitor.rules.serverinfo import EXTRA_INFO_FIELDS, parse_model_info, parse_server_info
from monitor.snapshot import PETALS_JOINING, PETALS_OFFLINE, PETALS_ONLINE, RawCrawl, RawEntry

WALL = 1_767_225_600.0


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario(ScenarioParams(seed=1))


def _ext_codes(raw: bytes) -> list[int]:
    codes: list[int] = []

    def hook(code: int, payload: bytes):
        codes.append(code)
        return msgpack.unpackb(payload, ext_hook=hook, raw=False)

    msgpack.unpackb(raw, ext_hook=hook, raw=False)
    return codes


def test_extra_info_order_is_petals(vectors: dict) -> None:
    for case in vectors["petals"]["server_info"]:
        assert list(EXTRA_INFO_FIELDS) == case["extra_info_key_order"]


def test_every_announcement_is_a_petals_server_info(scenario: Scenario) -> None:
    ops = store_ops(scenario, scenario.announcements(-1, 200), WALL)
    block_ops = [op for op in ops if op.key != MODELS_KEY]
    assert len(block_ops) > 300
    for op in block_ops:
        value = loads(op.value)
        assert type(value) is tuple and len(value) == 3
        state, throughput, extra = value
        assert state in (PETALS_OFFLINE, PETALS_JOINING, PETALS_ONLINE)
        assert type(throughput) is float and throughput > 0
        assert list(extra) == list(EXTRA_INFO_FIELDS)  # all 13, in order, nil when unset
        assert type(extra["adapters"]) is tuple
        assert _ext_codes(op.value)[:2] == [0x40, 0x40]  # the ServerInfo tuple, then the adapters tuple
        assert extra["start_block"] <= int(op.key.rsplit(".", 1)[1]) < extra["end_block"]
        parsed = parse_server_info(op.value)  # the monitor's own Petals-strict validator accepts it
        assert parsed.state == state and parsed.throughput == throughput
        assert op.subkey in {s.peer_id for s in scenario.servers}


def test_unset_fields_are_nil_and_offline_has_no_pings(scenario: Scenario) -> None:
    a2 = scenario.server("a2")
    _, _, extra = server_info_tuple(scenario, Announcement(3.0, a2.index, PETALS_ONLINE, a2.span))
    assert extra["public_name"] is None and extra["adapters"] == () and isinstance(extra["next_pings"], dict)
    a4 = scenario.server("a4")
    _, _, off = server_info_tuple(scenario, Announcement(40.0, a4.index, PETALS_OFFLINE, a4.span))
    assert off["next_pings"] is None
    w2 = scenario.server("w2")
    _, _, xss = server_info_tuple(scenario, Announcement(3.0, w2.index, PETALS_ONLINE, w2.span))
    assert xss["public_name"] == XSS_NAME  # stored verbatim: escaping is the web's job


def test_next_pings_point_at_following_servers_and_relays_are_inf(scenario: Scenario) -> None:
    a1 = scenario.server("a1")  # serves 0..12; a8 (relay-only) serves 4..24
    _, _, extra = server_info_tuple(scenario, Announcement(5.0, a1.index, PETALS_ONLINE, a1.span))
    pings = extra["next_pings"]
    assert pings and a1.peer_id not in pings
    relays = {s.peer_id for s in scenario.servers if s.using_relay}
    for peer, rtt in pings.items():
        assert math.isinf(rtt) if peer in relays else 0 < rtt < 1
    assert scenario.server("a8").peer_id in pings


def test_expirations_and_models_index(scenario: Scenario) -> None:
    anns = scenario.announcements(-1, 0.0)
    ops = store_ops(scenario, anns, WALL)
    assert {op.expiration for op in ops} == {WALL + scenario.params.expiration}
    models = {op.subkey: parse_model_info(op.value) for op in ops if op.key == MODELS_KEY}
    assert models == {m.dht_prefix: (m.num_blocks, m.repository) for m in scenario.models}
    # An OFFLINE-only batch writes no _petals.models entry.
    a4 = scenario.server("a4")
    offline_ops = store_ops(scenario, [Announcement(40.0, a4.index, PETALS_OFFLINE, a4.span)], WALL)
    assert offline_ops and all(op.key != MODELS_KEY for op in offline_ops)


def test_a_move_on_overlapping_spans_leaves_the_new_state(scenario: Scenario) -> None:
    a1 = scenario.server("a1")
    anns = [Announcement(9.0, a1.index, PETALS_OFFLINE, (0, 12)), Announcement(9.0, a1.index, PETALS_JOINING, (6, 18))]
    ops = {op.key: loads(op.value)[0] for op in store_ops(scenario, anns, WALL) if op.key != MODELS_KEY}
    assert ops["demo/TinyLlama-A.3"] == PETALS_OFFLINE
    assert ops["demo/TinyLlama-A.8"] == PETALS_JOINING  # not the OFFLINE that came first
    assert ops["demo/TinyLlama-A.15"] == PETALS_JOINING


def _crawl(scenario: Scenario, t: float) -> RawCrawl:
    """Store every announcement up to ``t`` under hivemind's rules, then read every key back (a perfect crawl)."""
    store = TimedStore()
    keys: dict[bytes, str] = {}
    step = 5.0
    lo = -1.0
    while lo < t:
        hi = min(t, lo + step)
        now = WALL + hi
        for op in store_ops(scenario, scenario.announcements(lo, hi), WALL):
            key = dhtid_of(op.key)
            keys[key] = op.key
            store.store_subkey(key, dumps(op.subkey), op.value, op.expiration, now)
        lo = hi
    entries = []
    for key, name in keys.items():
        item = store.get(key, WALL + t)
        if isinstance(item, DictionaryItem):
            entries += [RawEntry(name, loads(e.subkey), e.value, e.expiration) for e in item.entries]
    return RawCrawl("demo", WALL + t, WALL + t, WALL + t, [], entries)


@pytest.mark.parametrize("t", [2.0, 50.0, 170.0])
def test_a_crawl_of_the_demo_shows_the_designed_model_states(scenario: Scenario, t: float) -> None:
    snapshot = build_snapshot(_crawl(scenario, t), scenario.config_models(), {})
    states = {report.model.dht_prefix: report.state for report in snapshot.models}
    assert states["demo/TinyLlama-A"] == "healthy"
    assert states["demo/Wide-80"] == "broken"
    assert states["demo/Falcon-B"] == "degraded"
    assert "demo/Mystery-12" in states  # discovered through _petals.models only
    assert not snapshot.invalid
    assert sum(len(report.servers) for report in snapshot.models) >= 20


@pytest.mark.parametrize("t", [2.0, 50.0, 170.0, 300.0])
def test_a_crawl_of_the_demo_routes_the_healthy_model_and_not_the_broken_one(scenario: Scenario, t: float) -> None:
    from monitor.rules.route import plan_route

    reports = {r.model.dht_prefix: r for r in build_snapshot(_crawl(scenario, t), scenario.config_models(), {}).models}
    healthy = plan_route(reports["demo/TinyLlama-A"])
    assert healthy.runnable and healthy.chain[0].start == 0 and healthy.chain[-1].end == 24
    assert all(a.end == b.start for a, b in itertools.pairwise(healthy.chain))
    assert healthy.disjoint_chains >= 2  # every block has two online servers, the relayed one included
    broken = plan_route(reports["demo/Wide-80"])
    assert not broken.runnable and broken.missing_ranges == [(56, 64)] and broken.chain == ()
    # cache is announced as Petals counts it (per token per block held): a demo server has room for a session
    assert not [s for r in reports.values() for s in plan_route(r).skipped if s.reason == "short_of_cache"]


def test_find_node_reply_names_the_target_with_its_address() -> None:
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from multiaddr import Multiaddr

    from dht.net.kad import decode_find_node_reply, encode_find_node
    from dht.net.transport import peer_id_from_bytes, peer_id_to_bytes

    scenario = Scenario(ScenarioParams(seed=2))
    target, node = scenario.servers[0].peer_id, scenario.servers[1].peer_id
    book = {target: ["/ip4/127.0.0.1/tcp/4242"], node: ["/ip4/127.0.0.1/tcp/4243"]}
    peers = decode_find_node_reply(find_node_reply(encode_find_node(peer_id_to_bytes(target)), book, [node]))
    assert [(peer_id_from_bytes(p.peer_id), [str(Multiaddr(a)) for a in p.addrs]) for p in peers] == [
        (target, ["/ip4/127.0.0.1/tcp/4242"])
    ]
    unknown = scenario.servers[2].peer_id
    peers = decode_find_node_reply(find_node_reply(encode_find_node(peer_id_to_bytes(unknown)), book, [node]))
    assert [peer_id_from_bytes(p.peer_id) for p in peers] == [node]  # closer peers instead
    with pytest.raises(ValueError):
        find_node_reply(b"\xff\xff", book)
    with pytest.raises(ValueError):
        find_node_reply(Message(type=Message.MessageType.PING).SerializeToString(), book)
