"""The few knobs the web needs, read from the monitor's config (duck-typed, so the web does not pin its shape)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..rules.route import SESSION_TOKENS

DEFAULT_INTERVAL = 60.0


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """The first attribute (or mapping key) of ``obj`` among ``names`` that is set."""
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


@dataclass(frozen=True, slots=True)
class WebSettings:
    intervals: dict[str, float] = field(default_factory=dict)  # swarm -> crawl interval, seconds
    default_interval: float = DEFAULT_INTERVAL
    stale_after_intervals: float = 3.0  # the stale-data banner shows when the last good crawl is older than this
    client_max_size: int = 64 * 1024  # the app only serves GETs; a large body is never legitimate
    read_workers: int = 2
    reachability_burst: float = 5.0  # is_reachable token bucket per client IP
    reachability_per_second: float = 0.2
    reachability_cache_seconds: float = 30.0
    reachability_timeout: float = 20.0
    refresh_seconds: float | None = None  # how often the pages' JS checks for a new crawl (default: the interval)
    min_version: str | None = None  # servers older than this are flagged outdated (``[versions] min_version``)
    min_redundancy: dict[str, int] = field(default_factory=dict)  # swarm -> online servers a block should have
    alerts_enabled: bool = True
    official_metrics_swarm: str | None = None  # /metrics also under health.petals.dev's names, for this swarm
    events_max_clients: int = 1000  # /api/v1/events streams at once; 503 beyond
    events_max_per_client: int = 20  # ... from one client address (IPv6: /64); 429 beyond
    events_keepalive_seconds: float = 15.0  # a comment on a quiet stream this often (also finds gone clients)
    read_timeout_seconds: float = 15.0  # a store read's deadline; beyond, 503 and the read is cut off (``reader``)
    session_tokens: int = SESSION_TOKENS  # the route planner's session (``[route] session_tokens``)
    vantage_name: str = "main"  # where this process probes from (``[vantage] name``): is_reachable says it
    vantage_max_age: float = 600.0  # a vantage point's result counts this long (``[vantage] max_age``)

    def interval(self, swarm: str | None) -> float:
        return self.intervals.get(swarm or "", self.default_interval)

    @classmethod
    def from_config(cls, config: Any) -> WebSettings:
        """Accepts the monitor's Config (``interval``/``swarms[].interval``/``web``) or a plain mapping."""
        if config is None:
            return cls()
        if isinstance(config, WebSettings):
            return config
        default = float(_get(config, "interval", "crawl_interval", "update_period", default=DEFAULT_INTERVAL))
        intervals: dict[str, float] = {}
        redundancy: dict[str, int] = {}
        for swarm in _get(config, "swarms", default=()) or ():
            name = _get(swarm, "name")
            value = _get(swarm, "interval", "crawl_interval", "interval_seconds")
            if isinstance(name, str) and isinstance(value, int | float):
                intervals[name] = float(value)
            wanted = _get(swarm, "min_redundancy")
            if isinstance(name, str) and isinstance(wanted, int):
                redundancy[name] = wanted
        web = _get(config, "web", default={}) or {}
        kwargs: dict[str, Any] = {}
        for key in (
            "stale_after_intervals",
            "client_max_size",
            "read_workers",
            "reachability_burst",
            "reachability_per_second",
            "reachability_cache_seconds",
            "reachability_timeout",
            "refresh_seconds",
            "events_max_clients",
            "events_max_per_client",
            "events_keepalive_seconds",
            "read_timeout_seconds",
        ):
            value = _get(web, key)
            if value is not None:
                kwargs[key] = value
        min_version = _get(_get(config, "versions", default={}) or {}, "min_version") or None
        alerts_enabled = _get(_get(config, "alerts", default={}) or {}, "enabled", default=True)
        session_tokens = _get(_get(config, "route", default={}) or {}, "session_tokens", default=SESSION_TOKENS)
        swarm_names = [_get(swarm, "name") for swarm in _get(config, "swarms", default=()) or ()]
        official = bool(_get(web, "official_metric_names", default=False)) and bool(swarm_names)
        vantage = _get(config, "vantage", default={}) or {}
        for key, setting in (("vantage_name", "name"), ("vantage_max_age", "max_age")):
            value = _get(vantage, setting)
            if value is not None:
                kwargs[key] = value
        return cls(
            alerts_enabled=bool(alerts_enabled),
            intervals=intervals,
            default_interval=default,
            min_version=min_version,
            min_redundancy=redundancy,
            official_metrics_swarm=swarm_names[0] if official else None,
            session_tokens=int(session_tokens),
            **kwargs,
        )
