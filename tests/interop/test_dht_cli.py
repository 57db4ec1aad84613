"""`python -m dht`: argument errors, safe output, and every command as a subprocess against real hivemind nodes."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from interop_fixtures import REPO, HivemindHarness, from_json, hivemind_harness, hivemind_swarm  # noqa: F401

from dht.cli import jsonable, parse_value, petals_server_info, sanitize

DEAD = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
SERVER = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
HOSTILE = "evil\x1b[31mred\x9b2J\u202egnp.exe\x07"


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dht", *args], cwd=REPO, capture_output=True, timeout=timeout, text=True
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# ------------------------------------------------------------------------------------------------ pure helpers


def test_sanitize_makes_escapes_and_controls_inert():
    text = sanitize(HOSTILE)
    assert all(ch not in text for ch in ("\x1b", "\x9b", "\u202e", "\x07"))
    assert "\\x1b[31m" in text and "evil" in text and "red" in text
    assert sanitize("plain naïve 日本 text\twith tab") == "plain naïve 日本 text\twith tab"
    assert "\x1b" not in sanitize("\x1b]0;title\x07 \x1bc")


def test_jsonable_hex_bytes_and_string_infinities():
    doc = jsonable({"a": b"\x01\xff", "b": (1, float("inf")), 3: float("-inf"), "n": float("nan")})
    assert doc == {"a": "01ff", "b": [1, "inf"], "3": "-inf", "n": "nan"}
    json.dumps(doc, allow_nan=False)  # raises if a non-finite float slipped through


def test_parse_value_json_else_string():
    assert parse_value('[1, {"x": 2.5}]') == [1, {"x": 2.5}]
    assert parse_value("42") == 42
    assert parse_value("hello world") == "hello world"


def test_petals_server_info_labels_only_the_petals_shape():
    info = petals_server_info((2, 10.0, {"start_block": 3, "end_block": 7, "public_name": "x", "other": 1}))
    assert info == {"state": "ONLINE", "throughput": 10.0, "start_block": 3, "end_block": 7, "public_name": "x"}
    assert petals_server_info((0, 1.5)) == {"state": "OFFLINE", "throughput": 1.5}
    assert petals_server_info((7, 1.0, {})) is None  # no such state
    assert petals_server_info([2, 1.0, {}]) is None  # a list, not a tuple
    assert petals_server_info(("2", 1.0, {})) is None


# ------------------------------------------------------------------------------------------------ argument errors


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["ping", "not-a-multiaddr"],
        ["ping", "/ip4/127.0.0.1/tcp/5"],  # no /p2p/<peer id>
        ["get", DEAD],  # no key
        ["store", DEAD, "k", "v", "--ttl", "-5"],
        ["store", DEAD, "k", "v", "--ttl", "inf"],
        ["ping", DEAD, "--timeout", "soon"],
        ["lookup", "somekey"],  # no --initial-peer
        ["sweep", "--initial-peer", "/ip4/1.2.3.4"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args):
    assert_one_line_error(run_cli(*args), 2)


def test_too_many_keys_exit_2():
    assert_one_line_error(run_cli("get", DEAD, *[f"k{i}" for i in range(1001)]), 2)


def test_unreachable_peer_exit_1_with_one_line():
    proc = run_cli("ping", DEAD, "--timeout", "3")
    assert_one_line_error(proc, 1)
    assert "DialFailed" in proc.stderr and "Connection refused" in proc.stderr  # a PeerUnreachable: nobody listens


def test_no_initial_peer_answers_exit_1():
    proc = run_cli("lookup", "--initial-peer", DEAD, "--rpc-timeout", "2", "somekey")
    assert_one_line_error(proc, 1)
    assert "no initial peer answered" in proc.stderr


# ------------------------------------------------------------------------------------------------ real hivemind


@pytest.fixture(scope="module")
def seeded(hivemind_swarm: HivemindHarness):  # noqa: F811
    """A Petals-style announcement with a hostile public_name and a plain value, stored by hivemind itself."""
    swarm = hivemind_swarm
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    now = swarm.call("time")
    info = {"$tuple": [2, 321.5, {"start_block": 0, "end_block": 4, "public_name": HOSTILE, "version": "2.3.0"}]}
    ok = swarm.call("store_many", name="a", keys=[f"{prefix}.0"], values=[info], subkeys=[SERVER],
                    expiration=now + 300)  # fmt: skip
    assert ok[0][2]
    assert swarm.call("store", name="a", key=f"{prefix}.plain", value={"$bytes": "00ff"}, expiration=now + 120)
    return prefix, now


@pytest.mark.interop
def test_ping_reports_node_id_skew_and_rtt(hivemind_swarm: HivemindHarness):  # noqa: F811
    node = hivemind_swarm.nodes["a"]
    proc = run_cli("ping", node.maddrs[0], "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["peer_id"] == node.peer_id
    assert doc["node_id"] == node.node_id.hex()
    assert 0 < doc["rtt"] < 5
    assert abs(doc["clock_skew"]) < 2  # same machine, same clock

    human = run_cli("ping", node.maddrs[0])
    assert human.returncode == 0, human.stderr
    assert node.node_id.hex() in human.stdout and "rtt" in human.stdout


@pytest.mark.interop
def test_get_decodes_labels_and_sanitizes(hivemind_swarm: HivemindHarness, seeded):  # noqa: F811
    prefix, _ = seeded
    node, other = hivemind_swarm.nodes["a"], hivemind_swarm.nodes["b"]
    keys = [f"{prefix}.0", f"{prefix}.plain", f"{prefix}.missing"]
    proc = run_cli("get", node.maddrs[0], *keys, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.isascii()
    doc = json.loads(proc.stdout)
    assert doc["node_id"] == node.node_id.hex()
    announced, plain, missing = doc["results"]
    theirs = hivemind_swarm.call("get", name="a", key=keys[0])
    (item,) = theirs["items"]
    (entry,) = announced["value"]["entries"]
    assert announced["value"]["type"] == "dictionary"
    assert entry["subkey"] == SERVER and entry["expiration"] == item["expiration"]
    assert 200 < entry["ttl"] <= 300
    assert entry["petals_server_info"] == {"state": "ONLINE", "throughput": 321.5, "start_block": 0,
                                           "end_block": 4, "public_name": HOSTILE, "version": "2.3.0"}  # fmt: skip
    assert entry["decoded"][2]["public_name"] == HOSTILE  # the JSON carries the exact value, escaped by JSON
    assert plain["value"]["type"] == "regular" and plain["value"]["decoded"] == "00ff"
    assert missing["value"] is None
    assert other.peer_id in {p["peer_id"] for p in missing["nearest"]}

    human = run_cli("get", node.maddrs[0], *keys)
    assert human.returncode == 0, human.stderr
    for bad in ("\x1b", "\x9b", "\u202e", "\x07"):
        assert bad not in human.stdout
    assert "Petals ServerInfo: state ONLINE  throughput 321.5  blocks [0, 4)" in human.stdout
    assert "not found" in human.stdout and other.peer_id in human.stdout


@pytest.mark.interop
def test_store_is_read_back_by_hivemind(hivemind_swarm: HivemindHarness, seeded):  # noqa: F811
    prefix, _ = seeded
    node = hivemind_swarm.nodes["a"]
    key = f"{prefix}.stored"
    proc = run_cli("store", node.maddrs[0], key, '[1, "two", {"three": 3.5}]', "--ttl", "90", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["stored"] is True
    theirs = hivemind_swarm.call("get", name="a", key=key)
    assert theirs["type"] == "regular" and from_json(theirs["value"]) == [1, "two", {"three": 3.5}]
    assert theirs["expiration"] == pytest.approx(doc["expiration"], abs=1e-3)

    sub = run_cli("store", node.maddrs[0], f"{key}.dict", "just text", "--subkey", "alice")
    assert sub.returncode == 0, sub.stderr
    theirs = hivemind_swarm.call("get", name="a", key=f"{key}.dict")
    assert theirs["type"] == "dictionary"
    assert [(i["subkey"], i["value"]) for i in theirs["items"]] == [("alice", "just text")]

    # An older value than the one held is refused: exit 1, one line.
    older = run_cli("store", node.maddrs[0], key, "older", "--ttl", "10")
    assert_one_line_error_stdout_allowed(older, 1)
    assert "refused" in older.stderr


def assert_one_line_error_stdout_allowed(proc: subprocess.CompletedProcess, code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.interop
def test_lookup_merges_across_the_swarm(hivemind_swarm: HivemindHarness, seeded):  # noqa: F811
    prefix, _ = seeded
    a, b = hivemind_swarm.nodes["a"], hivemind_swarm.nodes["b"]
    now = hivemind_swarm.call("time")
    key = f"{prefix}.0"
    # A second server announced through b: the merged dictionary must hold both entries.
    info = {"$tuple": [1, 5.0, {"start_block": 0, "end_block": 1}]}
    assert hivemind_swarm.call("store", name="b", key=key, value=info, subkey="second", expiration=now + 200)
    proc = run_cli("lookup", "--initial-peer", b.maddrs[0], key, f"{prefix}.missing", "--json", "--timeout", "20")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["complete"] is True and doc["contacted"] >= 2 and doc["failed"] == 0
    found, missing = doc["results"]
    subkeys = {e["subkey"]: e for e in found["value"]["entries"]}
    assert set(subkeys) == {SERVER, "second"}
    assert subkeys["second"]["petals_server_info"]["state"] == "JOINING"
    assert missing["value"] is None

    human = run_cli("lookup", "--initial-peer", a.maddrs[0], key)
    assert human.returncode == 0, human.stderr
    assert "\x1b" not in human.stdout and "DHT nodes contacted" in human.stdout


@pytest.mark.interop
def test_sweep_lists_every_node(hivemind_swarm: HivemindHarness):  # noqa: F811
    a, b = hivemind_swarm.nodes["a"], hivemind_swarm.nodes["b"]
    proc = run_cli("sweep", "--initial-peer", a.maddrs[0], "--json", "--timeout", "20")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    nodes = {n["peer_id"]: n for n in doc["nodes"] if n["ok"]}
    assert {a.peer_id, b.peer_id} <= set(nodes)
    assert nodes[a.peer_id]["node_id"] == a.node_id.hex() and nodes[b.peer_id]["node_id"] == b.node_id.hex()
    assert all(n["rtt"] > 0 for n in nodes.values())
