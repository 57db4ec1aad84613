"""`python -m bench --stack lean|libp2p`: our side's host gets the chosen connection stack, hivemind's side nothing."""

from __future__ import annotations

import contextlib

import pytest

import bench.__main__ as bench_main
from bench import side_ours
from bench.measure import SideRun
from bench.scenarios import Scenario


def test_stack_is_a_choice_with_lean_by_default():
    parser = bench_main.build_parser()
    assert parser.parse_args([]).stack == "lean"
    assert parser.parse_args(["--stack", "libp2p"]).stack == "libp2p"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--stack", "tcp"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("stack", ["lean", "libp2p"])
def test_the_stack_reaches_our_side_only(monkeypatch, tmp_path, stack):
    configs: dict[str, dict] = {}

    def fake_run_side(side, module, config, *, timeout, log_dir):
        configs[side] = config
        return SideRun(side, 1.0, 1.0, 0.1, 20_000, 20_000, 2.0, 2.0, {"found": 1})

    monkeypatch.setattr(bench_main, "run_side", fake_run_side)
    scenario = Scenario("x", "a fake scenario", ours={"mode": "get_many"}, theirs={"mode": "get_many"}, expected={})
    doc = bench_main.run_benchmark(scenario, 1, tmp_path, lambda _text: None, stack)
    assert configs["ours"] == {"mode": "get_many", "stack": stack}
    assert configs["hivemind"] == {"mode": "get_many"}
    assert scenario.ours == {"mode": "get_many"}  # the scenario itself is left as it was
    assert doc["same_result"] is True


class _HostOpened(Exception):
    pass


@pytest.mark.parametrize(("config", "lean"), [({}, True), ({"stack": "lean"}, True), ({"stack": "libp2p"}, False)])
async def test_our_side_opens_its_host_with_that_stack(monkeypatch, config, lean):
    seen: list[bool] = []

    @contextlib.asynccontextmanager
    async def fake_open_host(**kwargs):
        seen.append(kwargs["lean"])
        raise _HostOpened
        yield  # pragma: no cover

    monkeypatch.setattr("dht.net.transport.open_host", fake_open_host)
    with pytest.raises(_HostOpened):
        await side_ours._run({"mode": "get_many", "initial_peers": [], "keys": [], **config})
    assert seen == [lean]
