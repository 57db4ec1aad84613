"""monitor.rules.versions (parsing, outdated rule, counts) and monitor.rules.hints (problem → what to do); the crawler's
probe records where a server is."""

from __future__ import annotations

import dataclasses

import pytest

from dht._pb import runtime_pb2
from dht.errors import CallTimeout
from dht.serializer import dumps
from monitor.crawl.crawler import ReachabilityCache, probe
from monitor.rules.hints import MAX_PLAUSIBLE_TTL, block_ranges, invalid_for_peer, model_hints, server_hints
from monitor.rules.versions import NO_VERSION, count_versions, is_outdated, parse_version, version_counts
from monitor.snapshot import (
    BlockStat,
    CrawlStats,
    InvalidRecord,
    ModelInfo,
    ModelReport,
    Reachability,
    ServerInfo,
    ServerRow,
    Snapshot,
)

T0 = 1_700_000_000.0
PEER = "12D3KooW" + "P" * 44
OTHER = "12D3KooW" + "Q" * 44


# ---- versions


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [
        ("2.3.0", "2.2.0", False),
        ("2.2.0", "2.2.0", False),
        ("2.1.9", "2.2.0", True),
        ("2.2.0.dev3", "2.2.0", True),  # a pre-release of the minimum is older than it
        ("2.2.0.post1", "2.2.0", False),
        ("v2.10.0", "2.9", False),  # numeric, not lexicographic
        (None, "2.2.0", True),  # no version announced: Petals < 2.0
        ("<script>alert(1)</script>", "2.2.0", None),  # unreadable: never flagged
        ("2.0.1", "", None),  # no rule
        ("2.0.1", None, None),
    ],
)
def test_is_outdated(version, minimum, expected):
    assert is_outdated(version, minimum) is expected


def test_parse_version_is_tolerant():
    assert parse_version("2.3.0.dev2") < parse_version("2.3.0")
    assert parse_version("") is None and parse_version(42) is None and parse_version("x" * 100) is None


def _row(peer: str, version: str | None, **kw) -> ServerRow:
    info = ServerInfo(state=2, throughput=1.0, version=version, using_relay=kw.pop("using_relay", None))
    return ServerRow(peer, kw.pop("state", "online"), 0, 4, info, T0 + 60, kw.pop("ttl", 60.0), **kw)


def test_version_counts_count_each_peer_once_newest_first():
    rows = [_row(PEER, "2.3.0"), _row(OTHER, None), _row("12D3KooW" + "R" * 44, "2.0.1")]
    snap = Snapshot(
        "s",
        "succeeded",
        T0,
        T0,
        T0,
        [],
        [
            ModelReport(ModelInfo("a", 4), "healthy", rows, []),
            ModelReport(ModelInfo("b", 4), "healthy", [_row(PEER, "2.3.0")], []),
        ],
        [],
        CrawlStats(),
    )
    counts = version_counts(snap, "2.2.0")
    assert [(c.version, c.servers, c.outdated) for c in counts] == [
        ("2.3.0", 1, False),
        ("2.0.1", 1, True),
        (NO_VERSION, 1, True),
    ]
    # the rpc_info version stands in when the announcement has none
    probed = dataclasses.replace(_row(OTHER, None), reachability=Reachability(OTHER, True, T0, version="2.2.1"))
    snap.models[0].servers[1] = probed
    assert ("2.2.1", 1, False) in [(c.version, c.servers, c.outdated) for c in version_counts(snap, "2.2.0")]
    assert [c.version for c in count_versions(["junk", "1.0"], "2.0")] == ["1.0", "junk"]


# ---- hints


def test_block_ranges():
    assert block_ranges([5, 0, 1, 2, 7, 8]) == [(0, 3), (5, 6), (7, 9)]
    assert block_ranges([]) == []


def problems(hints) -> list[str]:
    return [h.problem for h in hints]


def test_a_healthy_server_has_no_hints():
    assert server_hints(_row(PEER, "2.3.0"), min_version="2.2.0") == []


def test_server_hints_for_each_problem():
    timeout = Reachability(PEER, False, T0, error="Failed to connect in 5 sec. Firewall may be blocking connections")
    unreachable = _row(PEER, "2.0.1", state="unreachable", reachability=timeout, using_relay=True)
    hints = server_hints(unreachable, min_version="2.2.0")
    assert problems(hints) == ["unreachable", "relay_only", "outdated"]
    assert "--port" in hints[0].hint and "Firewall" in hints[0].detail
    assert "pip install --upgrade petals" in hints[2].hint and "2.0.1" in hints[2].detail
    refused = dataclasses.replace(unreachable, reachability=Reachability(PEER, False, T0, error="connection refused"))
    assert "process is running" in server_hints(refused)[0].hint

    expired = _row(PEER, "2.3.0", state="expired", ttl=-300.0)
    (hint,) = server_hints(expired, min_version="2.2.0")
    assert hint.problem == "expired" and "5 min" in hint.detail and "NTP" in hint.hint

    ahead = _row(PEER, "2.3.0", ttl=MAX_PLAUSIBLE_TTL + 1)
    assert problems(server_hints(ahead)) == ["clock_skew"]

    invalid = [
        InvalidRecord("m.1", PEER, "schema", "bad"),
        InvalidRecord("m.2", PEER, "schema", "bad"),
        InvalidRecord("m.3", PEER, "throughput", "negative"),
        InvalidRecord("m.4", OTHER, "msgpack", "x"),
    ]
    mine = invalid_for_peer(invalid, PEER)
    hints = server_hints(_row(PEER, "2.3.0"), invalid=mine)
    assert problems(hints) == ["invalid_record.schema", "invalid_record.throughput"]
    assert hints[0].detail.startswith("2 invalid") and "throughput_" in hints[1].hint


def test_model_hints_name_the_blocks_and_the_command():
    blocks = [BlockStat(i, online=n) for i, n in enumerate([2, 2, 0, 0, 0, 1, 1, 2, 0])]
    timeout = Reachability(PEER, False, T0, error="Failed to connect in 5 sec.")
    rows = [_row(PEER, "2.0.1", state="unreachable", reachability=timeout), _row(OTHER, "2.3.0")]
    repo = "https://huggingface.co/org/model"
    report = ModelReport(ModelInfo("model-hf", 9, repo), "broken", rows, blocks)
    invalid = [InvalidRecord("model-hf.3", None, "msgpack", "x")]
    hints = model_hints(report, min_version="2.2.0", invalid=invalid)
    assert problems(hints) == ["no_server", "single_server", "invalid_record.msgpack", "unreachable", "outdated"]
    assert hints[0].detail == "blocks 2–4, 8 have no online server"
    assert "run_server org/model --block_indices 2:5" in hints[0].hint  # the widest hole
    assert "--block_indices 5:7" in hints[1].hint
    assert hints[3].detail.startswith("1 server: Failed to connect")
    assert all(set(h.document()) == {"problem", "detail", "hint"} for h in hints)
    assert problems(model_hints(report, min_redundancy=1))[:1] == ["no_server"]
    assert "single_server" not in problems(model_hints(report, min_redundancy=1))


# ---- the crawler's probe records where the server is


class _Host:
    def __init__(self, addrs: dict[str, list[str]]) -> None:
        self.addrs = addrs

    def known_addrs(self, peer_id: str) -> list[str]:
        return self.addrs.get(peer_id, [])


class _Client:
    def __init__(self, addrs: dict[str, list[str]]) -> None:
        self.host = _Host(addrs)

    async def rpc_info(self, peer_id: str, *, timeout: float) -> tuple[bytes, float]:
        if peer_id == OTHER:
            raise CallTimeout("slow")
        return runtime_pb2.ExpertInfo(serialized_info=dumps({"version": "2.3.0"})).SerializeToString(), 0.01


async def test_probe_records_the_public_address_from_the_peerstore():
    client = _Client({PEER: ["/ip4/127.0.0.1/tcp/1", "/ip4/1.1.1.1/tcp/31337"], OTHER: ["/ip4/127.0.0.1/tcp/2"]})
    results = await probe(client, [PEER, OTHER], timeout=1, concurrency=2, cache=ReachabilityCache(60))
    assert results[PEER].ok and results[PEER].public_ip == "1.1.1.1" and not results[PEER].private_only
    assert not results[OTHER].ok and results[OTHER].public_ip is None and results[OTHER].private_only
