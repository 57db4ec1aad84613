"""Configuration: a TOML file, then ``PETALS_MONITOR_*`` environment variables, then command-line overrides.

Every setting is documented in ``config.example.toml`` (a test fails if one is not). The result is a tree of
frozen dataclasses; nothing is read at import time. A bad value raises :class:`ConfigError` with one message
that names the setting, e.g. ``swarms[0].interval_seconds: must be a positive number, got -5``. Unknown keys
and unknown ``PETALS_MONITOR_*`` variables are errors too, so a typo is never silently ignored.

Defaults reproduce health.petals.dev: the public swarm's initial peers and its official models, one crawl a
minute, ``rpc_info`` probes with a 5 s timeout cached 300 s.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .rules.petals import CUSTOM_MODEL_POLICIES, MAX_EXPIRATION_AHEAD, CustomModelPolicy
from .rules.route import SESSION_TOKENS
from .rules.serverinfo import MAX_NUM_BLOCKS, is_peer_id, is_valid_dht_prefix
from .snapshot import ModelInfo

# Petals' PUBLIC_INITIAL_PEERS (src/petals/constants.py), which health.petals.dev uses.
PUBLIC_INITIAL_PEERS: tuple[str, ...] = (
    "/dns/bootstrap1.petals.dev/tcp/31337/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY",
    "/dns/bootstrap2.petals.dev/tcp/31338/p2p/QmQGTqmM7NKjV6ggU1ZCap8zWiyKR89RViDXiqehSiCpY5",
    "/dns6/bootstrap1.petals.dev/tcp/31337/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY",
    "/dns6/bootstrap2.petals.dev/tcp/31338/p2p/QmQGTqmM7NKjV6ggU1ZCap8zWiyKR89RViDXiqehSiCpY5",
    "/ip4/159.89.214.152/tcp/31337/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY",
    "/ip4/159.203.156.48/tcp/31338/p2p/QmQGTqmM7NKjV6ggU1ZCap8zWiyKR89RViDXiqehSiCpY5",
)

# health.petals.dev's config.py MODELS.
OFFICIAL_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo(
        dht_prefix="Meta-Llama-3-1-405B-Instruct-hf",
        num_blocks=126,
        repository="https://huggingface.co/meta-llama/Meta-Llama-3.1-405B-Instruct",
        official=True,
    ),
    ModelInfo(
        dht_prefix="mistralai/Mixtral-8x22B-Instruct-v0-1",
        num_blocks=56,
        repository="https://huggingface.co/mistralai/Mixtral-8x22B-Instruct-v0.1",
        official=True,
    ),
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CrawlWorker = Literal["process", "thread"]
CRAWL_WORKERS: tuple[CrawlWorker, ...] = ("process", "thread")
ENV_PREFIX = "PETALS_MONITOR_"
_SWARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
MAX_KEYS_PER_REQUEST = 10_000


class ConfigError(ValueError):
    """A bad configuration; the message names the setting and what is wrong with it."""


@dataclass(frozen=True, slots=True)
class ReachabilityConfig:
    """``rpc_info`` probes of servers whose span is online (health.petals.dev: 5 s timeout, 300 s cache; ours
    caches failures only, and re-checks successes every crawl)."""

    enabled: bool = True
    timeout: float = 5.0
    cache_ttl: float = 300.0
    concurrency: int = 128  # a probe takes ~5 round trips (look-up, dial, call): waves of them add up on a WAN


@dataclass(frozen=True, slots=True)
class SwarmConfig:
    name: str = "public"
    initial_peers: tuple[str, ...] = PUBLIC_INITIAL_PEERS
    models: tuple[ModelInfo, ...] = OFFICIAL_MODELS
    discover_models: bool = True
    custom_model_policy: CustomModelPolicy = "huggingface"
    interval_seconds: float | None = 60.0  # None when ``cron`` is set
    cron: str | None = None
    min_redundancy: int = 2
    max_expiration_ahead: float = MAX_EXPIRATION_AHEAD  # records expiring later than this are invalid
    crawl_timeout: float = 60.0
    rpc_timeout: float = 5.0
    max_keys_per_request: int = 64
    # each key read from its N nearest DHT nodes, from the whole beam only where they differ; 0: always the whole
    # beam (what to choose if hostile nodes may sit nearest some keys: ids are unauthenticated; ~1.4x the bytes)
    replica_quorum: int = 3
    reachability: ReachabilityConfig = field(default_factory=ReachabilityConfig)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Raw crawls for ``raw_days``, then hourly rollups until ``hourly_days``, then daily ones (None: forever).

    ``pings_days``: the servers' ping tables (``next_pings`` and ``pings_to_me``, ~40 % of a stored crawl) are
    cleared from raw crawls older than this; None keeps them as long as the crawl."""

    raw_days: float = 7.0
    hourly_days: float = 30.0
    daily_days: float | None = None
    pings_days: float | None = 1.0


@dataclass(frozen=True, slots=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    official_metric_names: bool = False  # /metrics also under health.petals.dev's names (first swarm, no prefix)
    events_max_clients: int = 1000  # /api/v1/events streams at once (503 beyond)
    events_max_per_client: int = 20  # ... from one client address, an IPv6 one by its /64 (429 beyond)
    events_keepalive_seconds: float = 15.0  # a keep-alive comment on a quiet stream this often
    read_timeout_seconds: float = 15.0  # a page's or API call's database read; beyond, 503 (``monitor.web.reader``)


WEBHOOK_FORMATS = ("generic", "discord", "slack")
ALERT_MODEL_STATES = ("broken", "degraded")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One receiver of alert events: a JSON POST per event, retried with exponential backoff."""

    url: str
    format: str = "generic"  # generic | discord ({"content": ...}) | slack ({"text": ...})
    timeout: float = 10.0  # seconds per request
    max_attempts: int = 4
    backoff_seconds: float = 1.0  # first retry after this, then doubling
    send_resolved: bool = True


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Alert rules (applied to every swarm) and where events go besides the log and the database."""

    enabled: bool = True
    model_states: tuple[str, ...] = ("broken", "degraded")  # model health that fires an alert
    not_runnable: bool = True  # fire when no chain of usable servers covers a model (monitor.rules.route)
    min_online: int = 0  # fire when some block has fewer online servers than this (0: off)
    bootstrap_down: bool = True
    crawl_failures: int = 3  # fire after this many failed crawls in a row (0: off)
    watch_servers: tuple[str, ...] = ()  # "PEER_ID" or "SWARM:PEER_ID": fire when that server is not online
    webhooks: tuple[WebhookConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class GeoConfig:
    """Country and AS of servers' public addresses, from the offline database shipped with geoip2fast."""

    enabled: bool = True
    asn: bool = True  # also the AS (the larger data file, ~110 MB of RAM instead of ~30 MB)


@dataclass(frozen=True, slots=True)
class VersionsConfig:
    min_version: str = "2.2.0"  # servers announcing an older Petals version are flagged outdated ("": off)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """The client the route planner (``monitor.rules.route``) plays: a session of this many tokens (its max_length)
    must fit a server's cache, or entering that server costs Petals' 10 s penalty."""

    session_tokens: int = SESSION_TOKENS


@dataclass(frozen=True, slots=True)
class VantageConfig:
    """Where this process probes from (``monitor.rules.vantages``): a name that the crawls it leads, its
    ``probe`` rounds and its ``is_reachable`` answers carry, and how long another vantage's result counts."""

    name: str = "main"
    max_age: float = 600.0  # seconds a vantage's result counts toward "reachable from k of n"
    probe_interval: float = 60.0  # ``monitor probe``: seconds between rounds


@dataclass(frozen=True, slots=True)
class Config:
    swarms: tuple[SwarmConfig, ...] = (SwarmConfig(),)
    db_path: str = "petals-monitor.db"
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    web: WebConfig = field(default_factory=WebConfig)
    log_level: str = "INFO"
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    geo: GeoConfig = field(default_factory=GeoConfig)
    versions: VersionsConfig = field(default_factory=VersionsConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    crawl_worker: CrawlWorker = "process"
    vantage: VantageConfig = field(default_factory=VantageConfig)


@dataclass(frozen=True, slots=True)
class ConfigOverrides:
    """Command-line overrides; ``initial_peers`` and ``models`` replace those of the first (or only) swarm."""

    initial_peers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # "DHT_PREFIX[:NUM_BLOCKS]"
    db_path: str | None = None
    host: str | None = None
    port: int | None = None
    log_level: str | None = None
    official_metric_names: bool | None = None
    vantage: str | None = None


# Environment variables: name -> (where it goes, how to read it).
ENV_VARS: dict[str, str] = {
    "PETALS_MONITOR_CONFIG": "path of the TOML config file (when --config is not given)",
    "PETALS_MONITOR_DB": "db_path",
    "PETALS_MONITOR_LOG_LEVEL": "log_level",
    "PETALS_MONITOR_HOST": "web.host",
    "PETALS_MONITOR_PORT": "web.port",
    "PETALS_MONITOR_INITIAL_PEERS": "swarms[0].initial_peers (comma- or space-separated multiaddrs)",
    "PETALS_MONITOR_MODELS": "swarms[0].models (comma-separated DHT_PREFIX[:NUM_BLOCKS])",
    "PETALS_MONITOR_VANTAGE": "vantage.name",
}


# ---- entry point


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: ConfigOverrides | None = None,
) -> Config:
    """Defaults < TOML file < environment < overrides, validated once into a :class:`Config`."""
    env = {} if env is None else env
    overrides = overrides or ConfigOverrides()
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in ENV_VARS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown environment variable (known: {', '.join(ENV_VARS)})")
    if path is None:
        path = env.get("PETALS_MONITOR_CONFIG") or None
    data = _read_toml(Path(path)) if path is not None else {}
    _apply_env(data, env)
    _apply_overrides(data, overrides)
    return _config(data, unnamed_swarm_name(path))


def unnamed_swarm_name(config_path: str | Path | None) -> str:
    """What a swarm with its own initial peers and no ``name`` is called: after the config file, else ``custom``.

    (Only the public swarm is "public": a private swarm given by ``--initial-peer`` must not be stored, shown
    and alerted on under the public swarm's name.)"""
    stem = Path(config_path).stem if config_path is not None else ""
    return stem if _SWARM_NAME.fullmatch(stem) and stem != "public" else "custom"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r}: not found") from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r}: invalid TOML: {e}") from None


def _first_swarm(data: dict[str, Any]) -> dict[str, Any]:
    swarms = data.setdefault("swarms", [{}])
    if not isinstance(swarms, list) or not swarms or not isinstance(swarms[0], dict):
        raise ConfigError("swarms: must be a non-empty array of tables ([[swarms]])")
    return swarms[0]


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    if "PETALS_MONITOR_DB" in env:
        _set_db(data, env["PETALS_MONITOR_DB"])
    if "PETALS_MONITOR_LOG_LEVEL" in env:
        data["log_level"] = env["PETALS_MONITOR_LOG_LEVEL"]
    if "PETALS_MONITOR_HOST" in env:
        _subtable(data, "web")["host"] = env["PETALS_MONITOR_HOST"]
    if "PETALS_MONITOR_PORT" in env:
        text = env["PETALS_MONITOR_PORT"].strip()
        if not re.fullmatch(r"[0-9]{1,5}", text):
            raise ConfigError(f"PETALS_MONITOR_PORT: must be an integer port, got {text!r}")
        _subtable(data, "web")["port"] = int(text)
    if "PETALS_MONITOR_INITIAL_PEERS" in env:
        peers = [p for p in re.split(r"[,\s]+", env["PETALS_MONITOR_INITIAL_PEERS"]) if p]
        _first_swarm(data)["initial_peers"] = peers
    if "PETALS_MONITOR_VANTAGE" in env:
        _subtable(data, "vantage")["name"] = env["PETALS_MONITOR_VANTAGE"]
    if "PETALS_MONITOR_MODELS" in env:
        specs = [s.strip() for s in env["PETALS_MONITOR_MODELS"].split(",") if s.strip()]
        _first_swarm(data)["models"] = [_model_spec(spec, "PETALS_MONITOR_MODELS") for spec in specs]


def _apply_overrides(data: dict[str, Any], overrides: ConfigOverrides) -> None:
    if overrides.db_path is not None:
        _set_db(data, overrides.db_path)
    if overrides.log_level is not None:
        data["log_level"] = overrides.log_level
    if overrides.host is not None:
        _subtable(data, "web")["host"] = overrides.host
    if overrides.port is not None:
        _subtable(data, "web")["port"] = overrides.port
    if overrides.official_metric_names is not None:
        _subtable(data, "web")["official_metric_names"] = overrides.official_metric_names
    if overrides.vantage is not None:
        _subtable(data, "vantage")["name"] = overrides.vantage
    if overrides.initial_peers:
        _first_swarm(data)["initial_peers"] = list(overrides.initial_peers)
    if overrides.models:
        _first_swarm(data)["models"] = [_model_spec(spec, "--model") for spec in overrides.models]


def _set_db(data: dict[str, Any], db: str) -> None:
    """The environment or the command line names the database: it replaces ``db_path`` and ``[store] url``."""
    data["db_path"] = db
    store = data.get("store")
    if isinstance(store, dict):
        store.pop("url", None)


def _db(data: dict[str, Any], default: str) -> str:
    """``db_path`` or its synonym ``[store] url`` (an SQLite path, ``sqlite:`` or ``postgresql://`` URL)."""
    store = _table(data.get("store", {}), "store", ("url",))
    if "url" in store and "db_path" in data:
        raise ConfigError("store.url: set either db_path or [store] url, not both")
    if "url" in store:
        return _text("store.url", store["url"])
    return _get(data, "", "db_path", _text, default)


def _subtable(data: dict[str, Any], name: str) -> dict[str, Any]:
    table = data.setdefault(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table, got {_show(table)}")
    return table


def _model_spec(spec: str, source: str) -> dict[str, Any]:
    """``DHT_PREFIX[:NUM_BLOCKS]``; without a count, a known official model's count, else "learn it"."""
    prefix, sep, count = spec.rpartition(":")
    if not sep or not count.isdigit():
        prefix, count = spec, ""
    if not count:
        known = next((m for m in OFFICIAL_MODELS if m.dht_prefix == prefix), None)
        if known is not None:
            return {"dht_prefix": known.dht_prefix, "num_blocks": known.num_blocks, "repository": known.repository}
        return {"dht_prefix": prefix}
    return {"dht_prefix": prefix, "num_blocks": int(count)}


# ---- validation: raw TOML-shaped data -> dataclasses


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _table(value: object, path: str, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: must be a table, got {_show(value)}")
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"{where}: unknown setting (known: {', '.join(allowed)})")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _number(path: str, value: object, *, minimum: float = 0.0, strict: bool = True) -> float:
    """A finite number > ``minimum`` (>= when not ``strict``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > minimum if strict else value >= minimum):
        return float(value)
    what = "a positive number" if strict and minimum == 0 else f"a number >= {minimum:g}"
    raise ConfigError(f"{path}: must be {what}, got {_show(value)}")


MIN_EXPIRATION_AHEAD = 60.0  # Petals servers announce ~2 update periods ahead: a limit below a minute rejects them all


def _expiration_limit(path: str, value: object) -> float:
    return _number(path, value, minimum=MIN_EXPIRATION_AHEAD, strict=False)


def _int(path: str, value: object, low: int, high: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    raise ConfigError(f"{path}: must be an integer in {low}..{high}, got {_show(value)}")


def _bool(path: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{path}: must be true or false, got {_show(value)}")


def _text(path: str, value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise ConfigError(f"{path}: must be a non-empty string, got {_show(value)}")


def _get(table: Mapping[str, Any], path: str, key: str, check: Callable[[str, Any], Any], default: Any) -> Any:
    return check(_join(path, key), table[key]) if key in table else default


def _config(data: dict[str, Any], unnamed: str = "custom") -> Config:
    _table(
        data,
        "",
        (
            "swarms",
            "db_path",
            "store",
            "retention",
            "web",
            "log_level",
            "alerts",
            "geo",
            "versions",
            "route",
            "crawl_worker",
            "vantage",
        ),
    )
    defaults = Config()
    swarm_list = data.get("swarms", [{}])
    if not isinstance(swarm_list, list) or not swarm_list:
        raise ConfigError(f"swarms: must be a non-empty array of tables ([[swarms]]), got {_show(swarm_list)}")
    swarms = tuple(
        _swarm(f"swarms[{i}]", raw, unnamed if i == 0 else f"{unnamed}-{i}") for i, raw in enumerate(swarm_list)
    )
    names = [s.name for s in swarms]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"swarms[{i}].name: duplicate swarm name {name!r}")
    vantage = _vantage(data.get("vantage", {}))
    # a failure cached for cache_ttl is stored again with its first check's time: it must still count
    needed = max(s.reachability.cache_ttl for s in swarms) + vantage.probe_interval
    if vantage.max_age < needed:
        raise ConfigError(
            f"vantage.max_age: must be at least the largest reachability.cache_ttl + vantage.probe_interval "
            f"({needed:g} s), or cached probe results drop out of 'reachable from k of n'; got {vantage.max_age:g}"
        )
    return Config(
        swarms=swarms,
        db_path=_db(data, defaults.db_path),
        retention=_retention(data.get("retention", {})),
        web=_web(data.get("web", {})),
        log_level=_get(data, "", "log_level", _log_level, defaults.log_level),
        alerts=_alerts(data.get("alerts", {})),
        geo=_geo(data.get("geo", {})),
        versions=_versions(data.get("versions", {})),
        route=_route(data.get("route", {})),
        crawl_worker=_get(data, "", "crawl_worker", _crawl_worker, defaults.crawl_worker),
        vantage=vantage,
    )


def _crawl_worker(path: str, value: object) -> CrawlWorker:
    if value in CRAWL_WORKERS:
        return value  # type: ignore[return-value]
    raise ConfigError(f"{path}: must be one of {', '.join(map(repr, CRAWL_WORKERS))}, got {_show(value)}")


def _log_level(path: str, value: object) -> str:
    if isinstance(value, str) and value.upper() in LOG_LEVELS:
        return value.upper()
    raise ConfigError(f"{path}: must be one of {', '.join(LOG_LEVELS)}, got {_show(value)}")


def _retention(raw: object) -> RetentionConfig:
    table = _table(raw, "retention", ("raw_days", "hourly_days", "daily_days", "pings_days"))
    d = RetentionConfig()
    raw_days = _get(table, "retention", "raw_days", _number, d.raw_days)
    hourly_days = _get(table, "retention", "hourly_days", _number, d.hourly_days)
    daily_days = _get(table, "retention", "daily_days", _days_or_forever, d.daily_days)
    if hourly_days < raw_days:
        raise ConfigError(f"retention.hourly_days: must be >= raw_days ({raw_days:g}), got {hourly_days:g}")
    if daily_days is not None and daily_days < hourly_days:
        raise ConfigError(
            f"retention.daily_days: must be 0 (forever) or >= hourly_days ({hourly_days:g}), got {daily_days:g}"
        )
    pings_days = _get(table, "retention", "pings_days", _days_or_forever, d.pings_days)
    return RetentionConfig(raw_days, hourly_days, daily_days, pings_days)


def _days_or_forever(path: str, value: object) -> float | None:
    """A positive number of days, or 0 for None (forever)."""
    return None if type(value) in (int, float) and value == 0 else _number(path, value)


def _alerts(raw: object) -> AlertsConfig:
    table = _table(
        raw,
        "alerts",
        (
            "enabled",
            "model_states",
            "not_runnable",
            "min_online",
            "bootstrap_down",
            "crawl_failures",
            "watch_servers",
            "webhooks",
        ),
    )
    d = AlertsConfig()
    hooks = table.get("webhooks", [])
    if not isinstance(hooks, list):
        raise ConfigError(f"alerts.webhooks: must be an array of tables ([[alerts.webhooks]]), got {_show(hooks)}")
    return AlertsConfig(
        enabled=_get(table, "alerts", "enabled", _bool, d.enabled),
        model_states=_get(table, "alerts", "model_states", _model_states, d.model_states),
        not_runnable=_get(table, "alerts", "not_runnable", _bool, d.not_runnable),
        min_online=_get(table, "alerts", "min_online", lambda p, v: _int(p, v, 0, 1000), d.min_online),
        bootstrap_down=_get(table, "alerts", "bootstrap_down", _bool, d.bootstrap_down),
        crawl_failures=_get(table, "alerts", "crawl_failures", lambda p, v: _int(p, v, 0, 10_000), d.crawl_failures),
        watch_servers=_get(table, "alerts", "watch_servers", _watched_peers, d.watch_servers),
        webhooks=tuple(_webhook(f"alerts.webhooks[{i}]", item) for i, item in enumerate(hooks)),
    )


def _model_states(path: str, value: object) -> tuple[str, ...]:
    if isinstance(value, list) and all(v in ALERT_MODEL_STATES for v in value):
        return tuple(dict.fromkeys(value))
    raise ConfigError(f"{path}: must be a list of {', '.join(map(repr, ALERT_MODEL_STATES))}, got {_show(value)}")


def _watched_peers(path: str, value: object) -> tuple[str, ...]:
    """Peer ids, each optionally scoped to one swarm as ``SWARM:PEER_ID``."""
    if not isinstance(value, list):
        raise ConfigError(f"{path}: must be a list of base58 peer ids, got {_show(value)}")
    for i, item in enumerate(value):
        scope, sep, peer_id = item.rpartition(":") if isinstance(item, str) else ("", "", item)
        if not is_peer_id(peer_id) or (sep and not _SWARM_NAME.fullmatch(scope)):
            raise ConfigError(
                f"{path}[{i}]: must be a base58 peer id (Qm… or 12D3KooW…), optionally as SWARM:PEER_ID, "
                f"got {_show(item)}"
            )
    return tuple(dict.fromkeys(value))


def _webhook(path: str, raw: object) -> WebhookConfig:
    table = _table(raw, path, ("url", "format", "timeout", "max_attempts", "backoff_seconds", "send_resolved"))
    if "url" not in table:
        raise ConfigError(f"{_join(path, 'url')}: is required")
    d = WebhookConfig(url="")
    fmt = _get(table, path, "format", _text, d.format)
    if fmt not in WEBHOOK_FORMATS:
        raise ConfigError(f"{_join(path, 'format')}: must be one of {', '.join(WEBHOOK_FORMATS)}, got {_show(fmt)}")
    return WebhookConfig(
        url=_webhook_url(_join(path, "url"), table["url"]),
        format=fmt,
        timeout=_get(table, path, "timeout", _number, d.timeout),
        max_attempts=_get(table, path, "max_attempts", lambda p, v: _int(p, v, 1, 20), d.max_attempts),
        backoff_seconds=_get(table, path, "backoff_seconds", _non_negative, d.backoff_seconds),
        send_resolved=_get(table, path, "send_resolved", _bool, d.send_resolved),
    )


def _non_negative(path: str, value: object) -> float:
    return _number(path, value, strict=False)


def _webhook_url(path: str, value: object) -> str:
    """An http(s) URL with a host. The error never repeats the URL: its path or query may hold a secret token."""
    if isinstance(value, str) and not any(ch.isspace() for ch in value):
        try:
            parts = urlsplit(value)
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if port_ok and parts.scheme in ("http", "https") and parts.hostname:
            return value
    raise ConfigError(f"{path}: must be an http:// or https:// URL with a host (value not shown: it may hold a secret)")


def _geo(raw: object) -> GeoConfig:
    table = _table(raw, "geo", ("enabled", "asn"))
    d = GeoConfig()
    return GeoConfig(
        enabled=_get(table, "geo", "enabled", _bool, d.enabled), asn=_get(table, "geo", "asn", _bool, d.asn)
    )


def _route(raw: object) -> RouteConfig:
    table = _table(raw, "route", ("session_tokens",))
    check = lambda p, v: _int(p, v, 1, 1_000_000)  # noqa: E731
    return RouteConfig(session_tokens=_get(table, "route", "session_tokens", check, SESSION_TOKENS))


def vantage_name(path: str, value: object) -> str:
    """A vantage point's name: the same alphabet as a swarm's (it is shown on pages and stored)."""
    if isinstance(value, str) and _SWARM_NAME.fullmatch(value):
        return value
    raise ConfigError(
        f"{path}: must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit, got {_show(value)}"
    )


def _vantage(raw: object) -> VantageConfig:
    table = _table(raw, "vantage", ("name", "max_age", "probe_interval"))
    d = VantageConfig()
    return VantageConfig(
        name=_get(table, "vantage", "name", vantage_name, d.name),
        max_age=_get(table, "vantage", "max_age", _number, d.max_age),
        probe_interval=_get(table, "vantage", "probe_interval", _number, d.probe_interval),
    )


def _versions(raw: object) -> VersionsConfig:
    from .rules.versions import parse_version

    table = _table(raw, "versions", ("min_version",))
    value = table.get("min_version", VersionsConfig().min_version)
    if not isinstance(value, str) or (value and parse_version(value) is None):
        raise ConfigError(f"versions.min_version: must be a version like '2.2.0' or '' (off), got {_show(value)}")
    return VersionsConfig(min_version=value)


def _web(raw: object) -> WebConfig:
    table = _table(
        raw,
        "web",
        (
            "host",
            "port",
            "official_metric_names",
            "events_max_clients",
            "events_max_per_client",
            "events_keepalive_seconds",
            "read_timeout_seconds",
        ),
    )
    d = WebConfig()
    return WebConfig(
        host=_get(table, "web", "host", _host, d.host),
        port=_get(table, "web", "port", lambda p, v: _int(p, v, 0, 65535), d.port),
        official_metric_names=_get(table, "web", "official_metric_names", _bool, d.official_metric_names),
        events_max_clients=_get(
            table, "web", "events_max_clients", lambda p, v: _int(p, v, 0, 100_000), d.events_max_clients
        ),
        events_max_per_client=_get(
            table, "web", "events_max_per_client", lambda p, v: _int(p, v, 1, 100_000), d.events_max_per_client
        ),
        events_keepalive_seconds=_get(
            table, "web", "events_keepalive_seconds", _at_least(1.0), d.events_keepalive_seconds
        ),
        read_timeout_seconds=_get(table, "web", "read_timeout_seconds", _at_least(0.1), d.read_timeout_seconds),
    )


def _at_least(minimum: float) -> Callable[[str, object], float]:
    """A reader of a number >= ``minimum``."""
    return lambda path, value: _number(path, value, minimum=minimum, strict=False)


def _host(path: str, value: object) -> str:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            if _HOSTNAME.fullmatch(value):
                return value
    raise ConfigError(f"{path}: must be an IP address or a host name, got {_show(value)}")


_SWARM_KEYS = (
    "name",
    "initial_peers",
    "models",
    "discover_models",
    "custom_model_policy",
    "interval_seconds",
    "cron",
    "min_redundancy",
    "max_expiration_ahead",
    "crawl_timeout",
    "rpc_timeout",
    "max_keys_per_request",
    "replica_quorum",
    "reachability",
)


def _swarm(path: str, raw: object, unnamed: str = "custom") -> SwarmConfig:
    """``unnamed``: the name of a swarm without ``name`` whose initial peers are not the public swarm's."""
    table = _table(raw, path, _SWARM_KEYS)
    d = SwarmConfig()
    initial_peers = _get(table, path, "initial_peers", _initial_peers, d.initial_peers)
    name = _get(table, path, "name", _swarm_name, d.name if initial_peers == PUBLIC_INITIAL_PEERS else unnamed)
    if "models" in table:
        models = _models(_join(path, "models"), table["models"])
    else:  # the official models belong to the public swarm; a private swarm relies on discovery by default
        models = OFFICIAL_MODELS if initial_peers == PUBLIC_INITIAL_PEERS else ()
    discover = _get(table, path, "discover_models", _bool, d.discover_models)
    if not models and not discover:
        raise ConfigError(f"{_join(path, 'models')}: is empty and discover_models is false: nothing to monitor")
    for i, model in enumerate(models):
        if model.num_blocks == 0 and not discover:
            raise ConfigError(
                f"{path}.models[{i}].num_blocks: is required when discover_models is false "
                f"(it is otherwise read from _petals.models)"
            )
    if "cron" in table and "interval_seconds" in table:
        raise ConfigError(f"{path}: set either interval_seconds or cron, not both")
    cron = _get(table, path, "cron", _cron, None)
    interval = None if cron is not None else _get(table, path, "interval_seconds", _number, d.interval_seconds)
    rpc_timeout = _get(table, path, "rpc_timeout", _number, d.rpc_timeout)
    crawl_timeout = _get(table, path, "crawl_timeout", _number, d.crawl_timeout)
    if crawl_timeout < rpc_timeout:
        raise ConfigError(
            f"{_join(path, 'crawl_timeout')}: must be >= rpc_timeout ({rpc_timeout:g}), got {crawl_timeout:g}"
        )
    return SwarmConfig(
        name=name,
        initial_peers=initial_peers,
        models=models,
        discover_models=discover,
        custom_model_policy=_get(table, path, "custom_model_policy", _policy, d.custom_model_policy),
        interval_seconds=interval,
        cron=cron,
        min_redundancy=_get(table, path, "min_redundancy", lambda p, v: _int(p, v, 1, 1000), d.min_redundancy),
        max_expiration_ahead=_get(table, path, "max_expiration_ahead", _expiration_limit, d.max_expiration_ahead),
        crawl_timeout=crawl_timeout,
        rpc_timeout=rpc_timeout,
        max_keys_per_request=_get(
            table,
            path,
            "max_keys_per_request",
            lambda p, v: _int(p, v, 1, MAX_KEYS_PER_REQUEST),
            d.max_keys_per_request,
        ),
        replica_quorum=_get(table, path, "replica_quorum", lambda p, v: _int(p, v, 0, 20), d.replica_quorum),
        reachability=_reachability(_join(path, "reachability"), table.get("reachability", {})),
    )


def _keys_per_request(path: str, value: object) -> int:
    return _int(path, value, 1, MAX_KEYS_PER_REQUEST)


def _swarm_name(path: str, value: object) -> str:
    if isinstance(value, str) and _SWARM_NAME.fullmatch(value):
        return value
    raise ConfigError(f"{path}: must be 1-64 letters, digits, '_', '-' or '.', got {_show(value)}")


def _policy(path: str, value: object) -> CustomModelPolicy:
    if value in CUSTOM_MODEL_POLICIES:
        return value  # type: ignore[return-value]
    raise ConfigError(f"{path}: must be one of {', '.join(CUSTOM_MODEL_POLICIES)}, got {_show(value)}")


def _cron(path: str, value: object) -> str:
    from apscheduler.triggers.cron import CronTrigger  # validation only; the scheduler builds its own trigger

    text = _text(path, value)
    try:
        CronTrigger.from_crontab(text)
    except ValueError as e:
        raise ConfigError(f"{path}: not a crontab expression ({e}), got {_show(value)}") from None
    return text


def _reachability(path: str, raw: object) -> ReachabilityConfig:
    table = _table(raw, path, ("enabled", "timeout", "cache_ttl", "concurrency"))
    d = ReachabilityConfig()
    return ReachabilityConfig(
        enabled=_get(table, path, "enabled", _bool, d.enabled),
        timeout=_get(table, path, "timeout", _number, d.timeout),
        cache_ttl=_get(table, path, "cache_ttl", lambda p, v: _number(p, v, strict=False), d.cache_ttl),
        concurrency=_get(table, path, "concurrency", lambda p, v: _int(p, v, 1, 1024), d.concurrency),
    )


def validate_multiaddr(path: str, value: object) -> str:
    """A multiaddr that parses and ends in ``/p2p/<base58 peer id>`` (the peer we expect to answer)."""
    from multiaddr import Multiaddr  # imported lazily: it pulls in a lot, and only config needs it

    text = _text(path, value)
    try:
        protocols = [p.name for p in Multiaddr(text).protocols()]
    except Exception as e:  # multiaddr raises several unrelated types for bad input
        raise ConfigError(f"{path}: not a valid multiaddr ({e}), got {_show(value)}") from None
    last = text.rstrip("/").rsplit("/", 2)
    if len(protocols) < 2 or protocols[-1] != "p2p" or len(last) < 3 or not is_peer_id(last[-1]):
        raise ConfigError(f"{path}: must be a dialable address ending in /p2p/<peer id>, got {_show(value)}")
    return text


def _initial_peers(path: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: must be a non-empty list of multiaddrs, got {_show(value)}")
    return tuple(validate_multiaddr(f"{path}[{i}]", item) for i, item in enumerate(value))


def _models(path: str, value: object) -> tuple[ModelInfo, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: must be an array of tables ([[swarms.models]]), got {_show(value)}")
    models = tuple(_model(f"{path}[{i}]", item) for i, item in enumerate(value))
    prefixes = [m.dht_prefix for m in models]
    for i, prefix in enumerate(prefixes):
        if prefix in prefixes[:i]:
            raise ConfigError(f"{path}[{i}].dht_prefix: duplicate model {prefix!r}")
    return models


def _model(path: str, raw: object) -> ModelInfo:
    table = _table(raw, path, ("dht_prefix", "num_blocks", "repository", "name"))
    if "dht_prefix" not in table:
        raise ConfigError(f"{_join(path, 'dht_prefix')}: is required")
    prefix = table["dht_prefix"]
    if not is_valid_dht_prefix(prefix) or prefix.startswith("_"):
        raise ConfigError(
            f"{_join(path, 'dht_prefix')}: must be a Petals dht_prefix (no '.', no spaces, not starting with '_'), "
            f"got {_show(prefix)}"
        )
    # 0 means "unknown": taken from the _petals.models index at crawl time
    num_blocks = _get(table, path, "num_blocks", lambda p, v: _int(p, v, 0, MAX_NUM_BLOCKS), 0)
    return ModelInfo(
        dht_prefix=prefix,
        num_blocks=num_blocks,
        repository=_get(table, path, "repository", _url, None),
        name=_get(table, path, "name", _text, None),
        official=True,
    )


def _url(path: str, value: object) -> str:
    text = _text(path, value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(ch.isspace() for ch in text):
        raise ConfigError(
            f"{path}: must be an http(s) URL such as https://huggingface.co/org/model, got {_show(value)}"
        )
    return text
