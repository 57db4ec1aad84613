"""dht.decode_memo: decoding byte-identical FIND dictionaries once changes no result and shares no state."""

from __future__ import annotations

import pytest

from dht.decode_memo import DictionaryMemo
from dht.errors import DecodeError
from dht.serializer import dumps, loads_dictionary
from dht.value import DHTValue, DictionaryValue


def _dictionary(n: int, tag: int = 0) -> bytes:
    value = DictionaryValue()
    for i in range(n):
        value.store(f"server-{tag}-{i}", DHTValue(bytes([i % 256]) * 200, 1.7e9 + i), None)
    return dumps(value)


def _view(value: DictionaryValue):
    return value.maxsize, value.latest_expiration, [(k, v.payload, v.expiration) for k, v in value.items()]


def test_a_repeat_is_a_hit_with_the_same_result():
    memo = DictionaryMemo()
    raw = _dictionary(60)
    first = memo.loads(raw)
    again = memo.loads(bytes(raw))  # another bytes object with the same content, as from another replica
    assert memo.hits == 1
    assert _view(first) == _view(again) == _view(loads_dictionary(raw))


def test_callers_get_their_own_dictionary():
    memo = DictionaryMemo()
    raw = _dictionary(3)
    first = memo.loads(raw)
    first.store("added", DHTValue(b"x", 2e9), None)
    again = memo.loads(raw)
    assert "added" not in dict(again.items())
    assert first is not again
    assert len(again) == 3


def test_undecodable_bytes_raise_every_time_and_are_not_remembered():
    memo = DictionaryMemo()
    for _ in range(2):
        with pytest.raises(DecodeError):
            memo.loads(b"\xc1")
    assert len(memo) == 0 and memo.hits == 0


def test_plain_values_pass_through_unremembered():
    memo = DictionaryMemo()
    assert memo.loads(dumps([1, 2])) == [1, 2]
    assert len(memo) == 0


def test_memory_is_bounded_by_the_bytes_remembered():
    raws = [_dictionary(10, tag) for tag in range(6)]
    memo = DictionaryMemo(max_bytes=len(raws[0]) * 3 + 10)
    for raw in raws:
        memo.loads(raw)
    assert len(memo) == 3  # the oldest were forgotten
    memo.loads(raws[0])
    assert memo.hits == 0
    memo.loads(raws[-1])
    assert memo.hits == 1


def test_an_input_larger_than_the_bound_is_decoded_but_not_kept():
    raw = _dictionary(20)
    memo = DictionaryMemo(max_bytes=len(raw) - 1)
    assert len(memo.loads(raw)) == 20
    assert len(memo) == 0


def test_clear_forgets_everything():
    memo = DictionaryMemo()
    memo.loads(_dictionary(2))
    memo.clear()
    assert len(memo) == 0
    memo.loads(_dictionary(2))
    assert memo.hits == 0


async def test_a_lookup_decodes_identical_replicas_once_and_forgets_them_after():
    import time

    import trio

    from dht.ids import dhtid_of
    from dht.net.transport import open_host
    from dht.node import DHTNode
    from dht.swarm import SwarmClient

    now = time.time()
    keys = [f"memo-model.{i}" for i in range(4)]
    nodes = [DHTNode(1), DHTNode(2)]
    for node in nodes:  # two replicas holding the same entries in the same order: the same bytes on the wire
        for key in keys:
            entries = [(dumps(f"server-{s}"), dumps(f"info-{s}"), now + 600) for s in range(5)]
            assert node.storage.storage.store_dictionary(dhtid_of(key), entries, now)
    with trio.fail_after(60):
        async with (
            open_host(listen=True) as a,
            open_host(listen=True) as b,
            open_host() as host,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(nodes[0].serve, a)
            await nursery.start(nodes[1].serve, b)
            client = SwarmClient(host, timeout=10)
            seeds = [await client.connect(s.listen_addrs[0]) for s in (a, b)]
            found = await client.lookup(keys, seeds)
            assert client._memo.hits >= len(keys)  # each key's second replica came from the memo
            assert len(client._memo) == 0  # and nothing is kept once the lookup is over
            for key in keys:
                assert {k: v.payload for k, v in found.values[key].items()} == {
                    f"server-{s}": dumps(f"info-{s}") for s in range(5)
                }
            nursery.cancel_scope.cancel()
