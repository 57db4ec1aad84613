"""The Petals rules: pure functions from what the DHT said to what it means (no I/O, no clock of their own).

- ``serverinfo``        parse and validate a server's announcement (ServerInfo) and a model's info record
- ``spans``             which blocks each server serves, as spans
- ``health``            a model's state from its blocks' coverage (healthy / degraded / broken)
- ``reachability``      what an ``rpc_info`` answer or error says about a server
- ``petals``            classify a crawl's records and build the :class:`~monitor.snapshot.Snapshot`
- ``versions``          Petals version parsing, ordering and rollout counts
- ``hints``             fix-it hints for the problems a snapshot shows
- ``route``             the chain a Petals client would use now, its speed and how many failures it survives
- ``bootstrap_errors``  one readable line when no bootstrap peer answered

They import only ``monitor.snapshot`` and each other; the crawl, the store and the web build on them.

Importing this package imports none of them: each public name below loads its module on first use.
"""

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "CUSTOM_MODEL_POLICIES": "petals",
    "Classified": "petals",
    "CustomModelPolicy": "petals",
    "MAX_EXPIRATION_AHEAD": "petals",
    "MAX_NUM_BLOCKS": "serverinfo",
    "MODELS_KEY": "petals",
    "NO_VERSION": "versions",
    "VersionCount": "versions",
    "VersionPoint": "versions",
    "block_uids": "petals",
    "build_snapshot": "petals",
    "classify": "petals",
    "compute_spans": "spans",
    "discover_models": "petals",
    "invalid_for_peer": "hints",
    "is_online_announcement": "serverinfo",
    "is_outdated": "versions",
    "is_peer_id": "serverinfo",
    "is_valid_dht_prefix": "serverinfo",
    "model_hints": "hints",
    "model_state": "health",
    "no_bootstrap_answered": "bootstrap_errors",
    "parse_model_info": "serverinfo",
    "parse_rpc_info": "reachability",
    "parse_server_info": "serverinfo",
    "parse_version": "versions",
    "peers_to_probe": "petals",
    "plan_route": "route",
    "reachability_from_error": "reachability",
    "Route": "route",
    "row_version": "versions",
    "server_hints": "hints",
    "version_counts": "versions",
    "version_sort_key": "versions",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
