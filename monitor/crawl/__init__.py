"""Getting a snapshot: the DHT side of the monitor and what schedules it.

- ``crawler``    one crawl of a swarm over ``dht.SwarmClient``: bootstrap, batched lookup, reachability probes
- ``pipeline``   crawl -> judge (the rules) -> record (the store), the steps a scheduled crawl runs
- ``bridge``     a trio thread that asyncio awaits calls on (``crawl_worker = "thread"``)
- ``worker``     the same calls in a spawned child process (the default), pickling only the Snapshot back
- ``scheduler``  APScheduler jobs: one per swarm, never overlapping
- ``oneshot``    ``crawl --once``: one crawl, recorded, printed, exit code
- ``vantage``    ``probe --vantage NAME``: the newest crawl's servers probed from here, stored per vantage point

Importing this package imports none of them: each public name below loads its module on first use.
"""

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "BridgeError": "bridge",
    "CrawlScheduler": "scheduler",
    "ProcessBridge": "worker",
    "ReachabilityCache": "crawler",
    "TrioBridge": "bridge",
    "crawl_once": "oneshot",
    "crawl_swarm": "crawler",
    "judge": "pipeline",
    "make_trigger": "scheduler",
    "probe_main": "vantage",
    "probe_round": "vantage",
    "record": "pipeline",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
