"""Turn the outcome of a ``TransformerConnectionHandler.rpc_info`` probe into a :class:`Reachability`
(PROTOCOL.md §6.7, §6.9), the way health.petals.dev words it.

* A reply is ``ExpertInfo{serialized_info: msgpack map}`` with ``version``, ``dht_client_mode`` and
  ``cache_tokens_available``: the server is reachable.
* A timeout reads "Failed to connect in N sec. Firewall may be blocking connections".
* "protocol(s) not supported" means the peer is up but has no Petals handler yet: a *joining* server, not an
  unreachable one. health.petals.dev compares the exact text ``"protocol not supported"``, which the daemon
  bundled with hivemind since Dec 2023 no longer says (``failed to negotiate protocol: protocols not supported:
  [...]``), so it marks such servers unreachable; we match both spellings as substrings.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError as ProtobufDecodeError

from dht._pb import runtime_pb2
from dht.errors import CallTimeout, DecodeError, ProtocolNotSupported
from dht.serializer import loads

from ..snapshot import Reachability
from .serverinfo import MAX_INT, MAX_SHORT_TEXT, truncate

MAX_ERROR_TEXT = 300
_NOT_SUPPORTED = ("protocols not supported", "protocol not supported")


def timeout_message(timeout: float) -> str:
    return f"Failed to connect in {timeout:.0f} sec. Firewall may be blocking connections"


def parse_rpc_info(response: bytes, peer_id: str, now: float, latency: float | None = None) -> Reachability:
    """A successful ``rpc_info`` reply. Fields of the wrong type are dropped (they are informational); a reply
    that does not decode at all counts as a failed probe, as in health.petals.dev."""
    try:
        info = runtime_pb2.ExpertInfo.FromString(bytes(response))
        fields = loads(info.serialized_info)
    except (ProtobufDecodeError, DecodeError, ValueError, TypeError) as e:
        error = f"invalid rpc_info reply: {e}"
        return Reachability(peer_id, ok=False, checked_at=now, latency=latency, error=truncate(error, MAX_ERROR_TEXT))
    if not isinstance(fields, dict):
        error = f"invalid rpc_info reply: expected a map, got {type(fields).__name__}"
        return Reachability(peer_id, ok=False, checked_at=now, latency=latency, error=error)
    version = fields.get("version")
    client_mode = fields.get("dht_client_mode")
    cache_tokens = fields.get("cache_tokens_available")
    return Reachability(
        peer_id,
        ok=True,
        checked_at=now,
        latency=latency,
        version=truncate(version, MAX_SHORT_TEXT) if isinstance(version, str) else None,
        dht_client_mode=client_mode if isinstance(client_mode, bool) else None,
        cache_tokens_available=(cache_tokens if type(cache_tokens) is int and 0 <= cache_tokens <= MAX_INT else None),
    )


def is_protocol_not_supported(error: BaseException | str) -> bool:
    if isinstance(error, ProtocolNotSupported):
        return True
    text = str(error).lower()
    return any(phrase in text for phrase in _NOT_SUPPORTED)


def is_timeout(error: BaseException | str) -> bool:
    if isinstance(error, str):
        return False
    # trio.TooSlowError is matched by name so these rules need not import trio.
    return isinstance(error, CallTimeout | TimeoutError) or type(error).__name__ == "TooSlowError"


def reachability_from_error(
    peer_id: str, error: BaseException | str, now: float, *, timeout: float, latency: float | None = None
) -> Reachability:
    """A failed probe: ``joining`` for "protocol(s) not supported", else unreachable with health's wording."""
    if is_protocol_not_supported(error):
        return Reachability(peer_id, ok=True, checked_at=now, latency=latency, joining=True, error=_text(error))
    message = timeout_message(timeout) if is_timeout(error) else _text(error)
    return Reachability(peer_id, ok=False, checked_at=now, latency=latency, error=message)


def _text(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else (str(error) or repr(error))
    return truncate(text, MAX_ERROR_TEXT)
