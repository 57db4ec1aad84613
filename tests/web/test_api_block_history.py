"""``/api/v1/models/{dht_prefix}/blocks/history``: per-block series and dark periods, validated by the OpenAPI
document; bounded output; bad parameters are a 400 with a JSON error."""

from __future__ import annotations

import pytest
from test_api_endpoints import check
from web_harness import MIXTRAL, NOW, SWARM

from monitor.store.block_history import MAX_CELLS


@pytest.fixture(scope="module")
def spec(live):
    return live.get("/api/v1/openapi.json").json()


def _blocks_url(prefix: str, **query: object) -> str:
    args = "&".join(f"{k}={v}" for k, v in {"swarm": SWARM, **query}.items())
    return f"/api/v1/models/{prefix}/blocks/history?{args}"


def test_every_block_has_one_point_per_crawl(spec, live, fx):
    report = fx.snapshots[-1].models[2]  # MIXTRAL: a prefix with a slash
    doc = check(spec, live, _blocks_url(MIXTRAL, since=NOW - 3600, until=NOW))
    assert (doc["dht_prefix"], doc["num_blocks"], doc["step"], doc["coarsened"]) == (
        MIXTRAL,
        report.model.num_blocks,
        None,
        False,
    )
    assert [b["block"] for b in doc["blocks"]] == list(range(report.model.num_blocks))
    for entry in doc["blocks"]:
        assert len(entry["series"]) == len(fx.crawl_ids)
        online = [p["min_online"] for p in entry["series"]]
        expected = [s.models[2].blocks[entry["block"]].online for s in fx.snapshots]
        assert online == expected


def test_dark_blocks_are_listed_with_start_end_and_duration(spec, live, fx):
    checked = 0
    for m, report in enumerate(fx.snapshots[-1].models):
        prefix = report.model.dht_prefix
        doc = check(spec, live, _blocks_url(prefix, since=NOW - 3600))
        for entry in doc["blocks"]:
            dark_at = [s.finished_at for s in fx.snapshots if s.models[m].blocks[entry["block"]].online == 0]
            if not dark_at:
                assert entry["dark"] == []
                continue
            checked += 1
            first = entry["dark"][0]
            assert first["start"] == dark_at[0]
            if report.blocks[entry["block"]].online == 0:  # dark at the last crawl: still open
                assert entry["dark"][-1]["end"] is None and entry["dark"][-1]["last_dark"] == dark_at[-1]
            else:
                assert entry["dark"][-1]["end"] is not None and entry["dark"][-1]["end"] > dark_at[-1]
            assert all(d["duration"] >= 0 for d in entry["dark"])
            assert [d["approximate"] for d in entry["dark"]] == [False] * len(entry["dark"])  # raw crawls: exact
    assert checked  # the factory's broken model has holes


def test_output_is_bounded_and_says_it_was_coarsened(spec, live, fx):
    doc = check(spec, live, _blocks_url(MIXTRAL, since=NOW - 30 * 86400, until=NOW, step=1))
    assert doc["coarsened"] is True and doc["requested_step"] == 1 and doc["step"] > 1
    assert sum(len(b["series"]) for b in doc["blocks"]) <= MAX_CELLS
    assert sum(p["crawls"] for p in doc["blocks"][0]["series"]) == len(fx.crawl_ids)


def test_an_empty_range_of_a_known_model_is_empty_and_an_unknown_model_is_404(spec, live):
    doc = check(spec, live, _blocks_url(MIXTRAL, since=1_000_000_000, until=1_000_000_100))
    assert doc["blocks"] == [] and doc["num_blocks"] == 0
    check(spec, live, _blocks_url("no-such-model"), 404)


@pytest.mark.parametrize(
    "query",
    ["since=abc", "since=10&until=5", "step=0", "step=-5", "until=nan", "since=1e300", "swarm=nope"],
)
def test_bad_parameters_are_a_json_error(live, query):
    reply = live.get(f"/api/v1/models/Llama-2-70b-chat-hf/blocks/history?{query}")
    assert reply.status in (400, 404) and reply.status == (404 if query.startswith("swarm") else 400)
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json()["error"]["message"]
