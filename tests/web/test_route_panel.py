"""The model page's route panel shows what /api/v1/models/{p}/route says, with untrusted text kept inert."""

from __future__ import annotations

import re

from web_harness import OTHER_SWARM, SWARM

from monitor.report import short_peer_id


def _get(live, path: str):
    reply = live.get(path)
    assert reply.status == 200, (path, reply.status, reply.text[:300])
    return reply


def _panel(page: str) -> str:
    found = re.search(r'<section class="route-panel">(.*?)</section>', page, re.S)
    assert found, "the model page has no route panel"
    return found.group(1)


def test_panel_of_a_runnable_model_lists_the_api_chain(live):
    path = f"Llama-2-70b-chat-hf?swarm={OTHER_SWARM}"
    doc = _get(live, f"/api/v1/models/Llama-2-70b-chat-hf/route?swarm={OTHER_SWARM}").json()
    assert doc["runnable"]
    panel = _panel(_get(live, f"/models/{path}").text)
    assert "Runnable." in panel and f"{doc['steps_per_second']:,.1f} steps/s" in panel
    shown = re.findall(r'<a class="peer" href="/servers/(\w+)"', panel.split("Skipped servers")[0])
    assert shown == [hop["peer_id"] for hop in doc["chain"]]
    assert f"{doc['disjoint_chains']} <span" in panel
    assert short_peer_id(doc["bottleneck"]["peer_id"]) in panel


def test_panel_of_a_model_that_is_not_runnable_names_the_missing_blocks_and_the_skips(live, fx):
    penalized = 0
    for report in fx.snapshots[-1].models:
        prefix = report.model.dht_prefix
        doc = _get(live, f"/api/v1/models/{prefix}/route?swarm={SWARM}").json()
        page = _get(live, f"/models/{prefix}?swarm={SWARM}").text
        panel = _panel(page)
        assert "<script>" not in panel  # errors and names from the network are escaped
        assert f"Skipped servers ({len(doc['skipped'])})" in panel
        for skipped in doc["skipped"]:
            assert f"/servers/{skipped['peer_id']}" in panel
        penalized += len(doc["penalized"])
        if doc["penalized"]:  # short of cache: used with Petals' penalty, listed apart from the skipped
            assert f"Servers short of cache ({len(doc['penalized'])}): used, with a penalty" in panel
            assert all(f"/servers/{p['peer_id']}" in panel for p in doc["penalized"])
        if not doc["runnable"]:
            assert "Not runnable." in panel and "MissingBlocksError" in panel
            start, end = doc["missing_ranges"][0]
            first = f"{start}–{end - 1}" if end - start > 1 else f"{start}"
            assert f"holds blocks {first}" in panel or f"holds block {first}" in panel
    assert penalized  # the factory's servers have random cache left: some are short of it
