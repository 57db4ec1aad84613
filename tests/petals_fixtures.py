"""Helpers for the Petals rules tests: turn the recorded monitor FIND replies (sim / live vectors) into a
:class:`RawCrawl`, and build ServerInfo bytes, without any code from ``dht`` beyond the serializer."""

from __future__ import annotations

import hashlib

import msgpack

from dht.serializer import dumps
from monitor.snapshot import RawCrawl, RawEntry

PREFIX = "Meta-Llama-3-1-405B-Instruct-hf"
MODELS_KEY = "_petals.models"


def _ext_hook(code: int, data: bytes) -> object:
    if code == 0x40:
        return tuple(msgpack.unpackb(data, ext_hook=_ext_hook, raw=False))
    if code == 0x50:
        return ("$dictionary", msgpack.unpackb(data, ext_hook=_ext_hook, raw=False))
    return msgpack.ExtType(code, data)


def dictionary_items(value_hex: str) -> list[tuple[object, bytes, float]]:
    """``(subkey, value bytes, expiration)`` of a serialized DictionaryDHTValue (ext 0x50)."""
    tag, (_maxsize, _latest, items) = msgpack.unpackb(bytes.fromhex(value_hex), ext_hook=_ext_hook, raw=False)
    assert tag == "$dictionary"
    return [(subkey, value, expiration) for subkey, value, expiration in items]


def dht_id(key: str) -> str:
    return hashlib.sha1(msgpack.packb(key, use_bin_type=True)).hexdigest()


def raw_crawl_from_calls(calls: list[dict], keys: list[str], dht_time: float, swarm: str = "vectors") -> RawCrawl:
    """Merge every FOUND_DICTIONARY reply to a FIND for ``keys`` (newest expiration wins per subkey)."""
    by_id = {dht_id(key): key for key in keys}
    merged: dict[tuple[str, object], RawEntry] = {}
    for call in calls:
        if not call["handler"].endswith("rpc_find"):
            continue
        for key_id, result in zip(call["request"]["keys"], call["response"].get("results", []), strict=False):
            if result["type"] != "FOUND_DICTIONARY" or key_id not in by_id:
                continue
            key = by_id[key_id]
            for subkey, value, expiration in dictionary_items(result["value_hex"]):
                current = merged.get((key, subkey))
                if current is None or expiration > current.expiration:
                    merged[(key, subkey)] = RawEntry(key, subkey, value, expiration)
    return RawCrawl(
        swarm=swarm,
        started_at=dht_time,
        finished_at=dht_time + 1.0,
        dht_time=dht_time,
        bootstrap=[],
        entries=list(merged.values()),
    )


def server_info_bytes(state: object = 2, throughput: object = 10.0, **extra: object) -> bytes:
    """msgpack of a ServerInfo tuple; ``extra`` goes into extra_info as given (so tests can break types)."""
    return dumps((state, throughput, dict(extra)))
