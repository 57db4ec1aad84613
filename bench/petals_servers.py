"""A seeded Petals-style swarm: ``python -m bench.petals_servers CONFIG.json`` (imports hivemind).

Joins the swarm whose bootstrap peers are ``initial_peers`` with:

- ``servers`` stand-ins for Petals servers: hivemind ``P2P`` instances (one p2pd each, libp2p DHT server mode,
  bootstrapped from the initial peers, so any node of the swarm can route to them) answering
  ``TransformerConnectionHandler.rpc_info`` as Petals does (``ExpertInfo(serialized_info=msgpack({...}))``);
- ``storers`` full hivemind DHT nodes that announce for them with hivemind's own ``DHTNode.store_many``: every
  block key of every model, subkey = the server's base58 peer id, value = Petals' ``ServerInfo.to_tuple()``,
  plus the ``_petals.models`` index. Server ``i`` is announced by storer ``i % storers``; one server in ten
  announces OFFLINE; the small model is served in spans by its first ``small_servers`` servers.

The announcements are built inside the DHT process (hivemind's ``run_coroutine`` pipe refuses large
arguments). Prints one JSON line (servers, storers, records stored), then waits for EOF on stdin and stops all.
"""

from __future__ import annotations

import asyncio
import json
import sys
from functools import partial
from typing import Any

RPC_INFO_FIELDS = {"version": "2.3.2", "dht_client_mode": False, "cache_tokens_available": 16384}
START_BATCH = 8  # daemons started at once (each one is a Go process booting)


def server_info(state: int, throughput: float, start: int, end: int, name: str) -> tuple:
    """Petals' ``ServerInfo.to_tuple()``: every extra field, in Petals' order, nil when unset."""
    extra = {
        "start_block": start,
        "end_block": end,
        "public_name": name,
        "version": RPC_INFO_FIELDS["version"],
        "network_rps": 950.5,
        "forward_rps": 4100.25,
        "inference_rps": 310.75,
        "adapters": (),
        "torch_dtype": "bfloat16",
        "quant_type": "nf4",
        "using_relay": False,
        "cache_tokens_left": 16384,
        "next_pings": None,
    }
    return (state, float(throughput), extra)


def announcements(spec: dict[str, Any], server_ids: list[str], storer: int) -> tuple[list, list, list]:
    """(keys, values, subkeys) that storer number ``storer`` writes."""
    keys, values, subkeys = [], [], []
    storers = spec["storers"]
    for i, peer in enumerate(server_ids):
        if i % storers != storer:
            continue
        state = 0 if i % 10 == 9 else 2
        for model in spec["models"]:
            info = server_info(state, 100.0 + i, 0, model["num_blocks"], f"server-{i}")
            for block in range(model["num_blocks"]):
                keys.append(f"{model['dht_prefix']}.{block}")
                values.append(info)
                subkeys.append(peer)
        small = spec["small"]
        if i < small["servers"]:
            start, end = small_span(i, small["num_blocks"])
            info = server_info(state, 50.0 + i, start, end, f"small-{i}")
            for block in range(start, end):
                keys.append(f"{small['dht_prefix']}.{block}")
                values.append(info)
                subkeys.append(peer)
    if storer == 0:
        for model in [*spec["models"], small]:
            repository = f"https://huggingface.co/bench/{model['dht_prefix']}"
            keys.append("_petals.models")
            values.append({"num_blocks": model["num_blocks"], "repository": repository})
            subkeys.append(model["dht_prefix"])
    return keys, values, subkeys


def small_span(i: int, num_blocks: int) -> tuple[int, int]:
    half = num_blocks // 2
    return ((0, half), (half, num_blocks), (0, num_blocks))[i % 3]


async def _announce(
    spec: dict[str, Any], server_ids: list[str], storer: int, expiration: float, _dht: Any, node: Any
) -> list[int]:
    """Runs inside the DHT process: build this storer's announcements there and store them in one call."""
    keys, values, subkeys = announcements(spec, server_ids, storer)
    status = await node.store_many(keys, values, expiration, subkeys=subkeys)
    ok = sum(1 for key, subkey in zip(keys, subkeys, strict=True) if status.get((key, subkey)))
    return [ok, len(keys)]


def listen_options(ports: list[int] | None) -> dict[str, Any]:
    """Where a node listens; behind a WAN relay (``[relay port, node port]``, see ``bench.wan_relay``) it
    listens on the node port and announces only the relay's, so every dial pays the relay's delay."""
    if not ports:
        return {"host_maddrs": ["/ip4/127.0.0.1/tcp/0"]}
    relay, node = ports
    return {"host_maddrs": [f"/ip4/127.0.0.1/tcp/{node}"], "announce_maddrs": [f"/ip4/127.0.0.1/tcp/{relay}"]}


async def _start_server(initial_peers: list[str], serialized: bytes, ports: list[int] | None = None) -> Any:
    from hivemind.p2p import P2P
    from hivemind.proto import runtime_pb2

    p2p = await P2P.create(initial_peers=initial_peers, **listen_options(ports))

    async def rpc_info(_request: Any, _context: Any) -> Any:
        return runtime_pb2.ExpertInfo(serialized_info=serialized)

    await p2p.add_protobuf_handler("TransformerConnectionHandler.rpc_info", rpc_info, runtime_pb2.ExpertUID)
    return p2p


async def _main(spec: dict[str, Any]) -> None:
    import hivemind
    from hivemind.utils import get_dht_time
    from hivemind.utils.serializer import MSGPackSerializer

    serialized = MSGPackSerializer.dumps(RPC_INFO_FIELDS)
    servers: list[Any] = []
    storers: list[Any] = []
    ports = spec.get("ports") or []  # WAN: [relay port, node port] per server, then per storer
    slot = lambda i: ports[i] if i < len(ports) else None  # noqa: E731
    try:
        for start in range(0, int(spec["servers"]), START_BATCH):
            n = min(START_BATCH, int(spec["servers"]) - start)
            servers += await asyncio.gather(
                *(_start_server(spec["initial_peers"], serialized, slot(start + i)) for i in range(n))
            )
        server_ids = [p2p.peer_id.to_base58() for p2p in servers]
        loop = asyncio.get_running_loop()
        for j in range(spec["storers"]):
            storers.append(await loop.run_in_executor(None, partial(
                hivemind.DHT, initial_peers=spec["initial_peers"], start=True,
                **listen_options(slot(int(spec["servers"]) + j)),
            )))  # fmt: skip
        expiration = get_dht_time() + float(spec["ttl"])
        stored, total = 0, 0
        for n, dht in enumerate(storers):
            call = partial(dht.run_coroutine, partial(_announce, spec, server_ids, n, expiration))
            ok, count = await loop.run_in_executor(None, call)
            stored, total = stored + ok, total + count
        report = {
            "servers": server_ids,
            "storers": [dht.peer_id.to_base58() for dht in storers],
            "stored": stored,
            "announced": total,
        }
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        await loop.run_in_executor(None, sys.stdin.read)  # until the orchestrator closes our stdin
    finally:
        for dht in storers:
            dht.shutdown()
        await asyncio.gather(*(p2p.shutdown() for p2p in servers), return_exceptions=True)


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    asyncio.run(_main(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
