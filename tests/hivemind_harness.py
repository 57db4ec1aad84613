"""Drive real hivemind 1.1.12 DHT nodes for interop tests, one JSON line per command.

Run as a SUBPROCESS only (``.venv/bin/python tests/hivemind_harness.py``): hivemind's protobufs clash with
py-libp2p's in one interpreter, so the pytest process never imports hivemind. The fixtures in
``tests/interop_fixtures.py`` start this script and talk to it.

Protocol: each stdin line is ``{"id": int, "cmd": str, ...}``; each stdout line is
``{"id": int, "ok": true, "result": ...}`` or ``{"id": int, "ok": false, "error": str}``. Anything else the
libraries print goes to stderr (fd 1 is redirected there, so p2pd or a stray print cannot corrupt replies).

Values cross JSON in the tagged encoding of ``vectors.json``: ``{"$bytes": hex}``, ``{"$tuple": [...]}``,
``{"$float": "inf"|"-inf"|"nan"}``, ``{"$map": [[k, v], ...]}`` for maps whose keys are not all ``str``.

Commands (``name`` picks a node started earlier):
- ``start {name, initial_peers?: [maddr], initial_names?: [name], client_mode?: bool, host_maddrs?: [maddr],
  num_workers?: int, cache_nearest?: int, p2p_options?: {hivemind.P2P.create kwargs, e.g. use_auto_relay,
  force_reachability, trusted_relays}}`` → ``{name, peer_id, node_id (hex), maddrs}``
- ``info {name, latest?}`` → the same as ``start`` returned (``latest``: ask the daemon for fresh maddrs)
- ``store {name, key, value, expiration, subkey?}`` → bool (absolute ``expiration``, hivemind's DHT time)
- ``store_many {name, keys, values, expiration, subkeys?}`` → ``[[key, subkey|None, ok], ...]``
- ``get {name, key, latest?}`` → ``null`` | ``{"type": "regular", value, expiration}``
  | ``{"type": "dictionary", expiration, items: [{subkey, value, expiration}]}``
- ``get_many {name, keys, latest?}`` → ``[[key, result], ...]`` (result as in ``get``)
- ``routing_table {name}`` → ``[{node_id (hex), peer_id (base58)}, ...]`` (main entries and replacements)
- ``add_rpc_info {name, info}`` → serve ``TransformerConnectionHandler.rpc_info`` answering
  ``ExpertInfo(serialized_info=msgpack(info))``, like a Petals server (a stand-in: no torch model needed)
- ``rpc_info_calls {name}`` → how many ``rpc_info`` calls the stand-in served
- ``time`` → hivemind's ``get_dht_time()``
- ``shutdown {name}`` / ``exit``
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from functools import partial
from typing import Any

from tagged_json import from_json, to_json  # tests/ is sys.path[0] when run as a script

_PROTOCOL_OUT = None  # a private dup of the original stdout: the only place replies are written


# ---------------------------------------------------------------- JSON <-> Python values


def encode_result(result: Any) -> Any:
    """A ValueWithExpiration (or None) from ``DHT.get`` → JSON."""
    if result is None:
        return None
    value, expiration = result.value, result.expiration_time
    if isinstance(value, dict) and all(hasattr(v, "expiration_time") for v in value.values()):
        items = [
            {"subkey": to_json(sk), "value": to_json(v.value), "expiration": v.expiration_time}
            for sk, v in value.items()
        ]
        return {"type": "dictionary", "expiration": expiration, "items": items}
    return {"type": "regular", "value": to_json(value), "expiration": expiration}


# ---------------------------------------------------------------- code run inside a DHT process


async def _node_info(_dht, node, latest: bool = False) -> dict:
    maddrs = [str(m) for m in await node.get_visible_maddrs(latest=latest)]
    return {"peer_id": node.peer_id.to_base58(), "node_id": node.node_id.to_bytes().hex(), "maddrs": maddrs}


async def _routing_table(_dht, node) -> list[dict]:
    table = node.protocol.routing_table
    return [
        {"node_id": uid.to_bytes().hex(), "peer_id": peer_id.to_base58()}
        for uid, peer_id in table.uid_to_peer_id.items()
    ]


async def _store_many(keys, values, expiration, subkeys, _dht, node) -> list:
    status = await node.store_many(keys, values, expiration, subkeys=subkeys)
    out = []
    for key, subkey in zip(keys, subkeys, strict=True):
        out.append([key, subkey, bool(status.get((key, subkey) if subkey is not None else key))])
    return out


async def _get_many(keys, latest, _dht, node) -> dict:
    kwargs = {"sufficient_expiration_time": float("inf")} if latest else {}
    return await node.get_many(keys, **kwargs)


_RPC_INFO_CALLS = [0]


async def _serve_rpc_info(serialized_info: bytes, request, _context):
    from hivemind.proto import runtime_pb2

    _RPC_INFO_CALLS[0] += 1
    return runtime_pb2.ExpertInfo(serialized_info=serialized_info)


async def _add_rpc_info(serialized_info: bytes, _dht, node) -> bool:
    from hivemind.proto import runtime_pb2

    await node.p2p.add_protobuf_handler(
        "TransformerConnectionHandler.rpc_info",
        partial(_serve_rpc_info, serialized_info),
        runtime_pb2.ExpertUID,
    )
    return True


async def _rpc_info_calls(_dht, _node) -> int:
    return _RPC_INFO_CALLS[0]


# ---------------------------------------------------------------- the command loop


class Harness:
    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}
        self.infos: dict[str, dict] = {}

    def node(self, name: str):
        if name not in self.nodes:
            raise KeyError(f"no node named {name!r}")
        return self.nodes[name]

    def cmd_start(self, name: str, initial_peers=(), initial_names=(), client_mode=False, host_maddrs=None,
                  num_workers=4, cache_nearest=1, p2p_options=None) -> dict:  # fmt: skip
        import hivemind

        if name in self.nodes:
            raise ValueError(f"node {name!r} already started")
        peers = list(initial_peers)
        for other in initial_names:
            peers.extend(self.infos[other]["maddrs"])
        dht = hivemind.DHT(
            initial_peers=peers or None,
            client_mode=client_mode,
            host_maddrs=list(host_maddrs or ["/ip4/127.0.0.1/tcp/0"]),
            num_workers=num_workers,
            cache_nearest=cache_nearest,
            start=True,
            **(p2p_options or {}),
        )
        self.nodes[name] = dht
        info = {"name": name, **dht.run_coroutine(_node_info)}
        self.infos[name] = info
        return info

    def cmd_info(self, name: str, latest: bool = False) -> dict:
        if latest:  # ask the daemon again: relay addresses appear only after a reservation
            self.infos[name] = {"name": name, **self.node(name).run_coroutine(partial(_node_info, latest=True))}
        self.node(name)
        return self.infos[name]

    def cmd_store(self, name: str, key, value, expiration: float, subkey=None) -> bool:
        return bool(self.node(name).store(from_json(key), from_json(value), expiration, subkey=from_json(subkey)))

    def cmd_store_many(self, name: str, keys, values, expiration: float, subkeys=None) -> list:
        keys = [from_json(k) for k in keys]
        subkeys = [from_json(s) for s in subkeys] if subkeys is not None else [None] * len(keys)
        values = [from_json(v) for v in values]
        out = self.node(name).run_coroutine(partial(_store_many, keys, values, expiration, subkeys))
        return [[to_json(k), to_json(s), ok] for k, s, ok in out]

    def cmd_get(self, name: str, key, latest: bool = False):
        return encode_result(self.node(name).get(from_json(key), latest=latest))

    def cmd_get_many(self, name: str, keys, latest: bool = False) -> list:
        keys = [from_json(k) for k in keys]
        found = self.node(name).run_coroutine(partial(_get_many, keys, latest))
        return [[to_json(k), encode_result(found[k])] for k in keys]

    def cmd_routing_table(self, name: str) -> list:
        return self.node(name).run_coroutine(_routing_table)

    def cmd_add_rpc_info(self, name: str, info) -> bool:
        from hivemind.utils.serializer import MSGPackSerializer

        serialized = MSGPackSerializer.dumps(from_json(info))
        return self.node(name).run_coroutine(partial(_add_rpc_info, serialized))

    def cmd_rpc_info_calls(self, name: str) -> int:
        return self.node(name).run_coroutine(_rpc_info_calls)

    def cmd_time(self) -> float:
        from hivemind.utils import get_dht_time

        return get_dht_time()

    def cmd_shutdown(self, name: str) -> bool:
        dht = self.nodes.pop(name)
        self.infos.pop(name, None)
        dht.shutdown()
        dht.join(timeout=10)
        return True

    def shutdown_all(self) -> None:
        for name in list(self.nodes):
            try:
                self.cmd_shutdown(name)
            except Exception:  # keep going: every node must be asked to stop
                traceback.print_exc(file=sys.stderr)


def _reply(message: dict) -> None:
    _PROTOCOL_OUT.write(json.dumps(message) + "\n")
    _PROTOCOL_OUT.flush()


def main() -> int:
    global _PROTOCOL_OUT
    # Keep the real stdout for replies; everything else that writes to fd 1 lands in stderr.
    _PROTOCOL_OUT = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import signal

    harness = Harness()

    def _on_term(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _on_term)
    _reply({"id": 0, "ok": True, "result": "ready"})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            req_id = request.pop("id", None)
            cmd = request.pop("cmd")
            if cmd == "exit":
                harness.shutdown_all()
                _reply({"id": req_id, "ok": True, "result": True})
                return 0
            try:
                result = getattr(harness, f"cmd_{cmd}")(**request)
                _reply({"id": req_id, "ok": True, "result": result})
            except Exception as e:
                traceback.print_exc(file=sys.stderr)
                _reply({"id": req_id, "ok": False, "error": f"{type(e).__name__}: {e}"})
    finally:
        harness.shutdown_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
