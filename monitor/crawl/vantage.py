"""``python -m monitor probe --vantage NAME``: probe the newest crawl's servers from here, store what answered.

Reachability seen from one place is one opinion (``monitor.rules.vantages``). A probe process runs wherever a
second opinion is wanted (another region, another provider, behind another NAT), with no web and no crawl of its
own: each round it reads the newest good crawl of each swarm from the shared database, probes that crawl's
servers exactly as the crawler does (``rpc_info``, the same timeouts, failures cached the same way), and writes
the results under its vantage name in one transaction. Pages then say "reachable from k of n".

Every round has a deadline (the swarm's ``crawl_timeout``), and so does every probe in it. A round whose crawl was
deleted meanwhile (retention) is dropped with one log line; a database that is gone fails the round, and the next
round tries again.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass

import trio

from dht.net.transport import open_host
from dht.swarm import SwarmClient

from ..config import Config, SwarmConfig
from ..store.sqlite import Store, WriterThread
from ..store.vantages import NotProbeable
from .crawler import HOST_CALL_SLOTS, ReachabilityCache, probe

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RoundResult:
    """One swarm's round: the crawl whose servers were probed, how many, how many answered."""

    swarm: str
    crawl_id: int | None  # None: no good crawl to probe yet
    probed: int = 0
    reached: int = 0
    stored: bool = False
    error: str | None = None


async def probe_round(
    client: SwarmClient,
    swarm: SwarmConfig,
    store: Store,
    writer: WriterThread,
    vantage: str,
    cache: ReachabilityCache,
) -> RoundResult:
    """Probe the servers of ``swarm``'s newest good crawl once, within ``swarm.crawl_timeout``, and store them."""
    target = await trio.to_thread.run_sync(store.probe_targets, swarm.name)
    if target is None:
        return RoundResult(swarm.name, None, error="no good crawl of this swarm in the database yet")
    crawl_id, peers = target
    results: dict = {}
    with trio.move_on_after(swarm.crawl_timeout) as deadline:
        boot = await client.bootstrap(list(swarm.initial_peers), timeout=swarm.rpc_timeout)
        if not any(b.ok for b in boot):
            return RoundResult(swarm.name, crawl_id, error="no bootstrap peer answered")
        r = swarm.reachability
        await probe(client, peers, timeout=r.timeout, concurrency=r.concurrency, cache=cache, into=results)
    if deadline.cancelled_caught:
        log.warning(
            "%s: the round's deadline cut %d of %d probes short", swarm.name, len(peers) - len(results), len(peers)
        )
    done = [results[p] for p in peers if p in results]
    if deadline.cancelled_caught and not done:
        return RoundResult(swarm.name, crawl_id, error=f"no probe finished within {swarm.crawl_timeout:g} s")
    try:
        future = writer.record_vantage_probes(crawl_id, vantage, done)
        await trio.to_thread.run_sync(future.result)
    except NotProbeable as e:
        return RoundResult(swarm.name, crawl_id, len(done), error=str(e))
    return RoundResult(swarm.name, crawl_id, len(done), sum(1 for x in done if x.ok), stored=True)


async def run_probes(config: Config, store: Store, writer: WriterThread, *, once: bool) -> list[RoundResult]:
    """Rounds over every swarm, every ``[vantage] probe_interval`` seconds (one round with ``once``). Returns the
    last round's results. A round that raises (the database went away) is logged; the next one tries again."""
    vantage = config.vantage.name
    async with open_host(max_concurrent_calls=HOST_CALL_SLOTS) as host:
        clients = {
            s.name: SwarmClient(host, timeout=s.rpc_timeout, max_keys_per_request=s.max_keys_per_request)
            for s in config.swarms
        }
        caches = {s.name: ReachabilityCache(s.reachability.cache_ttl) for s in config.swarms}
        while True:
            started = trio.current_time()
            last = []
            for swarm in config.swarms:
                try:
                    result = await probe_round(clients[swarm.name], swarm, store, writer, vantage, caches[swarm.name])
                except Exception as e:  # the store: the database is gone, or refused the write
                    from ..store.dbcheck import one_line

                    result = RoundResult(swarm.name, None, error=one_line(e, store.location))
                _log_round(vantage, result)
                last.append(result)
            if once:
                return last
            await trio.sleep_until(started + config.vantage.probe_interval)


def _log_round(vantage: str, result: RoundResult) -> None:
    if result.stored:
        log.info(
            "vantage %s: crawl %d of %s: %d of %d servers reached",
            vantage,
            result.crawl_id,
            result.swarm,
            result.reached,
            result.probed,
        )
    else:
        log.warning("vantage %s: %s: nothing stored: %s", vantage, result.swarm, result.error)


async def _until_stopped(config: Config, store: Store, writer: WriterThread, once: bool) -> list[RoundResult] | None:
    """:func:`run_probes` until SIGINT or SIGTERM (then None). Trio receives the signals: a KeyboardInterrupt
    raised by a Python handler at an arbitrary point of trio's own code could break the run."""
    outcome: list[list[RoundResult]] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def probes() -> None:
                outcome.append(await run_probes(config, store, writer, once=once))
                nursery.cancel_scope.cancel()

            async def stop() -> None:
                async for signum in signals:
                    log.info("vantage %s: stopped (%s)", config.vantage.name, signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(probes)
            nursery.start_soon(stop)
    return outcome[0] if outcome else None


def probe_main(config: Config, *, once: bool) -> int:
    """The ``probe`` command's body: 0 when the (last) round stored every swarm's results, 1 otherwise; 0 when
    stopped by SIGINT or SIGTERM (a round stopped while probing stores nothing; one stopped while writing lets
    the write end first: one transaction, bounded by the store's statement timeout). Main thread."""
    store = Store(config.db_path)
    writer = store.writer(recover=False)
    try:
        results = trio.run(_until_stopped, config, store, writer, once)
    finally:
        writer.close()
        store.close()
    return 0 if results is None or all(r.stored for r in results) else 1


__all__ = ["RoundResult", "probe_main", "probe_round", "run_probes"]
