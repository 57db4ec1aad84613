"""hivemind's msgpack dialect (``MSGPackSerializer``), written out by hand (PROTOCOL.md §2.1).

Encoding matches ``msgpack.packb(obj, use_bin_type=True, strict_types=True, default=<hivemind ext hook>)``
byte for byte: smallest int format, floats always float64 (``cb``), ``str`` as UTF-8 str, ``bytes`` as bin,
``list`` as array, ``dict`` as map in insertion order, ``tuple`` (and its subclasses) as ext 0x40 around the
msgpack array of its items, anything with ``MSGPACK_EXT_CODE`` (:class:`~dht.value.DictionaryValue`: 0x50) as
that ext around its ``packb()``.
Ext containers use fixext for 1/2/4/8/16-byte payloads, else ext8/16/32.

Decoding is deliberately **stricter than hivemind**, because every record we decode was written by a
stranger: a depth limit, a total size limit, declared lengths checked against the bytes that are really
there before anything is allocated, map keys restricted to ``str``/``bytes`` (as msgpack's
``strict_map_key``), no duplicate map keys, no trailing bytes, and an unknown ext code is an error rather
than hivemind's "return the raw payload and log a warning" (pass ``allow_unknown_ext=True`` for that).
Whatever the input, :func:`loads` either returns a value or raises :class:`~dht.errors.DecodeError`.

This module knows no DHT value type: the caller says what an ext 0x50 becomes (``dictionary``, given the decoded
``[maxsize, latest_expiration, items]``). :mod:`dht.serializer` binds it to :class:`~dht.value.DictionaryValue`
and is what everything else imports; :mod:`dht.value` builds on this module, so neither imports the other late.

Ext 0x51 (hivemind's ``BatchTensorDescriptor``, found only inside Petals' ``rpc_info`` schemas) decodes to
:class:`TensorDescriptor`, a thin wrapper around its map that encodes back to the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .errors import DecodeError

EXT_TUPLE = 0x40
EXT_DICTIONARY = 0x50  # hivemind.dht.storage.DictionaryDHTValue
EXT_TENSOR_DESCRIPTOR = 0x51  # hivemind.utils.tensor_descr.BatchTensorDescriptor

MAX_DEPTH = 32
MAX_SIZE = 4 * 1024 * 1024  # same as the unary envelope limit: nothing bigger can arrive in one reply
MAX_CONTAINER_LEN = 1 << 20
_MAX_ENCODE_DEPTH = 512  # msgpack-python's own nesting limit

_FIXEXT_HEADERS = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what :func:`loads` accepts; the defaults fit everything hivemind and Petals write."""

    max_depth: int = MAX_DEPTH
    max_size: int = MAX_SIZE
    max_container_len: int = MAX_CONTAINER_LEN


DEFAULT_LIMITS = DecodeLimits()


@dataclass(eq=True)
class TensorDescriptor:
    """Ext 0x51: the map hivemind packs for a ``BatchTensorDescriptor`` (size, dtype, layout, ...).

    Kept as its map in wire order so that it encodes back to identical bytes.
    """

    MSGPACK_EXT_CODE = EXT_TENSOR_DESCRIPTOR

    fields: dict[str | bytes, Any] = field(default_factory=dict)

    @property
    def size(self) -> Any:
        return self.fields.get("size")

    @property
    def dtype(self) -> Any:
        return self.fields.get("dtype")

    def packb(self) -> bytes:
        return dumps(self.fields)


# ---------------------------------------------------------------------------------------------- encoding


def dumps(obj: Any) -> bytes:
    """Serialize ``obj`` exactly as hivemind's ``MSGPackSerializer.dumps`` would.

    Raises ``TypeError`` for a type hivemind cannot serialize either (``strict_types``: subclasses of
    int/str/list/dict are refused, tuple subclasses become ext 0x40), ``OverflowError`` for an int outside
    int64/uint64, ``ValueError`` for nesting deeper than 512 levels or a str that is not valid Unicode.
    """
    out = bytearray()
    _pack(obj, out, 0)
    return bytes(out)


def _pack(obj: Any, out: bytearray, depth: int) -> None:
    if depth > _MAX_ENCODE_DEPTH:
        raise ValueError("msgpack: nesting deeper than 512 levels")
    kind = type(obj)
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif kind is int:
        _pack_int(obj, out)
    elif kind is float:
        out.append(0xCB)
        out += struct.pack(">d", obj)
    elif kind is str:
        raw = obj.encode("utf-8")
        _pack_header(out, len(raw), fix=0xA0, fix_max=31, h8=0xD9, h16=0xDA, h32=0xDB)
        out += raw
    elif kind is bytes or kind is bytearray or kind is memoryview:
        raw = bytes(obj)
        _pack_header(out, len(raw), fix=None, fix_max=-1, h8=0xC4, h16=0xC5, h32=0xC6)
        out += raw
    elif kind is list:
        _pack_header(out, len(obj), fix=0x90, fix_max=15, h8=None, h16=0xDC, h32=0xDD)
        for item in obj:
            _pack(item, out, depth + 1)
    elif kind is dict:
        _pack_header(out, len(obj), fix=0x80, fix_max=15, h8=None, h16=0xDE, h32=0xDF)
        for key, value in obj.items():
            _pack(key, out, depth + 1)
            _pack(value, out, depth + 1)
    elif getattr(kind, "MSGPACK_EXT_CODE", None) is not None:
        _pack_ext(kind.MSGPACK_EXT_CODE, obj.packb(), out)
    elif isinstance(obj, tuple):
        payload = bytearray()
        _pack(list(obj), payload, depth + 1)
        _pack_ext(EXT_TUPLE, bytes(payload), out)
    else:
        raise TypeError(f"msgpack: cannot serialize an object of type {kind.__name__}")


def _pack_int(value: int, out: bytearray) -> None:
    if 0 <= value <= 0x7F:
        out.append(value)
    elif -32 <= value < 0:
        out.append(value & 0xFF)
    elif value > 0:
        if value <= 0xFF:
            out += b"\xcc" + struct.pack(">B", value)
        elif value <= 0xFFFF:
            out += b"\xcd" + struct.pack(">H", value)
        elif value <= 0xFFFF_FFFF:
            out += b"\xce" + struct.pack(">I", value)
        elif value <= 0xFFFF_FFFF_FFFF_FFFF:
            out += b"\xcf" + struct.pack(">Q", value)
        else:
            raise OverflowError(f"msgpack: int {value} does not fit in uint64")
    elif value >= -0x80:
        out += b"\xd0" + struct.pack(">b", value)
    elif value >= -0x8000:
        out += b"\xd1" + struct.pack(">h", value)
    elif value >= -0x8000_0000:
        out += b"\xd2" + struct.pack(">i", value)
    elif value >= -0x8000_0000_0000_0000:
        out += b"\xd3" + struct.pack(">q", value)
    else:
        raise OverflowError(f"msgpack: int {value} does not fit in int64")


def _pack_header(
    out: bytearray, length: int, *, fix: int | None, fix_max: int, h8: int | None, h16: int, h32: int
) -> None:
    if fix is not None and length <= fix_max:
        out.append(fix | length)
    elif h8 is not None and length <= 0xFF:
        out += bytes((h8, length))
    elif length <= 0xFFFF:
        out.append(h16)
        out += struct.pack(">H", length)
    elif length <= 0xFFFF_FFFF:
        out.append(h32)
        out += struct.pack(">I", length)
    else:
        raise ValueError(f"msgpack: object of length {length} is too large")


def _pack_ext(code: int, payload: bytes, out: bytearray) -> None:
    length = len(payload)
    if length in _FIXEXT_HEADERS:
        out.append(_FIXEXT_HEADERS[length])
    elif length <= 0xFF:
        out += bytes((0xC7, length))
    elif length <= 0xFFFF:
        out.append(0xC8)
        out += struct.pack(">H", length)
    elif length <= 0xFFFF_FFFF:
        out.append(0xC9)
        out += struct.pack(">I", length)
    else:
        raise ValueError(f"msgpack: ext payload of {length} bytes is too large")
    out += struct.pack(">b", code)
    out += payload


# ---------------------------------------------------------------------------------------------- decoding


def loads(
    data: bytes | bytearray | memoryview,
    *,
    dictionary: Callable[[Any], Any],
    allow_unknown_ext: bool = False,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> Any:
    """Deserialize one msgpack value that fills ``data`` exactly; raise :class:`DecodeError` otherwise.

    ``str`` → str, bin → bytes, array → list, map → dict, ext 0x40 → tuple, ext 0x50 →
    ``dictionary(decoded payload)``, ext 0x51 → :class:`TensorDescriptor`. Any other ext code raises,
    unless ``allow_unknown_ext`` is set, in which case its raw payload ``bytes`` is returned (hivemind's behaviour).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"msgpack: expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > limits.max_size:
        raise DecodeError(f"msgpack: {len(raw)} bytes exceed the {limits.max_size}-byte limit")
    if not raw:
        raise DecodeError("msgpack: empty input")
    decoder = _Decoder(raw, allow_unknown_ext, limits, dictionary)
    value = decoder.value(0)
    if decoder.pos != len(raw):
        raise DecodeError(f"msgpack: {len(raw) - decoder.pos} trailing bytes after the value")
    return value


# Fixed-width scalars: first byte -> (struct format, size).
_SCALARS: dict[int, tuple[str, int]] = {
    0xCA: (">f", 4),
    0xCB: (">d", 8),
    0xCC: (">B", 1),
    0xCD: (">H", 2),
    0xCE: (">I", 4),
    0xCF: (">Q", 8),
    0xD0: (">b", 1),
    0xD1: (">h", 2),
    0xD2: (">i", 4),
    0xD3: (">q", 8),
}
# Variable-length items: first byte -> (kind, size of the length field).
_SIZED: dict[int, tuple[str, int]] = {
    0xC4: ("bin", 1),
    0xC5: ("bin", 2),
    0xC6: ("bin", 4),
    0xC7: ("ext", 1),
    0xC8: ("ext", 2),
    0xC9: ("ext", 4),
    0xD9: ("str", 1),
    0xDA: ("str", 2),
    0xDB: ("str", 4),
    0xDC: ("array", 2),
    0xDD: ("array", 4),
    0xDE: ("map", 2),
    0xDF: ("map", 4),
}
_LENGTH_FORMATS = {1: ">B", 2: ">H", 4: ">I"}
_FIXEXT_SIZES = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}


class _Decoder:
    """A cursor over one buffer. ``end`` shrinks while an ext payload is being decoded in place."""

    def __init__(
        self, data: bytes, allow_unknown_ext: bool, limits: DecodeLimits, dictionary: Callable[[Any], Any]
    ) -> None:
        self.data = data
        self.dictionary = dictionary
        self.pos = 0
        self.end = len(data)
        self.allow_unknown_ext = allow_unknown_ext
        self.limits = limits

    def fail(self, message: str, at: int | None = None) -> DecodeError:
        return DecodeError(f"msgpack: {message} at offset {self.pos if at is None else at}")

    def take(self, n: int) -> int:
        """Reserve ``n`` bytes and return where they start."""
        start = self.pos
        if n > self.end - start:
            raise self.fail(f"truncated input: need {n} bytes, {self.end - start} left")
        self.pos = start + n
        return start

    def length(self, nbytes: int) -> int:
        start = self.take(nbytes)
        return struct.unpack_from(_LENGTH_FORMATS[nbytes], self.data, start)[0]

    def value(self, depth: int) -> Any:
        start = self.take(1)
        head = self.data[start]
        if head <= 0x7F:
            return head
        if head >= 0xE0:
            return head - 0x100
        if head <= 0x8F:
            return self.map(head & 0x0F, depth, start)
        if head <= 0x9F:
            return self.array(head & 0x0F, depth, start)
        if head <= 0xBF:
            return self.str(head & 0x1F)
        if head == 0xC0:
            return None
        if head == 0xC2:
            return False
        if head == 0xC3:
            return True
        scalar = _SCALARS.get(head)
        if scalar is not None:
            fmt, size = scalar
            return struct.unpack_from(fmt, self.data, self.take(size))[0]
        if head in _FIXEXT_SIZES:
            return self.ext(_FIXEXT_SIZES[head], depth, start)
        sized = _SIZED.get(head)
        if sized is None:
            raise self.fail(f"invalid type byte 0x{head:02x}", start)
        kind, nbytes = sized
        n = self.length(nbytes)
        if kind == "bin":
            return self.data[self.take(n) : self.pos]
        if kind == "str":
            return self.str(n)
        if kind == "array":
            return self.array(n, depth, start)
        if kind == "map":
            return self.map(n, depth, start)
        return self.ext(n, depth, start)

    def str(self, n: int) -> str:
        start = self.take(n)
        try:
            return self.data[start : self.pos].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"str is not valid UTF-8 ({exc.reason})", start) from None

    def enter(self, depth: int, at: int) -> int:
        if depth + 1 > self.limits.max_depth:
            raise self.fail(f"nesting deeper than {self.limits.max_depth} levels", at)
        return depth + 1

    def check_count(self, n: int, min_item_size: int, what: str, at: int) -> None:
        if n > self.limits.max_container_len:
            raise self.fail(f"{what} of {n} items exceeds the limit of {self.limits.max_container_len}", at)
        if n * min_item_size > self.end - self.pos:
            raise self.fail(f"{what} declares {n} items but only {self.end - self.pos} bytes remain", at)

    def array(self, n: int, depth: int, at: int) -> list[Any]:
        self.check_count(n, 1, "array", at)
        inner = self.enter(depth, at)
        return [self.value(inner) for _ in range(n)]

    def map(self, n: int, depth: int, at: int) -> dict[Any, Any]:
        self.check_count(n, 2, "map", at)
        inner = self.enter(depth, at)
        result: dict[Any, Any] = {}
        for _ in range(n):
            key_at = self.pos
            key = self.value(inner)
            if type(key) is not str and type(key) is not bytes:
                raise self.fail(f"map key of type {type(key).__name__} (only str and bytes)", key_at)
            if key in result:
                raise self.fail(f"duplicate map key {key!r}", key_at)
            result[key] = self.value(inner)
        return result

    def ext(self, n: int, depth: int, at: int) -> Any:
        code = struct.unpack_from(">b", self.data, self.take(1))[0]
        payload_start = self.take(n)
        if code == EXT_TUPLE:
            items = self.nested(payload_start, depth, at, code)
            if type(items) is not list:
                raise self.fail(f"ext 0x40 (tuple) payload is a {type(items).__name__}, not an array", at)
            return tuple(items)
        if code == EXT_DICTIONARY:
            return self.dictionary(self.nested(payload_start, depth, at, code))
        if code == EXT_TENSOR_DESCRIPTOR:
            fields = self.nested(payload_start, depth, at, code)
            if type(fields) is not dict:
                raise self.fail(f"ext 0x51 (tensor descriptor) payload is a {type(fields).__name__}", at)
            return TensorDescriptor(fields)
        if self.allow_unknown_ext:
            return self.data[payload_start : self.pos]
        raise self.fail(f"unknown ext type {code} ({n}-byte payload)", at)

    def nested(self, payload_start: int, depth: int, at: int, code: int) -> Any:
        """Decode the ext payload ``data[payload_start:pos]`` in place: exactly one value, nothing after it."""
        payload_end, outer_end = self.pos, self.end
        if payload_start == payload_end:
            raise self.fail(f"ext 0x{code:02x} has an empty payload", at)
        self.pos, self.end = payload_start, payload_end
        value = self.value(self.enter(depth, at))
        if self.pos != payload_end:
            raise self.fail(f"{payload_end - self.pos} trailing bytes inside ext 0x{code:02x}", self.pos)
        self.end = outer_end
        return value


# ---------------------------------------------------------------------------------------------- fast path

_PLAIN_SUBKEYS = (str, bytes, int, float, bool, type(None))


class _NotPlain(Exception):
    """The input is not the plain shape the fast path handles: let the strict decoder judge it."""


def _refuse_ext(code: int, data: bytes) -> Any:
    raise _NotPlain


def _dictionary_ext(code: int, data: bytes) -> Any:
    if code != EXT_DICTIONARY:
        raise _NotPlain
    return _PlainDictionary(msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, ext_hook=_refuse_ext))


class _PlainDictionary:
    __slots__ = ("packed",)

    def __init__(self, packed: Any) -> None:
        self.packed = packed


def loads_dictionary(data: bytes, *, dictionary: Callable[[Any], Any]) -> Any:
    """:func:`loads` for FIND replies, where nearly every value is a ``DictionaryDHTValue`` of plain entries.

    That shape (ext 0x50 around ``[maxsize, latest, [[subkey, bin, expiration], ...]]``, scalar subkeys, no
    map, no other ext) is decoded by msgpack's C unpacker, ~4x faster than :func:`loads` (60 entries: 0.66 ->
    0.15 ms); anything else, and anything the fast path would reject, goes to :func:`loads`. So the result, or the
    :class:`DecodeError`, is always exactly what :func:`loads` gives: a value of that shape is 3 levels deep, has
    no map (hence no duplicate keys) and no unknown ext, and both decoders read UTF-8 strictly and refuse trailing
    bytes."""
    if type(data) is bytes and len(data) <= MAX_SIZE:
        try:
            top = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, ext_hook=_dictionary_ext)
            if type(top) is _PlainDictionary:
                packed = top.packed
                if type(packed) is list and len(packed) == 3 and type(packed[2]) is list:
                    for item in packed[2]:
                        if type(item) is not list or len(item) != 3 or type(item[0]) not in _PLAIN_SUBKEYS:
                            raise _NotPlain
                    return dictionary(packed)
        except Exception:  # _NotPlain, msgpack's errors, DecodeError from from_packed: the strict path decides
            pass
    return loads(data, dictionary=dictionary)
