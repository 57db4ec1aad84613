"""``python -m monitor``: serve (web + scheduler), crawl --once (cron-friendly), probe (a vantage point: probes
only, no web), demo (embedded local swarm).

Exit codes: 0 ok, 1 the crawl failed (``probe``: a round stored nothing for some swarm), 2 bad arguments, config
or database path (one clear line on stderr), 3 ``crawl --once`` lost the database mid-run (one line). ``crawl
--once`` skips a swarm another process leads, or whose lock it lost mid-run (PostgreSQL replicas): one line on
stderr, not a failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_CRAWL_FAILED, EXIT_BAD_CONFIG, EXIT_DATABASE_LOST = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line (its default is 2 too, plus the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_CONFIG, f"{self.prog}: error: {message}\n")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (see config.example.toml)")
    p.add_argument(
        "--initial-peer",
        metavar="MULTIADDR",
        action="append",
        default=[],
        help="bootstrap peer of the swarm (repeatable; replaces the configured ones)",
    )
    p.add_argument(
        "--model",
        metavar="DHT_PREFIX[:NUM_BLOCKS]",
        action="append",
        default=[],
        help="model to report on (repeatable; replaces the configured ones)",
    )
    p.add_argument("--db", metavar="PATH|URL", help="SQLite database path, or a postgresql:// URL")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default from config: INFO)")
    p.add_argument(
        "--vantage",
        metavar="NAME",
        help="this process's vantage point, shown beside its probes (config: [vantage] name)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m monitor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the web app and the crawl scheduler")
    _add_common(serve)
    serve.add_argument("--host", help="listen address (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default from config: 8080)")
    serve.add_argument(
        "--official-metric-names",
        action="store_true",
        default=None,
        help="/metrics also under health.petals.dev's names, for its dashboards (config: [web] official_metric_names)",
    )

    crawl = sub.add_parser("crawl", help="crawl each swarm once, store the snapshot, exit")
    _add_common(crawl)
    crawl.add_argument("--once", action="store_true", required=True, help="crawl once and exit (for cron)")
    crawl.add_argument("--json", action="store_true", help="print the /api/v1/state document of the crawl")

    probe = sub.add_parser(
        "probe", help="probe the newest crawl's servers from here every [vantage] probe_interval, store the results"
    )
    _add_common(probe)
    probe.add_argument("--once", action="store_true", help="one round, then exit (for cron)")

    demo = sub.add_parser("demo", help="start a local demo swarm on 127.0.0.1 and monitor it")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--models", type=int, default=None, help="number of extra synthetic models")
    demo.add_argument("--blocks", type=int, default=None, help="blocks per synthetic model")
    demo.add_argument("--servers", type=int, default=None, help="number of simulated servers")
    demo.add_argument("--port", type=int, default=8080, help="dashboard port on 127.0.0.1 (0 = any free port)")
    demo.add_argument("--period", type=float, default=None, help="announce period of simulated servers, seconds")
    demo.add_argument("--db", metavar="PATH", help="SQLite path (default: a temporary file)")
    demo.add_argument("--log-level", default="INFO")
    return parser


def _load(args: argparse.Namespace):
    from .config import ConfigError, ConfigOverrides, load_config

    overrides = ConfigOverrides(
        initial_peers=tuple(args.initial_peer),
        models=tuple(args.model),
        db_path=args.db,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        log_level=args.log_level,
        official_metric_names=getattr(args, "official_metric_names", None),
        vantage=args.vantage,
    )
    try:
        config = load_config(args.config, os.environ, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    _check_database(config.db_path)
    return config


def _check_database(path: str) -> None:
    from .store.dbcheck import DatabaseUnusable, check_database

    try:
        check_database(path)
    except DatabaseUnusable as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def _setup_logging(level: str | None) -> None:
    logging.basicConfig(
        level=(level or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:
        # py-libp2p logs every failed dial at ERROR; our own typed errors already say what happened.
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("serve", "demo", "probe"):  # long-running: kill -INT and -TERM stop it, even in the background
        from .stop_signals import stop_on_sigint_and_sigterm

        stop_on_sigint_and_sigterm()
    if args.command == "demo":
        _setup_logging(args.log_level)
        if args.db is not None:
            _check_database(args.db)
        from .demo import run_demo_cli

        return run_demo_cli(args)

    config = _load(args)
    _setup_logging(config.log_level)
    if args.command == "serve":
        from .app import serve

        serve(config)
        return EXIT_OK

    if args.command == "probe":
        from .crawl.vantage import probe_main

        return probe_main(config, once=args.once)

    from .crawl.oneshot import DatabaseLost, Skipped, crawl_once

    try:
        results = crawl_once(config)
    except DatabaseLost as e:
        print(f"crawl --once: {e}", file=sys.stderr)
        return EXIT_DATABASE_LOST
    crawled = [s for s in results if not isinstance(s, Skipped)]
    for result in results:  # stderr, with or without --json
        if isinstance(result, Skipped):
            print(result.message, file=sys.stderr)
        elif result.status != "succeeded":
            reason = result.error or "no reason given"
            print(f"crawl {result.crawl_id} of {result.swarm} failed: {reason}", file=sys.stderr)
    if args.json:
        from .report import state_document

        docs = [s.document() if isinstance(s, Skipped) else state_document(s) for s in results]
        json.dump(docs[0] if len(docs) == 1 else {"swarms": docs}, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    # a skipped swarm is not a failed crawl: another process crawls it
    return EXIT_OK if all(s.status == "succeeded" for s in crawled) else EXIT_CRAWL_FAILED
