"""Debian's headless chromium for the browser tests (tests/web/test_browser.py, tests/monitor/test_demo_command.py).

``make test`` installs it when run as root; elsewhere ``CHROMIUM`` is None and those tests say they were skipped.
Every run gets a throwaway profile and no network features (the pages it loads are on 127.0.0.1).

Live pages (overview, model, server) keep an EventSource open (static/js/live.js). ``--virtual-time-budget`` never
ends while a request is pending, so with it, load them with ``?live=0``; ``--dump-dom`` and ``--screenshot``
without it are fine. To act while a page stays open, drive it over DevTools (tests/cdp.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, "chromium is not installed"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
