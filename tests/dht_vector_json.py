"""Turn the JSON conventions of vectors.json (``$bytes``, ``$tuple``, ``$float``, ...) into Python values."""

from __future__ import annotations

from typing import Any

import tagged_json

from dht.value import DHTValue, DictionaryValue, ValueWithExpiration


class Repr(str):
    """A ``{"$repr": ...}`` placeholder: an object the vector generator could only describe."""


def from_json(obj: Any) -> Any:
    """The shared tagged JSON plus the vector generator's own tags ($repr, $DHTID, $ValueWithExpiration, ...)."""
    return tagged_json.from_json(obj, _VECTOR_TAGS)


def dictionary_from_json(inner: dict) -> DictionaryValue:
    entries = [
        (from_json(item["subkey"]), DHTValue(from_json(item["value"]), item["expiration_time"]))
        for item in inner["items"]
    ]
    return DictionaryValue(
        entries, maxsize=from_json(inner["maxsize"]), latest_expiration=inner["latest_expiration_time"]
    )


_VECTOR_TAGS = {
    "$repr": Repr,
    "$DHTID": bytes.fromhex,
    "$ValueWithExpiration": lambda inner: ValueWithExpiration(from_json(inner["value"]), inner["expiration_time"]),
    "$DictionaryDHTValue": lambda inner: dictionary_from_json(inner),
}
