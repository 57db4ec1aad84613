"""Decode and validate what Petals servers write into the DHT: ``ServerInfo`` values, ``_petals.models`` entries
and the base58 PeerID subkeys (PROTOCOL.md §6.2, §6.5).

The checks are Petals' own pydantic-strict constraints (``src/petals/data_structures.py``), so a record we accept is
one a Petals client would route through, and a record we reject is one it would skip. We are stricter only where
Petals' non-strict fields would silently coerce (``public_name=5`` becomes ``"5"`` in pydantic; we reject it) and
where storing the value would be unsafe (ints beyond SQLite's 64-bit range).

Over-long display strings are *truncated*, not rejected: a server with a 10 kB ``public_name`` still serves its
blocks, and rejecting it would show holes that Petals clients do not see. Truncated text ends with ``…``.
Everything here is pure: bytes in, a frozen :class:`~monitor.snapshot.ServerInfo` or a typed error out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from dht.errors import DecodeError
from dht.peerid import MAX_PEER_ID_TEXT, is_peer_id  # noqa: F401 (is_peer_id: re-exported for the rules)
from dht.serializer import loads

from ..snapshot import PETALS_ONLINE, ServerInfo

MAX_INT = 2**63 - 1  # SQLite INTEGER is signed 64-bit; msgpack could carry up to 2**64-1
MAX_PUBLIC_NAME = 256
MAX_SHORT_TEXT = 64  # version, torch_dtype, quant_type
MAX_ADAPTERS = 64
MAX_ADAPTER_NAME = 256
MAX_NEXT_PINGS = 64  # Petals pings at most 10 "next" servers; more is noise
MAX_DHT_PREFIX = 256
MAX_NUM_BLOCKS = 4096  # a custom model announcing more would make us ask for absurdly many keys
HUGGINGFACE_URL = "https://huggingface.co/"

# Field order of Petals' extra_info (to_tuple() writes every one of them, nil when unset).
EXTRA_INFO_FIELDS = (
    "start_block",
    "end_block",
    "public_name",
    "version",
    "network_rps",
    "forward_rps",
    "inference_rps",
    "adapters",
    "torch_dtype",
    "quant_type",
    "using_relay",
    "cache_tokens_left",
    "next_pings",
)


class InvalidValue(ValueError):
    """A DHT value that Petals would skip. ``reason`` is a short stable code; ``detail`` says what was wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidServerInfo(InvalidValue):
    """A block-key entry whose value is not a valid Petals ``ServerInfo``.

    Reasons: ``msgpack`` (undecodable), ``schema`` (wrong shape or field type), ``state``, ``throughput``,
    ``range`` (a number out of its allowed range), ``span`` (``start_block >= end_block``).
    """


class InvalidModelInfo(InvalidValue):
    """A ``_petals.models`` entry that is not a valid Petals ``ModelInfo`` (reason ``model_info``)."""


def describe(value: object, limit: int = 60) -> str:
    """A short, safe description of an untrusted value for error details (never the whole value)."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(value).__name__} {text}"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_server_info(value: bytes) -> ServerInfo:
    """Decode one block-key value (``msgpack(ServerInfo.to_tuple())``) and validate it like Petals does."""
    try:
        source = loads(value)
    except DecodeError as e:
        raise InvalidServerInfo("msgpack", str(e)[:200]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # backstop: untrusted bytes must not crash
        raise InvalidServerInfo("msgpack", f"{type(e).__name__}: {str(e)[:200]}") from None
    return server_info_from_tuple(source)


MAX_ONLINE_MEMO = 100_000


def is_online_announcement(value: bytes, memo: dict[bytes, bool]) -> bool:
    """Whether a block-key value is a valid ServerInfo announcing ONLINE; ``memo`` (payload -> answer, bounded)
    decodes each distinct payload once (a server's payload repeats on every block of its span)."""
    hit = memo.get(value)
    if hit is None:
        try:
            hit = parse_server_info(value).state == PETALS_ONLINE
        except InvalidValue:
            hit = False
        if len(memo) < MAX_ONLINE_MEMO:
            memo[value] = hit
    return hit


def server_info_from_tuple(source: object) -> ServerInfo:
    """Validate an already decoded ``(state, throughput[, extra_info])`` like ``ServerInfo.from_tuple``.

    Like Petals: a 2-tuple is fine, elements past the third are ignored, unknown ``extra_info`` keys are ignored
    and missing ones default. A list is accepted too (Petals only slices it).
    """
    if not isinstance(source, tuple | list) or len(source) < 2:
        raise InvalidServerInfo("schema", f"expected a (state, throughput, extra_info) tuple, got {describe(source)}")
    state = _state(source[0])
    throughput = _rps("throughput", source[1], type_reason="throughput", range_reason="throughput")
    extra = source[2] if len(source) > 2 else {}
    if not isinstance(extra, dict):
        raise InvalidServerInfo("schema", f"extra_info must be a map, got {describe(extra)}")
    for key in extra:
        if not isinstance(key, str):
            raise InvalidServerInfo("schema", f"extra_info keys must be str, got {describe(key)}")
        if key in ("state", "throughput"):  # Petals: "got multiple values for keyword argument"
            raise InvalidServerInfo("schema", f"extra_info must not repeat {key!r}")

    start_block = _optional_int("start_block", extra.get("start_block"))
    end_block = _optional_int("end_block", extra.get("end_block"))
    if start_block is not None and end_block is not None and start_block >= end_block:
        raise InvalidServerInfo("span", f"start_block {start_block} must be < end_block {end_block}")
    return ServerInfo(
        state=state,
        throughput=throughput,
        start_block=start_block,
        end_block=end_block,
        public_name=_optional_str("public_name", extra.get("public_name"), MAX_PUBLIC_NAME),
        version=_optional_str("version", extra.get("version"), MAX_SHORT_TEXT),
        network_rps=_optional_rps("network_rps", extra.get("network_rps")),
        forward_rps=_optional_rps("forward_rps", extra.get("forward_rps")),
        inference_rps=_optional_rps("inference_rps", extra.get("inference_rps")),
        adapters=_adapters(extra.get("adapters", ())),
        torch_dtype=_optional_str("torch_dtype", extra.get("torch_dtype"), MAX_SHORT_TEXT),
        quant_type=_optional_str("quant_type", extra.get("quant_type"), MAX_SHORT_TEXT),
        using_relay=_optional_bool("using_relay", extra.get("using_relay")),
        cache_tokens_left=_optional_int("cache_tokens_left", extra.get("cache_tokens_left")),
        next_pings=_next_pings(extra.get("next_pings")),
    )


def _state(value: object) -> int:
    # Petals does ServerState(value), which would also take True or 2.0; we want a plain int.
    if type(value) is not int:
        raise InvalidServerInfo("state", f"state must be an int 0..{PETALS_ONLINE}, got {describe(value)}")
    if not 0 <= value <= PETALS_ONLINE:
        raise InvalidServerInfo("state", f"{value} is not a valid ServerState")
    return value


def _rps(name: str, value: object, *, type_reason: str = "schema", range_reason: str = "range") -> float:
    """``confloat(ge=0, allow_inf_nan=False, strict=True)``: a float (not an int, not a bool), finite, >= 0."""
    if type(value) is not float:
        raise InvalidServerInfo(type_reason, f"{name} must be a float, got {describe(value)}")
    if not math.isfinite(value) or value < 0:
        raise InvalidServerInfo(range_reason, f"{name} must be a finite float >= 0, got {value!r}")
    return value


def _optional_rps(name: str, value: object) -> float | None:
    return None if value is None else _rps(name, value)


def _optional_int(name: str, value: object) -> int | None:
    """``conint(ge=0, strict=True)``: an int that is not a bool, >= 0 (and within SQLite's range)."""
    if value is None:
        return None
    if type(value) is not int:
        raise InvalidServerInfo("schema", f"{name} must be an int, got {describe(value)}")
    if not 0 <= value <= MAX_INT:
        raise InvalidServerInfo("range", f"{name} must be within 0..2**63-1, got {value}")
    return value


def _optional_str(name: str, value: object, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidServerInfo("schema", f"{name} must be a str, got {describe(value)}")
    return truncate(value, limit)


def _optional_bool(name: str, value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidServerInfo("schema", f"{name} must be a bool, got {describe(value)}")


def _adapters(value: object) -> tuple[str, ...]:
    # Petals declares Sequence[str]: the wire form is a tuple (ext 0x40), a list is accepted too. None is not.
    if not isinstance(value, tuple | list):
        raise InvalidServerInfo("schema", f"adapters must be a tuple of str, got {describe(value)}")
    for item in value:
        if not isinstance(item, str):
            raise InvalidServerInfo("schema", f"adapters must hold str, got {describe(item)}")
    return tuple(truncate(item, MAX_ADAPTER_NAME) for item in value[:MAX_ADAPTERS])


def _next_pings(value: object) -> dict[str, float] | None:
    """``Dict[str, confloat(ge=0, strict=True)]``: inf is allowed (a failed ping), NaN and negatives are not."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidServerInfo("schema", f"next_pings must be a map, got {describe(value)}")
    pings: dict[str, float] = {}
    for peer, rtt in value.items():
        if not isinstance(peer, str):
            raise InvalidServerInfo("schema", f"next_pings keys must be str, got {describe(peer)}")
        if type(rtt) is not float:
            raise InvalidServerInfo("schema", f"next_pings values must be floats, got {describe(rtt)}")
        if not rtt >= 0:  # also catches NaN
            raise InvalidServerInfo("range", f"next_pings values must be >= 0, got {rtt!r}")
        if len(pings) < MAX_NEXT_PINGS and len(peer) <= MAX_PEER_ID_TEXT:
            pings[peer] = rtt
    return pings


# ---- PeerID subkeys


# ---- _petals.models


def is_valid_dht_prefix(prefix: object) -> bool:
    """Petals forbids ``.`` and spaces in a dht_prefix (they delimit block and chain UIDs)."""
    return (
        isinstance(prefix, str)
        and 0 < len(prefix) <= MAX_DHT_PREFIX
        and "." not in prefix
        and not any(ch.isspace() or not ch.isprintable() for ch in prefix)
    )


def parse_model_info(value: bytes) -> tuple[int, str | None]:
    """Decode a ``_petals.models`` value ``msgpack({num_blocks, repository})`` into ``(num_blocks, repository)``.

    Like Petals' ``ModelInfo``: ``num_blocks`` a strict int >= 1, ``repository`` a str or nil. Unlike it, unknown
    keys are ignored (forward compatibility), and ``num_blocks`` is capped at ``MAX_NUM_BLOCKS``.
    """
    try:
        source = loads(value)
    except DecodeError as e:
        raise InvalidModelInfo("model_info", f"undecodable: {str(e)[:200]}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise InvalidModelInfo("model_info", f"undecodable: {type(e).__name__}") from None
    if not isinstance(source, Mapping):
        raise InvalidModelInfo("model_info", f"expected a map, got {describe(source)}")
    num_blocks = source.get("num_blocks")
    if type(num_blocks) is not int or not 1 <= num_blocks <= MAX_NUM_BLOCKS:
        detail = f"num_blocks must be an int in 1..{MAX_NUM_BLOCKS}, got {describe(num_blocks)}"
        raise InvalidModelInfo("model_info", detail)
    repository = source.get("repository")
    if repository is not None and not isinstance(repository, str):
        raise InvalidModelInfo("model_info", f"repository must be a str or nil, got {describe(repository)}")
    if repository is not None and len(repository) > 1024:
        raise InvalidModelInfo("model_info", "repository is longer than 1024 characters")
    return num_blocks, repository
