"""Entry point of every process the harness runs in the Petals venv (never imported by the monitor's venv).

    python launch.py run MODULE ARGS...             run petals.cli.run_dht / run_server unchanged (petals_compat)
    python launch.py identities PATH...             make missing hivemind identities; print {path: peer id}
    python launch.py make-model DIR [--layers 8]    a tiny randomly initialised Llama (safetensors), no hub access
    python launch.py announced PEER PREFIX BLOCKS   what the DHT holds, read with hivemind's client (JSON)
    python launch.py reachability URL PEER_ID       Petals' own validate_reachability against URL (JSON outcome)
    python launch.py generate MODEL_DIR PEER PREFIX N   a Petals client generates N tokens through the swarm (JSON,
                                                    with the routes its sequence manager chose)
    python launch.py route PEER PREFIX BLOCKS TOKENS    the route Petals' client picks for an inference session of
                                                    TOKENS tokens, or the error it fails with (JSON)

``run`` honours REAL_PETALS_LOAD_GATE=<file>: the server announces JOINING as usual, then waits for that
file before it loads its first block, so a test can see it joining for as long as it needs (bounded: 300 s).
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import petals_compat

LOAD_GATE_TIMEOUT = 300.0


def _hold_loading_until(gate: str) -> None:
    import petals.server.server as server_module

    load = server_module.load_pretrained_block

    def load_when_released(*args, **kwargs):
        deadline = time.monotonic() + LOAD_GATE_TIMEOUT
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.1)
        return load(*args, **kwargs)

    server_module.load_pretrained_block = load_when_released


def _die_with_parent(every: float = 1.0) -> None:
    """End this process group (the Petals process, its handlers and p2pd daemons) once whoever started it is
    gone: a test run killed without its teardown (a CI time-out, an OOM kill) must not leave servers behind. The
    group is ours: the harness starts each process in a session of its own."""
    parent = os.getppid()
    if os.getpgid(0) != os.getpid():  # not a group of our own: ending it could end others' processes
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def cmd_run(module: str, *args: str) -> None:
    _die_with_parent()
    # SIGINT is how the harness asks for a graceful leave; a background job may have inherited it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("REAL_PETALS_LOAD_GATE"):
        _hold_loading_until(os.environ["REAL_PETALS_LOAD_GATE"])
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def cmd_identities(*paths: str) -> None:
    from hivemind.p2p import P2P, PeerID

    out = {}
    for path in paths:
        if not os.path.exists(path):
            P2P.generate_identity(path)
        with open(path, "rb") as f:
            out[path] = PeerID.from_identity(f.read()).to_base58()
    print(json.dumps(out))


def cmd_make_model(out_dir: str, *args: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    layers = int(args[args.index("--layers") + 1]) if "--layers" in args else 8
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=1000,
        max_position_embeddings=512,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    tmp = out_dir.rstrip("/") + f".tmp-{os.getpid()}"
    model.save_pretrained(tmp, safe_serialization=True)
    try:
        os.rename(tmp, out_dir)  # whole or not at all: an interrupted save never looks like a model
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another run made it first
    print(out_dir)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def cmd_announced(initial_peer: str, prefix: str, num_blocks: str) -> None:
    from hivemind import DHT

    dht = DHT(
        initial_peers=[initial_peer],
        client_mode=True,
        start=True,
        host_maddrs=["/ip4/127.0.0.1/tcp/0"],
        nat_port_map=False,
        auto_nat=False,
    )
    try:
        keys = [f"{prefix}.{b}" for b in range(int(num_blocks))] + ["_petals.models"]
        found = {}
        for key in keys:
            record = dht.get(key, latest=True)
            if record is not None and isinstance(record.value, dict):
                found[key] = {sk: {"value": v.value, "expiration": v.expiration_time} for sk, v in record.value.items()}
        print(json.dumps(_jsonable(found)))
    finally:
        dht.shutdown()


def cmd_reachability(url: str, peer_id: str) -> None:
    """The unchanged check a Petals server runs at start-up, with its hard-coded URL pointed at ``url``."""
    import petals.server.reachability as reachability

    reachability.REACHABILITY_API_URL = url.rstrip("/")
    try:
        reachability.validate_reachability(peer_id, wait_time=0.0, retry_delay=0.1)
    except RuntimeError as e:
        print(json.dumps({"passed": False, "error": str(e)}))
    else:
        print(json.dumps({"passed": True, "error": None}))


def _spans(spans) -> list:
    return [[span.peer_id.to_base58(), span.start, span.end] for span in spans]


def _record_routes() -> list:
    """Every route Petals' sequence manager hands out from now on, as [[peer id, start, end], ...] lists."""
    from petals.client.routing.sequence_manager import RemoteSequenceManager

    routes: list = []
    make_sequence = RemoteSequenceManager.make_sequence

    def recorded(self, *args, **kwargs):
        spans = make_sequence(self, *args, **kwargs)
        routes.append({"mode": kwargs.get("mode"), "spans": _spans(spans)})
        return spans

    RemoteSequenceManager.make_sequence = recorded
    return routes


def cmd_route(initial_peer: str, prefix: str, num_blocks: str, tokens: str) -> None:
    """The route an inference session would take (``make_sequence(mode="min_latency")``), read from a real
    RemoteSequenceManager over the swarm, or the exception's class name when it cannot make one."""
    from petals.client.config import ClientConfig
    from petals.client.routing.sequence_manager import RemoteSequenceManager

    config = ClientConfig(initial_peers=[initial_peer], dht_prefix=prefix, max_retries=1, show_route=False)
    manager = RemoteSequenceManager(config, [f"{prefix}.{i}" for i in range(int(num_blocks))])
    try:
        spans = manager.make_sequence(mode="min_latency", cache_tokens_needed=int(tokens))
    except Exception as e:
        print(json.dumps({"spans": None, "error": type(e).__name__, "message": str(e)[:300]}))
    else:
        print(json.dumps({"spans": _spans(spans), "error": None, "message": None}))
    finally:
        manager.shutdown()
        manager.dht.shutdown()


def cmd_generate(model_dir: str, initial_peer: str, prefix: str, tokens: str) -> None:
    import torch
    from petals import AutoDistributedModelForCausalLM

    routes = _record_routes()

    # use_chunked_forward=False: "auto" would import cpufeature (a C extension) to pick a bfloat16 code path
    model = AutoDistributedModelForCausalLM.from_pretrained(
        model_dir,
        initial_peers=[initial_peer],
        dht_prefix=prefix,
        torch_dtype=torch.float32,
        use_chunked_forward=False,
    )
    inputs = torch.tensor([[1, 17, 42, 7]])
    t0 = time.monotonic()
    outputs = model.generate(inputs, max_new_tokens=int(tokens), do_sample=False)
    seconds = time.monotonic() - t0
    tokens_out, tokens_in = outputs[0].tolist(), inputs[0].tolist()
    print(json.dumps({"tokens": tokens_out, "inputs": tokens_in, "seconds": seconds, "routes": routes}))


COMMANDS = {
    "run": cmd_run,
    "identities": cmd_identities,
    "make-model": cmd_make_model,
    "announced": cmd_announced,
    "reachability": cmd_reachability,
    "generate": cmd_generate,
    "route": cmd_route,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: launch.py {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "identities":
        petals_compat.restore_reexports()  # hivemind only: no need to import petals and torch
    else:
        petals_compat.apply()
    COMMANDS[sys.argv[1]](*sys.argv[2:])
