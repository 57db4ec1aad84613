"""A crawl of a hostile swarm (tests/hostile.py) on 127.0.0.1: it ends within its deadline, counts every
invalid record by its exact reason, keeps every good record, and carries ``<script>`` strings as inert data
through the state document and the web pages."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest
import trio
from hostile import (
    BAD_RECORDS,
    EXPECTED_EXPIRED,
    EXPECTED_INVALID,
    EXPECTED_ROWS,
    FIND_MISBEHAVIOURS,
    GOOD_1,
    JS_MODEL,
    NUM_BLOCKS,
    PREFIX,
    REGULAR_BLOCK,
    SCRIPT,
    SCRIPT_ADAPTER,
    SCRIPT_MODEL,
    SCRIPT_VERSION,
    hostile_swarm,
)

from dht.net.transport import open_host
from dht.swarm import SwarmClient
from monitor.config import ReachabilityConfig, SwarmConfig
from monitor.crawl.crawler import crawl_swarm
from monitor.crawl.pipeline import judge
from monitor.report import state_document
from monitor.snapshot import ModelInfo, Snapshot

CRAWL_TIMEOUT = 40.0  # the lookup gets 60% of it; the crawl takes ~4 s on an idle machine, ~20 s at load 14
BOOTSTRAP_TIMEOUT = 10.0  # dial + ping: a dozen Noise handshakes at once are slow on a busy 2-core machine
FIND_TIMEOUT = 2.5  # what each silent or slow peer costs the lookup (the whole swarm shares one event loop)
SLACK = 3.0  # bound = crawl_timeout + slack: the crawl must end by its own deadline, not ours


@pytest.fixture(scope="module")
def crawled() -> tuple[Snapshot, dict[str, bool], float]:
    """One crawl of the hostile swarm (module-scoped: the swarm takes a few seconds to start)."""
    return trio.run(_crawl)


async def _crawl() -> tuple[Snapshot, dict[str, bool], float]:
    async with hostile_swarm() as swarm:
        config = SwarmConfig(
            name="hostile",
            initial_peers=swarm.initial_peers,
            models=(ModelInfo(PREFIX, NUM_BLOCKS, official=True),),
            discover_models=True,  # the crafty node announces two custom models with hostile names
            crawl_timeout=CRAWL_TIMEOUT,
            rpc_timeout=BOOTSTRAP_TIMEOUT,
            reachability=ReachabilityConfig(enabled=False),
        )
        async with open_host() as host:
            started = time.monotonic()
            with trio.fail_after(CRAWL_TIMEOUT + SLACK):
                outcome = await crawl_swarm(SwarmClient(host, timeout=FIND_TIMEOUT), config)
            elapsed = time.monotonic() - started
        return judge(outcome, config), swarm.stored, elapsed


def test_every_record_was_published_on_the_good_node(crawled):
    _, stored, _ = crawled
    assert len(stored) == 10 + 2 + len(BAD_RECORDS) + 1
    assert all(stored.values()), [label for label, ok in stored.items() if not ok]


def test_crawl_finishes_well_within_its_deadline(crawled):
    snapshot, _, elapsed = crawled
    assert snapshot.status == "succeeded", (snapshot.error, snapshot.bootstrap)
    # Silent and slow peers cost one FIND timeout each, in parallel; garbage neighbours one failed lookup each.
    assert elapsed < CRAWL_TIMEOUT


def test_bootstrap_and_traversal_account_for_every_hostile_peer(crawled):
    snapshot, _, _ = crawled
    states = [peer.state for peer in snapshot.bootstrap]
    # every peer but the one that answers pings with garbage counts as online (they all ping correctly)
    assert states.count("unreachable") == 1 and states.count("online") == len(states) - 1
    (bad,) = [peer for peer in snapshot.bootstrap if peer.state == "unreachable"]
    assert bad.error
    assert snapshot.stats.peers_contacted == 2  # the good node and the crafty one answered FIND
    # every find misbehaver failed; the malformed neighbours the crafty node named were never chased
    assert snapshot.stats.peers_failed == len(FIND_MISBEHAVIOURS)


def test_invalid_records_are_counted_by_their_exact_reasons(crawled):
    snapshot, _, _ = crawled
    assert snapshot.stats.invalid_by_reason == EXPECTED_INVALID
    by_subkey = {record.subkey: record.reason for record in snapshot.invalid if record.key == f"{PREFIX}.0"}
    for subkey, _payload, reason in BAD_RECORDS:
        text = subkey if isinstance(subkey, str) else repr(subkey)
        assert by_subkey[text] == reason, subkey
    (regular,) = [r for r in snapshot.invalid if r.reason == "regular_value"]
    assert regular.key == f"{PREFIX}.{REGULAR_BLOCK}"


def test_good_records_are_all_there(crawled):
    snapshot, _, _ = crawled
    model, *custom = snapshot.models
    assert [(m.model.dht_prefix, m.model.num_blocks, m.model.official) for m in custom] == [
        (SCRIPT_MODEL, 2, False),
        (JS_MODEL, 2, False),
    ]
    rows = {row.peer_id: (row.start, row.end, row.state) for row in model.servers}
    assert rows == {**EXPECTED_ROWS, **EXPECTED_EXPIRED}
    assert [block.online for block in model.blocks] == [2, 3] + [1] * 8 + [0, 0]
    assert model.state == "broken"  # block 10 has no server, block 11 holds only a regular value


def test_script_strings_are_kept_verbatim_as_data(crawled):
    snapshot, _, _ = crawled
    (row,) = [row for row in snapshot.models[0].servers if row.peer_id == GOOD_1]
    assert (row.info.public_name, row.info.version, row.info.adapters) == (SCRIPT, SCRIPT_VERSION, (SCRIPT_ADAPTER,))


def _strings(node, path=""):
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key, f"{path}/<key>")
            yield from _strings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


def test_state_document_holds_script_strings_only_as_json_strings(crawled):
    snapshot, _, _ = crawled
    text = json.dumps(state_document(snapshot), allow_nan=False, ensure_ascii=False)
    doc = json.loads(text)
    holders = {path for path, value in _strings(doc) if "<script>" in value}
    reports = doc["model_reports"]
    assert [r["dht_prefix"] for r in reports] == [PREFIX, SCRIPT_MODEL, JS_MODEL]  # configured, then custom
    (i,) = [n for n, row in enumerate(reports[0]["server_rows"]) if row["peer_id"] == GOOD_1]
    base = f"/model_reports[0]/server_rows[{i}]"
    custom = {f"/model_reports[{m}]/{name}" for m in (1, 2) for name in ("name", "repository")}
    assert holders == {
        "/top_contributors/<key>",  # public_name -> blocks served
        f"{base}/span/server_info/public_name",
        f"{base}/span/server_info/version",
        f"{base}/span/server_info/adapters[0]",
        f"{base}/adapters[0]/name",  # its short_name is "lora", the part after the last "/"
        "/model_reports[1]/dht_prefix",
        *custom,
    }
    # The text has exactly as many "<script>" as those strings hold: none outside a JSON string.
    assert text.count("<script>") == sum(value.count("<script>") for _, value in _strings(doc))


def test_web_pages_render_script_strings_inert(crawled, tmp_path):
    from web_harness import serve

    from monitor.store.sqlite import StoreWriter

    snapshot, _, _ = crawled
    path = tmp_path / "hostile.db"
    with StoreWriter(path) as writer:
        writer.write_snapshot(snapshot)
    live, store = serve(path, clock=lambda: snapshot.finished_at + 5)
    try:
        page = live.get(f"/models/{PREFIX}?swarm=hostile")
        assert page.status == 200, page.text[-1500:]
        assert "<script>alert" not in page.text
        # shown, as text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "&lt;script&gt;alert(&#39;v&#39;)&lt;/script&gt;2.3.0" in page.text
        assert "&lt;script&gt;alert(2)&lt;/script&gt;/lora" in page.text
        server = live.get(f"/servers/{GOOD_1}")
        assert server.status == 200, server.text[-1500:]
        assert "<script>alert" not in server.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in server.text
        pages = {
            "/": "&lt;script&gt;alert(4)&lt;/script&gt;",  # the display name, from the repository URL
            f"/models/{quote(SCRIPT_MODEL, safe='')}?swarm=hostile": "&lt;script&gt;alert(3)&lt;/script&gt;",
            f"/models/{JS_MODEL}?swarm=hostile": JS_MODEL,
        }
        for path, shown in pages.items():
            other = live.get(path)
            assert other.status == 200, (path, other.text[-1500:])
            assert "<script>alert" not in other.text, path
            assert 'href="javascript:' not in other.text, path
            assert shown in other.text, path
        state = live.get("/api/v1/state?swarm=hostile")
        assert state.status == 200
        names = [
            row["span"]["server_info"]["public_name"]
            for report in state.json()["model_reports"]
            for row in report["server_rows"]
        ]
        assert SCRIPT in names
    finally:
        live.close()
        store.close()


async def test_a_flood_of_garbage_neighbours_is_never_chased():
    """One peer naming hundreds of malformed neighbours per key (random, empty, huge, truncated peer ids):
    none is chased (each would cost a failed address lookup), the lookup ends at once, and what the peer itself
    answered is kept."""
    from hostile import CRAFTED, block_key, crafted_find_handler, ping_handler

    from dht.ids import dhtid_of
    from dht.protocol import RPC_FIND, RPC_PING

    lookup_timeout = 2.0
    async with open_host(listen=True) as flooder, open_host() as host:
        node_id = dhtid_of("flooder")
        flooder.set_unary_handler(RPC_PING, ping_handler(node_id, time.time))
        flooder.set_unary_handler(RPC_FIND, crafted_find_handler(node_id, time.time, neighbours=400))
        client = SwarmClient(host, timeout=FIND_TIMEOUT)
        with trio.fail_after(lookup_timeout + BOOTSTRAP_TIMEOUT + SLACK):
            await client.connect(flooder.listen_addrs[0], timeout=BOOTSTRAP_TIMEOUT)
            started = time.monotonic()
            lookup = await client.lookup([block_key(i) for i in range(4)], [flooder.peer_id], timeout=lookup_timeout)
            elapsed = time.monotonic() - started
    assert elapsed < lookup_timeout + 1.0
    assert list(lookup.traversal.nodes) == [flooder.peer_id] and lookup.traversal.complete
    assert [v.peer_id for v in lookup.traversal.contacted] == [flooder.peer_id]
    assert CRAFTED in lookup.values[block_key(1)]
    assert lookup.undecodable[block_key(2)]  # the bytes that claimed to be a dictionary


async def test_a_reply_naming_more_neighbours_than_hivemind_sends_is_cut_to_its_bucket_size():
    """hivemind answers each key with its bucket_size (20) nearest peers. A peer naming 200 well-formed, made-up
    peers for a key gets only its first 20 chased, even by an exhaustive lookup (``beam_size=None``, as a crawl's
    probe of the swarm), where every one named would otherwise cost a failed address lookup."""
    import hashlib

    from hostile import block_key, ping_handler

    from dht import protocol
    from dht.ids import dhtid_of
    from dht.peerid import MAX_NEIGHBOURS
    from dht.protocol import RPC_FIND, RPC_PING, FindResult, ResultType

    made_up = [
        (hashlib.sha1(b"node %d" % i).digest(), b"\x12\x20" + hashlib.sha256(b"%d" % i).digest()) for i in range(200)
    ]
    node_id = dhtid_of("flooder")

    async def find(caller: str, data: bytes) -> bytes:
        keys = protocol.parse_find_request(data).keys
        results = [FindResult(key, ResultType.NOT_FOUND, None, None, made_up) for key in keys]
        return protocol.build_find_response(node_id, results)

    async with open_host(listen=True) as flooder, open_host() as host:
        flooder.set_unary_handler(RPC_PING, ping_handler(node_id, time.time))
        flooder.set_unary_handler(RPC_FIND, find)
        client = SwarmClient(host, timeout=FIND_TIMEOUT)
        with trio.fail_after(BOOTSTRAP_TIMEOUT + 10 + SLACK):
            await client.connect(flooder.listen_addrs[0], timeout=BOOTSTRAP_TIMEOUT)
            lookup = await client.lookup([block_key(0)], [flooder.peer_id], beam_size=None, timeout=10)
    assert len(lookup.traversal.nodes) == 1 + MAX_NEIGHBOURS  # the flooder, and the first 20 it named
    assert [v.peer_id for v in lookup.traversal.contacted] == [flooder.peer_id]


def test_valid_neighbours_takes_the_first_bucket_and_drops_what_is_not_a_peer_id():
    from dht.peerid import MAX_NEIGHBOURS, peer_id_text, valid_neighbours

    good = b"\x12\x20" + bytes(range(32))
    nearest = [(b"n" * 20, b"garbage"), (b"m" * 20, good), (b"o" * 20, b"")] + [(b"p" * 20, good)] * 100
    got = valid_neighbours(nearest)
    assert got[0] == (b"m" * 20, peer_id_text(good))
    assert len(got) == MAX_NEIGHBOURS - 2  # two garbage entries used up their places in the bucket


def test_a_kad_reply_naming_more_peers_than_its_bucket_size_is_cut_to_it():
    """go-libp2p-kad-dht answers FIND_NODE with its k = 20 nearest peers: a reply naming 500 (1 MiB allows
    ~25,000) no longer puts them all in the peerstore."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Message

    from dht.net.kad import MAX_CLOSER_PEERS, decode_find_node_reply

    reply = Message(type=Message.MessageType.FIND_NODE)
    for i in range(500):
        peer = reply.closerPeers.add()
        peer.id = b"\x12\x20" + bytes([i % 256]) * 32
        peer.addrs.append(b"\x04\x7f\x00\x00\x01\x06\x0f\xa1")  # /ip4/127.0.0.1/tcp/4001
    peers = decode_find_node_reply(reply.SerializeToString())
    assert len(peers) == MAX_CLOSER_PEERS and peers[0].peer_id == b"\x12\x20" + bytes(32)


def test_a_find_node_reply_keeps_the_target_go_libp2p_appends_after_its_k_closest():
    """go-libp2p-kad-dht's handleFindPeer sends its 20 closest peers and then the target itself: cutting at 20
    lost the very peer looked up whenever the answering node knew more than 20 (every probe of a server whose
    address came that way failed; the WAN bench's 65-node swarm showed it, the tests' small swarms could not)."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Message

    from dht.net.kad import decode_find_node_reply

    target = b"\x12\x20" + b"\xee" * 32
    reply = Message(type=Message.MessageType.FIND_NODE)
    for i in range(20):
        peer = reply.closerPeers.add()
        peer.id = b"\x12\x20" + bytes([i]) * 32
        peer.addrs.append(b"\x04\x7f\x00\x00\x01\x06\x0f\xa1")
    appended = reply.closerPeers.add()
    appended.id = target
    appended.addrs.append(b"\x04\x7f\x00\x00\x01\x06\x0f\xa2")
    peers = decode_find_node_reply(reply.SerializeToString())
    assert peers[-1].peer_id == target and len(peers) == 21
