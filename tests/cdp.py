"""A small Chrome DevTools Protocol client (over aiohttp's websocket) for what ``--screenshot``/``--dump-dom`` cannot
do: load pages at a phone's viewport, measure them (``document.documentElement.scrollWidth``) and screenshot them, or
keep a page open while the test changes what it shows (live updates, tests/web/test_browser_live.py).

One headless Debian chromium per :func:`open_page`, a throwaway profile, the debugging port on 127.0.0.1 only, and
a deadline on every call. Used by the phone-screen tests (tests/web/test_phone_screens.py, test_demo_command.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from chromium import CHROMIUM, FLAGS

CALL_TIMEOUT = 30.0
START_TIMEOUT = 30.0
# Elements and text whose right edge passes the viewport, outside any box that scrolls or clips them: says what
# widens a page that does not fit (text overflowing a narrower box is not in its element's rectangle).
OFFENDERS_JS = """
(() => {
  const width = document.documentElement.clientWidth + 0.5;
  const inScroller = e => {
    for (let p = e; p && p !== document.body; p = p.parentElement)
      if (getComputedStyle(p).overflowX !== 'visible') return true;
    return false;
  };
  const name = e => e.tagName.toLowerCase() + (typeof e.className === 'string' && e.className ? '.' + e.className : '');
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode() && out.length < 8) {
    const range = document.createRange();
    range.selectNodeContents(walker.currentNode);
    const right = range.getBoundingClientRect().right;
    const parent = walker.currentNode.parentElement;
    const text = JSON.stringify(walker.currentNode.textContent.trim().slice(0, 60));
    if (right > width && !inScroller(parent)) out.push(name(parent) + ' right=' + Math.round(right) + ' ' + text);
  }
  for (const e of document.querySelectorAll('body *'))
    if (out.length < 12 && e.getBoundingClientRect().right > width && !inScroller(e.parentElement))
      out.push(name(e) + ' right=' + Math.round(e.getBoundingClientRect().right));
  return out;
})()
"""


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: list[dict] = []

    async def call(self, method: str, **params) -> dict:
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        async with asyncio.timeout(CALL_TIMEOUT):
            while True:
                message = json.loads((await self._ws.receive()).data)
                if message.get("id") == call_id:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})
                self._events.append(message)

    async def _event(self, method: str) -> dict:
        async with asyncio.timeout(CALL_TIMEOUT):
            while True:
                for i, event in enumerate(self._events):
                    if event.get("method") == method:
                        return self._events.pop(i)
                self._events.append(json.loads((await self._ws.receive()).data))

    async def goto(self, url: str) -> None:
        self._events.clear()
        await self.call("Page.navigate", url=url)
        await self._event("Page.loadEventFired")

    async def wait_for_load(self) -> None:
        """The next load event (after a navigation the page started itself, e.g. a clicked link)."""
        await self._event("Page.loadEventFired")

    async def evaluate(self, expression: str, *, await_promise: bool = False):
        """``expression``'s value; with ``await_promise``, the value its promise resolves to (within the deadline)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        """The whole page, not only the viewport."""
        metrics = await self.call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}
        shot = await self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


def _devtools_port(profile: Path, proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"chromium did not open its debugging port within {START_TIMEOUT} s")


@contextlib.asynccontextmanager
async def open_page(width: int, height: int, *, mobile: bool = True) -> AsyncIterator[Page]:
    """A page whose viewport is ``width`` x ``height`` CSS pixels (``mobile``: the meta viewport applies, as on a
    phone)."""
    assert CHROMIUM is not None, "chromium is not installed"
    # chromium's helpers may still write the profile after it exits: a leftover temp dir is no test failure
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile_dir:
        profile = Path(profile_dir)
        proc = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = await asyncio.to_thread(_devtools_port, profile, proc)
            timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as reply:
                    targets = await reply.json()
                url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                async with session.ws_connect(url, max_msg_size=64 * 1024 * 1024) as ws:
                    page = Page(ws)
                    await page.call("Page.enable")
                    await page.call(
                        "Emulation.setDeviceMetricsOverride",
                        width=width,
                        height=height,
                        deviceScaleFactor=1,
                        mobile=mobile,
                    )
                    yield page
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


async def measure_widths(base: str, paths: list[str], width: int, out_dir: Path) -> dict[str, tuple[int, list]]:
    """Each page's ``scrollWidth`` at ``width`` px (with the elements that overflow), and a screenshot of it in
    ``out_dir`` (its path printed, so a run's log says where to look)."""
    results: dict[str, tuple[int, list]] = {}
    async with open_page(width, 900) as page:
        for i, path in enumerate(paths):
            await page.goto(base.rstrip("/") + path)
            scroll_width = await page.evaluate("document.documentElement.scrollWidth")
            offenders = await page.evaluate(OFFENDERS_JS) if scroll_width > width else []
            shot = out_dir / f"{i:02d}-{path.strip('/').replace('/', '_').replace('?', '_') or 'overview'}.png"
            await page.screenshot(shot)
            print(f"{width}px {path}: scrollWidth={scroll_width} screenshot {shot}")
            results[path] = (scroll_width, offenders)
    return results
