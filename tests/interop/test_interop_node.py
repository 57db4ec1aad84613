"""Our DHTNode as a peer of REAL hivemind 1.1.12 nodes (subprocess harness, 127.0.0.1 only).

A fresh hivemind full node bootstraps from our node only (its validating ping makes us ping it back),
stores a Petals-style announcement, which lands in our storage, and reads it back with its own ``get``.
It also reads a record that only our node holds, so our FIND answer is what hivemind parses.
"""

from __future__ import annotations

import uuid

import pytest
import trio
from interop_fixtures import HivemindHarness, hivemind_harness  # noqa: F401 (fixture)

from dht.ids import DHTID
from dht.net.transport import open_host
from dht.node import DHTNode
from dht.serializer import dumps
from dht.storage import DictionaryItem

pytestmark = pytest.mark.interop

DEADLINE = 90.0  # hivemind node start (p2pd spawn) included


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_hivemind_node_bootstraps_from_us_stores_and_reads_back(hivemind_harness: HivemindHarness):  # noqa: F811
    harness = hivemind_harness
    name = unique("via-our-node")
    async with open_host(listen=True) as host, trio.open_nursery() as nursery:
        node = DHTNode()
        await nursery.start(node.serve, host)
        try:
            with trio.fail_after(DEADLINE):
                info = await harness.acall("start", name=name, initial_peers=host.listen_addrs, timeout=DEADLINE - 10)
                hivemind_node_id = bytes.fromhex(info["node_id"])
                # its validating ping and its bootstrap FIND put it into our table, under its real peer id
                assert node.routing.peer_id(hivemind_node_id) == info["peer_id"]
                table = await harness.acall("routing_table", name=name)
                assert {"node_id": node.node_id_bytes.hex(), "peer_id": host.peer_id} in table

                # a Petals announcement: block key, subkey = server peer id, value = ServerInfo tuple
                now = await harness.acall("time")
                block_uid = unique("Interop-model-hf") + ".0"
                server = "12D3KooWHv9JtiqVnSkzTu92nbFXsMvyDnbv6Vd3beJjEHuSVhxX"
                server_info = (2, 321.5, {"start_block": 0, "end_block": 8, "public_name": "interop"})
                stored = await harness.acall(
                    "store",
                    name=name,
                    key=block_uid,
                    value={"$tuple": [2, 321.5, {"start_block": 0, "end_block": 8, "public_name": "interop"}]},
                    expiration=now + 240,
                    subkey=server,
                )
                assert stored is True
                key = DHTID.from_key(block_uid).to_bytes()
                ours = node.storage.find(key, node.clock())
                assert isinstance(ours, DictionaryItem), "hivemind's store_many did not reach our node"
                assert [(e.subkey, e.value) for e in ours.entries] == [(dumps(server), dumps(server_info))]
                assert ours.expiration == pytest.approx(now + 240)

                got = await harness.acall("get", name=name, key=block_uid, latest=True)
                assert got["type"] == "dictionary"
                assert [item["subkey"] for item in got["items"]] == [server]
                assert got["items"][0]["value"] == {
                    "$tuple": [2, 321.5, {"start_block": 0, "end_block": 8, "public_name": "interop"}]
                }

                # a record only we hold: hivemind can only learn it from our FIND answer
                only_ours = unique("only-on-our-node")
                only_key = DHTID.from_key(only_ours).to_bytes()
                assert node.storage.storage.store(only_key, dumps("from us"), now + 120, node.clock())
                got = await harness.acall("get", name=name, key=only_ours, latest=True)
                assert got == {"type": "regular", "value": "from us", "expiration": pytest.approx(now + 120)}
        finally:
            with trio.move_on_after(20):
                await harness.acall("shutdown", name=name, timeout=15)
            nursery.cancel_scope.cancel()
