"""Our monitor on a swarm of REAL Petals 2.2.0.post1 servers: `crawl --once` and a long-running `serve` alike.

One swarm for the whole module (conftest.py). Order matters: the steady-state checks come first, then a server
joins, one leaves gracefully, and one crashes.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from monitor_runs import PREFIX, crawl_once, model_report, probe_once, row_of, state_of, until, write_config
from swarm import ServerSpec

from monitor.rules.hints import model_hints
from monitor.rules.route import SESSION_TOKENS
from monitor.store.sqlite import Store

PETALS_VERSION = "2.2.0.post1"
FIELDS = ("public_name", "version", "torch_dtype", "quant_type", "cache_tokens_left", "adapters", "using_relay")


def is_(state: str):
    return lambda seen: seen == state


def announced(swarm) -> dict:
    """What the DHT holds, read by hivemind's own client in the Petals venv."""
    return json.loads(swarm._run_helper("announced", swarm.initial_peer, swarm.dht_prefix, str(swarm.num_blocks)))


def assert_matches_announcement(doc: dict, swarm, reads: list[dict]) -> None:
    """Every field as announced; ``next_pings`` (RTTs a server re-measures and re-announces every update period, one
    block key at a time) as in one of the server's block records of one of ``reads`` (taken before and after)."""
    dht = reads[0]
    for name in ("a", "b", "c"):
        proc = swarm.server(name)
        spec = proc.spec
        row = row_of(doc, proc.peer_id)
        assert row is not None, f"server {name} missing from the crawl"
        assert (row["span"]["start"], row["span"]["end"]) == (spec.start, spec.end)
        assert row["state"] == "online"
        state, throughput, extra = dht[f"{PREFIX}.{spec.start}"][proc.peer_id]["value"]
        ours = row["span"]["server_info"]
        assert (state, throughput) == (2, spec.throughput) and ours["throughput"] == throughput
        assert (extra["start_block"], extra["end_block"]) == (spec.start, spec.end)
        for field in FIELDS:
            want = extra[field] if field != "adapters" else list(extra[field])
            assert ours[field] == want, (name, field)
        assert ours["public_name"] == spec.public_name and ours["version"] == PETALS_VERSION
        announced_pings = [
            read[f"{PREFIX}.{block}"][proc.peer_id]["value"][2]["next_pings"]
            for read in reads
            for block in range(spec.start, spec.end)
            if proc.peer_id in read.get(f"{PREFIX}.{block}", {})
        ]
        assert ours["next_pings"] in announced_pings, (name, ours["next_pings"], announced_pings)
        # rpc_info answered by the server's real TransformerConnectionHandler
        reach = row["reachability"]
        assert reach["ok"] is True and reach["version"] == PETALS_VERSION and reach["error"] is None


@pytest.mark.parametrize("how", ["crawl_once", "serve"])
def test_crawl_equals_what_each_server_announced(how, swarm, serve, once_config):
    before = announced(swarm)
    doc = crawl_once(once_config) if how == "crawl_once" else serve.next_crawl(after=time.time())
    assert_matches_announcement(doc, swarm, [before, announced(swarm)])
    # b serves the block after a's span, so a's pings name b; nobody serves block 4, nothing follows block 7
    a_info = row_of(doc, swarm.server("a").peer_id)["span"]["server_info"]
    assert list(a_info["next_pings"]) == [swarm.server("b").peer_id]
    assert row_of(doc, swarm.server("c").peer_id)["span"]["server_info"]["next_pings"] == {}


def test_a_second_vantage_point_reaches_every_real_server(swarm, once_config):
    """``monitor probe`` against real Petals servers: its rpc_info probes are answered by their real
    TransformerConnectionHandler, and the store says each server is reachable from both vantage points."""
    doc = crawl_once(once_config)
    log = probe_once(once_config, "second")
    assert f"vantage second: crawl {doc['crawl_id']} of local: 3 of 3 servers reached" in log
    with Store(str(once_config.with_suffix(".db"))) as store:
        verdicts = store.reachable_from(doc["crawl_id"], max_age=600).by_peer
    for name in ("a", "b", "c"):
        verdict = verdicts[swarm.server(name).peer_id]
        assert [(r.vantage, r.ok) for r in verdict.results] == [("main", True), ("second", True)], name
        assert not verdict.split


def _hole_hint(hints: list[dict]) -> dict:
    (hint,) = [h for h in hints if h["problem"] == "no_server"]
    return hint


@pytest.mark.parametrize("how", ["crawl_once", "serve"])
def test_uncovered_range_breaks_the_model_and_the_hint_names_it(how, swarm, serve, once_config):
    if how == "crawl_once":
        doc = crawl_once(once_config)
        with Store(str(once_config.with_suffix(".db"))) as store:
            snapshot = store.latest_snapshot("local")
        (report,) = [r for r in snapshot.models if r.model.dht_prefix == PREFIX]
        hints = [h.document() for h in model_hints(report)]
    else:
        doc = serve.next_crawl(after=time.time())
        hints = serve.get(f"/api/v1/models/{PREFIX}")["hints"]
    report_doc = model_report(doc)
    assert report_doc["state"] == "broken" and report_doc["health"] == "broken"
    online = {b["index"]: b["online"] for b in report_doc["blocks"]}
    assert online == {0: 1, 1: 1, 2: 2, 3: 1, 4: 0, 5: 0, 6: 1, 7: 1}
    hint = _hole_hint(hints)
    assert "4–5" in hint["detail"] and "--block_indices 4:6" in hint["hint"]


def petals_route(swarm, tokens: int = SESSION_TOKENS) -> dict:
    """The route Petals' own client picks for an inference session (its sequence manager), or its error."""
    args = ("route", swarm.initial_peer, swarm.dht_prefix, str(swarm.num_blocks), str(tokens))
    return json.loads(swarm._run_helper(*args, timeout=180))


def names(swarm, spans) -> list[str]:
    """``[[peer, start, end], ...]`` as ``["a[0:3]", ...]`` (the harness's server names)."""
    by_peer = {proc.peer_id: name for name, proc in swarm.procs.items()}
    return [f"{by_peer.get(peer, peer)}[{start}:{end}]" for peer, start, end in spans]


def test_a_model_our_route_calls_not_runnable_makes_the_real_client_fail(swarm, serve):
    """Blocks 4-5 have no server: our route says not runnable, and Petals' client cannot make a route either."""
    serve.next_crawl(after=time.time())
    ours = serve.get(f"/api/v1/models/{PREFIX}/route")
    assert not ours["runnable"] and ours["missing_blocks"] == [4, 5] and ours["chain"] == []
    real = petals_route(swarm)
    print(f"route agreement, hole at 4-5: ours runnable={ours['runnable']}, Petals' client: {real['error']}")
    assert real["spans"] is None and real["error"] == "MissingBlocksError", real


def test_models_index_discovery_as_the_official_monitor(swarm, once_config, tmp_path):
    """`_petals.models` says repository None for a local model: the official monitor lists only Hugging Face
    models it was not configured with, so it skips this one; policy "any" shows it with the index's block count."""
    index = announced(swarm)["_petals.models"]
    assert {k: v["value"] for k, v in index.items()} == {PREFIX: {"num_blocks": 8, "repository": None}}
    # nothing to report is a failed crawl (exit 1), as a cron job should hear
    official = crawl_once(write_config(tmp_path / "official.toml", swarm, models=False), exit_code=1)
    assert official["model_reports"] == [] and official["crawl"]["error"] == "empty crawl: no server records found"
    anything = crawl_once(write_config(tmp_path / "any.toml", swarm, models=False, policy="any"))
    report = model_report(anything)
    assert report["repository"] is None and report["num_blocks"] == 8
    assert {r["peer_id"] for r in report["server_rows"]} == {swarm.server(n).peer_id for n in "abc"}


def petals_reachability(swarm, serve, peer_id: str) -> dict:
    """Petals' own start-up check (petals.server.reachability.validate_reachability), pointed at our serve."""
    return json.loads(swarm._run_helper("reachability", serve.base, peer_id))


def test_petals_reachability_check_passes_for_a_reachable_server(swarm, serve):
    outcome = petals_reachability(swarm, serve, swarm.server("a").peer_id)
    assert outcome == {"passed": True, "error": None}


JOINER = ServerSpec("d", 3, 6, 1.5, "petals-test-d")  # covers the hole (and block 3 twice) once it is online


def test_a_server_loading_its_blocks_is_joining_then_online(swarm, serve, once_config, tmp_path):
    gate = tmp_path / "release-loading"
    proc = swarm.start_server(JOINER, load_gate=gate)
    try:
        seen_once = until(lambda: state_of(crawl_once(once_config), proc.peer_id), is_("joining"), 120, "joining")
        seen_serve = until(lambda: state_of(serve.next_crawl(time.time()), proc.peer_id), is_("joining"), 60, "serve")
    finally:
        gate.touch()
    assert set(seen_once) <= {None, "joining"} and set(seen_serve) <= {None, "joining"}, (seen_once, seen_serve)
    swarm.wait_started(JOINER.name)
    until(lambda: state_of(crawl_once(once_config), proc.peer_id), is_("online"), 60, "online after loading")
    until(lambda: state_of(serve.next_crawl(time.time()), proc.peer_id), is_("online"), 60, "serve: online")
    assert model_report(serve.next_crawl(time.time()))["state"] == "healthy"


def test_a_petals_client_generates_while_the_monitor_crawls(swarm, serve):
    """AutoDistributedModelForCausalLM over the local model dir and our initial peer, through a, b, d and c."""
    first = serve.next_crawl(after=time.time())["crawl_id"]
    out = json.loads(
        swarm._answer_of_helper(
            "generate", str(swarm.model_dir), swarm.initial_peer, swarm.dht_prefix, "4", timeout=300
        )
    )
    assert len(out["tokens"]) == len(out["inputs"]) + 4 and out["tokens"][: len(out["inputs"])] == out["inputs"]
    # every server Petals' client routed through is one our route calls usable, and its inference route is ours
    ours = serve.get(f"/api/v1/models/{PREFIX}/route")
    used = {peer for route in out["routes"] for peer, _start, _end in route["spans"]}
    inference = [route["spans"] for route in out["routes"] if route["mode"] == "min_latency"]
    chain = [[hop["peer_id"], hop["start"], hop["end"]] for hop in ours["chain"]]
    print(
        f"route agreement: Petals' client routes {[names(swarm, r['spans']) for r in out['routes']]}; "
        f"ours {names(swarm, chain)} ({ours['steps_per_second']:.1f} steps/s est.), usable {len(ours['usable'])}, "
        f"used by the client and usable: {len(used & set(ours['usable']))}/{len(used)}; the client generated "
        f"{len(out['tokens']) - len(out['inputs'])} tokens in {out['seconds']:.2f} s"
    )
    assert ours["runnable"] and used and used <= set(ours["usable"])
    assert inference and inference[0] == chain
    after = serve.next_crawl(after=time.time())
    assert after["crawl_id"] > first + 1, "serve kept crawling while the client generated"
    assert all(state_of(after, swarm.server(n).peer_id) == "online" for n in "abcd")


def test_sigint_shows_offline(swarm, serve, once_config):
    if JOINER.name not in swarm.procs:
        pytest.skip("needs the server that test_a_server_loading_its_blocks_is_joining_then_online starts")
    peer = swarm.server(JOINER.name).peer_id
    swarm.stop(JOINER.name)  # SIGINT: petals announces OFFLINE before it exits
    assert state_of(crawl_once(once_config), peer) == "offline"
    assert state_of(serve.next_crawl(after=time.time()), peer) == "offline"


def test_a_server_back_on_a_new_port_after_a_leave_is_online_again_on_serve(swarm, serve):
    """The same identity, a new process listening on a new port: serve's peerstore still holds the old address.
    Its probe used to be refused there and the failure cached for 300 s (bench/freshness.py found it)."""
    if JOINER.name not in swarm.procs or swarm.server(JOINER.name).popen.returncode is None:
        pytest.skip("needs the server that test_sigint_shows_offline stops")
    peer = swarm.server(JOINER.name).peer_id
    swarm.start_server(JOINER)
    swarm.wait_started(JOINER.name)
    seen = until(lambda: state_of(serve.next_crawl(after=time.time()), peer), is_("online"), 60, "serve: back online")
    assert "unreachable" not in seen, seen


@pytest.fixture(scope="module")
def crash(swarm, serve, once_config):
    """SIGKILL server c, then watch `crawl --once` and `serve` (in a thread) until c is gone from both."""
    peer = swarm.server("c").peer_id
    # kill just after c announced, so its records outlive the first crawls by most of their lifetime
    until(
        lambda: (row_of(crawl_once(once_config), peer) or {}).get("ttl") or 0,
        lambda ttl: ttl > swarm.expiration - 8,
        swarm.expiration + 20,
        "a fresh announcement of c",
    )
    swarm.stop("c", kill=True)
    killed_at = swarm.server("c").stopped_at
    serve_seen: list[tuple[float, str | None]] = []
    stop = threading.Event()

    failures: list[BaseException] = []

    def watch_serve():
        after = killed_at
        try:
            while not stop.is_set():
                doc = serve.next_crawl(after=after)
                serve_seen.append((doc["crawl"]["started_at"], state_of(doc, peer)))
                after = doc["crawl"]["started_at"] + 0.001
                if serve_seen[-1][1] is None:
                    return
        except BaseException as e:  # seen by the fixture, not lost with the thread
            failures.append(e)

    watcher = threading.Thread(target=watch_serve, daemon=True)
    watcher.start()
    once_seen = until(
        lambda: state_of(crawl_once(once_config), peer), lambda state: state is None, swarm.expiration + 60, "gone"
    )
    watcher.join(timeout=swarm.expiration + 30)
    stop.set()
    if failures:
        raise failures[0]
    assert not watcher.is_alive(), "serve showed no crawl that saw the killed server gone"
    seen = {"peer": peer, "once": once_seen, "serve": [state for _, state in serve_seen]}
    print(f"after SIGKILL of c: crawl --once saw {seen['once']}, serve saw {seen['serve']}")
    return seen


def _crash_sequence_ok(states: list) -> None:
    """unreachable at once, then perhaps expired, then gone, and never back to online."""
    assert states and states[0] == "unreachable", states
    assert states[-1] is None, states
    order = {"unreachable": 0, "expired": 1, None: 2}
    ranks = [order[s] for s in states]
    assert ranks == sorted(ranks), states


def test_sigkill_crawl_once_shows_unreachable_then_gone(crash):
    _crash_sequence_ok(crash["once"])


def test_sigkill_serve_shows_unreachable_at_the_next_crawl_then_gone(crash):
    _crash_sequence_ok(crash["serve"])


def test_petals_reachability_check_gives_petals_advice_for_an_unreachable_server(swarm, serve, crash):
    outcome = petals_reachability(swarm, serve, crash["peer"])
    assert outcome["passed"] is False
    assert "You need to fix your port forwarding" in outcome["error"] and "--public_ip 127.0.0.1" in outcome["error"]
