"""hivemind's side of a benchmark, in its own process: ``python -m bench.side_hivemind CONFIG.json``.

Imports hivemind (and so torch); never imports ``dht`` or ``monitor``. Modes (``config["mode"]``):

- ``get_many`` / ``lookup``: a client-mode ``hivemind.DHT`` bootstrapped from the initial peers, then one
  ``DHTNode.get_many(keys, sufficient_expiration_time=inf)`` - what ``DHT.get(key, latest=True)`` does, for all
  keys at once;
- ``crawl``: the method of health.petals.dev (``health.py``, ``p2p_utils.py``), reimplemented here without
  Petals: a client-mode DHT with 32 workers; connect-and-disconnect to each bootstrap peer (5 s); read
  ``_petals.models`` (latest); ONE ``get_many`` over every block key of every model (latest, ``num_workers =
  min(#keys, 32)`` as Petals' ``get_remote_module_infos``); decode ServerInfo tuples; Petals' ``compute_spans``
  per model (min state OFFLINE); ``rpc_info`` probes of every server whose span is ONLINE, all at once, each
  with a 5 s timeout; list the daemon's peers (health.petals.dev shows their addresses); build the per-model
  rows and block health;
- ``watch``: health.petals.dev's update loop over ``crawl`` (see :func:`watch`), for ``bench.freshness``.

Creating the DHT (starting p2pd, bootstrapping) is timed apart from the operation, like our side's setup. The
peak RSS is the sum of VmHWM over this process and its descendants (hivemind's DHT process and its p2pd),
read at the end of the operation; CPU is the same tree's utime+stime over the operation.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from functools import partial
from typing import Any

from bench.proctree import cpu_seconds, descendants, tree_peak_rss_kb

OFFLINE, JOINING, ONLINE = 0, 1, 2
RPC_INFO = "TransformerConnectionHandler.rpc_info"
RESULT_TIMEOUT = 300.0  # a DHT process that died leaves run_coroutine waiting forever


# ------------------------------------------------------------------------------------------------ Petals rules


def server_info_from_tuple(value: Any) -> dict[str, Any]:
    """Petals' ``ServerInfo.from_tuple``, reduced to what the health report needs; raises on a bad shape."""
    if not isinstance(value, tuple) or len(value) < 2:
        raise ValueError("not a ServerInfo tuple")
    state, throughput = value[0], value[1]
    extra = value[2] if len(value) > 2 else {}
    if state not in (OFFLINE, JOINING, ONLINE) or not isinstance(throughput, float) or not isinstance(extra, dict):
        raise ValueError("bad ServerInfo fields")
    return {"state": state, "throughput": throughput, **extra}


def compute_spans(infos: list[dict[str, dict[str, Any]]], min_state: int) -> dict[str, dict[str, Any]]:
    """Petals' span rule (PROTOCOL.md §6.6): per block, servers in PeerID order; a higher state starts a new
    span; announced start/end blocks win; an equal state extends the span."""
    spans: dict[str, dict[str, Any]] = {}
    num_blocks = len(infos)
    for block, servers in enumerate(infos):
        for peer_id in sorted(servers):
            info = servers[peer_id]
            if info["state"] < min_state:
                continue
            span = spans.get(peer_id)
            if span is None or span["state"] < info["state"]:
                start, end = block, block + 1
                if info.get("start_block") is not None and info.get("end_block") is not None:
                    start, end = max(info["start_block"], 0), min(info["end_block"], num_blocks)
                spans[peer_id] = {"start": start, "end": end, "state": info["state"], "info": info}
            elif span["state"] == info["state"]:
                span["end"] = max(span["end"], block + 1)
    return spans


# ------------------------------------------------------------------------------------------------ network parts


# hivemind's DHT process reads run_coroutine's arguments from a pipe that its event loop made non-blocking: a large
# argument (1000 keys) or result is sometimes cut with EAGAIN and the DHT process dies. So the key lists are put
# here BEFORE the DHT process is forked (it inherits them), and results are digested inside the DHT process. This
# spares hivemind the cost of shipping keys and values between its two processes: it favours hivemind's side.
_PRELOADED: dict[str, Any] = {}


async def _get_many_digest(_dht: Any, node: Any) -> dict[str, int]:
    return _digest(await node.get_many(_PRELOADED["keys"], float("inf")))


async def _fetch_spans(
    models: list[dict[str, Any]], uids: list[str] | None, num_workers: int, _dht: Any, node: Any
) -> tuple[dict[str, dict[str, dict[str, Any]]], int]:
    """Petals' ``get_remote_module_infos(uids, latest=True)`` then ``compute_spans`` per model, in the DHT process
    (see ``_PRELOADED``); returns the spans without their ServerInfo, and the number of valid records."""
    from hivemind.p2p import PeerID

    uids = _PRELOADED["uids"] if uids is None else uids
    found = await node.get_many(uids, float("inf"), num_workers=num_workers)
    module_infos: list[dict[str, dict[str, Any]]] = []
    records = 0
    for uid in uids:
        servers: dict[str, dict[str, Any]] = {}
        result = found.get(uid)
        if result is not None and isinstance(result.value, dict):
            for subkey, item in result.value.items():
                try:
                    PeerID.from_base58(subkey)
                    servers[subkey] = server_info_from_tuple(item.value)
                except Exception:
                    continue  # Petals skips a bad entry with a warning
                records += 1
        module_infos.append(servers)
    spans_by_model, offset = {}, 0
    for m in models:
        spans = compute_spans(module_infos[offset : offset + m["num_blocks"]], OFFLINE)
        without_info = {peer: {k: v for k, v in span.items() if k != "info"} for peer, span in spans.items()}
        spans_by_model[m["dht_prefix"]] = without_info
        offset += m["num_blocks"]
    return spans_by_model, records


async def _check_bootstrap(peer_ids: list[Any], timeout: float, _dht: Any, node: Any) -> dict[Any, bool]:
    async def one(peer_id: Any) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await node.p2p._client.connect(peer_id, [])
                await node.p2p._client.disconnect(peer_id)
            return True
        except Exception:
            return False

    return dict(zip(peer_ids, await asyncio.gather(*(one(p) for p in peer_ids)), strict=True))


# health.petals.dev's probe cache (``watch`` mode): every result, success or failure, is reused for ``cache_ttl``
# seconds, except the answer it reads as "joining". Lives in the DHT process, where _probe runs.
_REACH_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}


async def _probe(
    peer_ids: list[str], timeout: float, cache_ttl: float, _dht: Any, node: Any
) -> dict[str, dict[str, Any]]:
    from hivemind.p2p import PeerID
    from hivemind.proto import runtime_pb2
    from hivemind.utils.serializer import MSGPackSerializer

    async def one(peer_id: str) -> dict[str, Any]:
        hit = _REACH_CACHE.get(peer_id)
        if hit is not None and time.monotonic() < hit[0]:
            return hit[1]
        try:
            async with asyncio.timeout(timeout):
                response = await node.p2p.call_protobuf_handler(
                    PeerID.from_base58(peer_id), RPC_INFO, runtime_pb2.ExpertUID(), runtime_pb2.ExpertInfo
                )
            result = {"ok": True, **MSGPackSerializer.loads(response.serialized_info)}
        except Exception as e:  # health.petals.dev records the failure and moves on
            result = {"ok": False, "error": str(e) or repr(e)}
            if result["error"] == "protocol not supported":  # its "joining" answer: ok, and not cached
                return {"ok": True}
        if cache_ttl > 0:
            _REACH_CACHE[peer_id] = (time.monotonic() + cache_ttl, result)
        return result

    return dict(zip(peer_ids, await asyncio.gather(*(one(p) for p in peer_ids)), strict=True))


async def _list_peers(_dht: Any, node: Any) -> list[Any]:
    return await node.p2p.list_peers()


def crawl(dht: Any, config: dict[str, Any], *, probe_all: bool = False, cache_ttl: float = 0.0) -> dict[str, Any]:
    """One crawl; the digest also has each server's ``states`` (peer id -> state shown). ``probe_all`` and
    ``cache_ttl`` (``watch`` mode) are health.petals.dev's own: it probes every server found, whatever its state,
    and reuses each result for 300 s."""
    from hivemind.p2p import PeerID
    from multiaddr import Multiaddr

    probe_timeout = float(config.get("probe_timeout", 5.0))
    boot_ids = list(dict.fromkeys(PeerID.from_base58(Multiaddr(a)["p2p"]) for a in config["initial_peers"]))
    boot = dht.run_coroutine(partial(_check_bootstrap, boot_ids, probe_timeout))

    models = [dict(m) for m in config["models"]]
    index = dht.get("_petals.models", latest=True)
    if index is not None and isinstance(index.value, dict):
        known = {m["dht_prefix"] for m in models}
        for prefix, entry in index.value.items():
            value = entry.value
            repo = value.get("repository") if isinstance(value, dict) else None
            if prefix in known or not isinstance(repo, str) or not repo.startswith("https://huggingface.co/"):
                continue
            models.append({"dht_prefix": prefix, "num_blocks": int(value["num_blocks"])})

    uids = [f"{m['dht_prefix']}.{i}" for m in models for i in range(m["num_blocks"])]
    preloaded = None if uids == _PRELOADED.get("uids") else uids  # discovered models: pass them (small)
    fetch = partial(_fetch_spans, models, preloaded, min(len(uids), dht.num_workers))
    spans_by_model, records = dht.run_coroutine(fetch, return_future=True).result(timeout=RESULT_TIMEOUT)
    all_spans: dict[str, dict[str, Any]] = {}
    for spans in spans_by_model.values():
        all_spans.update(spans)
    to_probe = [peer for peer, span in all_spans.items() if probe_all or span["state"] == ONLINE]
    reach = dht.run_coroutine(partial(_probe, to_probe, probe_timeout, cache_ttl))
    peers = dht.run_coroutine(_list_peers)

    digest_models = {}
    states: dict[str, str] = {}
    for m in models:
        healthy = [False] * m["num_blocks"]
        rows = []
        for peer, span in sorted(spans_by_model[m["dht_prefix"]].items()):
            reachable = reach[peer]["ok"] if peer in reach else True
            state = ("offline", "joining", "online")[span["state"]]
            if state == "online" and not reachable:  # as health.petals.dev: only an online span shows unreachable
                state = "unreachable"
            if state == "online":
                for b in range(span["start"], span["end"]):
                    healthy[b] = True
            rows.append({"peer_id": peer, "state": state, "span": (span["start"], span["end"])})
            states[peer] = state
        digest_models[m["dht_prefix"]] = {
            "servers": len(rows),
            "online": sum(1 for r in rows if r["state"] == "online"),
            "blocks_covered": sum(healthy),
        }
    return {
        "status": "succeeded" if any(boot.values()) else "failed",
        "models": digest_models,
        "records": records,
        "probes": len(reach),
        "probes_ok": sum(1 for r in reach.values() if r["ok"]),
        "daemon_peers": len(peers),
        "states": states,
        "probe_errors": {peer: r["error"] for peer, r in reach.items() if not r["ok"]},
    }


# ------------------------------------------------------------------------------------------------ main

_RPCS = [0, 0]  # unary calls this side made: all (DHT RPCs and rpc_info), and rpc_info; in the DHT process
# How hivemind's own FINDs fared, in the DHT process: a FIND that fails (hivemind's wait_timeout, 3 s, cancels it:
# "timeout"; or an error) gets its node banned for 5 s and more (hivemind's Blacklist), and every FIND that
# get_many would send to a banned node is skipped. Those keys then finish with what the other nodes gave, or
# nothing: records lost on hivemind's side, not in the swarm. See find_failures().
_FINDS: dict[str, Any] = {"failed": {}, "keys_failed": 0, "slowest_failed": 0.0, "skipped_banned": 0, "keys_skipped": 0}
FIND = "DHTProtocol.rpc_find"


def _count_rpcs() -> None:
    """Count every unary call hivemind makes (its DHT stubs and our probes all go through this one method) and
    how its FINDs failed; patched before the DHT process forks, so the counts live there."""
    from hivemind.dht.node import DHTNode
    from hivemind.p2p import P2P

    original = P2P.call_protobuf_handler

    async def counted(self: Any, peer_id: Any, handle_name: str, *args: Any, **kwargs: Any) -> Any:
        _RPCS[0] += 1
        _RPCS[1] += handle_name == RPC_INFO
        if handle_name != FIND:
            return await original(self, peer_id, handle_name, *args, **kwargs)
        t0 = time.monotonic()
        try:
            return await original(self, peer_id, handle_name, *args, **kwargs)
        except BaseException as e:  # CancelledError: the stub's asyncio.wait_for(timeout=wait_timeout) cut it
            kind = "timeout" if isinstance(e, asyncio.CancelledError) else type(e).__name__
            _FINDS["failed"][kind] = _FINDS["failed"].get(kind, 0) + 1
            _FINDS["slowest_failed"] = max(_FINDS["slowest_failed"], time.monotonic() - t0)
            raise

    find_with_blacklist = DHTNode._call_find_with_blacklist

    async def watched(self: Any, peer_id: Any, keys: Any) -> Any:
        banned = peer_id in self.blacklist
        if banned:  # hivemind returns nothing for these keys from this node
            _FINDS["skipped_banned"] += 1
            _FINDS["keys_skipped"] += len(keys)
        response = await find_with_blacklist(self, peer_id, keys)
        if not banned and not response:  # the FIND failed (hivemind then bans the node): none of its keys came back
            _FINDS["keys_failed"] += len(keys)
        return response

    P2P.call_protobuf_handler = counted
    DHTNode._call_find_with_blacklist = watched


async def _rpcs_so_far(_dht: Any, _node: Any) -> list[int]:
    return list(_RPCS)


async def _finds_so_far(_dht: Any, _node: Any) -> dict[str, Any]:
    return {**_FINDS, "failed": dict(_FINDS["failed"])}


def find_failures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What hivemind's own FINDs lost between two readings of :func:`_finds_so_far`."""
    failed = {k: n - before["failed"].get(k, 0) for k, n in after["failed"].items()}
    return {
        "failed": {k: n for k, n in failed.items() if n},
        "keys_failed": after.get("keys_failed", 0) - before.get("keys_failed", 0),
        "slowest_failed": round(after["slowest_failed"], 3),
        "skipped_banned": after["skipped_banned"] - before["skipped_banned"],
        "keys_skipped": after["keys_skipped"] - before["keys_skipped"],
    }


def _digest(found: dict[Any, Any]) -> dict[str, int]:
    hits = [v for v in found.values() if v is not None]
    entries = 0
    for hit in hits:
        value = hit.value
        is_dict = isinstance(value, dict) and all(hasattr(v, "expiration_time") for v in value.values())
        entries += len(value) if is_dict else 1
    return {"keys_found": len(hits), "entries": entries}


def watch(dht: Any, config: dict[str, Any]) -> None:
    """``watch`` mode: health.petals.dev's update loop (``StateUpdaterThread``: crawl, then sleep what is left of
    ``interval``; probes of every server found, each result reused for ``cache_ttl`` s). Prints one JSON line per
    crawl, ``{"started", "finished", "states": {peer id: state}}``, until stdin closes or ``max_seconds`` pass."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), name="stdin-eof", daemon=True).start()
    interval, ttl = float(config["interval"]), float(config.get("cache_ttl", 300.0))
    deadline = time.monotonic() + float(config.get("max_seconds", 3600.0))
    while not stop.is_set() and time.monotonic() < deadline:
        t0, started = time.monotonic(), time.time()
        try:
            digest = crawl(dht, config, probe_all=True, cache_ttl=ttl)
            line = {"states": digest["states"], "probe_errors": digest["probe_errors"]}
        except Exception as e:  # the official loop logs the failure and tries again next period
            line = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps({"started": started, "finished": time.time(), **line}) + "\n")
        sys.stdout.flush()
        stop.wait(max(0.0, interval - (time.monotonic() - t0)))


def main() -> int:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    import hivemind
    from hivemind.dht.node import DEFAULT_NUM_WORKERS

    mode = config["mode"]
    if mode in ("crawl", "watch"):
        _PRELOADED["uids"] = [f"{m['dht_prefix']}.{i}" for m in config["models"] for i in range(m["num_blocks"])]
    else:
        _PRELOADED["keys"] = list(config["keys"])
    _count_rpcs()
    t_setup = time.perf_counter()
    dht = hivemind.DHT(
        initial_peers=config["initial_peers"],
        host_maddrs=["/ip4/127.0.0.1/tcp/0"],
        client_mode=True,
        start=True,
        num_workers=int(config.get("num_workers", 32 if mode in ("crawl", "watch") else DEFAULT_NUM_WORKERS)),
    )
    if mode == "watch":
        try:
            watch(dht, config)
        finally:
            dht.shutdown()
        return 0
    try:
        setup = time.perf_counter() - t_setup
        me = os.getpid()
        # the cold crawl's traffic includes the DHT's start-up (bootstrap, and p2pd's own kad walk, which dials
        # much of the swarm), although its time is counted apart as setup: it is the first crawl's load
        windows = {"cold": [time.time() - setup, 0.0]}
        finds0 = dht.run_coroutine(_finds_so_far)
        cpu0, t0 = cpu_seconds(descendants(me)), time.perf_counter()
        if mode in ("get_many", "lookup"):
            digest = dht.run_coroutine(_get_many_digest, return_future=True).result(timeout=RESULT_TIMEOUT)
        elif mode == "crawl":
            digest = crawl(dht, config)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        op_wall = time.perf_counter() - t0
        op_cpu = cpu_seconds(descendants(me)) - cpu0
        windows["cold"][1] = time.time()
        by_process = tree_peak_rss_kb(me)
        finds1 = dht.run_coroutine(_finds_so_far)
        digest["find_failures"] = find_failures(finds0, finds1)
        rpcs1 = dht.run_coroutine(_rpcs_so_far)
        digest["rpcs"], digest["probe_rpcs"] = rpcs1  # the DHT's start-up pings included, as the first crawl's
        if mode == "crawl" and config.get("repeat"):  # the next crawl of a long-running monitor
            windows["warm"] = [time.time(), 0.0]
            cpu1, t1 = cpu_seconds(descendants(me)), time.perf_counter()
            again = crawl(dht, config)
            digest["next_crawl"] = {"wall": time.perf_counter() - t1, "cpu": cpu_seconds(descendants(me)) - cpu1,
                                    "records": again["records"], "probes_ok": again["probes_ok"],
                                    "rpcs": dht.run_coroutine(_rpcs_so_far)[0] - rpcs1[0],
                                    "probe_rpcs": dht.run_coroutine(_rpcs_so_far)[1] - rpcs1[1],
                                    "find_failures": find_failures(finds1, dht.run_coroutine(_finds_so_far)),
                                    }  # fmt: skip
            windows["warm"][1] = time.time()
        digest["windows"] = windows
    finally:
        dht.shutdown()
    result = {
        "setup_wall": setup,
        "op_wall": op_wall,
        "op_cpu": op_cpu,
        "peak_rss_kb": sum(by_process.values()),
        "rss_by_process": by_process,
        "digest": digest,
        "num_workers": dht.num_workers,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
