"""Config sections beyond the official monitor: [alerts] (+ webhooks), [geo], [versions]."""

from __future__ import annotations

import pytest

from monitor.config import AlertsConfig, ConfigError, GeoConfig, VersionsConfig, WebhookConfig, load_config

PEER = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
SECRET = "T0KEN-123"


def load(tmp_path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, {})


def error(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    return str(e.value)


def test_defaults(tmp_path):
    config = load(tmp_path, "")
    assert config.alerts == AlertsConfig()
    assert config.alerts.model_states == ("broken", "degraded") and config.alerts.crawl_failures == 3
    assert config.geo == GeoConfig(enabled=True, asn=True)
    assert config.versions == VersionsConfig(min_version="2.2.0")


def test_route_session_tokens_reaches_the_planner_of_the_alerts_and_the_web(tmp_path):
    """``[route] session_tokens`` sizes the cache check wherever a route is planned."""
    from monitor.alerts.rules import AlertRules
    from monitor.rules.route import SESSION_TOKENS
    from monitor.web.settings import WebSettings

    assert load(tmp_path, "").route.session_tokens == SESSION_TOKENS
    config = load(tmp_path, "[route]\nsession_tokens = 4096")
    assert config.route.session_tokens == 4096
    assert AlertRules.from_config(config.alerts, config.route).session_tokens == 4096
    assert WebSettings.from_config(config).session_tokens == 4096


def test_full_alerts_section(tmp_path):
    config = load(
        tmp_path,
        f"""
[alerts]
model_states = ["broken"]
not_runnable = false
min_online = 2
bootstrap_down = false
crawl_failures = 0
watch_servers = ["{PEER}", "private:{PEER}"]
[[alerts.webhooks]]
url = "https://discord.com/api/webhooks/1/{SECRET}"
format = "discord"
timeout = 3
max_attempts = 2
backoff_seconds = 0
send_resolved = false
[[alerts.webhooks]]
url = "http://127.0.0.1:9000/hook"
[geo]
enabled = false
[versions]
min_version = ""
""",
    )
    a = config.alerts
    assert (a.model_states, a.min_online, a.bootstrap_down, a.crawl_failures) == (("broken",), 2, False, 0)
    assert a.not_runnable is False and AlertsConfig().not_runnable is True
    assert a.watch_servers == (PEER, f"private:{PEER}")
    assert a.webhooks[0] == WebhookConfig(
        url=f"https://discord.com/api/webhooks/1/{SECRET}",
        format="discord",
        timeout=3.0,
        max_attempts=2,
        backoff_seconds=0.0,
        send_resolved=False,
    )
    assert a.webhooks[1].format == "generic" and a.webhooks[1].max_attempts == 4
    assert not config.geo.enabled and config.versions.min_version == ""


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://example.com/{SECRET}",
        f"file:///etc/{SECRET}",
        f"javascript:alert('{SECRET}')",
        f"https:///{SECRET}",
        f"https://example.com/ {SECRET}",
        f"http://example.com:99999/{SECRET}",
    ],
)
def test_webhook_urls_must_be_http_and_are_never_echoed(tmp_path, url):
    message = error(tmp_path, f'[[alerts.webhooks]]\nurl = "{url}"\n')
    assert message.startswith("alerts.webhooks[0].url: must be an http:// or https:// URL")
    assert SECRET not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[alerts]\nmodel_states = ["sad"]', "alerts.model_states: must be a list of"),
        ("[alerts]\nmin_online = -1", "alerts.min_online: must be an integer in 0..1000"),
        ('[alerts]\nwatch_servers = ["not-a-peer"]', "alerts.watch_servers[0]: must be a base58 peer id"),
        (f'[alerts]\nwatch_servers = ["bad swarm:{PEER}"]', "alerts.watch_servers[0]"),
        ("[alerts]\nbogus = 1", "alerts.bogus: unknown setting"),
        ('[[alerts.webhooks]]\nformat = "generic"', "alerts.webhooks[0].url: is required"),
        ('[[alerts.webhooks]]\nurl = "https://x.org/h"\nformat = "teams"', "alerts.webhooks[0].format: must be one of"),
        ('[[alerts.webhooks]]\nurl = "https://x.org/h"\nmax_attempts = 0', "max_attempts: must be an integer in 1..20"),
        ('[[alerts.webhooks]]\nurl = "https://x.org/h"\ntimeout = 0', "alerts.webhooks[0].timeout: must be a positive"),
        ("[geo]\nasn = 1", "geo.asn: must be true or false"),
        ('[versions]\nmin_version = "banana"', "versions.min_version: must be a version like"),
        ("[route]\nsession_tokens = 0", "route.session_tokens: must be an integer in 1..1000000"),
        ("[route]\nmax_length = 512", "route.max_length: unknown setting"),
    ],
)
def test_bad_values_name_the_setting(tmp_path, text, expected):
    assert expected in error(tmp_path, text)
