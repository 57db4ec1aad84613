"""``monitor probe --vantage NAME``: real processes probing the servers of the newest crawl into one database.

The embedded demo swarm runs in this process (on 127.0.0.1, its churn slowed so nothing changes during the test);
``crawl --once`` and two ``probe --once`` processes run as a cron job would, on SQLite and on a real PostgreSQL.
Everything here runs on one loopback, so every vantage point must see exactly what the crawler saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.demo import background_swarm
from monitor.demo.scenario import Scenario, ScenarioParams
from monitor.store.sqlite import Store

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 120.0  # bound on each process (a loaded 2-core machine starts them slowly)


@pytest.fixture(scope="module")
def slow_demo_swarm():
    """The demo cast with a 10-minute update period: no server changes state while the test runs."""
    scenario = Scenario(ScenarioParams(seed=5, update_period=600.0))
    with background_swarm(scenario) as peers:
        yield scenario, peers


def write_config(path: Path, db: object, scenario: Scenario, peers: list[str]) -> Path:
    lines = [
        f'db_path = "{db}"',
        "[geo]",
        "enabled = false",
        "[alerts]",
        "enabled = false",
        "[[swarms]]",
        'name = "demo"',
        "initial_peers = " + json.dumps(peers),  # a JSON list of strings is a TOML array
        "discover_models = false",
        "crawl_timeout = 60",
        "rpc_timeout = 3",
        "[swarms.reachability]",
        "timeout = 10",  # a loaded 2-core machine can make a loopback probe take seconds: never a false "no"
    ]
    for model in scenario.config_models():
        lines += ["[[swarms.models]]", f'dht_prefix = "{model.dht_prefix}"', f"num_blocks = {model.num_blocks}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def monitor(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"monitor {proc.args[3:]} did not finish in {RUN_TIMEOUT:.0f} s: {err[-2000:]}")
    return proc.returncode, err


@pytest.mark.timeout(600)
def test_two_probe_processes_and_the_crawler_agree_on_every_server(slow_demo_swarm, db_location, tmp_path):
    scenario, peers = slow_demo_swarm
    config = str(write_config(tmp_path / "demo.toml", db_location, scenario, peers))
    code, err = finish(monitor("probe", "--once", "--config", config, "--vantage", "early"))
    assert code == 1 and "no good crawl of this swarm in the database yet" in err  # nothing to probe yet: exit 1
    code, err = finish(monitor("crawl", "--once", "--config", config, "--vantage", "main"))
    assert code == 0, err[-2000:]
    probes = [monitor("probe", "--once", "--config", config, "--vantage", name) for name in ("eu", "us")]
    for proc in probes:  # both at once, on the same database
        code, err = finish(proc)
        assert code == 0, err[-2000:]
        assert "servers reached" in err
    with Store(db_location) as store:
        crawl_id, targets = store.probe_targets("demo")
        verdicts = store.reachable_from(crawl_id, max_age=600).by_peer
        snapshot = store.snapshot(crawl_id)
        assert store.crawl(crawl_id).vantage == "main"
    own = {row.peer_id: row.reachability.ok for m in snapshot.models for row in m.servers if row.reachability}
    assert set(targets) == set(own) and len(own) >= 5
    assert any(own.values()) and not all(own.values()), "the demo cast has reachable and unreachable servers"
    for peer, ok in own.items():
        results = verdicts[peer].results
        assert [r.vantage for r in results] == ["eu", "main", "us"]
        assert [r.ok for r in results] == [ok, ok, ok], f"{peer}: {results}"


@pytest.mark.timeout(300)
def test_a_long_running_probe_stops_cleanly_on_sigterm(slow_demo_swarm, tmp_path):
    scenario, peers = slow_demo_swarm
    db = tmp_path / "m.db"
    config = str(write_config(tmp_path / "demo.toml", db, scenario, peers))
    code, err = finish(monitor("crawl", "--once", "--config", config))
    assert code == 0, err[-2000:]
    proc = monitor("probe", "--config", config, "--vantage", "eu")
    try:
        for line in proc.stderr:  # its first round done: it now waits for the next
            if "servers reached" in line:
                break
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err and code == 0 and "vantage eu: stopped (SIGTERM)" in err, err[-2000:]


@pytest.mark.parametrize("name", ["", "a b", "-x", "x" * 65, "<script>"])
def test_a_bad_vantage_name_is_one_line_and_exit_2(name, tmp_path, capsys, monkeypatch):
    from monitor import stop_signals
    from monitor.cli import main

    monkeypatch.setattr(stop_signals, "stop_on_sigint_and_sigterm", lambda: None)  # not in pytest's own process

    with pytest.raises(SystemExit) as stop:
        main(["probe", "--once", "--db", str(tmp_path / "m.db"), f"--vantage={name}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("config error: vantage.name: must be 1-64 letters")


def test_a_max_age_shorter_than_a_cached_failure_lives_is_refused(tmp_path, capsys):
    from monitor.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text("[vantage]\nmax_age = 100\n")
    with pytest.raises(ConfigError, match=r"vantage.max_age: must be at least .* \(360 s\)"):
        load_config(path)
