"""The demo swarm as a pure, seeded model: models, servers, spans and life events on a fake clock.

Nothing here touches the network or reads a clock. Time ``t`` is seconds since the demo started; the same
``ScenarioParams`` (seed included) always give the same servers, PeerIDs, spans, events and announcement times,
so tests can ask "who is online at t = 40 s?" without running anything.

**Timing.** Real Petals announces every 120 s with records living 240 s. The demo uses ``update_period = 15 s``
and ``expiration = 2 × update_period = 30 s`` (Petals' own rule), so a crash shows as expired records within
half a minute and every kind of event happens within the first minute. Life repeats in cycles of
``8 × update_period`` (2 min by default): every churning server leaves, crashes or moves once per cycle, at
seeded random moments, so a demo left running keeps living.

**The designed cast** (always present; spans are fixed, only event times depend on the seed):

* ``demo/TinyLlama-A`` (24 blocks, healthy): stable servers cover every block at least twice, one of them via a
  relay; on top a leaver, a crasher, a mover (0–8 ↔ 16–24) and a late joiner provide the churn.
* ``demo/Wide-80`` (80 blocks, broken): blocks 56–63 have no online server, only a server stuck JOINING over
  them; it also holds the server named ``<script>alert(1)</script>`` (the web must render it inert), an
  outdated Petals version, a server with no host at all (unreachable: dials fail) and one whose rpc_info
  never answers (unreachable: the probe times out).
* ``demo/Falcon-B`` (32 blocks, degraded): blocks 16–31 are each served by exactly one server.
* ``demo/Mystery-12`` (12 blocks): not in the config; discoverable only through ``_petals.models``.

``extra_models`` synthetic models (``demo/Synth-NN``) and ``num_servers`` in total scale the swarm up for
tests and benchmarks: extra servers first tile each synthetic model twice, then spread over all models with
random behaviours, never over the designed hole of Wide-80 or the single-server range of Falcon-B (so the
designed health states hold at any size). Only the first ``max_hosts`` servers get a libp2p host; the rest
announce like everyone else but cannot be dialled, exactly like firewalled servers (see ``swarm.py``).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from ..snapshot import PETALS_JOINING, PETALS_OFFLINE, PETALS_ONLINE, ModelInfo
from . import identity

Span = tuple[int, int]  # [start, end) in block indices
Status = Literal["online", "joining", "absent"]
VisibleState = Literal["online", "joining", "offline", "expired"]

PETALS_VERSION = "2.3.0.dev2"
OLDER_VERSION = "2.3.0.dev1"
OUTDATED_VERSION = "2.0.1"
XSS_NAME = "<script>alert(1)</script>"
HF = "https://huggingface.co/"
MODELS_KEY = "_petals.models"


class Behaviour(StrEnum):
    STABLE = "stable"  # ONLINE from t = 0, forever
    LEAVER = "leaver"  # once a cycle: announces OFFLINE and leaves, comes back JOINING, then ONLINE
    CRASHER = "crasher"  # once a cycle: stops refreshing (records just expire), restarts JOINING, then ONLINE
    MOVER = "mover"  # once a cycle: OFFLINE on its span, JOINING then ONLINE on its other span
    LATE_JOINER = "late_joiner"  # absent at first, JOINING then ONLINE in the first cycle, stable afterwards
    STUCK_JOINING = "stuck_joining"  # JOINING forever (never finishes loading)


class Reach(StrEnum):
    SERVE = "serve"  # answers rpc_info when ONLINE; refuses the protocol while JOINING
    SILENT = "silent"  # accepts rpc_info streams but never answers: probes time out
    DOWN = "down"  # no host at all: dials fail


@dataclass(frozen=True, slots=True)
class ScenarioParams:
    seed: int = 1
    update_period: float = 15.0
    expiration_time: float | None = None  # default max(2 × update_period, 3), as Petals
    joining_time: float | None = None  # how long a server stays JOINING; default 1.5 × update_period
    cycle_time: float | None = None  # length of one round of churn; default 8 × update_period
    extra_models: int = 0
    blocks_per_extra_model: int = 48
    num_servers: int | None = None  # total; None = the designed cast + two tilings of each extra model
    max_hosts: int = 64  # only servers with index < max_hosts (and reach != DOWN) get a libp2p host

    @property
    def expiration(self) -> float:
        return self.expiration_time if self.expiration_time is not None else max(2 * self.update_period, 3.0)

    @property
    def joining(self) -> float:
        return self.joining_time if self.joining_time is not None else 1.5 * self.update_period

    @property
    def cycle(self) -> float:
        return self.cycle_time if self.cycle_time is not None else 8 * self.update_period

    def validate(self) -> None:
        if not self.update_period > 0:
            raise ValueError("update_period must be positive")
        if not self.expiration > self.update_period:
            raise ValueError("expiration must exceed update_period, or records lapse between refreshes")
        if not 0 < self.joining < 0.3 * self.cycle:
            raise ValueError("joining_time must be positive and below 0.3 × cycle_time")
        if self.extra_models < 0 or self.blocks_per_extra_model < 1:
            raise ValueError("extra_models must be >= 0 and blocks_per_extra_model >= 1")
        if self.max_hosts < 0:
            raise ValueError("max_hosts must be >= 0")


@dataclass(frozen=True, slots=True)
class DemoModel:
    dht_prefix: str
    num_blocks: int
    repository: str | None
    in_config: bool  # False: the monitor can find it only through `_petals.models`
    role: str  # what the cast is designed to show: healthy / broken / degraded / hidden / synthetic
    # Block ranges no server may be put on at scale (keeps the designed health state at any size).
    reserved: tuple[Span, ...] = ()

    def block_uid(self, block: int) -> str:
        return f"{self.dht_prefix}.{block}"

    def model_info(self) -> ModelInfo:
        return ModelInfo(self.dht_prefix, self.num_blocks, self.repository, official=self.in_config)


@dataclass(frozen=True, slots=True)
class ServerPlan:
    """Everything fixed about one simulated server. What varies over time is derived from it and ``t``."""

    index: int
    name: str  # a label for tests and logs; never announced
    key_seed: bytes
    peer_id: str
    dht_prefix: str
    span: Span
    behaviour: Behaviour
    reach: Reach
    has_host: bool
    phase: float  # refresh times are phase + m × update_period
    alt_span: Span | None = None  # the mover's other span
    public_name: str | None = None
    version: str = PETALS_VERSION
    adapters: tuple[str, ...] = ()
    torch_dtype: str = "bfloat16"
    quant_type: str = "none"
    using_relay: bool = False
    throughput: float = 1000.0  # baseline; each announcement varies it a little
    cache_tokens: int = 65536  # attention cache per block, in tokens (Petals: --attn_cache_tokens)


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch ``[start, end)`` of a server's life. ``offline_span``: OFFLINE announced at ``start`` for it."""

    start: float
    end: float
    status: Status
    span: Span | None
    offline_span: Span | None = None


@dataclass(frozen=True, slots=True)
class Announcement:
    """Server ``server`` announces ``state`` for ``span`` at ``t`` (scenario time)."""

    t: float
    server: int
    state: int  # PETALS_OFFLINE / PETALS_JOINING / PETALS_ONLINE
    span: Span


@dataclass(frozen=True, slots=True)
class Visible:
    """What a perfect crawler would see of one server at some ``t``: its newest record's state and span."""

    state: VisibleState
    span: Span
    announced_at: float


# ----------------------------------------------------------------------------------------------- the cast


def designed_models() -> list[DemoModel]:
    return [
        DemoModel("demo/TinyLlama-A", 24, HF + "demo/TinyLlama-A", True, "healthy"),
        DemoModel("demo/Wide-80", 80, HF + "demo/Wide-80", True, "broken", reserved=((50, 66),)),
        DemoModel("demo/Falcon-B", 32, HF + "demo/Falcon-B", True, "degraded", reserved=((16, 32),)),
        DemoModel("demo/Mystery-12", 12, HF + "demo/Mystery-12", False, "hidden"),
    ]


@dataclass(frozen=True, slots=True)
class _Role:
    name: str
    prefix: str
    span: Span
    behaviour: Behaviour = Behaviour.STABLE
    reach: Reach = Reach.SERVE
    alt_span: Span | None = None
    public_name: str | None = None
    version: str = PETALS_VERSION
    adapters: tuple[str, ...] = ()
    using_relay: bool = False
    quant_type: str = "none"
    torch_dtype: str = "bfloat16"


_A, _W, _F, _M = "demo/TinyLlama-A", "demo/Wide-80", "demo/Falcon-B", "demo/Mystery-12"
_GUANACO = ("timdettmers/guanaco-7b",)

_CAST: tuple[_Role, ...] = (
    # TinyLlama-A: stables a1 a2 a3 a8 cover every block >= 2 times; a4-a7 churn on top.
    _Role("a1", _A, (0, 12), public_name="alice@demo"),
    _Role("a2", _A, (12, 24), version=OLDER_VERSION),
    _Role("a3", _A, (0, 24), public_name="bob's big GPU", quant_type="nf4"),
    _Role("a4", _A, (0, 12), Behaviour.LEAVER, public_name="leaves-sometimes"),
    _Role("a5", _A, (12, 24), Behaviour.CRASHER),
    _Role("a6", _A, (0, 8), Behaviour.MOVER, alt_span=(16, 24), adapters=_GUANACO),
    _Role("a7", _A, (6, 18), Behaviour.LATE_JOINER, torch_dtype="float16"),
    _Role("a8", _A, (4, 24), using_relay=True, public_name="relayed-rig"),
    # Wide-80: blocks 56-63 have no ONLINE server (broken).
    _Role("w1", _W, (0, 40), public_name="wide-one", quant_type="int8"),
    _Role("w2", _W, (30, 56), public_name=XSS_NAME),
    _Role("w3", _W, (64, 80)),
    _Role("w4", _W, (0, 30), version=OUTDATED_VERSION, public_name="old-timer"),
    _Role("w5", _W, (40, 56), Behaviour.CRASHER),
    _Role("w6", _W, (50, 66), Behaviour.STUCK_JOINING, public_name="still-loading"),
    _Role("w7", _W, (64, 80), reach=Reach.DOWN, public_name="behind-a-firewall"),
    _Role("w8", _W, (0, 20), Behaviour.LEAVER, adapters=("artek0chumak/guanaco-65b", "timdettmers/guanaco-65b")),
    _Role("w9", _W, (0, 10), reach=Reach.SILENT),
    # Falcon-B: blocks 16-31 single-server (degraded).
    _Role("f1", _F, (0, 16), torch_dtype="float16"),
    _Role("f2", _F, (0, 16), using_relay=True),
    _Role("f3", _F, (16, 24), public_name="falcon-solo-1"),
    _Role("f4", _F, (24, 32)),
    _Role("f5", _F, (0, 16), Behaviour.LEAVER, version=OLDER_VERSION),
    # Mystery-12: only in _petals.models.
    _Role("m1", _M, (0, 12), public_name="mystery-host"),
    _Role("m2", _M, (0, 12), adapters=_GUANACO),
    _Role("m3", _M, (0, 6), Behaviour.LATE_JOINER),
)

NUM_DESIGNED_SERVERS = len(_CAST)

_FILLER_BEHAVIOURS = (
    (Behaviour.STABLE, 0.6),
    (Behaviour.LEAVER, 0.12),
    (Behaviour.CRASHER, 0.12),
    (Behaviour.MOVER, 0.08),
    (Behaviour.LATE_JOINER, 0.08),
)


def _digest(parts: tuple[object, ...]) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest(), "big")


def seeded_rng(*parts: object) -> random.Random:
    """A generator seeded by the parts: stable across runs and PYTHONHASHSEED."""
    return random.Random(_digest(parts))


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) determined by the parts (a cheap stand-in for one draw of :func:`seeded_rng`)."""
    return _digest(parts) / 2.0**64


def _overlaps(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _free_ranges(model: DemoModel) -> list[Span]:
    """The block ranges of ``model`` outside its reserved ranges."""
    ranges, start = [], 0
    for lo, hi in sorted(model.reserved):
        if lo > start:
            ranges.append((start, lo))
        start = max(start, hi)
    if start < model.num_blocks:
        ranges.append((start, model.num_blocks))
    return ranges


def _random_span(r: random.Random, model: DemoModel) -> Span:
    lo, hi = r.choice(_free_ranges(model))
    length = r.randint(1, min(hi - lo, max(4, model.num_blocks // 3)))
    start = r.randint(lo, hi - length)
    return (start, start + length)


class Scenario:
    """The whole swarm for one ``ScenarioParams``: models, server plans and their timelines."""

    def __init__(self, params: ScenarioParams | None = None) -> None:
        self.params = params = params or ScenarioParams()
        params.validate()
        self.models: list[DemoModel] = designed_models() + [
            DemoModel(prefix, params.blocks_per_extra_model, HF + prefix, True, "synthetic")
            for prefix in (f"demo/Synth-{i:02d}" for i in range(params.extra_models))
        ]
        self._model_by_prefix = {m.dht_prefix: m for m in self.models}
        self.servers: list[ServerPlan] = self._build_servers()
        self._by_model: dict[str, list[ServerPlan]] = {m.dht_prefix: [] for m in self.models}
        for s in self.servers:
            self._by_model[s.dht_prefix].append(s)
        self._segment_cache: dict[int, Segment] = {}
        # block -> servers whose span (or the mover's other span) contains it, per model
        self._holders: dict[str, list[list[ServerPlan]]] = {
            m.dht_prefix: [[] for _ in range(m.num_blocks)] for m in self.models
        }
        for s in self.servers:
            for home in {s.span, s.alt_span or s.span}:
                for block in range(*home):
                    self._holders[s.dht_prefix][block].append(s)

    # ---- construction

    def _plan(self, index: int, role: _Role, r: random.Random) -> ServerPlan:
        p = self.params
        seed32 = identity.key_seed(p.seed, index)
        return ServerPlan(
            index=index,
            name=role.name,
            key_seed=seed32,
            peer_id=identity.peer_id(seed32),
            dht_prefix=role.prefix,
            span=role.span,
            behaviour=role.behaviour,
            reach=role.reach,
            has_host=role.reach != Reach.DOWN and index < p.max_hosts,
            phase=r.uniform(0, p.update_period),
            alt_span=role.alt_span,
            public_name=role.public_name,
            version=role.version,
            adapters=role.adapters,
            torch_dtype=role.torch_dtype,
            quant_type=role.quant_type,
            using_relay=role.using_relay,
            throughput=round(r.uniform(300, 3000), 1),
            cache_tokens=r.choice((16384, 32768, 65536, 131072)),
        )

    def _tiling_roles(self, r: random.Random) -> list[_Role]:
        """Two tilings of every synthetic model, so each one starts out covered twice."""
        roles: list[_Role] = []
        for model in self.models:
            if model.role != "synthetic":
                continue
            for _tiling in range(2):
                start = 0
                while start < model.num_blocks:
                    end = min(model.num_blocks, start + r.randint(4, 16))
                    roles.append(_Role(f"s{len(roles) + 1}", model.dht_prefix, (start, end)))
                    start = end
        return roles

    def _random_role(self, r: random.Random, n: int) -> _Role:
        """One extra server anywhere outside the reserved ranges, with a random behaviour."""
        model = r.choices(self.models, weights=[m.num_blocks for m in self.models])[0]
        behaviour = r.choices([b for b, _ in _FILLER_BEHAVIOURS], weights=[w for _, w in _FILLER_BEHAVIOURS])[0]
        span = _random_span(r, model)
        alt = _random_span(r, model) if behaviour == Behaviour.MOVER else None
        return _Role(
            f"s{n}",
            model.dht_prefix,
            span,
            behaviour,
            alt_span=alt,
            public_name=f"sim-{n}" if r.random() < 0.3 else None,
            version=PETALS_VERSION if r.random() < 0.85 else OLDER_VERSION,
            adapters=_GUANACO if r.random() < 0.1 else (),
            using_relay=r.random() < 0.15,
        )

    def _build_servers(self) -> list[ServerPlan]:
        p = self.params
        filler_rng = seeded_rng(p.seed, "fillers")
        tilings = self._tiling_roles(filler_rng)
        target = p.num_servers if p.num_servers is not None else NUM_DESIGNED_SERVERS + len(tilings)
        if target < NUM_DESIGNED_SERVERS:
            raise ValueError(f"num_servers must be at least {NUM_DESIGNED_SERVERS} (the designed cast)")
        roles = [*_CAST, *tilings][:target]
        while len(roles) < target:
            roles.append(self._random_role(filler_rng, len(roles) - NUM_DESIGNED_SERVERS + 1))
        plan_rng = seeded_rng(p.seed, "servers")
        return [self._plan(i, role, plan_rng) for i, role in enumerate(roles)]

    # ---- lookups

    def model(self, dht_prefix: str) -> DemoModel:
        return self._model_by_prefix[dht_prefix]

    def config_models(self) -> list[ModelInfo]:
        """The models the monitor is configured with (everything but the hidden one)."""
        return [m.model_info() for m in self.models if m.in_config]

    def server(self, name: str) -> ServerPlan:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)

    def servers_of(self, dht_prefix: str) -> list[ServerPlan]:
        return self._by_model[dht_prefix]

    # ---- timelines

    def _cycle_segments(self, plan: ServerPlan, k: int) -> list[Segment]:
        """The segments of cycle ``k`` (covering ``[k·C, (k+1)·C)``); cycle -1 is "before the demo"."""
        c, C, J = k * self.params.cycle, self.params.cycle, self.params.joining
        end = c + C
        if k < 0:
            return [Segment(c, end, "absent", None)]
        r = seeded_rng(self.params.seed, plan.index, "cycle", k)
        span, b = plan.span, plan.behaviour
        if b == Behaviour.STABLE or (b == Behaviour.LATE_JOINER and k > 0):
            return [Segment(c, end, "online", span)]
        if b == Behaviour.STUCK_JOINING:
            return [Segment(c, end, "joining", span)]
        if b == Behaviour.LATE_JOINER:
            a = c + C * r.uniform(0.05, 0.15)
            return [
                Segment(c, a, "absent", None),
                Segment(a, a + J, "joining", span),
                Segment(a + J, end, "online", span),
            ]
        if b in (Behaviour.LEAVER, Behaviour.CRASHER):
            lo = 0.2 if b == Behaviour.LEAVER else 0.15
            a = c + C * r.uniform(lo, lo + 0.2)
            back = c + C * r.uniform(0.5, 0.65)
            return [
                Segment(c, a, "online", span),
                Segment(a, back, "absent", None, offline_span=span if b == Behaviour.LEAVER else None),
                Segment(back, back + J, "joining", span),
                Segment(back + J, end, "online", span),
            ]
        if b == Behaviour.MOVER:
            alt = plan.alt_span or span
            src, dst = (span, alt) if k % 2 == 0 else (alt, span)
            a = c + C * r.uniform(0.3, 0.5)
            return [
                Segment(c, a, "online", src),
                Segment(a, a + J, "joining", dst, offline_span=src),
                Segment(a + J, end, "online", dst),
            ]
        raise AssertionError(b)

    def timeline(self, plan: ServerPlan, t0: float, t1: float) -> list[Segment]:
        """Maximal segments covering ``[t0, t1]``; the first one may have started before ``t0``.

        Segments start at real changes only, except possibly the first (its true start is before the window
        of cycles looked at, which begins one cycle before ``t0``).
        """
        C = self.params.cycle
        k0 = max(math.floor(t0 / C) - 1, -1)
        k1 = math.floor(t1 / C) + 1
        merged: list[Segment] = []
        for k in range(k0, k1 + 1):
            for seg in self._cycle_segments(plan, k):
                prev = merged[-1] if merged else None
                if prev and prev.status == seg.status and prev.span == seg.span and seg.offline_span is None:
                    merged[-1] = Segment(prev.start, seg.end, prev.status, prev.span, prev.offline_span)
                else:
                    merged.append(seg)
        return [s for s in merged if s.end > t0 and s.start <= t1]

    def status_at(self, plan: ServerPlan, t: float) -> Segment:
        """The segment a server is in at ``t`` (memoized per server: segments never change)."""
        cached = self._segment_cache.get(plan.index)
        if cached is not None and cached.start <= t < cached.end:
            return cached
        for seg in self.timeline(plan, t, t):
            if seg.start <= t < seg.end:
                self._segment_cache[plan.index] = seg
                return seg
        raise AssertionError("timelines cover all time")

    def announcements_of(self, plan: ServerPlan, t0: float, t1: float) -> list[Announcement]:
        """What ``plan`` announces at times in ``(t0, t1]``, in order."""
        P = self.params.update_period
        out: list[Announcement] = []
        for seg in self.timeline(plan, t0, t1):
            if seg.offline_span is not None and t0 < seg.start <= t1:
                out.append(Announcement(seg.start, plan.index, PETALS_OFFLINE, seg.offline_span))
            if seg.status == "absent" or seg.span is None:
                continue
            state = PETALS_ONLINE if seg.status == "online" else PETALS_JOINING
            if t0 < seg.start <= t1:
                out.append(Announcement(seg.start, plan.index, state, seg.span))
            # Refreshes on this server's grid phase + m·P, strictly inside the segment.
            lo, hi = max(t0, seg.start), min(t1, seg.end)
            m = math.floor((lo - plan.phase) / P) + 1
            while (t := plan.phase + m * P) <= hi:
                if seg.start < t < seg.end and t > t0:
                    out.append(Announcement(t, plan.index, state, seg.span))
                m += 1
        return out

    def announcements(self, t0: float, t1: float) -> list[Announcement]:
        """Every announcement at a time in ``(t0, t1]``, ordered by time then server (OFFLINE first)."""
        out: list[Announcement] = []
        for plan in self.servers:
            out.extend(self.announcements_of(plan, t0, t1))
        out.sort(key=lambda a: (a.t, a.server, a.state != PETALS_OFFLINE))
        return out

    def visible(self, plan: ServerPlan, t: float) -> Visible | None:
        """What the DHT holds for ``plan`` at ``t``, judged from its newest announcement.

        ``expired``: it stopped refreshing without saying goodbye (crashed) and its records ran out.
        ``None``: it never announced, or it left (OFFLINE) and that record has run out too.
        """
        exp = self.params.expiration
        recent = self.announcements_of(plan, t - exp - self.params.cycle, t)
        if not recent:
            return None
        last_t = recent[-1].t
        newest = [a for a in recent if a.t == last_t]
        a = max(newest, key=lambda x: x.state != PETALS_OFFLINE)  # a move: the new span wins
        if t < a.t + exp:
            names = {PETALS_OFFLINE: "offline", PETALS_JOINING: "joining", PETALS_ONLINE: "online"}
            return Visible(names[a.state], a.span, a.t)  # type: ignore[arg-type]
        if a.state == PETALS_OFFLINE:
            return None
        return Visible("expired", a.span, a.t)

    # ---- varying measurements (pure in (seed, server, t))

    def next_servers(self, plan: ServerPlan, span: Span, t: float) -> list[ServerPlan]:
        """Up to 5 servers of the same model holding blocks ``start+1 … end-1`` and up to 5 holding block ``end``
        (Petals' choice for ``next_pings``), judged by their status at ``t``, excluding ``plan`` itself."""
        start, end = span
        holders = self._holders[plan.dht_prefix]
        r = seeded_rng(self.params.seed, plan.index, "next", round(t, 3))

        def pick(blocks: range, wanted: Span, limit: int = 5) -> list[ServerPlan]:
            candidates = {o.index: o for b in blocks if 0 <= b < len(holders) for o in holders[b]}
            order = sorted(candidates)
            r.shuffle(order)
            chosen = []
            for index in order:  # a random sample of those whose current span really holds a wanted block
                other = candidates[index]
                seg = self.status_at(other, t)
                if index != plan.index and seg.span is not None and _overlaps(seg.span, wanted):
                    chosen.append(other)
                    if len(chosen) == limit:
                        break
            return chosen

        out: dict[int, ServerPlan] = {}
        for other in pick(range(start + 1, end), (start + 1, end)) + pick(range(end, end + 1), (end, end + 1)):
            out.setdefault(other.index, other)
        return list(out.values())

    def measurement_noise(self, plan: ServerPlan, t: float) -> random.Random:
        """A generator for the jitter of one refresh (one update period), so values change every period."""
        return seeded_rng(self.params.seed, plan.index, "noise", math.floor(t / self.params.update_period))


@dataclass(slots=True)
class ScenarioSummary:
    """Counts for logs and the CLI banner."""

    models: int
    servers: int
    hosts: int
    by_behaviour: dict[str, int] = field(default_factory=dict)


def summarize(scenario: Scenario) -> ScenarioSummary:
    counts: dict[str, int] = {}
    for s in scenario.servers:
        counts[s.behaviour.value] = counts.get(s.behaviour.value, 0) + 1
    hosts = sum(s.has_host for s in scenario.servers)
    return ScenarioSummary(len(scenario.models), len(scenario.servers), hosts, counts)
