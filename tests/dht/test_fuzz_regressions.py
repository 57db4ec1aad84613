"""One test per crash the fuzzers found (tests/fuzz/README.md): the exact input where it still applies, and
the smallest hand-made input that shows the bug, so a regression fails here and not in a fuzzing run."""

from __future__ import annotations

import base64
import json
import math

import pytest
from fuzz import targets

from dht import wire
from dht._pb import p2pd_pb2
from dht.errors import FrameError
from dht.serializer import dumps
from monitor.report import flat_server_rows, state_document
from monitor.rules.petals import build_snapshot
from monitor.snapshot import ModelInfo, RawCrawl, RawEntry

PEER = "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"
NOW = 1_767_225_600.0

# fuzz_envelope, crash-23e1269c: a framed callUnary whose ``proto`` holds the bytes 88 93 (not UTF-8).
ENVELOPE_CRASH = base64.b64decode(
    "VgoQJzsT/CgpH5qxN8ZF18r82BpCCiYAJAgBEiBi/OIQ390250UcFL1PpTHCejlBlkEErQAAYsC4pS/pehIUREhUTHJvdG9jiJMucnBj"
    "X2ZpbmQaAv//"
)


def _call_with_raw_proto(proto: bytes) -> bytes:
    """A PersistentConnectionRequest{callId, callUnary{peer, proto, data}} written field by field."""
    call_unary = b"\x0a\x00" + b"\x12" + wire.encode_uvarint(len(proto)) + proto + b"\x1a\x01\x00"
    return b"\x0a\x10" + bytes(16) + b"\x1a" + wire.encode_uvarint(len(call_unary)) + call_unary


def test_envelope_crash_input_keeps_the_contract():
    targets.check_envelope(ENVELOPE_CRASH)
    with pytest.raises(FrameError, match="not valid UTF-8"):
        wire.decode_call(wire.unframe(ENVELOPE_CRASH))


def test_call_with_non_utf8_proto_is_a_frame_error_not_bytes_in_a_str_field():
    """proto2 ``string`` fields are not UTF-8-checked by upb: invalid bytes came back as ``bytes`` and
    ``UnaryCall.proto`` broke its type. Valid UTF-8 still decodes."""
    payload = _call_with_raw_proto(b"DHT\x88\x93")
    assert isinstance(p2pd_pb2.PersistentConnectionRequest.FromString(payload).callUnary.proto, bytes)
    with pytest.raises(FrameError, match="not valid UTF-8"):
        wire.decode_call(payload)
    good = wire.decode_call(_call_with_raw_proto(b"DHTProtocol.rpc_find"))
    assert good.proto == "DHTProtocol.rpc_find" and good.data == b"\x00"


@pytest.fixture
def rows_of_earlier_versions(monkeypatch):
    """Records far in the future are invalid now (reason ``expiration``), but crawls stored by earlier versions
    hold rows with them, and pages must still render those: build such rows with the old rule."""
    import monitor.config  # noqa: F401  SwarmConfig's default is read at its import: never under this patch
    from monitor.rules import petals

    monkeypatch.setattr(petals, "MAX_EXPIRATION_AHEAD", math.inf)


@pytest.mark.parametrize("expiration", [math.inf, 1e20])
def test_records_that_never_expire_are_invalid(expiration):
    info = dumps((2, 10.0, {"start_block": 0, "end_block": 2}))
    raw = RawCrawl("fuzz", NOW, NOW, NOW, [], [RawEntry(f"m.{i}", PEER, info, expiration) for i in range(2)])
    snapshot = build_snapshot(raw, [ModelInfo("m", 2, official=True)], {})
    assert snapshot.models[0].servers == [] and snapshot.stats.invalid_by_reason == {"expiration": 2}
    assert all("more than 24 h ahead (max_expiration_ahead)" in r.detail for r in snapshot.invalid)


@pytest.mark.parametrize("expiration", [-math.inf, math.inf])
def test_infinite_expiration_keeps_the_state_document_strict_json(expiration, rows_of_earlier_versions):
    """fuzz_serverinfo, crash-9ecfce83: a DHT entry may carry an infinite expiration (only NaN is refused
    on the wire, as in hivemind); its row's ``expiration``/``ttl`` made ``/api/v1/state`` (allow_nan=False)
    fail with ValueError for the whole swarm. They are ``null`` now, like every other non-finite number."""
    info = dumps((2, 10.0, {"start_block": 0, "end_block": 2, "public_name": "ok"}))
    entries = [RawEntry(f"m.{i}", PEER, info, expiration) for i in range(2)]
    raw = RawCrawl("fuzz", NOW, NOW, NOW, [], entries)
    snapshot = build_snapshot(raw, [ModelInfo("m", 2, official=True)], {})
    row = snapshot.models[0].servers[0]
    assert math.isinf(row.expiration) and row.state == ("expired" if expiration < 0 else "online")
    doc = json.loads(json.dumps(state_document(snapshot), allow_nan=False))
    assert doc["model_reports"][0]["server_rows"][0]["expiration"] is None
    assert doc["model_reports"][0]["server_rows"][0]["ttl"] is None
    rows = flat_server_rows(snapshot)
    assert rows and rows[0]["ttl"] is None
    json.dumps(rows, allow_nan=False)


@pytest.mark.parametrize("expiration", [1e20, -1e308])
def test_expiration_beyond_any_date_renders_the_model_page(expiration, tmp_path, rows_of_earlier_versions):
    """Found while fuzzing the rules by hand (tests/hostile.py's crafty node now sends one): a finite but
    absurd expiration made ``datetime.fromtimestamp`` raise OverflowError in the ``utc`` filter, so the
    model page of the whole model answered 500. The date now shows as "–"."""
    from web_harness import serve

    from monitor.store.sqlite import StoreWriter

    info = dumps((2, 10.0, {"start_block": 0, "end_block": 2}))
    raw = RawCrawl("fuzz", NOW, NOW, NOW, [], [RawEntry(f"m.{i}", PEER, info, expiration) for i in range(2)])
    snapshot = build_snapshot(raw, [ModelInfo("m", 2, official=True)], {})
    with StoreWriter(tmp_path / "m.db") as writer:
        writer.write_snapshot(snapshot)
    live, store = serve(tmp_path / "m.db", clock=lambda: NOW + 5)
    try:
        for path in ("/models/m?swarm=fuzz", f"/servers/{PEER}", "/api/v1/state?swarm=fuzz", "/crawls/1"):
            assert live.get(path).status == 200, path
    finally:
        live.close()
        store.close()


class _BrokenWriteStream:
    """A stream whose connection died: py-libp2p raises its own StreamError/StreamReset on write."""

    async def read(self, n: int | None = None) -> bytes:
        raise AssertionError("nothing is read after a failed write")

    async def write(self, data: bytes) -> None:
        raise ConnectionResetError("TCP connection reset by remote peer")


def test_a_failed_write_during_negotiation_is_a_typed_error():
    """Seen in the hostile-peer crawl: a connection reset while we proposed a protocol escaped
    ``negotiate_outbound`` (so ``Host.call_unary``, ``find_peer``) as py-libp2p's raw StreamError, which
    ``SwarmClient.bootstrap``/``host.resolve`` and the crawler's probes do not catch (they catch DHTError)."""
    from dht.net.streams import BufferedReader, StreamClosed, negotiate_outbound

    stream = _BrokenWriteStream()
    with pytest.raises(StreamClosed, match="while proposing"):
        targets.drive(negotiate_outbound(stream, BufferedReader(stream), "DHTProtocol.rpc_find"))
    assert issubclass(StreamClosed, FrameError)


def test_the_limit_on_expirations_ahead_is_a_swarm_setting(tmp_path):
    """``max_expiration_ahead`` (default a day): a record two hours ahead is fine by default, invalid (reason
    ``expiration``, counted and listed) for a swarm that allows one hour, and the crawler's classification made
    with the default is not reused by a judge with another limit."""
    from monitor.config import ConfigError, ConfigOverrides, load_config
    from monitor.crawl.crawler import CrawlOutcome
    from monitor.crawl.pipeline import judge
    from monitor.rules.petals import classify

    info = dumps((2, 10.0, {"start_block": 0, "end_block": 2}))
    raw = RawCrawl("fuzz", NOW, NOW, NOW, [], [RawEntry(f"m.{i}", PEER, info, NOW + 7200) for i in range(2)])
    models = [ModelInfo("m", 2, official=True)]
    path = tmp_path / "monitor.toml"
    path.write_text('[[swarms]]\nname = "fuzz"\n[[swarms.models]]\ndht_prefix = "m"\nnum_blocks = 2\n')
    default = load_config(path, {}, ConfigOverrides()).swarms[0]
    path.write_text(path.read_text().replace('name = "fuzz"', 'name = "fuzz"\nmax_expiration_ahead = 3600'))
    strict = load_config(path, {}, ConfigOverrides()).swarms[0]
    assert (default.max_expiration_ahead, strict.max_expiration_ahead) == (86400.0, 3600.0)

    outcome = CrawlOutcome(raw, models, classified=classify(raw, models))
    assert judge(outcome, default).stats.invalid_by_reason == {}
    snapshot = judge(outcome, strict)
    assert snapshot.models[0].servers == [] and snapshot.stats.invalid_by_reason == {"expiration": 2}
    assert [r.detail for r in snapshot.invalid] == ["expires in 2 h: more than 1 h ahead (max_expiration_ahead)"] * 2

    path.write_text(path.read_text().replace("max_expiration_ahead = 3600", "max_expiration_ahead = 0"))
    with pytest.raises(ConfigError, match=r"swarms\[0\]\.max_expiration_ahead: must be a number >= 60, got 0"):
        load_config(path, {}, ConfigOverrides())
