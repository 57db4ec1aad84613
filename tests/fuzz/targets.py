"""The fuzz targets: one function per decoder family, ``check_*(data: bytes) -> None``.

Each feeds untrusted bytes to the decoders the monitor runs on data written by strangers and enforces the
contract: only the documented typed errors escape (``dht.errors.DecodeError`` and its ``FrameError``,
``ProtocolNotSupported`` from multistream, ``InvalidServerInfo`` / ``InvalidModelInfo`` from the Petals
rules), and what does decode obeys a few invariants. Anything else propagates, which atheris reports as a
crash and pytest as a failure. The same functions run under atheris (``fuzz_*.py``) and in the test suite
(``tests/test_fuzz_*.py``: seed corpus, hypothesis, regressions), so they import nothing from atheris.

Async code (the stream reader) runs on a fake stream that never suspends, driven by ``coro.send(None)``:
no event loop per input, and a reader that would wait forever on a finished stream fails loudly instead.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import struct
from collections.abc import Coroutine
from typing import Any

from dht import protocol, wire
from dht._pb import dht_pb2
from dht.client import FindData, HivemindDHT, PingResult, StoreResults
from dht.errors import DecodeError, FrameError, ProtocolNotSupported
from dht.ids import dhtid_of
from dht.net.streams import BufferedReader, negotiate_outbound
from dht.serializer import DecodeLimits, dumps, loads, loads_dictionary
from dht.value import DHTValue, DictionaryValue
from monitor.report import state_document
from monitor.rules.petals import MODELS_KEY, build_snapshot, classify_entries, parse_block_key
from monitor.rules.reachability import parse_rpc_info
from monitor.rules.serverinfo import (
    MAX_ADAPTER_NAME,
    MAX_ADAPTERS,
    MAX_PUBLIC_NAME,
    InvalidModelInfo,
    InvalidServerInfo,
    is_peer_id,
    parse_model_info,
    parse_server_info,
)
from monitor.snapshot import ModelInfo, RawCrawl, RawEntry, Reachability

SMALL_LIMITS = DecodeLimits(max_depth=4, max_size=512, max_container_len=16)
FRAME_LIMITS = (16, 1024, wire.MAX_MESSAGE_SIZE)
MAX_FRAMES = 6
MAX_ENTRIES = 7  # per crawl: enough for every interaction of two servers and the index; keeps exec/s up
DHT_TIME = 1_767_225_600.0
PEERS = (
    "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY",
    "QmQGTqmM7NKjV6ggU1ZCap8zWiyKR89RViDXiqehSiCpY5",
    "12D3KooWHv9JtiqVnSkzTu92nbFXsMvyDnbv6Vd3beJjEHuSVhxX",
)


# ---------------------------------------------------------------------------------------------- helpers


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that must finish without suspending (its only awaits are on :class:`FakeStream`)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("coroutine suspended on a fake stream that is always ready")


class FakeStream:
    """A libp2p stream stand-in that hands out ``data`` ``chunk`` bytes at a time, then EOF.

    At the end it either returns ``b""`` or raises (py-libp2p raises ``StreamEOF``/``StreamReset``).
    """

    def __init__(self, data: bytes, chunk: int, raise_at_eof: bool, write_fails: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.chunk = chunk
        self.raise_at_eof = raise_at_eof
        self.write_fails = write_fails
        self.written = bytearray()
        self.reads = 0

    async def read(self, n: int | None = None) -> bytes:
        self.reads += 1
        if self.pos >= len(self.data):
            if self.raise_at_eof:
                raise EOFError("stream reset")
            return b""
        take = min(self.chunk, len(self.data) - self.pos, n if n is not None else self.chunk)
        out = self.data[self.pos : self.pos + take]
        self.pos += take
        return out

    async def write(self, data: bytes) -> None:
        if self.write_fails:
            raise ConnectionResetError("connection reset by peer")  # what a dead libp2p connection does
        self.written += data


class ByteSource:
    """Deterministic choices from fuzz bytes (atheris' FuzzedDataProvider without atheris); zeros when empty."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def pick(self, options: tuple | list) -> Any:
        return options[self.u8() % len(options)]

    def blob(self) -> bytes:
        return self.take(self.u8() % 48)

    def text(self) -> str:
        return self.blob().decode("utf-8", errors="replace")

    def f64(self) -> float:
        return struct.unpack(">d", self.take(8).ljust(8, b"\0"))[0]

    def i16(self) -> int:
        return struct.unpack(">h", self.take(2).ljust(2, b"\0"))[0]


def _json_strict(doc: Any) -> None:
    """The web API serializes with ``allow_nan=False``: a non-finite number would be a 500."""
    json.dumps(doc, allow_nan=False)


# ---------------------------------------------------------------------------------------------- envelope


def check_envelope(data: bytes) -> None:
    """``wire.unframe/decode_reply/decode_call/decode_uvarint`` and ``BufferedReader`` on a fake stream."""
    try:
        head = wire.decode_uvarint(data)
    except FrameError:
        head = None
    else:
        if head is not None:
            value, end = head
            assert 0 < end <= min(len(data), 10) and value >= 0
    try:
        payload = wire.unframe(data)
    except FrameError:
        payload = None
    else:
        assert len(payload) <= wire.MAX_MESSAGE_SIZE and wire.unframe(wire.frame(payload)) == payload
    for blob in (data, payload):
        if blob is None:
            continue
        try:
            reply = wire.decode_reply(blob)
        except FrameError:
            pass
        else:
            assert (reply.response is None) != (reply.error is None)
        try:
            call = wire.decode_call(blob)
        except FrameError:
            pass
        else:
            assert len(call.call_id) == 16 and isinstance(call.proto, str)
    _check_reader(data)


def _check_reader(data: bytes) -> None:
    control, body = (data[0], data[1:]) if data else (0, b"")
    chunk = (control & 0x0F) + 1
    limit = FRAME_LIMITS[min((control >> 4) & 0x03, len(FRAME_LIMITS) - 1)]
    write_fails = bool(control & 0x40)
    raise_at_eof = bool(control & 0x80)
    # Frames back to back (a few: more adds time, not paths); each is bounded by the limit.
    stream = FakeStream(body, chunk, raise_at_eof)
    reader = BufferedReader(stream)
    for _ in range(MAX_FRAMES):
        try:
            frame = drive(reader.read_frame(limit))
        except FrameError:
            break
        assert len(frame) <= limit
    assert len(reader._buf) <= max(limit, 64 * 1024) + 16
    assert stream.reads <= len(body) + 2  # every read consumed bytes, or ended the loop
    # The dialer's side of multistream-select (its write may fail), then a reply frame.
    stream = FakeStream(body, chunk, raise_at_eof, write_fails)
    reader = BufferedReader(stream)
    try:
        drive(negotiate_outbound(stream, reader, protocol.RPC_FIND))
        wire.decode_reply(drive(reader.read_frame(limit)))
    except (FrameError, ProtocolNotSupported):
        pass


# ---------------------------------------------------------------------------------------------- protobuf


def _result_count(body: bytes) -> int:
    """How many FindResults the bytes hold, so that the aligned parse gets past the count check."""
    try:
        return min(len(dht_pb2.FindResponse.FromString(body).results), 64)
    except Exception:
        return 1


def _store_count(body: bytes) -> int:
    try:
        return max(1, min(len(dht_pb2.StoreResponse.FromString(body).store_ok), 64))
    except Exception:
        return 1


def check_protobuf(data: bytes) -> None:
    """Every ``protocol.parse_*`` and ``HivemindDHT.handle_response``: ``DecodeError`` or a typed result."""
    if not data:
        return
    selector, body = data[0] % 9, data[1:]
    with contextlib.suppress(DecodeError):
        _parse_protobuf(selector, body)


def _parse_protobuf(selector: int, body: bytes) -> None:
    if selector == 0:
        ping = protocol.parse_ping_response(body)
        assert len(ping.node_id) in (0, 20)
    elif selector == 1:
        store = protocol.parse_store_response(body, expected=_store_count(body))
        assert all(type(ok) is bool for ok in store.store_ok)
    elif selector == 2:
        n = _result_count(body)
        find = protocol.parse_find_response(body, [dhtid_of(i) for i in range(n)])
        for result in find.results:
            assert result.expiration is None or not math.isnan(result.expiration)
            assert all(len(node_id) == 20 for node_id, _ in result.nearest)
    elif selector == 3:
        protocol.parse_ping_request(body)
    elif selector == 4:
        for item in protocol.parse_store_request(body).items:
            assert len(item.key) == 20 and not math.isnan(item.expiration)
            if item.is_whole_dictionary:
                item.dictionary()
            elif not item.is_regular:
                item.subkey()
    elif selector == 5:
        assert all(len(key) == 20 for key in protocol.parse_find_request(body).keys)
    elif selector == 6:
        protocol.parse_info_request(body)
    elif selector == 7:
        reach = parse_rpc_info(body, PEERS[0], DHT_TIME, 0.01)  # never raises: a bad reply is a failed probe
        assert reach.ok or reach.error
        assert isinstance(protocol.parse_info_response(body), dict)
    else:
        _handle_response(body)


def _handle_response(data: bytes) -> None:
    kind, body = (data[0] % 3, data[1:]) if data else (0, b"")
    dht = HivemindDHT()
    if kind == 0:
        request = dht.ping("peer")
    elif kind == 1:
        count = _store_count(body)
        value = DHTValue(b"\xc0", DHT_TIME)
        request = dht.store_many("peer", [(f"k{i}", value) for i in range(count)])
    else:
        request = dht.get_many("peer", [f"k{i}" for i in range(max(1, _result_count(body)))])
    try:
        result = dht.handle_response(request.request_id, body)
    finally:
        assert not dht.pending()  # answered exactly once, even when the bytes were garbage
    if isinstance(result, FindData):
        for found in result.results.values():
            assert found.value is None or isinstance(found.value, DHTValue | DictionaryValue)
            assert found.error is None or found.value is None
    else:
        assert isinstance(result, PingResult | StoreResults)


# ---------------------------------------------------------------------------------------------- msgpack


def _outcome(decode: Any, body: bytes) -> tuple:
    """A comparable summary of a decode: the value (dictionaries by their entries) or the error's text."""
    try:
        value = decode(body)
    except DecodeError as e:
        return ("error", str(e))
    if isinstance(value, DictionaryValue):
        return ("dictionary", value.maxsize, value.latest_expiration, repr([(k, v) for k, v in value.items()]))
    return ("value", repr(value))


def check_msgpack(data: bytes) -> None:
    """``serializer.loads`` (default and tight limits, with and without unknown exts) and
    ``DictionaryValue.unpackb``; whatever decodes must re-encode, and re-encoding is a fixed point."""
    if not data:
        return
    control, body = data[0], data[1:]
    limits = SMALL_LIMITS if control & 1 else DecodeLimits()
    allow_unknown_ext = bool(control & 2)
    try:
        value = loads(body, allow_unknown_ext=allow_unknown_ext, limits=limits)
    except DecodeError:
        pass
    else:
        if not allow_unknown_ext:  # an unknown ext decodes to its raw payload: it cannot round-trip
            encoded = dumps(value)
            again = loads(encoded)
            assert dumps(again) == encoded
    assert _outcome(loads_dictionary, body) == _outcome(loads, body)  # the C fast path decides nothing alone
    try:
        dictionary = DictionaryValue.unpackb(body)
    except DecodeError:
        pass
    else:
        assert not math.isnan(dictionary.latest_expiration)
        for _subkey, item in dictionary.items():
            assert type(item.payload) is bytes and not math.isnan(item.expiration)
        assert DictionaryValue.unpackb(dictionary.packb()) == dictionary


# ---------------------------------------------------------------------------------------------- ServerInfo


def check_serverinfo(data: bytes) -> None:
    """``parse_server_info`` / ``parse_model_info`` on the raw bytes, then the whole rule chain
    (``classify_entries``, ``build_snapshot``, the strict-JSON state document) on a crawl built from them."""
    try:
        info = parse_server_info(data)
    except InvalidServerInfo as e:
        assert e.reason in ("msgpack", "schema", "state", "throughput", "range", "span")
    else:
        assert info.state in (0, 1, 2) and math.isfinite(info.throughput) and info.throughput >= 0
        assert info.public_name is None or len(info.public_name) <= MAX_PUBLIC_NAME
        assert len(info.adapters) <= MAX_ADAPTERS and all(len(a) <= MAX_ADAPTER_NAME for a in info.adapters)
        if info.start_block is not None and info.end_block is not None:
            assert info.start_block < info.end_block
    try:
        num_blocks, repository = parse_model_info(data)
    except InvalidModelInfo as e:
        assert e.reason == "model_info"
    else:
        assert num_blocks >= 1 and (repository is None or isinstance(repository, str))
    text = data.decode("utf-8", errors="replace")
    assert isinstance(is_peer_id(text), bool)
    block = parse_block_key(text)
    assert block is None or (block[1] >= 0 and "." not in block[0])
    check_crawl(data)


def _server_info_value(src: ByteSource) -> Any:
    """A ServerInfo tuple with fields drawn from the fuzz bytes: valid, borderline or wrong."""
    extra: dict[str, Any] = {
        "start_block": src.pick((None, 0, 1, 2, 3, 0, 1, 2, -1, 2**63, 4.0, "1")),
        "end_block": src.pick((None, 1, 2, 3, 4, 6, 3, 4, 0, 2**64 - 1, True)),
        "public_name": src.pick((None, "<script>alert(1)</script>", "\u202e\x00", "x" * 260, 5)),
        "version": src.pick((None, "2.3.0", "<b>", b"v")),
        "network_rps": src.pick((None, 1.5, 0.0, math.inf, math.nan, -1.0, 3)),
        "inference_rps": src.pick((None, 2.0, -0.0, 1e308)),
        "adapters": src.pick(((), ("a/b",), ["x" * 300, "y"], ["a"] * 70, (), None, (1,), "adapter")),
        "using_relay": src.pick((None, True, False, None, 1)),
        "cache_tokens_left": src.pick((None, 0, 2**20, 2**63 - 1, -5, 2**64 - 1, 1.0)),
        "next_pings": src.pick(
            (None, {}, {PEERS[1]: 0.01, PEERS[2]: math.inf}, None, {PEERS[1]: math.nan}, {1: 0.1}, [])
        ),
    }
    if src.u8() % 8 == 0:
        extra[src.pick(("state", "future", "throughput"))] = 1
    state = src.pick((2, 2, 2, 1, 0, 2, 1, 2, 3, -1, True, 2.0))
    throughput = src.pick((10.0, 10.0, 0.5, 10.0, 0.0, 20.0, math.inf, math.nan, -1.0, 5))
    shape = src.u8() % 6
    if shape <= 1:
        return (state, throughput, extra)
    if shape == 2:
        return [state, throughput]
    if shape == 3:
        return (state, throughput, extra, "future")
    if shape == 4:
        return {"state": state}
    return (state, throughput, extra.get("adapters"))


def _value_pool(make: Any, size: int = 256) -> list[bytes]:
    """Encoded values built once (encoding per input would cost more than the rules under test)."""
    rng = random.Random(size)
    return [dumps(make(ByteSource(rng.randbytes(64)))) for _ in range(size)]


def _model_info_value(src: ByteSource) -> Any:
    num_blocks = src.pick((4, 4, 1, 0, 5000, -1, 2.0, None))
    repository = src.pick(("https://huggingface.co/x/y", None, "http://evil", 5, "h" * 2000))
    return {"num_blocks": num_blocks, "repository": repository}


_POOLS: dict[str, list[bytes]] = {}


def _pool(name: str) -> list[bytes]:
    if name not in _POOLS:
        _POOLS[name] = _value_pool(_server_info_value if name == "server_info" else _model_info_value)
    return _POOLS[name]


def _encoded(src: ByteSource, name: str) -> bytes:
    """Mostly a pooled encoding; sometimes raw fuzz bytes."""
    choice = src.u8()
    return src.blob() if choice >= 0xF0 else _pool(name)[src.u8()]


def _expiration(src: ByteSource) -> float:
    """DHT expirations are never NaN (the protocol layer refuses it) but may be anything else."""
    choice = src.u8() % 6
    if choice < 3:
        return DHT_TIME + src.i16()
    if choice == 3:
        return src.pick((math.inf, -math.inf, 0.0, 1e308))
    value = src.f64()
    return DHT_TIME if math.isnan(value) else value


def make_crawl(data: bytes) -> tuple[RawCrawl, list[ModelInfo], dict[str, Reachability], int, str]:
    """A RawCrawl (plus configured models, probe results, min_redundancy, custom policy) from fuzz bytes."""
    src = ByteSource(data)
    models = [ModelInfo("m", src.u8() % 8 + 1, official=True)]
    if src.u8() & 1:
        models.append(ModelInfo("n", 0))  # block count unknown: taken from _petals.models
    entries: list[RawEntry] = []
    for _ in range(src.u8() % MAX_ENTRIES):
        key = src.pick(("m.0", "m.1", "m.2", "m.3", "m.5", "n.0", "n.2", MODELS_KEY, "m.01", "m", src.text()))
        if key == MODELS_KEY:
            subkey = src.pick(("n", "m", "c", "bad prefix", "a.b", 7, None))
            value = _encoded(src, "model_info")
        else:
            subkey = src.pick((*PEERS, src.text(), None, 42, b"raw", ("t",), "Qm0"))
            value = _encoded(src, "server_info")
        entries.append(RawEntry(key, subkey, value, _expiration(src)))
    regular = {src.pick(("m.0", "n.1", "x")): src.u8() % 3 + 1 for _ in range(src.u8() % 3)}
    raw = RawCrawl("fuzz", DHT_TIME - 5, DHT_TIME, DHT_TIME, [], entries, regular_values=regular)
    reach = {}
    for peer in PEERS:
        kind = src.u8() % 4
        if kind == 1:
            reach[peer] = Reachability(peer, ok=True, checked_at=DHT_TIME, latency=src.pick((0.01, math.inf)))
        elif kind == 2:
            reach[peer] = Reachability(peer, ok=False, checked_at=DHT_TIME, error="<script>x</script>")
        elif kind == 3:
            reach[peer] = Reachability(peer, ok=True, checked_at=DHT_TIME, joining=True)
    return raw, models, reach, src.u8() % 3 + 1, src.pick(("huggingface", "any", "none"))


def check_crawl(data: bytes) -> None:
    """The pure rules never raise on any crawl, account for every entry, and yield strict JSON."""
    raw, models, reach, min_redundancy, policy = make_crawl(data)
    if data[-1:] >= b"\x80":  # half the inputs go through the whole chain (it classifies again, inside)
        snapshot = build_snapshot(raw, models, reach, min_redundancy=min_redundancy, custom_model_policy=policy)
        for report in snapshot.models:
            assert len(report.blocks) == report.model.num_blocks
            assert report.state in ("healthy", "degraded", "broken")
        _json_strict(state_document(snapshot))
        return
    records, invalid, resolved = classify_entries(raw, models, custom_model_policy=policy)
    block_entries = [e for e in raw.entries if e.key != MODELS_KEY]
    rejected = [r for r in invalid if r.key != MODELS_KEY and r.reason not in ("expired", "regular_value")]
    assert len(records) + len(rejected) == len(block_entries)
    expired = [r for r in invalid if r.key != MODELS_KEY and r.reason == "expired"]
    assert len(expired) == sum(1 for r in records if r.expiration < raw.dht_time)
    assert [m.dht_prefix for m in resolved[: len(models)]] == [m.dht_prefix for m in models]
