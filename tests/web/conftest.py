"""The web tests' shared set-up: one store file of factory crawls per test module, and the app serving it."""

from __future__ import annotations

import pytest
from web_harness import build_store, served


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """The factory crawls in a store file of this module's own (a module may override it with other crawls)."""
    return build_store(tmp_path_factory.mktemp("web") / "monitor.db")


@pytest.fixture(scope="module")
def live(fx):
    """The app over ``fx``'s store on 127.0.0.1, closed with the module."""
    with served(fx.path) as app:
        yield app
