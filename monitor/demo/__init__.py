"""``python -m monitor demo``: a living Petals swarm on 127.0.0.1, monitored by the real app, no network needed.

Module map:

- ``scenario``     pure and seeded: models, simulated servers, spans, life events on a fake clock
- ``announce``     scenario announcements → Petals' exact DHT records (ServerInfo tuples, ``_petals.models``)
- ``swarm``        trio: our DHT nodes, announcements over rpc_store, one libp2p host per hosted server
- ``peer_routing`` kad FIND_NODE answers on our nodes, so the monitor can dial simulated servers
- ``identity``     seeded Ed25519 PeerIDs

The demo uses short Petals timings (announce every 15 s, records live 30 s, churn every 2 min; see
``scenario``), so joins, leaves, crashes and moves show within the first minute. The monitor crawls every
10 s and caches reachability for one update period, so the dashboard follows along.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from .scenario import Scenario, ScenarioParams
    from .swarm import DemoSwarm, SwarmOptions

log = logging.getLogger(__name__)

EXIT_OK, EXIT_BAD_ARGS = 0, 2
SWARM_START_TIMEOUT = 60.0


def demo_config(
    scenario: Scenario,
    initial_peers: list[str],
    *,
    port: int,
    db_path: str,
    crawl_interval: float | None = None,
    log_level: str = "INFO",
) -> Config:
    """The monitor's configuration for the demo swarm: its bootstrap peers and the models in its config."""
    from ..config import Config, ReachabilityConfig, SwarmConfig, WebConfig

    period = scenario.params.update_period
    swarm = SwarmConfig(
        name="demo",
        initial_peers=tuple(initial_peers),
        models=tuple(scenario.config_models()),
        interval_seconds=crawl_interval or max(2.0, round(period * 2 / 3, 1)),
        crawl_timeout=30.0,
        rpc_timeout=3.0,
        reachability=ReachabilityConfig(timeout=3.0, cache_ttl=period),
    )
    return Config(swarms=(swarm,), db_path=db_path, web=WebConfig(host="127.0.0.1", port=port), log_level=log_level)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for ``--port 0``; the dashboard URL must name a real port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _initial_peers(swarm: DemoSwarm) -> list[str]:
    return swarm.initial_peers


@contextlib.contextmanager
def background_swarm(scenario: Scenario, options: SwarmOptions | None = None):
    """Run the swarm on its own trio thread for the duration of the block; yields its initial peers."""
    from ..crawl.bridge import TrioBridge
    from .swarm import run_swarm

    bridge: TrioBridge = TrioBridge(lambda: run_swarm(scenario, options), name="demo-swarm")
    bridge.start(timeout=SWARM_START_TIMEOUT)
    try:
        yield bridge.submit(_initial_peers).result(timeout=SWARM_START_TIMEOUT)
    finally:
        bridge.stop()


def run_demo(
    params: ScenarioParams,
    *,
    port: int = 8080,
    db_path: str | None = None,
    options: SwarmOptions | None = None,
    log_level: str = "INFO",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Start the demo swarm, then serve the monitor on 127.0.0.1 until Ctrl-C; everything stops on the way out."""
    from ..app import serve
    from .scenario import Scenario, summarize

    scenario = Scenario(params)
    summary = summarize(scenario)
    port = port or free_port()
    with contextlib.ExitStack() as stack:
        if db_path is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="petals-monitor-demo-"))
            db_path = str(Path(tmp) / "demo.db")
        peers = stack.enter_context(background_swarm(scenario, options))
        log.info(
            "demo: %d models, %d servers (%d with hosts; %s), update period %g s, records live %g s",
            summary.models,
            summary.servers,
            summary.hosts,
            ", ".join(f"{n} {b}" for b, n in sorted(summary.by_behaviour.items())),
            params.update_period,
            params.expiration,
        )
        config = demo_config(scenario, peers, port=port, db_path=db_path, log_level=log_level)
        serve(config, on_ready=on_ready)


def params_from_args(args: argparse.Namespace) -> ScenarioParams:
    """``--seed --models --blocks --servers --period`` → scenario parameters (``ValueError`` if inconsistent)."""
    from .scenario import ScenarioParams

    fields: dict = {"seed": args.seed}
    if args.models is not None:
        fields["extra_models"] = args.models
    if args.blocks is not None:
        fields["blocks_per_extra_model"] = args.blocks
    if args.servers is not None:
        fields["num_servers"] = args.servers
    if args.period is not None:
        fields["update_period"] = args.period
    params = ScenarioParams(**fields)
    params.validate()
    return params


def run_demo_cli(args: argparse.Namespace) -> int:
    """The ``demo`` subcommand: exit 0 after Ctrl-C, 2 on bad arguments (one line on stderr)."""
    try:
        params = params_from_args(args)
        if args.port is not None and not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {args.port}")
    except ValueError as e:
        print(f"demo: {e}", file=sys.stderr)
        return EXIT_BAD_ARGS

    def ready(url: str) -> None:
        print(f"Demo swarm is up. Dashboard: {url}  (Ctrl-C to stop)", file=sys.stderr, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        run_demo(params, port=args.port, db_path=args.db, log_level=args.log_level or "INFO", on_ready=ready)
    return EXIT_OK


__all__ = ["background_swarm", "demo_config", "params_from_args", "run_demo", "run_demo_cli"]
