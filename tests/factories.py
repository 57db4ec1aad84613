"""Builders of realistic, deterministic :class:`~monitor.snapshot.Snapshot` objects for tests.

Same arguments, same snapshot (a seeded ``random.Random``; no clock, no global state). What you get:

- several models (a catalog of real Petals prefixes), each shaped to come out ``healthy``, ``degraded`` or
  ``broken`` (the state itself is always *computed* from the blocks, never just asserted);
- servers in every :data:`SERVER_STATES` state, with consistent ``ServerInfo`` / reachability / TTL, one peer
  serving two models, ``inf`` pings like Petals sends for unreachable peers;
- invalid records with every common reason, bootstrap peers up and down, crawl stats that add up;
- hostile strings (``<script>alert(1)</script>`` and friends) in public names, versions, adapters, errors.

API: ``make_snapshot(swarm=..., t=..., seed=..., ...)`` for one crawl, ``make_snapshots(...)`` for a series with
churn (history, diffs, uptime), ``make_peer_id(rng)``, ``HOSTILE_STRINGS``, ``MODEL_CATALOG``.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from monitor.snapshot import (
    PETALS_JOINING,
    PETALS_OFFLINE,
    PETALS_ONLINE,
    SERVER_STATES,
    BlockStat,
    BootstrapPeer,
    CrawlStats,
    InvalidRecord,
    ModelInfo,
    ModelReport,
    ModelState,
    Reachability,
    ServerInfo,
    ServerRow,
    ServerState,
    Snapshot,
)

T0 = 1_700_000_000.0  # a fixed, realistic Unix time
MIN_REDUNDANCY = 2  # what "healthy" means in these fixtures: every block has >= 2 online servers

HOSTILE_STRINGS: tuple[str, ...] = (
    "<script>alert(1)</script>",
    "\"'><img src=x onerror=alert(1)>",
    "{{ 7*7 }}{% raw %}",
    "'; DROP TABLE crawls; --",
    "\u202egnp.exe",  # right-to-left override
    "nul\x00byte",
    "llama 🦙 ünïcödé",
    "javascript:alert(1)",
)

# (dht_prefix, num_blocks, repository, display name)
MODEL_CATALOG: tuple[tuple[str, int, str | None, str | None], ...] = (
    ("Llama-2-70b-chat-hf", 80, "https://huggingface.co/meta-llama/Llama-2-70b-chat-hf", None),
    ("Meta-Llama-3.1-405B-Instruct-hf", 126, "https://huggingface.co/meta-llama/Meta-Llama-3.1-405B-Instruct", None),
    ("Mixtral-8x22B-Instruct-v0-1-hf", 56, "https://huggingface.co/mistralai/Mixtral-8x22B-Instruct-v0.1", "Mixtral"),
    ("bloom-7b1-petals", 30, None, None),
)
TARGET_STATES: tuple[ModelState, ...] = ("healthy", "degraded", "broken")

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_PETALS_STATE = {"online": PETALS_ONLINE, "joining": PETALS_JOINING, "offline": PETALS_OFFLINE}
_DETAILS = ("expected a 3-tuple", "throughput is negative", "start_block > end_block")
_REASONS = ("msgpack", "schema", "state", "throughput", "span", "subkey", "expired")


def make_peer_id(rng: random.Random) -> str:
    """A base58 Ed25519 PeerID look-alike (``12D3KooW`` + 44 base58 chars), as Petals servers have."""
    return "12D3KooW" + "".join(rng.choice(_B58) for _ in range(44))


def compute_blocks(num_blocks: int, servers: list[ServerRow]) -> list[BlockStat]:
    """Per-block counts by server state, and the online throughput, from the servers' spans."""
    counts = [dict.fromkeys(SERVER_STATES, 0) for _ in range(num_blocks)]
    throughput = [0.0] * num_blocks
    for row in servers:
        for block in range(max(row.start, 0), min(row.end, num_blocks)):
            counts[block][row.state] += 1
            if row.state == "online":
                throughput[block] += row.info.throughput
    return [BlockStat(index=i, throughput=throughput[i], **counts[i]) for i in range(num_blocks)]


def judge_model(blocks: list[BlockStat], min_redundancy: int = MIN_REDUNDANCY) -> ModelState:
    lowest = min((b.online for b in blocks), default=0)
    return "broken" if lowest == 0 else "degraded" if lowest < min_redundancy else "healthy"


def _pick(rng: random.Random, values: tuple[str, ...], hostile: bool, p_hostile: float = 0.15) -> str:
    if hostile and rng.random() < p_hostile:
        return rng.choice(HOSTILE_STRINGS)
    return rng.choice(values)


def _server_info(rng: random.Random, state: ServerState, start: int, end: int, hostile: bool) -> ServerInfo:
    petals_state = _PETALS_STATE.get(state, PETALS_ONLINE)  # unreachable/expired servers announced "online"
    adapters: tuple[str, ...] = ()
    if rng.random() < 0.3:
        adapters = (_pick(rng, ("artek0chumak/guanaco-65b", "timdettmers/guanaco-33b"), hostile, 0.4),)
    return ServerInfo(
        state=petals_state,
        throughput=round(rng.uniform(50.0, 2500.0), 3),
        start_block=start,
        end_block=end,
        public_name=_pick(rng, ("alice-a100", "bob@home", "petals.dev team", "gpu-farm-7"), hostile)
        if rng.random() < 0.8
        else None,
        version=_pick(rng, ("2.2.0", "2.3.0.dev2", "2.3.0"), hostile),
        network_rps=round(rng.uniform(10.0, 900.0), 3),
        forward_rps=round(rng.uniform(100.0, 9000.0), 3),
        inference_rps=round(rng.uniform(50.0, 500.0), 3),
        adapters=adapters,
        torch_dtype=rng.choice(("bfloat16", "float16")),
        quant_type=rng.choice(("nf4", "int8", "none")),
        using_relay=rng.random() < 0.25,
        cache_tokens_left=rng.randrange(0, 500_000),
        next_pings=None,  # filled once every peer of the model is known
    )


def _reachability(rng: random.Random, peer_id: str, state: ServerState, checked_at: float) -> Reachability | None:
    if state == "online":
        return Reachability(
            peer_id,
            ok=True,
            checked_at=checked_at,
            latency=round(rng.uniform(0.01, 0.4), 4),
            version=rng.choice(("2.2.0", "2.3.0")),
            dht_client_mode=rng.random() < 0.5,
            cache_tokens_available=rng.randrange(0, 1_000_000),
        )
    if state == "unreachable":
        return Reachability(peer_id, ok=False, checked_at=checked_at, error="failed to connect: timed out")
    if state == "joining":
        error = "failed to negotiate protocol: protocols not supported: [/TransformerConnectionHandler.rpc_info]"
        return Reachability(peer_id, ok=False, checked_at=checked_at, joining=True, error=error)
    return None  # offline and expired servers are not probed


def _spans(rng: random.Random, n: int, num_blocks: int, target: ModelState) -> list[tuple[ServerState, int, int]]:
    """(state, start, end) for ``n`` servers shaped so the model comes out as ``target``."""
    per_tiling = max(1, n // 4)
    tile = max(1, math.ceil(num_blocks / per_tiling))
    tiling = [(i, min(i + tile, num_blocks)) for i in range(0, num_blocks, tile)]
    hole = num_blocks - 1 if target == "broken" and num_blocks > 1 else num_blocks  # no online server reaches it
    spans: list[tuple[ServerState, int, int]] = []
    for _ in range(2 if target == "healthy" else 1):
        spans += [("online", s, min(e, hole)) for s, e in tiling if s < min(e, hole)]
    for k in range(max(0, n - len(spans))):
        state = SERVER_STATES[k % len(SERVER_STATES)] if k < len(SERVER_STATES) else rng.choice(SERVER_STATES)
        limit = num_blocks
        if state == "online":  # extra online servers must not repair the shape we aimed for
            limit = hole if target == "broken" else max(1, num_blocks // 2) if target == "degraded" else num_blocks
        start = rng.randrange(0, limit)
        end = rng.randrange(start + 1, limit + 1)
        spans.append((state, start, end))
    return spans[:n] if n else []


def _model_report(
    rng: random.Random,
    model: ModelInfo,
    target: ModelState,
    n_servers: int,
    dht_time: float,
    hostile: bool,
    shared: dict[str, tuple[ServerState, Reachability | None]],
    extra_peer: str | None,
) -> ModelReport:
    rows: list[ServerRow] = []
    peers: list[str] = []
    for k, (state, start, end) in enumerate(_spans(rng, n_servers, model.num_blocks, target)):
        peer_id = make_peer_id(rng)
        if extra_peer and k == n_servers - 1:  # the shared peer: first half only, so the shape holds
            peer_id, start, end = extra_peer, 0, max(1, model.num_blocks // 2)
        if peer_id in shared:  # one peer, one reachability probe, one judged state across models
            state, reach = shared[peer_id]
        else:
            reach = _reachability(rng, peer_id, state, dht_time + 1.0)
            shared[peer_id] = (state, reach)
        ttl = round(rng.uniform(-120.0, -1.0), 3) if state == "expired" else round(rng.uniform(5.0, 240.0), 3)
        info = _server_info(rng, state, start, end, hostile)
        tokens = info.cache_tokens_left // (end - start) if info.cache_tokens_left is not None else None
        rows.append(
            ServerRow(
                peer_id=peer_id,
                state=state,
                start=start,
                end=end,
                info=info,
                expiration=dht_time + ttl,
                ttl=ttl,
                reachability=reach,
                show_public_name=info.public_name is not None and rng.random() < 0.7,
                cache_tokens_left_per_block=tokens,
            )
        )
        peers.append(peer_id)
    # next_pings: each server measured a few others (inf = could not reach); pings_to_me is the inverse view
    for i, row in enumerate(rows):
        others = [p for j, p in enumerate(peers) if j != i]
        measured = rng.sample(others, min(3, len(others)))
        pings = {p: math.inf if rng.random() < 0.1 else round(rng.uniform(0.005, 0.3), 4) for p in measured}
        rows[i] = replace(row, info=replace(row.info, next_pings=pings or None))
    for row in rows:
        for other in rows:
            if other.info.next_pings and row.peer_id in other.info.next_pings and other.peer_id != row.peer_id:
                row.pings_to_me[other.peer_id] = other.info.next_pings[row.peer_id]
    blocks = compute_blocks(model.num_blocks, rows)
    return ModelReport(model=model, state=judge_model(blocks), servers=rows, blocks=blocks)


def _churn(rng: random.Random, report: ModelReport) -> ModelReport:
    """A moment in the roster's life: ~10% of servers away, ~10% in another state; blocks and state recomputed."""
    rows: list[ServerRow] = []
    for row in report.servers:
        roll = rng.random()
        if roll < 0.1:
            continue
        if roll < 0.2:
            new_state = rng.choice([s for s in SERVER_STATES if s != row.state])
            petals_state = _PETALS_STATE.get(new_state, PETALS_ONLINE)
            row = replace(row, state=new_state, info=replace(row.info, state=petals_state))
        rows.append(row)
    blocks = compute_blocks(report.model.num_blocks, rows)
    return ModelReport(model=report.model, state=judge_model(blocks), servers=rows, blocks=blocks)


def make_snapshot(
    swarm: str = "test",
    t: float = T0,
    seed: int = 0,
    *,
    n_models: int = 3,
    num_blocks: int | None = None,
    servers_per_model: int = 12,
    n_invalid: int = 5,
    hostile: bool = True,
    step: int = 0,
    crawl_id: int | None = None,
    status: str = "succeeded",
) -> Snapshot:
    """One judged crawl of ``swarm`` that finished at ``t``.

    ``seed`` fixes the roster (peers, spans, infos); ``step`` > 0 varies it (~10% of servers absent, ~10% in
    another state, drawn afresh per step), so ``make_snapshot(seed=s, step=k)`` for k = 0, 1, 2... looks like one
    swarm over time. ``num_blocks`` overrides
    the catalog's block counts (e.g. 80 for the 3 x 80 x 60 performance case). ``servers_per_model`` >= 7 gives
    servers in every state.
    """
    rng = random.Random(f"snapshot:{swarm}:{seed}")
    dht_time = t - 0.5
    started_at = t - round(rng.uniform(2.0, 20.0), 3)
    shared: dict[str, tuple[ServerState, Reachability | None]] = {}
    reports: list[ModelReport] = []
    first_peer: str | None = None
    for m in range(n_models):
        prefix, blocks_n, repository, name = MODEL_CATALOG[m % len(MODEL_CATALOG)]
        if m >= len(MODEL_CATALOG):
            prefix = f"{prefix}-{m}"
        model = ModelInfo(
            dht_prefix=prefix,
            num_blocks=num_blocks or blocks_n,
            repository=repository,
            name=name,
            official=m < 2,
        )
        target = TARGET_STATES[m % len(TARGET_STATES)]
        report = _model_report(
            rng, model, target, servers_per_model, dht_time, hostile, shared, extra_peer=first_peer if m == 1 else None
        )
        if m == 0 and report.servers:
            first_peer = report.servers[0].peer_id  # this peer also serves model 1
        reports.append(report)
    if step:
        churn_rng = random.Random(f"churn:{swarm}:{seed}:{step}")
        reports = [_churn(churn_rng, r) for r in reports]

    invalid = [
        InvalidRecord(
            key=f"{reports[k % len(reports)].model.dht_prefix if reports else 'x'}.{rng.randrange(0, 80)}",
            subkey=None if k % 4 == 3 else (make_peer_id(rng) if k % 2 == 0 else repr(b"\x00\xff")),
            reason=_REASONS[k % len(_REASONS)],
            detail=_pick(rng, _DETAILS, hostile, 0.5),
        )
        for k in range(n_invalid)
    ]
    by_reason: dict[str, int] = {}
    for record in invalid:
        by_reason[record.reason] = by_reason.get(record.reason, 0) + 1
    n_records = sum(r.length for report in reports for r in report.servers) + len(invalid)
    stats = CrawlStats(
        peers_contacted=rng.randrange(5, 200),
        peers_failed=rng.randrange(0, 20),
        rpcs=rng.randrange(10, 400),
        keys=sum(r.model.num_blocks for r in reports) + 1,
        records=n_records,
        invalid_by_reason=by_reason,
    )
    bootstrap = [
        BootstrapPeer("/ip4/127.0.0.1/tcp/31337/p2p/" + make_peer_id(rng), None, "online", latency=0.012),
        BootstrapPeer("/dns/bootstrap1.petals.dev/tcp/31337", make_peer_id(rng), "online", latency=0.2),
        BootstrapPeer(
            "/ip4/127.0.0.1/tcp/9/p2p/" + make_peer_id(rng),
            None,
            "unreachable",
            error=_pick(rng, ("connection refused",), hostile, 0.5),
        ),
    ]
    served: dict[str, int] = {}
    for report in reports:
        for row in report.servers:
            if row.state == "online" and row.info.public_name and row.show_public_name:
                served[row.info.public_name] = served.get(row.info.public_name, 0) + row.length
    top = sorted(served.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return Snapshot(
        swarm=swarm,
        status=status,  # type: ignore[arg-type]
        started_at=started_at,
        finished_at=t,
        dht_time=dht_time,
        bootstrap=bootstrap,
        models=reports,
        invalid=invalid,
        stats=stats,
        top_contributors=top,
        error=None,
        crawl_id=crawl_id,
    )


def make_snapshots(
    swarm: str = "test", t0: float = T0, count: int = 10, interval: float = 60.0, seed: int = 0, **kwargs
) -> list[Snapshot]:
    """``count`` crawls of one swarm, ``interval`` seconds apart, the roster churning a little each time."""
    return [make_snapshot(swarm, t0 + k * interval, seed, step=k, **kwargs) for k in range(count)]


def make_empty_snapshot(swarm: str = "test", t: float = T0) -> Snapshot:
    """A crawl that found nothing (every model without servers): the store must not show it over a good one."""
    snap = make_snapshot(swarm, t, seed=0, n_invalid=0, hostile=False)
    for report in snap.models:
        report.servers = []
        report.blocks = compute_blocks(report.model.num_blocks, [])
        report.state = "broken"
    snap.top_contributors = []
    snap.stats = CrawlStats()
    return snap


def make_block_snapshot(t: float, dark: dict[int, set[float]], *, num_blocks: int = 8, swarm: str = "test") -> Snapshot:
    """One model of ``num_blocks`` whose block ``i`` has ``1 + i % 3`` online servers, or none when ``t`` is in
    ``dark[i]`` (block history: a block that goes dark and comes back)."""
    snap = make_snapshot(swarm, t, seed=1, n_models=1, num_blocks=num_blocks, n_invalid=0, hostile=False)
    report = snap.models[0]
    report.blocks = [BlockStat(i, online=0 if t in dark.get(i, ()) else 1 + i % 3) for i in range(num_blocks)]
    return snap
