"""Headless Chromium keeps a page open while a crawl is stored: the page changes without a reload (live.js over
/api/v1/events), ``?live=0`` keeps it still, a filtered table stays filtered (loaded so, or filtered in place by
table.js), and without JavaScript the server table's header links sort it. Screenshots land in the test's
tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from cdp import open_page
from chromium import CHROMIUM
from factories import make_snapshot
from web_harness import NOW, SWARM

from monitor.store.sqlite import StoreWriter
from monitor.web import events_of
from monitor.web.events import crawl_event

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]

GUARD = 60.0  # seconds: only against a hang
WATCH_CSP = (
    "window.violations = []; addEventListener('securitypolicyviolation', e => violations.push(e.violatedDirective))"
)
CRAWL_LINKS = "Array.from(document.querySelectorAll('.crawl-line a')).map(a => a.getAttribute('href'))"


def _store_newer_crawl(fx):
    """What the crawl job does, from the test: the writer stores a crawl, then the hub is told."""
    snap = make_snapshot(SWARM, t=NOW - 20, seed=11, n_models=1, hostile=False)
    with StoreWriter(fx.path) as writer:
        return writer.write_snapshot(snap)


def test_a_page_changes_after_a_crawl_is_stored_without_a_reload(own_site, tmp_path):
    live, fx = own_site
    hub = events_of(live.app)
    url = f"http://127.0.0.1:{live.client.server.port}/"

    async def main():
        async with open_page(1366, 900, mobile=False) as page:
            await page.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH_CSP)
            await page.goto(url)
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(hub.wait_for_clients(1), live.loop))
            before = await page.evaluate(CRAWL_LINKS)
            assert f"/crawls/{fx.crawl_ids[-1]}" in before
            await page.evaluate(
                "window.stillHere = true; window.updated = new Promise(r =>"
                " document.addEventListener('monitor:updated', () => r(true), {once: true}))"
            )
            summary = _store_newer_crawl(fx)
            live.loop.call_soon_threadsafe(hub.publish, "crawl", crawl_event(summary))
            async with asyncio.timeout(GUARD):
                assert await page.evaluate("window.updated", await_promise=True) is True
            after = await page.evaluate(CRAWL_LINKS)
            assert f"/crawls/{summary.id}" in after and f"/crawls/{fx.crawl_ids[-1]}" not in after
            assert await page.evaluate("window.stillHere === true")  # the same document: no reload
            assert await page.evaluate("document.body.getAttribute('data-live')") == "on"
            assert await page.evaluate("document.body.getAttribute('data-live-updates')") == "1"
            assert await page.evaluate("window.violations") == []  # the CSP let the stream and the fetch through
            await page.screenshot(tmp_path / "overview-after-live-update.png")

    asyncio.run(main())


def test_live_0_and_past_views_stay_still_and_header_links_sort_on_the_server(own_site, tmp_path):
    live, fx = own_site
    hub = events_of(live.app)
    base = f"http://127.0.0.1:{live.client.server.port}"
    report = fx.snapshots[-1].models[0]

    async def main():
        async with open_page(1366, 900, mobile=False) as page:
            await page.goto(f"{base}/?live=0")
            assert await page.evaluate("document.body.hasAttribute('data-refresh')") is False
            assert await page.evaluate("document.body.hasAttribute('data-live')") is False
            assert hub.clients == 0  # the page opened no stream (it had loaded: its scripts have run)
            await page.goto(f"{base}/?at={fx.crawl_ids[0]}")  # a past state never changes either
            assert await page.evaluate("document.body.hasAttribute('data-live')") is False
            assert hub.clients == 0

            # without JavaScript the header links sort on the server (with it, table.js sorts in place:
            # test_browser_table.py)
            await page.goto(f"{base}/models/{report.model.dht_prefix}?swarm={SWARM}&live=0")
            href = await page.evaluate("document.querySelector('th a.sort-link[href*=\"sort=peer_id\"]').href")
            await page.call("Emulation.setScriptExecutionDisabled", value=True)
            await page.goto(href)
            assert await page.evaluate("document.querySelector('th[aria-sort]').dataset.column") == "peer_id"
            ids = await page.evaluate(
                "Array.from(document.querySelectorAll('table.servers tbody tr:not([hidden]) td:nth-child(2)'))"
                ".map(td => td.getAttribute('data-value'))"
            )
            assert ids == sorted(r.peer_id for r in report.servers)
            search = await page.evaluate("location.search")
            assert "sort=peer_id" in search and "live=0" in search  # the links keep the off switch
            await page.screenshot(tmp_path / "model-sorted-by-peer-id.png")

    asyncio.run(main())


@pytest.mark.parametrize("in_place", [False, True], ids=["loaded-filtered", "filtered-in-place"])
def test_a_filtered_model_page_stays_filtered_when_it_updates(own_site, in_place):
    """Loaded with ?state=online, or filtered in place by table.js (which keeps the address in step, and live.js
    re-fetches that address): the new crawl's table comes filtered."""
    live, fx = own_site
    hub = events_of(live.app)
    report = fx.snapshots[-1].models[0]
    url = f"http://127.0.0.1:{live.client.server.port}/models/{report.model.dht_prefix}?swarm={SWARM}"
    online = sum(1 for r in report.servers if r.state == "online")
    select = "document.querySelector('form.table-filter select[name=state]')"

    async def main():
        async with open_page(1366, 900, mobile=False) as page:
            await page.goto(url if in_place else url + "&state=online")
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(hub.wait_for_clients(1), live.loop))
            if in_place:
                await page.evaluate(
                    "window.placed = new Promise(r => document.addEventListener('monitor:table', () => r(true),"
                    f" {{once: true}})); {select}.value = 'online';"
                    f" {select}.dispatchEvent(new Event('change', {{bubbles: true}}))"
                )
                async with asyncio.timeout(GUARD):
                    await page.evaluate("window.placed", await_promise=True)
            await page.evaluate(
                "document.getElementById('show-full-ids').click(); window.updated = new Promise(r =>"
                " document.addEventListener('monitor:updated', () => r(true), {once: true}))"
            )
            snap = dataclasses.replace(fx.snapshots[-1], started_at=NOW - 15, finished_at=NOW - 10)
            with StoreWriter(fx.path) as writer:
                summary = writer.write_snapshot(snap)
            live.loop.call_soon_threadsafe(hub.publish, "crawl", crawl_event(summary))
            async with asyncio.timeout(GUARD):
                await page.evaluate("window.updated", await_promise=True)
            shown = "table.servers tbody tr[data-row]:not([hidden])"  # the others are drawn hidden, for table.js
            rows = await page.evaluate(f"document.querySelectorAll('{shown}').length")
            assert rows == online
            assert await page.evaluate("document.querySelector('table.servers').dataset.crawl") == str(summary.id)
            assert await page.evaluate(f"{select}.value") == "online"
            assert await page.evaluate("document.getElementById('show-full-ids').checked") is True

    asyncio.run(main())
