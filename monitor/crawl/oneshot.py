"""``python -m monitor crawl --once``: crawl every configured swarm once, store the snapshots, exit (for cron).

Alerts work here too: the firing conditions and failure streaks come from the store (so runs from cron never
fire a condition twice), events are stored and logged, and webhooks get them before the process exits.

On PostgreSQL it takes each swarm's crawl lock like a ``serve`` replica (``StoreWriter.lead``) and holds it until
it exits: a swarm another process leads (a running ``serve`` replica, another ``crawl --once``) is skipped, never
crawled twice (:class:`Skipped`; not a failure: its crawls are being made). On SQLite nothing is skipped.
A swarm whose lock this run lost mid-crawl (its database connection dropped: ``LeadLost``) is skipped the same way
("lock lost mid-run"): another process may crawl it now. The database gone for good mid-run raises
:class:`DatabaseLost` (the CLI prints one line and exits 3); what this run left ``started`` is failed by the next
process that takes the swarm's lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import trio

from dht.net.transport import open_host
from dht.swarm import SwarmClient

from ..alerts.delivery import AlertDispatcher
from ..alerts.rules import AlertEvent, AlertRules, evaluate_failure, evaluate_snapshot, restore_state
from ..config import Config, SwarmConfig
from ..geo import lookup_from_config
from ..snapshot import Snapshot
from ..store.dbcheck import one_line
from ..store.pg import is_connection_error
from ..store.sqlite import LeadLost, Store
from .crawler import HOST_CALL_SLOTS, CrawlOutcome, crawl_swarm
from .pipeline import judge, record

log = logging.getLogger(__name__)

LED_ELSEWHERE = "crawled by another process (it holds the swarm's crawl lock)"
LOCK_LOST = "lock lost mid-run (the database connection dropped): another process may crawl it now"


class DatabaseLost(RuntimeError):
    """The database went away mid-run (its message: one line, no password): this run stored what it could."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A swarm this run did not crawl, and why (on PostgreSQL: another process leads it)."""

    swarm: str
    reason: str = LED_ELSEWHERE

    @property
    def message(self) -> str:
        return f"swarm {self.swarm} skipped: {self.reason}"

    def document(self) -> dict[str, Any]:
        """What ``--json`` prints in place of the swarm's state document."""
        return {
            "swarm": self.swarm,
            "crawl_id": None,
            "crawl": {"id": None, "status": "skipped", "reason": self.reason},
        }


async def _crawl_all(swarms: list[SwarmConfig]) -> list[CrawlOutcome]:
    outcomes = []
    async with open_host(max_concurrent_calls=HOST_CALL_SLOTS) as host:
        for swarm in swarms:
            client = SwarmClient(host, timeout=swarm.rpc_timeout, max_keys_per_request=swarm.max_keys_per_request)
            outcomes.append(await crawl_swarm(client, swarm))
    return outcomes


def crawl_once(config: Config) -> list[Snapshot | Skipped]:
    """Crawl, judge and store each swarm once; returns, in the config's order, the snapshots (``status`` says
    whether each succeeded) and the swarms skipped because another process leads them."""
    store = Store(config.db_path)
    writer = store.writer()
    try:
        return _crawl_and_store(config, store, writer)
    except Exception as e:
        if not is_connection_error(e):
            raise
        raise DatabaseLost(f"the database was lost mid-run: {one_line(e, store.location)}") from None
    finally:
        writer.close()
        store.close()


def _crawl_and_store(config: Config, store: Store, writer: Any) -> list[Snapshot | Skipped]:
    """:func:`crawl_once`'s work, with its store and writer thread."""
    led = {s.name: writer.lead(s.name).result() for s in config.swarms}
    swarms = [s for s in config.swarms if led[s.name]]
    ids = [writer.begin_crawl(s.name, time.time(), config.vantage.name).result() for s in swarms]
    try:
        outcomes = trio.run(_crawl_all, swarms) if swarms else []
    except BaseException as e:
        for crawl_id in ids:
            writer.fail_crawl(crawl_id, f"{type(e).__name__}: {e}").result()
        raise
    snapshots: dict[str, Snapshot] = {}
    geo = lookup_from_config(config.geo)
    rules = AlertRules.from_config(config.alerts, config.route)
    state = restore_state(store.active_alerts(), store.failure_streaks())
    events: list[AlertEvent] = []
    lost: set[str] = set()
    for crawl_id, swarm, outcome in zip(ids, swarms, outcomes, strict=True):
        snapshot = judge(outcome, swarm, geo=geo)
        try:
            summary = writer.submit(record, crawl_id, snapshot).result()
        except Exception as e:  # the connection dropped (then LeadLost): its lock went with it
            if not (isinstance(e, LeadLost) or is_connection_error(e)):
                raise
            log.warning("crawl %d of %s not recorded: %s", crawl_id, swarm.name, LOCK_LOST)
            lost.add(swarm.name)
            continue
        log.info("crawl %d of %s: %s in %.1f s", summary.id, swarm.name, summary.status, snapshot.duration)
        if summary.status != "succeeded":
            snapshot.status = "failed"
            snapshot.error = summary.error
            state, new = evaluate_failure(
                state, rules, swarm.name, summary.finished_at or time.time(), summary.error or "failed", crawl_id
            )
        else:
            state, new = evaluate_snapshot(state, rules, snapshot)
        events += new
        snapshots[swarm.name] = snapshot
    if config.alerts.enabled and events:
        try:
            writer.record_alert_events(events).result()
        except LeadLost as e:  # nothing was recorded: whoever leads the swarm now judges it
            log.warning("alert events not recorded: %s", e)
        else:
            asyncio.run(_deliver(config, events))
    r = config.retention
    writer.apply_retention(time.time(), **dataclasses.asdict(r)).result()
    return [
        snapshots.get(s.name) or Skipped(s.name, LOCK_LOST if s.name in lost else LED_ELSEWHERE) for s in config.swarms
    ]


async def _deliver(config: Config, events: list[AlertEvent]) -> None:
    """Log and post the events, waiting (bounded by each webhook's attempts and timeouts) before exiting."""
    dispatcher = AlertDispatcher(config.alerts.webhooks)
    await dispatcher.start()
    try:
        dispatcher.submit(events)
        budget = max(
            (h.max_attempts * (h.timeout + h.backoff_seconds * 2**h.max_attempts) for h in config.alerts.webhooks),
            default=0.0,
        )
        await dispatcher.drain(min(budget, 600.0))
    finally:
        await dispatcher.close(grace=0)
