"""A hostile swarm on 127.0.0.1 for tests: our py-libp2p hosts, some well-behaved, most not.

:func:`hostile_swarm` starts, in one nursery:

* a good :class:`~dht.node.DHTNode` holding Petals records published through the wire (``rpc_store``): two
  valid servers (one with ``<script>`` in its public_name, version and adapters) and one record per way a
  ServerInfo can be wrong (NaN / negative / huge / wrongly typed values, bogus subkeys, a regular value
  under a block key, undecodable msgpack);
* a *crafty* node whose ``rpc_find`` returns hand-made FindResponses: valid and expired entries, an
  undecodable dictionary, and nearest-peer lists full of garbage peer ids;
* transport-level misbehavers that answer ``rpc_ping`` correctly (so the crawler takes them as seeds) and
  then break ``rpc_find``: garbage, an oversize declared length, silence, one byte a second, a reply over
  4 MiB, a reply cut in the middle, and node ids of the wrong length; plus one that breaks ``rpc_ping``.

Every handler is bounded in time (it sleeps at most :data:`HANDLER_MAX_SECONDS`) and ends with the host.
:data:`EXPECTED_INVALID` says which invalid records, by reason, a crawl of this swarm must report.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import base58
import trio

from dht import protocol, wire
from dht.ids import dhtid_of
from dht.net.streams import BufferedReader
from dht.net.transport import Host, open_host
from dht.node import DHTNode
from dht.protocol import RPC_FIND, RPC_PING, FindResult, ResultType
from dht.serializer import dumps
from dht.swarm import SwarmClient
from dht.value import DHTValue, DictionaryValue

PREFIX = "Evil-Model"
NUM_BLOCKS = 12
GOOD_1_SPAN = (0, 10)  # 10+ blocks: its public_name is shown on the pages (health.petals.dev's rule)
SCRIPT = "<script>alert(1)</script>"
SCRIPT_VERSION = "<script>alert('v')</script>2.3.0"
SCRIPT_ADAPTER = "<script>alert(2)</script>/lora"
TTL = 600.0
HANDLER_MAX_SECONDS = 20.0  # no hostile handler outlives this, even if nobody resets its stream
# Custom models announced in `_petals.models` by the crafty node: names that are markup or a script URL.
SCRIPT_MODEL = "<script>alert(3)</script>"
JS_MODEL = "javascript:alert(5)"
SCRIPT_REPOSITORY = "https://huggingface.co/<script>alert(4)</script>"
GARBAGE_NEIGHBOURS = 4  # one of each kind per key; each costs the crawler one failed address lookup


def fake_peer_id(label: str) -> str:
    """A well-formed base58 PeerID (sha2-256 multihash) that no host has."""
    import hashlib

    return base58.b58encode(b"\x12\x20" + hashlib.sha256(label.encode()).digest()).decode()


GOOD_1 = fake_peer_id("good-1")  # blocks 0..10, hostile strings
GOOD_2 = fake_peer_id("good-2")  # blocks 0..2
CRAFTED = fake_peer_id("crafted")  # valid, served only by the crafty node, block 1
EXPIRED = fake_peer_id("expired")  # valid but expired, served only by the crafty node, block 1
FAR_FUTURE = fake_peer_id("far-future")  # expires in 1e20 s (finite, beyond any date): invalid, reason "expiration"


def block_key(index: int) -> str:
    return f"{PREFIX}.{index}"


def server_info(state: Any = 2, throughput: Any = 10.0, **extra: Any) -> tuple:
    return (state, throughput, extra)


def _good_1() -> tuple:
    start, end = GOOD_1_SPAN
    return server_info(
        start_block=start, end_block=end, public_name=SCRIPT, version=SCRIPT_VERSION, adapters=(SCRIPT_ADAPTER,)
    )


# (subkey, payload) stored under block 0 by the good node, and the reason each must be refused with.
BAD_RECORDS: list[tuple[Any, bytes, str]] = [
    (fake_peer_id("nan"), dumps(server_info(throughput=math.nan, start_block=0, end_block=1)), "throughput"),
    (fake_peer_id("negative"), dumps(server_info(throughput=-1.0, start_block=0, end_block=1)), "throughput"),
    (fake_peer_id("huge"), dumps(server_info(start_block=0, end_block=1, cache_tokens_left=2**64 - 1)), "range"),
    (fake_peer_id("state-str"), dumps(server_info(state="online", start_block=0, end_block=1)), "state"),
    (fake_peer_id("name-int"), dumps(server_info(start_block=0, end_block=1, public_name=5)), "schema"),
    (fake_peer_id("extra-list"), dumps((2, 10.0, [0, 1])), "schema"),
    (fake_peer_id("span"), dumps(server_info(start_block=2, end_block=1)), "span"),
    (fake_peer_id("msgpack"), b"\xc1", "msgpack"),
    ("not-a-peer-id", dumps(server_info(start_block=0, end_block=1)), "subkey"),
    (42, dumps(server_info(start_block=0, end_block=1)), "subkey"),
]
REGULAR_BLOCK = 11  # a plain value instead of a dictionary under this block key

EXPECTED_INVALID = {"expired": 1, "expiration": 1, "regular_value": 1}  # expiration: FAR_FUTURE
for _subkey, _payload, _reason in BAD_RECORDS:
    EXPECTED_INVALID[_reason] = EXPECTED_INVALID.get(_reason, 0) + 1
EXPECTED_INVALID = dict(sorted(EXPECTED_INVALID.items()))

# The valid records a crawl must find: peer id -> (start, end, state).
EXPECTED_ROWS = {
    GOOD_1: (*GOOD_1_SPAN, "online"),
    GOOD_2: (0, 2, "online"),
    CRAFTED: (1, 2, "online"),
}
EXPECTED_EXPIRED = {EXPIRED: (1, 2, "expired")}


# ------------------------------------------------------------------------------------ misbehaving handlers

StreamHandler = Callable[[Any], Awaitable[None]]


async def _read_call(stream: Any) -> wire.UnaryCall:
    return wire.decode_call(await BufferedReader(stream).read_frame(wire.MAX_MESSAGE_SIZE))


async def _write_quietly(stream: Any, data: bytes) -> None:
    """The caller resets streams it gives up on: a write after that is expected to fail."""
    with contextlib.suppress(Exception):
        await stream.write(data)


async def _close_quietly(stream: Any) -> None:
    with contextlib.suppress(Exception):
        await stream.close()


async def reply_garbage(stream: Any) -> None:
    await _read_call(stream)
    await _write_quietly(stream, wire.frame(bytes(random.Random(1).randrange(256) for _ in range(200))))
    await _close_quietly(stream)


async def reply_oversize_length(stream: Any) -> None:
    await _read_call(stream)
    await _write_quietly(stream, wire.encode_uvarint(wire.MAX_MESSAGE_SIZE + 1) + b"\x00" * 64)
    await trio.sleep(HANDLER_MAX_SECONDS)


async def never_answer(stream: Any) -> None:
    await _read_call(stream)
    await trio.sleep(HANDLER_MAX_SECONDS)


async def slowloris(stream: Any) -> None:
    """A valid reply, one byte a second."""
    call = await _read_call(stream)
    reply = wire.frame(wire.encode_reply(call.call_id, response=protocol.build_find_response(None, [])))
    for i in range(min(len(reply), int(HANDLER_MAX_SECONDS))):
        try:
            await stream.write(reply[i : i + 1])
        except Exception:
            return
        await trio.sleep(1.0)


async def reply_over_4mib(stream: Any) -> None:
    """A well-formed envelope that is simply too big: the caller must refuse it from its length prefix."""
    call = await _read_call(stream)
    payload = wire.encode_reply(call.call_id, response=b"\x00" * (wire.MAX_MESSAGE_SIZE + 1024))
    await _write_quietly(stream, wire.encode_uvarint(len(payload)) + payload)
    await _close_quietly(stream)


async def close_mid_reply(stream: Any) -> None:
    call = await _read_call(stream)
    reply = wire.frame(wire.encode_reply(call.call_id, response=protocol.build_find_response(None, [])))
    await _write_quietly(stream, reply[: len(reply) // 2])
    await _close_quietly(stream)


def _raw_find_response(node_id: bytes, count: int, nearest_node_id: bytes) -> bytes:
    from dht._pb import dht_pb2

    msg = dht_pb2.FindResponse()
    msg.peer.node_id = node_id
    for _ in range(count):
        result = msg.results.add()
        result.nearest_node_ids.append(nearest_node_id)
        result.nearest_peer_ids.append(b"\x00\x01garbage")
    return msg.SerializeToString()


async def short_nearest_node_ids(stream: Any) -> None:
    """A FindResponse whose nearest node ids are 5 bytes long: the whole answer is refused."""
    call = await _read_call(stream)
    count = len(protocol.parse_find_request(call.data).keys)
    response = _raw_find_response(dhtid_of("short-ids"), count, b"\x01" * 5)
    await _write_quietly(stream, wire.frame(wire.encode_reply(call.call_id, response=response)))
    await _close_quietly(stream)


FIND_MISBEHAVIOURS: dict[str, StreamHandler] = {
    "garbage": reply_garbage,
    "oversize_length": reply_oversize_length,
    "silent": never_answer,
    "slowloris": slowloris,
    "over_4mib": reply_over_4mib,
    "close_mid_reply": close_mid_reply,
    "short_node_ids": short_nearest_node_ids,
}


# ------------------------------------------------------------------------------------ the crafty node


def garbage_neighbours(key: bytes, count: int = GARBAGE_NEIGHBOURS) -> list[tuple[bytes, bytes]]:
    """Valid 20-byte node ids with peer ids that are random bytes, empty, or huge (the same for one key)."""
    rng = random.Random(key)
    out = []
    for i in range(count):
        peer = [rng.randbytes(rng.randrange(1, 40)), b"", rng.randbytes(300), b"\x12\x20" + rng.randbytes(3)][i % 4]
        out.append((rng.randbytes(20), peer))
    return out


def crafted_find_handler(
    node_id: bytes, now: Callable[[], float], neighbours: int = GARBAGE_NEIGHBOURS
) -> Callable[[str, bytes], Awaitable[bytes]]:
    """``rpc_find`` of the crafty node: per key, a crafted answer, always with garbage neighbours."""
    block_1, block_2, models_key = dhtid_of(block_key(1)), dhtid_of(block_key(2)), dhtid_of("_petals.models")

    async def handler(caller: str, data: bytes) -> bytes:
        request = protocol.parse_find_request(data)
        t = now()
        results = []
        for key in request.keys:
            nearest = garbage_neighbours(key, neighbours)
            if key == block_1:
                crafted = DictionaryValue()
                crafted.store(CRAFTED, DHTValue(dumps(server_info(start_block=1, end_block=2)), t + TTL))
                crafted.store(EXPIRED, DHTValue(dumps(server_info(start_block=1, end_block=2)), t - 100))
                crafted.store(FAR_FUTURE, DHTValue(dumps(server_info(start_block=1, end_block=2)), 1e20))
                results.append(FindResult(key, ResultType.FOUND_DICTIONARY, dumps(crafted), t + TTL, nearest))
            elif key == block_2:  # claims a dictionary, sends bytes that are none
                not_a_dictionary = b"\xd8\x50" + b"\xff" * 16  # fixext16 0x50 around sixteen -1s
                results.append(FindResult(key, ResultType.FOUND_DICTIONARY, not_a_dictionary, t + TTL, nearest))
            elif key == models_key:
                index = DictionaryValue()
                for prefix in (SCRIPT_MODEL, JS_MODEL):
                    info = {"num_blocks": 2, "repository": SCRIPT_REPOSITORY}
                    index.store(prefix, DHTValue(dumps(info), t + TTL))
                results.append(FindResult(key, ResultType.FOUND_DICTIONARY, dumps(index), t + TTL, nearest))
            else:
                results.append(FindResult(key, ResultType.NOT_FOUND, None, None, nearest))
        return protocol.build_find_response(node_id, results)

    return handler


def ping_handler(node_id: bytes, now: Callable[[], float]) -> Callable[[str, bytes], Awaitable[bytes]]:
    async def handler(caller: str, data: bytes) -> bytes:
        protocol.parse_ping_request(data)
        return protocol.build_ping_response(node_id, now())

    return handler


async def ping_garbage(stream: Any) -> None:
    call = await _read_call(stream)
    await _write_quietly(stream, wire.frame(wire.encode_reply(call.call_id, response=b"\xff\xfe\xfd")))
    await _close_quietly(stream)


# ------------------------------------------------------------------------------------ the swarm


@dataclass
class HostileSwarm:
    good: Host
    crafty: Host
    misbehaving: dict[str, Host]  # behaviour name -> host (answers ping, breaks find)
    bad_ping: Host
    node: DHTNode
    stored: dict[str, bool] = field(default_factory=dict)

    @property
    def initial_peers(self) -> tuple[str, ...]:
        hosts = [self.good, self.crafty, *self.misbehaving.values(), self.bad_ping]
        return tuple(host.listen_addrs[0] for host in hosts)


def _raw_handler(host: Host, proto: str, handler: StreamHandler) -> None:
    from libp2p.custom_types import TProtocol

    async def bounded(stream: Any) -> None:
        with trio.move_on_after(HANDLER_MAX_SECONDS + 1):
            await handler(stream)

    host.libp2p_host.set_stream_handler(TProtocol(proto), bounded)


async def publish(client: SwarmClient, good: str, now: float) -> dict[str, bool]:
    """Store every record on the good node through rpc_store; returns what it accepted, by label."""
    entries: list[tuple[str, Any, Any]] = []
    labels: list[str] = []
    expiration = now + TTL
    for index in range(*GOOD_1_SPAN):
        entries.append((block_key(index), DHTValue(dumps(_good_1()), expiration), GOOD_1))
        labels.append(f"good-1@{index}")
    for index in range(2):
        info = server_info(start_block=0, end_block=2, public_name="plain")
        entries.append((block_key(index), DHTValue(dumps(info), expiration), GOOD_2))
        labels.append(f"good-2@{index}")
    for subkey, payload, reason in BAD_RECORDS:
        entries.append((block_key(0), DHTValue(payload, expiration), subkey))
        labels.append(f"bad-{reason}-{subkey!r}")
    entries.append((block_key(REGULAR_BLOCK), DHTValue(b"\x01", expiration), None))
    labels.append("regular")
    results = await client.store_many(good, entries)
    return dict(zip(labels, [outcome.stored for outcome in results.outcomes], strict=True))


@contextlib.asynccontextmanager
async def hostile_swarm() -> AsyncIterator[HostileSwarm]:
    """Start every host, publish the records, yield the swarm; everything stops when the block exits."""
    clock = time.time
    async with contextlib.AsyncExitStack() as stack:
        good = await stack.enter_async_context(open_host(listen=True))
        crafty = await stack.enter_async_context(open_host(listen=True))
        bad_ping = await stack.enter_async_context(open_host(listen=True))
        misbehaving = {name: await stack.enter_async_context(open_host(listen=True)) for name in FIND_MISBEHAVIOURS}
        publisher = await stack.enter_async_context(open_host())
        nursery = await stack.enter_async_context(trio.open_nursery())

        node = DHTNode(clock=clock)
        await nursery.start(node.serve, good)
        crafty_id = dhtid_of("crafty")
        crafty.set_unary_handler(RPC_PING, ping_handler(crafty_id, clock))
        crafty.set_unary_handler(RPC_FIND, crafted_find_handler(crafty_id, clock))
        _raw_handler(bad_ping, RPC_PING, ping_garbage)
        for name, host in misbehaving.items():
            host.set_unary_handler(RPC_PING, ping_handler(dhtid_of(f"hostile-{name}"), clock))
            _raw_handler(host, RPC_FIND, FIND_MISBEHAVIOURS[name])

        client = SwarmClient(publisher, timeout=5)
        with trio.fail_after(10):
            await client.connect(good.listen_addrs[0])
            stored = await publish(client, good.peer_id, clock())
        swarm = HostileSwarm(good, crafty, misbehaving, bad_ping, node, stored)
        try:
            yield swarm
        finally:
            nursery.cancel_scope.cancel()
