"""monitor.config: layering (file < env < CLI), one clear error per bad setting, and documentation coverage."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from monitor.config import (
    ENV_VARS,
    OFFICIAL_MODELS,
    PUBLIC_INITIAL_PEERS,
    AlertsConfig,
    Config,
    ConfigError,
    ConfigOverrides,
    GeoConfig,
    ReachabilityConfig,
    RetentionConfig,
    RouteConfig,
    SwarmConfig,
    VersionsConfig,
    WebConfig,
    WebhookConfig,
    load_config,
)
from monitor.snapshot import ModelInfo

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
PEER = "/ip4/127.0.0.1/tcp/31337/p2p/12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
PEER2 = "/ip6/::1/tcp/4000/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"


def load(tmp_path, text: str | None = None, env=None, **overrides) -> Config:
    path = None
    if text is not None:
        path = tmp_path / "config.toml"
        path.write_text(text)
    return load_config(path, env or {}, ConfigOverrides(**overrides))


def error(tmp_path, text: str | None = None, env=None, **overrides) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text, env, **overrides)
    return str(e.value)


# ---- defaults and layering


def test_live_event_limits_reach_the_web(tmp_path):
    from monitor.web.settings import WebSettings

    text = "[web]\nevents_max_clients = 7\nevents_max_per_client = 3\nevents_keepalive_seconds = 2.5\n"
    settings = WebSettings.from_config(load(tmp_path, text))
    assert (settings.events_max_clients, settings.events_max_per_client, settings.events_keepalive_seconds) == (
        7,
        3,
        2.5,
    )
    defaults = WebSettings.from_config(load(tmp_path))
    assert (defaults.events_max_clients, defaults.events_max_per_client) == (1000, 20)
    assert load(tmp_path, "[web]\nevents_keepalive_seconds = 1\n").web.events_keepalive_seconds == 1.0  # the floor


def test_defaults_are_health_petals_dev(tmp_path):
    config = load(tmp_path)
    (swarm,) = config.swarms
    assert swarm.initial_peers == PUBLIC_INITIAL_PEERS and len(PUBLIC_INITIAL_PEERS) == 6
    assert [(m.dht_prefix, m.num_blocks) for m in swarm.models] == [
        ("Meta-Llama-3-1-405B-Instruct-hf", 126),
        ("mistralai/Mixtral-8x22B-Instruct-v0-1", 56),
    ]
    assert all(m.official for m in swarm.models)
    assert (swarm.interval_seconds, swarm.cron, swarm.min_redundancy, swarm.max_keys_per_request) == (60, None, 2, 64)
    assert swarm.reachability == ReachabilityConfig(enabled=True, timeout=5.0, cache_ttl=300.0, concurrency=128)
    assert (config.web.host, config.web.port, config.log_level) == ("127.0.0.1", 8080, "INFO")


def test_example_file_loads_to_the_defaults():
    assert load_config(EXAMPLE, {}, ConfigOverrides()) == load_config(None, {}, ConfigOverrides())


def test_file_then_env_then_cli(tmp_path):
    text = f"""
db_path = "file.db"
log_level = "debug"
[web]
port = 9000
[[swarms]]
name = "private"
initial_peers = ["{PEER}"]
cron = "*/5 * * * *"
[[swarms.models]]
dht_prefix = "my-model"
num_blocks = 12
[[swarms]]
name = "second"
initial_peers = ["{PEER2}"]
"""
    config = load(tmp_path, text)
    assert config.db_path == "file.db" and config.log_level == "DEBUG" and config.web.port == 9000
    first, second = config.swarms
    assert first.cron == "*/5 * * * *" and first.interval_seconds is None
    assert first.models == (ModelInfo("my-model", 12, official=True),)
    assert second.models == ()  # a private swarm does not get the public official models
    env = {"PETALS_MONITOR_DB": "env.db", "PETALS_MONITOR_PORT": "9100", "PETALS_MONITOR_MODELS": "a:3, b"}
    config = load(tmp_path, text, env)
    assert (config.db_path, config.web.port) == ("env.db", 9100)
    assert [(m.dht_prefix, m.num_blocks) for m in config.swarms[0].models] == [("a", 3), ("b", 0)]
    config = load(tmp_path, text, env, db_path="cli.db", port=0, initial_peers=(PEER2,), models=("c:7",))
    assert (config.db_path, config.web.port) == ("cli.db", 0)
    assert config.swarms[0].initial_peers == (PEER2,)
    assert config.swarms[0].models == (ModelInfo("c", 7, official=True),)
    assert config.swarms[1].initial_peers == (PEER2,) and config.swarms[1].name == "second"


def test_store_url_is_db_path_and_env_or_cli_replace_it(tmp_path):
    url = "postgresql://monitor:pw@db.internal:5432/monitor"
    assert load(tmp_path, f'[store]\nurl = "{url}"\n').db_path == url
    assert load(tmp_path, f'[store]\nurl = "{url}"\n', env={"PETALS_MONITOR_DB": "e.db"}).db_path == "e.db"
    assert load(tmp_path, f'[store]\nurl = "{url}"\n', db_path="cli.db").db_path == "cli.db"
    assert "either db_path or [store] url" in error(tmp_path, f'db_path = "a.db"\n[store]\nurl = "{url}"\n')
    assert "store.other: unknown setting" in error(tmp_path, "[store]\nother = 1\n")


def test_config_path_from_env(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('db_path = "from-env-path.db"\n')
    assert load_config(None, {"PETALS_MONITOR_CONFIG": str(path)}, ConfigOverrides()).db_path == "from-env-path.db"


def test_cli_model_without_count_uses_known_official_or_learns(tmp_path):
    config = load(tmp_path, models=("mistralai/Mixtral-8x22B-Instruct-v0-1", "custom-prefix", "a:b:9"))
    assert [(m.dht_prefix, m.num_blocks) for m in config.swarms[0].models] == [
        ("mistralai/Mixtral-8x22B-Instruct-v0-1", 56),
        ("custom-prefix", 0),
        ("a:b", 9),
    ]
    assert config.swarms[0].models[0].repository == OFFICIAL_MODELS[1].repository


def test_cli_initial_peer_alone_drops_the_public_models(tmp_path):
    (swarm,) = load(tmp_path, initial_peers=(PEER,)).swarms
    assert swarm.initial_peers == (PEER,) and swarm.models == ()
    peers = load(tmp_path, env={"PETALS_MONITOR_INITIAL_PEERS": f"{PEER}, {PEER2}"}).swarms[0].initial_peers
    assert peers == (PEER, PEER2)


def test_daily_days_zero_means_forever(tmp_path):
    assert load(tmp_path, "[retention]\ndaily_days = 0\n").retention.daily_days is None
    assert load(tmp_path, "[retention]\ndaily_days = 400\n").retention == RetentionConfig(7.0, 30.0, 400.0)


def test_pings_days_default_one_zero_keeps_them(tmp_path):
    assert load(tmp_path).retention.pings_days == 1.0
    assert load(tmp_path, "[retention]\npings_days = 0\n").retention.pings_days is None
    assert load(tmp_path, "[retention]\npings_days = 0.25\n").retention.pings_days == 0.25
    with pytest.raises(ConfigError, match=r"retention\.pings_days: must be a positive number"):
        load(tmp_path, "[retention]\npings_days = -1\n")


def test_config_is_frozen(tmp_path):
    config = load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.db_path = "x"  # type: ignore[misc]


# ---- one clear error per bad setting


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[swarms]]\ninterval_seconds = -5\n", "swarms[0].interval_seconds: must be a positive number, got -5"),
        ("[[swarms]]\ninterval_seconds = true\n", "swarms[0].interval_seconds: must be a positive number, got True"),
        ("[[swarms]]\ninterval_secnds = 5\n", "swarms[0].interval_secnds: unknown setting"),
        ("db_pth = 'x'\n", "db_pth: unknown setting"),
        ("[web]\nprot = 1\n", "web.prot: unknown setting"),
        ("[web]\nport = 70000\n", "web.port: must be an integer in 0..65535, got 70000"),
        ("[web]\nport = '80'\n", "web.port: must be an integer in 0..65535, got '80'"),
        ("[web]\nhost = 'bad host!'\n", "web.host: must be an IP address or a host name"),
        ("[web]\nevents_max_clients = -1\n", "web.events_max_clients: must be an integer in 0..100000, got -1"),
        ("[web]\nevents_max_per_client = 0\n", "web.events_max_per_client: must be an integer in 1..100000, got 0"),
        ("[web]\nevents_keepalive_seconds = 0.5\n", "web.events_keepalive_seconds: must be a number >= 1"),
        ("log_level = 'LOUD'\n", "log_level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'"),
        ("db_path = ''\n", "db_path: must be a non-empty string"),
        ("swarms = []\n", "swarms: must be a non-empty array of tables"),
        ("[[swarms]]\nname = 'a b'\n", "swarms[0].name: must be 1-64 letters"),
        ("[[swarms]]\n[[swarms]]\n", "swarms[1].name: duplicate swarm name 'public'"),
        ("[[swarms]]\ninitial_peers = []\n", "swarms[0].initial_peers: must be a non-empty list of multiaddrs"),
        ("[[swarms]]\ninitial_peers = ['/ip4/1.2.3/tcp/1']\n", "swarms[0].initial_peers[0]: not a valid multiaddr"),
        (
            "[[swarms]]\ninitial_peers = ['/ip4/127.0.0.1/tcp/1']\n",
            "swarms[0].initial_peers[0]: must be a dialable address ending in /p2p/<peer id>",
        ),
        (
            "[[swarms]]\ninitial_peers = ['/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY']\n",
            "swarms[0].initial_peers[0]: must be a dialable address ending in /p2p/<peer id>",
        ),
        ("[[swarms]]\ncron = '* * *'\n", "swarms[0].cron: not a crontab expression"),
        ("[[swarms]]\ncron = '* * * * *'\ninterval_seconds = 5\n", "swarms[0]: set either interval_seconds or cron"),
        ("[[swarms]]\ncustom_model_policy = 'all'\n", "swarms[0].custom_model_policy: must be one of huggingface, any"),
        ("[[swarms]]\ndiscover_models = 'yes'\n", "swarms[0].discover_models: must be true or false, got 'yes'"),
        ("[[swarms]]\nmin_redundancy = 0\n", "swarms[0].min_redundancy: must be an integer in 1..1000, got 0"),
        ("[[swarms]]\nmax_keys_per_request = 0\n", "swarms[0].max_keys_per_request: must be an integer in 1..10000"),
        ("[[swarms]]\nreplica_quorum = 21\n", "swarms[0].replica_quorum: must be an integer in 0..20"),
        ("[[swarms]]\nrpc_timeout = nan\n", "swarms[0].rpc_timeout: must be a positive number, got nan"),
        ("[[swarms]]\nmax_expiration_ahead = 1\n", "swarms[0].max_expiration_ahead: must be a number >= 60, got 1"),
        ("[[swarms]]\ncrawl_timeout = 3\n", "swarms[0].crawl_timeout: must be >= rpc_timeout (5), got 3"),
        ("[[swarms]]\n[swarms.reachability]\ntimout = 1\n", "swarms[0].reachability.timout: unknown setting"),
        ("[[swarms]]\n[swarms.reachability]\nconcurrency = 0\n", "swarms[0].reachability.concurrency: must be"),
        (
            "[[swarms]]\n[swarms.reachability]\ncache_ttl = -1\n",
            "swarms[0].reachability.cache_ttl: must be a number >= 0",
        ),
        ("[[swarms]]\n[[swarms.models]]\nnum_blocks = 3\n", "swarms[0].models[0].dht_prefix: is required"),
        ("[[swarms]]\n[[swarms.models]]\ndht_prefix = 'a.b'\n", "swarms[0].models[0].dht_prefix: must be a Petals"),
        ("[[swarms]]\n[[swarms.models]]\ndht_prefix = '_private'\n", "swarms[0].models[0].dht_prefix: must be"),
        (
            "[[swarms]]\n[[swarms.models]]\ndht_prefix = 'a'\nnum_blocks = -1\n",
            "swarms[0].models[0].num_blocks: must be an integer in 0..4096, got -1",
        ),
        (
            "[[swarms]]\n[[swarms.models]]\ndht_prefix = 'a'\nrepository = 'huggingface.co/x'\n",
            "swarms[0].models[0].repository: must be an http(s) URL",
        ),
        (
            "[[swarms]]\n[[swarms.models]]\ndht_prefix = 'a'\nrepository = 'javascript:alert(1)'\n",
            "swarms[0].models[0].repository: must be an http(s) URL",
        ),
        (
            "[[swarms]]\n[[swarms.models]]\ndht_prefix = 'a'\nnum_blocks = 2\n[[swarms.models]]\ndht_prefix = 'a'\n",
            "swarms[0].models[1].dht_prefix: duplicate model 'a'",
        ),
        (
            "[[swarms]]\nmodels = []\ndiscover_models = false\n",
            "swarms[0].models: is empty and discover_models is false",
        ),
        (
            "[[swarms]]\ndiscover_models = false\n[[swarms.models]]\ndht_prefix = 'a'\n",
            "swarms[0].models[0].num_blocks: is required when discover_models is false",
        ),
        ("[retention]\nraw_days = 10\nhourly_days = 5\n", "retention.hourly_days: must be >= raw_days (10), got 5"),
        ("[retention]\ndaily_days = 10\n", "retention.daily_days: must be 0 (forever) or >= hourly_days (30), got 10"),
        ("[retention]\nraw_days = 0\n", "retention.raw_days: must be a positive number, got 0"),
        ("web = 5\n", "web: must be a table, got 5"),
        ("this is not toml\n", "invalid TOML"),
    ],
)
def test_bad_file_settings(tmp_path, text, message):
    msg = error(tmp_path, text)
    assert message in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    assert "not found" in error_path(tmp_path / "missing.toml")


def error_path(path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, {}, ConfigOverrides())
    return str(e.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PETALS_MONITOR_DATABASE": "x"}, "PETALS_MONITOR_DATABASE: unknown environment variable"),
        ({"PETALS_MONITOR_PORT": "eighty"}, "PETALS_MONITOR_PORT: must be an integer port, got 'eighty'"),
        ({"PETALS_MONITOR_PORT": "99999"}, "web.port: must be an integer in 0..65535, got 99999"),
        ({"PETALS_MONITOR_LOG_LEVEL": "chatty"}, "log_level: must be one of"),
        ({"PETALS_MONITOR_INITIAL_PEERS": "/ip4/127.0.0.1/tcp/5"}, "swarms[0].initial_peers[0]: must be a dialable"),
    ],
)
def test_bad_environment(tmp_path, env, message):
    assert message in error(tmp_path, env=env)


def test_unrelated_environment_is_ignored(tmp_path):
    assert load(tmp_path, env={"PATH": "/bin", "PETALS_OTHER": "x"}).db_path == "petals-monitor.db"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"initial_peers": ("not-a-multiaddr",)}, "swarms[0].initial_peers[0]: not a valid multiaddr"),
        ({"models": ("bad prefix:3",)}, "swarms[0].models[0].dht_prefix: must be a Petals dht_prefix"),
        ({"models": ("m:5000",)}, "swarms[0].models[0].num_blocks: must be an integer in 0..4096, got 5000"),
        ({"port": -1}, "web.port: must be an integer in 0..65535, got -1"),
        ({"log_level": "nope"}, "log_level: must be one of"),
    ],
)
def test_bad_overrides(tmp_path, overrides, message):
    assert message in error(tmp_path, **overrides)


# ---- documentation coverage (datasette-style): every setting is in config.example.toml


def _documented_keys() -> set[str]:
    return set(re.findall(r"^\s*#?\s*([a-z_]+)\s*=", EXAMPLE.read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize(
    "cls",
    [
        Config,
        SwarmConfig,
        ReachabilityConfig,
        RetentionConfig,
        WebConfig,
        AlertsConfig,
        WebhookConfig,
        GeoConfig,
        VersionsConfig,
        RouteConfig,
    ],
)
def test_every_setting_is_documented(cls):
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in _documented_keys()]
    # nested tables are documented by their [section] header instead of `name =`
    text = EXAMPLE.read_text()
    missing = [name for name in missing if f"[{name}]" not in text and f"[swarms.{name}]" not in text]
    missing = [name for name in missing if f"[[{name}]]" not in text and f"[[swarms.{name}]]" not in text]
    assert missing == [], f"{cls.__name__} fields not documented in config.example.toml: {missing}"


def test_model_settings_are_documented():
    documented = _documented_keys()
    for name in ("dht_prefix", "num_blocks", "repository", "name"):
        assert name in documented


def test_every_environment_variable_is_documented():
    text = EXAMPLE.read_text()
    assert [name for name in ENV_VARS if name not in text] == []


def test_crawl_worker_is_a_process_by_default_and_checked(tmp_path):
    assert load(tmp_path).crawl_worker == "process"
    assert load(tmp_path, 'crawl_worker = "thread"').crawl_worker == "thread"
    assert error(tmp_path, 'crawl_worker = "fork"') == "crawl_worker: must be one of 'process', 'thread', got 'fork'"


# ---- the name of a swarm nobody named


def test_a_swarm_of_other_initial_peers_is_not_called_public(tmp_path):
    """``--initial-peer`` (or the environment) without a name: "custom", or after the config file; the public
    swarm keeps "public", and a name that is given always wins."""
    assert load(tmp_path, initial_peers=(PEER,)).swarms[0].name == "custom"
    assert load(tmp_path, env={"PETALS_MONITOR_INITIAL_PEERS": PEER}).swarms[0].name == "custom"
    assert load(tmp_path).swarms[0].name == "public"
    assert load(tmp_path, "[[swarms]]\nmin_redundancy = 1\n").swarms[0].name == "public"
    (tmp_path / "lab.toml").write_text(
        f'[[swarms]]\ninitial_peers = ["{PEER}"]\n[[swarms]]\ninitial_peers = ["{PEER2}"]\n'
    )
    assert [s.name for s in load_config(tmp_path / "lab.toml", {}).swarms] == ["lab", "lab-1"]
    assert load_config(tmp_path / "lab.toml", {}, ConfigOverrides(initial_peers=(PEER2,))).swarms[0].name == "lab"
    assert load(tmp_path, f'[[swarms]]\nname = "public"\ninitial_peers = ["{PEER}"]\n').swarms[0].name == "public"
    (tmp_path / "public.toml").write_text("")  # other peers under a file called public.toml: still not "public"
    assert load_config(tmp_path / "public.toml", {}, ConfigOverrides(initial_peers=(PEER,))).swarms[0].name == "custom"
    (tmp_path / "my swarm!.toml").write_text("")  # not a valid swarm name: fall back to "custom"
    assert (
        load_config(tmp_path / "my swarm!.toml", {}, ConfigOverrides(initial_peers=(PEER,))).swarms[0].name == "custom"
    )
