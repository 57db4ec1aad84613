"""Where servers are, without asking anyone: country and AS of a server's public IP from the offline database
that the ``geoip2fast`` package ships (MaxMind GeoLite2 country + ASN, IPv4 and IPv6). No network call, ever.

The address comes from the libp2p peerstore during the reachability probe (``public_address``): the first
public IPv4/IPv6 among the peer's known addresses. Circuit-relay addresses name the relay, not the server, and
DNS names would need a lookup, so both are skipped; private, loopback, link-local and other special ranges are
never treated as a location (the demo on 127.0.0.1 shows "private/loopback" instead of invented data).

The database (~110 MB of RAM with ASN, ~30 MB without) is loaded lazily, once per process, by the first
lookup; crawls judge on a worker thread, so that load never blocks the event loop.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from .snapshot import ModelReport, Reachability, ServerRow

log = logging.getLogger(__name__)

PRIVATE_LABEL = "private/loopback"
UNKNOWN_LABEL = "unknown"
DATA_FILE_ASN = "geoip2fast-asn-ipv6.dat.gz"  # country + ASN, IPv4 + IPv6
DATA_FILE_COUNTRY = "geoip2fast-ipv6.dat.gz"  # country only, IPv4 + IPv6
MAX_NAME = 80


@dataclass(frozen=True, slots=True)
class Location:
    country: str | None  # ISO 3166 alpha-2 code
    country_name: str | None
    asn: str | None  # the AS organisation name (the shipped data has names, not AS numbers)


Lookup = Callable[[str], Location | None]


def _ip_of(addr: str) -> str | None:
    """The IP literal of an ``/ip4/…`` or ``/ip6/…`` multiaddr, or None (DNS names, relays, junk)."""
    if "/p2p-circuit" in addr:
        return None
    parts = addr.split("/")
    if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
        return None
    try:
        return str(ipaddress.ip_address(parts[2].split("%")[0]))
    except ValueError:
        return None


def is_public_ip(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def public_address(addrs: Iterable[str]) -> tuple[str | None, bool]:
    """``(public ip or None, private_only)``: ``private_only`` when IP addresses were known but none was public."""
    seen_private = False
    for addr in addrs:
        ip = _ip_of(str(addr))
        if ip is None:
            continue
        if is_public_ip(ip):
            return ip, False
        seen_private = True
    return None, seen_private


def with_address(reach: Reachability, addrs: Iterable[str]) -> Reachability:
    ip, private_only = public_address(addrs)
    return replace(reach, public_ip=ip, private_only=private_only)


def locate(reachability: Mapping[str, Reachability], lookup: Lookup | None) -> dict[str, Reachability]:
    """Each probe result with the country/AS of its public IP (unchanged without a lookup or a public IP)."""
    if lookup is None:
        return dict(reachability)
    out: dict[str, Reachability] = {}
    for peer_id, reach in reachability.items():
        where = lookup(reach.public_ip) if reach.public_ip else None
        if where is not None:
            reach = replace(reach, country=where.country, country_name=where.country_name, asn=where.asn)
        out[peer_id] = reach
    return out


# ---- the offline database


class GeoDatabase:
    """geoip2fast behind a lock: loaded on first use, then cheap lookups (cached per IP by the library)."""

    def __init__(self, *, asn: bool = True) -> None:
        self.data_file = DATA_FILE_ASN if asn else DATA_FILE_COUNTRY
        self._lock = threading.Lock()
        self._db = None
        self._failed = False

    def _load(self):
        with self._lock:
            if self._db is None and not self._failed:
                try:
                    from geoip2fast import GeoIP2Fast

                    self._db = GeoIP2Fast(geoip2fast_data_file=self.data_file)
                    log.info("geo database loaded: %s", getattr(self._db, "source_info", self.data_file))
                except Exception as e:  # missing package or data file: locations stay unknown, crawls go on
                    self._failed = True
                    log.warning("geo lookups disabled: cannot load %s (%s)", self.data_file, e)
            return self._db

    @property
    def source(self) -> str | None:
        db = self._db
        return None if db is None else str(getattr(db, "source_info", "")) or None

    def lookup(self, ip: str) -> Location | None:
        if not is_public_ip(ip):
            return None
        db = self._load()
        if db is None:
            return None
        with self._lock:
            result = db.lookup(ip)
        code = getattr(result, "country_code", "") or ""
        if len(code) != 2 or not code.isalpha():  # "--" private, "" invalid, error codes
            return None
        asn = (getattr(result, "asn_name", "") or "")[:MAX_NAME] or None
        name = (getattr(result, "country_name", "") or "")[:MAX_NAME] or None
        return Location(country=code.upper(), country_name=name, asn=asn)


_shared: dict[bool, GeoDatabase] = {}
_shared_lock = threading.Lock()


def shared_database(*, asn: bool = True) -> GeoDatabase:
    """One database per process and flavour (geoip2fast keeps its tables in module globals anyway)."""
    with _shared_lock:
        if asn not in _shared:
            _shared[asn] = GeoDatabase(asn=asn)
        return _shared[asn]


def lookup_from_config(geo: object) -> Lookup | None:
    """The lookup to judge with, or None when ``[geo] enabled = false``."""
    if not getattr(geo, "enabled", False):
        return None
    return shared_database(asn=bool(getattr(geo, "asn", True))).lookup


# ---- per-model breakdown


@dataclass(frozen=True, slots=True)
class Breakdown:
    countries: list[tuple[str, str | None, int]]  # (code or label, country name, servers)
    asns: list[tuple[str, int]]  # (AS name or label, servers)
    located: int
    total: int


def server_place(reach: Reachability | None) -> tuple[str, str | None, str]:
    """``(country code or label, country name, AS or label)`` for one server row."""
    if reach is None:
        return UNKNOWN_LABEL, None, UNKNOWN_LABEL
    if reach.country:
        return reach.country, reach.country_name, reach.asn or UNKNOWN_LABEL
    if reach.private_only:
        return PRIVATE_LABEL, None, PRIVATE_LABEL
    return UNKNOWN_LABEL, None, UNKNOWN_LABEL


def model_breakdown(report: ModelReport) -> Breakdown:
    """Servers of a model per country and per AS (each server once), most servers first."""
    return servers_breakdown(report.servers)


def swarm_breakdown(models: Iterable[ModelReport]) -> Breakdown:
    """Servers of a whole swarm per country and per AS: a server that serves several models counts once."""
    return servers_breakdown(row for report in models for row in report.servers)


def servers_breakdown(rows: Iterable[ServerRow]) -> Breakdown:
    countries: Counter[str] = Counter()
    names: dict[str, str | None] = {}
    asns: Counter[str] = Counter()
    located = 0
    seen: set[str] = set()
    for row in rows:
        if row.peer_id in seen:
            continue
        seen.add(row.peer_id)
        country, name, asn = server_place(row.reachability)
        countries[country] += 1
        names.setdefault(country, name)
        asns[asn] += 1
        located += bool(row.reachability is not None and row.reachability.country)
    order = sorted(countries.items(), key=lambda kv: (-kv[1], kv[0]))
    return Breakdown(
        countries=[(code, names.get(code), n) for code, n in order],
        asns=sorted(asns.items(), key=lambda kv: (-kv[1], kv[0])),
        located=located,
        total=len(seen),
    )
