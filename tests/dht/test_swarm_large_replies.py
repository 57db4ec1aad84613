"""A FIND whose reply would pass the 4 MiB message limit is asked again in halves (large swarms need it)."""

from __future__ import annotations

import time

import trio

from dht.ids import dhtid_of
from dht.net.transport import open_host
from dht.node import DHTNode
from dht.serializer import dumps
from dht.swarm import SwarmClient
from dht.value import DHTValue

VALUE_BYTES = 300 * 1024  # 40 keys of 300 KiB: ~12 MiB in one reply, three times the limit


async def test_get_many_splits_a_reply_over_the_message_limit():
    now = time.time()
    keys = [f"big-model.{i}" for i in range(40)]
    node = DHTNode(1)
    for i, key in enumerate(keys):
        payload = dumps(bytes([i]) * VALUE_BYTES)
        assert node.storage.storage.store(dhtid_of(key), payload, now + 600, now)
    with trio.fail_after(60):
        async with open_host(listen=True) as server, open_host() as host, trio.open_nursery() as nursery:
            await nursery.start(node.serve, server)
            client = SwarmClient(host, timeout=20)
            peer = await client.connect(server.listen_addrs[0])
            found = await client.get_many(peer, keys)
            assert set(found.results) == set(keys)
            for i, key in enumerate(keys):
                value = found.results[key].value
                assert isinstance(value, DHTValue) and value.payload == dumps(bytes([i]) * VALUE_BYTES)
            first_rpcs = client.rpcs
            assert first_rpcs > 3  # one refused 40-key FIND, then halves until each fits
            # the size that fits is remembered for this peer: the next FIND starts there, without refusals
            await client.get_many(peer, keys)
            assert client.rpcs - first_rpcs == len(keys) // client._reply_limits[peer]
            nursery.cancel_scope.cancel()
