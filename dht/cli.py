"""``python -m dht``: talk to a hivemind DHT from a terminal (ping, get, store, lookup, sweep).

Exit codes: 0 ok, 1 network or peer failure (including a store the peer refused), 2 bad arguments.
Errors are one line on stderr. ``--json`` prints one stable, ASCII-only document (bytes as hex, infinities as the
strings ``"inf"``/``"-inf"``). Every string that came from the network is made inert before it reaches a terminal:
control characters and escape sequences are shown escaped (``\\x1b``), never interpreted.

This module decodes Petals' ``ServerInfo`` only generically (a 3-tuple ``(state, throughput, extra)`` is labelled);
the full validation lives in the monitor, which this package never imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK, EXIT_NETWORK, EXIT_USAGE = 0, 1, 2
DEFAULT_TTL = 300.0
DEFAULT_RPC_TIMEOUT = 5.0
DEFAULT_SEARCH_TIMEOUT = 30.0
MAX_KEYS = 1000  # one FIND request carries at most this many keys (hivemind's own limit per request is lower)
PETALS_STATES = {0: "OFFLINE", 1: "JOINING", 2: "ONLINE"}
PETALS_EXTRA_LABELS = ("start_block", "end_block", "public_name", "version", "using_relay", "cache_tokens_left")

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


class UsageError(Exception):
    """Bad arguments: exit 2."""


class NetworkError(Exception):
    """The network or the peer failed us: exit 1."""


# ------------------------------------------------------------------------------------------------ safe text


def sanitize(text: str) -> str:
    """Make an untrusted string safe to print: escape sequences and control/format characters are shown escaped.

    ``"\\x1b[31mred"`` becomes ``"\\\\x1b[31mred"`` (visible, inert). Bidi overrides (U+202E...) count as format
    characters and are escaped too, so a value cannot reorder what the terminal shows.
    """
    text = _ANSI.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)
    out = []
    for ch in text:
        if ch in "\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii") if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def jsonable(obj: Any, depth: int = 0) -> Any:
    """A decoded msgpack value (or one of our results) → plain JSON: bytes as hex, tuples as lists,
    non-finite floats as strings, non-string map keys as their JSON text."""
    if depth > 64:
        return "…"
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, list | tuple):
        return [jsonable(x, depth + 1) for x in obj]
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else json.dumps(jsonable(k, depth + 1)): jsonable(v, depth + 1)
                for k, v in obj.items()}  # fmt: skip
    from .serializer import TensorDescriptor
    from .value import DictionaryValue

    if isinstance(obj, DictionaryValue):
        return {"$dictionary": [_entry(sk, v.payload, v.expiration, None) for sk, v in obj.items()]}
    if isinstance(obj, TensorDescriptor):
        return jsonable(obj.fields, depth + 1)
    return repr(obj)


def petals_server_info(decoded: Any) -> dict[str, Any] | None:
    """Label a value that looks like Petals' ``ServerInfo.to_tuple()``: ``(state, throughput[, extra])``.

    Generic and lenient on purpose (a display aid, not validation): None when the shape does not fit."""
    if not isinstance(decoded, tuple) or len(decoded) not in (2, 3):
        return None
    state, throughput = decoded[0], decoded[1]
    extra = decoded[2] if len(decoded) == 3 else {}
    if type(state) is not int or state not in PETALS_STATES or type(throughput) not in (int, float):
        return None
    if not isinstance(extra, dict):
        return None
    info: dict[str, Any] = {"state": PETALS_STATES[state], "throughput": jsonable(float(throughput))}
    for label in PETALS_EXTRA_LABELS:
        if label in extra:
            info[label] = jsonable(extra[label])
    return info


def _decode(payload: bytes) -> tuple[Any, str | None]:
    from .errors import DecodeError
    from .serializer import loads

    try:
        return loads(payload, allow_unknown_ext=True), None
    except DecodeError as e:
        return None, str(e)


def _entry(subkey: Any, payload: bytes, expiration: float, now: float | None) -> dict[str, Any]:
    decoded, error = _decode(payload)
    entry: dict[str, Any] = {}
    if subkey is not None:
        entry["subkey"] = jsonable(subkey)
    entry["expiration"] = jsonable(expiration)
    if now is not None:
        entry["ttl"] = jsonable(round(expiration - now, 3))
    entry["payload_hex"] = payload.hex()
    entry["decoded"] = jsonable(decoded) if error is None else None
    if error is not None:
        entry["decode_error"] = error
    petals = petals_server_info(decoded) if error is None else None
    if petals is not None:
        entry["petals_server_info"] = petals
    return entry


def describe_value(value: Any, now: float) -> dict[str, Any] | None:
    """A found :class:`DHTValue` / :class:`DictionaryValue` as a JSON-ready dict (None if not found)."""
    from .value import DictionaryValue

    if value is None:
        return None
    if isinstance(value, DictionaryValue):
        latest = value.latest_expiration
        return {
            "type": "dictionary",
            "expiration": jsonable(latest),
            "ttl": jsonable(round(latest - now, 3)),
            "entries": [_entry(sk, v.payload, v.expiration, now) for sk, v in value.items()],
        }
    return {"type": "regular", **_entry(None, value.payload, value.expiration, now)}


def parse_value(text: str) -> Any:
    """VALUE on the command line: JSON if it parses (lists stay lists), otherwise the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------------------------ output


class Output:
    """Human lines (sanitized) or one JSON document (ASCII, no NaN) on stdout."""

    def __init__(self, as_json: bool, stream: Any = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def line(self, text: str = "") -> None:
        if not self.as_json:
            self.stream.write(sanitize(text) + "\n")

    def document(self, doc: dict[str, Any]) -> None:
        if self.as_json:
            json.dump(doc, self.stream, indent=2, ensure_ascii=True, allow_nan=False)
            self.stream.write("\n")


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if not math.isfinite(seconds):
        return str(seconds)
    return f"{seconds * 1000:.1f} ms"


def _fmt_ttl(ttl: Any) -> str:
    return f"{ttl}" if isinstance(ttl, str) else f"{ttl:+.1f} s"


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _print_entry(out: Output, entry: dict[str, Any], indent: str) -> None:
    head = f"subkey {_short(entry['subkey'], 80)}  " if "subkey" in entry else ""
    out.line(f"{indent}{head}expires {entry['expiration']}  ttl {_fmt_ttl(entry['ttl'])}")
    petals = entry.get("petals_server_info")
    if petals is not None:
        span = f"[{petals.get('start_block')}, {petals.get('end_block')})"
        name = f"  public_name {_short(petals['public_name'], 60)}" if petals.get("public_name") else ""
        out.line(f"{indent}  Petals ServerInfo: state {petals['state']}  throughput {petals['throughput']}  "
                 f"blocks {span}{name}")  # fmt: skip
    if "decode_error" in entry:
        out.line(f"{indent}  undecodable ({entry['decode_error']}): {entry['payload_hex'][:120]}")
    else:
        out.line(f"{indent}  value {_short(entry['decoded'])}")


# ------------------------------------------------------------------------------------------------ commands


async def cmd_ping(args: argparse.Namespace, out: Output) -> int:
    from .net.transport import open_host
    from .swarm import SwarmClient

    async with open_host() as host:
        client = SwarmClient(host, timeout=args.rpc_timeout)
        peer_id = await _connect(client, args.multiaddr)
        sent = time.time()
        result, rtt = await _net(client.ping(peer_id), "ping")
        received = time.time()
    skew = result.dht_time - (sent + received) / 2 if result.dht_time else None
    doc = {
        "peer_id": peer_id,
        "node_id": result.node_id.hex() or None,
        "dht_time": jsonable(result.dht_time) if result.dht_time else None,
        "clock_skew": round(skew, 6) if skew is not None else None,
        "rtt": round(rtt, 6),
        "available": result.available,
    }
    out.document(doc)
    out.line(f"peer      {peer_id}")
    out.line(f"node id   {doc['node_id'] or '(not given: client mode)'}")
    out.line(f"dht time  {result.dht_time:.3f}" if result.dht_time else "dht time  (not given)")
    out.line(f"skew      {skew:+.3f} s (peer's clock minus ours)" if skew is not None else "skew      -")
    out.line(f"rtt       {_fmt_time(rtt)}")
    return EXIT_OK


async def cmd_get(args: argparse.Namespace, out: Output) -> int:
    from .net.transport import open_host, peer_id_from_bytes
    from .swarm import SwarmClient

    async with open_host() as host:
        client = SwarmClient(host, timeout=args.rpc_timeout)
        peer_id = await _connect(client, args.multiaddr)
        data = await _net(client.get_many(peer_id, args.keys), "find")
    now = time.time()
    results = []
    for key in dict.fromkeys(args.keys):
        found = data.results[key]
        nearest = []
        for node_id, raw_peer in found.nearest:
            try:
                pid = peer_id_from_bytes(raw_peer)
            except Exception:
                pid = None
            nearest.append({"node_id": node_id.hex(), "peer_id": pid, "peer_id_hex": raw_peer.hex()})
        row: dict[str, Any] = {"key": key, "key_id": found.key_id.hex(), "value": describe_value(found.value, now)}
        if found.error:
            row["error"] = found.error
        row["nearest"] = nearest
        results.append(row)
    out.document({"peer_id": peer_id, "node_id": data.node_id.hex() or None, "now": now, "results": results})
    out.line(f"peer {peer_id}  node id {data.node_id.hex() or '-'}")
    for row in results:
        out.line()
        out.line(f"key {row['key']}  (id {row['key_id']})")
        value = row["value"]
        if row.get("error"):
            out.line(f"  undecodable answer: {row['error']}")
        elif value is None:
            out.line("  not found")
        elif value["type"] == "regular":
            out.line("  regular value")
            _print_entry(out, value, "    ")
        else:
            n = len(value["entries"])
            out.line(f"  dictionary: {n} entr{'y' if n == 1 else 'ies'}, latest expiration {value['expiration']}  "
                     f"ttl {_fmt_ttl(value['ttl'])}")  # fmt: skip
            for entry in value["entries"]:
                _print_entry(out, entry, "    ")
        out.line(f"  nearest peers ({len(row['nearest'])}):")
        for near in row["nearest"]:
            out.line(f"    {near['node_id']}  {near['peer_id'] or 'invalid peer id ' + near['peer_id_hex']}")
    return EXIT_OK


async def cmd_store(args: argparse.Namespace, out: Output) -> int:
    from .net.transport import open_host
    from .swarm import SwarmClient
    from .value import DHTValueBuilder

    value = parse_value(args.value)
    try:
        builder = DHTValueBuilder.from_object(value)
    except (TypeError, ValueError) as e:
        raise UsageError(f"cannot serialize VALUE: {e}") from None
    async with open_host() as host:
        client = SwarmClient(host, timeout=args.rpc_timeout)
        peer_id = await _connect(client, args.multiaddr)
        expiration = time.time() + args.ttl
        stored = builder.expiration_time(expiration).build()
        result = await _net(client.store(peer_id, args.key, stored, args.subkey), "store")
    ok = result.all_stored
    out.document({"peer_id": peer_id, "key": args.key, "subkey": args.subkey, "value": jsonable(value),
                  "expiration": expiration, "stored": ok})  # fmt: skip
    target = f"{args.key!r}" + (f"[{args.subkey!r}]" if args.subkey is not None else "")
    if ok:
        out.line(f"stored {target} on {peer_id}, expires {expiration:.3f} (in {args.ttl:g} s)")
        return EXIT_OK
    out.line(f"NOT stored {target} on {peer_id}")
    print(f"error: {peer_id} refused the store (it may hold a newer value, or the TTL put it in the past)",
          file=sys.stderr)  # fmt: skip
    return EXIT_NETWORK


async def _bootstrapped(client: Any, peers: Sequence[str]) -> tuple[list[str], list[Any]]:
    boot = await client.bootstrap(list(peers), timeout=client.timeout)
    seeds = [r.peer_id for r in boot if r.ok and r.peer_id]
    if not seeds:
        errors = "; ".join(f"{r.address}: {r.error}" for r in boot)
        raise NetworkError(f"no initial peer answered ({errors})")
    return seeds, boot


def _visits(traversal: Any) -> dict[str, Any]:
    return {
        "complete": traversal.complete,
        "requests": traversal.requests,
        "contacted": len(traversal.contacted),
        "failed": len(traversal.failed),
    }


async def cmd_lookup(args: argparse.Namespace, out: Output) -> int:
    from .net.transport import open_host
    from .swarm import SwarmClient

    async with open_host() as host:
        client = SwarmClient(host, timeout=args.rpc_timeout)
        seeds, _boot = await _bootstrapped(client, args.initial_peer)
        lookup = await client.lookup(args.keys, seeds, timeout=args.timeout)
    now = time.time()
    results = []
    for key in dict.fromkeys(args.keys):
        row: dict[str, Any] = {"key": key, "value": describe_value(lookup.values.get(key), now)}
        if key in lookup.undecodable:
            row["undecodable_replicas"] = lookup.undecodable[key]
        results.append(row)
    stats = _visits(lookup.traversal)
    out.document({**stats, "now": now, "results": results})
    for row in results:
        value = row["value"]
        if value is None:
            out.line(f"{row['key']}: not found")
        elif value["type"] == "regular":
            out.line(f"{row['key']}: regular value")
            _print_entry(out, value, "  ")
        else:
            out.line(f"{row['key']}: dictionary, {len(value['entries'])} entries, ttl {_fmt_ttl(value['ttl'])}")
            for entry in value["entries"]:
                _print_entry(out, entry, "  ")
        for problem in row.get("undecodable_replicas", []):
            out.line(f"  undecodable replica: {problem}")
    out.line(f"{stats['contacted']} DHT nodes contacted, {stats['failed']} failed, {stats['requests']} requests"
             + ("" if stats["complete"] else f" (INCOMPLETE: cut at {args.timeout:g} s)"))  # fmt: skip
    return EXIT_OK


async def cmd_sweep(args: argparse.Namespace, out: Output) -> int:
    from .net.transport import open_host
    from .swarm import SwarmClient

    async with open_host() as host:
        client = SwarmClient(host, timeout=args.rpc_timeout)
        seeds, _boot = await _bootstrapped(client, args.initial_peer)
        traversal = await client.sweep(seeds, timeout=args.timeout)
    nodes = sorted(traversal.nodes.values(), key=lambda v: (not v.ok, v.latency or math.inf, v.peer_id))
    rows = [
        {"peer_id": v.peer_id, "node_id": v.node_id.hex() if v.node_id else None, "ok": v.ok,
         "rtt": round(v.latency, 6) if v.latency is not None else None, "error": v.error}
        for v in nodes if v.requests
    ]  # fmt: skip
    stats = _visits(traversal)
    out.document({**stats, "nodes": rows})
    for row in rows:
        status = _fmt_time(row["rtt"]) if row["ok"] else f"FAILED {row['error']}"
        out.line(f"{row['peer_id']}  {row['node_id'] or '-':40}  {status}")
    out.line(f"{stats['contacted']} reachable DHT nodes, {stats['failed']} failed"
             + ("" if stats["complete"] else f" (INCOMPLETE: cut at {args.timeout:g} s)"))  # fmt: skip
    return EXIT_OK


async def _connect(client: Any, multiaddr: str) -> str:
    return await _net(client.connect(multiaddr), f"connect to {multiaddr}")


async def _net(awaitable: Any, what: str) -> Any:
    from .errors import DHTError

    try:
        return await awaitable
    except DHTError as e:
        raise NetworkError(f"{what}: {type(e).__name__}: {e}") from None


# ------------------------------------------------------------------------------------------------ arguments


class _Parser(argparse.ArgumentParser):
    """argparse that prints one line and exits with 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {sanitize(message)}\n")


def _multiaddr(text: str) -> str:
    from .net.transport import split_p2p_addr

    try:
        split_p2p_addr(text)
    except Exception as e:
        raise argparse.ArgumentTypeError(f"not a /…/p2p/<peer id> multiaddr: {text!r} ({e})") from None
    return text


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number of seconds: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dht", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what py-libp2p and the client do (stderr)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, *, search: bool) -> None:
        p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
        if search:
            p.add_argument("--initial-peer", metavar="MULTIADDR", type=_multiaddr, action="append", required=True,
                           help="bootstrap peer (repeatable)")  # fmt: skip
            p.add_argument("--timeout", type=_positive, default=DEFAULT_SEARCH_TIMEOUT, metavar="S",
                           help=f"deadline of the whole search (default {DEFAULT_SEARCH_TIMEOUT:g})")  # fmt: skip
            p.add_argument("--rpc-timeout", type=_positive, default=DEFAULT_RPC_TIMEOUT, metavar="S",
                           help=f"deadline of each call (default {DEFAULT_RPC_TIMEOUT:g})")  # fmt: skip
        else:
            p.add_argument("--timeout", dest="rpc_timeout", type=_positive, default=DEFAULT_RPC_TIMEOUT,
                           metavar="S", help=f"deadline of each call (default {DEFAULT_RPC_TIMEOUT:g})")  # fmt: skip

    ping = sub.add_parser("ping", help="rpc_ping one peer: node id, DHT time, clock skew, round trip")
    ping.add_argument("multiaddr", type=_multiaddr, metavar="MULTIADDR")
    common(ping, search=False)

    get = sub.add_parser("get", help="one FIND to one peer: values, expirations, decoded values, nearest peers")
    get.add_argument("multiaddr", type=_multiaddr, metavar="MULTIADDR")
    get.add_argument("keys", nargs="+", metavar="KEY")
    common(get, search=False)

    store = sub.add_parser("store", help="store one value (or one dictionary entry) on one peer")
    store.add_argument("multiaddr", type=_multiaddr, metavar="MULTIADDR")
    store.add_argument("key", metavar="KEY")
    store.add_argument("value", metavar="VALUE", help="parsed as JSON if it is JSON, else stored as a string")
    store.add_argument("--subkey", metavar="S", help="store a dictionary entry under this subkey (a string)")
    store.add_argument("--ttl", type=_positive, default=DEFAULT_TTL, metavar="SECONDS",
                       help=f"expire this many seconds from now (default {DEFAULT_TTL:g})")  # fmt: skip
    common(store, search=False)

    lookup = sub.add_parser("lookup", help="iterative search across the swarm, replicas merged (latest=True)")
    lookup.add_argument("keys", nargs="+", metavar="KEY")
    common(lookup, search=True)

    sweep = sub.add_parser("sweep", help="list every reachable DHT node of the swarm")
    common(sweep, search=True)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace, Output], Any]] = {
    "ping": cmd_ping,
    "get": cmd_get,
    "store": cmd_store,
    "lookup": cmd_lookup,
    "sweep": cmd_sweep,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "keys", None) is not None and len(set(args.keys)) > MAX_KEYS:
        print(f"error: at most {MAX_KEYS} keys per call", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.verbose)
    import trio

    out = Output(args.json)
    command = COMMANDS[args.command]
    try:
        return trio.run(command, args, out)
    except BaseException as raised:  # one line, never a traceback (trio may wrap errors in exception groups)
        error = _first_leaf(raised)
        if isinstance(error, BrokenPipeError):
            return EXIT_OK
        if isinstance(error, KeyboardInterrupt):
            print("error: interrupted", file=sys.stderr)
            return 130
        if isinstance(error, SystemExit):
            raise
        if isinstance(error, UsageError):
            print(f"error: {sanitize(str(error))}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(error, NetworkError):
            print(f"error: {sanitize(str(error))}", file=sys.stderr)
        else:
            print(f"error: {type(error).__name__}: {sanitize(str(error))}", file=sys.stderr)
        return EXIT_NETWORK


def _setup_logging(verbose: bool) -> None:
    """Quiet unless ``--verbose``: py-libp2p logs dial failures at ERROR through its own non-propagating logger,
    which would otherwise reach stderr through logging's last-resort handler and break the one-line contract."""
    import libp2p  # noqa: F401  (its import configures the "libp2p" logger; adjust it afterwards)

    level = logging.DEBUG if verbose else logging.CRITICAL + 1
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    lp_logger = logging.getLogger("libp2p")
    lp_logger.setLevel(level)
    lp_logger.addHandler(logging.StreamHandler(sys.stderr) if verbose else logging.NullHandler())


def _first_leaf(error: BaseException) -> BaseException:
    """The most telling exception inside (nested) exception groups: ours first, then any other."""
    leaves: list[BaseException] = []
    stack = [error]
    while stack and len(leaves) < 100:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        else:
            leaves.append(e)
    for kind in (UsageError, NetworkError, KeyboardInterrupt):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else error


__all__ = ["build_parser", "describe_value", "jsonable", "main", "parse_value", "petals_server_info", "sanitize"]
