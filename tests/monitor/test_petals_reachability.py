"""rpc_info probe outcomes → Reachability, with health.petals.dev's wording and the current daemon's error text."""

from __future__ import annotations

import pytest

from dht._pb import runtime_pb2
from dht.errors import CallTimeout, PeerUnreachable, ProtocolNotSupported, RemoteError
from dht.serializer import dumps
from monitor.rules.reachability import parse_rpc_info, reachability_from_error, timeout_message

PEER = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
NOW = 1_000.0
DAEMON_TEXT = "failed to negotiate protocol: protocols not supported: [TransformerConnectionHandler.rpc_info]"


def reply(fields: object) -> bytes:
    return runtime_pb2.ExpertInfo(serialized_info=dumps(fields)).SerializeToString()


def test_reply_fields():
    reach = parse_rpc_info(reply({"version": "2.3.0", "dht_client_mode": True, "cache_tokens_available": 5}), PEER, NOW)
    assert reach.ok and reach.checked_at == NOW and reach.peer_id == PEER
    assert (reach.version, reach.dht_client_mode, reach.cache_tokens_available) == ("2.3.0", True, 5)


def test_wrong_field_types_are_dropped_not_fatal():
    reach = parse_rpc_info(reply({"version": 3, "dht_client_mode": 1, "cache_tokens_available": -1}), PEER, NOW)
    assert reach.ok and reach.version is None and reach.dht_client_mode is None and reach.cache_tokens_available is None


@pytest.mark.parametrize("response", [b"\xff\xff\xff", reply([1, 2]), runtime_pb2.ExpertInfo().SerializeToString()])
def test_undecodable_reply_is_a_failed_probe(response):
    reach = parse_rpc_info(response, PEER, NOW, latency=0.2)
    assert not reach.ok and reach.error.startswith("invalid rpc_info reply") and reach.latency == 0.2


@pytest.mark.parametrize(
    "error",
    [
        ProtocolNotSupported(DAEMON_TEXT),
        DAEMON_TEXT,
        "protocol not supported",  # the text health.petals.dev compares against
        RemoteError("Protocol Not Supported"),
    ],
)
def test_protocol_not_supported_means_joining(error):
    reach = reachability_from_error(PEER, error, NOW, timeout=5)
    assert reach.ok and reach.joining


@pytest.mark.parametrize("error", [CallTimeout("deadline"), TimeoutError()])
def test_timeouts_use_the_official_message(error):
    reach = reachability_from_error(PEER, error, NOW, timeout=5)
    assert not reach.ok and not reach.joining
    assert reach.error == "Failed to connect in 5 sec. Firewall may be blocking connections" == timeout_message(5.0)


def test_trio_too_slow_is_a_timeout():
    import trio

    assert reachability_from_error(PEER, trio.TooSlowError(), NOW, timeout=3).error == timeout_message(3)


def test_other_errors_keep_their_text_bounded():
    assert reachability_from_error(PEER, PeerUnreachable("dial failed: no route"), NOW, timeout=5).error == (
        "dial failed: no route"
    )
    assert reachability_from_error(PEER, ConnectionResetError(), NOW, timeout=5).error == "ConnectionResetError()"
    long = reachability_from_error(PEER, "x" * 10_000, NOW, timeout=5)
    assert not long.ok and len(long.error) <= 300
