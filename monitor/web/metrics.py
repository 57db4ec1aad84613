"""Prometheus metrics (``/metrics``): health.petals.dev's set with ``petals_`` names, HELP/TYPE, plus crawl health
and the live-event stream's own (``petals_events_*``).

Each app has its own :class:`CollectorRegistry` (never the global one). The collector reads the swarm views the
handler loaded just before; that text is cached per (swarm, crawl id) tuple like the state document. The event
stream's numbers move between crawls, so they are written per scrape (a few lines) and appended: keying the cache
on them would fill it with one entry per scrape. Every metric is listed in deploy/README.md (a test checks).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..alerts.rules import ActiveAlert, Severity
from ..rules.route import SESSION_TOKENS, plan_route
from ..rules.vantages import VantageVerdicts, summarize_vantages
from ..snapshot import SERVER_STATES, ModelReport
from . import queries
from .context import CTX
from .documents import Document, document_response, make_document
from .events import HubStats

PING_PERCENTILES = (25, 50, 75, 90, 95)
RPS_KINDS = ("network", "inference", "forward")
# health.petals.dev's metric names (its metrics.py): with ``[web] official_metric_names`` they are exported a
# second time under these names, without our prefix and without the ``swarm`` label, for one swarm.
OFFICIAL_NAMES = (
    "update_duration",
    "peers_per_srv",
    "pings_inf_share",
    "servers_num_total",
    "servers_num_relay",
    "ping_pct",
    "server_version",
    "n_blocks",
    "servers_num",
    "blocks_total",
    "blocks_online_min",
    "blocks",
    "rps_avg",
    "rps_min",
)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on already sorted values."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * pct / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _rps_per_block(report: ModelReport, kind: str) -> list[float]:
    blocks = [0.0] * report.model.num_blocks
    for row in report.servers:
        value = getattr(row.info, f"{kind}_rps")
        if row.state != "online" or value is None or not math.isfinite(value):
            continue
        for i in range(max(row.start, 0), min(row.end, len(blocks))):
            blocks[i] += value
    return blocks


class EventStreamCollector(Collector):
    """The live-event stream (``/api/v1/events``) of this web process, from one :class:`HubStats`: no ``swarm``
    label, one hub per process."""

    def __init__(self, stats: HubStats) -> None:
        self.stats = stats

    def collect(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        return event_stream_families(self.stats)


def event_stream_families(stats: HubStats) -> list[GaugeMetricFamily | CounterMetricFamily]:
    clients = GaugeMetricFamily("petals_events_clients", "Live-event streams (/api/v1/events) open now")
    clients.add_metric([], stats.clients)
    limit = GaugeMetricFamily("petals_events_max_clients", "Live-event streams allowed at once (events_max_clients)")
    limit.add_metric([], stats.max_clients)
    published = CounterMetricFamily("petals_events_published", "Live events published (crawls stored, alert changes)")
    published.add_metric([], stats.published)
    dropped = CounterMetricFamily(
        "petals_events_clients_dropped", "Live-event streams ended for falling behind (frames waiting over the limit)"
    )
    dropped.add_metric([], stats.clients_dropped)
    frames = CounterMetricFamily(
        "petals_events_frames_dropped", "Live-event frames never delivered: what streams held when dropped as slow"
    )
    frames.add_metric([], stats.frames_dropped)
    refused = CounterMetricFamily(
        "petals_events_clients_refused",
        "Live-event streams refused, by reason (max_clients: 503, per_client: 429, shutting_down)",
        labels=["reason"],
    )
    for reason, count in stats.refused:
        refused.add_metric([reason], count)
    return [clients, limit, published, dropped, frames, refused]


def official_families(families: dict[str, GaugeMetricFamily], swarm: str) -> list[GaugeMetricFamily]:
    """``families`` (keyed by unprefixed name) of ``swarm`` under health.petals.dev's names: same samples and
    labels, minus ``swarm``."""
    out = []
    for name in OFFICIAL_NAMES:
        ours = families[name]
        family = GaugeMetricFamily(name, ours.documentation + " (health.petals.dev's name)", labels=[])
        for sample in ours.samples:
            if sample.labels.get("swarm") != swarm:
                continue
            labels = {k: v for k, v in sample.labels.items() if k != "swarm"}
            family.samples.append(sample._replace(name=name, labels=labels))
        out.append(family)
    return out


class SwarmCollector(Collector):
    """Yields metric families for the views set by :meth:`update` (called by the handler under a lock), and with
    ``official_swarm`` that swarm's share of them under health.petals.dev's names too."""

    def __init__(self, official_swarm: str | None = None, session_tokens: int = SESSION_TOKENS) -> None:
        self.official_swarm = official_swarm
        self.session_tokens = session_tokens
        self.views: list[queries.SwarmView] = []
        self.firing: list[ActiveAlert] = []
        self.now = 0.0

    def update(self, views: list[queries.SwarmView], now: float, firing: Sequence[ActiveAlert] = ()) -> None:
        self.views, self.now, self.firing = views, now, list(firing)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = {}

        def gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
            if name not in g:
                g[name] = GaugeMetricFamily(f"petals_{name}", doc, labels=list(labels))
            return g[name]

        s, sm = ("swarm",), ("swarm", "model")
        gauge("crawl_duration_seconds", "Duration of the last crawl (any status)", s)
        gauge("last_crawl_timestamp_seconds", "Start time of the last crawl", s)
        gauge("last_crawl_success", "1 if the last crawl succeeded, 0 if it failed or is running", s)
        gauge("last_success_timestamp_seconds", "End time of the last successful crawl", s)
        gauge("update_duration", "Duration of the crawl shown (health.petals.dev's update_duration), seconds", s)
        gauge("data_stale", "1 if the last successful crawl is older than the stale threshold", s)
        gauge("crawl_peers_contacted", "DHT peers that answered during the crawl shown", s)
        gauge("crawl_peers_failed", "DHT peers that did not answer during the crawl shown", s)
        gauge("invalid_records", "Announcements rejected by validation in the crawl shown, by reason", (*s, "reason"))
        gauge("bootstrap_peers", "Bootstrap peers by state", (*s, "state"))
        gauge("servers_num_total", "Distinct servers announcing any model", s)
        gauge("servers_num_relay", "Distinct servers reachable only through a libp2p relay", s)
        gauge("peers_per_srv", "Average number of next servers each server pings", s)
        gauge("pings_inf_share", "Share of pings that are infinite (next server unreachable)", s)
        gauge("ping_pct", "Percentiles of finite ping RTTs between servers, seconds", (*s, "pct"))
        gauge("server_version", "Servers by Petals version", (*s, "version_number"))
        gauge("n_blocks", "Number of blocks of the model", sm)
        gauge("servers_num", "Servers announcing the model", sm)
        gauge("blocks_total", "Sum over servers of blocks served (all states)", sm)
        gauge("blocks_online_min", "Online servers holding the least-served block (0 means a hole)", sm)
        gauge("blocks_covered", "Blocks with at least one online server", sm)
        gauge("blocks", "Block-servings by server state", (*sm, "state"))
        gauge("rps_avg", "Mean over blocks of summed online servers' requests per second", (*sm, "rps"))
        gauge("rps_min", "Minimum over blocks of summed online servers' requests per second", (*sm, "rps"))
        gauge("model_state", "1 for the model's current health (healthy, degraded, broken)", (*sm, "state"))
        gauge("model_runnable", "1 if a client can build a chain of usable servers over every block now", sm)
        gauge("model_steps_per_second", "Expected inference steps per second along the route (0: not runnable)", sm)
        gauge("model_disjoint_chains", "Server-disjoint chains over the model (it survives this minus 1 failures)", sm)
        sv = (*s, "vantage")
        gauge("vantage_servers_probed", "Servers of the crawl shown with a fresh result from this vantage point", sv)
        gauge("vantage_servers_reached", "Servers of the crawl shown that this vantage point reached", sv)
        gauge("vantage_last_probe_timestamp_seconds", "Time of this vantage point's newest probe counted", sv)
        gauge("servers_reachable_split", "Servers reachable from some vantage points and not from others", s)
        gauge("alerts_firing", "Alert conditions firing now, by severity", (*s, "severity"))
        gauge("alert", "1 per alert condition firing now (see /alerts)", (*s, "kind", "subject", "severity"))

        severities = Counter((a.swarm, a.severity) for a in self.firing)
        for swarm in sorted({v.swarm for v in self.views} | {a.swarm for a in self.firing}):
            for severity in get_args(Severity):  # zeros too: "none firing" is a value, not a missing series
                g["alerts_firing"].add_metric([swarm, severity], severities[(swarm, severity)])
        for a in self.firing:
            g["alert"].add_metric([a.swarm, a.kind, a.subject, a.severity], 1)
        for view in self.views:
            sw = view.swarm
            last = view.last_crawl
            if last is not None:
                if last.duration is not None:
                    g["crawl_duration_seconds"].add_metric([sw], last.duration)
                g["last_crawl_timestamp_seconds"].add_metric([sw], last.started_at)
                g["last_crawl_success"].add_metric([sw], 1.0 if last.status == "succeeded" else 0.0)
            g["data_stale"].add_metric([sw], 1.0 if view.stale else 0.0)
            snap = view.snapshot
            if snap is None:
                continue
            g["last_success_timestamp_seconds"].add_metric([sw], snap.finished_at)
            g["update_duration"].add_metric([sw], snap.duration)
            g["crawl_peers_contacted"].add_metric([sw], snap.stats.peers_contacted)
            g["crawl_peers_failed"].add_metric([sw], snap.stats.peers_failed)
            for reason, count in sorted(snap.stats.invalid_by_reason.items()):
                g["invalid_records"].add_metric([sw, reason], count)
            states = Counter(p.state for p in snap.bootstrap)
            for state in ("online", "unreachable"):
                g["bootstrap_peers"].add_metric([sw, state], states[state])
            self._servers(g, sw, snap.models)
            self._vantages(g, sw, view.vantages)
            for report in snap.models:
                self._model(g, sw, report, self.session_tokens)
        official = official_families(g, self.official_swarm) if self.official_swarm is not None else []
        return [*g.values(), *official]

    @staticmethod
    def _servers(g: dict, sw: str, models: list[ModelReport]) -> None:
        infos = {}
        for report in models:
            for row in report.servers:
                infos.setdefault(row.peer_id, row.info)
        pings: list[float] = []
        infinite = with_pings = 0
        versions: Counter[str] = Counter()
        for info in infos.values():
            if info.next_pings is not None:
                with_pings += 1
                for rtt in info.next_pings.values():
                    if math.isfinite(rtt):
                        pings.append(rtt)
                    else:
                        infinite += 1
            if info.version:
                versions[info.version] += 1
        g["servers_num_total"].add_metric([sw], len(infos))
        g["servers_num_relay"].add_metric([sw], sum(1 for i in infos.values() if i.using_relay))
        if with_pings and (pings or infinite):
            g["peers_per_srv"].add_metric([sw], (len(pings) + infinite) / with_pings)
            g["pings_inf_share"].add_metric([sw], infinite / (len(pings) + infinite))
        pings.sort()
        if pings:
            for pct in PING_PERCENTILES:
                g["ping_pct"].add_metric([sw, str(pct)], percentile(pings, pct))
        for version, count in sorted(versions.items()):
            g["server_version"].add_metric([sw, version], count)

    @staticmethod
    def _vantages(g: dict, sw: str, verdicts: VantageVerdicts | None) -> None:
        by_peer = verdicts.by_peer if verdicts is not None else {}
        for v in summarize_vantages(by_peer):
            g["vantage_servers_probed"].add_metric([sw, v.vantage], v.servers)
            g["vantage_servers_reached"].add_metric([sw, v.vantage], v.reached)
            g["vantage_last_probe_timestamp_seconds"].add_metric([sw, v.vantage], v.last_checked_at)
        g["servers_reachable_split"].add_metric([sw], sum(1 for v in by_peer.values() if v.split))

    @staticmethod
    def _model(g: dict, sw: str, report: ModelReport, session_tokens: int) -> None:
        labels = [sw, report.model.dht_prefix]
        g["n_blocks"].add_metric(labels, report.model.num_blocks)
        g["servers_num"].add_metric(labels, len(report.servers))
        g["blocks_total"].add_metric(labels, sum(max(r.length, 0) for r in report.servers))
        g["blocks_online_min"].add_metric(labels, report.min_online)
        g["blocks_covered"].add_metric(labels, report.blocks_covered)
        for state in SERVER_STATES:
            g["blocks"].add_metric([*labels, state], sum(getattr(b, state) for b in report.blocks))
        for kind in RPS_KINDS:
            per_block = _rps_per_block(report, kind)
            if per_block:
                g["rps_avg"].add_metric([*labels, kind], sum(per_block) / len(per_block))
                g["rps_min"].add_metric([*labels, kind], min(per_block))
        for state in ("healthy", "degraded", "broken"):
            g["model_state"].add_metric([*labels, state], 1.0 if report.state == state else 0.0)
        route = plan_route(report, session_tokens)
        g["model_runnable"].add_metric(labels, 1.0 if route.runnable else 0.0)
        g["model_steps_per_second"].add_metric(labels, route.steps_per_second or 0.0)
        g["model_disjoint_chains"].add_metric(labels, route.disjoint_chains)


def make_registry(
    official_swarm: str | None = None, session_tokens: int = SESSION_TOKENS
) -> tuple[CollectorRegistry, SwarmCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = SwarmCollector(official_swarm, session_tokens)
    registry.register(collector)
    return registry, collector


METRICS_LOCK = web.AppKey("petals_metrics_lock", asyncio.Lock)
COLLECTOR = web.AppKey("petals_metrics_collector", SwarmCollector)


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    now = ctx.clock()
    views = await queries.all_swarms(ctx.reader, ctx.settings, now=now)
    firing = await ctx.reader.read_fresh("active_alerts")
    key = (
        "metrics",
        tuple((a.swarm, a.kind, a.subject, a.severity) for a in firing),
        queries.views_key(views),
    )

    async def make() -> Document:
        async with request.app[METRICS_LOCK]:
            request.app[COLLECTOR].update(views, now, firing)
            return await ctx.reader(lambda: make_document(generate_latest(ctx.registry), CONTENT_TYPE_LATEST))

    swarms = await ctx.rendered.get_or_make(key, make)
    stream = generate_latest(EventStreamCollector(ctx.events.stats()))  # on the loop, where the hub changes
    doc = await ctx.reader(make_document, swarms.body + stream, CONTENT_TYPE_LATEST)
    return document_response(request, doc)
