"""The tagged JSON of the shared vectors and of the hivemind harness: ``$bytes``, ``$tuple``, ``$float``, ``$map``.

Plain stdlib on purpose: the hivemind harness (a separate process that imports hivemind) uses it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

TagDecoder = Callable[[Any], Any]


def to_json(obj: Any) -> Any:
    """Python value (as hivemind's msgpack decodes it) → tagged JSON."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    if isinstance(obj, bytes | bytearray):
        return {"$bytes": bytes(obj).hex()}
    if isinstance(obj, tuple):
        return {"$tuple": [to_json(x) for x in obj]}
    if isinstance(obj, list):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: to_json(v) for k, v in obj.items()}
        return {"$map": [[to_json(k), to_json(v)] for k, v in obj.items()]}
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def from_json(obj: Any, tags: Mapping[str, TagDecoder] | None = None) -> Any:
    """Tagged JSON → Python value. ``tags`` adds decoders for more tags (they get the tag's raw body)."""
    if isinstance(obj, list):
        return [from_json(x, tags) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, body),) = obj.items()
        if tag == "$bytes":
            return bytes.fromhex(body)
        if tag == "$tuple":
            return tuple(from_json(x, tags) for x in body)
        if tag == "$float":
            return float(body)
        if tag == "$map":
            return {from_json(k, tags): from_json(v, tags) for k, v in body}
        if tags and tag in tags:
            return tags[tag](body)
    return {k: from_json(v, tags) for k, v in obj.items()}
