"""Seed corpus for the fuzz targets, cut out of the byte-exact vectors real hivemind 1.1.12 produced.

``seeds(target)`` returns ``{name: bytes}`` in memory (the pytest replays use it); run as a script to write
them as files for atheris: ``python tests/fuzz/seeds.py tests/fuzz/corpus`` (one folder per target).
Each protobuf seed starts with the selector byte that routes it to the right parser (see ``targets``).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
VECTOR_FILES = ("vectors.json", "sim_trace.json", "live_trace.json")
TARGETS = ("envelope", "protobuf", "msgpack", "serverinfo")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")

# Which protobuf parser a call record's bytes go to: (handler, side) -> selector byte of targets.check_protobuf.
_PROTOBUF_SELECTORS = {
    ("DHTProtocol.rpc_ping", "response"): 0,
    ("DHTProtocol.rpc_store", "response"): 1,
    ("DHTProtocol.rpc_find", "response"): 2,
    ("DHTProtocol.rpc_ping", "request"): 3,
    ("DHTProtocol.rpc_store", "request"): 4,
    ("DHTProtocol.rpc_find", "request"): 5,
    ("TransformerConnectionHandler.rpc_info", "request"): 6,
    ("TransformerConnectionHandler.rpc_info", "response"): 7,
}
_CLIENT_SELECTOR = 8  # client.handle_response; the next byte picks ping / store / find
_CLIENT_KINDS = {"DHTProtocol.rpc_ping": 0, "DHTProtocol.rpc_store": 1, "DHTProtocol.rpc_find": 2}


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (path, key, value) below ``node``, with its parent dict for context."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}/{key}", node, value
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, f"{path}[]")


def _hex(value: Any) -> bytes | None:
    if isinstance(value, str) and _HEX.fullmatch(value):
        return bytes.fromhex(value)
    return None


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def _classify(path: str, parent: dict, raw: bytes) -> list[tuple[str, bytes]]:
    """The (target, seed) pairs one hex field feeds."""
    leaf = path.rsplit("/", 1)[-1]
    out: list[tuple[str, bytes]] = []
    if (
        leaf.endswith("_frame_hex")
        or leaf in ("response_bytes_hex", "request_bytes_hex")
        or (leaf == "bytes_hex" and ("/envelopes" in path or "/stream_framing" in path))
    ):
        out.append(("envelope", raw))
    handler = parent.get("handler") if isinstance(parent, dict) else None
    if leaf in ("request_hex", "response_hex") and handler:
        side = leaf.removesuffix("_hex")
        selector = _PROTOBUF_SELECTORS.get((handler, side))
        if selector is not None:
            out.append(("protobuf", bytes([selector]) + raw))
        if side == "response" and handler in _CLIENT_KINDS:
            out.append(("protobuf", bytes([_CLIENT_SELECTOR, _CLIENT_KINDS[handler]]) + raw))
    if leaf in ("hex", "value_hex", "packb_hex", "dumps_hex", "serialized_info_hex", "wire_subkey_hex") or leaf in (
        "plain_value_hex",
        "signed_value_hex",
        "$bytes",
    ):
        out.append(("msgpack", bytes([0]) + raw))
        if "/server_info" in path or "/model_info" in path or leaf == "$bytes" or leaf == "value_hex":
            out.append(("serverinfo", raw))
    return out


def seeds(target: str) -> dict[str, bytes]:
    """Distinct seeds for ``target``, named by a short hash of their bytes."""
    if target not in TARGETS:
        raise ValueError(f"unknown fuzz target {target!r}")
    found: dict[str, bytes] = {}
    for name in VECTOR_FILES:
        for path, parent, value in _walk(_load(name)):
            raw = _hex(value)
            if raw is None:
                continue
            for kind, seed in _classify(path, parent, raw):
                if kind == target:
                    found.setdefault(hashlib.sha1(seed).hexdigest()[:16], seed)
    return found


class EmptyCorpus(RuntimeError):
    """A target with no seeds would fuzz nothing (and a mutation pass over it would divide by zero)."""


def corpus(target: str) -> list[bytes]:
    """The seeds of ``target``; :class:`EmptyCorpus` names the target and where seeds come from if there are none."""
    blobs = list(seeds(target).values())
    if not blobs:
        files = ", ".join(VECTOR_FILES) or "no vector file"
        raise EmptyCorpus(
            f"fuzz target {target!r} has an empty seed corpus: nothing in {files} under {VECTORS} feeds it"
        )
    return blobs


def write_corpus(out_dir: Path) -> dict[str, int]:
    counts = {}
    for target in TARGETS:
        folder = out_dir / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, seed in seeds(target).items():
            (folder / name).write_bytes(seed)
        counts[target] = len(list(folder.iterdir()))
    return counts


if __name__ == "__main__":
    print(write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "corpus")))
