"""monitor.geo: public address from peerstore multiaddrs, offline country/AS lookup, per-model breakdown."""

from __future__ import annotations

import socket

import pytest

from monitor.geo import (
    PRIVATE_LABEL,
    UNKNOWN_LABEL,
    GeoDatabase,
    Location,
    is_public_ip,
    locate,
    lookup_from_config,
    model_breakdown,
    public_address,
    with_address,
)
from monitor.snapshot import ModelInfo, ModelReport, Reachability, ServerInfo, ServerRow

T0 = 1_700_000_000.0
RELAY = "/ip4/8.8.8.8/tcp/4001/p2p/QmRelay/p2p-circuit"


@pytest.mark.parametrize(
    ("addrs", "expected"),
    [
        ([], (None, False)),
        (["/ip4/127.0.0.1/tcp/31337"], (None, True)),
        (["/ip4/10.0.0.5/tcp/1", "/ip4/192.168.1.2/tcp/1", "/ip6/::1/tcp/1"], (None, True)),
        (["/ip4/10.0.0.5/tcp/1", "/ip4/159.89.214.152/tcp/31337"], ("159.89.214.152", False)),
        (["/ip6/2001:4860:4860::8888/tcp/1"], ("2001:4860:4860::8888", False)),
        (["/ip6/fe80::1%eth0/tcp/1", "/ip6/::ffff:10.0.0.1/tcp/1"], (None, True)),
        ([RELAY], (None, False)),  # a circuit address names the relay, not the server
        (["/dns/example.com/tcp/1", "/ip4/not-an-ip/tcp/1", "garbage"], (None, False)),
        (["/ip4/100.64.0.1/tcp/1", "/ip4/224.0.0.1/tcp/1"], (None, True)),  # CGNAT, multicast
    ],
)
def test_public_address(addrs, expected):
    assert public_address(addrs) == expected


def test_is_public_ip():
    assert is_public_ip("1.1.1.1") and is_public_ip("::ffff:1.1.1.1")
    assert not any(is_public_ip(ip) for ip in ("127.0.0.1", "10.1.2.3", "169.254.1.1", "::1", "fc00::1", "x"))


def test_with_address_and_locate_with_a_fake_lookup():
    reach = Reachability("peer", ok=True, checked_at=T0)
    public = with_address(reach, ["/ip4/127.0.0.1/tcp/1", "/ip4/1.1.1.1/tcp/1"])
    private = with_address(reach, ["/ip4/127.0.0.1/tcp/1"])
    assert (public.public_ip, public.private_only) == ("1.1.1.1", False)
    assert (private.public_ip, private.private_only) == (None, True)
    calls: list[str] = []

    def fake(ip: str) -> Location | None:
        calls.append(ip)
        return Location("AU", "Australia", "CLOUDFLARENET")

    located = locate({"a": public, "b": private}, fake)
    assert calls == ["1.1.1.1"]  # never asked about a private address
    assert (located["a"].country, located["a"].asn) == ("AU", "CLOUDFLARENET")
    assert located["b"].country is None and located["b"].private_only
    assert locate({"a": public}, None)["a"].country is None


def test_disabled_in_config_means_no_lookup():
    from monitor.config import GeoConfig

    assert lookup_from_config(GeoConfig(enabled=False)) is None
    assert lookup_from_config(GeoConfig()) is not None


def test_the_shipped_database_answers_offline(monkeypatch):
    """The real data file: known public IPs get a country and an AS; nothing touches the network."""

    def no_network(*args, **kwargs):
        raise AssertionError("geo lookups must never use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "gethostbyaddr", no_network)
    db = GeoDatabase(asn=True)
    google = db.lookup("8.8.8.8")
    assert google is not None and google.country == "US" and google.asn and "GOOGLE" in google.asn.upper()
    assert db.lookup("2001:4860:4860::8888").country == "US"
    assert db.lookup("127.0.0.1") is None and db.lookup("10.0.0.1") is None and db.lookup("nonsense") is None
    assert "GeoLite2" in (db.source or "")


def _row(peer: str, reach: Reachability | None) -> ServerRow:
    return ServerRow(peer, "online", 0, 1, ServerInfo(state=2, throughput=1.0), T0, 60.0, reachability=reach)


def test_model_breakdown_counts_each_server_once():
    de = Reachability("a", ok=True, checked_at=T0, public_ip="1.2.3.4", country="DE", country_name="Germany", asn="X")
    de2 = Reachability("b", ok=True, checked_at=T0, public_ip="1.2.3.5", country="DE", country_name="Germany", asn="Y")
    local = Reachability("c", ok=True, checked_at=T0, private_only=True)
    rows = [_row("a", de), _row("a", de), _row("b", de2), _row("c", local), _row("d", None)]
    report = ModelReport(ModelInfo("m", 1), "healthy", rows, [])
    b = model_breakdown(report)
    assert b.total == 4 and b.located == 2
    assert b.countries == [("DE", "Germany", 2), (PRIVATE_LABEL, None, 1), (UNKNOWN_LABEL, None, 1)]
    assert b.asns == [("X", 1), ("Y", 1), (PRIVATE_LABEL, 1), (UNKNOWN_LABEL, 1)]
