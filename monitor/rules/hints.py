"""Fix-it hints: for each problem the monitor sees, a short concrete thing the server's operator can do.

Pure functions from judged data to :class:`Hint` lists: :func:`server_hints` for one server row (unreachable,
relay only, expired, invalid records by reason, outdated version, clock skew) and :func:`model_hints` for a
model (blocks nobody serves, blocks a single server holds, invalid records, and its servers' problems counted).
``detail`` quotes what we saw (network data: templates escape it); ``hint`` is our own text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..snapshot import InvalidRecord, ModelReport, ServerRow
from .versions import is_outdated, row_version

# Petals servers announce records that live ``max(2 * update_period, 60 s)`` (2 min by default); an expiration
# much further out than any sane setting means the server's clock runs ahead of the swarm's.
MAX_PLAUSIBLE_TTL = 1800.0
MAX_LISTED_RANGES = 6

INVALID_HINTS: dict[str, str] = {
    "msgpack": "The value is not valid MessagePack, so no Petals client can read it. Reinstall Petals from PyPI "
    "(pip install --force-reinstall petals) and restart the server.",
    "schema": "The ServerInfo has the wrong shape or field types, which modified or very old Petals versions send. "
    "Upgrade to a released Petals (pip install --upgrade petals) and restart.",
    "state": "The announced server state is not one Petals knows (offline/joining/online). Upgrade Petals and restart.",
    "throughput": "The announced throughput is not a usable number. Delete Petals' cached benchmark "
    "(~/.cache/petals/throughput_*.json) so it re-measures, or pass --throughput with a positive number.",
    "range": "A number in the ServerInfo is negative, not finite or out of range. Delete Petals' cached benchmark "
    "(~/.cache/petals/throughput_*.json) and restart, or set the values explicitly.",
    "span": "start_block must be below end_block. Check --block_indices (start:end, end exclusive) or --num_blocks.",
    "subkey": "The record is not signed by a PeerID, so it was not written by a Petals server. Ignore it unless it "
    "comes from a tool of yours, which should use the server's PeerID as the subkey.",
    "key": "The key is not <dht_prefix>.<block>. Only Petals servers should write under a model's keys.",
    "expired": "The record expired and was not refreshed: the server stopped announcing. If it still runs, check its "
    "logs for DHT errors, its network, and that its clock is synced (NTP).",
    "regular_value": "A plain value sits where Petals stores a dictionary of servers. Something other than Petals "
    "writes to this key; if it is yours, stop it.",
    "model_info": "The _petals.models entry is malformed. Check the model's config.json (num_hidden_layers) and the "
    "--repository given to the server.",
    "expiration": "The record claims to stay valid for more than a day (Petals announces ~2 minutes ahead), so it "
    "would outlive its server: it is ignored. Sync the server's clock (NTP) and run a released Petals; a record that "
    "never expires was not written by Petals.",
}


@dataclass(frozen=True, slots=True)
class Hint:
    problem: str  # a stable code: "unreachable", "invalid_record.schema", "no_server", ...
    detail: str  # what the monitor saw
    hint: str  # what the operator can do

    def document(self) -> dict[str, Any]:
        return {"problem": self.problem, "detail": self.detail, "hint": self.hint}


def block_ranges(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted block indices → ``[(start, end)]`` runs, end exclusive like Petals' ``--block_indices``."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1]:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a, b) for a, b in runs]


def _ranges_text(runs: Sequence[tuple[int, int]]) -> str:
    text = ", ".join(f"{a}" if b == a + 1 else f"{a}–{b - 1}" for a, b in runs[:MAX_LISTED_RANGES])
    return text + (", …" if len(runs) > MAX_LISTED_RANGES else "")


def _run_server(report: ModelReport, run: tuple[int, int]) -> str:
    repo = report.model.repository or ""
    name = repo.removeprefix("https://huggingface.co/") if repo.startswith("https://huggingface.co/") else None
    model = name or f"<model of {report.model.dht_prefix}>"
    return f"python -m petals.cli.run_server {model} --block_indices {run[0]}:{run[1]}"


def _is_timeout(error: str | None) -> bool:
    return bool(error) and ("Failed to connect in" in error or "timed out" in error.lower())  # type: ignore[union-attr]


# ---- one server


def server_hints(
    row: ServerRow, *, min_version: str | None = None, invalid: Iterable[InvalidRecord] = ()
) -> list[Hint]:
    """Problems of one server row, each with what to do. ``invalid``: records whose subkey is this peer."""
    hints: list[Hint] = []
    reach = row.reachability
    if row.state == "unreachable":
        error = (reach.error if reach else None) or "the reachability probe failed"
        if _is_timeout(error):
            text = (
                "Nothing answered in time: a firewall or NAT blocks inbound connections. Give the server a fixed "
                "port (--port N), forward/open TCP N, and if its public address is not detected set --public_ip; "
                "otherwise keep the relay on (Petals' default) so it is reachable through a circuit relay."
            )
        else:
            text = (
                "The connection failed. Check that the server process is running and that the addresses it "
                "announces (--announce_maddrs, --public_ip) are reachable from the Internet."
            )
        hints.append(Hint("unreachable", error, text))
    if row.info.using_relay:
        hints.append(
            Hint(
                "relay_only",
                "reachable only through a libp2p circuit relay",
                "Relayed traffic is slower and capped. Open a TCP port for the server (--port N plus port forwarding "
                "or a firewall rule) and set --public_ip if needed, so clients can dial it directly.",
            )
        )
    if row.state == "expired":
        hints.append(Hint("expired", f"its announcement expired {_ago(row.ttl)} ago", INVALID_HINTS["expired"]))
    elif row.ttl > MAX_PLAUSIBLE_TTL:
        hints.append(
            Hint(
                "clock_skew",
                f"its records expire {row.ttl:.0f} s from now (Petals announces ~120 s ahead)",
                "The server's clock is probably ahead of the swarm's. Sync it with NTP "
                "(e.g. timedatectl set-ntp true) and restart the server.",
            )
        )
    version = row_version(row)
    if is_outdated(version, min_version):
        hints.append(
            Hint(
                "outdated",
                f"runs Petals {version or 'older than 2.0 (no version announced)'}, older than {min_version}",
                "Upgrade with pip install --upgrade petals and restart the server.",
            )
        )
    reasons = Counter(r.reason for r in invalid if r.reason != "expired")
    for reason, count in sorted(reasons.items()):
        hints.append(
            Hint(
                f"invalid_record.{reason}",
                f"{count} invalid record(s) ({reason})",
                INVALID_HINTS.get(reason, "Upgrade Petals and restart the server."),
            )
        )
    return hints


def _ago(ttl: float) -> str:
    seconds = abs(ttl)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def invalid_for_peer(invalid: Iterable[InvalidRecord], peer_id: str) -> list[InvalidRecord]:
    return [r for r in invalid if r.subkey == peer_id]


# ---- one model


def model_hints(
    report: ModelReport,
    *,
    min_version: str | None = None,
    invalid: Iterable[InvalidRecord] = (),
    min_redundancy: int = 2,
) -> list[Hint]:
    """Problems of a model: holes, single-server blocks, invalid records, and its servers' problems by kind."""
    hints: list[Hint] = []
    holes = block_ranges(b.index for b in report.blocks if b.online == 0)
    if holes:
        hints.append(
            Hint(
                "no_server",
                f"blocks {_ranges_text(holes)} have no online server",
                "The model cannot run until every block is served. Start a server for the missing blocks, e.g. "
                + _run_server(report, max(holes, key=lambda r: r[1] - r[0])),
            )
        )
    single = block_ranges(b.index for b in report.blocks if b.online == 1)
    if single and min_redundancy > 1:
        hints.append(
            Hint(
                "single_server",
                f"blocks {_ranges_text(single)} are served by a single online server",
                "One restart there breaks the model. Add a server over those blocks, e.g. "
                + _run_server(report, max(single, key=lambda r: r[1] - r[0])),
            )
        )
    reasons = Counter(r.reason for r in invalid)
    for reason, count in sorted(reasons.items()):
        hints.append(
            Hint(
                f"invalid_record.{reason}",
                f"{count} invalid record(s) under this model's keys ({reason})",
                INVALID_HINTS.get(reason, "Upgrade Petals and restart the server."),
            )
        )
    per_problem: dict[str, list[Hint]] = {}
    for row in report.servers:
        for hint in server_hints(row, min_version=min_version):
            per_problem.setdefault(hint.problem, []).append(hint)
    for problem in ("unreachable", "relay_only", "expired", "clock_skew", "outdated"):
        found = per_problem.get(problem)
        if found:
            first = found[0].detail
            detail = f"1 server: {first}" if len(found) == 1 else f"{len(found)} servers, e.g. {first}"
            hints.append(Hint(problem, detail, found[0].hint))
    return hints
