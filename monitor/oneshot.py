"""``python -m monitor crawl --once``: crawl every configured swarm once, store the snapshots, exit (for cron)."""

from __future__ import annotations

import logging
import time

import trio

from dht.swarm import SwarmClient
from dht.transport import open_host

from .config import Config
from .crawler import CrawlOutcome, crawl_swarm
from .pipeline import judge, record
from .snapshot import Snapshot
from .store import Store

log = logging.getLogger(__name__)


async def _crawl_all(config: Config) -> list[CrawlOutcome]:
    outcomes = []
    async with open_host() as host:
        for swarm in config.swarms:
            client = SwarmClient(host, timeout=swarm.rpc_timeout, max_keys_per_request=swarm.max_keys_per_request)
            outcomes.append(await crawl_swarm(client, swarm))
    return outcomes


def crawl_once(config: Config) -> list[Snapshot]:
    """Crawl, judge and store each swarm once; returns the snapshots (``status`` says whether each succeeded)."""
    store = Store(config.db_path)
    writer = store.writer()
    try:
        ids = [writer.begin_crawl(s.name, time.time()).result() for s in config.swarms]
        try:
            outcomes = trio.run(_crawl_all, config)
        except BaseException as e:
            for crawl_id in ids:
                writer.fail_crawl(crawl_id, f"{type(e).__name__}: {e}").result()
            raise
        snapshots = []
        for crawl_id, swarm, outcome in zip(ids, config.swarms, outcomes, strict=True):
            snapshot = judge(outcome, swarm)
            summary = writer.submit(record, crawl_id, snapshot).result()
            log.info("crawl %d of %s: %s in %.1f s", summary.id, swarm.name, summary.status, snapshot.duration)
            if summary.status != "succeeded":
                snapshot.status = "failed"
                snapshot.error = summary.error
            snapshots.append(snapshot)
        r = config.retention
        writer.apply_retention(time.time(), r.raw_days, r.hourly_days, r.daily_days).result()
        return snapshots
    finally:
        writer.close()
        store.close()
