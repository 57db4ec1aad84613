"""Make the protocol vectors again from hivemind 1.1.12 itself, and compare them with the committed ones.

Run with a Python that has hivemind 1.1.12 (the test venv does; hivemind never enters the pytest process):

    .venv/bin/python tests/vectors/regenerate.py            # compare: exit 1 if a deterministic section differs
    .venv/bin/python tests/vectors/regenerate.py --write    # rewrite vectors.json with the regenerated sections

Each section below calls hivemind's own code on fixed inputs with the clock frozen at ``NOW``, so the bytes are
hivemind's, not ours. Sections this script does not make (the fake-transport and live-daemon runs) are kept
from the committed file; README.md in this folder says which, and why.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the tagged JSON the tests read back

import tagged_json  # noqa: E402

NOW = 1767225600.0  # 2026-01-01T00:00:00Z: the frozen clock of every deterministic section
HM = "[hivemind 1.1.12]"
UIDS = [f"Meta-Llama-3-1-405B-Instruct-hf.{i}" for i in range(3)]
PEER_S = "12D3KooWL8pFAAemHvuV33PomCwHh6E6Ea5Fuu83gomgWLrmBErx"  # a full-node server
PEER_R = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"  # a relay-only server
BOOTSTRAP_RSA = "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"  # bootstrap1.petals.dev


def _hivemind():
    """hivemind's modules, imported only when the script runs (never at import time, never in pytest)."""
    import hivemind
    from hivemind.dht import crypto, node, routing, storage
    from hivemind.utils import serializer, timed_storage

    if hivemind.__version__ != "1.1.12":
        raise SystemExit(f"regenerate.py needs hivemind 1.1.12, found {hivemind.__version__}")
    return hivemind, routing, serializer, storage, timed_storage, node, crypto


@contextmanager
def frozen_clock(timed_storage, clock: list[float]) -> Iterator[None]:
    """hivemind's storage reads ``timed_storage.get_dht_time``; point it at ``clock[0]`` for the duration."""
    saved = timed_storage.get_dht_time
    timed_storage.get_dht_time = lambda: clock[0]
    try:
        yield
    finally:
        timed_storage.get_dht_time = saved


# --- Petals-shaped values: ServerInfo.to_tuple() is (state, throughput, extra_info with every field, in order).
# Written out from Petals' data_structures.py, deliberately not imported from monitor.rules.serverinfo: the vectors
# check our code, so nothing of ours may shape them.

SERVER_INFO_FIELDS = (
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


def server_info_tuple(state: int, throughput: float, **extra: Any) -> tuple:
    return (
        state,
        throughput,
        {name: extra.get(name, () if name == "adapters" else None) for name in SERVER_INFO_FIELDS},
    )


FULL_SERVER = server_info_tuple(
    2,
    2854.123456789,
    start_block=0,
    end_block=63,
    public_name="health-vector-server",
    version="2.3.0.dev2",
    network_rps=1234.5,
    forward_rps=9876.25,
    inference_rps=432.0,
    adapters=("artek0chumak/guanaco-65b", "timdettmers/guanaco-65b"),
    torch_dtype="bfloat16",
    quant_type="nf4",
    using_relay=False,
    cache_tokens_left=157184,
    next_pings={PEER_R: 0.0123, BOOTSTRAP_RSA: float("inf")},
)
RELAY_SERVER = server_info_tuple(
    0, 0.0, start_block=2, end_block=6, version="2.3.0.dev2", torch_dtype="float16", quant_type="none", using_relay=True
)


# --- sections


def dhtid_section(hm) -> tuple[list, list, list]:
    _, routing, serializer, *_ = hm
    keys = [
        ("petals block uid (first block)", UIDS[0]),
        ("petals block uid (last block of 126)", "Meta-Llama-3-1-405B-Instruct-hf.125"),
        ("petals block uid, dht_prefix containing '/'", "mistralai/Mixtral-8x22B-Instruct-v0-1.0"),
        ("petals model index key", "_petals.models"),
        ("short ascii str (fixstr)", "abc"),
        ("str of exactly 31 bytes (largest fixstr)", "a" * 31),
        ("str of 32 bytes (str8 0xd9)", "b" * 32),
        ("empty str", ""),
        ("unicode str", "Модель-测试-🚀.7"),
        ("int key", 42),
        ("negative int key", -1),
        ("tuple key (msgpack ext 0x40)", ("expert", 3)),
        ("bytes key: hashed RAW, no msgpack", b"raw-bytes-key"),
        ("bytes key equal to msgpack('abc'): same id as str 'abc'", b"\xa3abc"),
    ]
    import hashlib

    dhtid = []
    for description, key in keys:
        hashed = key if isinstance(key, bytes) else serializer.MSGPackSerializer.dumps(key)
        ident = routing.DHTID.generate(source=key)
        dhtid.append(
            {
                "description": description,
                "key": tagged_json.to_json(key),
                "key_python_repr": repr(key),
                "hashed_input_hex": hashed.hex(),
                "sha1_hex": hashlib.sha1(hashed).hexdigest(),
                "dhtid_int_hex": hex(ident),
                "dhtid_to_bytes_hex": ident.to_bytes().hex(),
                "produced_by": f"hivemind.dht.routing.DHTID.generate(source=key).to_bytes() {HM}; hashed_input = key "
                "if isinstance(key, bytes) else MSGPackSerializer.dumps(key)",
            }
        )
    fixed = [
        {
            "int_hex": hex(value),
            "to_bytes_hex": routing.DHTID(value).to_bytes().hex(),
            "produced_by": f"hivemind DHTID(int).to_bytes() {HM} (always 20 bytes, big-endian, zero-padded)",
        }
        for value in (0, 1, 255, 1 << 152, (1 << 160) - 1)
    ]
    fixed.append(
        {
            "note": "DHTID.from_bytes(b'') == 0 (what an empty NodeInfo.node_id decodes to)",
            "value": int(routing.DHTID.from_bytes(b"")),
            "produced_by": f"hivemind DHTID.from_bytes {HM}",
        }
    )
    ids = {f"uid.{i}": routing.DHTID.generate(source=uid) for i, uid in enumerate(UIDS)}
    xor = []
    for a, b in (("uid.0", "uid.1"), ("uid.0", "uid.2"), ("uid.1", "uid.2")):
        distance = ids[a].xor_distance(ids[b])
        xor.append(
            {
                "a": a,
                "a_hex": ids[a].to_bytes().hex(),
                "b": b,
                "b_hex": ids[b].to_bytes().hex(),
                "xor_distance_hex": hex(distance),
                "xor_distance_20_bytes": distance.to_bytes(20, "big").hex(),
                "longest_common_prefix_bits": routing.DHTID.longest_common_prefix_length(ids[a], ids[b]),
                "produced_by": f"hivemind DHTID.xor_distance / DHTID.longest_common_prefix_length {HM}",
            }
        )
    return dhtid, fixed, xor


def subkeys_section(hm) -> list:
    hivemind, routing, serializer, *_ = hm
    out = []
    for description, subkey in (
        ("base58 peer id, Ed25519 identity (12D3KooW...)", PEER_S),
        ("base58 peer id, RSA (Qm...) - a real Petals bootstrap peer", BOOTSTRAP_RSA),
        ("_petals.models subkey = dht_prefix", "Meta-Llama-3-1-405B-Instruct-hf"),
        ("None subkey => IS_REGULAR_VALUE tag", None),
    ):
        out.append(
            {
                "description": description,
                "subkey": subkey,
                "wire_subkey_hex": serializer.MSGPackSerializer.dumps(subkey).hex(),
                "dhtid_if_used_as_a_key_hex": None
                if subkey is None
                else routing.DHTID.generate(source=subkey).to_bytes().hex(),
                "note": "the protocol never hashes subkeys; the DHTID is given only for completeness",
                "produced_by": "MSGPackSerializer.dumps(subkey) as done in DHTProtocol.call_store; "
                f"DHTID.generate(source=subkey) {HM}",
            }
        )
    peer = hivemind.p2p.PeerID.from_base58(PEER_S)
    out.append(
        {
            "description": "how the Ed25519 peer id above is laid out",
            "peer_id_bytes_hex": peer.to_bytes().hex(),
            "layout": "00 (identity multihash) 24 (len 36) | 08 01 (KeyType=Ed25519) 12 20 <32-byte public key>",
            "base58": peer.to_base58(),
            "produced_by": "crypto_pb2.PublicKey(Ed25519) + identity multihash, base58btc via hivemind PeerID",
        }
    )
    return out


MSGPACK_CASES: list[tuple[str, Any]] = [
    ("nil", None),
    ("true", True),
    ("false", False),
    ("positive fixint", 7),
    ("uint8 boundary", 128),
    ("uint16", 300),
    ("uint32", 70000),
    ("uint64", 1 << 40),
    ("negative fixint", -1),
    ("int8", -33),
    ("int64 min", -(1 << 63)),
    ("float (always float64 0xcb)", 100.0),
    ("float fraction", 2854.123456789),
    ("float inf", float("inf")),
    ("float -0.0", -0.0),
    ("fixstr", "hello"),
    ("str8 (33 bytes)", UIDS[0]),
    ("unicode str", "Модель-测试-🚀"),
    ("bytes -> bin8 (use_bin_type=True)", b"\x00\x01\xfe\xff"),
    ("empty bytes", b""),
    ("list -> array", [1, "a", None]),
    ("empty list", []),
    ("dict -> map (str keys)", {"a": 1, "b": [2.5, None]}),
    ("empty tuple -> ext 0x40 fixext1", ()),
    ("2-tuple -> ext 0x40 ext8 (3-byte payload)", (1, 2)),
    ("4-byte payload tuple -> fixext4", (1, 2, 3)),
    ("nested tuple", ((1, "a"), (2.5, (b"x", None)), [("in", "list")])),
    ("dict with tuple value", {"adapters": ("a/b", "c/d")}),
]


def msgpack_section(hm) -> list:
    _, _, serializer, *_ = hm
    dumps, loads = serializer.MSGPackSerializer.dumps, serializer.MSGPackSerializer.loads
    out = []
    for description, value in MSGPACK_CASES:
        raw = dumps(value)
        decoded = loads(raw)
        out.append(
            {
                "description": description,
                "python_repr": repr(value),
                "value": tagged_json.to_json(value),
                "hex": raw.hex(),
                "roundtrip_equal": decoded == value and type(decoded) is type(value),
                "decoded_type": type(decoded).__name__,
                "produced_by": "hivemind.utils.serializer.MSGPackSerializer.dumps "
                f"[hivemind 1.1.12, msgpack {_msgpack_version()}]",
            }
        )
    int_key = dumps({1: "a"})
    try:
        loads(int_key)
        error = None
    except ValueError as e:
        error = repr(e)
    out.append(
        {
            "description": "dict with int key: dumps works, loads FAILS (msgpack strict_map_key=True)",
            "python_repr": "{1: 'a'}",
            "hex": int_key.hex(),
            "loads_error": error,
            "produced_by": f"MSGPackSerializer.dumps / loads {HM}",
        }
    )
    import msgpack

    unknown = msgpack.packb(msgpack.ExtType(0x33, b"\x01\x02"))
    out.append(
        {
            "description": "unknown ext type 0x33: MSGPackSerializer.loads returns the raw ext payload (bytes) and "
            "logs a warning",
            "hex": unknown.hex(),
            "decoded": tagged_json.to_json(loads(unknown)),
            "produced_by": f"msgpack.packb(ExtType) then MSGPackSerializer.loads {HM}",
        }
    )
    return out


def _msgpack_version() -> str:
    import msgpack

    return ".".join(map(str, msgpack.version))


def dictionary_json(hm, value) -> dict:
    """A DictionaryDHTValue as the vectors spell it: its items (with their decoded values) in stored order."""
    _, _, serializer, *_ = hm
    loads = serializer.MSGPackSerializer.loads
    return {
        "$DictionaryDHTValue": {
            "maxsize": tagged_json.to_json(float(value.maxsize)),
            "latest_expiration_time": value.latest_expiration_time,
            "items": [
                {
                    "subkey": tagged_json.to_json(subkey),
                    "value": tagged_json.to_json(entry.value),
                    "expiration_time": entry.expiration_time,
                    "value_decoded": tagged_json.to_json(loads(entry.value)),
                }
                for subkey, entry in value.items()
            ],
        }
    }


def dictionary_dht_value_section(hm) -> dict:
    _, _, serializer, storage, timed_storage, *_ = hm
    dumps, loads = serializer.MSGPackSerializer.dumps, serializer.MSGPackSerializer.loads
    entries = [(PEER_S, FULL_SERVER, NOW + 240), (PEER_R, RELAY_SERVER, NOW + 120.5)]
    with frozen_clock(timed_storage, [NOW]):
        value = storage.DictionaryDHTValue()
        for subkey, info, expiration in entries:
            value.store(subkey, dumps(info), expiration)
        packed, wrapped = value.packb(), dumps(value)
        decoded = loads(wrapped)
        roundtrip = list(decoded.items()) == list(value.items())  # the committed file had False: see README.md
        decoded_json = dictionary_json(hm, decoded)
    return {
        "description": "DictionaryDHTValue holding two Petals ServerInfo entries (subkey = base58 peer id) with "
        "different expirations",
        "now_used": NOW,
        "entries": [
            {"subkey": subkey, "expiration_time": expiration, "expiration_f64be": _f64be(expiration)}
            for subkey, _, expiration in entries
        ],
        "latest_expiration_time": value.latest_expiration_time,
        "maxsize": tagged_json.to_json(float(value.maxsize)),
        "packb_hex": packed.hex(),
        "packb_layout": "msgpack array [maxsize (float64 inf by default), latest_expiration_time (float64), "
        "[[subkey, value_bytes(bin), expiration(float64)], ...]]; items in insertion order",
        "dumps_hex": wrapped.hex(),
        "dumps_layout": "msgpack ext type 0x50 wrapping packb bytes",
        "decoded": decoded_json,
        "roundtrip_items_equal": roundtrip,
        "produced_by": "hivemind.dht.storage.DictionaryDHTValue.store/packb + MSGPackSerializer.dumps, "
        f"clock frozen at {NOW} {HM}",
    }


def _f64be(value: float) -> str:
    import struct

    return struct.pack(">d", value).hex()


def storage_rules_section(hm) -> list:
    _, routing, serializer, storage, timed_storage, *_ = hm
    dumps = serializer.MSGPackSerializer.dumps
    key = routing.DHTID.generate(source="storage-rules")
    produced = f"hivemind DHTLocalStorage.store/store_subkey, clock frozen at {NOW} {HM}"

    def run(steps: list) -> tuple[list, Any]:
        local = storage.DHTLocalStorage()
        done = []
        for step in steps:
            if step[0] == "store":
                _, value, expiration = step
                done.append(["store", value, expiration, local.store(key, dumps(value.split(" ")[0]), expiration)])
            else:
                _, subkey, value, expiration = step
                ok = local.store_subkey(key, subkey, dumps(value.split(" ")[0]), expiration)
                done.append(["store_subkey", subkey, value, expiration, ok])
        return done, local.get(key)

    def final(found) -> Any:
        if found is None:
            return None
        if isinstance(found.value, storage.DictionaryDHTValue):
            return {"dictionary": dictionary_json(hm, found.value), "outer_expiration": found.expiration_time}
        return {"regular": tagged_json.to_json(found.value), "expiration": found.expiration_time}

    cases = [
        ("regular store in the past is rejected", [("store", "v", NOW - 1)]),
        (
            "newer regular value replaces older; equal expiration is rejected",
            [
                ("store", "v1", NOW + 10),
                ("store", "v2", NOW + 20),
                ("store", "v3 same exp", NOW + 20),
                ("store", "v4 older", NOW + 15),
            ],
        ),
        (
            "subkey into empty key creates a dictionary; per-subkey newest-wins",
            [
                ("store_subkey", "a", "x1", NOW + 10),
                ("store_subkey", "b", "y1", NOW + 5),
                ("store_subkey", "a", "x0 older", NOW + 8),
                ("store_subkey", "b", "y2 newer", NOW + 30),
            ],
        ),
        (
            "subkey vs existing REGULAR value: replaces it only if newer than the regular value",
            [
                ("store", "r", NOW + 50),
                ("store_subkey", "a", "x older than r", NOW + 40),
                ("store_subkey", "a", "x newer than r", NOW + 60),
            ],
        ),
        (
            "REGULAR value vs existing dictionary: a regular value newer than the dictionary's latest expiration wipes "
            "the whole dictionary",
            [
                ("store_subkey", "a", "x", NOW + 10),
                ("store_subkey", "b", "y", NOW + 20),
                ("store", "r older than latest subkey", NOW + 15),
                ("store", "r newer", NOW + 25),
            ],
        ),
        (
            "expired subkey store is rejected even if the dictionary exists",
            [("store_subkey", "a", "x", NOW + 10), ("store_subkey", "b", "y expired", NOW - 1)],
        ),
    ]
    out = []
    clock = [NOW]
    with frozen_clock(timed_storage, clock):
        for description, steps in cases:
            done, found = run(list(steps))
            out.append({"description": description, "steps": done, "final": final(found), "produced_by": produced})
        out.extend(_eviction_quirks(hm, key, clock))
    return out


def _eviction_quirks(hm, key, clock: list[float]) -> list:
    """TimedStorage's heap bug: a rejected, older-but-unexpired store evicts the newer value at the older time."""
    _, _, serializer, storage, *_ = hm
    dumps = serializer.MSGPackSerializer.dumps
    produced = f"hivemind DHTLocalStorage with a stepped fake clock {HM}"
    clock[0] = NOW
    local = storage.DHTLocalStorage()
    new_ok = local.store(key, dumps("new"), NOW + 100)
    old_ok = local.store(key, dumps("old"), NOW + 50)
    clock[0] = NOW + 60
    regular = [["t", NOW], ["store", "new", NOW + 100, new_ok], ["store", "old", NOW + 50, old_ok], ["t", NOW + 60]]
    regular.append(["get", tagged_json.to_json(local.get(key))])

    clock[0] = NOW
    local = storage.DHTLocalStorage()
    new_ok = local.store_subkey(key, "a", dumps("new"), NOW + 100)
    old_ok = local.store_subkey(key, "a", dumps("old"), NOW + 50)
    clock[0] = NOW + 60
    outer = local.get(key)
    subkey = [
        ["t", NOW],
        ["store_subkey", "a", "new", NOW + 100, new_ok],
        ["store_subkey", "a", "old", NOW + 50, old_ok],
    ]
    subkey += [
        ["t", NOW + 60],
        [
            "outer get() still returns the dictionary; its unfrozen items() are",
            {k: v.value for k, v in outer.value.items()},
        ],
        [
            "what rpc_find would now send as FOUND_DICTIONARY value (hex)",
            serializer.MSGPackSerializer.dumps(outer.value).hex(),
        ],
    ]
    clock[0] = NOW
    return [
        {
            "description": "QUIRK: a rejected older-but-unexpired regular store makes the node drop the NEWER value at "
            "the rejected expiration time",
            "steps": regular,
            "produced_by": produced,
        },
        {
            "description": "QUIRK: same for a subkey inside a dictionary (the dictionary survives, the subkey "
            "vanishes early)",
            "steps": subkey,
            "produced_by": produced,
        },
    ]


def search_merge_section(hm) -> dict:
    _, routing, serializer, storage, timed_storage, node, _ = hm
    dumps = serializer.MSGPackSerializer.dumps
    key = routing.DHTID.generate(source="search-merge")

    def candidate(items) -> Any:
        value = storage.DictionaryDHTValue()
        for subkey, info, expiration in items:
            value.store(subkey, dumps(info), expiration)
        return value

    def run(sufficient: float) -> tuple[Any, bool, dict, dict]:
        first = candidate([("peerA", (2, 10.0, {}), NOW + 100), ("peerB", (2, 20.0, {}), NOW + 50)])
        second = candidate([("peerB", (2, 21.0, {}), NOW + 80), ("peerC", (1, 30.0, {}), NOW + 60)])
        as_json = dictionary_json(hm, first), dictionary_json(hm, second)
        state = node._SearchState(key, sufficient_expiration_time=sufficient, future=loop.create_future())
        finished_early = False
        for found in (second, first) if sufficient != float("inf") else (first, second):
            state.add_candidate(timed_storage.ValueWithExpiration(found, found.latest_expiration_time), None)
            finished_early = finished_early or state.finished
        state.finish_search()
        return state.future.result(), finished_early, *as_json

    loop = asyncio.new_event_loop()
    try:
        with frozen_clock(timed_storage, [NOW]):
            merged, _, first_json, second_json = run(float("inf"))
            early, finished_early, _, _ = run(NOW)
    finally:
        loop.close()
    return {
        "description": "two nodes return different dictionaries for the same key; with latest=True "
        "(sufficient_expiration_time=inf) they are merged subkey-by-subkey (newest expiration per subkey wins), and "
        "the outer expiration is the max seen",
        "candidate_from_node1": first_json,
        "candidate_from_node2": second_json,
        "note": "the merge mutates the DictionaryDHTValue object of the first candidate in place",
        "merged_result": _value_with_expiration(merged),
        "default_get_finishes_on_first_unexpired_candidate": finished_early,
        "default_get_result": _value_with_expiration(early),
        "produced_by": f"hivemind.dht.node._SearchState.add_candidate/finish_search, clock frozen at {NOW} {HM}",
    }


def _value_with_expiration(found) -> dict:
    value = found.value
    if isinstance(value, dict):
        value = {k: _value_with_expiration(v) for k, v in value.items()}
    else:
        value = tagged_json.to_json(value)
    return {"$ValueWithExpiration": {"value": value, "expiration_time": found.expiration_time}}


def signed_record_section(hm) -> dict:
    """Not deterministic: a fresh RSA key, and RSA-PSS salts are random."""
    _, routing, serializer, _, _, _, crypto = hm
    from hivemind.utils.crypto import RSAPrivateKey

    dumps = serializer.MSGPackSerializer.dumps
    validator = crypto.RSASignatureValidator(RSAPrivateKey())
    key = routing.DHTID.generate(source="signed-record").to_bytes()
    subkey = validator.local_public_key  # bytes: the marker is sent as msgpack bin
    plain = dumps({"step": 5})
    expiration = NOW + 60
    record = crypto.DHTRecord(key, dumps(subkey), plain, expiration)
    signed = validator.sign_value(record)
    signed_record = crypto.DHTRecord(key, dumps(subkey), signed, expiration)
    tampered = crypto.DHTRecord(key, dumps(subkey), signed.replace(b"\x05", b"\x06", 1), expiration)
    unprotected = crypto.DHTRecord(key, dumps("anyone"), plain, expiration)
    return {
        "description": "hivemind RSASignatureValidator: a protected record has '[owner:<ssh-rsa public key>]' inside "
        "its (serialized) subkey; the stored value is msgpack(value) followed by '[signature:<base64 RSA-PSS-SHA256 "
        "signature>]'",
        "subkey_python": subkey.decode(),
        "wire_subkey_hex": dumps(subkey).hex(),
        "plain_value_hex": plain.hex(),
        "signed_value_hex": signed.hex(),
        "signed_value_text_tail": signed[len(plain) :].decode(),
        "signed_payload": "MSGPackSerializer.dumps((key_bytes, subkey_bytes, value_bytes, expiration_time)) i.e. an "
        "ext-0x40 tuple of the DHTRecord fields, with value_bytes WITHOUT the signature",
        "validate_signed": validator.validate(signed_record),
        "validate_tampered": validator.validate(tampered),
        "validate_unprotected_record": validator.validate(unprotected),
        "strip_value_equals_plain": validator.strip_value(signed_record) == plain,
        "deterministic": False,
        "produced_by": "hivemind.dht.crypto.RSASignatureValidator.sign_value/validate/strip_value with a fresh "
        f"RSAPrivateKey {HM}",
    }


class _Sink(io.BytesIO):
    """An asyncio StreamWriter stand-in: hivemind's writers write into it and drain at once."""

    async def drain(self) -> None:
        return None


def _written(write: Callable[[Any, Any], Any], message: Any) -> bytes:
    """The bytes ``await write(stream, message)`` (one of hivemind's own stream writers) puts on a stream."""
    sink = _Sink()
    asyncio.run(write(sink, message))
    return sink.getvalue()


def stream_framing_section(hm) -> list:
    hivemind = hm[0]
    from hivemind.proto import runtime_pb2

    def framed(message) -> bytes:
        return _written(lambda sink, m: hivemind.p2p.P2P.send_protobuf(m, sink), message)

    produced = (
        f"hivemind.p2p.P2P.send_protobuf {HM} (used only by STREAMING handlers; the daemon relays these bytes "
        "verbatim over the libp2p stream)"
    )
    layout = "1-byte marker (00 = message, 01 = error/RPCError) | 8-byte big-endian length | protobuf"
    cases = [
        ("message frame", runtime_pb2.ExpertUID(uid=UIDS[0])),
        ("end-of-stream frame = ERROR marker + empty RPCError", hivemind.p2p.p2p_daemon.RPCError()),
        ("error frame", hivemind.p2p.p2p_daemon.RPCError(message="boom")),
    ]
    return [
        {"description": d, "bytes_hex": framed(m).hex(), "layout": layout, "produced_by": produced} for d, m in cases
    ]


def envelopes_section(hm, builtin: dict) -> list:
    """The unary-call envelopes around the first FIND of ``protobuf_builtin`` (taken from the committed file: this
    script does not make that section), written by hivemind's ``write_pbmsg`` with a fixed call id."""
    hivemind = hm[0]
    from hivemind.p2p.p2p_daemon_bindings.utils import write_pbmsg
    from hivemind.proto import p2pd_pb2

    find = builtin["steps"][0]["calls"][0]
    target = hivemind.p2p.PeerID.from_base58(builtin["nodes"]["SERVER"]["peer_id"]).to_bytes()
    call_id = bytes(range(16))

    def envelope(**fields: Any) -> str:
        return _written(write_pbmsg, p2pd_pb2.PersistentConnectionRequest(callId=call_id, **fields)).hex()

    def call(proto: str, data: bytes) -> str:
        return envelope(callUnary=p2pd_pb2.CallUnaryRequest(peer=target, proto=proto, data=data))

    misaligned = repr(AssertionError("DHTProtocol: response is not aligned with keys")).encode()
    return [
        {
            "description": "caller -> callee, first (and only) message on a fresh libp2p stream whose protocol id "
            "is 'DHTProtocol.rpc_find'",
            "bytes_hex": call("DHTProtocol.rpc_find", bytes.fromhex(find["request_hex"])),
            "layout": "uvarint(len) | PersistentConnectionRequest{1: callId (16-byte UUID), 3: CallUnaryRequest{1: "
            "peer (bytes), 2: proto (string), 3: data (= FindRequest bytes)}}",
            "call_id_hex": call_id.hex(),
            "peer_field": "hivemind's Python client puts the TARGET peer id here; the receiving daemon overwrites it "
            "with the caller's id before dispatch",
            "produced_by": f"hivemind p2pd_pb2 + hivemind.p2p.p2p_daemon_bindings.utils.write_pbmsg {HM}; data = "
            "first FindRequest in protobuf_builtin",
        },
        {
            "description": "callee -> caller: the reply (note: also a PersistentConnectionRequest, field 4 "
            "unaryResponse)",
            "bytes_hex": envelope(
                unaryResponse=p2pd_pb2.CallUnaryResponse(response=bytes.fromhex(find["response_hex"]))
            ),
            "layout": "uvarint(len) | PersistentConnectionRequest{1: callId, 4: CallUnaryResponse{1: response (= "
            "FindResponse bytes)}}",
            "produced_by": f"hivemind p2pd_pb2 + write_pbmsg {HM}",
        },
        {
            "description": "callee -> caller: handler raised; error = repr(exception) as UTF-8",
            "bytes_hex": envelope(unaryResponse=p2pd_pb2.CallUnaryResponse(error=misaligned)),
            "layout": "uvarint(len) | PersistentConnectionRequest{1: callId, 4: CallUnaryResponse{2: error}}",
            "produced_by": f"hivemind p2pd_pb2 + write_pbmsg {HM} (mirrors ControlClient._handle_persistent_request)",
        },
        {
            "description": "rpc_info call with an EMPTY ExpertUID: data is present but zero-length (proto2 required "
            "field must still be emitted: 1a 00)",
            "bytes_hex": call("TransformerConnectionHandler.rpc_info", b""),
            "produced_by": f"hivemind p2pd_pb2 + write_pbmsg {HM}",
        },
    ]


# name -> (builder, deterministic?); a builder returning a tuple fills several sections in order
SECTIONS: dict[tuple[str, ...], tuple[Callable[[Any], Any], bool]] = {
    ("dhtid", "dhtid_fixed_width", "xor_distance"): (dhtid_section, True),
    ("subkeys",): (subkeys_section, True),
    ("msgpack",): (msgpack_section, True),
    ("dictionary_dht_value",): (dictionary_dht_value_section, True),
    ("storage_rules",): (storage_rules_section, True),
    ("search_merge",): (search_merge_section, True),
    ("signed_record_example",): (signed_record_section, False),
    ("stream_framing",): (stream_framing_section, True),
}


def regenerate(hm, committed: dict) -> tuple[dict[str, Any], set[str]]:
    """Every section this script makes; ``committed`` supplies the recorded bytes some of them wrap."""
    made, random_sections = {}, set()
    for names, (build, deterministic) in SECTIONS.items():
        result = build(hm)
        values = result if len(names) > 1 else (result,)
        for name, value in zip(names, values, strict=True):
            made[name] = value
            if not deterministic:
                random_sections.add(name)
    made["envelopes"] = envelopes_section(hm, committed["protobuf_builtin"])
    return made, random_sections


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path or '/'}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path or '/'}: keys {list(a)} != {list(b)}"
        return next((d for k in a if (d := _first_difference(a[k], b[k], f"{path}/{k}"))), None)
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path or '/'}: {len(a)} items != {len(b)}"
        return next(
            (d for i, (x, y) in enumerate(zip(a, b, strict=True)) if (d := _first_difference(x, y, f"{path}[{i}]"))),
            None,
        )
    return None if a == b else f"{path}: {str(a)[:60]!r} != {str(b)[:60]!r}"


RANDOM_FIELDS = {"subkey_python", "wire_subkey_hex", "signed_value_hex", "signed_value_text_tail"}


def _same_but_random(a: dict, b: Any) -> bool:
    """Equal apart from the fields a fresh key and salt change (which must still be there, with the same type)."""
    if not isinstance(b, dict) or list(a) != list(b):
        return False
    return all(a[k] == b[k] if k not in RANDOM_FIELDS else type(a[k]) is type(b[k]) for k in a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite vectors.json with the regenerated sections")
    parser.add_argument(
        "--file", type=Path, default=HERE / "vectors.json", help="the vectors file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    committed = json.loads(args.file.read_text())
    made, random_sections = regenerate(_hivemind(), committed)
    failures = 0
    for name, value in made.items():
        difference = _first_difference(value, committed.get(name))
        if difference is None:
            print(f"{name}: identical")
        elif name in random_sections and _same_but_random(value, committed.get(name)):
            print(f"{name}: same structure, different random values (expected: fresh key, random salt)")
        else:
            failures += 1
            print(f"{name}: DIFFERS at {difference}")
    kept = [name for name in committed if name not in made]
    print(f"kept from the committed file (not regenerated here, see README.md): {', '.join(kept)}")
    if args.write:
        merged = {name: made.get(name, value) for name, value in committed.items()}
        args.file.write_text(json.dumps(merged, indent=1, ensure_ascii=True))
        print(f"wrote {args.file}")
    return 1 if failures and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
