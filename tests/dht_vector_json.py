"""Turn the JSON conventions of vectors.json (``$bytes``, ``$tuple``, ``$float``, ...) into Python values."""

from __future__ import annotations

from typing import Any

from dht.value import DHTValue, DictionaryValue, ValueWithExpiration


class Repr(str):
    """A ``{"$repr": ...}`` placeholder: an object the vector generator could only describe."""


def from_json(obj: Any) -> Any:
    if isinstance(obj, list):
        return [from_json(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, inner),) = obj.items()
        if tag == "$bytes":
            return bytes.fromhex(inner)
        if tag == "$tuple":
            return tuple(from_json(x) for x in inner)
        if tag == "$float":
            return float(inner)
        if tag == "$map":
            return {from_json(k): from_json(v) for k, v in inner}
        if tag == "$repr":
            return Repr(inner)
        if tag == "$DHTID":
            return bytes.fromhex(inner)
        if tag == "$ValueWithExpiration":
            return ValueWithExpiration(from_json(inner["value"]), inner["expiration_time"])
        if tag == "$DictionaryDHTValue":
            return dictionary_from_json(inner)
    return {k: from_json(v) for k, v in obj.items()}


def dictionary_from_json(inner: dict) -> DictionaryValue:
    entries = [
        (from_json(item["subkey"]), DHTValue(from_json(item["value"]), item["expiration_time"]))
        for item in inner["items"]
    ]
    return DictionaryValue(
        entries, maxsize=from_json(inner["maxsize"]), latest_expiration=inner["latest_expiration_time"]
    )
