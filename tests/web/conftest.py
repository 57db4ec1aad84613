"""The web tests' shared set-up: one store file of factory crawls per test module, and the app serving it."""

from __future__ import annotations

import pytest
from pg_cluster import BACKENDS
from web_harness import build_store, serve, served


@pytest.fixture(scope="module", params=BACKENDS)
def web_db(request, tmp_path_factory):
    """This module's empty store: an SQLite file, or a database of the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        yield tmp_path_factory.mktemp("web") / "monitor.db"
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    yield url
    cluster.drop_database(url)


@pytest.fixture(scope="module")
def fx(web_db):
    """The factory crawls in a store of this module's own (a module may override it with other crawls)."""
    return build_store(web_db)


@pytest.fixture(scope="module")
def live(fx):
    """The app over ``fx``'s store on 127.0.0.1, closed with the module."""
    with served(fx.path) as app:
        yield app


@pytest.fixture
def own_site(tmp_path):
    """(the app on 127.0.0.1, its Fixture) over an SQLite store of this test's own, which it may write crawls to."""
    fx = build_store(tmp_path / "monitor.db")
    live, store = serve(fx.path)
    yield live, fx
    live.close()
    store.close()
