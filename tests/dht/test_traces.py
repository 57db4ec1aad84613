"""Every recorded call of the hivemind simulation (sim_trace.json) and of the live run on real p2pd daemons
(live_trace.json, plus vectors.json → live.selected_calls / sim.monitor_calls) decodes with our parsers,
and our builders reproduce every request and response byte for byte."""

from __future__ import annotations

from collections import Counter

import pytest
from dht_call_records import DHT_HANDLERS, check_call

from dht import protocol as p


def _check_all(calls) -> Counter:
    totals: Counter = Counter()
    for call in calls:
        totals.update(check_call(call))
        totals[call["handler"]] += 1
    return totals


def test_sim_trace(sim_trace):
    calls = [call for phase in sim_trace["phases"] for call in phase["calls"]]
    totals = _check_all(calls)
    assert totals[p.RPC_FIND] == 78 and totals[p.RPC_STORE] == 47
    assert totals["requests"] == totals["responses"] == len(calls) == 125
    assert totals["values"] == 92


def test_live_trace(live_trace):
    calls = [c for c in live_trace["calls"] if c["handler"] in (*DHT_HANDLERS, p.RPC_INFO)]
    skipped = {c["handler"] for c in live_trace["calls"]} - {*DHT_HANDLERS, p.RPC_INFO}
    assert skipped == {"SpyProtocol.rpc_fail"}  # the spy's own test handler, not a DHT call
    totals = _check_all(calls)
    assert totals[p.RPC_PING] == 12 and totals[p.RPC_FIND] == 64 and totals[p.RPC_STORE] == 44
    assert totals[p.RPC_INFO] == 4
    assert totals["responses"] == len(calls) - 2  # the two calls refused in protocol negotiation


@pytest.mark.parametrize("name", ["live", "sim"])
def test_calls_quoted_in_vectors(vectors, name):
    calls = list(vectors["live"]["selected_calls"].values()) if name == "live" else vectors["sim"]["monitor_calls"]
    totals = _check_all(calls)
    assert totals["requests"] == len(calls) > 0


def test_client_mode_callers_never_send_a_node_id(sim_trace, live_trace):
    client_mode = {"MONITOR(client_mode)", "SERVER_R(client_mode)", "SERVER_R"}
    calls = [c for ph in sim_trace["phases"] for c in ph["calls"]] + live_trace["calls"]
    seen = 0
    for call in calls:
        if call["caller"] in client_mode and call["handler"] in DHT_HANDLERS:
            parse = {
                p.RPC_PING: p.parse_ping_request,
                p.RPC_STORE: p.parse_store_request,
                p.RPC_FIND: p.parse_find_request,
            }[call["handler"]]
            assert parse(bytes.fromhex(call["request_hex"])).node_id == b""
            seen += 1
    assert seen > 50
