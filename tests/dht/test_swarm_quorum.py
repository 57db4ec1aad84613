"""What two replicas of a key must share for a lookup's quorum to trust them (``dht.swarm.answer_fingerprint``)."""

from __future__ import annotations

from dht.swarm import answer_fingerprint, answers_agree
from dht.value import DHTValue, DictionaryValue


def _dictionary(entries: list[tuple[str, float]]) -> DictionaryValue:
    return DictionaryValue((subkey, DHTValue(b"info", expiration)) for subkey, expiration in entries)


def test_replicas_holding_the_same_entries_in_another_order_agree():
    a = _dictionary([("server-a", 100.0), ("server-b", 200.0)])
    b = _dictionary([("server-b", 200.0), ("server-a", 100.0)])
    assert answer_fingerprint(a) == answer_fingerprint(b)


def test_a_missing_entry_a_newer_record_or_no_value_is_a_different_answer():
    full = answer_fingerprint(_dictionary([("server-a", 100.0), ("server-b", 200.0)]))
    assert answer_fingerprint(_dictionary([("server-a", 100.0)])) != full  # a replica that missed a store
    assert answer_fingerprint(_dictionary([("server-a", 160.0), ("server-b", 200.0)])) != full  # re-announced
    assert answer_fingerprint(None) != full
    assert answer_fingerprint(DHTValue(b"x", 100.0)) != answer_fingerprint(DHTValue(b"x", 160.0))


def test_nearest_nodes_that_all_hold_nothing_do_not_agree():
    """Three times "nothing" is no quorum: newer or hostile nodes nearer a key than its holders would hide it."""
    nothing = answer_fingerprint(None)
    held = answer_fingerprint(_dictionary([("server-a", 100.0)]))
    assert not answers_agree({"a": nothing, "b": nothing, "c": nothing}, ["a", "b", "c"])
    assert answers_agree({"a": held, "b": held, "c": held}, ["a", "b", "c"])
    assert not answers_agree({"a": held, "b": held}, ["a", "b", "c"])  # "c" has not answered yet
    assert not answers_agree({"a": held, "b": held, "c": nothing}, ["a", "b", "c"])
