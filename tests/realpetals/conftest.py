"""Fixtures for the `petals` tests: ONE swarm of real Petals servers per module, and our monitor on it.

The swarm (``monitor_runs.SPECS``): a bootstrap and servers a=[0,3) b=[2,4) c=[6,8) of an 8-block tiny Llama, so
block 2 is served twice and blocks 4-5 by nobody. Tests that stop servers come last in their module (file order).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitor_runs import PREFIX, SPECS, UPDATE_PERIOD, Serve, write_config
from petals_venv import build as build_petals_venv
from petals_venv import cache_root
from swarm import PetalsSwarm, free_port


def pytest_collection_modifyitems(items):
    """Every test that runs Petals (it asks for the venv, hence the swarm) is marked `petals`."""
    for item in items:
        if "petals_python" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.petals)
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def petals_python() -> Path:
    return build_petals_venv(log=lambda line: print(line, file=sys.stderr))


@pytest.fixture(scope="module")
def swarm(petals_python, tmp_path_factory):
    """Started once per module; every process it started is stopped when the module's tests are done, so the rest
    of the suite does not run beside a swarm."""
    workdir = tmp_path_factory.mktemp("petals-swarm")
    model = cache_root() / "tiny-llama-8"  # deterministic (seed 0), so safe to share between runs
    with PetalsSwarm(petals_python, workdir, model, PREFIX, SPECS, update_period=UPDATE_PERIOD) as running:
        yield running


PEAK = {"rss": 0, "pss": 0}


@pytest.fixture(autouse=True)
def _sample_swarm_memory(request):
    """After each test, the swarm's memory (its peak is printed at the end of the run)."""
    yield
    if "swarm" in request.fixturenames:
        rss, pss = request.getfixturevalue("swarm").memory()
        PEAK["rss"], PEAK["pss"] = max(PEAK["rss"], rss), max(PEAK["pss"], pss)


def pytest_terminal_summary(terminalreporter):
    if PEAK["rss"]:
        terminalreporter.write_line(
            f"real Petals swarm, peak after a test: RSS sum {PEAK['rss'] / 2**30:.2f} GiB, "
            f"PSS sum {PEAK['pss'] / 2**30:.2f} GiB"
        )


@pytest.fixture(scope="module")
def serve(swarm, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("monitor-serve")
    port = free_port()
    server = Serve(write_config(workdir / "serve.toml", swarm, port=port), port, workdir / "serve.log")
    try:
        server.next_crawl(after=0, timeout=90)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def once_config(swarm, tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("monitor-once") / "once.toml", swarm)
