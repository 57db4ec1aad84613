"""Shared fixtures: the protocol vectors produced by real hivemind 1.1.12."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    """SIGTERM (what CI's runner sends on a time-out) stops the run as Ctrl-C does: fixtures tear down, so the
    swarms and servers the tests started are stopped, not orphaned."""
    signal.signal(signal.SIGTERM, _interrupt)


# Real hivemind nodes in a subprocess (one harness per session). Modules import it as ``interop_fixtures``
# (tests/ is on sys.path): one module name, so one harness process.
pytest_plugins = ["interop_fixtures"]

VECTORS = Path(__file__).resolve().parent / "vectors"


def _load(name: str):
    path = VECTORS / name
    if not path.exists():
        pytest.fail(f"protocol vectors missing: {path} (tests/vectors/README.md says how to regenerate them)")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def vectors() -> dict:
    return _load("vectors.json")


@pytest.fixture(scope="session")
def sim_trace() -> dict:
    return _load("sim_trace.json")


@pytest.fixture(scope="session")
def live_trace() -> dict:
    return _load("live_trace.json")


# ---- store backends: SQLite, and PostgreSQL on a throwaway cluster (tests/pg_cluster.py; marker `postgres`)

from pg_cluster import BACKENDS  # noqa: E402 (tests/ is on sys.path)


@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL server for the session, stopped (by pid) and removed at the end; skips when unavailable."""
    from pg_cluster import Unavailable, start_cluster

    try:
        cluster = start_cluster()
    except Unavailable as e:
        pytest.skip(str(e))
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh empty database of the session's cluster, dropped after the test."""
    url = pg_cluster.new_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(params=BACKENDS)
def db_location(request, tmp_path):
    """Where the test's store lives: an SQLite file, or a fresh PostgreSQL database (a URL)."""
    if request.param == "sqlite":
        return tmp_path / "monitor.db"
    return request.getfixturevalue("pg_url")
