"""Pure pieces of the web: input validation, token buckets, TTL cache, charts, formatting, settings."""

from __future__ import annotations

import pytest
from factories import make_peer_id

from monitor.web import charts, params
from monitor.web.ratelimit import TokenBuckets, TTLCache
from monitor.web.settings import WebSettings
from monitor.web.templating import fmt_duration, fmt_period, fmt_ttl, model_url, precision


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_peer_ids():
    import random

    rng = random.Random(0)
    assert all(params.is_peer_id(make_peer_id(rng)) for _ in range(50))
    assert params.is_peer_id("QmNqcDCBdcRjh9nQkdVsfKtTr1GtM4iKJoDKwJzxyFvTQh")
    for bad in ("", "Qm", "QmNqcDCBdcRjh9nQkdVsfKtTr1GtM4iKJoDKwJzxyFvTQ", "0" * 46, "12D3KooW", "a b", "é" * 10):
        assert not params.is_peer_id(bad), bad
    with pytest.raises(params.ClientError):
        params.peer_id("nope")


def test_at_distinguishes_crawl_ids_from_times():
    assert params.at(None) is None and params.at("") is None
    assert params.at("42") == ("crawl", 42)
    assert params.at("1700000000") == ("time", 1_700_000_000.0)
    assert params.at("1700000000.5") == ("time", 1_700_000_000.5)
    for bad in ("abc", "-1", "0", "inf", "nan", "1e300"):
        with pytest.raises(params.ClientError):
            params.at(bad)


def test_time_range_limit_and_step():
    assert params.time_range(None, None, now=100.0, default_span=10) == (90.0, 100.0)
    assert params.time_range("5", "50", now=100.0, default_span=10) == (5.0, 50.0)
    with pytest.raises(params.ClientError):
        params.time_range("60", "50", now=100.0, default_span=10)
    assert params.limit(None) == 100 and params.limit("5") == 5
    for bad in ("0", "-3", "x", "1001"):
        with pytest.raises(params.ClientError):
            params.limit(bad)
    assert params.step("60") == 60.0 and params.step(None) is None
    with pytest.raises(params.ClientError):
        params.step("0.5")


def test_token_bucket_refills_on_the_clock_and_keys_are_separate():
    clock = Clock()
    buckets = TokenBuckets(burst=2, rate=1.0, clock=clock)
    assert buckets.take("a") == 0 and buckets.take("a") == 0
    assert buckets.take("a") == pytest.approx(1.0)
    assert buckets.take("b") == 0  # another client is not affected
    clock.t += 1.0
    assert buckets.take("a") == 0


def test_token_bucket_forgets_old_keys():
    buckets = TokenBuckets(burst=1, rate=0.0, clock=Clock(), max_keys=2)
    for key in ("a", "b", "c"):
        buckets.take(key)
    assert buckets.take("a") == 0  # "a" was evicted, so it starts with a full bucket


def test_ttl_cache_expires_and_is_bounded():
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, clock=clock, max_items=2)
    cache.put("a", 1)
    assert cache.get("a") == 1
    clock.t = 10.0
    assert cache.get("a") is None
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None and cache.get("c") == 3


def test_step_chart_geometry():
    chart = charts.step_chart([(0.0, 0.0), (50.0, 10.0)], t0=0.0, t1=100.0)
    assert not chart.empty and chart.y_max == 10.0 and chart.last == 10.0
    points = [tuple(map(float, p.split(","))) for p in chart.points.split()]
    assert points[0] == (0.0, 99.0) and points[-1] == (1000.0, 1.0)
    assert all(0 <= x <= 1000 and 0 <= y <= 100 for x, y in points)
    assert charts.step_chart([], t0=0, t1=1).empty
    assert charts.step_chart([(0.0, float("nan"))], t0=0, t1=1).empty


def test_state_bands_cover_the_range():
    bands = charts.state_bands([(0.0, "healthy", "h"), (50.0, "broken", "b")], t0=0.0, t1=100.0)
    assert [(b.x, b.width, b.css) for b in bands] == [(0.0, 500.0, "healthy"), (500.0, 500.0, "broken")]


def test_formatting():
    assert fmt_duration(0.25) == "250 ms" and fmt_duration(7.5) == "7.5 s" and fmt_duration(125) == "2m 05s"
    assert fmt_ttl(-30) == "expired 30.0 s ago"
    assert fmt_period(60) == "60 s" and fmt_period(300) == "5 min" and fmt_period(3600) == "1 h"
    assert model_url("mistralai/Mixtral-8x22B") == "/models/mistralai/Mixtral-8x22B"
    assert model_url("a b?c#d") == "/models/a%20b%3Fc%23d"


def test_precision_as_the_official_monitor_shows_it():
    from monitor.snapshot import ServerInfo

    assert precision(ServerInfo(2, 1.0, torch_dtype="float16", quant_type="nf4")) == "f16 (nf4)"
    assert precision(ServerInfo(2, 1.0, torch_dtype="bfloat16", quant_type="none")) == "bf16"


def test_settings_from_the_monitor_config():
    from monitor.config import Config, SwarmConfig

    config = Config(swarms=(SwarmConfig(name="a", interval_seconds=30.0), SwarmConfig(name="b", interval_seconds=None)))
    settings = WebSettings.from_config(config)
    assert settings.interval("a") == 30.0
    assert settings.interval("b") == settings.default_interval
    assert WebSettings.from_config(None) == WebSettings()
