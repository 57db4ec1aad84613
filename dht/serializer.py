"""hivemind's msgpack dialect with DHT values in it: what the rest of the package imports.

:mod:`dht.msgpack_codec` encodes and decodes (and says how strictly); this module makes its ext 0x50 a
:class:`~dht.value.DictionaryValue`. The split keeps the imports one-way (``msgpack_codec`` <- ``value`` <-
``serializer``): the codec knows no value type, and the value types use the codec directly.
"""

from __future__ import annotations

from typing import Any

from . import msgpack_codec
from .msgpack_codec import (
    DEFAULT_LIMITS,
    EXT_DICTIONARY,
    EXT_TENSOR_DESCRIPTOR,
    EXT_TUPLE,
    MAX_CONTAINER_LEN,
    MAX_DEPTH,
    MAX_SIZE,
    DecodeLimits,
    TensorDescriptor,
    dumps,
)
from .value import DictionaryValue


def loads(
    data: bytes | bytearray | memoryview,
    *,
    allow_unknown_ext: bool = False,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> Any:
    """:func:`dht.msgpack_codec.loads` with ext 0x50 -> :class:`~dht.value.DictionaryValue`."""
    return msgpack_codec.loads(
        data, dictionary=DictionaryValue.from_packed, allow_unknown_ext=allow_unknown_ext, limits=limits
    )


def loads_dictionary(data: bytes) -> Any:
    """:func:`dht.msgpack_codec.loads_dictionary` (the fast path for FIND replies), DictionaryValues included."""
    return msgpack_codec.loads_dictionary(data, dictionary=DictionaryValue.from_packed)


__all__ = [
    "DEFAULT_LIMITS",
    "EXT_DICTIONARY",
    "EXT_TENSOR_DESCRIPTOR",
    "EXT_TUPLE",
    "MAX_CONTAINER_LEN",
    "MAX_DEPTH",
    "MAX_SIZE",
    "DecodeLimits",
    "TensorDescriptor",
    "dumps",
    "loads",
    "loads_dictionary",
]
