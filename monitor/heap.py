"""Keep CPython's full collections off what start-up built.

A crawl allocates ~100 k objects that live until it ends (records, every replica's values), and that many
allocations set off a full (generation 2) collection, which walks every tracked object in the process: after
importing py-libp2p, aiohttp and friends that is ~0.5 M objects, ~50 ms per collection (8 % of the bench
crawl's CPU), and in the web process a pause of that length lands in some request's latency.

Modules, classes and the open host live as long as the process, so once start-up is done they are moved to
the permanent generation (``gc.freeze``) and no later collection looks at them. Garbage is collected first,
so nothing dead is frozen; cycles made later are collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect, then freeze everything alive; returns how many objects are now frozen. Call once start-up is
    done (imports, host, app); calling again freezes what was added since, so call it only from start-up."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


__all__ = ["freeze_startup_heap"]
