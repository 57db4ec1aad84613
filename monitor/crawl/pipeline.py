"""From a crawler outcome to a stored crawl: judge it with the Petals rules, then record it.

Shared by the scheduled crawls (``monitor.app``) and the one-shot crawl (``monitor.crawl.oneshot``), so both
write exactly the same thing. The rules are pure; the store is the only writer.
"""

from __future__ import annotations

from ..config import SwarmConfig
from ..geo import Lookup, locate
from ..rules.petals import build_snapshot
from ..snapshot import Snapshot
from ..store.history import CrawlSummary
from ..store.sqlite import StoreWriter
from .crawler import CrawlOutcome


def judge(outcome: CrawlOutcome, swarm: SwarmConfig, *, geo: Lookup | None = None) -> Snapshot:
    """Apply the Petals rules to one crawl (pure, given ``geo``: the offline country/AS lookup, or None)."""
    return build_snapshot(
        outcome.raw,
        outcome.models,
        locate(outcome.reachability, geo),
        min_redundancy=swarm.min_redundancy,
        custom_model_policy=swarm.custom_model_policy,
        classified=outcome.classified,
        max_expiration_ahead=swarm.max_expiration_ahead,
    )


def record(writer: StoreWriter, crawl_id: int, snapshot: Snapshot) -> CrawlSummary:
    """Write a judged crawl: the snapshot when it succeeded, otherwise the failure with what it measured.

    Runs on the writer's thread (``WriterThread.submit(record, crawl_id, snapshot)``).
    """
    if snapshot.status == "succeeded":
        summary = writer.finish_crawl(crawl_id, snapshot)
    else:
        summary = writer.fail_crawl(
            crawl_id, snapshot.error or "crawl failed", snapshot.stats, finished_at=snapshot.finished_at
        )
    snapshot.crawl_id = summary.id  # a failed crawl has its id too: its entry in the crawl log
    return summary
