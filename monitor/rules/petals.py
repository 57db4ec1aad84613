"""The Petals rules: from a :class:`RawCrawl` (untrusted bytes) to a judged :class:`Snapshot`.

Pure functions; time is always the crawl's ``dht_time``, never the local clock. The steps, each in its module:

* ``monitor.rules.serverinfo``: decode and validate ServerInfo / ModelInfo values and PeerID subkeys;
* ``monitor.rules.spans``: Petals' ``compute_spans``;
* ``monitor.rules.health``: server rows, per-block coverage, model health, top contributors;
* ``monitor.rules.reachability``: ``rpc_info`` probe outcomes.

This module classifies the raw entries (valid, invalid with a reason, expired), discovers custom models from
``_petals.models``, says which peers to probe, and puts it all together in :func:`build_snapshot`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ..snapshot import (
    PETALS_OFFLINE,
    PETALS_ONLINE,
    CrawlStats,
    InvalidRecord,
    ModelInfo,
    RawCrawl,
    RawEntry,
    Reachability,
    ServerInfo,
    ServerRecord,
    Snapshot,
)
from .health import model_report, top_contributors
from .reachability import parse_rpc_info, reachability_from_error
from .serverinfo import (
    HUGGINGFACE_URL,
    InvalidModelInfo,
    InvalidServerInfo,
    is_peer_id,
    is_valid_dht_prefix,
    parse_model_info,
    parse_server_info,
)
from .spans import Span, compute_spans

__all__ = [
    "MODELS_KEY",
    "Classified",
    "CustomModelPolicy",
    "InvalidServerInfo",
    "block_uids",
    "build_snapshot",
    "classify",
    "classify_entries",
    "compute_spans",
    "discover_models",
    "parse_block_key",
    "parse_rpc_info",
    "parse_server_info",
    "peers_to_probe",
    "reachability_from_error",
]

MODELS_KEY = "_petals.models"
MAX_CUSTOM_MODELS = 64  # a flood of announced models must not turn one crawl into millions of keys
# Petals servers announce a few update periods ahead (minutes). A record that claims to live for more than a day
# (up to +inf, which hivemind stores as is) would show its server online forever after it left: such a record is
# invalid (reason ``expiration``), not evidence. The default of each swarm's ``max_expiration_ahead`` setting.
MAX_EXPIRATION_AHEAD = 86400.0
CustomModelPolicy = Literal["huggingface", "any", "none"]
CUSTOM_MODEL_POLICIES: tuple[CustomModelPolicy, ...] = ("huggingface", "any", "none")
_BLOCK_INDEX = re.compile(r"0|[1-9][0-9]{0,5}")


def block_uids(model: ModelInfo) -> list[str]:
    """The DHT keys a model's servers announce under: ``<dht_prefix>.<block>``."""
    return [f"{model.dht_prefix}.{index}" for index in range(model.num_blocks)]


def parse_block_key(key: str) -> tuple[str, int] | None:
    """``"prefix.12" -> ("prefix", 12)`` like Petals' ``parse_uid`` (exactly one dot), or None."""
    prefix, dot, index = key.partition(".")
    if not dot or not is_valid_dht_prefix(prefix) or not _BLOCK_INDEX.fullmatch(index):
        return None
    return prefix, int(index)


def _subkey_text(subkey: object) -> str | None:
    if subkey is None:
        return None
    text = subkey if isinstance(subkey, str) else repr(subkey)
    return text if len(text) <= 128 else text[:127] + "…"


def _limit(max_expiration_ahead: float | None) -> float:
    """The configured limit, or :data:`MAX_EXPIRATION_AHEAD` (read at call time)."""
    return MAX_EXPIRATION_AHEAD if max_expiration_ahead is None else max_expiration_ahead


def _too_far_ahead(entry: RawEntry, dht_time: float, limit: float) -> InvalidRecord | None:
    """The ``expiration`` rejection of an entry that claims to live more than ``limit`` seconds after the crawl."""
    if entry.expiration <= dht_time + limit:
        return None
    ahead = entry.expiration - dht_time
    when = "never" if ahead == float("inf") else f"in {_duration(ahead)}"
    detail = f"expires {when}: more than {_duration(limit)} ahead (max_expiration_ahead)"
    return _invalid(entry, "expiration", detail)


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.3g} days"
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds:.0f} s"


def _invalid(entry: RawEntry, reason: str, detail: str) -> InvalidRecord:
    return InvalidRecord(key=entry.key, subkey=_subkey_text(entry.subkey), reason=reason, detail=detail)


# ---- _petals.models


def _custom_allowed(repository: str | None, policy: CustomModelPolicy) -> bool:
    if policy == "any":
        return True
    if policy == "huggingface":
        return repository is not None and repository.startswith(HUGGINGFACE_URL)
    return False


def discover_models(
    entries: Iterable[RawEntry],
    models: Sequence[ModelInfo],
    *,
    dht_time: float,
    policy: CustomModelPolicy = "huggingface",
    max_expiration_ahead: float | None = None,
) -> tuple[list[ModelInfo], list[InvalidRecord]]:
    """The models to report on: the configured ones (in order; they win over the index), then custom models
    from ``_petals.models`` entries allowed by ``policy``, sorted like health.petals.dev (−num_blocks, prefix).

    ``huggingface`` keeps a custom model only if its repository is a Hugging Face URL (health.petals.dev's
    rule), ``any`` keeps every valid entry, ``none`` keeps none. A configured model with ``num_blocks == 0``
    ("unknown") takes its block count from the index. Expired index entries are ignored, and so are entries
    that expire more than ``max_expiration_ahead`` seconds ahead (default :data:`MAX_EXPIRATION_AHEAD`).
    """
    limit = _limit(max_expiration_ahead)
    announced: dict[str, tuple[int, str | None]] = {}
    invalid: list[InvalidRecord] = []
    for entry in entries:
        if entry.key != MODELS_KEY:
            continue
        if not is_valid_dht_prefix(entry.subkey):
            invalid.append(_invalid(entry, "model_info", "subkey is not a valid dht_prefix"))
            continue
        try:
            num_blocks, repository = parse_model_info(entry.value)
        except InvalidModelInfo as e:
            invalid.append(_invalid(entry, e.reason, e.detail))
            continue
        if entry.expiration < dht_time:
            invalid.append(_invalid(entry, "expired", f"expired {dht_time - entry.expiration:.1f} s ago"))
            continue
        if (too_far := _too_far_ahead(entry, dht_time, limit)) is not None:
            invalid.append(too_far)
            continue
        assert isinstance(entry.subkey, str)
        announced[entry.subkey] = (num_blocks, repository)

    resolved: list[ModelInfo] = []
    for model in models:
        if model.num_blocks == 0 and model.dht_prefix in announced:
            num_blocks, repository = announced[model.dht_prefix]
            model = replace(model, num_blocks=num_blocks, repository=model.repository or repository)
        resolved.append(model)
    configured = {model.dht_prefix for model in models}
    custom = [
        ModelInfo(dht_prefix=prefix, num_blocks=num_blocks, repository=repository, official=False)
        for prefix, (num_blocks, repository) in announced.items()
        if prefix not in configured and _custom_allowed(repository, policy)
    ]
    custom.sort(key=lambda model: (-model.num_blocks, model.dht_prefix))
    return resolved + custom[:MAX_CUSTOM_MODELS], invalid


# ---- block entries


def classify_entries(
    raw: RawCrawl,
    models: Sequence[ModelInfo],
    *,
    custom_model_policy: CustomModelPolicy = "huggingface",
    max_expiration_ahead: float | None = None,
) -> tuple[list[ServerRecord], list[InvalidRecord], list[ModelInfo]]:
    """Sort every raw entry into valid records and invalid ones (with a reason), and resolve the model list.

    Returns ``(records, invalid, models)``:

    * ``records``: every entry that parsed as a Petals announcement, *including expired ones*, so that a
      server whose records all expired can still be shown as ``expired``. The rules never count them online.
    * ``invalid``: one :class:`InvalidRecord` per rejected entry, reason ``key``, ``subkey``, one of
      :class:`InvalidServerInfo`'s reasons, ``model_info``, ``regular_value``, ``expiration`` (more than
      ``max_expiration_ahead`` seconds, by default :data:`MAX_EXPIRATION_AHEAD`, after the crawl's DHT time), or
      ``expired`` (an expired
      record appears here too, so counts per reason include it).
    * ``models``: the configured models, then the discovered ones (see :func:`discover_models`).
    """
    limit = _limit(max_expiration_ahead)
    resolved, invalid = discover_models(
        raw.entries, models, dht_time=raw.dht_time, policy=custom_model_policy, max_expiration_ahead=limit
    )
    records: list[ServerRecord] = []
    # A server announces the same value under each of its blocks (and its PeerID as every subkey), and each key
    # holds many servers: decode and check each distinct one once. At 3 000 servers x 10 blocks this cuts
    # judging from ~11 s to ~1.5 s.
    uids: dict[str, tuple[str, int] | None] = {}
    infos: dict[bytes, ServerInfo | InvalidServerInfo] = {}
    peer_ids: dict[object, bool] = {}
    for entry in raw.entries:
        if entry.key == MODELS_KEY:
            continue
        uid = uids[entry.key] if entry.key in uids else uids.setdefault(entry.key, parse_block_key(entry.key))
        if uid is None:
            invalid.append(_invalid(entry, "key", "not a <dht_prefix>.<block> key"))
            continue
        valid_subkey = peer_ids.get(entry.subkey) if isinstance(entry.subkey, str) else None
        if valid_subkey is None:
            valid_subkey = is_peer_id(entry.subkey)
            if isinstance(entry.subkey, str):
                peer_ids[entry.subkey] = valid_subkey
        if not valid_subkey:
            invalid.append(_invalid(entry, "subkey", "subkey is not a base58 PeerID string"))
            continue
        cacheable = type(entry.value) is bytes
        info = infos.get(entry.value) if cacheable else None
        if info is None:
            try:
                info = parse_server_info(entry.value)
            except InvalidServerInfo as e:
                info = e
            if cacheable:
                infos[entry.value] = info
        if isinstance(info, InvalidServerInfo):
            invalid.append(_invalid(entry, info.reason, info.detail))
            continue
        if (too_far := _too_far_ahead(entry, raw.dht_time, limit)) is not None:
            invalid.append(too_far)
            continue
        assert isinstance(entry.subkey, str)
        records.append(ServerRecord(uid[0], uid[1], entry.subkey, info, entry.expiration))
        if entry.expiration < raw.dht_time:
            invalid.append(_invalid(entry, "expired", f"expired {raw.dht_time - entry.expiration:.1f} s ago"))
    for key, count in sorted(raw.regular_values.items()):
        invalid.append(InvalidRecord(key, None, "regular_value", f"{count} non-dictionary value(s) under this key"))
    return records, invalid, resolved


def count_by_reason(
    invalid: Iterable[InvalidRecord], regular_values: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Invalid entries per reason; a regular value counts once per value seen, not once per key."""
    counts = Counter(record.reason for record in invalid if record.reason != "regular_value")
    if regular_values:
        counts["regular_value"] += sum(regular_values.values())
    return dict(sorted(counts.items()))


def _spans_per_model(
    records: Iterable[ServerRecord], models: Sequence[ModelInfo], dht_time: float
) -> dict[str, tuple[dict[str, Span], dict[str, Span]]]:
    """``dht_prefix -> (live spans, expired-only spans)``, both with ``min_state=OFFLINE`` like health.petals.dev."""
    live: dict[str, list[ServerRecord]] = defaultdict(list)
    expired: dict[str, list[ServerRecord]] = defaultdict(list)
    for record in records:
        (expired if record.expiration < dht_time else live)[record.dht_prefix].append(record)
    result: dict[str, tuple[dict[str, Span], dict[str, Span]]] = {}
    for model in models:
        live_spans = compute_spans(live[model.dht_prefix], model.num_blocks, PETALS_OFFLINE)
        stale = [record for record in expired[model.dht_prefix] if record.peer_id not in live_spans]
        result[model.dht_prefix] = (live_spans, compute_spans(stale, model.num_blocks, PETALS_OFFLINE))
    return result


@dataclass(frozen=True, slots=True)
class Classified:
    """One crawl's entries sorted and spanned: what both the probe list and the snapshot are built from.

    Computed once per crawl (the crawler needs it to choose whom to probe, the judge to build the snapshot);
    ``raw``, ``configured`` and ``policy`` say which inputs it was made from: a mismatch is recomputed, not reused."""

    records: list[ServerRecord]
    invalid: list[InvalidRecord]
    models: list[ModelInfo]
    spans: dict[str, tuple[dict[str, Span], dict[str, Span]]]
    raw: RawCrawl
    configured: tuple[ModelInfo, ...]
    policy: CustomModelPolicy
    max_expiration_ahead: float = MAX_EXPIRATION_AHEAD


def classify(
    raw: RawCrawl,
    models: Sequence[ModelInfo],
    *,
    custom_model_policy: CustomModelPolicy = "huggingface",
    max_expiration_ahead: float | None = None,
) -> Classified:
    """:func:`classify_entries` and the live/expired spans of every resolved model."""
    limit = _limit(max_expiration_ahead)
    records, invalid, resolved = classify_entries(
        raw, models, custom_model_policy=custom_model_policy, max_expiration_ahead=limit
    )
    spans = _spans_per_model(records, resolved, raw.dht_time)
    return Classified(records, invalid, resolved, spans, raw, tuple(models), custom_model_policy, limit)


def _classified(
    raw: RawCrawl,
    models: Sequence[ModelInfo],
    policy: CustomModelPolicy,
    given: Classified | None,
    max_expiration_ahead: float | None = None,
) -> Classified:
    limit = _limit(max_expiration_ahead)
    if (
        given is not None
        and given.raw is raw
        and given.policy == policy
        and given.configured == tuple(models)
        and given.max_expiration_ahead == limit
    ):
        return given
    return classify(raw, models, custom_model_policy=policy, max_expiration_ahead=limit)


def peers_to_probe(
    raw: RawCrawl,
    models: Sequence[ModelInfo],
    *,
    custom_model_policy: CustomModelPolicy = "huggingface",
    classified: Classified | None = None,
    max_expiration_ahead: float | None = None,
) -> list[str]:
    """Peers that get an ``rpc_info`` probe: those whose span is ONLINE in some model, from unexpired records
    (health.petals.dev probes exactly these; every other server is judged by its announced state)."""
    judged = _classified(raw, models, custom_model_policy, classified, max_expiration_ahead)
    online: set[str] = set()
    for live, _expired in judged.spans.values():
        online.update(peer_id for peer_id, span in live.items() if span.state == PETALS_ONLINE)
    return sorted(online)


def build_snapshot(
    raw: RawCrawl,
    models: Sequence[ModelInfo],
    reachability: Mapping[str, Reachability],
    *,
    min_redundancy: int = 2,
    custom_model_policy: CustomModelPolicy = "huggingface",
    classified: Classified | None = None,
    max_expiration_ahead: float | None = None,
) -> Snapshot:
    """Judge one crawl: a report per model (configured, then discovered), invalid records, top contributors.

    ``classified``: the crawl's :func:`classify` result when the caller already has it (used only if it was
    made from the same models, policy and ``max_expiration_ahead``)."""
    if min_redundancy < 1:
        raise ValueError(f"min_redundancy must be >= 1, got {min_redundancy}")
    judged = _classified(raw, models, custom_model_policy, classified, max_expiration_ahead)
    invalid = list(judged.invalid)
    reports = [
        model_report(model, *judged.spans[model.dht_prefix], reachability, raw.dht_time, min_redundancy)
        for model in judged.models
    ]
    stats = CrawlStats(
        peers_contacted=raw.stats.peers_contacted,
        peers_failed=raw.stats.peers_failed,
        rpcs=raw.stats.rpcs,
        keys=raw.stats.keys,
        records=raw.stats.records or len(raw.entries),
        invalid_by_reason=count_by_reason(invalid, raw.regular_values),
    )
    return Snapshot(
        swarm=raw.swarm,
        status="failed" if raw.error else "succeeded",
        started_at=raw.started_at,
        finished_at=raw.finished_at,
        dht_time=raw.dht_time,
        bootstrap=list(raw.bootstrap),
        models=reports,
        invalid=invalid,
        stats=stats,
        top_contributors=top_contributors(reports),
        error=raw.error,
    )
